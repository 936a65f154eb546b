#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tidepool::provisioner {

// A file the profile stamps into the workspace's read-only config directory (/etc/tidepool).
struct StampedFileTemplate {
  std::string path;  // relative, no ".." and no leading "/"
  std::string text;  // with {{variable}} placeholders
  // Where the supervisor installs a guarded copy, relative to the home directory, for a tool
  // that must find its config there; empty: the tool reads the read-only original.
  std::string install_to;
  unsigned mode = 0644;  // of the installed copy
  // The rendered file is JSON, and the owner's keys that the secrets catalogue maps to config
  // entries for this profile ("models.providers.openai.apiKey") are set in it at those dotted
  // paths (objects created on the way). Such a file changes whenever a key does.
  bool merge_keys = false;
};

// How the supervisor decides the tool is healthy: its process runs (http_port 0), or an HTTP
// GET of http://127.0.0.1:<http_port><http_path> inside the sandbox answers 2xx or 3xx.
struct HealthCheck {
  int http_port = 0;
  std::string http_path = "/";
};

// How the proxy passes the signed-in person to the tool (GetEndpoint's IdentityHeaderSettings).
struct IdentityHeaders {
  bool enabled = false;
  std::string user_header;           // e.g. "x-forwarded-user"
  std::string user_value = "email";  // "email" or "user_id"
  bool set_forwarded_headers = false;
  std::vector<std::string> strip_headers;
  std::string tool_base_path = "/";
};

// A tool profile (profiles/<name>.yaml): what runs in a workspace and how it is configured.
// Which of the owner's keys it consumes, and how, is the secrets catalogue's per-profile
// mapping (services/secrets/catalogue.json).
struct ToolProfile {
  std::string name;
  std::string description;
  std::vector<std::string> command;
  std::map<std::string, std::string> env;
  std::vector<StampedFileTemplate> files;
  HealthCheck health;
  // TCP ports the tool itself listens on inside the sandbox (its web UI first).
  std::vector<int> ports;
  // Where the tool keeps its scheduled jobs, relative to the home directory ("" = none).
  std::string schedule_store;
  // How the store is kept: "tidepool-json" (the ScheduleStore message) or "openclaw-sqlite"
  // (OpenClaw's state database).
  std::string schedule_format = "tidepool-json";
  // Process names (as in /proc/<pid>/comm) that count as work while they run: the scaler
  // does not put the workspace to sleep under them (a build, a long agent task).
  std::vector<std::string> work_processes;
  IdentityHeaders identity;
  // The least memory the tool needs (MiB): the workspace's memory limit is at least this,
  // whatever provisioner.memory_limit_mib says. 0: no floor.
  int min_memory_mib = 0;
  // The least CPU the tool needs (millicores): the workspace's CPU cap is at least this. A cap,
  // not a reservation: it lets a tool that starts on several threads start at full speed.
  int min_cpu_millicores = 0;
  // A path of the tool's web UI (a template: "/w/{{workspace_id}}/config.json") that answers
  // 200 only to the workspace's owner, asked with the identity headers. Declaring it lets the
  // provisioner keep started spares of the profile (provisioner.warm_spares): a spare claimed
  // by a new person is ready once the tool answers that person there. Empty: no spares.
  std::string owner_ready_path;
};

// The {{placeholders}} a profile's templates (stamped files, env values, the identity
// headers' tool_base_path) may use.
const std::set<std::string>& TemplatePlaceholders();

// Whether any of the profile's templates (stamped files, env values, the base path) uses the
// placeholder `name` (without braces).
bool UsesPlaceholder(const ToolProfile& profile, absl::string_view name);

// Parses one profile. INVALID_ARGUMENT naming `source` and the problem: unknown keys, missing
// name or command, a relative command path, unsafe file paths, unknown placeholders.
absl::StatusOr<ToolProfile> ParseProfile(absl::string_view yaml, absl::string_view source);

// Loads every *.yaml in `dir`, keyed by name. Errors as ParseProfile, or NOT_FOUND.
absl::StatusOr<std::map<std::string, ToolProfile>> LoadProfiles(const std::string& dir);

// Replaces {{name}} placeholders with `values`. INVALID_ARGUMENT for an unknown one.
absl::StatusOr<std::string> RenderTemplate(absl::string_view text,
                                           const std::map<std::string, std::string>& values);

}  // namespace tidepool::provisioner
