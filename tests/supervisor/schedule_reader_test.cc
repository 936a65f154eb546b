#include "services/supervisor/schedule_reader.h"

#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
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

}  // namespace
}  // namespace tidepool::supervisor
