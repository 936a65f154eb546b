#pragma once

// The scaler's state in its own SQLite database: the last authenticated activity per
// workspace, the idle policy, pins, decisions, the jobs last seen in each workspace's schedule
// store, their run history, and the loop's heartbeat (how the scaler knows it was down).
//
// Durability: synchronous=FULL for decisions, pins, policy and job runs (they are promises
// shown to people); activity rows are rewritten every few seconds and cost the same.
// Thread-safe: every method takes the store's mutex.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/sqlite_store.h"
#include "tidepool/scaler/v1/scaler_service.pb.h"

namespace tidepool::scaler {

// The latest authenticated activity on one workspace.
struct ActivityRow {
  std::string workspace_id;
  std::string user_id;  // who was behind the latest record
  absl::Time last_time = absl::InfinitePast();
  v1::ActivitySource last_source = v1::ACTIVITY_SOURCE_UNSPECIFIED;
  // Totals since the row was created.
  int64_t byte_count = 0;
  int64_t event_count = 0;
};

struct PinRow {
  std::string workspace_id;
  absl::Time pin_time = absl::InfinitePast();
  absl::Time expire_time = absl::InfiniteFuture();  // InfiniteFuture: until unpinned
  std::string reason;
  std::string pinned_by;  // "tidepoolctl" or the admin's user id
};

struct DecisionRow {
  std::string decision_id;  // "dec_" + 26 base32, made by the caller
  std::string workspace_id;
  absl::Time decide_time = absl::InfinitePast();
  v1::DecisionAction action = v1::DECISION_ACTION_UNSPECIFIED;
  v1::DecisionReason reason = v1::DECISION_REASON_UNSPECIFIED;
  std::vector<v1::KeepAwakeReason> keep_awake_reasons;
  absl::Duration idle_duration;
  bool succeeded = true;
  std::string error_code;
  std::string detail;
};

struct DecisionFilter {
  // Only these workspaces; empty means all. (A non-admin's view passes their own.)
  std::vector<std::string> workspace_ids;
  v1::DecisionAction action = v1::DECISION_ACTION_UNSPECIFIED;  // UNSPECIFIED: any
  absl::Time start_time = absl::InfinitePast();                 // inclusive
  absl::Time end_time = absl::InfiniteFuture();                 // exclusive
};

// A job as last read from the workspace's schedule store (through its supervisor's status).
struct JobRow {
  std::string workspace_id;
  std::string job_id;
  std::string name;
  std::string schedule;  // lib/job_schedule.h syntax
  std::string timezone;  // IANA; empty means UTC
  bool enabled = true;
  common::v1::MissedRunPolicy missed_run_policy = common::v1::MISSED_RUN_POLICY_UNSPECIFIED;
  absl::Time anchor_time = absl::UnixEpoch();  // interval schedules
  // Every scheduled time at or before this has a run row (or was before the job was first
  // seen). Kept by ReplaceJobs for jobs whose id stays.
  absl::Time accounted_until = absl::InfinitePast();
};

struct JobRunRow {
  std::string workspace_id;
  std::string job_id;
  std::string job_name;
  absl::Time scheduled_time = absl::InfinitePast();
  std::string timezone;
  absl::Time start_time = absl::InfinitePast();  // InfinitePast: not started
  v1::JobRunOutcome outcome = v1::JOB_RUN_OUTCOME_UNSPECIFIED;
  v1::MissReason miss_reason = v1::MISS_REASON_UNSPECIFIED;
  common::v1::MissedRunPolicy missed_run_policy = common::v1::MISSED_RUN_POLICY_UNSPECIFIED;
};

struct JobRunFilter {
  std::vector<std::string> workspace_ids;  // empty: all
  std::string job_id;                      // empty: all
  v1::JobRunOutcome outcome = v1::JOB_RUN_OUTCOME_UNSPECIFIED;  // UNSPECIFIED: any
  absl::Time start_time = absl::InfinitePast();                 // on scheduled_time, inclusive
  absl::Time end_time = absl::InfiniteFuture();                 // exclusive
};

// What the loop remembers about one workspace between checks.
struct WorkspaceMarks {
  std::string workspace_id;
  absl::Time last_wake_time = absl::InfinitePast();   // the scaler's or anyone's wake seen
  absl::Time last_sleep_time = absl::InfinitePast();  // the scaler's own sleeps
  // The keep-awake reasons of the last KEEP_AWAKE decision, so one is recorded per change,
  // not per check ("" when none is in force).
  std::string keep_awake_signature;
};

template <typename T>
struct Page {
  std::vector<T> items;
  std::string next_page_token;  // empty at the end
};

class ScalerStore {
 public:
  // Opens (creating and migrating) the store in `db`, which must outlive it.
  static absl::StatusOr<std::unique_ptr<ScalerStore>> Open(SqliteDb& db);

  // Activity. Applies a batch in one transaction: per workspace the latest time wins (with
  // its source and user), byte and event counts add up (an event_count of 0 counts as 1).
  absl::Status RecordActivity(const std::vector<ActivityRow>& batch);
  // nullopt if the workspace never had activity.
  absl::StatusOr<std::optional<ActivityRow>> GetActivity(const std::string& workspace_id);

  // The policy as stored and its version (0 and a default-constructed message if never set).
  struct StoredPolicy {
    v1::IdlePolicy policy;
    int64_t version = 0;
  };
  absl::StatusOr<StoredPolicy> GetPolicy();
  // Stores `policy` as version+1. ABORTED if expected_version is non-zero and differs from
  // the stored version.
  absl::StatusOr<int64_t> SetPolicy(const v1::IdlePolicy& policy, int64_t expected_version);

  // Pins. PutPin replaces any pin of the workspace. DeletePin is idempotent.
  absl::Status PutPin(const PinRow& pin);
  absl::Status DeletePin(const std::string& workspace_id);
  absl::StatusOr<std::optional<PinRow>> GetPin(const std::string& workspace_id);

  // Decisions, newest first (decide_time descending, then decision_id descending). Page
  // tokens are opaque; INVALID_ARGUMENT for a malformed one. page_size 1 to 1000.
  absl::Status AppendDecision(const DecisionRow& decision);
  absl::StatusOr<Page<DecisionRow>> ListDecisions(const DecisionFilter& filter, int page_size,
                                                  const std::string& page_token);

  // Jobs. ReplaceJobs sets the workspace's job list to `jobs` (removing the others), keeping
  // accounted_until of jobs whose id stays and taking it from the row for new ones.
  absl::Status ReplaceJobs(const std::string& workspace_id, const std::vector<JobRow>& jobs);
  absl::StatusOr<std::vector<JobRow>> ListJobs(const std::string& workspace_id);
  absl::Status SetJobAccountedUntil(const std::string& workspace_id, const std::string& job_id,
                                    absl::Time accounted_until);

  // Job runs, keyed by (workspace, job, scheduled time); PutJobRun inserts or replaces.
  // Listed newest scheduled time first (then job id, workspace id).
  absl::Status PutJobRun(const JobRunRow& run);
  absl::StatusOr<std::optional<JobRunRow>> GetJobRun(const std::string& workspace_id,
                                                     const std::string& job_id,
                                                     absl::Time scheduled_time);
  absl::StatusOr<Page<JobRunRow>> ListJobRuns(const JobRunFilter& filter, int page_size,
                                              const std::string& page_token);

  // Marks (a missing workspace reads as default marks with its id).
  absl::StatusOr<WorkspaceMarks> GetMarks(const std::string& workspace_id);
  absl::Status PutMarks(const WorkspaceMarks& marks);

  // The loop's heartbeat: the last time a check completed (InfinitePast if never).
  absl::StatusOr<absl::Time> GetHeartbeat();
  absl::Status SetHeartbeat(absl::Time at);

  // Removes everything about a deleted workspace except its decisions and job runs (history).
  absl::Status ForgetWorkspace(const std::string& workspace_id);

 private:
  explicit ScalerStore(SqliteDb& db) : db_(db) {}

  absl::Mutex mu_;
  SqliteDb& db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tidepool::scaler
