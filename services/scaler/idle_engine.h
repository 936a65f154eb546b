#pragma once

// The scaler's loop and its rules: which workspaces sleep, which stay awake and why, which
// wake for a scheduled job, and how every scheduled run went.
//
// One check (Check()) looks at every workspace:
//   RUNNING   Its scheduled jobs are read from its supervisor (and remembered for when it
//             sleeps). It is idle for now minus the later of its last authenticated activity
//             and the time it started running. Idle past its timeout with nothing keeping it
//             awake, it is put to sleep (a SLEEP decision); something keeping it awake is
//             recorded once per change (a KEEP_AWAKE decision). Keeping awake: a pin, the
//             owner's always-on override, the grace after a wake, a job running or due within
//             wake_before_job plus one check interval, connected messaging channels, a
//             process the profile marks as work.
//   SLEEPING  Woken (a WAKE decision) at the last check before a job's next run minus
//             wake_before_job, or at once when a run it missed is to be run late.
// and accounts each job's scheduled times that have passed (see AccountRuns in the .cc):
// ON_TIME or LATE when the tool reports the run, MISSED with the reason otherwise; a run the
// workspace could not make (the platform was down, the wake failed, the owner was suspended)
// follows the job's missed-run policy: RUN_ONCE_LATE wakes the workspace for the newest such
// run (the others are MISSED, SKIPPED_BY_POLICY) and the run turns LATE when the tool reports
// it; SKIP records them MISSED.
//
// A sleep takes effect within idle_timeout plus one check interval. The scaler knows it was
// down from its heartbeat (the last completed check): scheduled times that passed while it
// was down and the workspace was not running are missed with PLATFORM_DOWN.
//
// Thread-safe: checks are serialized; the other methods may run alongside a check.

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/audit_client.h"
#include "lib/clock.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "services/scaler/scaler_store.h"
#include "services/scaler/workspace_directory.h"
#include "tidepool/scaler/v1/scaler_service.pb.h"

namespace tidepool::scaler {

struct IdleEngineOptions {
  // The policy's idle timeout and check interval until an admin sets them (config).
  absl::Duration default_idle_timeout = absl::Minutes(30);
  absl::Duration default_check_interval = absl::Seconds(60);
  // Each workspace's CPU and memory limits (for the capacity report's projection).
  int64_t workspace_cpu_millicores = 0;
  int64_t workspace_memory_bytes = 0;
  // The platform's capacity; 0 when not configured.
  int64_t capacity_cpu_millicores = 0;
  int64_t capacity_memory_bytes = 0;
  // A run that starts within this of its scheduled time is ON_TIME.
  absl::Duration on_time_tolerance = absl::Minutes(2);
  // How long after a scheduled time (with the workspace running) the tool's report of the run
  // is waited for before the run is MISSED with TOOL_DID_NOT_RUN.
  absl::Duration report_grace = absl::Minutes(10);
};

// The policy's defaults (the options' for timeout and interval), filled into unset fields.
v1::IdlePolicy WithDefaults(v1::IdlePolicy policy, const IdleEngineOptions& options);
// INVALID_ARGUMENT naming the first field out of range (see SetPolicy in the proto).
absl::Status ValidatePolicy(const v1::IdlePolicy& policy);

class IdleEngine {
 public:
  IdleEngine(IdleEngineOptions options, ScalerStore& store, WorkspaceDirectory& directory,
             Clock& clock, AuditEmitter* audit, prometheus::Registry* metrics);
  ~IdleEngine();

  // Starts the loop thread: a check every policy check_interval (re-read after each check).
  void Start();
  // Stops it; idempotent.
  void Stop();

  // One check of every workspace (the loop's body; tests call it with a fake clock).
  absl::Status Check();

  // Applies a validated batch. Returns {accepted, ignored}: records without a user, or for a
  // workspace that is unknown or not running, are ignored.
  absl::StatusOr<std::pair<int, int>> RecordActivity(const std::vector<v1::ActivityRecord>& batch);

  // The idle status of one workspace as of now. NOT_FOUND if it does not exist.
  absl::StatusOr<v1::IdleStatus> Status(const std::string& workspace_id);
  absl::StatusOr<v1::IdleStatus> Status(const WorkspaceView& workspace);

  absl::StatusOr<ScalerStore::StoredPolicy> Policy();
  absl::StatusOr<ScalerStore::StoredPolicy> SetPolicy(const v1::IdlePolicy& policy,
                                                      int64_t expected_version,
                                                      const std::string& actor);

  absl::StatusOr<v1::IdleStatus> Pin(const std::string& workspace_id, absl::Time expire_time,
                                     const std::string& reason, const std::string& actor);
  absl::StatusOr<v1::IdleStatus> Unpin(const std::string& workspace_id, const std::string& actor);

  absl::StatusOr<v1::WakeForMessageResponse> WakeForMessage(const std::string& workspace_id,
                                                            const std::string& channel,
                                                            const std::string& message_id);

  absl::StatusOr<v1::GetCapacityReportResponse> Capacity(absl::Duration horizon);

  ScalerStore& store() { return store_; }
  WorkspaceDirectory& directory() { return directory_; }

 private:
  struct Evaluation;
  struct Metrics;

  // The stored policy with every default filled in.
  v1::IdlePolicy Effective(const ScalerStore::StoredPolicy& stored) const;

  // The keep-awake reasons and idle figures of a running workspace.
  absl::StatusOr<Evaluation> Evaluate(const WorkspaceView& workspace,
                                      const std::vector<JobRow>& jobs,
                                      const v1::IdlePolicy& policy, absl::Time now);
  // Adds what the workspace's supervisor said keeps it busy at the last check (running only).
  void AddBusyReasons(const WorkspaceView& workspace, std::vector<v1::KeepAwakeReason>* reasons);
  // `busy` gets what the workspace's supervisor says keeps it busy.
  absl::Status CheckRunning(const WorkspaceView& workspace, const v1::IdlePolicy& policy,
                            absl::Time now, absl::Time down_since,
                            std::vector<v1::KeepAwakeReason>* busy);
  absl::Status CheckSleeping(const WorkspaceView& workspace, const v1::IdlePolicy& policy,
                             absl::Time now, absl::Time down_since);
  // Accounts the job's scheduled times up to now; true if a missed run asks for a late run.
  absl::StatusOr<bool> AccountRuns(const WorkspaceView& workspace, JobRow& job,
                                   const std::vector<supervisor::v1::JobRunSummary>* reported,
                                   absl::Time now, absl::Time down_since);
  // The earliest next run of the workspace's enabled jobs after `after`.
  absl::Time NextRun(const std::vector<JobRow>& jobs, absl::Time after);

  absl::Status Decide(DecisionRow decision, const std::string& owner_user_id);
  void AuditPolicyEvent(const std::string& action, const std::string& actor,
                        const std::string& workspace_id, const std::string& detail);

  const IdleEngineOptions options_;
  ScalerStore& store_;
  WorkspaceDirectory& directory_;
  Clock& clock_;
  AuditEmitter* audit_;
  std::unique_ptr<Metrics> metrics_;

  std::mutex check_mu_;  // one check at a time

  // Per running workspace, what its supervisor said keeps it busy at the last check (replaced
  // whole by each check).
  absl::Mutex busy_mu_;
  std::map<std::string, std::vector<v1::KeepAwakeReason>> busy_ ABSL_GUARDED_BY(busy_mu_);

  std::mutex loop_mu_;
  std::condition_variable loop_cv_;
  bool stopping_ = false;  // guarded by loop_mu_
  std::thread loop_;
};

}  // namespace tidepool::scaler
