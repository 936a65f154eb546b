#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "lib/service_main.h"
#include "services/proxy/egress_proxy.h"
#include "tidepool/proxy/v1/proxy_admin_service.grpc.pb.h"

namespace tidepool::proxy {

// The gRPC adapter for tidepool.proxy.v1.ProxyAdminService. GetEgressPolicy is built (the
// egress proxy's rules and per-workspace counters); the other methods fall through to the
// generated base class, and the server runner turns their UNIMPLEMENTED reply into one that
// says what is missing (the browser edge arrives with issue #8).
class ProxyAdminServiceImpl final : public v1::ProxyAdminService::Service {
 public:
  explicit ProxyAdminServiceImpl(const EgressProxy* egress) : egress_(egress) {}

  grpc::Status GetEgressPolicy(grpc::ServerContext* context,
                               const v1::GetEgressPolicyRequest* request,
                               v1::GetEgressPolicyResponse* response) override;

 private:
  const EgressProxy* egress_;
};

// Parses proxy.egress_allowlist entries ("host:port") into rules of origin "config".
// INVALID_ARGUMENT naming the entry for a malformed one (see ValidateEgressRules).
absl::StatusOr<std::vector<EgressRule>> EgressRulesFromConfig(
    const std::vector<std::string>& allowlist);

// The service as the platform hosts it (used by tidepool-proxy and the all-in-one tidepool):
// the admin surface, and the egress proxy on <data_dir>/egress/egress.sock, which every
// workspace's relay reaches (credentials resolved through the provisioner, denials audited).
ServiceDefinition ProxyServiceDefinition();

}  // namespace tidepool::proxy
