#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/platform_config.h"

namespace tidepool {

// Exit codes shared by every binary.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;  // bad flags, bad config, a port that cannot be used

// Command-line options every server binary (and tidepoolctl) accepts.
struct ServerFlags {
  std::string config_path;  // --config FILE
  std::string data_dir;     // --data-dir DIR
};

// Parses --config FILE, --data-dir DIR (and the --flag=value forms) from args.
// Returns INVALID_ARGUMENT naming the offending argument.
absl::StatusOr<ServerFlags> ParseServerFlags(const std::vector<std::string>& args);

// The usage text of the server flags, for --help.
std::string ServerFlagsHelp();

// Loads the config and resolves the data directory to an absolute path (flag, then the
// config's platform.data_dir, then DefaultDataDir()). Errors are one line, ready to print.
absl::StatusOr<PlatformConfig> LoadConfigForFlags(const ServerFlags& flags, std::string* data_dir);

// The directory holding the CA and certificates for a config and data directory.
std::string TlsDir(const PlatformConfig& config, const std::string& data_dir);

}  // namespace tidepool
