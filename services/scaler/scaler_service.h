#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "lib/service_main.h"
#include "tidepool/scaler/v1/scaler_service.grpc.pb.h"

namespace tidepool::scaler {

// The gRPC adapter for tidepool.scaler.v1.ScalerService. Nothing is built yet: every method falls
// through to the generated base class, and the server runner turns its UNIMPLEMENTED reply into one
// that says what is missing (idle sleep and schedule-aware wake arrive with issue #9).
class ScalerServiceImpl final : public v1::ScalerService::Service {};

// The service as the platform hosts it (used by tidepool-scaler and the all-in-one tidepool).
ServiceDefinition ScalerServiceDefinition();

}  // namespace tidepool::scaler
