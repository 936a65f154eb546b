#include "services/scaler/scaler_store.h"

#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::scaler {
namespace {

using ::testing::_;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Optional;
using ::testing::SizeIs;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::IsOkAndHolds;
using ::tidepool::testing::StatusIs;

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

MATCHER(IsNullopt, "is nullopt") { return !arg.has_value(); }

// Every field of a row as a tuple, so rows compare (and print) field by field.
auto Fields(const ActivityRow& r) {
  return std::make_tuple(r.workspace_id, r.user_id, r.last_time, r.last_source, r.byte_count,
                         r.event_count);
}
auto Fields(const PinRow& r) {
  return std::make_tuple(r.workspace_id, r.pin_time, r.expire_time, r.reason, r.pinned_by);
}
auto Fields(const DecisionRow& r) {
  return std::make_tuple(r.decision_id, r.workspace_id, r.decide_time, r.action, r.reason,
                         r.keep_awake_reasons, r.idle_duration, r.succeeded, r.error_code,
                         r.detail);
}
auto Fields(const JobRow& r) {
  return std::make_tuple(r.workspace_id, r.job_id, r.name, r.schedule, r.timezone, r.enabled,
                         r.missed_run_policy, r.anchor_time, r.accounted_until);
}
auto Fields(const JobRunRow& r) {
  return std::make_tuple(r.workspace_id, r.job_id, r.job_name, r.scheduled_time, r.timezone,
                         r.start_time, r.outcome, r.miss_reason, r.missed_run_policy);
}
auto Fields(const WorkspaceMarks& r) {
  return std::make_tuple(r.workspace_id, r.last_wake_time, r.last_sleep_time,
                         r.keep_awake_signature);
}

ActivityRow Activity(const std::string& workspace_id, const std::string& user_id, absl::Time at,
                     v1::ActivitySource source, int64_t bytes, int64_t events) {
  ActivityRow row;
  row.workspace_id = workspace_id;
  row.user_id = user_id;
  row.last_time = at;
  row.last_source = source;
  row.byte_count = bytes;
  row.event_count = events;
  return row;
}

DecisionRow Decision(const std::string& decision_id, const std::string& workspace_id, absl::Time at,
                     v1::DecisionAction action) {
  DecisionRow row;
  row.decision_id = decision_id;
  row.workspace_id = workspace_id;
  row.decide_time = at;
  row.action = action;
  row.reason = v1::DECISION_REASON_IDLE_TIMEOUT;
  return row;
}

JobRow Job(const std::string& job_id, const std::string& name, absl::Time accounted_until) {
  JobRow row;
  row.job_id = job_id;
  row.name = name;
  row.schedule = "every 1h";
  row.timezone = "Europe/Paris";
  row.enabled = true;
  row.missed_run_policy = common::v1::MISSED_RUN_POLICY_RUN_ONCE_LATE;
  row.anchor_time = kT0 - absl::Hours(24);
  row.accounted_until = accounted_until;
  return row;
}

JobRunRow MakeRun(const std::string& workspace_id, const std::string& job_id, absl::Time scheduled,
                  v1::JobRunOutcome outcome) {
  JobRunRow row;
  row.workspace_id = workspace_id;
  row.job_id = job_id;
  row.job_name = "name of " + job_id;
  row.scheduled_time = scheduled;
  row.timezone = "UTC";
  row.outcome = outcome;
  if (outcome == v1::JOB_RUN_OUTCOME_MISSED) {
    row.miss_reason = v1::MISS_REASON_PLATFORM_DOWN;
  } else {
    row.start_time = scheduled + absl::Seconds(3);
  }
  row.missed_run_policy = common::v1::MISSED_RUN_POLICY_SKIP;
  return row;
}

std::vector<std::string> DecisionIds(const std::vector<DecisionRow>& rows) {
  std::vector<std::string> ids;
  for (const DecisionRow& row : rows) {
    ids.push_back(row.decision_id);
  }
  return ids;
}

// "workspace/job@seconds after kT0" for each run.
std::vector<std::string> RunKeys(const std::vector<JobRunRow>& rows) {
  std::vector<std::string> keys;
  for (const JobRunRow& row : rows) {
    keys.push_back(row.workspace_id + "/" + row.job_id + "@" +
                   std::to_string(absl::ToInt64Seconds(row.scheduled_time - kT0)));
  }
  return keys;
}

std::vector<std::string> JobIds(const std::vector<JobRow>& rows) {
  std::vector<std::string> ids;
  for (const JobRow& row : rows) {
    ids.push_back(row.job_id);
  }
  return ids;
}

class ScalerStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  // Closes the store and the database and opens both again on the same file.
  void Reopen() {
    store_.reset();
    db_.reset();
    absl::StatusOr<std::unique_ptr<SqliteDb>> db =
        SqliteDb::Open(tmp_.Join("scaler.db"), SqliteOptions{});
    ASSERT_THAT(db, IsOk());
    db_ = *std::move(db);
    absl::StatusOr<std::unique_ptr<ScalerStore>> store = ScalerStore::Open(*db_);
    ASSERT_THAT(store, IsOk());
    store_ = *std::move(store);
  }

  // Every row `list(token)` pages through, `page_size` at a time; fails the test on error.
  template <typename Row, typename List>
  static std::vector<Row> ReadAll(List list, int page_size) {
    std::vector<Row> all;
    std::string token;
    for (int pages = 0; pages < 100; ++pages) {
      absl::StatusOr<Page<Row>> page = list(token);
      EXPECT_THAT(page, IsOk());
      if (!page.ok()) break;
      EXPECT_LE(static_cast<int>(page->items.size()), page_size);
      all.insert(all.end(), page->items.begin(), page->items.end());
      token = page->next_page_token;
      if (token.empty()) break;
    }
    return all;
  }

  std::vector<DecisionRow> AllDecisions(const DecisionFilter& filter, int page_size) {
    return ReadAll<DecisionRow>(
        [&](const std::string& token) { return store_->ListDecisions(filter, page_size, token); },
        page_size);
  }

  std::vector<JobRunRow> AllJobRuns(const JobRunFilter& filter, int page_size) {
    return ReadAll<JobRunRow>(
        [&](const std::string& token) { return store_->ListJobRuns(filter, page_size, token); },
        page_size);
  }

  tidepool::testing::ScopedTempDir tmp_;
  std::unique_ptr<SqliteDb> db_;
  std::unique_ptr<ScalerStore> store_;
};

// ---------------------------------------------------------------------------------------
// Open

TEST_F(ScalerStoreTest, OpenMigratesToVersionOneAndIsIdempotent) {
  EXPECT_EQ(*db_->UserVersion(), 1);
  // Opening a second store on the migrated database changes nothing.
  ASSERT_THAT(ScalerStore::Open(*db_), IsOk());
  EXPECT_EQ(*db_->UserVersion(), 1);
}

TEST_F(ScalerStoreTest, OpenRefusesANewerSchema) {
  ASSERT_THAT(db_->Exec("PRAGMA user_version = 2"), IsOk());
  EXPECT_THAT(ScalerStore::Open(*db_), StatusIs(absl::StatusCode::kFailedPrecondition));
}

// ---------------------------------------------------------------------------------------
// Activity

TEST_F(ScalerStoreTest, ActivityOfAnUnknownWorkspaceIsAbsent) {
  EXPECT_THAT(store_->GetActivity("ws_unknown"), IsOkAndHolds(IsNullopt()));
}

TEST_F(ScalerStoreTest, ActivityLatestTimeWinsAndCountsAddUp) {
  // Out of order within one batch: the 10 s record wins although it is not the last.
  ASSERT_THAT(
      store_->RecordActivity({
          Activity("ws_a", "u_alice", kT0 + absl::Seconds(5), v1::ACTIVITY_SOURCE_HTTP, 100, 2),
          Activity("ws_a", "u_bob", kT0 + absl::Seconds(10), v1::ACTIVITY_SOURCE_TERMINAL_INPUT, 10,
                   0),
          Activity("ws_a", "u_carol", kT0 + absl::Seconds(7), v1::ACTIVITY_SOURCE_WEBSOCKET, 1, 3),
          Activity("ws_b", "u_dave", kT0, v1::ACTIVITY_SOURCE_AGENT_TURN, 0, 0),
      }),
      IsOk());
  absl::StatusOr<std::optional<ActivityRow>> a = store_->GetActivity("ws_a");
  ASSERT_THAT(a, IsOk());
  ASSERT_TRUE(a->has_value());
  // event_count 0 counts as 1: 2 + 1 + 3.
  EXPECT_EQ(Fields(**a), Fields(Activity("ws_a", "u_bob", kT0 + absl::Seconds(10),
                                         v1::ACTIVITY_SOURCE_TERMINAL_INPUT, 111, 6)));
  absl::StatusOr<std::optional<ActivityRow>> b = store_->GetActivity("ws_b");
  ASSERT_THAT(b, IsOk());
  ASSERT_TRUE(b->has_value());
  EXPECT_EQ(Fields(**b),
            Fields(Activity("ws_b", "u_dave", kT0, v1::ACTIVITY_SOURCE_AGENT_TURN, 0, 1)));

  // A later batch with an older time adds its counts but does not move the time.
  ASSERT_THAT(
      store_->RecordActivity({Activity("ws_a", "u_erin", kT0, v1::ACTIVITY_SOURCE_HTTP, 1000, 4)}),
      IsOk());
  a = store_->GetActivity("ws_a");
  ASSERT_THAT(a, IsOk());
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ(Fields(**a), Fields(Activity("ws_a", "u_bob", kT0 + absl::Seconds(10),
                                         v1::ACTIVITY_SOURCE_TERMINAL_INPUT, 1111, 10)));

  // A newer one takes over time, source and user.
  ASSERT_THAT(store_->RecordActivity({Activity("ws_a", "u_erin", kT0 + absl::Minutes(1),
                                               v1::ACTIVITY_SOURCE_WORK_PROCESS, 0, 1)}),
              IsOk());
  a = store_->GetActivity("ws_a");
  ASSERT_THAT(a, IsOk());
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ(Fields(**a), Fields(Activity("ws_a", "u_erin", kT0 + absl::Minutes(1),
                                         v1::ACTIVITY_SOURCE_WORK_PROCESS, 1111, 11)));
}

TEST_F(ScalerStoreTest, ActivityEmptyBatchIsFine) {
  EXPECT_THAT(store_->RecordActivity({}), IsOk());
}

TEST_F(ScalerStoreTest, ActivityRejectsABadRecordAndAppliesNothingOfTheBatch) {
  const ActivityRow good = Activity("ws_a", "u_alice", kT0, v1::ACTIVITY_SOURCE_HTTP, 1, 1);
  EXPECT_THAT(
      store_->RecordActivity({good, Activity("", "u_alice", kT0, v1::ACTIVITY_SOURCE_HTTP, 1, 1)}),
      StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store_->RecordActivity(
                  {good, Activity("ws_a", "u_alice", kT0, v1::ACTIVITY_SOURCE_HTTP, -1, 1)}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store_->RecordActivity(
                  {good, Activity("ws_a", "u_alice", kT0, v1::ACTIVITY_SOURCE_HTTP, 1, -1)}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store_->GetActivity("ws_a"), IsOkAndHolds(IsNullopt()));
}

TEST_F(ScalerStoreTest, ActivityCountsSaturateInsteadOfOverflowing) {
  const int64_t max = std::numeric_limits<int64_t>::max();
  ASSERT_THAT(store_->RecordActivity(
                  {Activity("ws_a", "u_a", kT0, v1::ACTIVITY_SOURCE_HTTP, max - 1, max - 1),
                   Activity("ws_a", "u_a", kT0, v1::ACTIVITY_SOURCE_HTTP, 5, 5)}),
              IsOk());
  absl::StatusOr<std::optional<ActivityRow>> a = store_->GetActivity("ws_a");
  ASSERT_THAT(a, IsOk());
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ((*a)->byte_count, max);
  EXPECT_EQ((*a)->event_count, max);
}

TEST_F(ScalerStoreTest, ActivityFromManyThreadsAddsUp) {
  constexpr int kThreads = 4;
  constexpr int kBatches = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < kBatches; ++i) {
        EXPECT_THAT(store_->RecordActivity(
                        {Activity("ws_a", "u_" + std::to_string(t), kT0 + absl::Seconds(i),
                                  v1::ACTIVITY_SOURCE_HTTP, 2, 1)}),
                    IsOk());
      }
    });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }
  absl::StatusOr<std::optional<ActivityRow>> a = store_->GetActivity("ws_a");
  ASSERT_THAT(a, IsOk());
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ((*a)->event_count, kThreads * kBatches);
  EXPECT_EQ((*a)->byte_count, 2 * kThreads * kBatches);
  EXPECT_EQ((*a)->last_time, kT0 + absl::Seconds(kBatches - 1));
}

// ---------------------------------------------------------------------------------------
// Policy

v1::IdlePolicy SamplePolicy(int64_t idle_minutes) {
  v1::IdlePolicy policy;
  policy.mutable_idle_timeout()->set_seconds(idle_minutes * 60);
  policy.mutable_check_interval()->set_seconds(30);
  policy.set_keep_messaging_awake(true);
  v1::UserPolicyOverride* user_override = policy.add_user_overrides();
  user_override->set_user_id("u_alice");
  user_override->set_always_on(true);
  return policy;
}

TEST_F(ScalerStoreTest, PolicyDefaultsToVersionZero) {
  absl::StatusOr<ScalerStore::StoredPolicy> stored = store_->GetPolicy();
  ASSERT_THAT(stored, IsOk());
  EXPECT_EQ(stored->version, 0);
  EXPECT_EQ(stored->policy.ByteSizeLong(), 0u);
}

TEST_F(ScalerStoreTest, PolicyRoundTripsAndVersions) {
  ASSERT_THAT(store_->SetPolicy(SamplePolicy(30), 0), IsOkAndHolds(1));
  absl::StatusOr<ScalerStore::StoredPolicy> stored = store_->GetPolicy();
  ASSERT_THAT(stored, IsOk());
  EXPECT_EQ(stored->version, 1);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(stored->policy, SamplePolicy(30)))
      << stored->policy.DebugString();

  // The matching version applies; zero applies unconditionally.
  EXPECT_THAT(store_->SetPolicy(SamplePolicy(45), 1), IsOkAndHolds(2));
  EXPECT_THAT(store_->SetPolicy(SamplePolicy(50), 0), IsOkAndHolds(3));
  stored = store_->GetPolicy();
  ASSERT_THAT(stored, IsOk());
  EXPECT_EQ(stored->version, 3);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(stored->policy, SamplePolicy(50)));
}

TEST_F(ScalerStoreTest, PolicyWithAStaleVersionIsAborted) {
  ASSERT_THAT(store_->SetPolicy(SamplePolicy(30), 0), IsOkAndHolds(1));
  ASSERT_THAT(store_->SetPolicy(SamplePolicy(40), 1), IsOkAndHolds(2));
  EXPECT_THAT(store_->SetPolicy(SamplePolicy(99), 1),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("version 2")));
  EXPECT_THAT(store_->SetPolicy(SamplePolicy(99), 7), StatusIs(absl::StatusCode::kAborted));
  absl::StatusOr<ScalerStore::StoredPolicy> stored = store_->GetPolicy();
  ASSERT_THAT(stored, IsOk());
  EXPECT_EQ(stored->version, 2);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(stored->policy, SamplePolicy(40)));
}

TEST_F(ScalerStoreTest, PolicyExpectingAVersionBeforeAnyIsSetIsAborted) {
  EXPECT_THAT(store_->SetPolicy(SamplePolicy(30), 1), StatusIs(absl::StatusCode::kAborted));
  EXPECT_EQ(store_->GetPolicy()->version, 0);
}

// ---------------------------------------------------------------------------------------
// Pins

TEST_F(ScalerStoreTest, PinsPutReplaceGetDelete) {
  EXPECT_THAT(store_->GetPin("ws_a"), IsOkAndHolds(IsNullopt()));

  PinRow pin;
  pin.workspace_id = "ws_a";
  pin.pin_time = kT0;
  pin.reason = "demo tomorrow";
  pin.pinned_by = "tidepoolctl";
  ASSERT_THAT(store_->PutPin(pin), IsOk());
  absl::StatusOr<std::optional<PinRow>> got = store_->GetPin("ws_a");
  ASSERT_THAT(got, IsOk());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(Fields(**got), Fields(pin));
  EXPECT_EQ((*got)->expire_time, absl::InfiniteFuture());

  PinRow replacement = pin;
  replacement.pin_time = kT0 + absl::Hours(1);
  replacement.expire_time = kT0 + absl::Hours(5);
  replacement.reason = "training";
  replacement.pinned_by = "u_admin";
  ASSERT_THAT(store_->PutPin(replacement), IsOk());
  got = store_->GetPin("ws_a");
  ASSERT_THAT(got, IsOk());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(Fields(**got), Fields(replacement));

  ASSERT_THAT(store_->DeletePin("ws_a"), IsOk());
  EXPECT_THAT(store_->GetPin("ws_a"), IsOkAndHolds(IsNullopt()));
  // Idempotent, also for a workspace never pinned.
  EXPECT_THAT(store_->DeletePin("ws_a"), IsOk());
  EXPECT_THAT(store_->DeletePin("ws_never"), IsOk());
}

TEST_F(ScalerStoreTest, PinNeedsAWorkspace) {
  EXPECT_THAT(store_->PutPin(PinRow{}), StatusIs(absl::StatusCode::kInvalidArgument));
}

// ---------------------------------------------------------------------------------------
// Decisions

class ScalerStoreDecisionsTest : public ScalerStoreTest {
 protected:
  void SetUp() override {
    ScalerStoreTest::SetUp();
    // Two decisions share a time; the higher id comes first.
    for (const DecisionRow& row : {
             Decision("dec_1", "ws_a", kT0 + absl::Seconds(1), v1::DECISION_ACTION_SLEEP),
             Decision("dec_2", "ws_b", kT0 + absl::Seconds(2), v1::DECISION_ACTION_WAKE),
             Decision("dec_3", "ws_a", kT0 + absl::Seconds(3), v1::DECISION_ACTION_KEEP_AWAKE),
             Decision("dec_4", "ws_c", kT0 + absl::Seconds(3), v1::DECISION_ACTION_SLEEP),
             Decision("dec_5", "ws_b", kT0 + absl::Seconds(5), v1::DECISION_ACTION_SLEEP),
             Decision("dec_6", "ws_a", kT0 + absl::Seconds(6), v1::DECISION_ACTION_WAKE),
         }) {
      ASSERT_THAT(store_->AppendDecision(row), IsOk());
    }
  }
};

TEST_F(ScalerStoreDecisionsTest, RoundTripsEveryField) {
  DecisionRow full = Decision("dec_9", "ws_z", kT0 + absl::Microseconds(123456789),
                              v1::DECISION_ACTION_KEEP_AWAKE);
  full.reason = v1::DECISION_REASON_KEEP_AWAKE;
  full.keep_awake_reasons = {v1::KEEP_AWAKE_REASON_PINNED, v1::KEEP_AWAKE_REASON_RECENT_ACTIVITY,
                             v1::KEEP_AWAKE_REASON_OPEN_CONNECTION};
  full.idle_duration = absl::Minutes(31) + absl::Microseconds(7);
  full.succeeded = false;
  full.error_code = "provisioner_unavailable";
  full.detail = "idle 31m > 30m; pinned";
  ASSERT_THAT(store_->AppendDecision(full), IsOk());
  DecisionFilter filter;
  filter.workspace_ids = {"ws_z"};
  absl::StatusOr<Page<DecisionRow>> page = store_->ListDecisions(filter, 10, "");
  ASSERT_THAT(page, IsOk());
  ASSERT_THAT(page->items, SizeIs(1));
  EXPECT_EQ(Fields(page->items[0]), Fields(full));
  EXPECT_EQ(page->next_page_token, "");
}

TEST_F(ScalerStoreDecisionsTest, ADuplicateIdIsRejected) {
  EXPECT_THAT(store_->AppendDecision(
                  Decision("dec_1", "ws_x", kT0 + absl::Hours(1), v1::DECISION_ACTION_WAKE)),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(store_->AppendDecision(Decision("", "ws_x", kT0, v1::DECISION_ACTION_WAKE)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store_->AppendDecision(Decision("dec_x", "", kT0, v1::DECISION_ACTION_WAKE)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(ScalerStoreDecisionsTest, ListsNewestFirst) {
  absl::StatusOr<Page<DecisionRow>> page = store_->ListDecisions(DecisionFilter{}, 1000, "");
  ASSERT_THAT(page, IsOk());
  EXPECT_THAT(DecisionIds(page->items),
              ElementsAre("dec_6", "dec_5", "dec_4", "dec_3", "dec_2", "dec_1"));
  EXPECT_EQ(page->next_page_token, "");
}

TEST_F(ScalerStoreDecisionsTest, FiltersByWorkspaces) {
  DecisionFilter filter;
  filter.workspace_ids = {"ws_a"};
  EXPECT_THAT(DecisionIds(AllDecisions(filter, 10)), ElementsAre("dec_6", "dec_3", "dec_1"));
  filter.workspace_ids = {"ws_b", "ws_c"};
  EXPECT_THAT(DecisionIds(AllDecisions(filter, 10)), ElementsAre("dec_5", "dec_4", "dec_2"));
  filter.workspace_ids = {"ws_nobody"};
  EXPECT_THAT(AllDecisions(filter, 10), IsEmpty());
  // A value that would break string-built SQL is just a value.
  filter.workspace_ids = {"ws_a' OR '1'='1"};
  EXPECT_THAT(AllDecisions(filter, 10), IsEmpty());
}

TEST_F(ScalerStoreDecisionsTest, FiltersByAction) {
  DecisionFilter filter;
  filter.action = v1::DECISION_ACTION_SLEEP;
  EXPECT_THAT(DecisionIds(AllDecisions(filter, 10)), ElementsAre("dec_5", "dec_4", "dec_1"));
  filter.action = v1::DECISION_ACTION_WAKE;
  EXPECT_THAT(DecisionIds(AllDecisions(filter, 10)), ElementsAre("dec_6", "dec_2"));
  filter.action = v1::DECISION_ACTION_KEEP_AWAKE;
  EXPECT_THAT(DecisionIds(AllDecisions(filter, 10)), ElementsAre("dec_3"));
}

TEST_F(ScalerStoreDecisionsTest, FiltersByTimeStartInclusiveEndExclusive) {
  DecisionFilter filter;
  filter.start_time = kT0 + absl::Seconds(3);
  EXPECT_THAT(DecisionIds(AllDecisions(filter, 10)),
              ElementsAre("dec_6", "dec_5", "dec_4", "dec_3"));
  filter.end_time = kT0 + absl::Seconds(6);
  EXPECT_THAT(DecisionIds(AllDecisions(filter, 10)), ElementsAre("dec_5", "dec_4", "dec_3"));
  filter.start_time = absl::InfinitePast();
  filter.end_time = kT0 + absl::Seconds(3);
  EXPECT_THAT(DecisionIds(AllDecisions(filter, 10)), ElementsAre("dec_2", "dec_1"));
  // An empty range.
  filter.start_time = kT0 + absl::Seconds(4);
  filter.end_time = kT0 + absl::Seconds(4);
  EXPECT_THAT(AllDecisions(filter, 10), IsEmpty());
}

TEST_F(ScalerStoreDecisionsTest, CombinesFilters) {
  DecisionFilter filter;
  filter.workspace_ids = {"ws_a", "ws_b"};
  filter.action = v1::DECISION_ACTION_SLEEP;
  filter.start_time = kT0 + absl::Seconds(2);
  EXPECT_THAT(DecisionIds(AllDecisions(filter, 10)), ElementsAre("dec_5"));
}

TEST_F(ScalerStoreDecisionsTest, PagesThroughInAStableOrder) {
  absl::StatusOr<Page<DecisionRow>> first = store_->ListDecisions(DecisionFilter{}, 2, "");
  ASSERT_THAT(first, IsOk());
  EXPECT_THAT(DecisionIds(first->items), ElementsAre("dec_6", "dec_5"));
  ASSERT_NE(first->next_page_token, "");

  // A decision appended meanwhile (newer than everything) does not shift the next pages.
  ASSERT_THAT(store_->AppendDecision(
                  Decision("dec_7", "ws_a", kT0 + absl::Seconds(7), v1::DECISION_ACTION_SLEEP)),
              IsOk());
  absl::StatusOr<Page<DecisionRow>> second =
      store_->ListDecisions(DecisionFilter{}, 2, first->next_page_token);
  ASSERT_THAT(second, IsOk());
  // dec_4 and dec_3 share a time: the page boundary falls between equal times correctly.
  EXPECT_THAT(DecisionIds(second->items), ElementsAre("dec_4", "dec_3"));
  ASSERT_NE(second->next_page_token, "");
  absl::StatusOr<Page<DecisionRow>> third =
      store_->ListDecisions(DecisionFilter{}, 2, second->next_page_token);
  ASSERT_THAT(third, IsOk());
  EXPECT_THAT(DecisionIds(third->items), ElementsAre("dec_2", "dec_1"));
  EXPECT_EQ(third->next_page_token, "");

  // Every page size gives the same sequence.
  for (int size = 1; size <= 8; ++size) {
    EXPECT_THAT(DecisionIds(AllDecisions(DecisionFilter{}, size)),
                ElementsAre("dec_7", "dec_6", "dec_5", "dec_4", "dec_3", "dec_2", "dec_1"))
        << "page size " << size;
  }
  // Tie boundary exactly at dec_4 | dec_3 with page size 1.
  absl::StatusOr<Page<DecisionRow>> after_four;
  {
    std::string token;
    for (int i = 0; i < 4; ++i) {
      absl::StatusOr<Page<DecisionRow>> page = store_->ListDecisions(DecisionFilter{}, 1, token);
      ASSERT_THAT(page, IsOk());
      token = page->next_page_token;
    }
    after_four = store_->ListDecisions(DecisionFilter{}, 1, token);
  }
  ASSERT_THAT(after_four, IsOk());
  EXPECT_THAT(DecisionIds(after_four->items), ElementsAre("dec_3"));
}

TEST_F(ScalerStoreDecisionsTest, PagesThroughAFilteredList) {
  DecisionFilter filter;
  filter.workspace_ids = {"ws_a", "ws_c"};
  EXPECT_THAT(DecisionIds(AllDecisions(filter, 1)),
              ElementsAre("dec_6", "dec_4", "dec_3", "dec_1"));
  EXPECT_THAT(DecisionIds(AllDecisions(filter, 3)),
              ElementsAre("dec_6", "dec_4", "dec_3", "dec_1"));
}

TEST_F(ScalerStoreDecisionsTest, AnExactlyFullLastPageHasNoToken) {
  absl::StatusOr<Page<DecisionRow>> page = store_->ListDecisions(DecisionFilter{}, 6, "");
  ASSERT_THAT(page, IsOk());
  EXPECT_THAT(page->items, SizeIs(6));
  EXPECT_EQ(page->next_page_token, "");
}

TEST_F(ScalerStoreDecisionsTest, RejectsBadPageSizes) {
  for (int size : {0, -1, 1001, std::numeric_limits<int>::max(), std::numeric_limits<int>::min()}) {
    EXPECT_THAT(store_->ListDecisions(DecisionFilter{}, size, ""),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << size;
  }
  EXPECT_THAT(store_->ListDecisions(DecisionFilter{}, 1, ""), IsOk());
  EXPECT_THAT(store_->ListDecisions(DecisionFilter{}, 1000, ""), IsOk());
}

TEST_F(ScalerStoreDecisionsTest, RejectsMalformedPageTokens) {
  absl::StatusOr<Page<DecisionRow>> first = store_->ListDecisions(DecisionFilter{}, 2, "");
  ASSERT_THAT(first, IsOk());
  const std::string good = first->next_page_token;
  ASSERT_THAT(store_->ListDecisions(DecisionFilter{}, 2, good), IsOk());

  // A job-run token for the same position.
  JobRunFilter run_filter;
  ASSERT_THAT(store_->PutJobRun(MakeRun("ws_a", "job_1", kT0, v1::JOB_RUN_OUTCOME_ON_TIME)),
              IsOk());
  ASSERT_THAT(store_->PutJobRun(MakeRun("ws_a", "job_2", kT0, v1::JOB_RUN_OUTCOME_ON_TIME)),
              IsOk());
  absl::StatusOr<Page<JobRunRow>> runs = store_->ListJobRuns(run_filter, 1, "");
  ASSERT_THAT(runs, IsOk());
  ASSERT_NE(runs->next_page_token, "");

  std::string decoded;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(good, &decoded));
  for (const std::string& bad : {
           std::string("not a token!"), std::string("====="), good + "A",
           good.substr(0, good.size() - 1), std::string(" ") + good,
           absl::WebSafeBase64Escape("d"),                      // no fields
           absl::WebSafeBase64Escape("d3:abc"),                 // too few fields
           absl::WebSafeBase64Escape("d2:1x5:dec_1"),           // time not a number
           absl::WebSafeBase64Escape("d2:+15:dec_1"),           // not canonical
           absl::WebSafeBase64Escape("d02:105:dec_1"),          // not canonical
           absl::WebSafeBase64Escape("d2:109:dec_1"),           // length beyond the end
           absl::WebSafeBase64Escape("d2:105:dec_1extra"),      // trailing bytes
           absl::WebSafeBase64Escape("x" + decoded.substr(1)),  // unknown kind
           runs->next_page_token,                               // another list's
       }) {
    EXPECT_THAT(store_->ListDecisions(DecisionFilter{}, 2, bad),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << "token \"" << bad << "\"";
  }
}

// ---------------------------------------------------------------------------------------
// Jobs

TEST_F(ScalerStoreTest, JobsOfAnUnknownWorkspaceAreEmpty) {
  EXPECT_THAT(store_->ListJobs("ws_none"), IsOkAndHolds(IsEmpty()));
}

TEST_F(ScalerStoreTest, ReplaceJobsStoresTheListInJobIdOrder) {
  const JobRow b = Job("job_b", "backup", kT0);
  const JobRow a = Job("job_a", "report", kT0 - absl::Hours(1));
  ASSERT_THAT(store_->ReplaceJobs("ws_a", {b, a}), IsOk());
  absl::StatusOr<std::vector<JobRow>> jobs = store_->ListJobs("ws_a");
  ASSERT_THAT(jobs, IsOk());
  ASSERT_THAT(*jobs, SizeIs(2));
  JobRow want_a = a;
  want_a.workspace_id = "ws_a";
  JobRow want_b = b;
  want_b.workspace_id = "ws_a";
  EXPECT_EQ(Fields((*jobs)[0]), Fields(want_a));
  EXPECT_EQ(Fields((*jobs)[1]), Fields(want_b));
}

TEST_F(ScalerStoreTest, ReplaceJobsKeepsAccountedUntilOfStayingJobsAndRemovesAbsentOnes) {
  ASSERT_THAT(
      store_->ReplaceJobs("ws_a", {Job("job_a", "report", kT0), Job("job_b", "backup", kT0)}),
      IsOk());
  ASSERT_THAT(store_->ReplaceJobs("ws_other", {Job("job_a", "theirs", kT0)}), IsOk());
  ASSERT_THAT(store_->SetJobAccountedUntil("ws_a", "job_a", kT0 + absl::Hours(3)), IsOk());

  // job_a stays (changed), job_b goes, job_c is new.
  JobRow changed_a = Job("job_a", "daily report", kT0 - absl::Hours(100));
  changed_a.schedule = "0 9 * * *";
  changed_a.timezone = "";
  changed_a.enabled = false;
  changed_a.missed_run_policy = common::v1::MISSED_RUN_POLICY_SKIP;
  changed_a.anchor_time = kT0 + absl::Minutes(1);
  changed_a.workspace_id = "ws_a";  // optional, but must match when given
  const JobRow new_c = Job("job_c", "cleanup", kT0 + absl::Hours(10));
  ASSERT_THAT(store_->ReplaceJobs("ws_a", {new_c, changed_a}), IsOk());

  absl::StatusOr<std::vector<JobRow>> jobs = store_->ListJobs("ws_a");
  ASSERT_THAT(jobs, IsOk());
  ASSERT_THAT(JobIds(*jobs), ElementsAre("job_a", "job_c"));
  JobRow want_a = changed_a;
  want_a.accounted_until = kT0 + absl::Hours(3);
  EXPECT_EQ(Fields((*jobs)[0]), Fields(want_a));
  JobRow want_c = new_c;
  want_c.workspace_id = "ws_a";
  EXPECT_EQ(Fields((*jobs)[1]), Fields(want_c));

  // Other workspaces are untouched.
  absl::StatusOr<std::vector<JobRow>> other = store_->ListJobs("ws_other");
  ASSERT_THAT(other, IsOk());
  ASSERT_THAT(*other, SizeIs(1));
  EXPECT_EQ((*other)[0].name, "theirs");

  // A removed job that comes back is new again: it takes the row's accounted_until.
  ASSERT_THAT(store_->ReplaceJobs("ws_a", {Job("job_b", "backup", kT0 + absl::Hours(20))}), IsOk());
  jobs = store_->ListJobs("ws_a");
  ASSERT_THAT(jobs, IsOk());
  ASSERT_THAT(JobIds(*jobs), ElementsAre("job_b"));
  EXPECT_EQ((*jobs)[0].accounted_until, kT0 + absl::Hours(20));

  // An empty list removes them all.
  ASSERT_THAT(store_->ReplaceJobs("ws_a", {}), IsOk());
  EXPECT_THAT(store_->ListJobs("ws_a"), IsOkAndHolds(IsEmpty()));
  EXPECT_THAT(store_->ListJobs("ws_other"), IsOkAndHolds(SizeIs(1)));
}

TEST_F(ScalerStoreTest, ReplaceJobsRejectsBadListsAndChangesNothing) {
  ASSERT_THAT(store_->ReplaceJobs("ws_a", {Job("job_a", "report", kT0)}), IsOk());
  EXPECT_THAT(store_->ReplaceJobs("ws_a", {Job("job_b", "x", kT0), Job("job_b", "y", kT0)}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("repeated")));
  EXPECT_THAT(store_->ReplaceJobs("ws_a", {Job("", "x", kT0)}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  JobRow foreign = Job("job_f", "x", kT0);
  foreign.workspace_id = "ws_b";
  EXPECT_THAT(store_->ReplaceJobs("ws_a", {foreign}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store_->ReplaceJobs("", {}), StatusIs(absl::StatusCode::kInvalidArgument));
  absl::StatusOr<std::vector<JobRow>> jobs = store_->ListJobs("ws_a");
  ASSERT_THAT(jobs, IsOk());
  EXPECT_THAT(JobIds(*jobs), ElementsAre("job_a"));
}

TEST_F(ScalerStoreTest, SetJobAccountedUntil) {
  ASSERT_THAT(
      store_->ReplaceJobs("ws_a", {Job("job_a", "report", kT0), Job("job_b", "backup", kT0)}),
      IsOk());
  ASSERT_THAT(store_->SetJobAccountedUntil("ws_a", "job_b", kT0 + absl::Minutes(90)), IsOk());
  absl::StatusOr<std::vector<JobRow>> jobs = store_->ListJobs("ws_a");
  ASSERT_THAT(jobs, IsOk());
  ASSERT_THAT(*jobs, SizeIs(2));
  EXPECT_EQ((*jobs)[0].accounted_until, kT0);
  EXPECT_EQ((*jobs)[1].accounted_until, kT0 + absl::Minutes(90));
  // Infinite times survive the trip.
  ASSERT_THAT(store_->SetJobAccountedUntil("ws_a", "job_a", absl::InfinitePast()), IsOk());
  jobs = store_->ListJobs("ws_a");
  ASSERT_THAT(jobs, IsOk());
  EXPECT_EQ((*jobs)[0].accounted_until, absl::InfinitePast());

  EXPECT_THAT(store_->SetJobAccountedUntil("ws_a", "job_none", kT0),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->SetJobAccountedUntil("ws_b", "job_a", kT0),
              StatusIs(absl::StatusCode::kNotFound));
}

// ---------------------------------------------------------------------------------------
// Job runs

TEST_F(ScalerStoreTest, JobRunPutGetReplace) {
  EXPECT_THAT(store_->GetJobRun("ws_a", "job_a", kT0), IsOkAndHolds(IsNullopt()));
  const JobRunRow missed = MakeRun("ws_a", "job_a", kT0, v1::JOB_RUN_OUTCOME_MISSED);
  ASSERT_THAT(store_->PutJobRun(missed), IsOk());
  absl::StatusOr<std::optional<JobRunRow>> got = store_->GetJobRun("ws_a", "job_a", kT0);
  ASSERT_THAT(got, IsOk());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(Fields(**got), Fields(missed));
  EXPECT_EQ((*got)->start_time, absl::InfinitePast());

  // Same key: replaced, not duplicated.
  JobRunRow late = MakeRun("ws_a", "job_a", kT0, v1::JOB_RUN_OUTCOME_LATE);
  late.start_time = kT0 + absl::Minutes(12) + absl::Microseconds(1);
  late.miss_reason = v1::MISS_REASON_WAKE_FAILED;
  late.job_name = "renamed";
  late.timezone = "Asia/Tokyo";
  late.missed_run_policy = common::v1::MISSED_RUN_POLICY_RUN_ONCE_LATE;
  ASSERT_THAT(store_->PutJobRun(late), IsOk());
  got = store_->GetJobRun("ws_a", "job_a", kT0);
  ASSERT_THAT(got, IsOk());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(Fields(**got), Fields(late));
  EXPECT_THAT(AllJobRuns(JobRunFilter{}, 10), SizeIs(1));

  // Other keys are other runs.
  EXPECT_THAT(store_->GetJobRun("ws_a", "job_a", kT0 + absl::Microseconds(1)),
              IsOkAndHolds(IsNullopt()));
  EXPECT_THAT(store_->GetJobRun("ws_a", "job_b", kT0), IsOkAndHolds(IsNullopt()));
  EXPECT_THAT(store_->GetJobRun("ws_b", "job_a", kT0), IsOkAndHolds(IsNullopt()));

  EXPECT_THAT(store_->PutJobRun(MakeRun("", "job_a", kT0, v1::JOB_RUN_OUTCOME_ON_TIME)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store_->PutJobRun(MakeRun("ws_a", "", kT0, v1::JOB_RUN_OUTCOME_ON_TIME)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

class ScalerStoreJobRunsTest : public ScalerStoreTest {
 protected:
  void SetUp() override {
    ScalerStoreTest::SetUp();
    for (const JobRunRow& run : {
             MakeRun("ws_a", "job_1", kT0, v1::JOB_RUN_OUTCOME_ON_TIME),
             MakeRun("ws_b", "job_1", kT0, v1::JOB_RUN_OUTCOME_MISSED),
             MakeRun("ws_a", "job_2", kT0, v1::JOB_RUN_OUTCOME_LATE),
             MakeRun("ws_a", "job_1", kT0 + absl::Seconds(60), v1::JOB_RUN_OUTCOME_MISSED),
             MakeRun("ws_b", "job_2", kT0 + absl::Seconds(60), v1::JOB_RUN_OUTCOME_ON_TIME),
             MakeRun("ws_a", "job_1", kT0 + absl::Seconds(120), v1::JOB_RUN_OUTCOME_ON_TIME),
             MakeRun("ws_c", "job_9", kT0 - absl::Seconds(60), v1::JOB_RUN_OUTCOME_ON_TIME),
         }) {
      ASSERT_THAT(store_->PutJobRun(run), IsOk());
    }
  }
};

TEST_F(ScalerStoreJobRunsTest, ListsNewestScheduledFirstThenJobThenWorkspace) {
  absl::StatusOr<Page<JobRunRow>> page = store_->ListJobRuns(JobRunFilter{}, 1000, "");
  ASSERT_THAT(page, IsOk());
  EXPECT_THAT(RunKeys(page->items),
              ElementsAre("ws_a/job_1@120", "ws_a/job_1@60", "ws_b/job_2@60", "ws_a/job_1@0",
                          "ws_b/job_1@0", "ws_a/job_2@0", "ws_c/job_9@-60"));
  EXPECT_EQ(page->next_page_token, "");
}

TEST_F(ScalerStoreJobRunsTest, FiltersByWorkspacesJobOutcomeAndTime) {
  JobRunFilter filter;
  filter.workspace_ids = {"ws_b"};
  EXPECT_THAT(RunKeys(AllJobRuns(filter, 10)), ElementsAre("ws_b/job_2@60", "ws_b/job_1@0"));
  filter.workspace_ids = {"ws_b", "ws_c"};
  EXPECT_THAT(RunKeys(AllJobRuns(filter, 10)),
              ElementsAre("ws_b/job_2@60", "ws_b/job_1@0", "ws_c/job_9@-60"));

  filter = JobRunFilter{};
  filter.job_id = "job_1";
  EXPECT_THAT(RunKeys(AllJobRuns(filter, 10)),
              ElementsAre("ws_a/job_1@120", "ws_a/job_1@60", "ws_a/job_1@0", "ws_b/job_1@0"));
  filter.workspace_ids = {"ws_a"};
  EXPECT_THAT(RunKeys(AllJobRuns(filter, 10)),
              ElementsAre("ws_a/job_1@120", "ws_a/job_1@60", "ws_a/job_1@0"));

  filter = JobRunFilter{};
  filter.outcome = v1::JOB_RUN_OUTCOME_MISSED;
  EXPECT_THAT(RunKeys(AllJobRuns(filter, 10)), ElementsAre("ws_a/job_1@60", "ws_b/job_1@0"));
  filter.outcome = v1::JOB_RUN_OUTCOME_LATE;
  EXPECT_THAT(RunKeys(AllJobRuns(filter, 10)), ElementsAre("ws_a/job_2@0"));

  filter = JobRunFilter{};
  filter.start_time = kT0;
  filter.end_time = kT0 + absl::Seconds(120);
  EXPECT_THAT(RunKeys(AllJobRuns(filter, 10)),
              ElementsAre("ws_a/job_1@60", "ws_b/job_2@60", "ws_a/job_1@0", "ws_b/job_1@0",
                          "ws_a/job_2@0"));

  filter.workspace_ids = {"ws_a"};
  filter.job_id = "job_1";
  filter.outcome = v1::JOB_RUN_OUTCOME_ON_TIME;
  EXPECT_THAT(RunKeys(AllJobRuns(filter, 10)), ElementsAre("ws_a/job_1@0"));
}

TEST_F(ScalerStoreJobRunsTest, PagesThroughTiesInAStableOrder) {
  const std::vector<std::string> all = {"ws_a/job_1@120", "ws_a/job_1@60", "ws_b/job_2@60",
                                        "ws_a/job_1@0",   "ws_b/job_1@0",  "ws_a/job_2@0",
                                        "ws_c/job_9@-60"};
  for (int size = 1; size <= 8; ++size) {
    EXPECT_EQ(RunKeys(AllJobRuns(JobRunFilter{}, size)), all) << "page size " << size;
  }
  // A run added behind the cursor at an equal time does not shift later pages.
  absl::StatusOr<Page<JobRunRow>> first = store_->ListJobRuns(JobRunFilter{}, 4, "");
  ASSERT_THAT(first, IsOk());
  EXPECT_THAT(RunKeys(first->items),
              ElementsAre("ws_a/job_1@120", "ws_a/job_1@60", "ws_b/job_2@60", "ws_a/job_1@0"));
  ASSERT_THAT(store_->PutJobRun(MakeRun("ws_0", "job_0", kT0, v1::JOB_RUN_OUTCOME_ON_TIME)),
              IsOk());
  absl::StatusOr<Page<JobRunRow>> second =
      store_->ListJobRuns(JobRunFilter{}, 4, first->next_page_token);
  ASSERT_THAT(second, IsOk());
  EXPECT_THAT(RunKeys(second->items),
              ElementsAre("ws_b/job_1@0", "ws_a/job_2@0", "ws_c/job_9@-60"));
  EXPECT_EQ(second->next_page_token, "");
}

TEST_F(ScalerStoreJobRunsTest, RejectsBadPageSizesAndTokens) {
  for (int size : {0, -5, 1001}) {
    EXPECT_THAT(store_->ListJobRuns(JobRunFilter{}, size, ""),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << size;
  }
  absl::StatusOr<Page<DecisionRow>> decisions;
  ASSERT_THAT(store_->AppendDecision(Decision("dec_1", "ws_a", kT0, v1::DECISION_ACTION_WAKE)),
              IsOk());
  ASSERT_THAT(store_->AppendDecision(Decision("dec_2", "ws_a", kT0, v1::DECISION_ACTION_WAKE)),
              IsOk());
  decisions = store_->ListDecisions(DecisionFilter{}, 1, "");
  ASSERT_THAT(decisions, IsOk());
  ASSERT_NE(decisions->next_page_token, "");
  for (const std::string& bad : {
           std::string("garbage!"),
           absl::WebSafeBase64Escape("r2:105:job_1"),               // too few fields
           absl::WebSafeBase64Escape("r1:x5:job_14:ws_a"),          // time not a number
           absl::WebSafeBase64Escape("r2:105:job_14:ws_a5:extra"),  // too many fields
           decisions->next_page_token,                              // another list's
       }) {
    EXPECT_THAT(store_->ListJobRuns(JobRunFilter{}, 2, bad),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << "token \"" << bad << "\"";
  }
}

// ---------------------------------------------------------------------------------------
// Marks and heartbeat

TEST_F(ScalerStoreTest, MarksDefaultAndRoundTrip) {
  absl::StatusOr<WorkspaceMarks> marks = store_->GetMarks("ws_a");
  ASSERT_THAT(marks, IsOk());
  WorkspaceMarks want;
  want.workspace_id = "ws_a";
  EXPECT_EQ(Fields(*marks), Fields(want));

  want.last_wake_time = kT0;
  want.last_sleep_time = kT0 + absl::Hours(1);
  want.keep_awake_signature = "1,5";
  ASSERT_THAT(store_->PutMarks(want), IsOk());
  marks = store_->GetMarks("ws_a");
  ASSERT_THAT(marks, IsOk());
  EXPECT_EQ(Fields(*marks), Fields(want));

  want.last_wake_time = kT0 + absl::Hours(2);
  want.keep_awake_signature = "";
  ASSERT_THAT(store_->PutMarks(want), IsOk());
  marks = store_->GetMarks("ws_a");
  ASSERT_THAT(marks, IsOk());
  EXPECT_EQ(Fields(*marks), Fields(want));

  // Others are unaffected.
  marks = store_->GetMarks("ws_b");
  ASSERT_THAT(marks, IsOk());
  EXPECT_EQ(marks->workspace_id, "ws_b");
  EXPECT_EQ(marks->last_wake_time, absl::InfinitePast());

  EXPECT_THAT(store_->PutMarks(WorkspaceMarks{}), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(ScalerStoreTest, Heartbeat) {
  EXPECT_THAT(store_->GetHeartbeat(), IsOkAndHolds(absl::InfinitePast()));
  ASSERT_THAT(store_->SetHeartbeat(kT0), IsOk());
  EXPECT_THAT(store_->GetHeartbeat(), IsOkAndHolds(kT0));
  ASSERT_THAT(store_->SetHeartbeat(kT0 + absl::Seconds(61)), IsOk());
  EXPECT_THAT(store_->GetHeartbeat(), IsOkAndHolds(kT0 + absl::Seconds(61)));
  absl::StatusOr<Statement> count = db_->Prepare("SELECT count(*) FROM heartbeat");
  ASSERT_THAT(count, IsOk());
  ASSERT_THAT(count->Step(), IsOkAndHolds(true));
  EXPECT_EQ(count->ColumnInt(0), 1);
}

// ---------------------------------------------------------------------------------------
// Forgetting and reopening

// Gives `workspace_id` one of everything.
void Populate(ScalerStore& store, const std::string& workspace_id) {
  ASSERT_THAT(store.RecordActivity(
                  {Activity(workspace_id, "u_owner", kT0, v1::ACTIVITY_SOURCE_HTTP, 10, 1)}),
              IsOk());
  PinRow pin;
  pin.workspace_id = workspace_id;
  pin.pin_time = kT0;
  pin.reason = "why not";
  pin.pinned_by = "tidepoolctl";
  ASSERT_THAT(store.PutPin(pin), IsOk());
  ASSERT_THAT(store.ReplaceJobs(workspace_id, {Job("job_1", "report", kT0)}), IsOk());
  WorkspaceMarks marks;
  marks.workspace_id = workspace_id;
  marks.last_wake_time = kT0;
  ASSERT_THAT(store.PutMarks(marks), IsOk());
  ASSERT_THAT(store.AppendDecision(
                  Decision("dec_" + workspace_id, workspace_id, kT0, v1::DECISION_ACTION_SLEEP)),
              IsOk());
  ASSERT_THAT(store.PutJobRun(MakeRun(workspace_id, "job_1", kT0, v1::JOB_RUN_OUTCOME_ON_TIME)),
              IsOk());
}

TEST_F(ScalerStoreTest, ForgetWorkspaceKeepsHistoryOnly) {
  Populate(*store_, "ws_a");
  Populate(*store_, "ws_b");
  ASSERT_THAT(store_->ForgetWorkspace("ws_a"), IsOk());

  EXPECT_THAT(store_->GetActivity("ws_a"), IsOkAndHolds(IsNullopt()));
  EXPECT_THAT(store_->GetPin("ws_a"), IsOkAndHolds(IsNullopt()));
  EXPECT_THAT(store_->ListJobs("ws_a"), IsOkAndHolds(IsEmpty()));
  absl::StatusOr<WorkspaceMarks> marks = store_->GetMarks("ws_a");
  ASSERT_THAT(marks, IsOk());
  EXPECT_EQ(marks->last_wake_time, absl::InfinitePast());
  // History stays.
  DecisionFilter decisions;
  decisions.workspace_ids = {"ws_a"};
  EXPECT_THAT(DecisionIds(AllDecisions(decisions, 10)), ElementsAre("dec_ws_a"));
  EXPECT_THAT(store_->GetJobRun("ws_a", "job_1", kT0), IsOkAndHolds(Optional(_)));

  // The other workspace is untouched.
  EXPECT_THAT(store_->GetActivity("ws_b"), IsOkAndHolds(Optional(_)));
  EXPECT_THAT(store_->GetPin("ws_b"), IsOkAndHolds(Optional(_)));
  EXPECT_THAT(store_->ListJobs("ws_b"), IsOkAndHolds(SizeIs(1)));
  marks = store_->GetMarks("ws_b");
  ASSERT_THAT(marks, IsOk());
  EXPECT_EQ(marks->last_wake_time, kT0);

  // Idempotent.
  EXPECT_THAT(store_->ForgetWorkspace("ws_a"), IsOk());
  EXPECT_THAT(store_->ForgetWorkspace("ws_never"), IsOk());
}

TEST_F(ScalerStoreTest, ReopeningKeepsEverything) {
  Populate(*store_, "ws_a");
  ASSERT_THAT(store_->SetPolicy(SamplePolicy(30), 0), IsOkAndHolds(1));
  ASSERT_THAT(store_->SetHeartbeat(kT0 + absl::Seconds(5)), IsOk());
  ASSERT_THAT(store_->SetJobAccountedUntil("ws_a", "job_1", kT0 + absl::Hours(1)), IsOk());

  Reopen();
  EXPECT_EQ(*db_->UserVersion(), 1);

  absl::StatusOr<std::optional<ActivityRow>> activity = store_->GetActivity("ws_a");
  ASSERT_THAT(activity, IsOk());
  ASSERT_TRUE(activity->has_value());
  EXPECT_EQ(Fields(**activity),
            Fields(Activity("ws_a", "u_owner", kT0, v1::ACTIVITY_SOURCE_HTTP, 10, 1)));
  absl::StatusOr<std::optional<PinRow>> pin = store_->GetPin("ws_a");
  ASSERT_THAT(pin, IsOk());
  ASSERT_TRUE(pin->has_value());
  EXPECT_EQ((*pin)->reason, "why not");
  EXPECT_EQ((*pin)->expire_time, absl::InfiniteFuture());
  absl::StatusOr<std::vector<JobRow>> jobs = store_->ListJobs("ws_a");
  ASSERT_THAT(jobs, IsOk());
  ASSERT_THAT(*jobs, SizeIs(1));
  EXPECT_EQ((*jobs)[0].accounted_until, kT0 + absl::Hours(1));
  absl::StatusOr<WorkspaceMarks> marks = store_->GetMarks("ws_a");
  ASSERT_THAT(marks, IsOk());
  EXPECT_EQ(marks->last_wake_time, kT0);
  EXPECT_THAT(DecisionIds(AllDecisions(DecisionFilter{}, 10)), ElementsAre("dec_ws_a"));
  absl::StatusOr<std::optional<JobRunRow>> run = store_->GetJobRun("ws_a", "job_1", kT0);
  ASSERT_THAT(run, IsOk());
  ASSERT_TRUE(run->has_value());
  EXPECT_EQ(Fields(**run), Fields(MakeRun("ws_a", "job_1", kT0, v1::JOB_RUN_OUTCOME_ON_TIME)));
  absl::StatusOr<ScalerStore::StoredPolicy> policy = store_->GetPolicy();
  ASSERT_THAT(policy, IsOk());
  EXPECT_EQ(policy->version, 1);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(policy->policy, SamplePolicy(30)));
  EXPECT_THAT(store_->GetHeartbeat(), IsOkAndHolds(kT0 + absl::Seconds(5)));

  // Versioning carries on from the stored version.
  EXPECT_THAT(store_->SetPolicy(SamplePolicy(40), 0), IsOkAndHolds(2));
  // A page token from before a reopen still works (tokens hold only the sort key).
  ASSERT_THAT(store_->AppendDecision(
                  Decision("dec_later", "ws_a", kT0 + absl::Seconds(1), v1::DECISION_ACTION_WAKE)),
              IsOk());
  absl::StatusOr<Page<DecisionRow>> first = store_->ListDecisions(DecisionFilter{}, 1, "");
  ASSERT_THAT(first, IsOk());
  Reopen();
  absl::StatusOr<Page<DecisionRow>> second =
      store_->ListDecisions(DecisionFilter{}, 1, first->next_page_token);
  ASSERT_THAT(second, IsOk());
  EXPECT_THAT(DecisionIds(second->items), ElementsAre("dec_ws_a"));
}

}  // namespace
}  // namespace tidepool::scaler
