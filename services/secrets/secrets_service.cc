#include "services/secrets/secrets_service.h"

#include <memory>
#include <utility>

namespace tidepool::secrets {

ServiceDefinition SecretsServiceDefinition() {
  ServiceDefinition definition;
  definition.name = "secrets";
  definition.create =
      [](const ServiceContext& /*context*/) -> absl::StatusOr<std::vector<HostedService>> {
    std::vector<HostedService> hosted;
    hosted.push_back(
        HostedService{"tidepool.secrets.v1.SecretsService",
                      "bring-your-own keys and the provider catalogue arrive with issue #5",
                      std::make_unique<SecretsServiceImpl>()});
    return hosted;
  };
  return definition;
}

}  // namespace tidepool::secrets
