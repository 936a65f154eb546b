#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/audit_client.h"
#include "lib/cli_flags.h"
#include "lib/clock.h"
#include "lib/platform_config.h"
#include "lib/server_runner.h"

namespace tidepool {

// What a service factory gets to build its objects. References outlive the service.
struct ServiceContext {
  const PlatformConfig& config;
  // The resolved data directory; the service keeps its state under <data_dir>/<name>/.
  const std::string& data_dir;
  Clock& clock;
  // The registry this service's /metrics serves; register service metrics here.
  prometheus::Registry& metrics;
  // Where the service records audit events (an AuditClient speaking to the audit service as
  // this service's identity, with its spool under <data_dir>/<name>/). Null for the audit
  // service itself, which writes its own log.
  AuditEmitter* audit;
  // This service's mutual-TLS identity, for calling other platform services
  // (DialPlatformService with ResolveServiceTarget). Valid only during create(): copy it.
  // Null in tests that do not need it.
  const TlsIdentity* identity = nullptr;
};

// Builds one platform service: its gRPC implementation(s), ready to host.
struct ServiceDefinition {
  // The platform component name, one of ServiceNames() ("auth", ...).
  std::string name;
  std::function<absl::StatusOr<std::vector<HostedService>>(const ServiceContext&)> create;
};

// Runs `services` in this process until SIGTERM or SIGINT: loads config, prepares the data
// directory and the mutual-TLS identities, starts one ServerRunner per service on its
// configured ports, writes <data_dir>/run/<name>.json (where tidepoolctl finds it), prints
// where everything is, and on a signal shuts every service down within the configured grace.
// Returns the process exit code; a bad config or unusable port prints one line and returns
// kExitUsage. `program` prefixes messages.
int RunServices(const std::string& program, const ServerFlags& flags,
                const std::vector<ServiceDefinition>& services);

// main() of a single-service binary: handles --help and --version, parses ServerFlags and
// calls RunServices(). Returns the exit code.
int ServerBinaryMain(const std::string& program, int argc, char** argv,
                     const std::vector<ServiceDefinition>& services);

}  // namespace tidepool
