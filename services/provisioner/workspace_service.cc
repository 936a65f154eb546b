#include "services/provisioner/workspace_service.h"

#include <memory>
#include <utility>

namespace tidepool::provisioner {

ServiceDefinition ProvisionerServiceDefinition() {
  ServiceDefinition definition;
  definition.name = "provisioner";
  definition.create =
      [](const ServiceContext& /*context*/) -> absl::StatusOr<std::vector<HostedService>> {
    std::vector<HostedService> hosted;
    hosted.push_back(HostedService{
        .full_name = "tidepool.provisioner.v1.WorkspaceService",
        .pending_note = "workspace lifecycle and the local sandbox runtime arrive with issue #6",
        .service = std::make_unique<WorkspaceServiceImpl>()});
    return hosted;
  };
  return definition;
}

}  // namespace tidepool::provisioner
