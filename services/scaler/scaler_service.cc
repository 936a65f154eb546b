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
    hosted.push_back(HostedService{"tidepool.scaler.v1.ScalerService",
                                   "idle sleep and schedule-aware wake arrive with issue #9",
                                   std::make_unique<ScalerServiceImpl>()});
    return hosted;
  };
  return definition;
}

}  // namespace tidepool::scaler
