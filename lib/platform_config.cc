#include "lib/platform_config.h"

#include <cctype>
#include <cstdlib>
#include <set>
#include <utility>

#include <boost/asio/ip/network_v4.hpp>
#include <boost/asio/ip/network_v6.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "lib/config_loader.h"
#include "yaml-cpp/yaml.h"

namespace tidepool {
namespace {

constexpr int kFirstGrpcPort = 7401;
constexpr int kFirstMetricsPort = 9401;

std::string CheckAddress(const std::string& value) {
  if (value.empty()) {
    return "must not be empty";
  }
  for (char c : value) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == ':' || c == '-' ||
          c == '[' || c == ']')) {
      return absl::StrCat("must be a host name or IP address, got \"", value, "\"");
    }
  }
  return "";
}

std::string CheckPath(const std::string& value) {
  if (value.find('\0') != std::string::npos) {
    return "must not contain NUL";
  }
  return "";
}

// A user name as useradd accepts it, or "uid:gid" with neither 0.
std::string CheckSandboxUser(const std::string& value) {
  if (value.empty()) return "";
  if (const size_t colon = value.find(':'); colon != std::string::npos) {
    int uid = 0;
    int gid = 0;
    if (absl::SimpleAtoi(value.substr(0, colon), &uid) &&
        absl::SimpleAtoi(value.substr(colon + 1), &gid) && uid > 0 && gid > 0) {
      return "";
    }
    return absl::StrCat("must be a user name or uid:gid (neither 0), got \"", value, "\"");
  }
  const bool name = value.size() <= 32 &&
                    (std::islower(static_cast<unsigned char>(value[0])) || value[0] == '_') &&
                    value.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") ==
                        std::string::npos;
  return name && value != "root"
             ? ""
             : absl::StrCat("must be a user name other than root, or uid:gid, got \"", value, "\"");
}

void BuildSchema(PlatformConfig& config, ConfigSchema& schema) {
  schema.String("platform.data_dir", &config.data_dir, CheckPath);
  schema.Duration("platform.shutdown_grace", &config.shutdown_grace, absl::ZeroDuration(),
                  absl::Seconds(4));
  schema.Enum("log.level", &config.log_level, {"debug", "info", "warning", "error"});
  schema.Bool("tls.auto_generate", &config.tls_auto_generate);
  schema.String("tls.dir", &config.tls_dir, CheckPath);
  schema.String("platform.public_url", &config.public_url, [](const std::string& v) {
    return (v.rfind("http://", 0) == 0 || v.rfind("https://", 0) == 0) && v.back() != '/' &&
                   v.find_first_of(" \t\n#?") == std::string::npos
               ? ""
               : "must be an http(s) URL without a trailing slash, query or fragment";
  });
  schema.String("auth.admin_email", &config.auth.admin_email, [](const std::string& v) {
    const size_t at = v.find('@');
    return at != std::string::npos && at > 0 && v.find('.', at) != std::string::npos &&
                   v.find_first_of(" \t\n") == std::string::npos
               ? ""
               : "must be an e-mail address";
  });
  schema.Duration("auth.session_token_lifetime", &config.auth.session_token_lifetime,
                  absl::Minutes(1), absl::Hours(1));
  schema.Duration("auth.session_lifetime", &config.auth.session_lifetime, absl::Hours(1),
                  absl::Hours(168));
  schema.Bool("auth.local_accounts", &config.auth.local_accounts);
  schema.Bool("auth.invite_required", &config.auth.invite_required);
  schema.Custom("auth.providers", [&config](const YAML::Node& node, const std::string& where) {
    return ParseIdentityProviders(node, where, &config.auth.providers);
  });
  schema.String("provisioner.profiles_dir", &config.provisioner.profiles_dir, CheckPath);
  schema.String("provisioner.default_profile", &config.provisioner.default_profile,
                [](const std::string& v) { return v.empty() ? "must not be empty" : ""; });
  schema.String("provisioner.supervisor_binary", &config.provisioner.supervisor_binary, CheckPath);
  schema.String("provisioner.tools_dir", &config.provisioner.tools_dir, CheckPath);
  schema.Int("provisioner.memory_limit_mib", &config.provisioner.memory_limit_mib, 64, 1 << 20);
  schema.Int("provisioner.pids_limit", &config.provisioner.pids_limit, 16, 1 << 20);
  schema.Int("provisioner.cpu_millicores", &config.provisioner.cpu_millicores, 100, 256000);
  schema.Int("provisioner.disk_quota_mib", &config.provisioner.disk_quota_mib, 64, 1 << 30);
  schema.Bool("provisioner.hard_disk_quota", &config.provisioner.hard_disk_quota);
  schema.Int("provisioner.warm_spares", &config.provisioner.warm_spares, 0, 64);
  schema.String("provisioner.sandbox_user", &config.provisioner.sandbox_user,
                [](const std::string& v) { return CheckSandboxUser(v); });
  schema.StringList("proxy.egress_allowlist", &config.proxy.egress_allowlist,
                    [](const std::string& v) -> std::string {
                      const size_t colon = v.rfind(':');
                      int port = 0;
                      if (colon == std::string::npos || colon == 0 ||
                          !absl::SimpleAtoi(v.substr(colon + 1), &port) || port < 1 ||
                          port > 65535) {
                        return "must be host:port, e.g. api.openai.com:443";
                      }
                      return "";
                    });
  schema.String("proxy.http_address", &config.proxy.http_address,
                [](const std::string& v) { return v.empty() ? "must not be empty" : ""; });
  schema.Int("proxy.http_port", &config.proxy.http_port, 0, 65535);
  schema.Bool("proxy.dev_mode", &config.proxy.dev_mode);
  schema.String("proxy.preview_domain", &config.proxy.preview_domain, [](const std::string& v) {
    for (const char c : v) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') {
        return "must be a bare domain name such as preview.example.net (no scheme, port or path)";
      }
    }
    return "";
  });
  schema.String("proxy.web_root", &config.proxy.web_root, CheckPath);
  schema.Int("proxy.max_websockets_per_user", &config.proxy.max_websockets_per_user, 1, 100000);
  schema.Duration("proxy.websocket_idle_timeout", &config.proxy.websocket_idle_timeout,
                  absl::Seconds(10), absl::Hours(24));
  schema.StringList("proxy.trusted_forwarders", &config.proxy.trusted_forwarders,
                    [](const std::string& v) -> std::string {
                      boost::system::error_code ec;
                      if (v.find(':') == std::string::npos) {
                        (void)boost::asio::ip::make_network_v4(v, ec);
                      } else {
                        (void)boost::asio::ip::make_network_v6(v, ec);
                      }
                      return ec ? "must be an address range such as 10.0.0.0/8 or fd00::/8" : "";
                    });
  schema.Duration("proxy.activity_flush_interval", &config.proxy.activity_flush_interval,
                  absl::Seconds(1), absl::Minutes(5));
  schema.Duration("scaler.idle_timeout", &config.scaler.idle_timeout, absl::Minutes(1),
                  absl::Hours(24 * 7));
  schema.Duration("scaler.check_interval", &config.scaler.check_interval, absl::Seconds(5),
                  absl::Minutes(10));
  schema.Int("scaler.capacity_cpu_millicores", &config.scaler.capacity_cpu_millicores, 0,
             1 << 30);
  schema.Int("scaler.capacity_memory_mib", &config.scaler.capacity_memory_mib, 0, 1 << 30);
  schema.String("model_server.base_url", &config.model_server.base_url,
                [](const std::string& v) -> std::string {
                  if (v.empty()) return "";
                  const size_t scheme = v.find("://");
                  const std::string rest = scheme == std::string::npos ? "" : v.substr(scheme + 3);
                  const std::string authority = rest.substr(0, rest.find('/'));
                  const size_t colon = authority.rfind(':');
                  const std::string port =
                      colon == std::string::npos ? "" : authority.substr(colon + 1);
                  const bool scheme_ok = absl::StartsWith(v, "http://") ||
                                         absl::StartsWith(v, "https://");
                  if (!scheme_ok || authority.empty() || authority.front() == ':' ||
                      authority.find_first_of("@?# ") != std::string::npos ||
                      (colon != std::string::npos &&
                       (port.empty() || port.size() > 5 ||
                        port.find_first_not_of("0123456789") != std::string::npos))) {
                    return "must be an http(s) URL such as http://10.0.0.5:8000/v1";
                  }
                  return "";
                });
  schema.String("model_server.default_model", &config.model_server.default_model);
  schema.Duration("audit.checkpoint_interval", &config.audit.checkpoint_interval, absl::Seconds(1),
                  absl::Seconds(60));
  schema.Int("audit.checkpoint_every_records", &config.audit.checkpoint_every_records, 1, 1000);
  schema.Bool("audit.checkpoint_append_only", &config.audit.checkpoint_append_only);
  schema.String(
      "secrets.master_key_file", &config.secrets.master_key_file, [](const std::string& v) {
        return v.empty() || (v.front() == '/' && CheckPath(v).empty())
                   ? ""
                   : "must be an absolute path (or empty for <data_dir>/secrets/master.key)";
      });
  schema.String("secrets.master_key_env", &config.secrets.master_key_env, [](const std::string& v) {
    const bool name_ok =
        v.size() <= 128 && (v.empty() || !std::isdigit(static_cast<unsigned char>(v[0]))) &&
        v.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == std::string::npos;
    return name_ok ? "" : "must be an environment variable name such as TIDEPOOL_MASTER_KEY";
  });
  schema.Int("secrets.max_value_bytes", &config.secrets.max_value_bytes, 256, 65536);
  schema.Int("secrets.max_secrets_per_user", &config.secrets.max_secrets_per_user, 1, 10000);
  schema.Custom(
      "secrets.auto_rotate_operations",
      [&config](const YAML::Node& node, const std::string& where) -> absl::Status {
        constexpr int64_t kMin = 1000000;
        constexpr int64_t kMax = 3865470566;
        int64_t value = 0;
        if (!node.IsScalar() || !absl::SimpleAtoi(node.Scalar(), &value) || value < kMin ||
            value > kMax) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, " must be an integer in [", kMin, ", ", kMax, "]",
              node.IsScalar() ? absl::StrCat(", got \"", node.Scalar().substr(0, 40), "\"")
                              : std::string()));
        }
        config.secrets.auto_rotate_operations = value;
        return absl::OkStatus();
      });
  schema.Duration("secrets.auto_rotate_interval", &config.secrets.auto_rotate_interval,
                  absl::Hours(24), absl::Hours(24 * 365));
  for (const std::string& name : ServiceNames()) {
    ServiceEndpointConfig& svc = config.services[name];
    schema.String(absl::StrCat(name, ".grpc_address"), &svc.grpc_address, CheckAddress);
    schema.Int(absl::StrCat(name, ".grpc_port"), &svc.grpc_port, 0, 65535);
    schema.String(absl::StrCat(name, ".metrics_address"), &svc.metrics_address, CheckAddress);
    schema.Int(absl::StrCat(name, ".metrics_port"), &svc.metrics_port, 0, 65535);
  }
}

// Checks rules that span keys. Port 0 (any free port) may repeat.
absl::Status CheckWhole(const PlatformConfig& config, absl::string_view name) {
  if (!config.auth.local_accounts && config.auth.providers.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": no way to sign in: 'auth.local_accounts' is false and 'auth.providers' is "
              "empty"));
  }
  if (!config.secrets.master_key_file.empty() && !config.secrets.master_key_env.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name,
                     ": set at most one of 'secrets.master_key_file' and "
                     "'secrets.master_key_env'"));
  }
  std::map<int, std::string> used;
  for (const std::string& svc : ServiceNames()) {
    const ServiceEndpointConfig& endpoint = config.Service(svc);
    for (const auto& [key, port] :
         {std::pair{absl::StrCat(svc, ".grpc_port"), endpoint.grpc_port},
          std::pair{absl::StrCat(svc, ".metrics_port"), endpoint.metrics_port}}) {
      if (port == 0) {
        continue;
      }
      auto [it, inserted] = used.emplace(port, key);
      if (!inserted) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": '", key, "' and '", it->second, "' both use port ", port));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PlatformConfig> Finish(PlatformConfig config, absl::string_view name) {
  absl::Status whole = CheckWhole(config, name);
  if (!whole.ok()) {
    return whole;
  }
  return config;
}

}  // namespace

PlatformConfig DefaultPlatformConfig() {
  PlatformConfig config;
  int i = 0;
  // Fixed, documented defaults (not start order) so ports stay stable as services are added.
  for (const char* name : {"auth", "provisioner", "secrets", "proxy", "scaler", "audit"}) {
    ServiceEndpointConfig& svc = config.services[name];
    svc.grpc_port = kFirstGrpcPort + i;
    svc.metrics_port = kFirstMetricsPort + i;
    ++i;
  }
  return config;
}

absl::StatusOr<PlatformConfig> LoadPlatformConfig(const std::string& path) {
  PlatformConfig config = DefaultPlatformConfig();
  if (path.empty()) {
    return config;
  }
  ConfigSchema schema;
  BuildSchema(config, schema);
  absl::Status status = LoadYamlFile(path, schema);
  if (!status.ok()) {
    return status;
  }
  config.source = path;
  return Finish(std::move(config), path);
}

absl::StatusOr<PlatformConfig> LoadPlatformConfigFromString(absl::string_view yaml,
                                                            absl::string_view name) {
  PlatformConfig config = DefaultPlatformConfig();
  ConfigSchema schema;
  BuildSchema(config, schema);
  absl::Status status = LoadYamlString(yaml, name, schema);
  if (!status.ok()) {
    return status;
  }
  config.source = std::string(name);
  return Finish(std::move(config), name);
}

std::vector<std::string> PlatformConfigKeys() {
  PlatformConfig config = DefaultPlatformConfig();
  ConfigSchema schema;
  BuildSchema(config, schema);
  return schema.Keys();
}

std::string DefaultDataDir() {
  if (const char* dir = std::getenv("TIDEPOOL_DATA_DIR"); dir != nullptr && *dir != '\0') {
    return dir;
  }
  if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg != nullptr && *xdg != '\0') {
    return absl::StrCat(xdg, "/tidepool");
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return absl::StrCat(home, "/.local/share/tidepool");
  }
  return "/var/lib/tidepool";
}

}  // namespace tidepool
