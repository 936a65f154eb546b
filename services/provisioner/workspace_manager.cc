#include "services/provisioner/workspace_manager.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "lib/crypto/crypto.h"
#include "lib/file_util.h"
#include "lib/log.h"
#include "lib/status_macros.h"
#include "lib/text.h"
#include "lib/workspace_credential.h"
#include "nlohmann/json.hpp"
#include "lib/supervisor_client.h"
#include "tidepool/supervisor/v1/supervisor_service.pb.h"

namespace tidepool::provisioner {
namespace {

namespace commonpb = ::tidepool::common::v1;
namespace supervisorpb = ::tidepool::supervisor::v1;

constexpr size_t kMaxEvents = 10000;
// The owner a spare is stamped for until a person claims it: not the shape of any user id
// (u_ and 26 base32 characters), so the tool lets no one in.
constexpr char kSpareOwner[] = "tidepool-spare";

// A supervisor's GetStatus answer, or nullopt when it gave none (or not one that parses).
std::optional<supervisorpb::GetStatusResponse> ParseStatus(
    const absl::StatusOr<SupervisorReply>& reply) {
  supervisorpb::GetStatusResponse status;
  google::protobuf::util::JsonParseOptions lenient;
  lenient.ignore_unknown_fields = true;
  if (!reply.ok() || reply->status != 200 ||
      !google::protobuf::util::JsonStringToMessage(reply->body, &status, lenient).ok()) {
    return std::nullopt;
  }
  return status;
}

bool Settled(const WorkspaceRecord& w) {
  return w.state == w.desired_state || w.state == commonpb::WORKSPACE_STATE_FAILED;
}

std::string StateName(WorkspaceState state) {
  std::string name = commonpb::WorkspaceState_Name(state);
  const std::string prefix = "WORKSPACE_STATE_";
  return name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
}

// The host (as written) and port of an http(s) URL whose host is the loopback ("localhost",
// 127.x.y.z, [::1]); nullopt for any other URL.
std::optional<std::pair<std::string, int>> LoopbackHostPort(absl::string_view url) {
  int port = 0;
  if (absl::ConsumePrefix(&url, "http://")) {
    port = 80;
  } else if (absl::ConsumePrefix(&url, "https://")) {
    port = 443;
  } else {
    return std::nullopt;
  }
  absl::string_view authority = url.substr(0, url.find_first_of("/?#"));
  if (authority.find('@') != absl::string_view::npos) return std::nullopt;
  absl::string_view host = authority;
  const size_t colon = authority.rfind(':');
  if (colon != absl::string_view::npos && authority.find(']', colon) == absl::string_view::npos) {
    host = authority.substr(0, colon);
    if (!absl::SimpleAtoi(authority.substr(colon + 1), &port) || port < 1 || port > 65535) {
      return std::nullopt;
    }
  }
  bool loopback = host == "localhost" || host == "[::1]";
  if (absl::StartsWith(host, "127.")) {
    loopback = std::count(host.begin(), host.end(), '.') == 3 &&
               std::all_of(host.begin(), host.end(),
                           [](char c) { return c == '.' || (c >= '0' && c <= '9'); });
  }
  if (!loopback) return std::nullopt;
  return std::make_pair(std::string(host), port);
}

}  // namespace

WorkspaceManager::WorkspaceManager(WorkspaceManagerOptions options, WorkspaceStore& store,
                                   Runtime& runtime, Clock& clock, AuditEmitter* audit)
    : options_(std::move(options)), store_(store), runtime_(runtime), clock_(clock), audit_(audit) {}

WorkspaceManager::~WorkspaceManager() { Stop(); }

std::string WorkspaceManager::SocketPath(const std::string& workspace_id) const {
  return absl::StrCat(options_.dir, "/sockets/", workspace_id, "/supervisor.sock");
}

std::string WorkspaceManager::SecretsDir(const std::string& workspace_id) const {
  return absl::StrCat(options_.dir, "/secrets/", workspace_id);
}

absl::Status WorkspaceManager::PrepareSandboxReadDir(const std::string& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const bool shared = options_.sandbox_gid >= 0;
  if (ec || ::chmod(dir.c_str(), shared ? 0750 : 0700) != 0 ||
      (shared && ::chown(dir.c_str(), static_cast<uid_t>(-1),
                         static_cast<gid_t>(options_.sandbox_gid)) != 0)) {
    return absl::UnavailableError(absl::StrCat("cannot prepare ", dir, ": ",
                                               ec ? ec.message() : std::strerror(errno)));
  }
  if (shared) {
    // Files written before the sandboxes had a user of their own (0600, root's group).
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      struct stat st {};
      if (::lstat(entry.path().c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
          (st.st_gid != static_cast<gid_t>(options_.sandbox_gid) || (st.st_mode & 0040) == 0)) {
        (void)::chown(entry.path().c_str(), static_cast<uid_t>(-1),
                      static_cast<gid_t>(options_.sandbox_gid));
        (void)::chmod(entry.path().c_str(), (st.st_mode & 0777) | 0040);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status WorkspaceManager::WriteSandboxReadFile(const std::string& path,
                                                    const std::string& text, mode_t mode) const {
  return options_.sandbox_gid >= 0
             ? WriteFileAtomically(path, text, mode | 0040, options_.sandbox_gid)
             : WriteFileAtomically(path, text, mode);
}

std::string WorkspaceManager::EgressSocketDir() const {
  return options_.egress_socket_dir.empty()
             ? std::filesystem::path(options_.dir).parent_path().string() + "/egress"
             : options_.egress_socket_dir;
}

std::string WorkspaceManager::VolumeDir(const std::string& workspace_id) const {
  return absl::StrCat(options_.dir, "/volumes/", workspace_id);
}

absl::Status WorkspaceManager::Start() {
  for (const char* sub : {"", "/volumes", "/sockets", "/stamps", "/secrets"}) {
    std::error_code ec;
    std::filesystem::create_directories(options_.dir + sub, ec);
    std::filesystem::permissions(options_.dir + sub, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
    if (ec) {
      return absl::UnavailableError(absl::StrCat("cannot prepare ", options_.dir, sub, ": ",
                                                 ec.message()));
    }
  }
  // The egress proxy's socket directory: bound into every sandbox, so it must exist (empty
  // until the proxy listens there; the relay answers 502 meanwhile).
  {
    std::error_code ec;
    std::filesystem::create_directories(EgressSocketDir(), ec);
    if (ec) {
      return absl::UnavailableError(absl::StrCat("cannot prepare ", EgressSocketDir(), ": ",
                                                 ec.message()));
    }
  }
  // Spares a previous run left (it crashed, or was killed): discarded, and made again.
  std::error_code ec;
  std::filesystem::create_directories(options_.dir + "/spares", ec);
  for (const auto& entry : std::filesystem::directory_iterator(options_.dir + "/spares", ec)) {
    const std::string id = entry.path().filename().string();
    absl::StatusOr<WorkspaceRecord> record = store_.Get(id);
    if (absl::IsNotFound(record.status())) {
      DiscardSpare(id);
    } else if (record.ok() && record->state == commonpb::WORKSPACE_STATE_DELETED) {
      std::filesystem::remove(entry.path(), ec);
    } else {
      // Claimed, but that run ended before the spare was stamped for its owner: done now.
      absl::MutexLock lock(&spares_mu_);
      claimed_.insert(id);
    }
  }
  TP_ASSIGN_OR_RETURN(std::vector<WorkspaceRecord> live, store_.ListLive());
  {
    absl::MutexLock lock(&queue_mu_);
    stopping_ = false;
  }
  for (int i = 0; i < std::max(1, options_.workers); ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
  for (const WorkspaceRecord& workspace : live) {
    Enqueue(workspace.workspace_id);
  }
  if (options_.guard_poll_interval > absl::ZeroDuration()) {
    guard_poller_ = std::make_unique<PeriodicTask>(options_.guard_poll_interval,
                                                   [this] { PollConfigGuards(); });
  }
  auto profile = options_.profiles.find(options_.default_profile);
  if (options_.warm_spares > 0 && profile != options_.profiles.end() &&
      !profile->second.owner_ready_path.empty()) {
    {
      absl::MutexLock lock(&spares_mu_);
      spares_stopping_ = false;
    }
    spare_thread_ = std::thread([this] { SpareLoop(); });
  }
  return absl::OkStatus();
}

void WorkspaceManager::Stop() {
  if (guard_poller_ != nullptr) guard_poller_->Stop();
  {
    absl::MutexLock lock(&spares_mu_);
    spares_stopping_ = true;
  }
  if (spare_thread_.joinable()) spare_thread_.join();
  std::deque<std::string> spares;
  {
    absl::MutexLock lock(&spares_mu_);
    spares.swap(spares_);
    if (options_.on_ready_spares) options_.on_ready_spares(0);
  }
  for (const std::string& id : spares) DiscardSpare(id);
  {
    absl::MutexLock lock(&queue_mu_);
    stopping_ = true;
  }
  for (std::thread& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
  workers_.clear();
}

void WorkspaceManager::Enqueue(const std::string& workspace_id) {
  absl::MutexLock lock(&queue_mu_);
  if (busy_.count(workspace_id)) {
    again_.insert(workspace_id);  // picked up again when the current pass ends
    return;
  }
  if (queued_.insert(workspace_id).second) {
    queue_.push_back(workspace_id);
  }
}

void WorkspaceManager::WorkerLoop() {
  for (;;) {
    std::string id;
    {
      absl::MutexLock lock(&queue_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
        return stopping_ || !queue_.empty();
      };
      queue_mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(500));
      if (stopping_) return;
      if (queue_.empty()) continue;
      id = queue_.front();
      queue_.pop_front();
      queued_.erase(id);
      busy_.insert(id);
    }
    Reconcile(id);
    absl::MutexLock lock(&queue_mu_);
    busy_.erase(id);
    if (again_.erase(id) && queued_.insert(id).second) {
      queue_.push_back(id);
    }
  }
}

void WorkspaceManager::Publish(const WorkspaceRecord& record) {
  absl::MutexLock lock(&events_mu_);
  events_.push_back(WorkspaceEvent{++sequence_, record});
  while (events_.size() > kMaxEvents) events_.pop_front();
}

uint64_t WorkspaceManager::LatestSequence() {
  absl::MutexLock lock(&events_mu_);
  return sequence_;
}

std::vector<WorkspaceEvent> WorkspaceManager::EventsAfter(uint64_t after_sequence,
                                                          absl::Time deadline) {
  absl::MutexLock lock(&events_mu_);
  auto newer = [this, after_sequence]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(events_mu_) {
    return sequence_ > after_sequence;
  };
  events_mu_.AwaitWithDeadline(absl::Condition(&newer), deadline);
  std::vector<WorkspaceEvent> out;
  for (const WorkspaceEvent& event : events_) {
    if (event.sequence > after_sequence) out.push_back(event);
  }
  return out;
}

void WorkspaceManager::Observe(const std::string& workspace_id, WorkspaceState state,
                               const std::string& reason) {
  absl::StatusOr<WorkspaceRecord> before = store_.Get(workspace_id);
  absl::StatusOr<WorkspaceRecord> after = store_.SetObserved(workspace_id, state, reason);
  if (!after.ok()) {
    LogError("cannot record a workspace transition",
             {{"workspace_id", workspace_id}, {"error", std::string(after.status().message())}});
    return;
  }
  if (before.ok() && before->state == state) {
    return;
  }
  LogInfo("workspace transition", {{"workspace_id", workspace_id},
                                   {"from", before.ok() ? StateName(before->state) : ""},
                                   {"to", StateName(state)},
                                   {"reason", reason}});
  if (audit_ != nullptr) {
    commonpb::AuditEvent event;
    event.set_action("workspace.state_changed");
    event.set_outcome(state == commonpb::WORKSPACE_STATE_FAILED ? commonpb::OUTCOME_FAILURE
                                                                : commonpb::OUTCOME_SUCCESS);
    event.mutable_actor()->set_kind(commonpb::ACTOR_KIND_SERVICE);
    event.mutable_actor()->set_id("provisioner");
    event.set_subject_user_id(after->owner_user_id);
    event.set_reason_code(reason.substr(0, 64));
    (*event.mutable_attributes())["workspace_id"] = workspace_id;
    (*event.mutable_attributes())["from"] = before.ok() ? StateName(before->state) : "";
    (*event.mutable_attributes())["to"] = StateName(state);
    audit_->Emit(std::move(event));
  }
  Publish(*after);
}

SandboxSpec WorkspaceManager::SpecFor(const WorkspaceRecord& workspace,
                                      const ToolProfile& profile) const {
  SandboxSpec spec;
  spec.workspace_id = workspace.workspace_id;
  spec.volume_dir = VolumeDir(workspace.workspace_id);
  spec.socket_dir = absl::StrCat(options_.dir, "/sockets/", workspace.workspace_id);
  spec.stamp_dir = absl::StrCat(options_.dir, "/stamps/", workspace.workspace_id);
  spec.ro_binds.emplace_back(std::filesystem::path(options_.supervisor_binary).parent_path().string(),
                             "/opt/tidepool/bin");
  spec.ro_binds.emplace_back(SecretsDir(workspace.workspace_id), "/opt/tidepool/secrets");
  spec.ro_binds.emplace_back(EgressSocketDir(), "/run/tidepool-egress");
  if (std::error_code ec; !options_.tools_dir.empty() &&
                          std::filesystem::is_directory(options_.tools_dir, ec)) {
    spec.ro_binds.emplace_back(options_.tools_dir, "/opt/tidepool/tools");
  }
  spec.command = {"/opt/tidepool/bin/tidepool-supervisor", "--socket",
                  "/run/tidepool/supervisor.sock", "--stamp-dir", "/etc/tidepool", "--tool-log",
                  "/home/user/.tidepool/logs/tool.log", "--env-file",
                  "/opt/tidepool/secrets/env"};
  if (!profile.ports.empty()) {
    spec.command.push_back("--tool-http");  // the tool's web UI: its first port
    spec.command.push_back(absl::StrCat(profile.ports.front()));
  }
  spec.command.push_back("--egress-relay");
  spec.command.push_back(absl::StrCat(kEgressRelayPort, ":/run/tidepool-egress/egress.sock"));
  // A model server on the host's loopback (Ollama beside the platform) is reached inside the
  // sandbox at the same address: its port on the sandbox's loopback is tunnelled to it.
  if (std::optional<std::pair<std::string, int>> loopback = LoopbackHostPort(options_.model_server_url);
      loopback.has_value() && loopback->second != kEgressRelayPort &&
      (profile.ports.empty() || loopback->second != profile.ports.front())) {
    spec.command.push_back("--egress-forward");
    spec.command.push_back(absl::StrCat(loopback->second, ":", loopback->first, ":", loopback->second));
  }
  if (!profile.schedule_store.empty()) {
    spec.command.push_back("--schedule-store");
    spec.command.push_back(profile.schedule_store);
    spec.command.push_back("--schedule-format");
    spec.command.push_back(profile.schedule_format);
  }
  for (const std::string& name : profile.work_processes) {
    spec.command.push_back("--work-process");
    spec.command.push_back(name);
  }
  if (profile.health.http_port > 0) {
    spec.command.push_back("--health-http");
    spec.command.push_back(absl::StrCat(profile.health.http_port, ":", profile.health.http_path));
  }
  spec.command.push_back("--");
  spec.command.insert(spec.command.end(), profile.command.begin(), profile.command.end());
  // Env values are templates (checked when the profile was loaded, so rendering cannot fail).
  const std::map<std::string, std::string> values = TemplateValues(workspace, profile);
  for (const auto& [name, text] : profile.env) {
    spec.env[name] = RenderTemplate(text, values).value_or(text);
  }
  spec.env["HOME"] = "/home/user";
  spec.env["USER"] = "user";
  if (!workspace.timezone.empty()) spec.env["TZ"] = workspace.timezone;
  // The only way out is the supervisor's relay to the platform's egress proxy.
  const std::string relay = absl::StrCat("http://127.0.0.1:", kEgressRelayPort);
  for (const char* name : {"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"}) {
    spec.env[name] = relay;
  }
  spec.env["NO_PROXY"] = spec.env["no_proxy"] = "localhost,127.0.0.1,::1";
  spec.env["NODE_USE_ENV_PROXY"] = "1";  // Node.js 24's fetch honours HTTP(S)_PROXY with it
  spec.env["TIDEPOOL_WORKSPACE_ID"] = workspace.workspace_id;
  spec.env["TIDEPOOL_PROFILE"] = profile.name;
  spec.env["TIDEPOOL_DISK_QUOTA_BYTES"] = absl::StrCat(options_.limits.disk_bytes);
  spec.env["TIDEPOOL_WORKSPACE_KEY"] =
      crypto::HexEncode(DeriveWorkspaceKey(options_.platform_key, workspace.workspace_id));
  spec.limits = LimitsFor(profile.name);
  return spec;
}

absl::StatusOr<std::string> WorkspaceManager::MergeKeys(const WorkspaceRecord& workspace,
                                                    const std::string& file_path,
                                                    const std::string& rendered) const {
  nlohmann::json document = nlohmann::json::parse(rendered, nullptr, /*allow_exceptions=*/false);
  if (!document.is_object()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "profile ", workspace.profile, ": ", file_path, " has merge_keys but is not a JSON object"));
  }
  // The entries StampSecrets wrote last ({"models.providers.openai.apiKey": "..."}).
  const nlohmann::json entries = nlohmann::json::parse(
      ReadFileToString(SecretsDir(workspace.workspace_id) + "/config.json").value_or("{}"), nullptr,
      /*allow_exceptions=*/false);
  if (entries.is_object()) {
    for (const auto& [entry, value] : entries.items()) {
      if (!value.is_string()) continue;
      nlohmann::json* node = &document;
      const std::vector<std::string> parts = absl::StrSplit(entry, '.');
      for (size_t i = 0; i + 1 < parts.size(); ++i) {
        nlohmann::json& child = (*node)[parts[i]];
        if (!child.is_object()) child = nlohmann::json::object();
        node = &child;
      }
      (*node)[parts.back()] = value;
    }
  }
  return document.dump(2) + "\n";
}

std::map<std::string, std::string> WorkspaceManager::TemplateValues(
    const WorkspaceRecord& workspace, const ToolProfile& profile) const {
  const std::string workspace_key =
      DeriveWorkspaceKey(options_.platform_key, workspace.workspace_id);
  std::string capabilities;
  {
    absl::MutexLock lock(&capabilities_mu_);
    auto it = capabilities_.find(workspace.workspace_id);  // none until StampSecrets has run
    if (it != capabilities_.end()) capabilities = it->second;
  }
  if (capabilities.empty()) capabilities = "[]";
  return {{"workspace_id", workspace.workspace_id},
          {"owner_user_id", workspace.owner_user_id},
          {"timezone", workspace.timezone},
          {"profile", profile.name},
          {"tool_credential", crypto::HexEncode(crypto::HmacSha256(workspace_key, "tool-credential"))},
          {"model_server_url", options_.model_server_url},
          {"model_server_model", options_.model_server_model},
          {"capabilities", capabilities},
          {"public_origin", options_.public_origin},
          {"egress_proxy_url", absl::StrCat("http://127.0.0.1:", kEgressRelayPort)}};
}

absl::StatusOr<uint64_t> WorkspaceManager::Stamp(const WorkspaceRecord& workspace,
                                                 const ToolProfile& profile) {
  const std::string dir = absl::StrCat(options_.dir, "/stamps/", workspace.workspace_id);
  // Stamped files can carry the owner's keys (merge_keys): nobody else on the host reads them.
  TP_RETURN_IF_ERROR(PrepareSandboxReadDir(dir));
  const std::string workspace_key =
      DeriveWorkspaceKey(options_.platform_key, workspace.workspace_id);
  const std::map<std::string, std::string> values = TemplateValues(workspace, profile);
  const std::string manifest_path = absl::StrCat(dir, "/", kStampManifestName);
  supervisorpb::StampManifest previous;
  if (absl::StatusOr<std::string> text = ReadFileToString(manifest_path); text.ok()) {
    (void)google::protobuf::util::JsonStringToMessage(*text, &previous);
  }
  supervisorpb::StampManifest manifest;
  manifest.set_generation(previous.generation() + 1);
  manifest.set_profile(profile.name);
  const std::string digest_key = DeriveStampDigestKey(workspace_key);
  for (const StampedFileTemplate& file : profile.files) {
    TP_ASSIGN_OR_RETURN(std::string text, RenderTemplate(file.text, values));
    if (file.merge_keys) {
      TP_ASSIGN_OR_RETURN(text, MergeKeys(workspace, file.path, text));
    }
    const std::string path = absl::StrCat(dir, "/", file.path);
    const std::string parent = std::filesystem::path(path).parent_path().string();
    if (parent != dir) TP_RETURN_IF_ERROR(PrepareSandboxReadDir(parent));
    TP_RETURN_IF_ERROR(WriteSandboxReadFile(path, text, file.merge_keys ? 0600 : 0644));
    supervisorpb::StampManifestEntry* entry = manifest.add_files();
    entry->set_path(file.path);
    entry->set_install_to(file.install_to);
    entry->set_mode(file.mode);
    entry->set_hmac_sha256(crypto::HmacSha256(digest_key, text));
  }
  // The manifest goes last: the supervisor's guard reloads when it appears (config_guard.h).
  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  print.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(manifest, &json, print);
  TP_RETURN_IF_ERROR(WriteSandboxReadFile(manifest_path, json, 0644));
  return manifest.generation();
}

void WorkspaceManager::RestartUnresponsive(const std::string& workspace_id) {
  absl::StatusOr<WorkspaceRecord> record = store_.Get(workspace_id);
  absl::StatusOr<SandboxStatus> sandbox = runtime_.Status(workspace_id);
  // Only a workspace meant to run: not one going to sleep or away.
  if (!record.ok() || record->state != commonpb::WORKSPACE_STATE_RUNNING ||
      record->desired_state != commonpb::WORKSPACE_STATE_RUNNING || !sandbox.ok()) {
    return;
  }
  // Its supervisor is frozen or hung, or gone with the whole sandbox (killed from inside).
  const bool exited = sandbox->phase != SandboxPhase::kRunning;
  LogWarning(exited ? "the workspace's sandbox exited; starting it again"
                    : "the workspace's supervisor stopped answering; restarting the workspace",
             {{"workspace_id", workspace_id},
              {"exit_code", exited ? sandbox->last_exit_code.value_or(-1) : 0}});
  if (audit_ != nullptr) {
    commonpb::AuditEvent event;
    event.set_action(exited ? "workspace.sandbox_exited" : "workspace.supervisor_unresponsive");
    event.set_outcome(commonpb::OUTCOME_FAILURE);
    event.mutable_actor()->set_kind(commonpb::ACTOR_KIND_SERVICE);
    event.mutable_actor()->set_id("provisioner");
    event.set_subject_user_id(record->owner_user_id);
    event.set_reason_code(exited ? "sandbox_exited" : "heartbeat_missed");
    (*event.mutable_attributes())["workspace_id"] = workspace_id;
    if (exited && sandbox->last_exit_code.has_value()) {
      (*event.mutable_attributes())["exit_code"] = absl::StrCat(*sandbox->last_exit_code);
    }
    audit_->Emit(std::move(event));
  }
  if (absl::StatusOr<WorkspaceRecord> restarted = Restart(workspace_id, absl::InfinitePast());
      !restarted.ok() && !absl::IsDeadlineExceeded(restarted.status())) {
    LogError("cannot restart an unresponsive workspace",
             {{"workspace_id", workspace_id},
              {"error", std::string(restarted.status().message())}});
  }
}

absl::StatusOr<WorkspaceManager::EgressOwner> WorkspaceManager::ResolveEgressCredential(
    const std::string& credential) {
  const absl::Status invalid = absl::UnauthenticatedError("the egress credential is not valid");
  // tpc1.<workspace>.<caller>.<expiry>.<mac>: the workspace names the key to check it with.
  std::vector<std::string> parts = absl::StrSplit(credential, '.');
  int64_t expiry = 0;
  if (parts.size() != 5 || parts[2] != "egress" || !absl::SimpleAtoi(parts[3], &expiry) ||
      !IsValidWorkspaceId(parts[1])) {
    return invalid;
  }
  absl::StatusOr<std::string> caller = VerifyWorkspaceCredential(
      DeriveWorkspaceKey(options_.platform_key, parts[1]), parts[1], credential, clock_.Now());
  if (!caller.ok() || *caller != "egress") return invalid;
  absl::StatusOr<WorkspaceRecord> record = store_.Get(parts[1]);
  if (!record.ok() || record->state == commonpb::WORKSPACE_STATE_DELETED) {
    return absl::NotFoundError("no such workspace");
  }
  return EgressOwner{.workspace_id = parts[1],
                     .owner_user_id = record->owner_user_id,
                     .expire_time = absl::FromUnixSeconds(expiry)};
}

void WorkspaceManager::PollConfigGuards() {
  absl::StatusOr<std::vector<WorkspaceRecord>> live = store_.ListLive();
  if (!live.ok()) return;
  {
    // Forget workspaces that no longer run: a later start is a new supervisor anyway.
    std::set<std::string> running;
    for (const WorkspaceRecord& workspace : *live) {
      if (workspace.state == commonpb::WORKSPACE_STATE_RUNNING) running.insert(workspace.workspace_id);
    }
    absl::MutexLock lock(&guard_mu_);
    std::erase_if(guard_seen_, [&](const auto& entry) { return !running.count(entry.first); });
    std::erase_if(guard_misses_, [&](const auto& entry) { return !running.count(entry.first); });
  }
  for (const WorkspaceRecord& workspace : *live) {
    if (workspace.state != commonpb::WORKSPACE_STATE_RUNNING) continue;
    uint64_t after = 0;
    std::string boot_id;
    {
      absl::MutexLock lock(&guard_mu_);
      if (auto it = guard_seen_.find(workspace.workspace_id); it != guard_seen_.end()) {
        boot_id = it->second.first;
        after = it->second.second;
      }
    }
    absl::StatusOr<SupervisorReply> reply =
        CallSupervisor(workspace.workspace_id, "ListConfigEvents",
                       absl::StrCat("{\"afterSequence\":\"", after, "\"}"), absl::Seconds(1));
    supervisorpb::ListConfigEventsResponse events;
    if (!reply.ok() || reply->status != 200 ||
        !google::protobuf::util::JsonStringToMessage(reply->body, &events).ok()) {
      // Starting, stopping or gone (the next pass asks again), or frozen.
      int misses = 0;
      {
        absl::MutexLock lock(&guard_mu_);
        misses = ++guard_misses_[workspace.workspace_id];
        if (misses >= kMaxGuardMisses) guard_misses_.erase(workspace.workspace_id);
      }
      if (misses >= kMaxGuardMisses) RestartUnresponsive(workspace.workspace_id);
      continue;
    }
    {
      absl::MutexLock lock(&guard_mu_);
      guard_misses_.erase(workspace.workspace_id);
    }
    if (events.boot_id() != boot_id && after > 0) {
      // A new supervisor numbers its events from 1 again: fetch them all next time.
      absl::MutexLock lock(&guard_mu_);
      guard_seen_[workspace.workspace_id] = {events.boot_id(), 0};
      continue;
    }
    uint64_t last = after;
    for (const supervisorpb::ConfigTamperEvent& tamper : events.events()) {
      last = std::max<uint64_t>(last, tamper.sequence());
      LogWarning("a stamped file was changed inside a workspace",
                 {{"workspace_id", workspace.workspace_id},
                  {"path", tamper.install_to().empty() ? tamper.path() : tamper.install_to()},
                  {"difference", tamper.difference()},
                  {"restored", tamper.restored()},
                  {"quarantined", tamper.quarantined()}});
      if (audit_ == nullptr) continue;
      commonpb::AuditEvent event;
      event.set_action("config.tamper_detected");
      event.set_outcome(tamper.restored() ? commonpb::OUTCOME_SUCCESS : commonpb::OUTCOME_FAILURE);
      event.mutable_actor()->set_kind(commonpb::ACTOR_KIND_SERVICE);
      event.mutable_actor()->set_id("provisioner");
      event.set_subject_user_id(workspace.owner_user_id);
      event.set_reason_code(tamper.quarantined() ? "quarantined"
                            : tamper.restored()  ? "restored"
                                                 : "not_restored");
      auto& attributes = *event.mutable_attributes();
      attributes["workspace_id"] = workspace.workspace_id;
      attributes["path"] = tamper.path();
      attributes["install_to"] = tamper.install_to();
      attributes["difference"] = tamper.difference();
      attributes["detected_by"] = tamper.detected_by();
      attributes["expected_digest"] = crypto::HexEncode(tamper.expected_digest());
      attributes["observed_digest"] = crypto::HexEncode(tamper.observed_digest());
      attributes["detect_time"] = google::protobuf::util::TimeUtil::ToString(tamper.detect_time());
      if (tamper.has_restore_time()) {
        attributes["restore_time"] = google::protobuf::util::TimeUtil::ToString(tamper.restore_time());
      }
      audit_->Emit(std::move(event));
    }
    absl::MutexLock lock(&guard_mu_);
    guard_seen_[workspace.workspace_id] = {events.boot_id(), last};
  }
}

absl::StatusOr<bool> WorkspaceManager::StampSecrets(const WorkspaceRecord& workspace,
                                                    bool* capabilities_changed) {
  if (capabilities_changed != nullptr) *capabilities_changed = false;
  const std::string dir = SecretsDir(workspace.workspace_id);
  TP_RETURN_IF_ERROR(PrepareSandboxReadDir(dir));
  const std::string env_path = dir + "/env";
  const std::string config_path = dir + "/config.json";
  if (options_.secrets == nullptr) {
    if (!std::filesystem::exists(env_path)) {
      TP_RETURN_IF_ERROR(WriteSandboxReadFile(env_path, "", 0600));
    }
    return false;
  }
  absl::StatusOr<std::vector<WorkspaceSecret>> secrets =
      options_.secrets->Resolve(workspace.workspace_id, workspace.owner_user_id, workspace.profile);
  if (!secrets.ok()) {
    // The workspace starts with the keys stamped last time (or none); the next change
    // notification or start stamps them again.
    LogWarning("cannot resolve the owner's keys; keeping the last stamped ones",
               {{"workspace_id", workspace.workspace_id},
                {"code", absl::StatusCodeToString(secrets.status().code())}});
    if (!std::filesystem::exists(env_path)) {
      TP_RETURN_IF_ERROR(WriteSandboxReadFile(env_path, "", 0600));
    }
    return false;
  }
  std::map<std::string, std::pair<std::string, bool>> env;  // name -> (value, reloadable)
  nlohmann::json config = nlohmann::json::object();
  std::set<std::string> providers;
  for (const WorkspaceSecret& secret : *secrets) providers.insert(secret.provider_id);
  {
    const std::string list = nlohmann::json(providers).dump();
    absl::MutexLock lock(&capabilities_mu_);
    std::string& known = capabilities_[workspace.workspace_id];
    // Never seen (a first start, or a provisioner restart) counts as none.
    if (capabilities_changed != nullptr) *capabilities_changed = (known.empty() ? "[]" : known) != list;
    known = list;
  }
  for (const WorkspaceSecret& secret : *secrets) {
    if (secret.value.find_first_of(std::string("\n\r\0", 3)) != std::string::npos) {
      LogWarning("skipped a key whose value spans lines",
                 {{"workspace_id", workspace.workspace_id}, {"provider", secret.provider_id}});
      continue;
    }
    for (const std::string& name : secret.env_vars) {
      env[name] = {secret.value, secret.applies_without_restart};
    }
    for (const std::string& entry : secret.config_entries) {
      config[entry] = secret.value;
    }
  }
  std::string env_text;
  for (const auto& [name, value] : env) absl::StrAppend(&env_text, name, "=", value.first, "\n");
  const std::string config_text = config.dump(2) + "\n";
  const std::string old_env = ReadFileToString(env_path).value_or("");
  const std::string old_config = ReadFileToString(config_path).value_or("");
  bool restart = false;
  if (old_env != env_text) {
    // Environment variables reach the tool only when it (re)starts.
    std::map<std::string, std::string> before;
    for (absl::string_view line : absl::StrSplit(old_env, '\n', absl::SkipEmpty())) {
      const size_t eq = line.find('=');
      if (eq != absl::string_view::npos) before[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
    }
    for (const auto& [name, value] : env) {
      auto it = before.find(name);
      if ((it == before.end() || it->second != value.first) && !value.second) restart = true;
      if (it != before.end()) before.erase(it);
    }
    if (!before.empty()) restart = true;  // a removed key must leave the environment
    TP_RETURN_IF_ERROR(WriteSandboxReadFile(env_path, env_text, 0600));
  }
  if (old_config != config_text) {
    TP_RETURN_IF_ERROR(WriteSandboxReadFile(config_path, config_text, 0600));
    // Files with merge_keys carry these values: they are stamped again.
    if (capabilities_changed != nullptr) *capabilities_changed = true;
  }
  return restart;
}

void WorkspaceManager::RestampAllSecrets() {
  absl::StatusOr<std::vector<WorkspaceRecord>> live = store_.ListLive();
  if (!live.ok()) return;
  for (const WorkspaceRecord& workspace : *live) {
    if (workspace.state != commonpb::WORKSPACE_STATE_RUNNING) continue;
    if (absl::Status applied = OnSecretsChanged(workspace.owner_user_id); !applied.ok()) {
      LogWarning("cannot apply keys to a workspace",
                 {{"workspace_id", workspace.workspace_id},
                  {"error", std::string(applied.message())}});
    }
  }
}

absl::Status WorkspaceManager::OnSecretsChanged(const std::string& owner_user_id) {
  TP_ASSIGN_OR_RETURN(std::optional<WorkspaceRecord> workspace, store_.GetByOwner(owner_user_id));
  if (!workspace.has_value() || workspace->state != commonpb::WORKSPACE_STATE_RUNNING) {
    return absl::OkStatus();  // stamped at the next start
  }
  bool capabilities_changed = false;
  TP_ASSIGN_OR_RETURN(bool restart, StampSecrets(*workspace, &capabilities_changed));
  if (capabilities_changed) {
    // The profile's files name what the keys unlock: stamp them again and have the guard
    // install the new generation (the tool restarts below if a key needs it).
    auto profile = options_.profiles.find(workspace->profile);
    if (profile != options_.profiles.end()) {
      TP_ASSIGN_OR_RETURN(uint64_t generation, Stamp(*workspace, profile->second));
      TP_RETURN_IF_ERROR(InstallStamp(workspace->workspace_id, generation));
    }
  }
  if (!restart) return absl::OkStatus();
  return RestartToolForKeys(workspace->workspace_id);
}

absl::Status WorkspaceManager::InstallStamp(const std::string& workspace_id, uint64_t generation) {
  TP_ASSIGN_OR_RETURN(
      SupervisorReply updated,
      CallSupervisor(workspace_id, "UpdateStamp",
                     absl::StrCat("{\"generation\":\"", generation, "\"}"), absl::Seconds(15)));
  if (updated.status != 200) {
    return absl::UnavailableError(
        absl::StrCat("the supervisor did not take the new stamp (HTTP ", updated.status, ")"));
  }
  return absl::OkStatus();
}

absl::Status WorkspaceManager::RestartToolForKeys(const std::string& workspace_id) {
  TP_ASSIGN_OR_RETURN(SupervisorReply reply,
                      CallSupervisor(workspace_id, "RestartTool", "{\"reason\":\"keys_changed\"}",
                                     absl::Seconds(15)));
  if (reply.status != 200) {
    return absl::UnavailableError(absl::StrCat("the supervisor did not restart the tool (HTTP ",
                                               reply.status, ")"));
  }
  LogInfo("restarted the tool for changed keys", {{"workspace_id", workspace_id}});
  return absl::OkStatus();
}

absl::StatusOr<SupervisorReply> WorkspaceManager::CallSupervisor(const std::string& workspace_id,
                                                                 const std::string& method,
                                                                 const std::string& body,
                                                                 absl::Duration timeout) {
  const std::string credential =
      MintWorkspaceCredential(DeriveWorkspaceKey(options_.platform_key, workspace_id),
                              workspace_id, "provisioner", clock_.Now() + absl::Minutes(1));
  return PostToSupervisor(SocketPath(workspace_id), absl::StrCat("/_tidepool/v1/", method),
                          credential, body, timeout);
}

bool WorkspaceManager::SupervisorReady(const std::string& workspace_id) {
  absl::StatusOr<SupervisorReply> reply =
      CallSupervisor(workspace_id, "GetStatus", "{}", absl::Seconds(2));
  return reply.ok() && reply->status == 200;
}

std::string WorkspaceManager::SpareMarker(const std::string& workspace_id) const {
  return absl::StrCat(options_.dir, "/spares/", workspace_id);
}

std::vector<std::string> WorkspaceManager::ReadySpares() {
  absl::MutexLock lock(&spares_mu_);
  return std::vector<std::string>(spares_.begin(), spares_.end());
}

std::string WorkspaceManager::TakeSpare() {
  absl::MutexLock lock(&spares_mu_);
  if (spares_.empty()) return "";
  std::string id = std::move(spares_.front());
  spares_.pop_front();
  claimed_.insert(id);
  if (options_.on_ready_spares) options_.on_ready_spares(static_cast<int>(spares_.size()));
  return id;
}

void WorkspaceManager::SpareLoop() {
  const ToolProfile& profile = options_.profiles.at(options_.default_profile);
  absl::Duration backoff = absl::Seconds(1);
  for (;;) {
    {
      absl::MutexLock lock(&spares_mu_);
      auto wanted = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(spares_mu_) {
        return spares_stopping_ || static_cast<int>(spares_.size()) < options_.warm_spares;
      };
      spares_mu_.Await(absl::Condition(&wanted));
      if (spares_stopping_) return;
    }
    const absl::Time begin = absl::Now();
    absl::StatusOr<std::string> made = MakeSpare(profile);
    if (made.ok()) {
      {
        absl::MutexLock lock(&spares_mu_);
        if (!spares_stopping_) {
          spares_.push_back(*made);
          if (options_.on_ready_spares) options_.on_ready_spares(static_cast<int>(spares_.size()));
          LogInfo("a started spare is ready",
                  {{"workspace_id", *made}, {"profile", profile.name},
                   {"start_ms", absl::ToDoubleMilliseconds(absl::Now() - begin)}});
          backoff = absl::Seconds(1);
          continue;
        }
      }
      DiscardSpare(*made);  // Stop came meanwhile
      return;
    }
    if (absl::IsCancelled(made.status())) return;  // Stop came meanwhile
    absl::MutexLock lock(&spares_mu_);
    LogWarning("cannot make a started spare; trying again later",
               {{"profile", profile.name}, {"error", std::string(made.status().message())},
                {"retry_s", absl::ToDoubleSeconds(backoff)}});
    spares_mu_.AwaitWithTimeout(absl::Condition(&spares_stopping_), backoff);
    backoff = std::min(backoff * 2, absl::Minutes(5));
  }
}

absl::StatusOr<std::string> WorkspaceManager::MakeSpare(const ToolProfile& profile) {
  TP_ASSIGN_OR_RETURN(std::string id, NewRandomId("ws_"));
  // Marked first: a crash from here on leaves something the next Start discards.
  TP_RETURN_IF_ERROR(WriteFileAtomically(SpareMarker(id), "", 0600));
  WorkspaceRecord spare;
  spare.workspace_id = id;
  spare.owner_user_id = kSpareOwner;  // no person's id has this shape: nobody is let in
  spare.profile = profile.name;
  spare.timezone = "UTC";
  absl::Status made = [&]() -> absl::Status {
    TP_RETURN_IF_ERROR(PrepareSandboxReadDir(SecretsDir(id)));
    TP_RETURN_IF_ERROR(WriteSandboxReadFile(SecretsDir(id) + "/env", "", 0600));
    TP_RETURN_IF_ERROR(Stamp(spare, profile).status());
    TP_RETURN_IF_ERROR(runtime_.Create(SpecFor(spare, profile)));
    TP_RETURN_IF_ERROR(runtime_.Start(id));
    // Ready as any workspace's tool is; the tool's own start is the slow part (OpenClaw: ~9 s).
    const absl::Time deadline = absl::Now() + options_.ready_timeout + absl::Minutes(2);
    while (absl::Now() < deadline) {
      {
        absl::MutexLock lock(&spares_mu_);
        if (spares_stopping_) return absl::CancelledError("stopping");
      }
      std::optional<supervisorpb::GetStatusResponse> tool =
          ParseStatus(CallSupervisor(id, "GetStatus", "{}", absl::Seconds(1)));
      if (tool.has_value() && tool->tool().health() == supervisorpb::TOOL_HEALTH_HEALTHY) {
        return absl::OkStatus();
      }
      absl::StatusOr<SandboxStatus> status = runtime_.Status(id);
      if (status.ok() && status->phase != SandboxPhase::kRunning) {
        return absl::UnavailableError("the spare's sandbox exited");
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    return absl::DeadlineExceededError("the spare's tool did not become ready in time");
  }();
  if (!made.ok()) {
    DiscardSpare(id);
    return made;
  }
  return id;
}

void WorkspaceManager::DiscardSpare(const std::string& workspace_id) {
  (void)runtime_.Delete(workspace_id);
  std::error_code ec;
  std::filesystem::remove_all(absl::StrCat(options_.dir, "/stamps/", workspace_id), ec);
  std::filesystem::remove_all(SecretsDir(workspace_id), ec);
  std::filesystem::remove(SpareMarker(workspace_id), ec);
}

absl::Status WorkspaceManager::AdoptSpare(const WorkspaceRecord& workspace,
                                          const ToolProfile& profile) {
  const std::string& id = workspace.workspace_id;
  // The owner's keys and the profile's files for the owner, while the tool runs: its config
  // reloads (OpenClaw applies an owner change without a restart). The sandbox's record takes
  // the owner's spec for its next start (the process environment, TZ included, applies then).
  TP_ASSIGN_OR_RETURN(bool restart, StampSecrets(workspace));
  TP_ASSIGN_OR_RETURN(uint64_t generation, Stamp(workspace, profile));
  TP_RETURN_IF_ERROR(runtime_.Create(SpecFor(workspace, profile)));
  TP_RETURN_IF_ERROR(InstallStamp(id, generation));
  if (restart) TP_RETURN_IF_ERROR(RestartToolForKeys(id));  // a key read from the environment
  const absl::Time deadline = absl::Now() + options_.ready_timeout;
  while (absl::Now() < deadline) {
    if (ToolAcceptsOwner(workspace, profile)) return absl::OkStatus();
    absl::StatusOr<SandboxStatus> status = runtime_.Status(id);
    if (status.ok() && status->phase != SandboxPhase::kRunning) {
      return absl::UnavailableError("the spare's sandbox exited");
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError("the spare's tool did not accept its owner in time");
}

bool WorkspaceManager::ToolAcceptsOwner(const WorkspaceRecord& workspace,
                                        const ToolProfile& profile) {
  absl::StatusOr<std::string> path =
      RenderTemplate(profile.owner_ready_path, TemplateValues(workspace, profile));
  if (!path.ok() || !profile.identity.enabled) return false;
  // Asked as the edge asks for the owner: the tool's web UI is the proxy's to call.
  const std::string credential = MintWorkspaceCredential(
      DeriveWorkspaceKey(options_.platform_key, workspace.workspace_id), workspace.workspace_id,
      "proxy", clock_.Now() + absl::Minutes(1));
  std::vector<std::pair<std::string, std::string>> headers;
  if (!profile.identity.user_header.empty()) {
    if (profile.identity.user_value != "user_id") return false;  // no e-mail address here
    headers.emplace_back(profile.identity.user_header, workspace.owner_user_id);
  }
  if (profile.identity.set_forwarded_headers) {
    // As the edge names a client on its own host (EdgeServer's ForwardedFor).
    headers.emplace_back("X-Forwarded-For", "192.0.2.1");
    headers.emplace_back("X-Forwarded-Proto",
                         absl::StartsWith(options_.public_origin, "https://") ? "https" : "http");
  }
  absl::StatusOr<SupervisorReply> reply = SendToSupervisor(
      SocketPath(workspace.workspace_id), "GET", *path, credential, "", absl::Seconds(2), headers);
  return reply.ok() && reply->status == 200;
}

absl::Status WorkspaceManager::BringUp(const WorkspaceRecord& workspace) {
  auto profile = options_.profiles.find(workspace.profile);
  if (profile == options_.profiles.end()) {
    return absl::FailedPreconditionError(absl::StrCat("unknown profile ", workspace.profile));
  }
  bool claimed = false;
  {
    absl::MutexLock lock(&spares_mu_);
    claimed = claimed_.erase(workspace.workspace_id) > 0;
  }
  if (claimed) {
    absl::Status adopted = AdoptSpare(workspace, profile->second);
    // A workspace now, with its owner's stamp from here on, whatever happened.
    std::error_code ec;
    std::filesystem::remove(SpareMarker(workspace.workspace_id), ec);
    if (adopted.ok()) return adopted;
    // Started as any new workspace is, from its volume, with the owner's stamp.
    LogWarning("a claimed spare did not take its owner; starting it afresh",
               {{"workspace_id", workspace.workspace_id},
                {"error", std::string(adopted.message())}});
    (void)runtime_.Stop(workspace.workspace_id, options_.stop_grace);
  }
  TP_ASSIGN_OR_RETURN(SandboxStatus status, runtime_.Status(workspace.workspace_id));
  if (status.phase == SandboxPhase::kRunning && SupervisorReady(workspace.workspace_id)) {
    return absl::OkStatus();  // re-adopted
  }
  // The keys first: the profile's files name the capabilities they unlock and may carry them
  // (merge_keys).
  TP_RETURN_IF_ERROR(StampSecrets(workspace).status());
  TP_RETURN_IF_ERROR(Stamp(workspace, profile->second).status());
  TP_RETURN_IF_ERROR(runtime_.Create(SpecFor(workspace, profile->second)));
  TP_RETURN_IF_ERROR(runtime_.Start(workspace.workspace_id));
  const absl::Time deadline = absl::Now() + options_.ready_timeout;
  absl::Duration poll = absl::Milliseconds(2);
  // A sandbox that exits before its supervisor answers (a previous run still winding down,
  // a transient failure) is started again, a few times, before the workspace is FAILED.
  int starts_left = 2;
  while (absl::Now() < deadline) {
    if (SupervisorReady(workspace.workspace_id)) {
      return absl::OkStatus();
    }
    absl::StatusOr<SandboxStatus> now = runtime_.Status(workspace.workspace_id);
    if (now.ok() && now->phase != SandboxPhase::kRunning) {
      if (starts_left-- == 0) {
        return absl::UnavailableError("the sandbox exited before its supervisor was ready");
      }
      LogWarning("sandbox exited before its supervisor was ready; starting it again",
                 {{"workspace_id", workspace.workspace_id},
                  {"exit_code", now->last_exit_code.value_or(-1)}});
      TP_RETURN_IF_ERROR(runtime_.Start(workspace.workspace_id));
      poll = absl::Milliseconds(2);
      continue;
    }
    absl::SleepFor(poll);
    poll = std::min(poll * 2, absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError("the supervisor did not become ready in time");
}

void WorkspaceManager::Reconcile(const std::string& workspace_id) {
  absl::StatusOr<WorkspaceRecord> workspace = store_.Get(workspace_id);
  if (!workspace.ok()) return;
  const std::string id = workspace->workspace_id;
  switch (workspace->desired_state) {
    case commonpb::WORKSPACE_STATE_RUNNING: {
      if (workspace->state != commonpb::WORKSPACE_STATE_RUNNING) {
        Observe(id, commonpb::WORKSPACE_STATE_PROVISIONING, workspace->state_reason);
      }
      absl::Status up = BringUp(*workspace);
      if (up.ok()) {
        Observe(id, commonpb::WORKSPACE_STATE_RUNNING, workspace->state_reason);
      } else {
        LogWarning("workspace failed to start",
                   {{"workspace_id", id}, {"error", std::string(up.message())}});
        (void)runtime_.Stop(id, absl::ZeroDuration());
        Observe(id, commonpb::WORKSPACE_STATE_FAILED, "sandbox_start_failed");
      }
      return;
    }
    case commonpb::WORKSPACE_STATE_SLEEPING:
    case commonpb::WORKSPACE_STATE_SUSPENDED: {
      absl::Status stopped = runtime_.Stop(id, options_.stop_grace);
      if (!stopped.ok() && !absl::IsNotFound(stopped)) {  // never started: nothing to stop
        LogWarning("workspace failed to stop",
                   {{"workspace_id", id}, {"error", std::string(stopped.message())}});
        return;  // retried on the next pass
      }
      // The owner's keys stay on disk only while the workspace runs.
      std::error_code ec;
      std::filesystem::remove_all(SecretsDir(id), ec);
      Observe(id, workspace->desired_state, workspace->state_reason);
      return;
    }
    case commonpb::WORKSPACE_STATE_DELETED: {
      absl::Status deleted = runtime_.Delete(id);
      if (!deleted.ok()) {
        LogWarning("workspace failed to delete",
                   {{"workspace_id", id}, {"error", std::string(deleted.message())}});
        return;
      }
      std::error_code ec;
      std::filesystem::remove_all(absl::StrCat(options_.dir, "/stamps/", id), ec);
      std::filesystem::remove_all(SecretsDir(id), ec);
      Observe(id, commonpb::WORKSPACE_STATE_DELETED, workspace->state_reason);
      return;
    }
    default:
      return;
  }
}

absl::StatusOr<WorkspaceRecord> WorkspaceManager::AwaitSettled(const std::string& workspace_id,
                                                               absl::Time deadline) {
  for (;;) {
    const uint64_t seen = LatestSequence();
    TP_ASSIGN_OR_RETURN(WorkspaceRecord record, store_.Get(workspace_id));
    if (Settled(record)) {
      return record;
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError("the workspace is still changing state");
    }
    EventsAfter(seen, std::min(deadline, absl::Now() + absl::Milliseconds(200)));
  }
}

absl::StatusOr<EnsureOutcome> WorkspaceManager::Ensure(const std::string& owner_user_id,
                                                       const std::string& profile,
                                                       const std::string& timezone) {
  const std::string chosen = profile.empty() ? options_.default_profile : profile;
  auto known = options_.profiles.find(chosen);
  if (known == options_.profiles.end()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown profile \"", chosen, "\""));
  }
  if ((options_.model_server_url.empty() && UsesPlaceholder(known->second, "model_server_url")) ||
      (options_.model_server_model.empty() && UsesPlaceholder(known->second, "model_server_model"))) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the ", chosen, " profile needs the administrator's model server: set "
        "model_server.base_url (and model_server.default_model) in tidepool.yaml"));
  }
  // A new person of the default profile gets a started spare, if one is ready.
  std::string spare;
  if (chosen == options_.default_profile && options_.warm_spares > 0) {
    absl::StatusOr<std::optional<WorkspaceRecord>> existing = store_.GetByOwner(owner_user_id);
    if (existing.ok() && (!existing->has_value() ||
                          (*existing)->state == commonpb::WORKSPACE_STATE_DELETED)) {
      spare = TakeSpare();
    }
  }
  absl::StatusOr<EnsureOutcome> ensured =
      store_.EnsureForOwner(owner_user_id, chosen, timezone, spare);
  if (!spare.empty()) {
    std::error_code ec;
    if (ensured.ok() && ensured->created && ensured->workspace.workspace_id == spare) {
      if (options_.on_spare_claimed) options_.on_spare_claimed();
      LogInfo("a new person got a started spare",
              {{"workspace_id", spare}, {"owner_user_id", owner_user_id}});
    } else {
      absl::MutexLock lock(&spares_mu_);  // not used: ready for the next person
      claimed_.erase(spare);
      spares_.push_front(spare);
      if (options_.on_ready_spares) options_.on_ready_spares(static_cast<int>(spares_.size()));
    }
  }
  TP_RETURN_IF_ERROR(ensured.status());
  EnsureOutcome outcome = *std::move(ensured);
  const WorkspaceRecord& w = outcome.workspace;
  if (w.state == commonpb::WORKSPACE_STATE_SUSPENDED ||
      w.desired_state == commonpb::WORKSPACE_STATE_SUSPENDED) {
    return absl::FailedPreconditionError("the owner is suspended");
  }
  if (w.desired_state == commonpb::WORKSPACE_STATE_DELETED) {
    return absl::FailedPreconditionError("the workspace is being deleted");
  }
  if (outcome.created) {
    Publish(w);
    if (audit_ != nullptr) {
      commonpb::AuditEvent event;
      event.set_action("workspace.created");
      event.set_outcome(commonpb::OUTCOME_SUCCESS);
      event.mutable_actor()->set_kind(commonpb::ACTOR_KIND_SERVICE);
      event.mutable_actor()->set_id("provisioner");
      event.set_subject_user_id(owner_user_id);
      (*event.mutable_attributes())["workspace_id"] = w.workspace_id;
      (*event.mutable_attributes())["profile"] = chosen;
      if (w.workspace_id == spare) (*event.mutable_attributes())["from_spare"] = "true";
      audit_->Emit(std::move(event));
    }
  }
  if (w.desired_state != commonpb::WORKSPACE_STATE_RUNNING) {
    TP_ASSIGN_OR_RETURN(outcome.workspace, store_.SetDesired(w.workspace_id,
                                                             commonpb::WORKSPACE_STATE_RUNNING,
                                                             "user_request"));
  }
  if (outcome.created || outcome.workspace.state != commonpb::WORKSPACE_STATE_RUNNING) {
    Enqueue(outcome.workspace.workspace_id);
  }
  return outcome;
}

absl::StatusOr<WorkspaceRecord> WorkspaceManager::Want(const std::string& workspace_id,
                                                       WorkspaceState desired,
                                                       const std::string& reason,
                                                       absl::Time wait_until) {
  TP_ASSIGN_OR_RETURN(WorkspaceRecord record, store_.SetDesired(workspace_id, desired, reason));
  Enqueue(workspace_id);
  if (wait_until <= absl::Now()) {
    return record;
  }
  return AwaitSettled(workspace_id, wait_until);
}

absl::StatusOr<WorkspaceRecord> WorkspaceManager::Wake(const std::string& workspace_id,
                                                       absl::Time wait_until) {
  TP_ASSIGN_OR_RETURN(WorkspaceRecord record, store_.Get(workspace_id));
  if (record.desired_state == commonpb::WORKSPACE_STATE_SUSPENDED ||
      record.desired_state == commonpb::WORKSPACE_STATE_DELETED) {
    return absl::FailedPreconditionError(
        absl::StrCat("the workspace is ", StateName(record.desired_state)));
  }
  if (record.desired_state == commonpb::WORKSPACE_STATE_RUNNING &&
      record.state == commonpb::WORKSPACE_STATE_RUNNING) {
    return record;
  }
  return Want(workspace_id, commonpb::WORKSPACE_STATE_RUNNING, "wake", wait_until);
}

absl::StatusOr<WorkspaceRecord> WorkspaceManager::Sleep(const std::string& workspace_id,
                                                        const std::string& reason,
                                                        absl::Time wait_until) {
  TP_ASSIGN_OR_RETURN(WorkspaceRecord record, store_.Get(workspace_id));
  if (record.desired_state == commonpb::WORKSPACE_STATE_SUSPENDED ||
      record.desired_state == commonpb::WORKSPACE_STATE_DELETED) {
    return absl::FailedPreconditionError(
        absl::StrCat("the workspace is ", StateName(record.desired_state)));
  }
  return Want(workspace_id, commonpb::WORKSPACE_STATE_SLEEPING,
              reason.empty() ? "user_request" : reason, wait_until);
}

absl::StatusOr<WorkspaceRecord> WorkspaceManager::Restart(const std::string& workspace_id,
                                                          absl::Time wait_until) {
  TP_ASSIGN_OR_RETURN(WorkspaceRecord record, store_.Get(workspace_id));
  if (record.state != commonpb::WORKSPACE_STATE_RUNNING &&
      record.state != commonpb::WORKSPACE_STATE_FAILED) {
    return absl::FailedPreconditionError("only a running or failed workspace can be restarted");
  }
  if (absl::Status stopped = runtime_.Stop(workspace_id, options_.stop_grace);
      !stopped.ok() && !absl::IsNotFound(stopped)) {
    return stopped;
  }
  Observe(workspace_id, commonpb::WORKSPACE_STATE_PROVISIONING, "restart");
  return Want(workspace_id, commonpb::WORKSPACE_STATE_RUNNING, "restart", wait_until);
}

absl::StatusOr<WorkspaceRecord> WorkspaceManager::Delete(const std::string& workspace_id,
                                                         absl::Time wait_until) {
  TP_ASSIGN_OR_RETURN(WorkspaceRecord record, store_.Get(workspace_id));
  if (record.state == commonpb::WORKSPACE_STATE_DELETED) {
    return absl::NotFoundError("no such workspace");
  }
  return Want(workspace_id, commonpb::WORKSPACE_STATE_DELETED, "user_request", wait_until);
}

absl::StatusOr<std::vector<WorkspaceRecord>> WorkspaceManager::SetOwnerSuspended(
    const std::string& owner_user_id, bool suspended, const std::string& reason) {
  TP_RETURN_IF_ERROR(store_.SetOwnerSuspended(owner_user_id, suspended));
  std::vector<WorkspaceRecord> out;
  TP_ASSIGN_OR_RETURN(std::optional<WorkspaceRecord> workspace, store_.GetByOwner(owner_user_id));
  if (!workspace.has_value() || workspace->state == commonpb::WORKSPACE_STATE_DELETED) {
    return out;
  }
  const WorkspaceState desired =
      suspended ? commonpb::WORKSPACE_STATE_SUSPENDED : commonpb::WORKSPACE_STATE_SLEEPING;
  TP_ASSIGN_OR_RETURN(WorkspaceRecord record,
                      store_.SetDesired(workspace->workspace_id, desired,
                                        suspended ? "owner_suspended" : "owner_reinstated"));
  (void)reason;
  Enqueue(record.workspace_id);
  out.push_back(record);
  return out;
}

absl::StatusOr<Endpoint> WorkspaceManager::GetEndpoint(const std::string& workspace_id,
                                                       const std::string& caller) {
  TP_ASSIGN_OR_RETURN(WorkspaceRecord record, store_.Get(workspace_id));
  if (record.state == commonpb::WORKSPACE_STATE_DELETED) {
    return absl::NotFoundError("no such workspace");
  }
  if (record.state != commonpb::WORKSPACE_STATE_RUNNING) {
    return absl::FailedPreconditionError("the workspace is not running; wake it first");
  }
  Endpoint endpoint;
  endpoint.unix_socket_path = SocketPath(workspace_id);
  endpoint.credential_expire_time = clock_.Now() + options_.credential_lifetime;
  if (auto profile = options_.profiles.find(record.profile); profile != options_.profiles.end()) {
    endpoint.identity = profile->second.identity;
    endpoint.identity.tool_base_path =
        RenderTemplate(endpoint.identity.tool_base_path, TemplateValues(record, profile->second))
            .value_or(endpoint.identity.tool_base_path);
  }
  endpoint.credential = MintWorkspaceCredential(
      DeriveWorkspaceKey(options_.platform_key, workspace_id), workspace_id, caller,
      endpoint.credential_expire_time);
  return endpoint;
}

absl::StatusOr<WorkspaceUsageSample> WorkspaceManager::Usage(const std::string& workspace_id) {
  TP_RETURN_IF_ERROR(store_.Get(workspace_id).status());
  TP_ASSIGN_OR_RETURN(SandboxUsage usage, runtime_.Usage(workspace_id));
  absl::Time now = absl::Now();
  std::optional<std::pair<double, absl::Time>> previous;
  {
    absl::MutexLock lock(&samples_mu_);
    auto it = cpu_samples_.find(workspace_id);
    if (it != cpu_samples_.end() && now - it->second.second < absl::Minutes(5) &&
        it->second.first <= usage.cpu_seconds) {
      previous = it->second;
    }
  }
  if (!previous.has_value() || now - previous->second < absl::Milliseconds(100)) {
    // No usable earlier sample: take two, a moment apart.
    previous = std::make_pair(usage.cpu_seconds, now);
    absl::SleepFor(absl::Milliseconds(250));
    TP_ASSIGN_OR_RETURN(usage, runtime_.Usage(workspace_id));
    now = absl::Now();
  }
  WorkspaceUsageSample sample;
  const double elapsed = absl::ToDoubleSeconds(now - previous->second);
  sample.cpu_millicores = static_cast<int64_t>(
      std::max(0.0, usage.cpu_seconds - previous->first) / std::max(elapsed, 0.001) * 1000.0 + 0.5);
  sample.usage = usage;
  absl::MutexLock lock(&samples_mu_);
  cpu_samples_[workspace_id] = {usage.cpu_seconds, now};
  return sample;
}

WorkspaceHealthView WorkspaceManager::Health(const WorkspaceRecord& workspace) {
  if (workspace.state != commonpb::WORKSPACE_STATE_RUNNING) return WorkspaceHealthView::kUnknown;
  const absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&samples_mu_);
    auto it = health_.find(workspace.workspace_id);
    if (it != health_.end() && now - it->second.second < absl::Seconds(5)) return it->second.first;
  }
  WorkspaceHealthView health = WorkspaceHealthView::kUnhealthy;  // no answer
  if (std::optional<supervisorpb::GetStatusResponse> status = ParseStatus(
          CallSupervisor(workspace.workspace_id, "GetStatus", "{}", absl::Seconds(1)));
      status.has_value()) {
    switch (status->tool().health()) {
      case supervisorpb::TOOL_HEALTH_HEALTHY:
        health = status->config_ok() ? WorkspaceHealthView::kHealthy : WorkspaceHealthView::kDegraded;
        break;
      case supervisorpb::TOOL_HEALTH_STARTING:
      case supervisorpb::TOOL_HEALTH_RESTARTING:
        health = WorkspaceHealthView::kDegraded;
        break;
      default:
        health = WorkspaceHealthView::kUnhealthy;
    }
  }
  absl::MutexLock lock(&samples_mu_);
  if (health_.size() > 10000) health_.clear();
  health_[workspace.workspace_id] = {health, now};
  return health;
}

ResourceLimits WorkspaceManager::LimitsFor(const std::string& profile_name) const {
  ResourceLimits limits = options_.limits;
  auto profile = options_.profiles.find(profile_name);
  if (profile == options_.profiles.end()) return limits;
  if (profile->second.min_memory_mib > 0 && limits.memory_bytes > 0) {
    limits.memory_bytes =
        std::max<int64_t>(limits.memory_bytes, int64_t{profile->second.min_memory_mib} << 20);
  }
  if (profile->second.min_cpu_millicores > 0 && limits.cpus > 0) {
    limits.cpus = std::max(limits.cpus, profile->second.min_cpu_millicores / 1000.0);
  }
  return limits;
}

}  // namespace tidepool::provisioner
