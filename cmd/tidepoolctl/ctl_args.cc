#include "cmd/tidepoolctl/ctl_args.h"

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/platform_client.h"

namespace tidepool::ctl {

absl::StatusOr<CtlArgs> CtlArgs::Parse(const std::vector<std::string>& args,
                                       const std::set<std::string>& with_values,
                                       const std::set<std::string>& switches) {
  CtlArgs parsed;
  std::vector<std::string> server_args;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (!absl::StartsWith(arg, "--")) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", arg, "\""));
    }
    std::string name = arg.substr(2);
    std::string value;
    bool inline_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    if (name == "config" || name == "data-dir") {
      server_args.push_back("--" + name);
      if (inline_value) {
        server_args.push_back(value);
      } else if (i + 1 < args.size()) {
        server_args.push_back(args[++i]);
      }
      continue;
    }
    if (switches.count(name) > 0 && !inline_value) {
      parsed.values_[name] = "true";
      continue;
    }
    if (with_values.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (!inline_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      value = args[++i];
    }
    parsed.values_[name] = value;
  }
  absl::StatusOr<ServerFlags> flags = ParseServerFlags(server_args);
  if (!flags.ok()) {
    return flags.status();
  }
  parsed.server_flags_ = *flags;
  return parsed;
}

std::string CtlArgs::Get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

absl::StatusOr<CtlContext> LoadCtlContext(const ServerFlags& flags) {
  CtlContext context;
  absl::StatusOr<PlatformConfig> config = LoadConfigForFlags(flags, &context.data_dir);
  if (!config.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config error: ", config.status().message()));
  }
  context.config = *std::move(config);
  absl::StatusOr<TlsIdentity> self =
      LoadTlsIdentity(TlsDir(context.config, context.data_dir), "tidepoolctl");
  if (!self.ok()) {
    return self.status();
  }
  context.self = *std::move(self);
  return context;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> DialService(const CtlContext& context,
                                                           const std::string& service) {
  absl::StatusOr<RunInfo> info = ReadRunInfo(context.data_dir, service);
  if (!info.ok()) {
    return info.status();
  }
  return DialPlatformService(context.self, info->grpc);
}

std::string Printable(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) {
      absl::StrAppend(&out, "\\x", absl::BytesToHexString(std::string(1, static_cast<char>(c))));
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

}  // namespace tidepool::ctl
