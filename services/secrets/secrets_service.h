#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "lib/service_main.h"
#include "tidepool/secrets/v1/secrets_service.grpc.pb.h"

namespace tidepool::secrets {

// The gRPC adapter for tidepool.secrets.v1.SecretsService. Nothing is built yet: every method falls
// through to the generated base class, and the server runner turns its UNIMPLEMENTED reply into one
// that says what is missing (bring-your-own keys and the provider catalogue arrive with issue #5).
class SecretsServiceImpl final : public v1::SecretsService::Service {};

// The service as the platform hosts it (used by tidepool-secrets and the all-in-one tidepool).
ServiceDefinition SecretsServiceDefinition();

}  // namespace tidepool::secrets
