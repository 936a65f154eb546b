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
    hosted.push_back(HostedService{
        .full_name = "tidepool.secrets.v1.SecretsService",
        .pending_note = "bring-your-own keys and the provider catalogue arrive with issue #5",
        .service = std::make_unique<SecretsServiceImpl>()});
    return hosted;
  };
  return definition;
}

}  // namespace tidepool::secrets
