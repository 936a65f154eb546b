#pragma once

// The tool's scheduled jobs, read from the profile's schedule store (supervisor_service.proto
// ScheduleStore, format "tidepool-json") with each job's next run time computed in its
// timezone (lib/job_schedule.h: DST-correct).

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/supervisor/safe_path.h"
#include "tidepool/supervisor/v1/supervisor_service.pb.h"

namespace tidepool::supervisor {

// Reads the store at `path` beneath `root` (never following a link out of it) and returns its
// jobs with next_run_time set for each enabled job whose schedule parses, evaluated after
// `now` in the job's timezone, else in `default_timezone` (the owner's), else UTC. A job
// whose schedule or timezone is not understood keeps no next run time and says why in
// schedule_error. A missing store is no jobs. INVALID_ARGUMENT if the store is not valid
// JSON of that shape, FAILED_PRECONDITION if it is not a regular file or over 4 MiB.
absl::StatusOr<std::vector<v1::ScheduledJob>> ReadScheduledJobs(const SafeRoot& root,
                                                                const std::string& path,
                                                                const std::string& default_timezone,
                                                                absl::Time now);

// The same for OpenClaw (schedule store format "openclaw-sqlite"): its automations, read
// read-only from the `cron_jobs` table of its state database at `path` beneath `root` (the
// Gateway keeps writing it; WAL readers do not block it). Every enabled job, and the user's
// own (no declaration key) even when disabled. Schedules map to lib/job_schedule's forms:
// kind "cron" keeps its expression and its `tz` (none: the owner's, as the Gateway's TZ),
// "every" becomes "every <d/h/m/s>" anchored at its anchor, "at" becomes a one-shot in UTC;
// any other kind is listed with a schedule_error. The newest 50 run receipts of each job
// (`cron_run_receipts`) are its recent runs. A missing database is no jobs.
absl::StatusOr<std::vector<v1::ScheduledJob>> ReadOpenClawJobs(const SafeRoot& root,
                                                               const std::string& path,
                                                               const std::string& default_timezone,
                                                               absl::Time now);

}  // namespace tidepool::supervisor
