#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/service_main.h"
#include "services/proxy/edge_server.h"
#include "services/proxy/egress_proxy.h"
#include "tidepool/proxy/v1/proxy_admin_service.grpc.pb.h"

namespace tidepool::proxy {

// The gRPC adapter for tidepool.proxy.v1.ProxyAdminService: this replica's browser
// connections and routes (from the edge) and its egress policy and counters (from the egress
// proxy). Either may be null (not running here), which the RPCs answer with UNAVAILABLE.
class ProxyAdminServiceImpl final : public v1::ProxyAdminService::Service {
 public:
  ProxyAdminServiceImpl(const EgressProxy* egress, EdgeServer* edge, std::string instance)
      : egress_(egress), edge_(edge), instance_(std::move(instance)) {}

  grpc::Status ListConnections(grpc::ServerContext* context,
                               const v1::ListConnectionsRequest* request,
                               v1::ListConnectionsResponse* response) override;
  grpc::Status CloseConnections(grpc::ServerContext* context,
                                const v1::CloseConnectionsRequest* request,
                                v1::CloseConnectionsResponse* response) override;
  grpc::Status ListRoutes(grpc::ServerContext* context, const v1::ListRoutesRequest* request,
                          v1::ListRoutesResponse* response) override;
  grpc::Status GetEgressPolicy(grpc::ServerContext* context,
                               const v1::GetEgressPolicyRequest* request,
                               v1::GetEgressPolicyResponse* response) override;

 private:
  const EgressProxy* egress_;
  EdgeServer* edge_;
  const std::string instance_;
};

// Parses proxy.egress_allowlist entries ("host:port") into rules of origin "config".
// INVALID_ARGUMENT naming the entry for a malformed one (see ValidateEgressRules).
absl::StatusOr<std::vector<EgressRule>> EgressRulesFromConfig(
    const std::vector<std::string>& allowlist);

// The egress rule (origin "model_server") for the shared model server at `base_url`, which the
// allowlist carries by default; nullopt when no model server is configured. INVALID_ARGUMENT for
// a malformed URL.
absl::StatusOr<std::optional<EgressRule>> ModelServerRule(const std::string& base_url);

// The service as the platform hosts it (used by tidepool-proxy and the all-in-one tidepool):
// the admin surface, and the egress proxy on <data_dir>/egress/egress.sock, which every
// workspace's relay reaches (credentials resolved through the provisioner, denials audited).
ServiceDefinition ProxyServiceDefinition();

}  // namespace tidepool::proxy
