#include "services/scaler/idle_engine.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "lib/sqlite_store.h"
#include "tests/scaler/fake_platform.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::scaler {
namespace {

namespace commonpb = ::tidepool::common::v1;
namespace suppb = ::tidepool::supervisor::v1;
using google::protobuf::util::TimeUtil;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;


google::protobuf::Timestamp Stamp(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

class IdleEngineTest : public ::testing::Test {
 protected:
  IdleEngineTest() : clock_(absl::FromCivil(absl::CivilSecond(2026, 3, 2, 8, 0, 17), absl::UTCTimeZone())),
                     platform_(clock_) {}

  void SetUp() override {
    stored_ = std::make_unique<TestStore>(tmp_.path() + "/scaler.db");
    ASSERT_NE(stored_->store, nullptr);
    store_ = stored_->store.get();
    engine_ = std::make_unique<IdleEngine>(IdleEngineOptions{}, *store_, platform_, clock_,
                                           nullptr, nullptr);
  }

  void SetPolicy(v1::IdlePolicy policy) {
    ASSERT_THAT(engine_->SetPolicy(policy, 0, "tidepoolctl"), IsOk());
  }

  // Checks every `interval` until `until` (inclusive).
  void RunUntil(absl::Time until, absl::Duration interval = absl::Seconds(60)) {
    while (clock_.Now() + interval <= until) {
      clock_.Advance(interval);
      ASSERT_THAT(engine_->Check(), IsOk());
    }
  }

  void Activity(const std::string& user, v1::ActivitySource source = v1::ACTIVITY_SOURCE_HTTP,
                const std::string& ws = kWs) {
    v1::ActivityRecord record;
    record.set_workspace_id(ws);
    record.set_source(source);
    *record.mutable_time() = Stamp(clock_.Now());
    record.set_user_id(user);
    ASSERT_THAT(engine_->RecordActivity({record}), IsOk());
  }

  std::vector<DecisionRow> Decisions(v1::DecisionAction action = v1::DECISION_ACTION_UNSPECIFIED) {
    DecisionFilter filter;
    filter.action = action;
    absl::StatusOr<Page<DecisionRow>> page = store_->ListDecisions(filter, 1000, "");
    EXPECT_THAT(page, IsOk());
    return page.ok() ? page->items : std::vector<DecisionRow>();
  }

  std::vector<JobRunRow> Runs() {
    absl::StatusOr<Page<JobRunRow>> page = store_->ListJobRuns(JobRunFilter{}, 1000, "");
    EXPECT_THAT(page, IsOk());
    return page.ok() ? page->items : std::vector<JobRunRow>();
  }

  tidepool::testing::ScopedTempDir tmp_;
  tidepool::testing::FakeClock clock_;
  FakePlatform platform_;
  std::unique_ptr<TestStore> stored_;
  ScalerStore* store_ = nullptr;
  std::unique_ptr<IdleEngine> engine_;
};

// --- Idle sleep -----------------------------------------------------------------------------

TEST_F(IdleEngineTest, AWorkspaceIdleForTimeoutPlusOneIntervalIsAsleep) {
  const absl::Time start = clock_.Now();
  platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  Activity(kOwner);
  // The default policy: 30 minutes, checked every 60 s. One interval short, it still runs.
  RunUntil(start + absl::Minutes(30) - absl::Seconds(1));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_RUNNING);
  RunUntil(start + absl::Minutes(31));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_SLEEPING);
  EXPECT_THAT(platform_.sleep_reasons, ElementsAre("idle"));
  std::vector<DecisionRow> sleeps = Decisions(v1::DECISION_ACTION_SLEEP);
  ASSERT_EQ(sleeps.size(), 1u);
  EXPECT_EQ(sleeps[0].reason, v1::DECISION_REASON_IDLE_TIMEOUT);
  EXPECT_TRUE(sleeps[0].succeeded);
  EXPECT_GE(sleeps[0].idle_duration, absl::Minutes(30));
  EXPECT_LT(sleeps[0].idle_duration, absl::Minutes(31));
  EXPECT_THAT(sleeps[0].detail, HasSubstr("nothing keeps it awake"));
}

TEST_F(IdleEngineTest, UnauthenticatedActivityDoesNotKeepAWorkspaceAwake) {
  const absl::Time start = clock_.Now();
  platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  RunUntil(start + absl::Minutes(20));
  v1::ActivityRecord anonymous;
  anonymous.set_workspace_id(kWs);
  anonymous.set_source(v1::ACTIVITY_SOURCE_HTTP);
  *anonymous.mutable_time() = Stamp(clock_.Now());
  absl::StatusOr<std::pair<int, int>> counted = engine_->RecordActivity({anonymous});
  ASSERT_THAT(counted, IsOk());
  EXPECT_EQ(counted->first, 0);
  EXPECT_EQ(counted->second, 1);
  RunUntil(start + absl::Minutes(31));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_SLEEPING);
}

TEST_F(IdleEngineTest, AuthenticatedActivityMovesTheSleepOn) {
  const absl::Time start = clock_.Now();
  platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  RunUntil(start + absl::Minutes(20));
  Activity(kOwner);
  RunUntil(start + absl::Minutes(49));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_RUNNING);
  RunUntil(start + absl::Minutes(51));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_SLEEPING);
}

TEST_F(IdleEngineTest, AWebSocketCarryingTrafficKeepsItAwakeUntilTheTrafficStops) {
  const absl::Time start = clock_.Now();
  platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  // The proxy reports a busy socket's traffic every few seconds; here once a minute, for 2 h.
  while (clock_.Now() < start + absl::Hours(2)) {
    Activity(kOwner, v1::ACTIVITY_SOURCE_WEBSOCKET);
    clock_.Advance(absl::Seconds(60));
    ASSERT_THAT(engine_->Check(), IsOk());
  }
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_RUNNING);
  absl::StatusOr<v1::IdleStatus> status = engine_->Status(kWs);
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->last_activity_source(), v1::ACTIVITY_SOURCE_WEBSOCKET);
  EXPECT_THAT(status->keep_awake_reasons(), ElementsAre(v1::KEEP_AWAKE_REASON_RECENT_ACTIVITY));
  const absl::Time quiet = clock_.Now();
  RunUntil(quiet + absl::Minutes(31));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_SLEEPING);
}

TEST_F(IdleEngineTest, ActivityForASleepingOrUnknownWorkspaceIsIgnored) {
  platform_.Add(kWs, commonpb::WORKSPACE_STATE_SLEEPING);
  v1::ActivityRecord sleeping;
  sleeping.set_workspace_id(kWs);
  sleeping.set_source(v1::ACTIVITY_SOURCE_HTTP);
  *sleeping.mutable_time() = Stamp(clock_.Now());
  sleeping.set_user_id(kOwner);
  v1::ActivityRecord unknown = sleeping;
  unknown.set_workspace_id("ws_bbbbbbbbbbbbbbbbbbbbbbbbbb");
  absl::StatusOr<std::pair<int, int>> counted = engine_->RecordActivity({sleeping, unknown});
  ASSERT_THAT(counted, IsOk());
  EXPECT_EQ(counted->first, 0);
  EXPECT_EQ(counted->second, 2);
}

TEST_F(IdleEngineTest, APinKeepsItAwakeAndSaysSoOnce) {
  const absl::Time start = clock_.Now();
  platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  absl::StatusOr<v1::IdleStatus> pinned =
      engine_->Pin(kWs, absl::InfiniteFuture(), "demo on Friday", "tidepoolctl");
  ASSERT_THAT(pinned, IsOk());
  EXPECT_TRUE(pinned->pinned());
  RunUntil(start + absl::Hours(3));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_RUNNING);
  // One KEEP_AWAKE decision for the whole pinned stretch, not one per check.
  std::vector<DecisionRow> kept = Decisions(v1::DECISION_ACTION_KEEP_AWAKE);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_THAT(kept[0].keep_awake_reasons, ElementsAre(v1::KEEP_AWAKE_REASON_PINNED));
  EXPECT_THAT(kept[0].detail, HasSubstr("kept awake: pinned"));
  ASSERT_THAT(engine_->Unpin(kWs, "tidepoolctl"), IsOk());
  RunUntil(start + absl::Hours(3) + absl::Minutes(1));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_SLEEPING);
}

TEST_F(IdleEngineTest, APinEndsAtItsExpiry) {
  const absl::Time start = clock_.Now();
  platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  ASSERT_THAT(engine_->Pin(kWs, start + absl::Hours(1), "", "tidepoolctl"), IsOk());
  RunUntil(start + absl::Minutes(59));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_RUNNING);
  RunUntil(start + absl::Minutes(61));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_SLEEPING);
}

TEST_F(IdleEngineTest, PerUserOverridesChangeTheTimeoutOrKeepWorkspacesOn) {
  const std::string other_ws = "ws_bbbbbbbbbbbbbbbbbbbbbbbbbb";
  const std::string other_owner = "u_bbbbbbbbbbbbbbbbbbbbbbbbbb";
  const absl::Time start = clock_.Now();
  platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  platform_.Add(other_ws, commonpb::WORKSPACE_STATE_RUNNING, other_owner);
  v1::IdlePolicy policy;
  v1::UserPolicyOverride* quick = policy.add_user_overrides();
  quick->set_user_id(kOwner);
  *quick->mutable_idle_timeout() = TimeUtil::SecondsToDuration(10 * 60);
  v1::UserPolicyOverride* always = policy.add_user_overrides();
  always->set_user_id(other_owner);
  always->set_always_on(true);
  SetPolicy(policy);
  RunUntil(start + absl::Minutes(11));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_SLEEPING);
  RunUntil(start + absl::Hours(5));
  EXPECT_EQ(platform_.State(other_ws), commonpb::WORKSPACE_STATE_RUNNING);
  absl::StatusOr<v1::IdleStatus> status = engine_->Status(other_ws);
  ASSERT_THAT(status, IsOk());
  EXPECT_THAT(status->keep_awake_reasons(), ElementsAre(v1::KEEP_AWAKE_REASON_ALWAYS_ON));
  EXPECT_FALSE(status->has_sleep_time());
}

TEST_F(IdleEngineTest, AProcessTheProfileMarksAsWorkKeepsItAwake) {
  const absl::Time start = clock_.Now();
  FakePlatform::Workspace& w = platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  w.activity.work_processes = {"make"};
  RunUntil(start + absl::Hours(2));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_RUNNING);
  absl::StatusOr<v1::IdleStatus> status = engine_->Status(kWs);
  ASSERT_THAT(status, IsOk());
  EXPECT_THAT(status->keep_awake_reasons(), ElementsAre(v1::KEEP_AWAKE_REASON_WORK_PROCESS));
  // The build ends; the workspace has been idle all along and sleeps at the next check.
  w.activity.work_processes.clear();
  RunUntil(start + absl::Hours(2) + absl::Minutes(1));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_SLEEPING);
}

TEST_F(IdleEngineTest, AFreshlyWokenWorkspaceHasItsGrace) {
  v1::IdlePolicy policy;
  *policy.mutable_idle_timeout() = TimeUtil::SecondsToDuration(60);
  *policy.mutable_grace_after_wake() = TimeUtil::SecondsToDuration(10 * 60);
  SetPolicy(policy);
  const absl::Time start = clock_.Now();
  platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  RunUntil(start + absl::Minutes(9));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_RUNNING);
  std::vector<DecisionRow> kept = Decisions(v1::DECISION_ACTION_KEEP_AWAKE);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_THAT(kept[0].keep_awake_reasons, ElementsAre(v1::KEEP_AWAKE_REASON_GRACE_AFTER_WAKE));
  RunUntil(start + absl::Minutes(11));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_SLEEPING);
}

TEST_F(IdleEngineTest, AFailedSleepIsRecordedAsFailedAndRetried) {
  const absl::Time start = clock_.Now();
  platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  RunUntil(start + absl::Minutes(29));
  // The provisioner becomes unreachable just for the sleep.
  class FailingSleep final : public WorkspaceDirectory {
   public:
    explicit FailingSleep(FakePlatform& inner) : inner_(inner) {}
    absl::StatusOr<std::vector<WorkspaceView>> List() override { return inner_.List(); }
    absl::StatusOr<WorkspaceView> Get(const std::string& id) override { return inner_.Get(id); }
    absl::Status Sleep(const std::string&, const std::string&) override {
      return absl::UnavailableError("provisioner down");
    }
    absl::StatusOr<commonpb::WorkspaceState> Wake(const std::string& id,
                                                  const std::string& reason) override {
      return inner_.Wake(id, reason);
    }
    absl::StatusOr<WorkspaceActivityView> Inspect(const std::string& id) override {
      return inner_.Inspect(id);
    }

   private:
    FakePlatform& inner_;
  } failing(platform_);
  IdleEngine engine(IdleEngineOptions{}, *store_, failing, clock_, nullptr, nullptr);
  clock_.Advance(absl::Minutes(2));
  ASSERT_THAT(engine.Check(), IsOk());
  std::vector<DecisionRow> sleeps = Decisions(v1::DECISION_ACTION_SLEEP);
  ASSERT_EQ(sleeps.size(), 1u);
  EXPECT_FALSE(sleeps[0].succeeded);
  EXPECT_EQ(sleeps[0].error_code, "provisioner_unavailable");
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_RUNNING);
  // The next check (with the provisioner back) puts it to sleep.
  clock_.Advance(absl::Minutes(1));
  ASSERT_THAT(engine_->Check(), IsOk());
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_SLEEPING);
}

// --- Scheduled jobs -------------------------------------------------------------------------

suppb::ScheduledJob Job(const std::string& id, const std::string& schedule,
                        const std::string& timezone,
                        commonpb::MissedRunPolicy policy = commonpb::MISSED_RUN_POLICY_RUN_ONCE_LATE) {
  suppb::ScheduledJob job;
  job.set_job_id(id);
  job.set_name(id);
  job.set_schedule(schedule);
  job.set_timezone(timezone);
  job.set_enabled(true);
  job.set_missed_run_policy(policy);
  return job;
}

// The tool runs its job at `scheduled` (started `late` after it) and reports it.
void ToolRan(FakePlatform::Workspace& w, absl::Time scheduled, absl::Duration late = absl::ZeroDuration()) {
  suppb::JobRunSummary* run = w.activity.jobs[0].add_recent_runs();
  *run->mutable_scheduled_time() = Stamp(scheduled);
  *run->mutable_start_time() = Stamp(scheduled + late);
  *run->mutable_finish_time() = Stamp(scheduled + late + absl::Seconds(30));
  run->set_result(suppb::JOB_RUN_RESULT_SUCCEEDED);
}

class ScheduledJobTest : public IdleEngineTest,
                         public ::testing::WithParamInterface<absl::CivilDay> {};

// A job at 09:00 Europe/Berlin: the workspace sleeps overnight and is running at 08:59 local
// time every day, on both sides of a daylight-saving change (spring: 2026-03-29; autumn:
// 2026-10-25), and each run is on time.
TEST_P(ScheduledJobTest, ADailyJobWakesItBeforeNineBerlinTimeEveryDay) {
  absl::TimeZone berlin;
  ASSERT_TRUE(absl::LoadTimeZone("Europe/Berlin", &berlin));
  const absl::CivilDay change = GetParam();
  clock_.Set(absl::FromCivil(absl::CivilSecond(change - 2) + 12 * 3600 + 17, berlin));  // noon
  v1::IdlePolicy policy;
  *policy.mutable_check_interval() = TimeUtil::SecondsToDuration(300);
  SetPolicy(policy);
  const absl::Duration interval = absl::Minutes(5);
  FakePlatform::Workspace& w = platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  w.activity.jobs.push_back(Job("report", "0 9 * * *", "Europe/Berlin"));
  for (absl::CivilDay day = change - 1; day <= change + 1; ++day) {
    const absl::Time before = absl::FromCivil(absl::CivilSecond(day) + 8 * 3600 + 59 * 60, berlin);
    const absl::Time nine = absl::FromCivil(absl::CivilSecond(day) + 9 * 3600, berlin);
    // Through the night (it sleeps once idle) to 08:59 local.
    RunUntil(before, interval);
    EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_RUNNING)
        << "not running at 08:59 Berlin time on " << day;
    // At 09:00 the tool runs the job and says so.
    RunUntil(nine, interval);
    ToolRan(w, nine, absl::Seconds(1));
    clock_.Set(nine + absl::Seconds(30));
    ASSERT_THAT(engine_->Check(), IsOk());
  }
  // It slept each night, woke each morning for the job, and every run was on time.
  EXPECT_GE(platform_.sleep_reasons.size(), 3u);
  EXPECT_EQ(platform_.wake_reasons,
            std::vector<std::string>(platform_.wake_reasons.size(), "scheduled_job"));
  EXPECT_EQ(platform_.wake_reasons.size(), 3u);
  std::vector<JobRunRow> runs = Runs();
  ASSERT_EQ(runs.size(), 3u);
  for (const JobRunRow& run : runs) {
    EXPECT_EQ(run.outcome, v1::JOB_RUN_OUTCOME_ON_TIME) << absl::FormatTime(run.scheduled_time);
    EXPECT_EQ(absl::ToCivilHour(run.scheduled_time, berlin).hour(), 9);
    EXPECT_EQ(run.timezone, "Europe/Berlin");
  }
}

INSTANTIATE_TEST_SUITE_P(DaylightSavingChanges, ScheduledJobTest,
                         ::testing::Values(absl::CivilDay(2026, 3, 29), absl::CivilDay(2026, 10, 25)));

TEST_F(IdleEngineTest, ASleepingWorkspaceSaysWhenItWillWake) {
  FakePlatform::Workspace& w = platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  w.activity.jobs.push_back(Job("report", "30 14 * * *", "UTC"));
  ASSERT_THAT(engine_->Check(), IsOk());  // reads the jobs while it runs
  platform_.Transition(kWs, commonpb::WORKSPACE_STATE_SLEEPING);
  absl::StatusOr<v1::IdleStatus> status = engine_->Status(kWs);
  ASSERT_THAT(status, IsOk());
  // The default wake_before_job is 2 minutes.
  EXPECT_EQ(TimeUtil::ToString(status->next_scheduled_wake_time()), "2026-03-02T14:28:00Z");
  EXPECT_FALSE(status->has_sleep_time());
}

TEST_F(IdleEngineTest, ARunMissedWhileThePlatformWasDownRunsOnceLate) {
  FakePlatform::Workspace& w = platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  w.activity.jobs.push_back(Job("digest", "0 9 * * *", "UTC"));
  ASSERT_THAT(engine_->Check(), IsOk());  // 2026-03-02 08:00, the last check before the outage
  platform_.Transition(kWs, commonpb::WORKSPACE_STATE_SLEEPING);
  // Down until 10:00 two days later: three 09:00 runs passed.
  clock_.Set(absl::FromCivil(absl::CivilSecond(2026, 3, 4, 10, 0, 0), absl::UTCTimeZone()));
  ASSERT_THAT(engine_->Check(), IsOk());
  std::vector<JobRunRow> runs = Runs();
  ASSERT_EQ(runs.size(), 3u);
  // Newest first: the 4th's run is missed (platform down) and is the one to run late; the
  // others are skipped by the policy (once, however many were missed).
  EXPECT_EQ(runs[0].outcome, v1::JOB_RUN_OUTCOME_MISSED);
  EXPECT_EQ(runs[0].miss_reason, v1::MISS_REASON_PLATFORM_DOWN);
  EXPECT_EQ(runs[1].miss_reason, v1::MISS_REASON_SKIPPED_BY_POLICY);
  EXPECT_EQ(runs[2].miss_reason, v1::MISS_REASON_SKIPPED_BY_POLICY);
  for (const JobRunRow& run : runs) {
    EXPECT_EQ(run.missed_run_policy, commonpb::MISSED_RUN_POLICY_RUN_ONCE_LATE);
  }
  // The workspace was woken for it at once.
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_RUNNING);
  EXPECT_THAT(platform_.wake_reasons, ElementsAre("missed_run"));
  std::vector<DecisionRow> wakes = Decisions(v1::DECISION_ACTION_WAKE);
  ASSERT_EQ(wakes.size(), 1u);
  EXPECT_EQ(wakes[0].reason, v1::DECISION_REASON_MISSED_RUN);
  // The tool runs it late on waking; the run turns LATE.
  ToolRan(w, runs[0].scheduled_time, absl::Minutes(61));
  clock_.Advance(absl::Minutes(2));
  ASSERT_THAT(engine_->Check(), IsOk());
  absl::StatusOr<std::optional<JobRunRow>> late =
      store_->GetJobRun(kWs, "digest", runs[0].scheduled_time);
  ASSERT_THAT(late, IsOk());
  ASSERT_TRUE(late->has_value());
  EXPECT_EQ((*late)->outcome, v1::JOB_RUN_OUTCOME_LATE);
  EXPECT_EQ((*late)->miss_reason, v1::MISS_REASON_PLATFORM_DOWN);
  EXPECT_EQ((*late)->start_time - (*late)->scheduled_time, absl::Minutes(61));
}

TEST_F(IdleEngineTest, ARunMissedWhileThePlatformWasDownIsSkippedWhenThePolicySaysSo) {
  FakePlatform::Workspace& w = platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  w.activity.jobs.push_back(Job("digest", "0 9 * * *", "UTC", commonpb::MISSED_RUN_POLICY_SKIP));
  ASSERT_THAT(engine_->Check(), IsOk());
  platform_.Transition(kWs, commonpb::WORKSPACE_STATE_SLEEPING);
  clock_.Set(absl::FromCivil(absl::CivilSecond(2026, 3, 3, 10, 0, 0), absl::UTCTimeZone()));
  ASSERT_THAT(engine_->Check(), IsOk());
  std::vector<JobRunRow> runs = Runs();
  ASSERT_EQ(runs.size(), 2u);
  for (const JobRunRow& run : runs) {
    EXPECT_EQ(run.outcome, v1::JOB_RUN_OUTCOME_MISSED);
    EXPECT_EQ(run.miss_reason, v1::MISS_REASON_PLATFORM_DOWN);
    EXPECT_EQ(run.missed_run_policy, commonpb::MISSED_RUN_POLICY_SKIP);
  }
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_SLEEPING);
  EXPECT_THAT(platform_.wake_reasons, IsEmpty());
}

TEST_F(IdleEngineTest, ARunTheToolNeverReportsIsMissedByTheTool) {
  FakePlatform::Workspace& w = platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  w.activity.jobs.push_back(Job("digest", "0 9 * * *", "UTC"));
  ASSERT_THAT(engine_->Check(), IsOk());
  ASSERT_THAT(engine_->Pin(kWs, absl::InfiniteFuture(), "", "tidepoolctl"), IsOk());
  RunUntil(absl::FromCivil(absl::CivilSecond(2026, 3, 2, 9, 5, 0), absl::UTCTimeZone()));
  EXPECT_THAT(Runs(), IsEmpty()) << "decided before the report grace ended";
  RunUntil(absl::FromCivil(absl::CivilSecond(2026, 3, 2, 9, 11, 0), absl::UTCTimeZone()));
  std::vector<JobRunRow> runs = Runs();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].outcome, v1::JOB_RUN_OUTCOME_MISSED);
  EXPECT_EQ(runs[0].miss_reason, v1::MISS_REASON_TOOL_DID_NOT_RUN);
}

TEST_F(IdleEngineTest, AToolsBadScheduleStoreDoesNotKeepTheWorkspaceFromSleeping) {
  const absl::Time start = clock_.Now();
  FakePlatform::Workspace& w = platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  w.activity.jobs.push_back(Job("same", "0 9 * * *", "UTC"));
  w.activity.jobs.push_back(Job("same", "0 10 * * *", "UTC"));
  w.activity.jobs.push_back(Job("broken", "every tuesday-ish", "UTC"));
  w.activity.jobs.push_back(Job("nowhere", "0 9 * * *", "Mars/Olympus_Mons"));
  w.activity.jobs.push_back(Job("", "0 9 * * *", "UTC"));
  RunUntil(start + absl::Minutes(31));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_SLEEPING);
  absl::StatusOr<std::vector<JobRow>> jobs = store_->ListJobs(kWs);
  ASSERT_THAT(jobs, IsOk());
  EXPECT_EQ(jobs->size(), 3u);  // "same" once, "broken", "nowhere"
}

TEST_F(IdleEngineTest, ASuspendedOwnersRunsAreMissedAndNothingWakes) {
  FakePlatform::Workspace& w = platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  w.activity.jobs.push_back(Job("digest", "0 9 * * *", "UTC"));
  ASSERT_THAT(engine_->Check(), IsOk());
  platform_.Transition(kWs, commonpb::WORKSPACE_STATE_SUSPENDED);
  RunUntil(absl::FromCivil(absl::CivilSecond(2026, 3, 2, 9, 30, 0), absl::UTCTimeZone()));
  std::vector<JobRunRow> runs = Runs();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].miss_reason, v1::MISS_REASON_WORKSPACE_SUSPENDED);
  EXPECT_THAT(platform_.wake_reasons, IsEmpty());
}

TEST_F(IdleEngineTest, AJobAboutToRunKeepsARunningWorkspaceAwake) {
  v1::IdlePolicy policy;
  *policy.mutable_idle_timeout() = TimeUtil::SecondsToDuration(60);
  *policy.mutable_grace_after_wake() = TimeUtil::SecondsToDuration(0);
  SetPolicy(policy);
  FakePlatform::Workspace& w = platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING);
  // Due at 08:03; idle past its minute at 08:02, but sleeping would mean waking at once.
  w.activity.jobs.push_back(Job("soon", "3 8 * * *", "UTC"));
  RunUntil(absl::FromCivil(absl::CivilSecond(2026, 3, 2, 8, 2, 30), absl::UTCTimeZone()));
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_RUNNING);
  std::vector<DecisionRow> kept = Decisions(v1::DECISION_ACTION_KEEP_AWAKE);
  ASSERT_FALSE(kept.empty());
  EXPECT_THAT(kept[0].keep_awake_reasons, ElementsAre(v1::KEEP_AWAKE_REASON_SCHEDULED_JOB_SOON));
}

// --- Messages, capacity, policy -------------------------------------------------------------

TEST_F(IdleEngineTest, AMessageWakesASleepingWorkspaceAndKeepsItUpForTheGrace) {
  platform_.Add(kWs, commonpb::WORKSPACE_STATE_SLEEPING);
  absl::StatusOr<v1::WakeForMessageResponse> woke = engine_->WakeForMessage(kWs, "slack", "m1");
  ASSERT_THAT(woke, IsOk());
  EXPECT_TRUE(woke->woke());
  EXPECT_EQ(woke->state(), commonpb::WORKSPACE_STATE_RUNNING);
  std::vector<DecisionRow> wakes = Decisions(v1::DECISION_ACTION_WAKE);
  ASSERT_EQ(wakes.size(), 1u);
  EXPECT_EQ(wakes[0].reason, v1::DECISION_REASON_MESSAGE);
  EXPECT_THAT(wakes[0].detail, HasSubstr("slack"));
  absl::StatusOr<v1::WakeForMessageResponse> again = engine_->WakeForMessage(kWs, "slack", "m2");
  ASSERT_THAT(again, IsOk());
  EXPECT_FALSE(again->woke());
  platform_.Transition(kWs, commonpb::WORKSPACE_STATE_SUSPENDED);
  EXPECT_THAT(engine_->WakeForMessage(kWs, "slack", "m3"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(IdleEngineTest, TheCapacityReportCountsAndProjects) {
  IdleEngineOptions options;
  options.workspace_cpu_millicores = 1000;
  options.workspace_memory_bytes = 1LL << 30;
  options.capacity_cpu_millicores = 4000;
  options.capacity_memory_bytes = 8LL << 30;
  IdleEngine engine(options, *store_, platform_, clock_, nullptr, nullptr);
  platform_.Add("ws_aaaaaaaaaaaaaaaaaaaaaaaaaa", commonpb::WORKSPACE_STATE_RUNNING);
  FakePlatform::Workspace& soon =
      platform_.Add("ws_bbbbbbbbbbbbbbbbbbbbbbbbbb", commonpb::WORKSPACE_STATE_RUNNING);
  soon.activity.jobs.push_back(Job("soon", "30 8 * * *", "UTC"));
  ASSERT_THAT(engine.Check(), IsOk());
  platform_.Transition("ws_bbbbbbbbbbbbbbbbbbbbbbbbbb", commonpb::WORKSPACE_STATE_SLEEPING);
  platform_.Add("ws_cccccccccccccccccccccccccc", commonpb::WORKSPACE_STATE_SLEEPING);
  platform_.Add("ws_dddddddddddddddddddddddddd", commonpb::WORKSPACE_STATE_SUSPENDED);
  ASSERT_THAT(engine.Pin("ws_aaaaaaaaaaaaaaaaaaaaaaaaaa", absl::InfiniteFuture(), "", "tidepoolctl"),
              IsOk());
  absl::StatusOr<v1::GetCapacityReportResponse> report = engine.Capacity(absl::Hours(1));
  ASSERT_THAT(report, IsOk());
  EXPECT_EQ(report->running_count(), 1);
  EXPECT_EQ(report->sleeping_count(), 2);
  EXPECT_EQ(report->suspended_count(), 1);
  EXPECT_EQ(report->always_on_count(), 1);
  // The running one, and the sleeper whose job runs within the hour.
  EXPECT_EQ(report->projected_cpu_millicores(), 2000);
  EXPECT_EQ(report->projected_memory_bytes(), 2LL << 30);
  EXPECT_EQ(report->capacity_cpu_millicores(), 4000);
}

TEST_F(IdleEngineTest, PolicyIsValidatedVersionedAndDefaulted) {
  absl::StatusOr<ScalerStore::StoredPolicy> initial = engine_->Policy();
  ASSERT_THAT(initial, IsOk());
  EXPECT_EQ(initial->version, 0);
  EXPECT_EQ(TimeUtil::ToString(initial->policy.idle_timeout()), "1800s");
  EXPECT_TRUE(initial->policy.keep_messaging_awake());
  v1::IdlePolicy bad;
  *bad.mutable_idle_timeout() = TimeUtil::SecondsToDuration(30);
  EXPECT_THAT(engine_->SetPolicy(bad, 0, "tidepoolctl"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("idle_timeout")));
  v1::IdlePolicy twice;
  twice.add_user_overrides()->set_user_id(kOwner);
  twice.add_user_overrides()->set_user_id(kOwner);
  EXPECT_THAT(engine_->SetPolicy(twice, 0, "tidepoolctl"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than one")));
  v1::IdlePolicy good;
  *good.mutable_idle_timeout() = TimeUtil::SecondsToDuration(3600);
  absl::StatusOr<ScalerStore::StoredPolicy> set = engine_->SetPolicy(good, 0, "tidepoolctl");
  ASSERT_THAT(set, IsOk());
  EXPECT_EQ(set->version, 1);
  EXPECT_EQ(TimeUtil::ToString(set->policy.check_interval()), "60s");
  EXPECT_THAT(engine_->SetPolicy(good, 7, "tidepoolctl"), StatusIs(absl::StatusCode::kAborted));
}

}  // namespace
}  // namespace tidepool::scaler
