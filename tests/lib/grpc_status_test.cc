#include "lib/grpc_status.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tidepool {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;

TEST(GrpcStatusTest, OkMapsToOk) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(GrpcStatusTest, DomainCodesKeepCodeAndMessage) {
  for (absl::StatusCode code :
       {absl::StatusCode::kInvalidArgument, absl::StatusCode::kNotFound,
        absl::StatusCode::kAlreadyExists, absl::StatusCode::kPermissionDenied,
        absl::StatusCode::kUnauthenticated, absl::StatusCode::kFailedPrecondition,
        absl::StatusCode::kAborted, absl::StatusCode::kUnavailable,
        absl::StatusCode::kResourceExhausted, absl::StatusCode::kUnimplemented,
        absl::StatusCode::kDeadlineExceeded}) {
    grpc::Status status = ToGrpcStatus(absl::Status(code, "workspace ws_1 is asleep"));
    EXPECT_EQ(static_cast<int>(status.error_code()), static_cast<int>(code));
    EXPECT_EQ(status.error_message(), "workspace ws_1 is asleep");
    absl::Status back = FromGrpcStatus(status);
    EXPECT_EQ(back.code(), code);
    EXPECT_EQ(back.message(), "workspace ws_1 is asleep");
  }
}

TEST(GrpcStatusTest, InternalAndUnknownMessagesAreReplaced) {
  for (absl::StatusCode code : {absl::StatusCode::kInternal, absl::StatusCode::kUnknown}) {
    grpc::Status status =
        ToGrpcStatus(absl::Status(code, "sqlite: no such table secrets_v2 at /var/lib/x.db"));
    EXPECT_EQ(static_cast<int>(status.error_code()), static_cast<int>(code));
    EXPECT_THAT(status.error_message(), Not(HasSubstr("sqlite")));
    EXPECT_THAT(status.error_message(), Not(HasSubstr("/var/lib")));
    EXPECT_THAT(status.error_message(),
                MatchesRegex("internal error \\(request id req_[0-9a-f]{16}\\)"));
  }
}

TEST(GrpcStatusTest, EachInternalErrorGetsItsOwnRequestId) {
  grpc::Status a = ToGrpcStatus(absl::InternalError("x"));
  grpc::Status b = ToGrpcStatus(absl::InternalError("x"));
  EXPECT_NE(a.error_message(), b.error_message());
}

}  // namespace
}  // namespace tidepool
