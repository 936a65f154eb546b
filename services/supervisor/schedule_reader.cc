#include "services/supervisor/schedule_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "lib/job_schedule.h"
#include "lib/sqlite_store.h"
#include "nlohmann/json.hpp"

namespace tidepool::supervisor {
namespace {

using google::protobuf::util::TimeUtil;

constexpr size_t kMaxStoreBytes = 4 << 20;

// A job's recent runs kept in its status (newest first in the store).
constexpr int kMaxRecentRuns = 50;

// Opens the store at `path` beneath `root`: nullopt when it does not exist, FAILED_PRECONDITION
// when it is not a regular file.
absl::StatusOr<std::optional<ScopedFd>> OpenStore(const SafeRoot& root, const std::string& path) {
  absl::StatusOr<ScopedFd> fd = root.OpenBeneath(path, O_RDONLY | O_NONBLOCK);
  if (!fd.ok()) {
    if (fd.status().code() == absl::StatusCode::kNotFound) return std::nullopt;
    return fd.status();
  }
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("the schedule store ", path, " is not a file"));
  }
  return std::optional<ScopedFd>(*std::move(fd));
}

// Sets each job's timezone (its own, else the owner's, else UTC) and next run time, or why
// there is none; keeps the newest kMaxRecentRuns runs.
std::vector<v1::ScheduledJob> Finish(std::vector<v1::ScheduledJob> in,
                                     const std::string& default_timezone, absl::Time now) {
  std::vector<v1::ScheduledJob> jobs;
  for (v1::ScheduledJob& job : in) {
    job.clear_next_run_time();
    job.clear_schedule_error();
    // The newest 50 runs are plenty for the scaler's check (it reads every minute or so).
    if (job.recent_runs_size() > kMaxRecentRuns) {
      job.mutable_recent_runs()->DeleteSubrange(kMaxRecentRuns,
                                                job.recent_runs_size() - kMaxRecentRuns);
    }
    const std::string zone_name = !job.timezone().empty()    ? job.timezone()
                                  : !default_timezone.empty() ? default_timezone
                                                              : "UTC";
    job.set_timezone(zone_name);
    absl::TimeZone zone;
    absl::StatusOr<JobSchedule> schedule = JobSchedule::Parse(job.schedule());
    if (!absl::LoadTimeZone(zone_name, &zone)) {
      job.set_schedule_error(absl::StrCat("unknown timezone ", zone_name));
    } else if (!schedule.ok()) {
      job.set_schedule_error(std::string(schedule.status().message()));
    } else if (job.enabled()) {
      if (job.has_anchor_time()) {
        schedule->set_anchor(
            absl::FromUnixMicros(TimeUtil::TimestampToMicroseconds(job.anchor_time())));
      }
      if (std::optional<absl::Time> next = schedule->Next(now, zone); next.has_value()) {
        *job.mutable_next_run_time() =
            TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(*next));
      }
    }
    jobs.push_back(std::move(job));
  }
  return jobs;
}

// "every 1h30m" for an interval in milliseconds (whole seconds; at least 1 s).
std::string EveryFromMillis(int64_t ms) {
  int64_t seconds = std::max<int64_t>(1, ms / 1000);
  std::string out = "every ";
  for (const auto& [unit, size] : {std::pair<char, int64_t>{'d', 86400}, {'h', 3600}, {'m', 60}}) {
    if (seconds >= size) {
      absl::StrAppend(&out, seconds / size, std::string(1, unit));
      seconds %= size;
    }
  }
  if (seconds > 0) absl::StrAppend(&out, seconds, "s");
  return out;
}

// One row of cron_jobs as a ScheduledJob (no next run yet).
v1::ScheduledJob OpenClawJob(const std::string& id, const std::string& name, bool enabled,
                             const std::string& job_json) {
  v1::ScheduledJob job;
  job.set_job_id(id);
  job.set_name(name);
  job.set_enabled(enabled);
  const nlohmann::json parsed = nlohmann::json::parse(job_json, nullptr, false);
  if (!parsed.is_object()) {
    job.set_schedule("unreadable");
    job.set_schedule_error("the job's stored form cannot be read");
    return job;
  }
  if (parsed.contains("displayName") && parsed["displayName"].is_string()) {
    job.set_name(parsed["displayName"].get<std::string>());
  }
  const nlohmann::json schedule = parsed.value("schedule", nlohmann::json::object());
  const std::string kind = schedule.value("kind", "");
  if (kind == "cron" && schedule.contains("expr") && schedule["expr"].is_string()) {
    job.set_schedule(schedule["expr"].get<std::string>());
    if (schedule.contains("tz") && schedule["tz"].is_string()) {
      job.set_timezone(schedule["tz"].get<std::string>());
    }
  } else if (kind == "every" && schedule.contains("everyMs") && schedule["everyMs"].is_number()) {
    job.set_schedule(EveryFromMillis(schedule["everyMs"].get<int64_t>()));
    if (schedule.contains("anchorMs") && schedule["anchorMs"].is_number()) {
      *job.mutable_anchor_time() =
          TimeUtil::MillisecondsToTimestamp(schedule["anchorMs"].get<int64_t>());
    }
  } else if (kind == "at" && schedule.contains("at") && schedule["at"].is_string()) {
    absl::Time at;
    std::string error;
    if (absl::ParseTime(absl::RFC3339_full, schedule["at"].get<std::string>(), &at, &error)) {
      job.set_schedule(absl::StrCat(
          "at ", absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", at, absl::UTCTimeZone())));
      job.set_timezone("UTC");
    } else {
      job.set_schedule(absl::StrCat("at ", schedule["at"].get<std::string>()));
    }
  } else {
    job.set_schedule(kind.empty() ? "unknown" : kind);
  }
  return job;
}

v1::JobRunResult OpenClawRunResult(const std::string& status) {
  if (status == "running") return v1::JOB_RUN_RESULT_RUNNING;
  if (status == "ok" || status == "skipped") return v1::JOB_RUN_RESULT_SUCCEEDED;
  return v1::JOB_RUN_RESULT_FAILED;  // error, interrupted, superseded
}

}  // namespace

absl::StatusOr<std::vector<v1::ScheduledJob>> ReadScheduledJobs(const SafeRoot& root,
                                                                const std::string& path,
                                                                const std::string& default_timezone,
                                                                absl::Time now) {
  absl::StatusOr<std::optional<ScopedFd>> fd = OpenStore(root, path);
  if (!fd.ok()) return fd.status();
  if (!fd->has_value()) return std::vector<v1::ScheduledJob>();
  std::optional<std::string> text = ReadToEnd((*fd)->get(), kMaxStoreBytes);
  if (!text.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the schedule store ", path, " cannot be read or is over 4 MiB"));
  }
  v1::ScheduleStore store;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;  // the tool may keep its own fields
  if (auto parsed = google::protobuf::util::JsonStringToMessage(*text, &store, options);
      !parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("the schedule store ", path, " is not valid: ",
                                                   std::string(parsed.message())));
  }
  std::vector<v1::ScheduledJob> jobs(store.mutable_jobs()->begin(), store.mutable_jobs()->end());
  return Finish(std::move(jobs), default_timezone, now);
}

absl::StatusOr<std::vector<v1::ScheduledJob>> ReadOpenClawJobs(const SafeRoot& root,
                                                               const std::string& path,
                                                               const std::string& default_timezone,
                                                               absl::Time now) {
  // Only a regular file beneath the volume is read (the database is then opened by name, so
  // that SQLite finds its -wal beside it; the supervisor runs as the workspace's user, so a
  // name cannot reach anything that user could not read anyway).
  absl::StatusOr<std::optional<ScopedFd>> fd = OpenStore(root, path);
  if (!fd.ok()) return fd.status();
  if (!fd->has_value()) return std::vector<v1::ScheduledJob>();
  SqliteOptions options;
  options.read_only = true;
  options.busy_timeout = absl::Seconds(2);
  absl::StatusOr<std::unique_ptr<SqliteDb>> db =
      SqliteDb::Open(absl::StrCat(root.root_path(), "/", path), options);
  if (!db.ok()) return db.status();
  absl::StatusOr<Statement> rows = (*db)->Prepare(
      "SELECT job_id, name, enabled, job_json FROM cron_jobs "
      "WHERE declaration_key IS NULL OR enabled = 1 ORDER BY name, job_id");
  if (!rows.ok()) {
    // A Gateway that has not created its tables yet keeps no jobs.
    return std::vector<v1::ScheduledJob>();
  }
  std::vector<v1::ScheduledJob> jobs;
  for (;;) {
    absl::StatusOr<bool> row = rows->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    jobs.push_back(OpenClawJob(rows->ColumnText(0), rows->ColumnText(1), rows->ColumnInt(2) != 0,
                               rows->ColumnText(3)));
  }
  absl::StatusOr<Statement> runs = (*db)->Prepare(
      "SELECT status, started_at_ms, finished_at_ms FROM cron_run_receipts WHERE job_id = ? "
      "ORDER BY started_at_ms DESC, receipt_id DESC LIMIT 50");
  for (v1::ScheduledJob& job : jobs) {
    if (!runs.ok()) break;  // no receipts table yet: no runs
    if (!runs->Reset().ok() || !runs->Bind(1, absl::string_view(job.job_id())).ok()) break;
    for (;;) {
      absl::StatusOr<bool> row = runs->Step();
      if (!row.ok() || !*row) break;
      v1::JobRunSummary* run = job.add_recent_runs();
      run->set_result(OpenClawRunResult(runs->ColumnText(0)));
      *run->mutable_start_time() = TimeUtil::MillisecondsToTimestamp(runs->ColumnInt(1));
      if (!runs->ColumnIsNull(2)) {
        *run->mutable_finish_time() = TimeUtil::MillisecondsToTimestamp(runs->ColumnInt(2));
      }
    }
    if (job.recent_runs_size() > 0) *job.mutable_last_run() = job.recent_runs(0);
  }
  return Finish(std::move(jobs), default_timezone, now);
}

}  // namespace tidepool::supervisor

