#include "services/supervisor/schedule_reader.h"

#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "lib/sqlite_store.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::supervisor {
namespace {

using ::testing::HasSubstr;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;
using google::protobuf::util::TimeUtil;

absl::Time At(const std::string& rfc3339) {
  absl::Time t;
  std::string error;
  EXPECT_TRUE(absl::ParseTime(absl::RFC3339_full, rfc3339, &t, &error)) << error;
  return t;
}

std::string Rfc3339(const google::protobuf::Timestamp& t) { return TimeUtil::ToString(t); }

class ScheduleReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(tmp_.Join("home/.tool"));
    absl::StatusOr<SafeRoot> root = SafeRoot::Open(tmp_.Join("home"));
    ASSERT_THAT(root, IsOk());
    root_.emplace(*std::move(root));
  }
  void Store(const std::string& json) {
    ASSERT_TRUE(tidepool::testing::WriteFile(tmp_.Join("home/.tool/jobs.json"), json));
  }
  absl::StatusOr<std::vector<v1::ScheduledJob>> Read(absl::Time now,
                                                     const std::string& tz = "Europe/Berlin") {
    return ReadScheduledJobs(*root_, ".tool/jobs.json", tz, now);
  }

  tidepool::testing::ScopedTempDir tmp_;
  std::optional<SafeRoot> root_;
};

TEST_F(ScheduleReaderTest, AMissingStoreHasNoJobs) {
  absl::StatusOr<std::vector<v1::ScheduledJob>> jobs = Read(absl::Now());
  ASSERT_THAT(jobs, IsOk());
  EXPECT_TRUE(jobs->empty());
}

TEST_F(ScheduleReaderTest, NextRunsAreComputedInTheJobsOrTheOwnersTimezoneAcrossDst) {
  Store(R"({"jobs": [
    {"jobId": "a", "name": "Morning report", "schedule": "0 9 * * *", "enabled": true,
     "missedRunPolicy": "MISSED_RUN_POLICY_RUN_ONCE_LATE", "toolsOwnField": 1},
    {"jobId": "b", "schedule": "0 9 * * *", "timezone": "America/New_York", "enabled": true},
    {"jobId": "c", "schedule": "every 2h", "anchorTime": "2026-01-01T00:30:00Z", "enabled": true},
    {"jobId": "d", "schedule": "0 9 * * *", "enabled": false},
    {"jobId": "e", "schedule": "61 * * * *", "enabled": true},
    {"jobId": "f", "schedule": "0 9 * * *", "timezone": "Mars/Olympus", "enabled": true},
    {"jobId": "g", "schedule": "at 2026-03-01T10:00", "enabled": true, "nextRunTime": "2000-01-01T00:00:00Z"}
  ]})");
  // The evening before Berlin's spring-forward day (2026-03-29): 09:00 local is 07:00Z on the
  // 29th (summer time), while it was 08:00Z the day before.
  absl::StatusOr<std::vector<v1::ScheduledJob>> jobs = Read(At("2026-03-28T20:00:00Z"));
  ASSERT_THAT(jobs, IsOk());
  ASSERT_EQ(jobs->size(), 7u);
  EXPECT_EQ((*jobs)[0].name(), "Morning report");
  EXPECT_EQ((*jobs)[0].timezone(), "Europe/Berlin");
  EXPECT_EQ(Rfc3339((*jobs)[0].next_run_time()), "2026-03-29T07:00:00Z");
  EXPECT_EQ((*jobs)[0].missed_run_policy(), common::v1::MISSED_RUN_POLICY_RUN_ONCE_LATE);
  absl::StatusOr<std::vector<v1::ScheduledJob>> before = Read(At("2026-03-27T20:00:00Z"));
  ASSERT_THAT(before, IsOk());
  EXPECT_EQ(Rfc3339((*before)[0].next_run_time()), "2026-03-28T08:00:00Z");
  // The job's own timezone wins (New York is already on summer time: 13:00Z).
  EXPECT_EQ(Rfc3339((*jobs)[1].next_run_time()), "2026-03-29T13:00:00Z");
  // Intervals keep to their anchor's grid.
  EXPECT_EQ(Rfc3339((*jobs)[2].next_run_time()), "2026-03-28T20:30:00Z");
  // Disabled: listed, no next run.
  EXPECT_FALSE((*jobs)[3].has_next_run_time());
  EXPECT_TRUE((*jobs)[3].schedule_error().empty());
  // Not understood: listed, and why.
  EXPECT_FALSE((*jobs)[4].has_next_run_time());
  EXPECT_THAT((*jobs)[4].schedule_error(), HasSubstr("out of range"));
  EXPECT_THAT((*jobs)[5].schedule_error(), HasSubstr("unknown timezone Mars/Olympus"));
  // A past one-shot has no next run; the file's own nextRunTime is ignored.
  EXPECT_FALSE((*jobs)[6].has_next_run_time());
}

TEST_F(ScheduleReaderTest, ABrokenStoreIsAnErrorNotAnEmptyList) {
  Store("{\"jobs\": [ {\"jobId\": ");
  EXPECT_THAT(Read(absl::Now()), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr(".tool/jobs.json")));
  std::filesystem::remove(tmp_.Join("home/.tool/jobs.json"));
  std::filesystem::create_directory(tmp_.Join("home/.tool/jobs.json"));
  EXPECT_THAT(Read(absl::Now()), StatusIs(absl::StatusCode::kFailedPrecondition));
  // A link out of the volume is not followed.
  std::filesystem::remove(tmp_.Join("home/.tool/jobs.json"));
  ASSERT_TRUE(tidepool::testing::WriteFile(tmp_.Join("outside.json"), "{\"jobs\": []}"));
  std::filesystem::create_symlink(tmp_.Join("outside.json"), tmp_.Join("home/.tool/jobs.json"));
  EXPECT_THAT(Read(absl::Now()), ::testing::Not(IsOk()));
}

// OpenClaw keeps its automations in its state database; the tables below are the real
// schema of openclaw 2026.9.6 (the columns this reader uses and their neighbours), the rows
// as its `openclaw cron add` wrote them.
TEST_F(ScheduleReaderTest, OpenClawsAutomationsAreReadFromItsStateDatabase) {
  std::filesystem::create_directories(tmp_.Join("home/.openclaw/state"));
  absl::StatusOr<std::unique_ptr<SqliteDb>> db =
      SqliteDb::Open(tmp_.Join("home/.openclaw/state/openclaw.sqlite"), SqliteOptions{});
  ASSERT_THAT(db, IsOk());
  ASSERT_THAT((*db)->Exec(R"sql(
    CREATE TABLE cron_jobs (
      store_key TEXT NOT NULL, job_id TEXT NOT NULL, declaration_key TEXT, owner_agent_id TEXT,
      name TEXT NOT NULL, description TEXT, enabled INTEGER NOT NULL, agent_id TEXT,
      payload_kind TEXT NOT NULL, job_json TEXT NOT NULL, state_json TEXT NOT NULL DEFAULT '{}',
      sort_order INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL,
      PRIMARY KEY (store_key, job_id)) STRICT;
    CREATE TABLE cron_run_receipts (
      receipt_id TEXT PRIMARY KEY, store_key TEXT NOT NULL, job_id TEXT NOT NULL,
      config_revision TEXT NOT NULL, agent_id TEXT NOT NULL, request_run_id TEXT,
      status TEXT NOT NULL, owner_pid INTEGER NOT NULL, owner_start_time INTEGER,
      started_at_ms INTEGER NOT NULL, finished_at_ms INTEGER, error_text TEXT) STRICT;
    INSERT INTO cron_jobs (store_key, job_id, declaration_key, name, enabled, agent_id,
                           payload_kind, job_json, updated_at) VALUES
      ('k', 'j-morning', NULL, 'Morning summary', 1, 'main', 'agentTurn',
       '{"id":"j-morning","name":"Morning summary","enabled":true,"schedule":{"kind":"cron","expr":"0 9 * * 1-5","tz":"Europe/Berlin"}}', 0),
      ('k', 'j-plain', NULL, 'Plain cron', 1, 'main', 'agentTurn',
       '{"id":"j-plain","name":"Plain cron","enabled":true,"schedule":{"kind":"cron","expr":"30 7 * * *"}}', 0),
      ('k', 'j-every', NULL, 'Every two hours', 1, 'main', 'agentTurn',
       '{"id":"j-every","name":"Every two hours","enabled":true,"schedule":{"kind":"every","everyMs":7200000,"anchorMs":1796379424000}}', 0),
      ('k', 'j-once', NULL, 'One shot', 1, 'main', 'agentTurn',
       '{"id":"j-once","name":"One shot","enabled":true,"schedule":{"kind":"at","at":"2026-12-24T15:00:00.000Z"}}', 0),
      ('k', 'j-stream', NULL, 'Watcher', 0, 'main', 'agentTurn',
       '{"id":"j-stream","name":"Watcher","enabled":false,"schedule":{"kind":"stream"}}', 0),
      ('k', 'j-heartbeat', 'heartbeat:main', 'heartbeat-main', 0, 'main', 'heartbeat',
       '{"id":"j-heartbeat","displayName":"Heartbeat (main)","enabled":false,"schedule":{"kind":"every","everyMs":1800000}}', 0);
    INSERT INTO cron_run_receipts (receipt_id, store_key, job_id, config_revision, agent_id,
                                   status, owner_pid, started_at_ms, finished_at_ms) VALUES
      ('r1', 'k', 'j-morning', 'c', 'main', 'ok', 7, 1796284800000, 1796284805000),
      ('r2', 'k', 'j-morning', 'c', 'main', 'error', 7, 1796371200000, 1796371203000);
  )sql"),
              IsOk());
  db->reset();
  // Friday 2026-12-04 12:00 UTC; the owner is in Europe/Berlin (UTC+1).
  absl::StatusOr<std::vector<v1::ScheduledJob>> jobs = ReadOpenClawJobs(
      *root_, ".openclaw/state/openclaw.sqlite", "Europe/Berlin", At("2026-12-04T12:00:00Z"));
  ASSERT_THAT(jobs, IsOk());
  std::map<std::string, v1::ScheduledJob> by_id;
  for (const v1::ScheduledJob& job : *jobs) by_id[job.job_id()] = job;
  // The disabled system job is not the person's: it is left out; their own disabled one is not.
  EXPECT_EQ(by_id.count("j-heartbeat"), 0u);
  ASSERT_EQ(by_id.size(), 5u);
  const v1::ScheduledJob& morning = by_id["j-morning"];
  EXPECT_EQ(morning.schedule(), "0 9 * * 1-5");
  EXPECT_EQ(morning.timezone(), "Europe/Berlin");
  EXPECT_EQ(Rfc3339(morning.next_run_time()), "2026-12-07T08:00:00Z");  // Monday 09:00 CET
  ASSERT_EQ(morning.recent_runs_size(), 2);
  EXPECT_EQ(morning.recent_runs(0).result(), v1::JOB_RUN_RESULT_FAILED);
  EXPECT_EQ(morning.recent_runs(1).result(), v1::JOB_RUN_RESULT_SUCCEEDED);
  EXPECT_EQ(morning.last_run().start_time(), morning.recent_runs(0).start_time());
  // No tz of its own: the owner's, as the Gateway's TZ.
  EXPECT_EQ(by_id["j-plain"].timezone(), "Europe/Berlin");
  EXPECT_EQ(Rfc3339(by_id["j-plain"].next_run_time()), "2026-12-05T06:30:00Z");
  const v1::ScheduledJob& every = by_id["j-every"];
  EXPECT_EQ(every.schedule(), "every 2h");
  EXPECT_EQ(Rfc3339(every.anchor_time()), "2026-12-04T10:17:04Z");
  EXPECT_EQ(Rfc3339(every.next_run_time()), "2026-12-04T12:17:04Z");
  EXPECT_EQ(by_id["j-once"].schedule(), "at 2026-12-24T15:00:00Z");
  EXPECT_EQ(Rfc3339(by_id["j-once"].next_run_time()), "2026-12-24T15:00:00Z");
  EXPECT_FALSE(by_id["j-stream"].enabled());
  EXPECT_FALSE(by_id["j-stream"].schedule_error().empty()) << "listed, never silently dropped";
  // No database yet (a Gateway that never started): no jobs.
  EXPECT_THAT(ReadOpenClawJobs(*root_, ".openclaw/state/missing.sqlite", "UTC", absl::Now()),
              ::tidepool::testing::IsOkAndHolds(::testing::IsEmpty()));
}

}  // namespace
}  // namespace tidepool::supervisor
