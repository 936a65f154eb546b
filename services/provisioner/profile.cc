#include "services/provisioner/profile.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/file_util.h"
#include "lib/workspace_credential.h"
#include "yaml-cpp/yaml.h"

namespace tidepool::provisioner {

const std::set<std::string>& TemplatePlaceholders() {
  static const auto* const kNames = new std::set<std::string>{
      "workspace_id",     "owner_user_id",      "timezone",     "profile",
      "tool_credential",  "model_server_url",   "model_server_model",
      "capabilities",     "public_origin",      "egress_proxy_url"};
  return *kNames;
}

namespace {

// Checks that `text` uses only known placeholders.
absl::Status CheckTemplate(absl::string_view text) {
  std::map<std::string, std::string> probe;
  for (const std::string& name : TemplatePlaceholders()) probe[name] = "x";
  return RenderTemplate(text, probe).status();
}

absl::Status Bad(absl::string_view source, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", message));
}

bool SafeRelativePath(const std::string& path) {
  if (path.empty() || path.size() > 255 || path.front() == '/') return false;
  for (const auto& part : std::filesystem::path(path)) {
    if (part == ".." || part == ".") return false;
  }
  return path.find('\0') == std::string::npos;
}

}  // namespace

absl::StatusOr<std::string> RenderTemplate(absl::string_view text,
                                           const std::map<std::string, std::string>& values) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t open = text.find("{{", pos);
    if (open == absl::string_view::npos) {
      absl::StrAppend(&out, text.substr(pos));
      break;
    }
    const size_t close = text.find("}}", open + 2);
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError("a template has an unclosed {{");
    }
    absl::StrAppend(&out, text.substr(pos, open - pos));
    const std::string name(text.substr(open + 2, close - open - 2));
    auto it = values.find(name);
    if (it == values.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown template placeholder {{", name, "}}"));
    }
    out.append(it->second);
    pos = close + 2;
  }
  return out;
}

bool UsesPlaceholder(const ToolProfile& profile, absl::string_view name) {
  const std::string needle = absl::StrCat("{{", name, "}}");
  for (const StampedFileTemplate& file : profile.files) {
    if (absl::StrContains(file.text, needle)) return true;
  }
  for (const auto& [key, value] : profile.env) {
    if (absl::StrContains(value, needle)) return true;
  }
  return absl::StrContains(profile.identity.tool_base_path, needle);
}

absl::StatusOr<ToolProfile> ParseProfile(absl::string_view yaml, absl::string_view source) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return Bad(source, e.what());
  }
  if (!root.IsMap()) return Bad(source, "a profile must be a map");
  ToolProfile profile;
  static const std::set<std::string> kKeys = {
      "name",  "description",    "command",          "env",           "files", "health",
      "ports", "schedule_store", "identity_headers", "work_processes", "min_memory_mib",
      "min_cpu_millicores",
      "schedule_format", "owner_ready_path"};
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string key = it->first.as<std::string>("");
    if (!kKeys.count(key)) return Bad(source, absl::StrCat("unknown key '", key, "'"));
  }
  if (!root["name"].IsScalar()) return Bad(source, "needs a name");
  profile.name = root["name"].Scalar();
  if (root["description"].IsScalar()) profile.description = root["description"].Scalar();
  if (!root["command"].IsSequence() || root["command"].size() == 0) {
    return Bad(source, "needs a command (a list: the program and its arguments)");
  }
  for (const auto& arg : root["command"]) {
    if (!arg.IsScalar()) return Bad(source, "command items must be strings");
    profile.command.push_back(arg.Scalar());
  }
  if (profile.command.front().empty() || profile.command.front().front() != '/') {
    return Bad(source, "the command's program must be an absolute path");
  }
  if (root["env"]) {
    if (!root["env"].IsMap()) return Bad(source, "env must be a map");
    for (auto it = root["env"].begin(); it != root["env"].end(); ++it) {
      if (!it->second.IsScalar()) return Bad(source, "env values must be strings");
      if (absl::Status ok = CheckTemplate(it->second.Scalar()); !ok.ok()) {
        return Bad(source, absl::StrCat("env ", it->first.Scalar(), ": ", ok.message()));
      }
      profile.env[it->first.Scalar()] = it->second.Scalar();
    }
  }
  if (root["files"]) {
    if (!root["files"].IsSequence()) return Bad(source, "files must be a list");
    for (const auto& file : root["files"]) {
      if (!file.IsMap() || !file["path"].IsScalar() || !file["template"].IsScalar()) {
        return Bad(source, "each file needs path and template");
      }
      for (const auto& key : file) {
        const std::string name = key.first.as<std::string>("");
        if (name != "path" && name != "template" && name != "install_to" && name != "mode" &&
            name != "merge_keys") {
          return Bad(source, absl::StrCat("unknown key '", name, "' in a file entry"));
        }
      }
      StampedFileTemplate entry;
      entry.path = file["path"].Scalar();
      entry.text = file["template"].Scalar();
      if (!SafeRelativePath(entry.path)) {
        return Bad(source, absl::StrCat("file path '", entry.path, "' must be relative, without '..'"));
      }
      if (entry.path == kStampManifestName) {
        return Bad(source, absl::StrCat("file path '", entry.path, "' is reserved for the manifest"));
      }
      if (file["install_to"]) {
        entry.install_to = file["install_to"].as<std::string>("");
        if (!SafeRelativePath(entry.install_to) || absl::StrContains(entry.install_to, "//") ||
            absl::EndsWith(entry.install_to, "/")) {
          return Bad(source, absl::StrCat("install_to '", entry.install_to,
                                          "' must be a file path relative to the home directory"));
        }
      }
      if (file["mode"]) {
        // An octal string such as "0600", so YAML's integer rules cannot misread it.
        const std::string mode = file["mode"].as<std::string>("");
        unsigned value = 0;
        bool ok = mode.size() >= 3 && mode.size() <= 4;
        for (char c : mode) ok = ok && c >= '0' && c <= '7';
        if (ok) value = static_cast<unsigned>(std::stoul(mode, nullptr, 8));
        if (!ok || (value & 07000) != 0 || (value & 0400) == 0) {
          return Bad(source, absl::StrCat("mode '", mode,
                                          "' must be octal like \"0600\", owner-readable, "
                                          "without setuid, setgid or sticky bits"));
        }
        entry.mode = value;
      }
      if (absl::Status ok = CheckTemplate(entry.text); !ok.ok()) {
        return Bad(source, ok.message());
      }
      if (file["merge_keys"]) {
        bool merge = false;
        if (!file["merge_keys"].IsScalar() || !YAML::convert<bool>::decode(file["merge_keys"], merge)) {
          return Bad(source, "merge_keys must be true or false");
        }
        entry.merge_keys = merge;
      }
      profile.files.push_back(std::move(entry));
    }
  }
  auto port_ok = [](const YAML::Node& node, int* out) {
    int value = 0;
    if (!node.IsScalar() || !YAML::convert<int>::decode(node, value) || value < 1 || value > 65535) {
      return false;
    }
    *out = value;
    return true;
  };
  if (root["health"]) {
    const YAML::Node health = root["health"];
    if (!health.IsMap() || (health["http"] && !health["http"].IsMap())) {
      return Bad(source, "health must be a map, e.g. {http: {port: 8080, path: /healthz}}");
    }
    if (const YAML::Node http = health["http"]; http) {
      if (!port_ok(http["port"], &profile.health.http_port)) {
        return Bad(source, "health.http.port must be a port number (1-65535)");
      }
      if (http["path"]) {
        profile.health.http_path = http["path"].as<std::string>("");
        if (profile.health.http_path.empty() || profile.health.http_path.front() != '/' ||
            profile.health.http_path.find_first_of(" \t\r\n") != std::string::npos) {
          return Bad(source, "health.http.path must be a path starting with /");
        }
      }
    }
  }
  if (root["ports"]) {
    if (!root["ports"].IsSequence()) return Bad(source, "ports must be a list of port numbers");
    for (const auto& item : root["ports"]) {
      int port = 0;
      if (!port_ok(item, &port)) return Bad(source, "ports must be port numbers (1-65535)");
      profile.ports.push_back(port);
    }
  }
  if (root["schedule_store"]) {
    profile.schedule_store = root["schedule_store"].as<std::string>("");
    if (!profile.schedule_store.empty() && !SafeRelativePath(profile.schedule_store)) {
      return Bad(source, "schedule_store must be a path relative to the home directory");
    }
  }
  if (root["schedule_format"]) {
    profile.schedule_format = root["schedule_format"].as<std::string>("");
    if (profile.schedule_format != "tidepool-json" && profile.schedule_format != "openclaw-sqlite") {
      return Bad(source, "schedule_format must be tidepool-json or openclaw-sqlite");
    }
  }
  if (root["work_processes"]) {
    if (!root["work_processes"].IsSequence()) {
      return Bad(source, "work_processes must be a list of process names");
    }
    for (const auto& item : root["work_processes"]) {
      const std::string name = item.IsScalar() ? item.Scalar() : "";
      // A name as the kernel keeps it: at most 15 bytes, no '/' (and nothing odd).
      const bool ok = !name.empty() && name.size() <= 15 &&
                      std::all_of(name.begin(), name.end(), [](char c) {
                        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' ||
                               c == '_' || c == '-' || c == '+';
                      });
      if (!ok) {
        return Bad(source, "work_processes must be process names of at most 15 characters "
                           "(letters, digits, '.', '_', '-', '+')");
      }
      profile.work_processes.push_back(name);
    }
  }
  if (const YAML::Node identity = root["identity_headers"]; identity) {
    static const std::set<std::string> kIdentityKeys = {
        "user_header", "user_value", "set_forwarded_headers", "strip_headers", "tool_base_path"};
    if (!identity.IsMap()) return Bad(source, "identity_headers must be a map");
    for (auto it = identity.begin(); it != identity.end(); ++it) {
      if (!kIdentityKeys.count(it->first.as<std::string>(""))) {
        return Bad(source, absl::StrCat("unknown key 'identity_headers.",
                                        it->first.as<std::string>(""), "'"));
      }
    }
    IdentityHeaders& out = profile.identity;
    out.enabled = true;
    out.user_header = identity["user_header"].as<std::string>("");
    out.user_value = identity["user_value"].as<std::string>("email");
    out.set_forwarded_headers = identity["set_forwarded_headers"].as<bool>(false);
    out.tool_base_path = identity["tool_base_path"].as<std::string>("/");
    if (identity["strip_headers"]) {
      if (!identity["strip_headers"].IsSequence()) {
        return Bad(source, "identity_headers.strip_headers must be a list");
      }
      for (const auto& h : identity["strip_headers"]) out.strip_headers.push_back(h.as<std::string>(""));
    }
    if (out.user_header.empty() ||
        out.user_header.find_first_of(" :\t\r\n") != std::string::npos) {
      return Bad(source, "identity_headers.user_header must be a header name");
    }
    if (out.user_value != "email" && out.user_value != "user_id") {
      return Bad(source, "identity_headers.user_value must be email or user_id");
    }
    if (out.tool_base_path.empty() || out.tool_base_path.front() != '/' ||
        out.tool_base_path.find_first_of(" \t\r\n?#") != std::string::npos ||
        !CheckTemplate(out.tool_base_path).ok()) {
      return Bad(source, "identity_headers.tool_base_path must be a path starting with / "
                         "(placeholders allowed, e.g. /w/{{workspace_id}})");
    }
  }
  if (root["min_memory_mib"]) {
    int value = 0;
    if (!root["min_memory_mib"].IsScalar() ||
        !YAML::convert<int>::decode(root["min_memory_mib"], value) || value < 0 ||
        value > (1 << 20)) {
      return Bad(source, "min_memory_mib must be a number of MiB (0 to 1048576)");
    }
    profile.min_memory_mib = value;
  }
  if (root["min_cpu_millicores"]) {
    int value = 0;
    if (!root["min_cpu_millicores"].IsScalar() ||
        !YAML::convert<int>::decode(root["min_cpu_millicores"], value) || value < 0 ||
        value > 256000) {
      return Bad(source, "min_cpu_millicores must be a number of millicores (0 to 256000)");
    }
    profile.min_cpu_millicores = value;
  }
  if (root["owner_ready_path"]) {
    profile.owner_ready_path = root["owner_ready_path"].as<std::string>("");
    if (profile.owner_ready_path.empty() || profile.owner_ready_path.front() != '/' ||
        profile.owner_ready_path.find_first_of(" \t\r\n#") != std::string::npos ||
        !CheckTemplate(profile.owner_ready_path).ok()) {
      return Bad(source, "owner_ready_path must be a path starting with / (placeholders allowed)");
    }
    if (!profile.identity.enabled || profile.health.http_port == 0) {
      return Bad(source, "owner_ready_path needs identity_headers and an http health check");
    }
  }
  return profile;
}

absl::StatusOr<std::map<std::string, ToolProfile>> LoadProfiles(const std::string& dir) {
  std::error_code ec;
  std::map<std::string, ToolProfile> profiles;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".yaml") continue;
    absl::StatusOr<std::string> text = ReadFileToString(entry.path().string());
    if (!text.ok()) return text.status();
    absl::StatusOr<ToolProfile> profile = ParseProfile(*text, entry.path().string());
    if (!profile.ok()) return profile.status();
    const std::string name = profile->name;
    profiles.emplace(name, *std::move(profile));
  }
  if (ec) return absl::NotFoundError(absl::StrCat("cannot read the profiles directory ", dir));
  if (profiles.empty()) return absl::NotFoundError(absl::StrCat("no profiles in ", dir));
  return profiles;
}

}  // namespace tidepool::provisioner
