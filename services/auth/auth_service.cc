#include "services/auth/auth_service.h"

#include <memory>
#include <utility>

namespace tidepool::auth {

ServiceDefinition AuthServiceDefinition() {
  ServiceDefinition definition;
  definition.name = "auth";
  definition.create =
      [](const ServiceContext& /*context*/) -> absl::StatusOr<std::vector<HostedService>> {
    std::vector<HostedService> hosted;
    hosted.push_back(
        HostedService{.full_name = "tidepool.auth.v1.AuthService",
                      .pending_note = "sign-in, sessions, users and invites arrive with issue #4",
                      .service = std::make_unique<AuthServiceImpl>()});
    return hosted;
  };
  return definition;
}

}  // namespace tidepool::auth
