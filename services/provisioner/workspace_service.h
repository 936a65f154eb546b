#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "lib/service_main.h"
#include "tidepool/provisioner/v1/workspace_service.grpc.pb.h"

namespace tidepool::provisioner {

// The gRPC adapter for tidepool.provisioner.v1.WorkspaceService. Nothing is built yet: every method
// falls through to the generated base class, and the server runner turns its UNIMPLEMENTED reply
// into one that says what is missing (workspace lifecycle and the local sandbox runtime arrive with
// issue #6).
class WorkspaceServiceImpl final : public v1::WorkspaceService::Service {};

// The service as the platform hosts it (used by tidepool-provisioner and the all-in-one tidepool).
ServiceDefinition ProvisionerServiceDefinition();

}  // namespace tidepool::provisioner
