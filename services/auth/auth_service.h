#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "lib/service_main.h"
#include "tidepool/auth/v1/auth_service.grpc.pb.h"

namespace tidepool::auth {

// The gRPC adapter for tidepool.auth.v1.AuthService. Nothing is built yet: every method falls
// through to the generated base class, and the server runner turns its UNIMPLEMENTED reply into one
// that says what is missing (sign-in, sessions, users and invites arrive with issue #4).
class AuthServiceImpl final : public v1::AuthService::Service {};

// The service as the platform hosts it (used by tidepool-auth and the all-in-one tidepool).
ServiceDefinition AuthServiceDefinition();

}  // namespace tidepool::auth
