#include "services/scaler/scaler_service.h"

#include <memory>
#include <utility>

namespace tidepool::scaler {

ServiceDefinition ScalerServiceDefinition() {
  ServiceDefinition definition;
  definition.name = "scaler";
  definition.create =
      [](const ServiceContext& /*context*/) -> absl::StatusOr<std::vector<HostedService>> {
    std::vector<HostedService> hosted;
    hosted.push_back(
        HostedService{.full_name = "tidepool.scaler.v1.ScalerService",
                      .pending_note = "idle sleep and schedule-aware wake arrive with issue #9",
                      .service = std::make_unique<ScalerServiceImpl>()});
    return hosted;
  };
  return definition;
}

}  // namespace tidepool::scaler
