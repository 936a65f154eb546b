#include "services/proxy/proxy_admin_service.h"

#include <filesystem>
#include <map>
#include <memory>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/time_util.h"
#include "lib/log.h"
#include "lib/platform_client.h"
#include "tidepool/provisioner/v1/workspace_service.grpc.pb.h"

namespace tidepool::proxy {
namespace {

namespace commonpb = ::tidepool::common::v1;
namespace provisionerpb = ::tidepool::provisioner::v1;

// Resolves egress credentials through the provisioner, remembering each answer until the
// credential expires (a relay mints one per connection, each valid 10 minutes).
class EgressCredentialResolver {
 public:
  EgressCredentialResolver(TlsIdentity self, std::string data_dir, ServiceEndpointConfig target)
      : self_(std::move(self)), data_dir_(std::move(data_dir)), target_(std::move(target)) {}

  absl::StatusOr<EgressIdentity> Resolve(const std::string& token) {
    const absl::Time now = absl::Now();
    {
      absl::MutexLock lock(&mu_);
      if (auto it = cache_.find(token); it != cache_.end() && it->second.second > now) {
        return it->second.first;
      }
    }
    absl::StatusOr<std::string> target = ResolveServiceTarget(data_dir_, "provisioner", target_);
    if (!target.ok()) return absl::UnavailableError("the provisioner cannot be found");
    auto stub = provisionerpb::WorkspaceService::NewStub(DialPlatformService(self_, *target));
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
  const TlsIdentity self_;
  const std::string data_dir_;
  const ServiceEndpointConfig target_;
  absl::Mutex mu_;
  std::map<std::string, std::pair<EgressIdentity, absl::Time>> cache_ ABSL_GUARDED_BY(mu_);
};

struct ProxyState {
  std::unique_ptr<EgressCredentialResolver> resolver;
  std::unique_ptr<EgressProxy> egress;
};

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

ServiceDefinition ProxyServiceDefinition() {
  ServiceDefinition definition;
  definition.name = "proxy";
  definition.create =
      [](const ServiceContext& context) -> absl::StatusOr<std::vector<HostedService>> {
    auto state = std::make_shared<ProxyState>();
    if (context.identity != nullptr) {
      absl::StatusOr<std::vector<EgressRule>> rules =
          EgressRulesFromConfig(context.config.proxy.egress_allowlist);
      if (!rules.ok()) return rules.status();
      const std::string dir = context.data_dir + "/egress";
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      state->resolver = std::make_unique<EgressCredentialResolver>(
          *context.identity, context.data_dir, context.config.Service("provisioner"));
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
        event.set_reason_code(decision.reason.substr(0, 64));
        (*event.mutable_attributes())["workspace_id"] = decision.workspace_id;
        (*event.mutable_attributes())["destination"] = decision.destination;
        audit->Emit(std::move(event));
      };
      absl::StatusOr<std::unique_ptr<EgressProxy>> egress = EgressProxy::Start(std::move(options));
      if (!egress.ok()) return egress.status();
      state->egress = *std::move(egress);
    }
    std::vector<HostedService> hosted;
    hosted.push_back(HostedService{
        .full_name = "tidepool.proxy.v1.ProxyAdminService",
        .pending_note = "the browser edge arrives with issue #8",
        .service = std::make_unique<ProxyAdminServiceImpl>(state->egress.get()),
        .on_stopped =
            [state] {
              if (state->egress != nullptr) state->egress->Stop();
            },
        .state = state});
    return hosted;
  };
  return definition;
}

}  // namespace tidepool::proxy
