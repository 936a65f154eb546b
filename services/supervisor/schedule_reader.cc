#include "services/supervisor/schedule_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "lib/job_schedule.h"

namespace tidepool::supervisor {
namespace {

using google::protobuf::util::TimeUtil;

constexpr size_t kMaxStoreBytes = 4 << 20;

// A job's recent runs kept in its status (newest first in the store).
constexpr int kMaxRecentRuns = 50;

}  // namespace

absl::StatusOr<std::vector<v1::ScheduledJob>> ReadScheduledJobs(const SafeRoot& root,
                                                                const std::string& path,
                                                                const std::string& default_timezone,
                                                                absl::Time now) {
  absl::StatusOr<ScopedFd> fd = root.OpenBeneath(path, O_RDONLY | O_NONBLOCK);
  if (!fd.ok()) {
    if (fd.status().code() == absl::StatusCode::kNotFound) return std::vector<v1::ScheduledJob>();
    return fd.status();
  }
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("the schedule store ", path, " is not a file"));
  }
  std::optional<std::string> text = ReadToEnd(fd->get(), kMaxStoreBytes);
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
  std::vector<v1::ScheduledJob> jobs;
  for (v1::ScheduledJob& job : *store.mutable_jobs()) {
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

}  // namespace tidepool::supervisor
