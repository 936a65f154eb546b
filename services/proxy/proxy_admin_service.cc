#include "services/proxy/proxy_admin_service.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/time_util.h"
#include "lib/log.h"
#include "lib/crypto/crypto.h"
#include "lib/file_util.h"
#include "lib/platform_client.h"
#include "services/auth/session_token.h"
#include "services/proxy/activity_reporter.h"
#include "services/proxy/api_gateway.h"
#include "services/proxy/edge_http.h"
#include "services/proxy/session_authority.h"
#include "tidepool/provisioner/v1/workspace_service.grpc.pb.h"

namespace tidepool::proxy {
namespace {

namespace commonpb = ::tidepool::common::v1;
namespace provisionerpb = ::tidepool::provisioner::v1;

// Resolves egress credentials through the provisioner, remembering each answer until the
// credential expires (a relay mints one per connection, each valid 10 minutes).
class EgressCredentialResolver {
 public:
  explicit EgressCredentialResolver(PlatformChannels* channels) : channels_(channels) {}

  absl::StatusOr<EgressIdentity> Resolve(const std::string& token) {
    const absl::Time now = absl::Now();
    {
      absl::MutexLock lock(&mu_);
      if (auto it = cache_.find(token); it != cache_.end() && it->second.second > now) {
        return it->second.first;
      }
    }
    std::shared_ptr<grpc::Channel> channel = channels_->Get("provisioner");
    if (channel == nullptr) return absl::UnavailableError("the provisioner cannot be found");
    auto stub = provisionerpb::WorkspaceService::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    provisionerpb::ResolveEgressCredentialRequest request;
    request.set_credential(token);
    provisionerpb::ResolveEgressCredentialResponse response;
    const grpc::Status status = stub->ResolveEgressCredential(&context, request, &response);
    if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
        status.error_code() == grpc::StatusCode::NOT_FOUND) {
      return absl::UnauthenticatedError("the egress credential is not valid");
    }
    if (!status.ok()) return absl::UnavailableError("the provisioner did not answer");
    EgressIdentity identity{.workspace_id = response.workspace_id(),
                            .owner_user_id = response.owner_user_id()};
    const absl::Time expire = absl::FromUnixMicros(
        google::protobuf::util::TimeUtil::TimestampToMicroseconds(response.expire_time()));
    absl::MutexLock lock(&mu_);
    if (cache_.size() >= kMaxCached) {
      for (auto it = cache_.begin(); it != cache_.end();) {
        it = it->second.second <= now ? cache_.erase(it) : std::next(it);
      }
      if (cache_.size() >= kMaxCached) cache_.clear();
    }
    cache_[token] = {identity, expire};
    return identity;
  }

 private:
  static constexpr size_t kMaxCached = 10000;
  PlatformChannels* const channels_;
  absl::Mutex mu_;
  std::map<std::string, std::pair<EgressIdentity, absl::Time>> cache_ ABSL_GUARDED_BY(mu_);
};

// Everything one proxy replica runs, torn down in reverse order.
struct ProxyState {
  std::unique_ptr<PlatformChannels> channels;
  std::unique_ptr<EgressCredentialResolver> resolver;
  std::unique_ptr<EgressProxy> egress;
  std::unique_ptr<SessionAuthority> sessions;
  std::unique_ptr<ApiGateway> api;
  std::unique_ptr<ActivityReporter> activity;
  std::unique_ptr<EdgeServer> edge;
  std::string edge_run_file;

  void Stop() {
    if (edge != nullptr) edge->Stop();
    if (!edge_run_file.empty()) {
      std::error_code ec;
      std::filesystem::remove(edge_run_file, ec);
    }
    if (activity != nullptr) activity->Stop();
    if (sessions != nullptr) sessions->Stop();
    if (egress != nullptr) egress->Stop();
  }
};

// The page token of a listing: the decimal offset of the next item.
absl::StatusOr<size_t> PageOffset(const commonpb::PageRequest& page, size_t* size) {
  if (page.page_size() < 0) return absl::InvalidArgumentError("page_size must not be negative");
  *size = page.page_size() == 0 ? 50 : std::min(page.page_size(), 1000);
  size_t offset = 0;
  if (!page.page_token().empty() && !absl::SimpleAtoi(page.page_token(), &offset)) {
    return absl::InvalidArgumentError("page_token is malformed");
  }
  return offset;
}

grpc::Status Invalid(const absl::Status& status) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(status.message()));
}

// The preview signing key, <data_dir>/proxy/preview.key: 32 random bytes made on the first
// start, readable by the platform only, shared by replicas that share the data directory.
absl::StatusOr<std::string> LoadOrCreatePreviewKey(const std::string& data_dir) {
  const std::string dir = data_dir + "/proxy";
  const std::string path = dir + "/preview.key";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  absl::StatusOr<std::string> existing = ReadFileToString(path);
  if (existing.ok() && existing->size() == 32) return existing;
  absl::StatusOr<std::string> key = crypto::RandomBytes(32);
  if (!key.ok()) return key.status();
  if (absl::Status written = WriteFileAtomically(path, *key, 0600); !written.ok()) return written;
  return key;
}

}  // namespace

absl::StatusOr<std::vector<EgressRule>> EgressRulesFromConfig(
    const std::vector<std::string>& allowlist) {
  std::vector<EgressRule> rules;
  for (const std::string& entry : allowlist) {
    const size_t colon = entry.rfind(':');
    EgressRule rule;
    rule.origin = std::string(kEgressOriginConfig);
    if (colon == std::string::npos || !absl::SimpleAtoi(entry.substr(colon + 1), &rule.port)) {
      return absl::InvalidArgumentError(
          absl::StrCat("proxy.egress_allowlist: '", entry, "' must be host:port"));
    }
    rule.host = entry.substr(0, colon);
    if (rule.host.size() > 2 && rule.host.front() == '[' && rule.host.back() == ']') {
      rule.host = rule.host.substr(1, rule.host.size() - 2);
    }
    if (absl::Status valid = ValidateEgressRules({rule}); !valid.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("proxy.egress_allowlist: '", entry, "': ", valid.message()));
    }
    rules.push_back(std::move(rule));
  }
  return rules;
}

grpc::Status ProxyAdminServiceImpl::GetEgressPolicy(grpc::ServerContext*,
                                                    const v1::GetEgressPolicyRequest* request,
                                                    v1::GetEgressPolicyResponse* response) {
  if (egress_ == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the egress proxy is not running");
  }
  for (const EgressRule& rule : egress_->Rules()) {
    v1::EgressRule* out = response->add_rules();
    out->set_host(rule.host);
    out->set_port(rule.port);
    out->set_origin(rule.origin);
  }
  for (v1::WorkspaceEgress& counters : egress_->Counters()) {
    if (!request->workspace_id().empty() && counters.workspace_id() != request->workspace_id()) {
      continue;
    }
    *response->add_workspaces() = std::move(counters);
  }
  return grpc::Status::OK;
}

absl::StatusOr<std::optional<EgressRule>> ModelServerRule(const std::string& base_url) {
  if (base_url.empty()) return std::nullopt;
  absl::StatusOr<UrlParts> url = ParseHttpUrl(base_url);
  if (!url.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_server.base_url: ", url.status().message()));
  }
  EgressRule rule;
  rule.origin = std::string(kEgressOriginModelServer);
  rule.host = url->host;
  rule.port = url->port;
  if (rule.host.size() > 2 && rule.host.front() == '[' && rule.host.back() == ']') {
    rule.host = rule.host.substr(1, rule.host.size() - 2);
  }
  if (absl::Status valid = ValidateEgressRules({rule}); !valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("model_server.base_url: ", valid.message()));
  }
  return rule;
}

grpc::Status ProxyAdminServiceImpl::ListConnections(grpc::ServerContext*,
                                                    const v1::ListConnectionsRequest* request,
                                                    v1::ListConnectionsResponse* response) {
  if (edge_ == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the browser edge is not running");
  }
  size_t size = 0;
  absl::StatusOr<size_t> offset = PageOffset(request->page(), &size);
  if (!offset.ok()) return Invalid(offset.status());
  std::vector<ConnectionRegistry::Snapshot> matching;
  for (ConnectionRegistry::Snapshot& c : edge_->connections().List()) {
    if ((!request->user_id().empty() && c.user_id != request->user_id()) ||
        (!request->workspace_id().empty() && c.workspace_id != request->workspace_id()) ||
        (request->kind() != v1::CONNECTION_KIND_UNSPECIFIED &&
         static_cast<int>(c.kind) != static_cast<int>(request->kind()))) {
      continue;
    }
    matching.push_back(std::move(c));
  }
  auto stamp = [](absl::Time t) {
    return google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
  };
  for (size_t i = *offset; i < matching.size() && i < *offset + size; ++i) {
    const ConnectionRegistry::Snapshot& c = matching[i];
    v1::Connection* out = response->add_connections();
    out->set_connection_id(absl::StrCat("c", c.id));
    out->set_kind(static_cast<v1::ConnectionKind>(c.kind));
    out->set_user_id(c.user_id);
    out->set_session_id(c.session_id);
    out->set_workspace_id(c.workspace_id);
    out->set_source_address(c.source_address);
    *out->mutable_open_time() = stamp(c.open_time);
    *out->mutable_last_activity_time() = stamp(c.last_activity);
    out->set_bytes_received(c.bytes_received);
    out->set_bytes_sent(c.bytes_sent);
  }
  if (*offset + size < matching.size()) {
    response->mutable_page()->set_next_page_token(absl::StrCat(*offset + size));
  }
  response->mutable_page()->set_total_size(static_cast<int64_t>(matching.size()));
  response->set_proxy_instance(instance_);
  return grpc::Status::OK;
}

grpc::Status ProxyAdminServiceImpl::CloseConnections(grpc::ServerContext*,
                                                     const v1::CloseConnectionsRequest* request,
                                                     v1::CloseConnectionsResponse* response) {
  if (request->reason().size() > 64) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "reason is over 64 bytes");
  }
  const std::string reason = request->reason().empty() ? "admin" : request->reason();
  if (edge_ == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the browser edge is not running");
  }
  int closed = 0;
  switch (request->selector_case()) {
    case v1::CloseConnectionsRequest::kUserId:
      if (!auth::IsValidUserId(request->user_id())) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "user_id is malformed");
      }
      closed = edge_->connections().CloseUser(request->user_id(), absl::InfiniteFuture(), reason);
      break;
    case v1::CloseConnectionsRequest::kSessionId:
      if (!auth::IsValidSessionId(request->session_id())) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "session_id is malformed");
      }
      closed = edge_->connections().CloseSession(request->session_id(), reason);
      break;
    default:
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "set user_id or session_id");
  }
  LogInfo("closed browser connections", {{"count", closed}, {"reason", reason}});
  response->set_closed_count(closed);
  response->set_proxy_instance(instance_);
  return grpc::Status::OK;
}

grpc::Status ProxyAdminServiceImpl::ListRoutes(grpc::ServerContext*,
                                               const v1::ListRoutesRequest* request,
                                               v1::ListRoutesResponse* response) {
  if (edge_ == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the browser edge is not running");
  }
  size_t size = 0;
  absl::StatusOr<size_t> offset = PageOffset(request->page(), &size);
  if (!offset.ok()) return Invalid(offset.status());
  const std::vector<RouteInfo> routes = edge_->Routes();
  for (size_t i = *offset; i < routes.size() && i < *offset + size; ++i) {
    v1::Route* out = response->add_routes();
    out->set_kind(static_cast<v1::RouteKind>(routes[i].kind));
    out->set_host(routes[i].host);
    out->set_path_prefix(routes[i].path_prefix);
    out->set_upstream(routes[i].upstream);
    out->set_requires_session(routes[i].requires_session);
    out->set_websocket(routes[i].websocket);
  }
  if (*offset + size < routes.size()) {
    response->mutable_page()->set_next_page_token(absl::StrCat(*offset + size));
  }
  response->mutable_page()->set_total_size(static_cast<int64_t>(routes.size()));
  response->set_proxy_instance(instance_);
  return grpc::Status::OK;
}

ServiceDefinition ProxyServiceDefinition() {
  ServiceDefinition definition;
  definition.name = "proxy";
  definition.create =
      [](const ServiceContext& context) -> absl::StatusOr<std::vector<HostedService>> {
    auto state = std::make_shared<ProxyState>();
    if (context.identity != nullptr) {
      const PlatformConfig& config = context.config;
      state->channels =
          std::make_unique<PlatformChannels>(*context.identity, context.data_dir, config);
      PlatformChannels* channels = state->channels.get();
      absl::StatusOr<std::vector<EgressRule>> rules =
          EgressRulesFromConfig(config.proxy.egress_allowlist);
      if (!rules.ok()) return rules.status();
      // The shared model server is on the list by default.
      absl::StatusOr<std::optional<EgressRule>> model_server =
          ModelServerRule(config.model_server.base_url);
      if (!model_server.ok()) return model_server.status();
      if (model_server->has_value()) rules->push_back(**model_server);
      const std::string dir = context.data_dir + "/egress";
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      state->resolver = std::make_unique<EgressCredentialResolver>(channels);
      EgressProxyOptions options;
      options.socket_path = dir + "/egress.sock";
      options.rules = *std::move(rules);
      options.verify = [resolver = state->resolver.get()](const std::string& token) {
        return resolver->Resolve(token);
      };
      options.on_denied = [audit = context.audit](const EgressDecision& decision) {
        if (audit == nullptr) return;
        commonpb::AuditEvent event;
        event.set_action("egress.denied");
        event.set_outcome(commonpb::OUTCOME_DENIED);
        event.mutable_actor()->set_kind(commonpb::ACTOR_KIND_SERVICE);
        event.mutable_actor()->set_id("proxy");
        event.set_subject_user_id(decision.owner_user_id);
        // The audit wants snake case: "not on allowlist" -> "not_on_allowlist".
        std::string code;
        for (char c : decision.reason.substr(0, 64)) {
          code.push_back(absl::ascii_isalnum(static_cast<unsigned char>(c))
                             ? absl::ascii_tolower(static_cast<unsigned char>(c))
                             : '_');
        }
        event.set_reason_code(code);
        (*event.mutable_attributes())["workspace_id"] = decision.workspace_id;
        (*event.mutable_attributes())["destination"] = decision.destination;
        audit->Emit(std::move(event));
      };
      absl::StatusOr<std::unique_ptr<EgressProxy>> egress = EgressProxy::Start(std::move(options));
      if (!egress.ok()) return egress.status();
      state->egress = *std::move(egress);

      // The browser edge.
      state->sessions = std::make_unique<SessionAuthority>(
          [channels] { return channels->Get("auth"); }, context.clock);
      state->api = std::make_unique<ApiGateway>(
          [channels](absl::string_view service) { return channels->Get(service); });
      state->activity = std::make_unique<ActivityReporter>(
          [channels] { return channels->Get("scaler"); }, context.clock,
          config.proxy.activity_flush_interval);
      absl::StatusOr<std::string> preview_key = LoadOrCreatePreviewKey(context.data_dir);
      if (!preview_key.ok()) return preview_key.status();
      EdgeOptions edge_options;
      edge_options.listen_address = config.proxy.http_address;
      edge_options.port = config.proxy.http_port;
      edge_options.public_url = config.public_url;
      edge_options.dev_mode = config.proxy.dev_mode;
      edge_options.preview_domain = config.proxy.preview_domain;
      edge_options.web_root = config.proxy.web_root;
      if (edge_options.web_root.empty()) {
        const std::string built = std::string(TIDEPOOL_SOURCE_DIR) + "/web/dist";
        if (std::filesystem::is_regular_file(built + "/index.html", ec)) edge_options.web_root = built;
      }
      edge_options.preview_key = *preview_key;
      edge_options.trusted_forwarders = config.proxy.trusted_forwarders;
      edge_options.max_websockets_per_user = config.proxy.max_websockets_per_user;
      edge_options.websocket_idle = config.proxy.websocket_idle_timeout;
      EdgeBackends backends;
      backends.channel_for = [channels](absl::string_view service) {
        return channels->Get(service);
      };
      backends.sessions = state->sessions.get();
      backends.api = state->api.get();
      backends.on_activity = [activity = state->activity.get()](
                                 const std::string& workspace_id, const std::string& user_id,
                                 int source, int64_t bytes) {
        activity->Record(workspace_id, user_id, source, bytes);
      };
      backends.metrics = &context.metrics;
      absl::StatusOr<std::unique_ptr<EdgeServer>> edge =
          EdgeServer::Start(std::move(edge_options), std::move(backends));
      if (!edge.ok()) {
        return absl::Status(edge.status().code(),
                            absl::StrCat("browser edge: ", edge.status().message()));
      }
      state->edge = *std::move(edge);
      state->sessions->SetRevocationListener(
          [edge = state->edge.get()](const auth::v1::Revocation& revocation) {
            edge->OnRevocation(revocation);
          });
      state->sessions->Start();
      state->activity->Start();
      const std::string edge_address =
          HostPort(config.proxy.http_address, state->edge->port());
      state->edge_run_file = RunFilePath(context.data_dir, "edge");
      if (absl::Status written = WriteFileAtomically(
              state->edge_run_file,
              absl::StrCat("{\"service\":\"edge\",\"http\":\"", edge_address, "\",\"pid\":",
                           ::getpid(), "}\n"),
              0644);
          !written.ok()) {
        return written;
      }
      LogInfo("browser edge listening", {{"address", edge_address}});
    }
    std::vector<HostedService> hosted;
    EdgeServer* edge = state->edge.get();
    hosted.push_back(HostedService{
        .full_name = "tidepool.proxy.v1.ProxyAdminService",
        .pending_note = "",
        .service = std::make_unique<ProxyAdminServiceImpl>(
            state->egress.get(), edge, absl::StrCat("proxy-", ::getpid())),
        .on_stopped = [state] { state->Stop(); },
        .state = state});
    return hosted;
  };
  return definition;
}

}  // namespace tidepool::proxy
