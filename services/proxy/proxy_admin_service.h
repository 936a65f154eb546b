#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "lib/service_main.h"
#include "tidepool/proxy/v1/proxy_admin_service.grpc.pb.h"

namespace tidepool::proxy {

// The gRPC adapter for tidepool.proxy.v1.ProxyAdminService. Nothing is built yet: every method
// falls through to the generated base class, and the server runner turns its UNIMPLEMENTED reply
// into one that says what is missing (the browser edge and egress proxy arrive with issue #8).
class ProxyAdminServiceImpl final : public v1::ProxyAdminService::Service {};

// The service as the platform hosts it (used by tidepool-proxy and the all-in-one tidepool).
ServiceDefinition ProxyServiceDefinition();

}  // namespace tidepool::proxy
