#include "services/scaler/scaler_service.h"

#include <algorithm>
#include <filesystem>
#include <memory>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "lib/authz.h"
#include "lib/caller.h"
#include "lib/grpc_status.h"
#include "lib/log.h"
#include "lib/platform_client.h"
#include "lib/sqlite_store.h"
#include "lib/status_macros.h"
#include "lib/text.h"

namespace tidepool::scaler {
namespace {

namespace commonpb = ::tidepool::common::v1;
using google::protobuf::util::TimeUtil;

constexpr int kMaxActivityBatch = 10000;
constexpr int kDefaultPageSize = 100;
constexpr int kMaxPageSize = 1000;

grpc::Status Invalid(absl::string_view message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(message));
}

absl::Time FromStamp(const google::protobuf::Timestamp& t) {
  return absl::FromUnixMicros(TimeUtil::TimestampToMicroseconds(t));
}
google::protobuf::Timestamp ToStamp(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

// The page size a request asks for: 0 means the default; INVALID_ARGUMENT outside 0..1000.
absl::StatusOr<int> PageSize(const commonpb::PageRequest& page) {
  if (page.page_size() < 0 || page.page_size() > kMaxPageSize) {
    return absl::InvalidArgumentError("page_size must be between 0 and 1000");
  }
  return page.page_size() == 0 ? kDefaultPageSize : page.page_size();
}

// Within the range protobuf's Timestamp allows (years 1 to 9999).
bool ValidTime(const google::protobuf::Timestamp& t) {
  return t.seconds() >= TimeUtil::kTimestampMinSeconds &&
         t.seconds() <= TimeUtil::kTimestampMaxSeconds && t.nanos() >= 0 &&
         t.nanos() < 1000000000;
}

// A list request's [start, end) range on the time it filters: unset bounds are open.
// INVALID_ARGUMENT for a bound outside protobuf's Timestamp range.
template <typename Request>
absl::StatusOr<std::pair<absl::Time, absl::Time>> TimeRange(const Request& r) {
  if ((r.has_start_time() && !ValidTime(r.start_time())) ||
      (r.has_end_time() && !ValidTime(r.end_time()))) {
    return absl::InvalidArgumentError("start_time and end_time must be valid times");
  }
  return std::make_pair(r.has_start_time() ? FromStamp(r.start_time()) : absl::InfinitePast(),
                        r.has_end_time() ? FromStamp(r.end_time()) : absl::InfiniteFuture());
}

std::string Actor(const Caller& caller) {
  return caller.user_id.empty() ? caller.service : caller.user_id;
}

void ToProto(const DecisionRow& row, v1::Decision* out) {
  out->set_decision_id(row.decision_id);
  out->set_workspace_id(row.workspace_id);
  *out->mutable_decide_time() = ToStamp(row.decide_time);
  out->set_action(row.action);
  out->set_reason(row.reason);
  for (v1::KeepAwakeReason reason : row.keep_awake_reasons) out->add_keep_awake_reasons(reason);
  *out->mutable_idle_duration() =
      TimeUtil::MicrosecondsToDuration(absl::ToInt64Microseconds(row.idle_duration));
  out->set_succeeded(row.succeeded);
  out->set_error_code(row.error_code);
  out->set_detail(row.detail);
}

void ToProto(const JobRunRow& row, v1::JobRun* out) {
  out->set_workspace_id(row.workspace_id);
  out->set_job_id(row.job_id);
  out->set_job_name(row.job_name);
  *out->mutable_scheduled_time() = ToStamp(row.scheduled_time);
  out->set_timezone(row.timezone);
  if (row.start_time != absl::InfinitePast()) {
    *out->mutable_start_time() = ToStamp(row.start_time);
    if (row.outcome == v1::JOB_RUN_OUTCOME_LATE) {
      *out->mutable_lateness() = TimeUtil::MicrosecondsToDuration(
          absl::ToInt64Microseconds(row.start_time - row.scheduled_time));
    }
  }
  out->set_outcome(row.outcome);
  out->set_miss_reason(row.miss_reason);
  out->set_missed_run_policy(row.missed_run_policy);
}


}  // namespace

absl::StatusOr<std::vector<std::string>> ScalerServiceImpl::VisibleWorkspaces(
    const grpc::ServerContext& context, const std::string& requested, bool* all) {
  TP_ASSIGN_OR_RETURN(Caller caller, ResolveCaller(context));
  const bool everything = caller.user_id.empty() || caller.admin;
  *all = false;
  if (!requested.empty()) {
    if (!IsRandomId(requested, "ws_")) {
      return absl::InvalidArgumentError("workspace_id must look like ws_ followed by 26 characters");
    }
    absl::StatusOr<WorkspaceView> workspace = engine_.directory().Get(requested);
    if (!workspace.ok()) return workspace.status();
    if (!everything && workspace->owner_user_id != caller.user_id) {
      return absl::NotFoundError("no such workspace");
    }
    return std::vector<std::string>{requested};
  }
  if (everything) {
    *all = true;
    return std::vector<std::string>();
  }
  TP_ASSIGN_OR_RETURN(std::vector<WorkspaceView> workspaces, engine_.directory().List());
  std::vector<std::string> ids;
  for (const WorkspaceView& workspace : workspaces) {
    if (workspace.owner_user_id == caller.user_id) ids.push_back(workspace.workspace_id);
  }
  return ids;
}

bool ScalerServiceImpl::TakeActivityCall(const std::string& caller) {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&budget_mu_);
  auto [it, inserted] = buckets_.try_emplace(caller, budget_.burst, now);
  auto& [tokens, counted] = it->second;
  tokens = std::min(budget_.burst,
                    tokens + absl::ToDoubleSeconds(now - counted) * budget_.per_second);
  counted = now;
  if (tokens < 1) return false;
  tokens -= 1;
  return true;
}

grpc::Status ScalerServiceImpl::RecordActivity(grpc::ServerContext* context,
                                               const v1::RecordActivityRequest* request,
                                               v1::RecordActivityResponse* response) {
  const std::string caller =
      context->auth_context() != nullptr ? PeerIdentity(*context->auth_context()) : "";
  if (!TakeActivityCall(caller)) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "too many activity batches; send them at most every few seconds");
  }
  if (request->records_size() == 0 || request->records_size() > kMaxActivityBatch) {
    return Invalid("a batch holds 1 to 10,000 records");
  }
  for (int i = 0; i < request->records_size(); ++i) {
    const v1::ActivityRecord& record = request->records(i);
    const std::string where = absl::StrCat("record ", i, ": ");
    if (!IsRandomId(record.workspace_id(), "ws_")) {
      return Invalid(absl::StrCat(where, "workspace_id is malformed"));
    }
    if (record.source() == v1::ACTIVITY_SOURCE_UNSPECIFIED ||
        !v1::ActivitySource_IsValid(record.source())) {
      return Invalid(absl::StrCat(where, "source is missing"));
    }
    if (!record.has_time() || !ValidTime(record.time())) {
      return Invalid(absl::StrCat(where, "time is missing"));
    }
    if (!record.user_id().empty() && !IsRandomId(record.user_id(), "u_")) {
      return Invalid(absl::StrCat(where, "user_id is malformed"));
    }
    if (record.byte_count() < 0 || record.event_count() < 0) {
      return Invalid(absl::StrCat(where, "counts must not be negative"));
    }
  }
  std::vector<v1::ActivityRecord> batch(request->records().begin(), request->records().end());
  absl::StatusOr<std::pair<int, int>> counted = engine_.RecordActivity(batch);
  if (!counted.ok()) return ToGrpcStatus(counted.status());
  response->set_accepted_count(counted->first);
  response->set_ignored_count(counted->second);
  return grpc::Status::OK;
}

grpc::Status ScalerServiceImpl::GetIdleStatus(grpc::ServerContext* context,
                                              const v1::GetIdleStatusRequest* request,
                                              v1::GetIdleStatusResponse* response) {
  absl::StatusOr<Caller> caller = ResolveCaller(*context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  const bool everything = caller->user_id.empty() || caller->admin;
  absl::StatusOr<int> page_size = PageSize(request->page());
  if (!page_size.ok()) return ToGrpcStatus(page_size.status());
  const std::string& token = request->page().page_token();
  if (!token.empty() && !IsRandomId(token, "ws_")) return Invalid("page_token is invalid");
  for (const std::string& id : request->workspace_ids()) {
    if (!IsRandomId(id, "ws_")) {
      return Invalid("workspace_ids must look like ws_ followed by 26 characters");
    }
  }
  std::vector<WorkspaceView> workspaces;
  if (request->workspace_ids_size() > 0) {
    for (const std::string& id : request->workspace_ids()) {
      absl::StatusOr<WorkspaceView> workspace = engine_.directory().Get(id);
      if (!workspace.ok()) return ToGrpcStatus(workspace.status());
      if (!everything && workspace->owner_user_id != caller->user_id) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such workspace");
      }
      workspaces.push_back(*std::move(workspace));
    }
  } else {
    absl::StatusOr<std::vector<WorkspaceView>> all = engine_.directory().List();
    if (!all.ok()) return ToGrpcStatus(all.status());
    for (WorkspaceView& workspace : *all) {
      if (everything || workspace.owner_user_id == caller->user_id) {
        workspaces.push_back(std::move(workspace));
      }
    }
  }
  std::sort(workspaces.begin(), workspaces.end(),
            [](const WorkspaceView& a, const WorkspaceView& b) {
              return a.workspace_id < b.workspace_id;
            });
  for (const WorkspaceView& workspace : workspaces) {
    if (!token.empty() && workspace.workspace_id <= token) continue;
    if (response->statuses_size() == *page_size) {
      response->mutable_page()->set_next_page_token(
          response->statuses(response->statuses_size() - 1).workspace_id());
      break;
    }
    absl::StatusOr<v1::IdleStatus> status = engine_.Status(workspace);
    if (!status.ok()) return ToGrpcStatus(status.status());
    *response->add_statuses() = *std::move(status);
  }
  response->mutable_page()->set_total_size(static_cast<int64_t>(workspaces.size()));
  return grpc::Status::OK;
}

grpc::Status ScalerServiceImpl::SetPolicy(grpc::ServerContext* context,
                                          const v1::SetPolicyRequest* request,
                                          v1::SetPolicyResponse* response) {
  if (absl::Status admin = RequireAdmin(*context); !admin.ok()) return ToGrpcStatus(admin);
  absl::StatusOr<Caller> caller = ResolveCaller(*context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (request->expected_version() < 0) return Invalid("expected_version must not be negative");
  absl::StatusOr<ScalerStore::StoredPolicy> stored =
      engine_.SetPolicy(request->policy(), request->expected_version(), Actor(*caller));
  if (!stored.ok()) return ToGrpcStatus(stored.status());
  *response->mutable_policy() = stored->policy;
  response->set_version(stored->version);
  return grpc::Status::OK;
}

grpc::Status ScalerServiceImpl::GetPolicy(grpc::ServerContext* context,
                                          const v1::GetPolicyRequest* /*request*/,
                                          v1::GetPolicyResponse* response) {
  if (absl::Status admin = RequireAdmin(*context); !admin.ok()) return ToGrpcStatus(admin);
  absl::StatusOr<ScalerStore::StoredPolicy> stored = engine_.Policy();
  if (!stored.ok()) return ToGrpcStatus(stored.status());
  *response->mutable_policy() = stored->policy;
  response->set_version(stored->version);
  return grpc::Status::OK;
}

grpc::Status ScalerServiceImpl::PinWorkspace(grpc::ServerContext* context,
                                             const v1::PinWorkspaceRequest* request,
                                             v1::PinWorkspaceResponse* response) {
  if (absl::Status admin = RequireAdmin(*context); !admin.ok()) return ToGrpcStatus(admin);
  absl::StatusOr<Caller> caller = ResolveCaller(*context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (!IsRandomId(request->workspace_id(), "ws_")) {
    return Invalid("workspace_id must look like ws_ followed by 26 characters");
  }
  if (request->reason().size() > 256 || !IsCleanUtf8(request->reason())) {
    return Invalid("reason must be at most 256 bytes of printable UTF-8");
  }
  absl::Time expire = absl::InfiniteFuture();
  if (request->has_expire_time()) {
    if (!ValidTime(request->expire_time())) return Invalid("expire_time is not a valid time");
    expire = FromStamp(request->expire_time());
    if (expire <= absl::Now()) return Invalid("expire_time is in the past");
  }
  absl::StatusOr<v1::IdleStatus> status =
      engine_.Pin(request->workspace_id(), expire, request->reason(), Actor(*caller));
  if (!status.ok()) return ToGrpcStatus(status.status());
  *response->mutable_status() = *std::move(status);
  return grpc::Status::OK;
}

grpc::Status ScalerServiceImpl::UnpinWorkspace(grpc::ServerContext* context,
                                               const v1::UnpinWorkspaceRequest* request,
                                               v1::UnpinWorkspaceResponse* response) {
  if (absl::Status admin = RequireAdmin(*context); !admin.ok()) return ToGrpcStatus(admin);
  absl::StatusOr<Caller> caller = ResolveCaller(*context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (!IsRandomId(request->workspace_id(), "ws_")) {
    return Invalid("workspace_id must look like ws_ followed by 26 characters");
  }
  absl::StatusOr<v1::IdleStatus> status = engine_.Unpin(request->workspace_id(), Actor(*caller));
  if (!status.ok()) return ToGrpcStatus(status.status());
  *response->mutable_status() = *std::move(status);
  return grpc::Status::OK;
}

grpc::Status ScalerServiceImpl::ListDecisions(grpc::ServerContext* context,
                                              const v1::ListDecisionsRequest* request,
                                              v1::ListDecisionsResponse* response) {
  absl::StatusOr<int> page_size = PageSize(request->page());
  if (!page_size.ok()) return ToGrpcStatus(page_size.status());
  absl::StatusOr<std::pair<absl::Time, absl::Time>> range = TimeRange(*request);
  if (!range.ok()) return ToGrpcStatus(range.status());
  if (!v1::DecisionAction_IsValid(request->action())) return Invalid("action is unknown");
  bool all = false;
  absl::StatusOr<std::vector<std::string>> visible =
      VisibleWorkspaces(*context, request->workspace_id(), &all);
  if (!visible.ok()) return ToGrpcStatus(visible.status());
  if (!all && visible->empty()) return grpc::Status::OK;  // nothing of theirs
  DecisionFilter filter;
  filter.workspace_ids = *std::move(visible);
  filter.action = request->action();
  std::tie(filter.start_time, filter.end_time) = *range;
  absl::StatusOr<Page<DecisionRow>> page =
      engine_.store().ListDecisions(filter, *page_size, request->page().page_token());
  if (!page.ok()) return ToGrpcStatus(page.status());
  for (const DecisionRow& row : page->items) ToProto(row, response->add_decisions());
  response->mutable_page()->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status ScalerServiceImpl::GetCapacityReport(grpc::ServerContext* context,
                                                  const v1::GetCapacityReportRequest* request,
                                                  v1::GetCapacityReportResponse* response) {
  if (absl::Status admin = RequireAdmin(*context); !admin.ok()) return ToGrpcStatus(admin);
  absl::Duration horizon = absl::Hours(1);
  if (request->has_horizon()) {
    horizon = absl::Microseconds(TimeUtil::DurationToMicroseconds(request->horizon()));
    if (horizon < absl::ZeroDuration() || horizon > absl::Hours(24 * 7)) {
      return Invalid("horizon must be between 0 and 7 days");
    }
  }
  absl::StatusOr<v1::GetCapacityReportResponse> report = engine_.Capacity(horizon);
  if (!report.ok()) return ToGrpcStatus(report.status());
  *response = *std::move(report);
  return grpc::Status::OK;
}

grpc::Status ScalerServiceImpl::ListJobRuns(grpc::ServerContext* context,
                                            const v1::ListJobRunsRequest* request,
                                            v1::ListJobRunsResponse* response) {
  absl::StatusOr<int> page_size = PageSize(request->page());
  if (!page_size.ok()) return ToGrpcStatus(page_size.status());
  if (!request->job_id().empty() && request->workspace_id().empty()) {
    return Invalid("job_id needs workspace_id");
  }
  if (request->job_id().size() > 256) return Invalid("job_id is at most 256 bytes");
  absl::StatusOr<std::pair<absl::Time, absl::Time>> range = TimeRange(*request);
  if (!range.ok()) return ToGrpcStatus(range.status());
  if (!v1::JobRunOutcome_IsValid(request->outcome())) return Invalid("outcome is unknown");
  bool all = false;
  absl::StatusOr<std::vector<std::string>> visible =
      VisibleWorkspaces(*context, request->workspace_id(), &all);
  if (!visible.ok()) return ToGrpcStatus(visible.status());
  if (!all && visible->empty()) return grpc::Status::OK;
  JobRunFilter filter;
  filter.workspace_ids = *std::move(visible);
  filter.job_id = request->job_id();
  filter.outcome = request->outcome();
  std::tie(filter.start_time, filter.end_time) = *range;
  absl::StatusOr<Page<JobRunRow>> page =
      engine_.store().ListJobRuns(filter, *page_size, request->page().page_token());
  if (!page.ok()) return ToGrpcStatus(page.status());
  for (const JobRunRow& row : page->items) ToProto(row, response->add_job_runs());
  response->mutable_page()->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status ScalerServiceImpl::WakeForMessage(grpc::ServerContext* /*context*/,
                                               const v1::WakeForMessageRequest* request,
                                               v1::WakeForMessageResponse* response) {
  if (!IsRandomId(request->workspace_id(), "ws_")) {
    return Invalid("workspace_id must look like ws_ followed by 26 characters");
  }
  if (request->channel().empty() || request->channel().size() > 64 ||
      !IsCleanUtf8(request->channel())) {
    return Invalid("channel must be 1 to 64 bytes of printable UTF-8");
  }
  if (request->message_id().size() > 128 || !IsCleanUtf8(request->message_id())) {
    return Invalid("message_id must be at most 128 bytes of printable UTF-8");
  }
  absl::StatusOr<v1::WakeForMessageResponse> woke =
      engine_.WakeForMessage(request->workspace_id(), request->channel(), request->message_id());
  if (!woke.ok()) return ToGrpcStatus(woke.status());
  *response = *std::move(woke);
  return grpc::Status::OK;
}

// ---------------------------------------------------------------------------------------------
// Hosting

namespace {

// Everything the hosted service owns, stopped in order.
struct ScalerState {
  std::unique_ptr<SqliteDb> db;
  std::unique_ptr<ScalerStore> store;
  std::unique_ptr<PlatformChannels> channels;
  std::unique_ptr<WorkspaceDirectory> directory;
  std::unique_ptr<IdleEngine> engine;

  void Stop() {
    if (engine != nullptr) engine->Stop();
  }
  ~ScalerState() { Stop(); }
};

}  // namespace

ServiceDefinition ScalerServiceDefinition() {
  ServiceDefinition definition;
  definition.name = "scaler";
  definition.create =
      [](const ServiceContext& context) -> absl::StatusOr<std::vector<HostedService>> {
    const std::string dir = context.data_dir + "/scaler";
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    auto state = std::make_shared<ScalerState>();
    absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(dir + "/scaler.db", SqliteOptions{});
    if (!db.ok()) return db.status();
    state->db = *std::move(db);
    absl::StatusOr<std::unique_ptr<ScalerStore>> store = ScalerStore::Open(*state->db);
    if (!store.ok()) return store.status();
    state->store = *std::move(store);
    if (context.identity == nullptr) {
      return absl::FailedPreconditionError("the scaler needs its platform identity");
    }
    // The provisioner may start after the scaler, or move: its address is looked up lazily.
    state->channels = std::make_unique<PlatformChannels>(*context.identity, context.data_dir,
                                                         context.config);
    state->directory = NewGrpcWorkspaceDirectory(
        [channels = state->channels.get()] { return channels->Get("provisioner"); });
    IdleEngineOptions options;
    options.default_idle_timeout = context.config.scaler.idle_timeout;
    options.default_check_interval = context.config.scaler.check_interval;
    options.workspace_cpu_millicores = context.config.provisioner.cpu_millicores;
    options.workspace_memory_bytes =
        static_cast<int64_t>(context.config.provisioner.memory_limit_mib) << 20;
    options.capacity_cpu_millicores = context.config.scaler.capacity_cpu_millicores;
    options.capacity_memory_bytes =
        static_cast<int64_t>(context.config.scaler.capacity_memory_mib) << 20;
    state->engine = std::make_unique<IdleEngine>(options, *state->store, *state->directory,
                                                 context.clock, context.audit, &context.metrics);
    state->engine->Start();
    std::vector<HostedService> hosted;
    hosted.push_back(HostedService{.full_name = "tidepool.scaler.v1.ScalerService",
                                   .pending_note = "",
                                   .service = std::make_unique<ScalerServiceImpl>(*state->engine),
                                   .on_stopped = [state] { state->Stop(); },
                                   .state = state});
    return hosted;
  };
  return definition;
}

}  // namespace tidepool::scaler
