#include "services/proxy/proxy_admin_service.h"

#include <memory>
#include <utility>

namespace tidepool::proxy {

ServiceDefinition ProxyServiceDefinition() {
  ServiceDefinition definition;
  definition.name = "proxy";
  definition.create =
      [](const ServiceContext& /*context*/) -> absl::StatusOr<std::vector<HostedService>> {
    std::vector<HostedService> hosted;
    hosted.push_back(
        HostedService{.full_name = "tidepool.proxy.v1.ProxyAdminService",
                      .pending_note = "the browser edge and egress proxy arrive with issue #8",
                      .service = std::make_unique<ProxyAdminServiceImpl>()});
    return hosted;
  };
  return definition;
}

}  // namespace tidepool::proxy
