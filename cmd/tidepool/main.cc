// tidepool: the all-in-one binary. `tidepool up` runs the six platform services in one process
// on loopback, the embedded default.
#include <iostream>
#include <string>
#include <vector>

#include "lib/platform_config.h"
#include "lib/service_main.h"
#include "services/audit/audit_service.h"
#include "services/auth/auth_service.h"
#include "services/provisioner/workspace_service.h"
#include "services/proxy/proxy_admin_service.h"
#include "services/scaler/scaler_service.h"
#include "services/secrets/secrets_service.h"

namespace {

constexpr char kUsage[] =
    "usage: tidepool <command> [flags]\n"
    "\n"
    "commands:\n"
    "  up [--config FILE] [--data-dir DIR]   run every platform service in this process\n"
    "  config check [--config FILE]          validate a tidepool.yaml and exit\n"
    "  config keys                           list every setting tidepool.yaml accepts\n"
    "  version                               print the version\n"
    "\n"
    "flags:\n";

std::vector<tidepool::ServiceDefinition> AllServices() {
  // Start order: audit first (everyone reports to it), the proxy last (it fronts the rest).
  return {tidepool::audit::AuditServiceDefinition(),
          tidepool::auth::AuthServiceDefinition(),
          tidepool::secrets::SecretsServiceDefinition(),
          tidepool::provisioner::ProvisionerServiceDefinition(),
          tidepool::scaler::ScalerServiceDefinition(),
          tidepool::proxy::ProxyServiceDefinition()};
}

int ConfigCommand(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::cerr << "tidepool config: expected 'check' or 'keys'\n";
    return tidepool::kExitUsage;
  }
  if (args[0] == "keys") {
    for (const std::string& key : tidepool::PlatformConfigKeys()) {
      std::cout << key << "\n";
    }
    return tidepool::kExitOk;
  }
  if (args[0] != "check") {
    std::cerr << "tidepool config: unknown command \"" << args[0] << "\"\n";
    return tidepool::kExitUsage;
  }
  absl::StatusOr<tidepool::ServerFlags> flags =
      tidepool::ParseServerFlags(std::vector<std::string>(args.begin() + 1, args.end()));
  if (!flags.ok()) {
    std::cerr << "tidepool config check: " << flags.status().message() << "\n";
    return tidepool::kExitUsage;
  }
  std::string data_dir;
  absl::StatusOr<tidepool::PlatformConfig> config = tidepool::LoadConfigForFlags(*flags, &data_dir);
  if (!config.ok()) {
    std::cerr << "tidepool: config error: " << config.status().message() << "\n";
    return tidepool::kExitUsage;
  }
  std::cout << config->source << ": ok\n";
  return tidepool::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    (args.empty() ? std::cerr : std::cout) << kUsage << tidepool::ServerFlagsHelp();
    return args.empty() ? tidepool::kExitUsage : tidepool::kExitOk;
  }
  const std::string command = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (command == "version" || command == "--version") {
    std::cout << "tidepool " << TIDEPOOL_VERSION << "\n";
    return tidepool::kExitOk;
  }
  if (command == "config") {
    return ConfigCommand(rest);
  }
  if (command == "up") {
    absl::StatusOr<tidepool::ServerFlags> flags = tidepool::ParseServerFlags(rest);
    if (!flags.ok()) {
      std::cerr << "tidepool up: " << flags.status().message() << " (see tidepool --help)\n";
      return tidepool::kExitUsage;
    }
    return tidepool::RunServices("tidepool", *flags, AllServices());
  }
  std::cerr << "tidepool: unknown command \"" << command << "\" (see tidepool --help)\n";
  return tidepool::kExitUsage;
}
