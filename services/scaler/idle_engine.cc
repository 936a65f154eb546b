#include "services/scaler/idle_engine.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/time_util.h"
#include "lib/job_schedule.h"
#include "lib/log.h"
#include "lib/status_macros.h"
#include "lib/text.h"

namespace tidepool::scaler {
namespace {

namespace commonpb = ::tidepool::common::v1;
namespace suppb = ::tidepool::supervisor::v1;
using google::protobuf::util::TimeUtil;

// At most this many scheduled times of one job are accounted per check (an "every 1m" job
// after a week's outage catches up over a few checks, newest last).
constexpr int kMaxRunsPerCheck = 500;

google::protobuf::Timestamp ToStamp(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}
absl::Time FromStamp(const google::protobuf::Timestamp& t) {
  return absl::FromUnixMicros(TimeUtil::TimestampToMicroseconds(t));
}
google::protobuf::Duration ToProtoDuration(absl::Duration d) {
  return TimeUtil::MicrosecondsToDuration(absl::ToInt64Microseconds(d));
}
absl::Duration FromProtoDuration(const google::protobuf::Duration& d) {
  return absl::Microseconds(TimeUtil::DurationToMicroseconds(d));
}

std::string ShortDuration(absl::Duration d) {
  if (d >= absl::Hours(1)) return absl::StrCat(absl::ToInt64Hours(d), "h", absl::ToInt64Minutes(d) % 60, "m");
  if (d >= absl::Minutes(1)) return absl::StrCat(absl::ToInt64Minutes(d), "m");
  return absl::StrCat(absl::ToInt64Seconds(d), "s");
}

std::string ReasonName(v1::KeepAwakeReason reason) {
  std::string name = v1::KeepAwakeReason_Name(reason);
  absl::string_view prefix = "KEEP_AWAKE_REASON_";
  return absl::AsciiStrToLower(name.substr(std::min(name.size(), prefix.size())));
}

std::string Signature(const std::vector<v1::KeepAwakeReason>& reasons) {
  std::vector<std::string> names;
  for (v1::KeepAwakeReason reason : reasons) names.push_back(ReasonName(reason));
  return absl::StrJoin(names, ",");
}

// A job's schedule with its anchor, and its zone (UTC when unnamed); nullopt when either is
// not understood (the supervisor's status says why: schedule_error).
std::optional<std::pair<JobSchedule, absl::TimeZone>> ScheduleOf(const JobRow& job) {
  absl::StatusOr<JobSchedule> schedule = JobSchedule::Parse(job.schedule);
  absl::TimeZone zone;
  if (!schedule.ok() || !absl::LoadTimeZone(job.timezone.empty() ? "UTC" : job.timezone, &zone)) {
    return std::nullopt;
  }
  schedule->set_anchor(job.anchor_time);
  return std::make_pair(*std::move(schedule), zone);
}

// A decision's error code for a failed sleep or wake.
std::string ErrorCode(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable
             ? "provisioner_unavailable"
             : absl::AsciiStrToLower(absl::StatusCodeToString(status.code()));
}

bool InRange(const google::protobuf::Duration& d, absl::Duration low, absl::Duration high) {
  const absl::Duration value = FromProtoDuration(d);
  return value >= low && value <= high;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Policy

v1::IdlePolicy WithDefaults(v1::IdlePolicy policy, const IdleEngineOptions& options) {
  if (!policy.has_idle_timeout()) {
    *policy.mutable_idle_timeout() = ToProtoDuration(options.default_idle_timeout);
  }
  if (!policy.has_check_interval()) {
    *policy.mutable_check_interval() = ToProtoDuration(options.default_check_interval);
  }
  if (!policy.has_grace_after_wake()) {
    *policy.mutable_grace_after_wake() = ToProtoDuration(absl::Minutes(5));
  }
  if (!policy.has_wake_before_job()) {
    *policy.mutable_wake_before_job() = ToProtoDuration(absl::Minutes(2));
  }
  return policy;
}

absl::Status ValidatePolicy(const v1::IdlePolicy& policy) {
  if (policy.has_idle_timeout() &&
      !InRange(policy.idle_timeout(), absl::Minutes(1), absl::Hours(24 * 7))) {
    return absl::InvalidArgumentError("idle_timeout must be between 1 minute and 7 days");
  }
  if (policy.has_check_interval() &&
      !InRange(policy.check_interval(), absl::Seconds(5), absl::Minutes(10))) {
    return absl::InvalidArgumentError("check_interval must be between 5 seconds and 10 minutes");
  }
  if (policy.has_grace_after_wake() &&
      !InRange(policy.grace_after_wake(), absl::ZeroDuration(), absl::Hours(24))) {
    return absl::InvalidArgumentError("grace_after_wake must be between 0 and 24 hours");
  }
  if (policy.has_wake_before_job() &&
      !InRange(policy.wake_before_job(), absl::ZeroDuration(), absl::Hours(1))) {
    return absl::InvalidArgumentError("wake_before_job must be between 0 and 1 hour");
  }
  std::set<std::string> users;
  for (const v1::UserPolicyOverride& override_ : policy.user_overrides()) {
    if (!IsRandomId(override_.user_id(), "u_")) {
      return absl::InvalidArgumentError("a user override names a malformed user id (u_...)");
    }
    if (!users.insert(override_.user_id()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("user ", override_.user_id(), " has more than one override"));
    }
    if (override_.has_idle_timeout() &&
        !InRange(override_.idle_timeout(), absl::Minutes(1), absl::Hours(24 * 7))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the idle_timeout of user ", override_.user_id(), " must be between 1 minute and 7 days"));
    }
  }
  if (policy.user_overrides_size() > 10000) {
    return absl::InvalidArgumentError("at most 10,000 user overrides");
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Metrics

struct IdleEngine::Metrics {
  prometheus::Gauge* running = nullptr;
  prometheus::Gauge* sleeping = nullptr;
  prometheus::Family<prometheus::Counter>* sleeps = nullptr;
  prometheus::Family<prometheus::Counter>* wakes = nullptr;
  prometheus::Family<prometheus::Counter>* runs = nullptr;
  prometheus::Histogram* idle_at_sleep = nullptr;
  prometheus::Counter* check_failures = nullptr;
};

// What keeps a running workspace awake, and its idle figures.
struct IdleEngine::Evaluation {
  std::vector<v1::KeepAwakeReason> reasons;  // without RECENT_ACTIVITY
  bool recent_activity = false;
  absl::Duration idle;
  absl::Duration timeout;
  absl::Time idle_since = absl::InfinitePast();
  std::optional<ActivityRow> activity;
  std::optional<PinRow> pin;
  WorkspaceMarks marks;
  absl::Time next_run = absl::InfiniteFuture();
};

IdleEngine::IdleEngine(IdleEngineOptions options, ScalerStore& store,
                       WorkspaceDirectory& directory, Clock& clock, AuditEmitter* audit,
                       prometheus::Registry* metrics)
    : options_(std::move(options)),
      store_(store),
      directory_(directory),
      clock_(clock),
      audit_(audit),
      metrics_(std::make_unique<Metrics>()) {
  if (metrics == nullptr) return;
  auto& workspaces = prometheus::BuildGauge()
                         .Name("tidepool_scaler_workspaces")
                         .Help("Workspaces by state at the last check.")
                         .Register(*metrics);
  metrics_->running = &workspaces.Add({{"state", "running"}});
  metrics_->sleeping = &workspaces.Add({{"state", "sleeping"}});
  metrics_->sleeps = &prometheus::BuildCounter()
                          .Name("tidepool_scaler_sleeps_total")
                          .Help("Workspaces put to sleep, by reason and outcome.")
                          .Register(*metrics);
  metrics_->wakes = &prometheus::BuildCounter()
                         .Name("tidepool_scaler_wakes_total")
                         .Help("Workspaces woken by the scaler, by reason and outcome.")
                         .Register(*metrics);
  metrics_->runs = &prometheus::BuildCounter()
                        .Name("tidepool_scaler_job_runs_total")
                        .Help("Scheduled job runs accounted, by outcome.")
                        .Register(*metrics);
  metrics_->idle_at_sleep =
      &prometheus::BuildHistogram()
           .Name("tidepool_scaler_idle_seconds_at_sleep")
           .Help("How long workspaces had been idle when put to sleep.")
           .Register(*metrics)
           .Add({}, prometheus::Histogram::BucketBoundaries{60, 300, 900, 1800, 3600, 7200, 14400,
                                                            43200, 86400});
  metrics_->check_failures = &prometheus::BuildCounter()
                                  .Name("tidepool_scaler_check_failures_total")
                                  .Help("Checks that could not complete (provisioner or store).")
                                  .Register(*metrics)
                                  .Add({});
}

IdleEngine::~IdleEngine() { Stop(); }

v1::IdlePolicy IdleEngine::Effective(const ScalerStore::StoredPolicy& stored) const {
  v1::IdlePolicy policy = stored.policy;
  if (stored.version == 0) policy.set_keep_messaging_awake(true);  // never set: all defaults
  return WithDefaults(std::move(policy), options_);
}

void IdleEngine::Start() {
  loop_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(loop_mu_);
    // The first check waits one interval: the rest of the platform is still starting.
    absl::Duration first = options_.default_check_interval;
    if (absl::StatusOr<ScalerStore::StoredPolicy> policy = store_.GetPolicy(); policy.ok()) {
      first = FromProtoDuration(Effective(*policy).check_interval());
    }
    loop_cv_.wait_for(lock, absl::ToChronoNanoseconds(first), [this] { return stopping_; });
    while (!stopping_) {
      lock.unlock();
      absl::Duration interval = absl::Seconds(60);
      if (absl::Status checked = Check(); !checked.ok()) {
        LogWarning("the scaler's check did not complete",
                   {{"error", std::string(checked.message())}});
      }
      if (absl::StatusOr<ScalerStore::StoredPolicy> policy = store_.GetPolicy(); policy.ok()) {
        interval = FromProtoDuration(Effective(*policy).check_interval());
      }
      lock.lock();
      loop_cv_.wait_for(lock, absl::ToChronoNanoseconds(interval), [this] { return stopping_; });
    }
  });
}

void IdleEngine::Stop() {
  {
    std::lock_guard<std::mutex> lock(loop_mu_);
    stopping_ = true;
  }
  loop_cv_.notify_all();
  if (loop_.joinable()) loop_.join();
}

// ---------------------------------------------------------------------------------------------
// The check

absl::Status IdleEngine::Check() {
  std::lock_guard<std::mutex> lock(check_mu_);
  const absl::Time now = clock_.Now();
  absl::StatusOr<ScalerStore::StoredPolicy> stored = store_.GetPolicy();
  absl::StatusOr<absl::Time> heartbeat = store_.GetHeartbeat();
  absl::StatusOr<std::vector<WorkspaceView>> workspaces =
      stored.ok() && heartbeat.ok() ? directory_.List() : absl::UnavailableError("");
  if (!stored.ok() || !heartbeat.ok() || !workspaces.ok()) {
    // No heartbeat either: the times this check could not look after count as down.
    if (metrics_->check_failures != nullptr) metrics_->check_failures->Increment();
    return !stored.ok() ? stored.status() : !heartbeat.ok() ? heartbeat.status() : workspaces.status();
  }
  const v1::IdlePolicy policy = Effective(*stored);
  const absl::Duration interval = FromProtoDuration(policy.check_interval());
  // Silent for more than two intervals (and a little): the scaler, or the platform, was down.
  const absl::Time down_since = *heartbeat != absl::InfinitePast() &&
                                        now - *heartbeat > 2 * interval + absl::Seconds(30)
                                    ? *heartbeat
                                    : absl::InfiniteFuture();
  int running = 0;
  int sleeping = 0;
  absl::Status first_error;
  // What each running workspace's supervisor says keeps it busy, as of this check.
  std::map<std::string, std::vector<v1::KeepAwakeReason>> busy;
  for (const WorkspaceView& workspace : *workspaces) {
    absl::Status checked;
    if (workspace.state == commonpb::WORKSPACE_STATE_RUNNING) {
      ++running;
      checked = CheckRunning(workspace, policy, now, down_since, &busy[workspace.workspace_id]);
    } else {
      if (workspace.state == commonpb::WORKSPACE_STATE_SLEEPING) ++sleeping;
      checked = CheckSleeping(workspace, policy, now, down_since);
    }
    if (!checked.ok()) {
      LogWarning("the scaler could not check a workspace",
                 {{"workspace_id", workspace.workspace_id},
                  {"error", std::string(checked.message())}});
      if (first_error.ok()) first_error = checked;
    }
  }
  {
    absl::MutexLock lock(&busy_mu_);
    busy_.swap(busy);
  }
  if (metrics_->running != nullptr) {
    metrics_->running->Set(running);
    metrics_->sleeping->Set(sleeping);
  }
  TP_RETURN_IF_ERROR(store_.SetHeartbeat(now));
  return first_error;
}

absl::StatusOr<IdleEngine::Evaluation> IdleEngine::Evaluate(const WorkspaceView& workspace,
                                                            const std::vector<JobRow>& jobs,
                                                            const v1::IdlePolicy& policy,
                                                            absl::Time now) {
  Evaluation e;
  TP_ASSIGN_OR_RETURN(e.activity, store_.GetActivity(workspace.workspace_id));
  TP_ASSIGN_OR_RETURN(e.marks, store_.GetMarks(workspace.workspace_id));
  TP_ASSIGN_OR_RETURN(e.pin, store_.GetPin(workspace.workspace_id));
  if (e.pin.has_value() && e.pin->expire_time <= now) {
    TP_RETURN_IF_ERROR(store_.DeletePin(workspace.workspace_id));
    e.pin.reset();
  }
  e.timeout = FromProtoDuration(policy.idle_timeout());
  bool always_on = false;
  for (const v1::UserPolicyOverride& override_ : policy.user_overrides()) {
    if (override_.user_id() != workspace.owner_user_id) continue;
    if (override_.has_idle_timeout()) e.timeout = FromProtoDuration(override_.idle_timeout());
    always_on = override_.always_on();
  }
  const absl::Time woke = std::max(workspace.state == commonpb::WORKSPACE_STATE_RUNNING
                                       ? workspace.last_transition_time
                                       : absl::InfinitePast(),
                                   e.marks.last_wake_time);
  e.idle_since = std::max(woke, e.activity.has_value() ? e.activity->last_time
                                                       : absl::InfinitePast());
  e.idle = e.idle_since == absl::InfinitePast() ? absl::ZeroDuration()
                                                : std::max(absl::ZeroDuration(), now - e.idle_since);
  e.recent_activity = e.activity.has_value() && now - e.activity->last_time < e.timeout;
  if (e.pin.has_value()) e.reasons.push_back(v1::KEEP_AWAKE_REASON_PINNED);
  if (always_on) e.reasons.push_back(v1::KEEP_AWAKE_REASON_ALWAYS_ON);
  if (woke != absl::InfinitePast() && now < woke + FromProtoDuration(policy.grace_after_wake())) {
    e.reasons.push_back(v1::KEEP_AWAKE_REASON_GRACE_AFTER_WAKE);
  }
  e.next_run = NextRun(jobs, now);
  if (e.next_run - now <= FromProtoDuration(policy.wake_before_job()) +
                             FromProtoDuration(policy.check_interval())) {
    e.reasons.push_back(v1::KEEP_AWAKE_REASON_SCHEDULED_JOB_SOON);
  }
  return e;
}

absl::Status IdleEngine::CheckRunning(const WorkspaceView& workspace, const v1::IdlePolicy& policy,
                                      absl::Time now, absl::Time down_since,
                                      std::vector<v1::KeepAwakeReason>* busy) {
  const std::string& id = workspace.workspace_id;
  // The jobs as the workspace states them now (remembered for when it sleeps).
  absl::StatusOr<WorkspaceActivityView> view = directory_.Inspect(id);
  std::map<std::string, std::vector<suppb::JobRunSummary>> reported;
  bool job_running = false;
  if (view.ok()) {
    std::vector<JobRow> rows;
    std::set<std::string> seen;
    for (const suppb::ScheduledJob& job : view->jobs) {
      // A tool's store that names a job twice: the first one counts (the status shows both).
      if (job.job_id().empty() || !seen.insert(job.job_id()).second) continue;
      JobRow row;
      row.workspace_id = id;
      row.job_id = job.job_id();
      row.name = job.name();
      row.schedule = job.schedule();
      row.timezone = job.timezone();
      row.enabled = job.enabled();
      row.missed_run_policy = job.missed_run_policy();
      if (job.has_anchor_time()) row.anchor_time = FromStamp(job.anchor_time());
      row.accounted_until = now;  // a job first seen now: its earlier times are not ours
      rows.push_back(std::move(row));
      std::vector<suppb::JobRunSummary>& runs = reported[job.job_id()];
      if (job.has_last_run()) runs.push_back(job.last_run());
      runs.insert(runs.end(), job.recent_runs().begin(), job.recent_runs().end());
      for (const suppb::JobRunSummary& run : runs) {
        if (run.result() == suppb::JOB_RUN_RESULT_RUNNING) job_running = true;
      }
    }
    TP_RETURN_IF_ERROR(store_.ReplaceJobs(id, rows));
  } else {
    LogInfo("cannot read a running workspace's jobs; using the ones last seen",
            {{"workspace_id", id}, {"error", std::string(view.status().message())}});
  }
  TP_ASSIGN_OR_RETURN(std::vector<JobRow> jobs, store_.ListJobs(id));
  for (JobRow& job : jobs) {
    auto it = reported.find(job.job_id);
    TP_RETURN_IF_ERROR(
        AccountRuns(workspace, job, it == reported.end() ? nullptr : &it->second, now, down_since)
            .status());
  }

  TP_ASSIGN_OR_RETURN(Evaluation e, Evaluate(workspace, jobs, policy, now));
  // What the workspace itself says keeps it busy (kept for the status until the next check;
  // unknown when its supervisor could not be asked).
  if (job_running) busy->push_back(v1::KEEP_AWAKE_REASON_SCHEDULED_JOB_RUNNING);
  if (view.ok() && policy.keep_messaging_awake() && !view->messaging_channels.empty()) {
    busy->push_back(v1::KEEP_AWAKE_REASON_MESSAGING_CHANNEL);
  }
  if (view.ok() && !view->work_processes.empty()) {
    busy->push_back(v1::KEEP_AWAKE_REASON_WORK_PROCESS);
  }
  e.reasons.insert(e.reasons.end(), busy->begin(), busy->end());
  WorkspaceMarks& marks = e.marks;
  if (e.idle < e.timeout) {
    if (!marks.keep_awake_signature.empty()) {
      marks.keep_awake_signature.clear();
      TP_RETURN_IF_ERROR(store_.PutMarks(marks));
    }
    return absl::OkStatus();
  }
  DecisionRow decision;
  decision.workspace_id = id;
  decision.decide_time = now;
  decision.idle_duration = e.idle;
  decision.keep_awake_reasons = e.reasons;
  if (!e.reasons.empty()) {
    // Recorded once per change of what keeps it awake, not at every check.
    const std::string signature = Signature(e.reasons);
    if (signature == marks.keep_awake_signature) return absl::OkStatus();
    marks.keep_awake_signature = signature;
    TP_RETURN_IF_ERROR(store_.PutMarks(marks));
    decision.action = v1::DECISION_ACTION_KEEP_AWAKE;
    decision.reason = v1::DECISION_REASON_KEEP_AWAKE;
    decision.detail = absl::StrCat("idle ", ShortDuration(e.idle), " >= ", ShortDuration(e.timeout),
                                   "; kept awake: ", signature);
    return Decide(std::move(decision), workspace.owner_user_id);
  }
  decision.action = v1::DECISION_ACTION_SLEEP;
  decision.reason = v1::DECISION_REASON_IDLE_TIMEOUT;
  decision.detail = absl::StrCat("idle ", ShortDuration(e.idle), " >= ", ShortDuration(e.timeout),
                                 "; nothing keeps it awake");
  if (absl::Status slept = directory_.Sleep(id, "idle"); !slept.ok()) {
    decision.succeeded = false;
    decision.error_code = ErrorCode(slept);
  } else {
    marks.last_sleep_time = now;
    marks.keep_awake_signature.clear();
    TP_RETURN_IF_ERROR(store_.PutMarks(marks));
    if (metrics_->idle_at_sleep != nullptr) {
      metrics_->idle_at_sleep->Observe(absl::ToDoubleSeconds(e.idle));
    }
  }
  if (metrics_->sleeps != nullptr) {
    metrics_->sleeps->Add({{"reason", "idle_timeout"}, {"outcome", decision.succeeded ? "ok" : "error"}})
        .Increment();
  }
  return Decide(std::move(decision), workspace.owner_user_id);
}

absl::Status IdleEngine::CheckSleeping(const WorkspaceView& workspace,
                                       const v1::IdlePolicy& policy, absl::Time now,
                                       absl::Time down_since) {
  const std::string& id = workspace.workspace_id;
  TP_ASSIGN_OR_RETURN(std::vector<JobRow> jobs, store_.ListJobs(id));
  bool late_run_wanted = false;
  for (JobRow& job : jobs) {
    TP_ASSIGN_OR_RETURN(bool wanted, AccountRuns(workspace, job, nullptr, now, down_since));
    late_run_wanted = late_run_wanted || wanted;
  }
  if (workspace.state != commonpb::WORKSPACE_STATE_SLEEPING) return absl::OkStatus();
  // Woken at the last check before the job's wake time: the next check would be too late.
  const absl::Time next_run = NextRun(jobs, now);
  const bool job_due = next_run - FromProtoDuration(policy.wake_before_job()) <
                       now + FromProtoDuration(policy.check_interval());
  if (!late_run_wanted && !job_due) return absl::OkStatus();
  DecisionRow decision;
  decision.workspace_id = id;
  decision.decide_time = now;
  decision.action = v1::DECISION_ACTION_WAKE;
  if (late_run_wanted) {
    decision.reason = v1::DECISION_REASON_MISSED_RUN;
    decision.detail = "a scheduled run was missed; its policy is to run it once, late";
  } else {
    decision.reason = v1::DECISION_REASON_SCHEDULED_JOB;
    decision.detail = absl::StrCat("a scheduled job runs at ", absl::FormatTime(next_run),
                                   " (in ", ShortDuration(next_run - now), ")");
  }
  const std::string reason = late_run_wanted ? "missed_run" : "scheduled_job";
  absl::StatusOr<commonpb::WorkspaceState> woke = directory_.Wake(id, reason);
  if (!woke.ok()) {
    decision.succeeded = false;
    decision.error_code = ErrorCode(woke.status());
  } else {
    TP_ASSIGN_OR_RETURN(WorkspaceMarks marks, store_.GetMarks(id));
    marks.last_wake_time = now;
    TP_RETURN_IF_ERROR(store_.PutMarks(marks));
  }
  if (metrics_->wakes != nullptr) {
    metrics_->wakes->Add({{"reason", reason}, {"outcome", decision.succeeded ? "ok" : "error"}})
        .Increment();
  }
  return Decide(std::move(decision), workspace.owner_user_id);
}

absl::Time IdleEngine::NextRun(const std::vector<JobRow>& jobs, absl::Time after) {
  absl::Time next = absl::InfiniteFuture();
  for (const JobRow& job : jobs) {
    if (!job.enabled) continue;
    std::optional<std::pair<JobSchedule, absl::TimeZone>> parsed = ScheduleOf(job);
    if (!parsed.has_value()) continue;
    if (std::optional<absl::Time> t = parsed->first.Next(after, parsed->second); t.has_value()) {
      next = std::min(next, *t);
    }
  }
  return next;
}

// Every scheduled time of `job` after its accounted_until and at or before `now` gets a run
// row, in order, unless the tool's report for it is still awaited (then accounting stops
// there until the next check).
absl::StatusOr<bool> IdleEngine::AccountRuns(
    const WorkspaceView& workspace, JobRow& job,
    const std::vector<supervisor::v1::JobRunSummary>* reported, absl::Time now,
    absl::Time down_since) {
  std::optional<std::pair<JobSchedule, absl::TimeZone>> parsed = ScheduleOf(job);
  if (!parsed.has_value()) return false;
  const JobSchedule& schedule = parsed->first;
  const absl::TimeZone& zone = parsed->second;
  // The tool's own account of its runs, by scheduled time.
  std::map<absl::Time, absl::Time> started;  // scheduled -> start
  absl::Time newest_reported = absl::InfinitePast();
  if (reported != nullptr) {
    for (const suppb::JobRunSummary& run : *reported) {
      if (!run.has_scheduled_time()) continue;
      const absl::Time scheduled = FromStamp(run.scheduled_time());
      newest_reported = std::max(newest_reported, scheduled);
      if (run.has_start_time()) started[scheduled] = FromStamp(run.start_time());
    }
  }
  auto put = [&](absl::Time scheduled, v1::JobRunOutcome outcome, v1::MissReason reason,
                 absl::Time start) -> absl::Status {
    JobRunRow row;
    row.workspace_id = workspace.workspace_id;
    row.job_id = job.job_id;
    row.job_name = job.name;
    row.scheduled_time = scheduled;
    row.timezone = job.timezone;
    row.start_time = start;
    row.outcome = outcome;
    row.miss_reason = reason;
    row.missed_run_policy = job.missed_run_policy;
    if (metrics_->runs != nullptr) {
      std::string name = v1::JobRunOutcome_Name(outcome);
      metrics_->runs->Add({{"outcome", absl::AsciiStrToLower(name.substr(16))}}).Increment();
    }
    return store_.PutJobRun(row);
  };
  auto outcome_for = [&](absl::Time scheduled, absl::Time start) {
    return start - scheduled <= options_.on_time_tolerance ? v1::JOB_RUN_OUTCOME_ON_TIME
                                                           : v1::JOB_RUN_OUTCOME_LATE;
  };
  // A run recorded as missed that the tool has since run (late, on waking) is updated.
  for (const auto& [scheduled, start] : started) {
    if (scheduled > job.accounted_until) continue;
    TP_ASSIGN_OR_RETURN(std::optional<JobRunRow> row,
                        store_.GetJobRun(workspace.workspace_id, job.job_id, scheduled));
    if (row.has_value() && row->outcome == v1::JOB_RUN_OUTCOME_MISSED &&
        row->miss_reason != v1::MISS_REASON_SKIPPED_BY_POLICY) {
      TP_RETURN_IF_ERROR(put(scheduled, outcome_for(scheduled, start), row->miss_reason, start));
    }
  }
  if (!job.enabled || job.accounted_until == absl::InfinitePast()) {
    if (job.accounted_until != now) {
      TP_RETURN_IF_ERROR(store_.SetJobAccountedUntil(workspace.workspace_id, job.job_id, now));
    }
    return false;
  }
  const bool running = workspace.state == commonpb::WORKSPACE_STATE_RUNNING;
  const absl::Time start_accounted = job.accounted_until;
  std::vector<std::pair<absl::Time, v1::MissReason>> could_not_run;
  int counted = 0;
  for (std::optional<absl::Time> t = schedule.Next(job.accounted_until, zone);
       t.has_value() && *t <= now && counted < kMaxRunsPerCheck;
       t = schedule.Next(*t, zone), ++counted) {
    const absl::Time scheduled = *t;
    auto report = started.find(scheduled);
    if (running && workspace.last_transition_time <= scheduled) {
      // The workspace was up: the tool ran it, or says it did not.
      if (report != started.end()) {
        TP_RETURN_IF_ERROR(put(scheduled, outcome_for(scheduled, report->second),
                               v1::MISS_REASON_UNSPECIFIED, report->second));
      } else if (newest_reported > scheduled || now - scheduled >= options_.report_grace) {
        TP_RETURN_IF_ERROR(put(scheduled, v1::JOB_RUN_OUTCOME_MISSED,
                               v1::MISS_REASON_TOOL_DID_NOT_RUN, absl::InfinitePast()));
      } else {
        break;  // the report may still come
      }
    } else if (report != started.end()) {
      // Not up at the time, but the tool caught it up since.
      TP_RETURN_IF_ERROR(put(scheduled, outcome_for(scheduled, report->second),
                             scheduled > down_since ? v1::MISS_REASON_PLATFORM_DOWN
                                                    : v1::MISS_REASON_WAKE_FAILED,
                             report->second));
    } else {
      const v1::MissReason reason =
          scheduled > down_since ? v1::MISS_REASON_PLATFORM_DOWN
          : workspace.state == commonpb::WORKSPACE_STATE_SUSPENDED
              ? v1::MISS_REASON_WORKSPACE_SUSPENDED
              : v1::MISS_REASON_WAKE_FAILED;
      could_not_run.emplace_back(scheduled, reason);
    }
    job.accounted_until = scheduled;
  }
  // Runs the workspace could not make follow the job's policy.
  const bool run_late = job.missed_run_policy != commonpb::MISSED_RUN_POLICY_SKIP;
  bool late_run_wanted = false;
  for (size_t i = 0; i < could_not_run.size(); ++i) {
    const bool newest = i + 1 == could_not_run.size();
    const v1::MissReason reason =
        run_late && !newest ? v1::MISS_REASON_SKIPPED_BY_POLICY : could_not_run[i].second;
    TP_RETURN_IF_ERROR(put(could_not_run[i].first, v1::JOB_RUN_OUTCOME_MISSED, reason,
                           absl::InfinitePast()));
    if (run_late && newest && workspace.state != commonpb::WORKSPACE_STATE_SUSPENDED) {
      late_run_wanted = true;
    }
  }
  if (job.accounted_until != start_accounted) {
    TP_RETURN_IF_ERROR(
        store_.SetJobAccountedUntil(workspace.workspace_id, job.job_id, job.accounted_until));
  }
  return late_run_wanted;
}

absl::Status IdleEngine::Decide(DecisionRow decision, const std::string& owner_user_id) {
  TP_ASSIGN_OR_RETURN(decision.decision_id, NewRandomId("dec_"));
  if (audit_ != nullptr) {
    commonpb::AuditEvent event;
    std::string action = v1::DecisionAction_Name(decision.action);
    event.set_action(absl::StrCat("scaler.", absl::AsciiStrToLower(action.substr(16))));
    event.set_outcome(decision.succeeded ? commonpb::OUTCOME_SUCCESS : commonpb::OUTCOME_FAILURE);
    event.mutable_actor()->set_kind(commonpb::ACTOR_KIND_SERVICE);
    event.mutable_actor()->set_id("scaler");
    event.set_subject_user_id(owner_user_id);
    std::string reason = v1::DecisionReason_Name(decision.reason);
    event.set_reason_code(absl::AsciiStrToLower(reason.substr(16)));
    auto& attributes = *event.mutable_attributes();
    attributes["workspace_id"] = decision.workspace_id;
    attributes["decision_id"] = decision.decision_id;
    attributes["detail"] = decision.detail;
    if (!decision.error_code.empty()) attributes["error_code"] = decision.error_code;
    audit_->Emit(std::move(event));
  }
  LogInfo("scaler decision", {{"workspace_id", decision.workspace_id},
                              {"decision_id", decision.decision_id},
                              {"detail", decision.detail}});
  return store_.AppendDecision(decision);
}

void IdleEngine::AuditPolicyEvent(const std::string& action, const std::string& actor,
                                  const std::string& workspace_id, const std::string& detail) {
  if (audit_ == nullptr) return;
  commonpb::AuditEvent event;
  event.set_action(action);
  event.set_outcome(commonpb::OUTCOME_SUCCESS);
  const bool person = IsRandomId(actor, "u_");
  event.mutable_actor()->set_kind(person ? commonpb::ACTOR_KIND_USER : commonpb::ACTOR_KIND_SERVICE);
  event.mutable_actor()->set_id(actor);
  auto& attributes = *event.mutable_attributes();
  if (!workspace_id.empty()) attributes["workspace_id"] = workspace_id;
  if (!detail.empty()) attributes["detail"] = detail;
  audit_->Emit(std::move(event));
}

// ---------------------------------------------------------------------------------------------
// Activity, status, policy, pins, messages, capacity

absl::StatusOr<std::pair<int, int>> IdleEngine::RecordActivity(
    const std::vector<v1::ActivityRecord>& batch) {
  std::map<std::string, std::optional<WorkspaceView>> workspaces;
  std::vector<ActivityRow> rows;
  int ignored = 0;
  for (const v1::ActivityRecord& record : batch) {
    if (record.user_id().empty()) {  // unauthenticated traffic never keeps a workspace awake
      ++ignored;
      continue;
    }
    auto [it, inserted] = workspaces.try_emplace(record.workspace_id());
    if (inserted) {
      absl::StatusOr<WorkspaceView> view = directory_.Get(record.workspace_id());
      if (view.ok()) {
        it->second = *std::move(view);
      } else if (view.status().code() != absl::StatusCode::kNotFound) {
        return view.status();
      }
    }
    if (!it->second.has_value() || it->second->state != commonpb::WORKSPACE_STATE_RUNNING) {
      ++ignored;
      continue;
    }
    ActivityRow row;
    row.workspace_id = record.workspace_id();
    row.user_id = record.user_id();
    row.last_time = FromStamp(record.time());
    row.last_source = record.source();
    row.byte_count = record.byte_count();
    row.event_count = record.event_count();
    rows.push_back(std::move(row));
  }
  if (!rows.empty()) TP_RETURN_IF_ERROR(store_.RecordActivity(rows));
  return std::make_pair(static_cast<int>(rows.size()), ignored);
}

void IdleEngine::AddBusyReasons(const WorkspaceView& workspace,
                                std::vector<v1::KeepAwakeReason>* reasons) {
  if (workspace.state != commonpb::WORKSPACE_STATE_RUNNING) return;
  absl::MutexLock lock(&busy_mu_);
  if (auto it = busy_.find(workspace.workspace_id); it != busy_.end()) {
    reasons->insert(reasons->end(), it->second.begin(), it->second.end());
  }
}

absl::StatusOr<v1::IdleStatus> IdleEngine::Status(const std::string& workspace_id) {
  TP_ASSIGN_OR_RETURN(WorkspaceView workspace, directory_.Get(workspace_id));
  return Status(workspace);
}

absl::StatusOr<v1::IdleStatus> IdleEngine::Status(const WorkspaceView& workspace) {
  const absl::Time now = clock_.Now();
  TP_ASSIGN_OR_RETURN(ScalerStore::StoredPolicy stored, store_.GetPolicy());
  const v1::IdlePolicy policy = Effective(stored);
  TP_ASSIGN_OR_RETURN(std::vector<JobRow> jobs, store_.ListJobs(workspace.workspace_id));
  TP_ASSIGN_OR_RETURN(Evaluation e, Evaluate(workspace, jobs, policy, now));
  AddBusyReasons(workspace, &e.reasons);
  v1::IdleStatus status;
  status.set_workspace_id(workspace.workspace_id);
  status.set_owner_user_id(workspace.owner_user_id);
  status.set_state(workspace.state);
  if (e.activity.has_value()) {
    *status.mutable_last_activity_time() = ToStamp(e.activity->last_time);
    status.set_last_activity_source(e.activity->last_source);
  }
  *status.mutable_idle_timeout() = ToProtoDuration(e.timeout);
  if (e.pin.has_value()) {
    status.set_pinned(true);
    if (e.pin->expire_time != absl::InfiniteFuture()) {
      *status.mutable_pin_expire_time() = ToStamp(e.pin->expire_time);
    }
  }
  const bool running = workspace.state == commonpb::WORKSPACE_STATE_RUNNING;
  if (running) {
    *status.mutable_idle_duration() = ToProtoDuration(e.idle);
    std::vector<v1::KeepAwakeReason> reasons = e.reasons;
    if (e.recent_activity) reasons.push_back(v1::KEEP_AWAKE_REASON_RECENT_ACTIVITY);
    for (v1::KeepAwakeReason reason : reasons) status.add_keep_awake_reasons(reason);
    if (e.reasons.empty()) {
      // It sleeps at the first check once idle past the timeout.
      *status.mutable_sleep_time() = ToStamp(std::max(now, e.idle_since + e.timeout));
    }
  }
  if (e.next_run != absl::InfiniteFuture()) {
    *status.mutable_next_scheduled_wake_time() =
        ToStamp(e.next_run - FromProtoDuration(policy.wake_before_job()));
  }
  return status;
}

absl::StatusOr<ScalerStore::StoredPolicy> IdleEngine::Policy() {
  TP_ASSIGN_OR_RETURN(ScalerStore::StoredPolicy stored, store_.GetPolicy());
  stored.policy = Effective(stored);
  return stored;
}

absl::StatusOr<ScalerStore::StoredPolicy> IdleEngine::SetPolicy(const v1::IdlePolicy& policy,
                                                                int64_t expected_version,
                                                                const std::string& actor) {
  TP_RETURN_IF_ERROR(ValidatePolicy(policy));
  const v1::IdlePolicy filled = WithDefaults(policy, options_);
  TP_ASSIGN_OR_RETURN(int64_t version, store_.SetPolicy(filled, expected_version));
  AuditPolicyEvent("scaler.policy_set", actor, "",
                   absl::StrCat("idle_timeout ", ShortDuration(FromProtoDuration(filled.idle_timeout())),
                                ", check_interval ",
                                ShortDuration(FromProtoDuration(filled.check_interval())), ", ",
                                filled.user_overrides_size(), " user overrides"));
  return ScalerStore::StoredPolicy{filled, version};
}

absl::StatusOr<v1::IdleStatus> IdleEngine::Pin(const std::string& workspace_id,
                                               absl::Time expire_time, const std::string& reason,
                                               const std::string& actor) {
  TP_ASSIGN_OR_RETURN(WorkspaceView workspace, directory_.Get(workspace_id));
  if (workspace.state == commonpb::WORKSPACE_STATE_SUSPENDED) {
    return absl::FailedPreconditionError("the workspace's owner is suspended");
  }
  PinRow pin;
  pin.workspace_id = workspace_id;
  pin.pin_time = clock_.Now();
  pin.expire_time = expire_time;
  pin.reason = reason;
  pin.pinned_by = actor;
  TP_RETURN_IF_ERROR(store_.PutPin(pin));
  AuditPolicyEvent("scaler.pinned", actor, workspace_id, reason);
  return Status(workspace);
}

absl::StatusOr<v1::IdleStatus> IdleEngine::Unpin(const std::string& workspace_id,
                                                 const std::string& actor) {
  TP_ASSIGN_OR_RETURN(WorkspaceView workspace, directory_.Get(workspace_id));
  TP_RETURN_IF_ERROR(store_.DeletePin(workspace_id));
  AuditPolicyEvent("scaler.unpinned", actor, workspace_id, "");
  return Status(workspace);
}

absl::StatusOr<v1::WakeForMessageResponse> IdleEngine::WakeForMessage(
    const std::string& workspace_id, const std::string& channel, const std::string& message_id) {
  TP_ASSIGN_OR_RETURN(WorkspaceView workspace, directory_.Get(workspace_id));
  if (workspace.state == commonpb::WORKSPACE_STATE_SUSPENDED) {
    return absl::FailedPreconditionError("the workspace's owner is suspended");
  }
  const absl::Time now = clock_.Now();
  v1::WakeForMessageResponse response;
  response.set_state(workspace.state);
  TP_ASSIGN_OR_RETURN(WorkspaceMarks marks, store_.GetMarks(workspace_id));
  // Either way it stays up for the grace after a wake, so the message can be handled.
  marks.last_wake_time = now;
  if (workspace.state != commonpb::WORKSPACE_STATE_RUNNING) {
    TP_ASSIGN_OR_RETURN(commonpb::WorkspaceState state, directory_.Wake(workspace_id, "message"));
    response.set_state(state);
    response.set_woke(true);
    DecisionRow decision;
    decision.workspace_id = workspace_id;
    decision.decide_time = now;
    decision.action = v1::DECISION_ACTION_WAKE;
    decision.reason = v1::DECISION_REASON_MESSAGE;
    decision.detail = absl::StrCat("a message arrived on ", channel,
                                   message_id.empty() ? "" : absl::StrCat(" (", message_id, ")"));
    TP_RETURN_IF_ERROR(Decide(std::move(decision), workspace.owner_user_id));
  }
  TP_RETURN_IF_ERROR(store_.PutMarks(marks));
  return response;
}

absl::StatusOr<v1::GetCapacityReportResponse> IdleEngine::Capacity(absl::Duration horizon) {
  const absl::Time now = clock_.Now();
  TP_ASSIGN_OR_RETURN(std::vector<WorkspaceView> workspaces, directory_.List());
  TP_ASSIGN_OR_RETURN(ScalerStore::StoredPolicy stored, store_.GetPolicy());
  const v1::IdlePolicy policy = Effective(stored);
  v1::GetCapacityReportResponse report;
  int64_t demand = 0;  // workspaces counted at their limits
  for (const WorkspaceView& workspace : workspaces) {
    switch (workspace.state) {
      case commonpb::WORKSPACE_STATE_RUNNING: {
        report.set_running_count(report.running_count() + 1);
        ++demand;
        TP_ASSIGN_OR_RETURN(std::vector<JobRow> jobs, store_.ListJobs(workspace.workspace_id));
        TP_ASSIGN_OR_RETURN(Evaluation e, Evaluate(workspace, jobs, policy, now));
        AddBusyReasons(workspace, &e.reasons);
        for (v1::KeepAwakeReason reason : e.reasons) {
          if (reason == v1::KEEP_AWAKE_REASON_PINNED || reason == v1::KEEP_AWAKE_REASON_ALWAYS_ON ||
              reason == v1::KEEP_AWAKE_REASON_MESSAGING_CHANNEL) {
            report.set_always_on_count(report.always_on_count() + 1);
            break;
          }
        }
        break;
      }
      case commonpb::WORKSPACE_STATE_SLEEPING: {
        report.set_sleeping_count(report.sleeping_count() + 1);
        TP_ASSIGN_OR_RETURN(std::vector<JobRow> jobs, store_.ListJobs(workspace.workspace_id));
        if (NextRun(jobs, now) <= now + horizon) ++demand;
        break;
      }
      case commonpb::WORKSPACE_STATE_PROVISIONING:
        report.set_provisioning_count(report.provisioning_count() + 1);
        ++demand;
        break;
      case commonpb::WORKSPACE_STATE_FAILED:
        report.set_failed_count(report.failed_count() + 1);
        break;
      case commonpb::WORKSPACE_STATE_SUSPENDED:
        report.set_suspended_count(report.suspended_count() + 1);
        break;
      default:
        break;
    }
  }
  report.set_projected_cpu_millicores(demand * options_.workspace_cpu_millicores);
  report.set_projected_memory_bytes(demand * options_.workspace_memory_bytes);
  report.set_capacity_cpu_millicores(options_.capacity_cpu_millicores);
  report.set_capacity_memory_bytes(options_.capacity_memory_bytes);
  *report.mutable_horizon() = ToProtoDuration(horizon);
  *report.mutable_report_time() = ToStamp(now);
  return report;
}

}  // namespace tidepool::scaler
