#include "services/audit/event_validation.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace tidepool::audit {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

common::v1::AuditEvent ValidEvent() {
  common::v1::AuditEvent event;
  event.set_event_id("ev_aaaaaaaaaaaaaaaaaaaaaaaaaa");
  event.mutable_actor()->set_kind(common::v1::ACTOR_KIND_USER);
  event.mutable_actor()->set_id("u_aaaaaaaaaaaaaaaaaaaaaaaaaa");
  event.set_action("auth.sign_in");
  event.set_outcome(common::v1::OUTCOME_SUCCESS);
  event.set_subject_user_id("u_aaaaaaaaaaaaaaaaaaaaaaaaaa");
  event.set_source_address("203.0.113.9:5123");
  (*event.mutable_attributes())["provider"] = "github";
  (*event.mutable_attributes())["display_name"] = "Zoë 🌊";
  return event;
}

TEST(EventValidationTest, AcceptsAWellFormedEvent) {
  EXPECT_THAT(ValidateEventForAppend(ValidEvent()), IsOk());
}

TEST(EventValidationTest, RejectsServerAssignedFields) {
  for (int field = 0; field < 5; ++field) {
    common::v1::AuditEvent event = ValidEvent();
    switch (field) {
      case 0:
        event.set_sequence(7);
        break;
      case 1:
        event.mutable_server_time()->set_seconds(1);
        break;
      case 2:
        event.set_prev_hash("x");
        break;
      case 3:
        event.set_hash("x");
        break;
      case 4:
        event.set_source_service("auth");
        break;
    }
    EXPECT_THAT(ValidateEventForAppend(event),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("assigned by the server")))
        << field;
  }
}

TEST(EventValidationTest, RequiresIdActorActionAndOutcome) {
  common::v1::AuditEvent event = ValidEvent();
  event.clear_event_id();
  EXPECT_THAT(ValidateEventForAppend(event), StatusIs(absl::StatusCode::kInvalidArgument));
  event = ValidEvent();
  event.mutable_actor()->clear_kind();
  EXPECT_THAT(ValidateEventForAppend(event), StatusIs(absl::StatusCode::kInvalidArgument));
  event = ValidEvent();
  event.mutable_actor()->clear_id();
  EXPECT_THAT(ValidateEventForAppend(event), StatusIs(absl::StatusCode::kInvalidArgument));
  event = ValidEvent();
  event.clear_outcome();
  EXPECT_THAT(ValidateEventForAppend(event), StatusIs(absl::StatusCode::kInvalidArgument));
  event = ValidEvent();
  event.set_outcome(static_cast<common::v1::Outcome>(99));
  EXPECT_THAT(ValidateEventForAppend(event), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(EventValidationTest, ActionsAreDottedLowerCaseWords) {
  for (const char* good : {"auth.sign_in", "admin.user_suspended", "a.b.c", "config.tamper2"}) {
    EXPECT_TRUE(IsValidAction(good)) << good;
  }
  for (const std::string& bad :
       {std::string("auth"), std::string("Auth.sign_in"), std::string("auth..x"),
        std::string(".auth.x"), std::string("auth.x."), std::string("auth.sign-in"),
        std::string("auth.9x"), std::string("auth. x"), std::string(""),
        "a." + std::string(127, 'b')}) {
    EXPECT_FALSE(IsValidAction(bad)) << bad;
    common::v1::AuditEvent event = ValidEvent();
    event.set_action(bad);
    EXPECT_THAT(ValidateEventForAppend(event), StatusIs(absl::StatusCode::kInvalidArgument));
  }
}

TEST(EventValidationTest, RejectsControlCharactersInEveryStringField) {
  const std::string hostile[] = {"a\nb",
                                 "a\rb",
                                 "\x1b[31mred",
                                 "bell\x07",
                                 "del\x7f",
                                 "c1\xc2\x85next",
                                 "nul" + std::string(1, '\0')};
  for (const std::string& bad : hostile) {
    for (int field = 0; field < 8; ++field) {
      common::v1::AuditEvent event = ValidEvent();
      switch (field) {
        case 0:
          event.set_event_id(bad);
          break;
        case 1:
          event.mutable_actor()->set_id(bad);
          break;
        case 2:
          event.set_subject_user_id(bad);
          break;
        case 3:
          event.set_workspace_id(bad);
          break;
        case 4:
          event.set_request_id(bad);
          break;
        case 5:
          event.set_source_address(bad);
          break;
        case 6:
          (*event.mutable_attributes())["note"] = bad;
          break;
        case 7:
          event.set_reason_code(bad);
          break;
      }
      absl::Status status = ValidateEventForAppend(event);
      EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument)) << field;
      // The message names the field but never echoes the hostile content.
      EXPECT_THAT(std::string(status.message()), Not(HasSubstr(bad)));
    }
  }
}

TEST(EventValidationTest, RejectsInvalidUtf8) {
  for (const std::string& bad :
       {std::string("\xc0\xaf"), std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80"),
        std::string("\xe2\x82"), std::string("\xff"), std::string("\x80")}) {
    EXPECT_FALSE(IsCleanUtf8(bad));
    common::v1::AuditEvent event = ValidEvent();
    (*event.mutable_attributes())["note"] = bad;
    EXPECT_THAT(ValidateEventForAppend(event), StatusIs(absl::StatusCode::kInvalidArgument));
  }
  EXPECT_TRUE(IsCleanUtf8("Zoë 🌊 日本"));
}

TEST(EventValidationTest, EnforcesSizeBounds) {
  common::v1::AuditEvent event = ValidEvent();
  event.mutable_actor()->set_id(std::string(1024 * 1024, 'a'));  // a 1 MB user name
  EXPECT_THAT(ValidateEventForAppend(event),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("longer than 128 bytes")));
  event = ValidEvent();
  (*event.mutable_attributes())["note"] = std::string(1025, 'a');
  EXPECT_THAT(ValidateEventForAppend(event), StatusIs(absl::StatusCode::kInvalidArgument));
  event = ValidEvent();
  for (int i = 0; i < 33; ++i) {
    (*event.mutable_attributes())["k" + std::to_string(i)] = "v";
  }
  EXPECT_THAT(ValidateEventForAppend(event),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at most 32 attributes")));
  event = ValidEvent();
  (*event.mutable_attributes())["Bad Key"] = "v";
  EXPECT_THAT(ValidateEventForAppend(event), StatusIs(absl::StatusCode::kInvalidArgument));
  event = ValidEvent();
  event.set_reason_code("Not-Snake");
  EXPECT_THAT(ValidateEventForAppend(event), StatusIs(absl::StatusCode::kInvalidArgument));
  // 32 attributes of 1 KiB each fit the 64 KiB event bound.
  event = ValidEvent();
  event.mutable_attributes()->clear();
  for (int i = 0; i < 32; ++i) {
    (*event.mutable_attributes())["k" + std::to_string(i)] = std::string(1024, 'v');
  }
  EXPECT_THAT(ValidateEventForAppend(event), IsOk());
}

}  // namespace
}  // namespace tidepool::audit
