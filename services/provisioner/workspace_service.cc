#include "services/provisioner/workspace_service.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "lib/authz.h"
#include "lib/caller.h"
#include "lib/crypto/crypto.h"
#include "lib/file_util.h"
#include "lib/grpc_status.h"
#include "lib/log.h"
#include "services/provisioner/local_runtime.h"
#include "services/provisioner/volume_image.h"

namespace tidepool::provisioner {
namespace {

namespace commonpb = ::tidepool::common::v1;
using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp Stamp(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

grpc::Status Invalid(absl::string_view message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(message));
}

bool IsUserId(absl::string_view id) {
  return id.size() == 28 && id.substr(0, 2) == "u_";
}

// The deadline a waiting call may block until: its own deadline, at most 60 s.
absl::Time WaitUntil(const grpc::ServerContext& context, bool wait) {
  if (!wait) return absl::InfinitePast();
  const absl::Time cap = absl::Now() + absl::Seconds(60);
  return std::min(cap, absl::FromChrono(context.deadline()));
}

absl::StatusOr<std::string> LoadOrCreateKey(const std::string& path) {
  absl::StatusOr<std::string> existing = ReadFileToString(path);
  if (existing.ok()) {
    if (absl::Status owner_only = CheckOwnerOnly(path); !owner_only.ok()) return owner_only;
    if (existing->size() != 32) {
      return absl::FailedPreconditionError(absl::StrCat(path, " must hold exactly 32 bytes"));
    }
    return existing;
  }
  absl::StatusOr<std::string> key = crypto::RandomBytes(32);
  if (!key.ok()) return key.status();
  if (absl::Status written = WriteFileAtomically(path, *key, 0600); !written.ok()) return written;
  return key;
}

std::string SelfDir() {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/self/exe", ec).parent_path().string();
}

}  // namespace

void ToProto(const WorkspaceRecord& record, v1::Workspace* out) {
  out->set_workspace_id(record.workspace_id);
  out->set_owner_user_id(record.owner_user_id);
  out->set_profile(record.profile);
  out->set_state(record.state);
  out->set_desired_state(record.desired_state);
  out->set_state_reason(record.state_reason);
  *out->mutable_create_time() = Stamp(record.create_time);
  *out->mutable_update_time() = Stamp(record.update_time);
  *out->mutable_last_transition_time() = Stamp(record.last_transition_time);
  out->set_runtime("local");
  out->set_version(record.version);
}

absl::StatusOr<WorkspaceRecord> WorkspaceServiceImpl::Visible(const grpc::ServerContext& context,
                                                             const std::string& workspace_id) {
  if (!IsValidWorkspaceId(workspace_id)) {
    return absl::InvalidArgumentError("workspace_id must look like ws_ followed by 26 characters");
  }
  absl::StatusOr<Caller> caller = ResolveCaller(context);
  if (!caller.ok()) return caller.status();
  absl::StatusOr<WorkspaceRecord> record = manager_.store().Get(workspace_id);
  if (!record.ok()) return record.status();
  if (!caller->user_id.empty() && !caller->admin && record->owner_user_id != caller->user_id) {
    return absl::NotFoundError("no such workspace");
  }
  return record;
}

grpc::Status WorkspaceServiceImpl::EnsureWorkspace(grpc::ServerContext* context,
                                                   const v1::EnsureWorkspaceRequest* request,
                                                   v1::EnsureWorkspaceResponse* response) {
  absl::StatusOr<Caller> caller = ResolveCaller(*context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  std::string owner = request->owner_user_id();
  if (owner.empty() && !caller->user_id.empty()) owner = caller->user_id;
  if (!IsUserId(owner)) return Invalid("owner_user_id must be a user id (u_...)");
  if (!caller->user_id.empty() && !caller->admin && owner != caller->user_id) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such user");
  }
  absl::TimeZone zone;
  if (!request->timezone().empty() &&
      (request->timezone().size() > 64 || !absl::LoadTimeZone(request->timezone(), &zone))) {
    return Invalid("timezone must be an IANA time zone such as Europe/Berlin");
  }
  absl::StatusOr<EnsureOutcome> outcome =
      manager_.Ensure(owner, request->profile(), request->timezone());
  if (!outcome.ok()) return ToGrpcStatus(outcome.status());
  ToProto(outcome->workspace, response->mutable_workspace());
  response->set_created(outcome->created);
  return grpc::Status::OK;
}

grpc::Status WorkspaceServiceImpl::GetWorkspace(grpc::ServerContext* context,
                                                const v1::GetWorkspaceRequest* request,
                                                v1::GetWorkspaceResponse* response) {
  absl::StatusOr<WorkspaceRecord> record = Visible(*context, request->workspace_id());
  if (!record.ok()) return ToGrpcStatus(record.status());
  ToProto(*record, response->mutable_workspace());
  SetHealth(*record, response->mutable_workspace());
  return grpc::Status::OK;
}

void WorkspaceServiceImpl::SetHealth(const WorkspaceRecord& record, v1::Workspace* out) {
  switch (manager_.Health(record)) {
    case WorkspaceHealthView::kHealthy:
      out->set_health(v1::WORKSPACE_HEALTH_HEALTHY);
      break;
    case WorkspaceHealthView::kDegraded:
      out->set_health(v1::WORKSPACE_HEALTH_DEGRADED);
      break;
    case WorkspaceHealthView::kUnhealthy:
      out->set_health(v1::WORKSPACE_HEALTH_UNHEALTHY);
      break;
    case WorkspaceHealthView::kUnknown:
      break;
  }
}

grpc::Status WorkspaceServiceImpl::ListWorkspaces(grpc::ServerContext* context,
                                                  const v1::ListWorkspacesRequest* request,
                                                  v1::ListWorkspacesResponse* response) {
  absl::StatusOr<Caller> caller = ResolveCaller(*context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  std::string owner = request->owner_user_id();
  if (!caller->user_id.empty() && !caller->admin) owner = caller->user_id;
  if (!owner.empty() && !IsUserId(owner)) return Invalid("owner_user_id is malformed");
  if (request->states_size() > 1) {
    return Invalid("filter by at most one state for now");
  }
  std::optional<WorkspaceState> state;
  if (request->states_size() == 1) state = request->states(0);
  absl::StatusOr<WorkspacePage> page = manager_.store().List(
      state, owner, request->page().page_size(), request->page().page_token());
  if (!page.ok()) return ToGrpcStatus(page.status());
  for (const WorkspaceRecord& record : page->workspaces) {
    v1::Workspace* out = response->add_workspaces();
    ToProto(record, out);
    SetHealth(record, out);
  }
  response->mutable_page()->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status WorkspaceServiceImpl::WakeWorkspace(grpc::ServerContext* context,
                                                 const v1::WakeWorkspaceRequest* request,
                                                 v1::WakeWorkspaceResponse* response) {
  absl::StatusOr<WorkspaceRecord> visible = Visible(*context, request->workspace_id());
  if (!visible.ok()) return ToGrpcStatus(visible.status());
  absl::StatusOr<WorkspaceRecord> record = manager_.Wake(
      request->workspace_id(), WaitUntil(*context, request->wait_until_ready()));
  if (!record.ok()) return ToGrpcStatus(record.status());
  ToProto(*record, response->mutable_workspace());
  return grpc::Status::OK;
}

grpc::Status WorkspaceServiceImpl::StopWorkspace(grpc::ServerContext* context,
                                                 const v1::StopWorkspaceRequest* request,
                                                 v1::StopWorkspaceResponse* response) {
  absl::StatusOr<WorkspaceRecord> visible = Visible(*context, request->workspace_id());
  if (!visible.ok()) return ToGrpcStatus(visible.status());
  if (request->reason().size() > 64) return Invalid("reason is at most 64 bytes");
  absl::StatusOr<WorkspaceRecord> record =
      manager_.Sleep(request->workspace_id(), request->reason(), absl::InfinitePast());
  if (!record.ok()) return ToGrpcStatus(record.status());
  ToProto(*record, response->mutable_workspace());
  return grpc::Status::OK;
}

grpc::Status WorkspaceServiceImpl::RestartWorkspace(grpc::ServerContext* context,
                                                    const v1::RestartWorkspaceRequest* request,
                                                    v1::RestartWorkspaceResponse* response) {
  absl::StatusOr<WorkspaceRecord> visible = Visible(*context, request->workspace_id());
  if (!visible.ok()) return ToGrpcStatus(visible.status());
  absl::StatusOr<WorkspaceRecord> record =
      manager_.Restart(request->workspace_id(), absl::InfinitePast());
  if (!record.ok()) return ToGrpcStatus(record.status());
  ToProto(*record, response->mutable_workspace());
  return grpc::Status::OK;
}

grpc::Status WorkspaceServiceImpl::DeleteWorkspace(grpc::ServerContext* context,
                                                   const v1::DeleteWorkspaceRequest* request,
                                                   v1::DeleteWorkspaceResponse* response) {
  if (absl::Status admin = RequireAdmin(*context); !admin.ok()) return ToGrpcStatus(admin);
  if (request->confirm_workspace_id() != request->workspace_id()) {
    return Invalid("confirm_workspace_id must repeat workspace_id");
  }
  absl::StatusOr<WorkspaceRecord> visible = Visible(*context, request->workspace_id());
  if (!visible.ok()) return ToGrpcStatus(visible.status());
  absl::StatusOr<WorkspaceRecord> record =
      manager_.Delete(request->workspace_id(), absl::InfinitePast());
  if (!record.ok()) return ToGrpcStatus(record.status());
  ToProto(*record, response->mutable_workspace());
  return grpc::Status::OK;
}

grpc::Status WorkspaceServiceImpl::GetEndpoint(grpc::ServerContext* context,
                                               const v1::GetEndpointRequest* request,
                                               v1::GetEndpointResponse* response) {
  if (!IsValidWorkspaceId(request->workspace_id())) {
    return Invalid("workspace_id must look like ws_ followed by 26 characters");
  }
  // The credential names the calling service: the supervisor opens each route to the
  // services it lists (the scaler reads only the status).
  const std::string audience =
      context->auth_context() != nullptr && PeerIdentity(*context->auth_context()) == "scaler"
          ? "scaler"
          : "proxy";
  absl::StatusOr<Endpoint> endpoint = manager_.GetEndpoint(request->workspace_id(), audience);
  if (!endpoint.ok()) return ToGrpcStatus(endpoint.status());
  response->set_unix_socket_path(endpoint->unix_socket_path);
  response->set_credential(endpoint->credential);
  *response->mutable_credential_expire_time() = Stamp(endpoint->credential_expire_time);
  response->set_state(commonpb::WORKSPACE_STATE_RUNNING);
  const IdentityHeaders& identity = endpoint->identity;
  v1::IdentityHeaderSettings* headers = response->mutable_identity_headers();
  headers->set_enabled(identity.enabled);
  headers->set_user_header(identity.user_header);
  headers->set_user_value(identity.user_value == "user_id" ? v1::IDENTITY_VALUE_USER_ID
                                                           : v1::IDENTITY_VALUE_EMAIL);
  headers->set_set_forwarded_headers(identity.set_forwarded_headers);
  for (const std::string& header : identity.strip_headers) headers->add_strip_headers(header);
  headers->set_tool_base_path(identity.tool_base_path);
  return grpc::Status::OK;
}

grpc::Status WorkspaceServiceImpl::GetUsage(grpc::ServerContext* context,
                                            const v1::GetUsageRequest* request,
                                            v1::GetUsageResponse* response) {
  absl::StatusOr<WorkspaceRecord> visible = Visible(*context, request->workspace_id());
  if (!visible.ok()) return ToGrpcStatus(visible.status());
  absl::StatusOr<WorkspaceUsageSample> sample = manager_.Usage(request->workspace_id());
  if (!sample.ok()) return ToGrpcStatus(sample.status());
  const SandboxUsage* usage = &sample->usage;
  const ResourceLimits limits = manager_.LimitsFor(visible->profile);
  v1::WorkspaceUsage* out = response->mutable_usage();
  *out->mutable_cpu_time() =
      TimeUtil::MicrosecondsToDuration(static_cast<int64_t>(usage->cpu_seconds * 1e6));
  out->set_cpu_millicores(sample->cpu_millicores);
  out->set_cpu_limit_millicores(static_cast<int64_t>(limits.cpus * 1000));
  out->set_memory_bytes(usage->memory_bytes);
  out->set_memory_limit_bytes(limits.memory_bytes);
  out->set_disk_used_bytes(usage->disk_bytes);
  out->set_disk_quota_bytes(limits.disk_bytes);
  out->set_pid_count(usage->processes);
  out->set_pid_limit(limits.pids);
  *out->mutable_sample_time() = Stamp(absl::Now());
  response->set_state(visible->state);
  return grpc::Status::OK;
}

grpc::Status WorkspaceServiceImpl::WatchWorkspaces(
    grpc::ServerContext* context, const v1::WatchWorkspacesRequest* request,
    grpc::ServerWriter<v1::WatchWorkspacesResponse>* writer) {
  absl::StatusOr<Caller> caller = ResolveCaller(*context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  std::string owner = request->owner_user_id();
  if (!caller->user_id.empty() && !caller->admin) owner = caller->user_id;
  const std::string& only = request->workspace_id();
  if (!only.empty() && !IsValidWorkspaceId(only)) return Invalid("workspace_id is malformed");
  auto wanted = [&](const WorkspaceRecord& w) {
    return (owner.empty() || w.owner_user_id == owner) && (only.empty() || w.workspace_id == only);
  };
  uint64_t after = manager_.LatestSequence();
  std::map<std::string, WorkspaceState> last;
  if (request->include_initial_state()) {
    absl::StatusOr<std::vector<WorkspaceRecord>> live = manager_.store().ListLive();
    if (!live.ok()) return ToGrpcStatus(live.status());
    for (const WorkspaceRecord& w : *live) {
      if (!wanted(w)) continue;
      v1::WatchWorkspacesResponse event;
      event.set_kind(v1::WORKSPACE_EVENT_KIND_INITIAL);
      ToProto(w, event.mutable_workspace());
      *event.mutable_event_time() = Stamp(absl::Now());
      last[w.workspace_id] = w.state;
      if (!writer->Write(event)) return grpc::Status::OK;
    }
  }
  while (!context->IsCancelled()) {
    for (const WorkspaceEvent& change :
         manager_.EventsAfter(after, absl::Now() + absl::Milliseconds(500))) {
      after = change.sequence;
      if (!wanted(change.workspace)) continue;
      v1::WatchWorkspacesResponse event;
      auto previous = last.find(change.workspace.workspace_id);
      event.set_kind(change.workspace.state == commonpb::WORKSPACE_STATE_DELETED
                         ? v1::WORKSPACE_EVENT_KIND_DELETED
                     : previous == last.end() && change.workspace.version == 1
                         ? v1::WORKSPACE_EVENT_KIND_CREATED
                         : v1::WORKSPACE_EVENT_KIND_CHANGED);
      if (previous != last.end()) event.set_previous_state(previous->second);
      last[change.workspace.workspace_id] = change.workspace.state;
      ToProto(change.workspace, event.mutable_workspace());
      *event.mutable_event_time() = Stamp(change.workspace.update_time);
      if (!writer->Write(event)) return grpc::Status::OK;
    }
  }
  return grpc::Status::OK;
}

grpc::Status WorkspaceServiceImpl::SetOwnerSuspended(grpc::ServerContext*,
                                                     const v1::SetOwnerSuspendedRequest* request,
                                                     v1::SetOwnerSuspendedResponse* response) {
  if (!IsUserId(request->owner_user_id())) return Invalid("owner_user_id is malformed");
  if (request->reason().size() > 256) return Invalid("reason is at most 256 bytes");
  absl::StatusOr<std::vector<WorkspaceRecord>> changed = manager_.SetOwnerSuspended(
      request->owner_user_id(), request->suspended(), request->reason());
  if (!changed.ok()) return ToGrpcStatus(changed.status());
  for (const WorkspaceRecord& record : *changed) ToProto(record, response->add_workspaces());
  return grpc::Status::OK;
}

grpc::Status WorkspaceServiceImpl::ResolveEgressCredential(
    grpc::ServerContext*, const v1::ResolveEgressCredentialRequest* request,
    v1::ResolveEgressCredentialResponse* response) {
  if (request->credential().empty() || request->credential().size() > 256) {
    return Invalid("credential must be 1 to 256 bytes");
  }
  absl::StatusOr<WorkspaceManager::EgressOwner> owner =
      manager_.ResolveEgressCredential(request->credential());
  if (!owner.ok()) return ToGrpcStatus(owner.status());
  response->set_workspace_id(owner->workspace_id);
  response->set_owner_user_id(owner->owner_user_id);
  *response->mutable_expire_time() = Stamp(owner->expire_time);
  return grpc::Status::OK;
}

// The provisioner and what it owns while it runs.
struct ProvisionerState {
  std::unique_ptr<SqliteDb> db;
  std::unique_ptr<WorkspaceStore> store;
  std::unique_ptr<LocalRuntime> runtime;
  std::unique_ptr<GrpcSecretsSource> secrets;
  std::unique_ptr<WorkspaceManager> manager;
  std::thread secrets_watcher;

  void Stop() {
    if (secrets != nullptr) secrets->StopWatching();
    if (secrets_watcher.joinable()) secrets_watcher.join();
    if (manager != nullptr) manager->Stop();
  }
  ~ProvisionerState() { Stop(); }
};

ServiceDefinition ProvisionerServiceDefinition() {
  ServiceDefinition definition;
  definition.name = "provisioner";
  definition.create =
      [](const ServiceContext& context) -> absl::StatusOr<std::vector<HostedService>> {
    const std::string dir = context.data_dir + "/provisioner";
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    auto state = std::make_shared<ProvisionerState>();
    absl::StatusOr<std::unique_ptr<SqliteDb>> db =
        SqliteDb::Open(dir + "/provisioner.db", SqliteOptions{});
    if (!db.ok()) return db.status();
    state->db = *std::move(db);
    absl::StatusOr<std::unique_ptr<WorkspaceStore>> store =
        WorkspaceStore::Open(*state->db, context.clock);
    if (!store.ok()) return store.status();
    state->store = *std::move(store);
    WorkspaceManagerOptions options;
    options.dir = dir;
    const std::string profiles_dir = context.config.provisioner.profiles_dir.empty()
                                         ? std::string(TIDEPOOL_SOURCE_DIR) + "/profiles"
                                         : context.config.provisioner.profiles_dir;
    absl::StatusOr<std::map<std::string, ToolProfile>> profiles = LoadProfiles(profiles_dir);
    if (!profiles.ok()) return profiles.status();
    options.profiles = *std::move(profiles);
    options.default_profile = context.config.provisioner.default_profile;
    if (!options.profiles.count(options.default_profile)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "provisioner.default_profile \"", options.default_profile, "\" is not in ", profiles_dir));
    }
    const ToolProfile& default_profile = options.profiles.at(options.default_profile);
    if ((context.config.model_server.base_url.empty() &&
         UsesPlaceholder(default_profile, "model_server_url")) ||
        (context.config.model_server.default_model.empty() &&
         UsesPlaceholder(default_profile, "model_server_model"))) {
      return absl::FailedPreconditionError(absl::StrCat(
          "provisioner.default_profile \"", options.default_profile,
          "\" needs the administrator's model server: set model_server.base_url (an "
          "OpenAI-compatible server such as vLLM, Ollama or LiteLLM) and model_server.default_model"));
    }
    options.supervisor_binary = context.config.provisioner.supervisor_binary.empty()
                                    ? SelfDir() + "/tidepool-supervisor"
                                    : context.config.provisioner.supervisor_binary;
    if (::access(options.supervisor_binary.c_str(), X_OK) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("the supervisor binary ", options.supervisor_binary, " is missing"));
    }
    absl::StatusOr<std::string> key = LoadOrCreateKey(dir + "/platform.key");
    if (!key.ok()) return key.status();
    options.platform_key = *std::move(key);
    options.model_server_url = context.config.model_server.base_url;
    options.model_server_model = context.config.model_server.default_model;
    options.public_origin = context.config.public_url;
    while (!options.public_origin.empty() && options.public_origin.back() == '/') {
      options.public_origin.pop_back();
    }
    options.tools_dir = context.config.provisioner.tools_dir.empty()
                            ? std::string(TIDEPOOL_SOURCE_DIR) + "/tools"
                            : context.config.provisioner.tools_dir;
    options.warm_spares = context.config.provisioner.warm_spares;
    prometheus::Gauge& ready_spares =
        prometheus::BuildGauge()
            .Name("tidepool_provisioner_ready_spares")
            .Help("Started workspaces of the default profile ready for people who have none yet")
            .Register(context.metrics)
            .Add({});
    prometheus::Counter& claimed_spares =
        prometheus::BuildCounter()
            .Name("tidepool_provisioner_spares_claimed_total")
            .Help("Started spares a new person's first sign-in claimed")
            .Register(context.metrics)
            .Add({});
    options.on_ready_spares = [&ready_spares](int ready) { ready_spares.Set(ready); };
    options.on_spare_claimed = [&claimed_spares] { claimed_spares.Increment(); };
    options.limits.memory_bytes = context.config.provisioner.memory_limit_mib * (1LL << 20);
    options.limits.pids = context.config.provisioner.pids_limit;
    options.limits.cpus = context.config.provisioner.cpu_millicores / 1000.0;
    options.limits.disk_bytes = context.config.provisioner.disk_quota_mib * (1LL << 20);
    LocalRuntimeOptions runtime_options;
    runtime_options.state_dir = dir + "/runtime";
    if (::geteuid() == 0 && !context.config.provisioner.sandbox_user.empty()) {
      // A root provisioner's sandboxes run as a host user of their own, never as root.
      absl::StatusOr<SandboxHostUser> user =
          ResolveSandboxHostUser(context.config.provisioner.sandbox_user);
      if (!user.ok()) return user.status();
      runtime_options.sandbox_host_uid = static_cast<int>(user->uid);
      runtime_options.sandbox_host_gid = static_cast<int>(user->gid);
      options.sandbox_gid = static_cast<int>(user->gid);
    }
    if (context.config.provisioner.hard_disk_quota) {
      if (ImageVolumesSupported()) {
        runtime_options.volume_images_dir = dir + "/images";
      } else {
        LogWarning("hard disk quotas need root and loop devices; only the file API enforces "
                   "provisioner.disk_quota_mib",
                   {});
      }
    }
    absl::StatusOr<std::unique_ptr<LocalRuntime>> runtime = LocalRuntime::Open(runtime_options);
    if (!runtime.ok()) return runtime.status();
    state->runtime = *std::move(runtime);
    if (context.identity != nullptr) {
      state->secrets = std::make_unique<GrpcSecretsSource>(*context.identity, context.data_dir,
                                                           context.config.Service("secrets"));
      options.secrets = state->secrets.get();
    }
    state->manager = std::make_unique<WorkspaceManager>(options, *state->store, *state->runtime,
                                                        context.clock, context.audit);
    if (absl::Status started = state->manager->Start(); !started.ok()) return started;
    if (state->secrets != nullptr) {
      // A key added on the keys page reaches the running workspace at once.
      state->secrets_watcher = std::thread([raw = state.get()] {
        raw->secrets->WatchChanges(
            [raw](const std::string& user_id) {
              if (absl::Status applied = raw->manager->OnSecretsChanged(user_id); !applied.ok()) {
                LogWarning("cannot apply changed keys to a workspace",
                           {{"user_id", user_id}, {"error", std::string(applied.message())}});
              }
            },
            [raw] { raw->manager->RestampAllSecrets(); });
      });
    }
    std::vector<HostedService> hosted;
    hosted.push_back(HostedService{
        .full_name = "tidepool.provisioner.v1.WorkspaceService",
        .pending_note = "",
        .service = std::make_unique<WorkspaceServiceImpl>(*state->manager),
        .on_stopped = [state] { state->Stop(); },
        .state = state});
    return hosted;
  };
  return definition;
}

}  // namespace tidepool::provisioner
