#include "lib/cli_flags.h"

#include <filesystem>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace tidepool {

std::string TlsDir(const PlatformConfig& config, const std::string& data_dir) {
  return config.tls_dir.empty() ? absl::StrCat(data_dir, "/pki") : config.tls_dir;
}

absl::StatusOr<ServerFlags> ParseServerFlags(const std::vector<std::string>& args) {
  ServerFlags flags;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    std::string* target = nullptr;
    std::string name;
    for (const auto& [flag, field] :
         {std::pair<const char*, std::string*>{"--config", &flags.config_path},
          std::pair<const char*, std::string*>{"--data-dir", &flags.data_dir}}) {
      if (arg == flag || absl::StartsWith(arg, absl::StrCat(flag, "="))) {
        target = field;
        name = flag;
      }
    }
    if (target == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown argument \"", arg, "\""));
    }
    if (arg == name) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat(name, " needs a value"));
      }
      *target = args[++i];
    } else {
      *target = arg.substr(name.size() + 1);
    }
    if (target->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(name, " needs a non-empty value"));
    }
  }
  return flags;
}

absl::StatusOr<PlatformConfig> LoadConfigForFlags(const ServerFlags& flags, std::string* data_dir) {
  absl::StatusOr<PlatformConfig> config = LoadPlatformConfig(flags.config_path);
  if (!config.ok()) {
    return config.status();
  }
  if (!flags.data_dir.empty()) {
    *data_dir = flags.data_dir;
  } else if (!config->data_dir.empty()) {
    *data_dir = config->data_dir;
  } else {
    *data_dir = DefaultDataDir();
  }
  std::error_code ec;
  *data_dir = std::filesystem::absolute(*data_dir, ec).lexically_normal().string();
  if (!data_dir->empty() && data_dir->back() == '/' && data_dir->size() > 1) {
    data_dir->pop_back();
  }
  return config;
}

std::string ServerFlagsHelp() {
  return "  --config FILE    tidepool.yaml to load (default: built-in defaults)\n"
         "  --data-dir DIR   where all state lives (default: $TIDEPOOL_DATA_DIR or\n"
         "                   ~/.local/share/tidepool)\n";
}

}  // namespace tidepool
