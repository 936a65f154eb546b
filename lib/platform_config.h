#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lib/identity_providers.h"
#include "lib/log.h"

namespace tidepool {

// The six platform services, in start order (audit first: everyone else reports to it).
inline const std::vector<std::string>& ServiceNames() {
  static const std::vector<std::string>* names =
      new std::vector<std::string>{"audit", "auth", "secrets", "provisioner", "scaler", "proxy"};
  return *names;
}

// Where one service listens. gRPC (mutual TLS) and the plain-HTTP metrics/probe port.
struct ServiceEndpointConfig {
  std::string grpc_address = "127.0.0.1";
  int grpc_port = 0;
  std::string metrics_address = "127.0.0.1";
  int metrics_port = 0;
};

// The audit service's settings (section `audit`).
struct AuditConfig {
  // Sign a checkpoint at least this often while new records arrive...
  absl::Duration checkpoint_interval = absl::Seconds(60);
  // ...and as soon as this many records are not covered by one.
  int checkpoint_every_records = 1000;
  // Give the checkpoint file the file system's append-only attribute where possible.
  bool checkpoint_append_only = true;
};

// The auth service's settings (section `auth`).
struct AuthConfig {
  // The first administrator, created on first start with a one-time setup link.
  std::string admin_email = "admin@tidepool.local";
  // How long a session token (verified locally by proxies) lives.
  absl::Duration session_token_lifetime = absl::Minutes(15);
  // How long a session lasts before signing in again.
  absl::Duration session_lifetime = absl::Hours(168);
  // Offer local accounts (e-mail and password) on the sign-in page.
  bool local_accounts = true;
  // New accounts from a federated provider need an invite code.
  bool invite_required = false;
  // Federated sign-in providers, any number at once (lib/identity_providers.h).
  std::vector<IdentityProviderConfig> providers;
};

// The secrets service's settings (section `secrets`).
struct SecretsConfig {
  // The master key file (32 bytes, or 64 hex characters; mode 0600, owned by the service's
  // user). Empty means <data_dir>/secrets/master.key, generated on the very first start.
  std::string master_key_file;
  // If set, the name of an environment variable holding the master key (64 hex characters)
  // instead of a file. Never generated; online rotation then needs a key file.
  std::string master_key_env;
  // Longest accepted secret value, in bytes.
  int max_value_bytes = 16384;
  // Most secrets (provider fields) one user may store.
  int max_secrets_per_user = 200;
  // Retire the active keyring term before its key has wrapped this many data keys (Vault's
  // ceiling: 10 % below 2^32 encryptions per key).
  int64_t auto_rotate_operations = 3865470566;
  // ...and once it is this old.
  absl::Duration auto_rotate_interval = absl::Hours(24 * 90);
};

// The provisioner's settings (section `provisioner`).
struct ProvisionerConfig {
  // Where tool profiles (*.yaml) live; empty means the profiles/ folder of the source tree.
  std::string profiles_dir;
  // The profile of a new workspace when the request names none.
  std::string default_profile = "shell";
  // The supervisor binary; empty means tidepool-supervisor beside the running binary.
  std::string supervisor_binary;
  // The tools every sandbox mounts read-only at /opt/tidepool/tools (Node.js 24 and OpenClaw,
  // installed by scripts/setup); empty means the tools/ folder of the source tree.
  std::string tools_dir;
  // Per-workspace limits.
  int memory_limit_mib = 1024;
  int pids_limit = 256;
  int cpu_millicores = 1000;
  int disk_quota_mib = 10240;
  // Enforce disk_quota_mib in the file system: each volume is its own ext4 image, loop-mounted
  // (needs root and loop devices; otherwise, or when false, only the file API enforces it).
  bool hard_disk_quota = true;
  // The host user sandboxes run as when the provisioner runs as root: a user name, or
  // "uid:gid". scripts/setup creates the default user (a system user without a shell or home).
  // Empty: a root provisioner's sandboxes run as host uid 0 without capabilities (not
  // recommended). Ignored by a provisioner that is not root: its sandboxes run as its own uid.
  std::string sandbox_user = "tidepool-sandbox";
  // Workspaces of the default profile kept started for people who have none yet, when the
  // profile declares owner_ready_path (openclaw does): a first sign-in claims one instead of
  // waiting for the tool to start. Each costs the memory of a running workspace. 0: none.
  int warm_spares = 1;
};

struct ProxyConfig {
  // Where workspaces may connect out through the egress proxy: "host:port" entries (exact
  // names or IP literals, IPv6 in brackets). Loopback and private addresses are refused
  // whatever the list says.
  std::vector<std::string> egress_allowlist;
  // The browser edge's listening address and port (0: any free port; the bound one is written
  // to <data_dir>/run/edge.json).
  std::string http_address = "127.0.0.1";
  int http_port = 8080;
  // Plain-HTTP development mode on loopback: cookies without Secure and without the __Host-
  // prefix. Only takes effect when public_url is http:// on a loopback host; a plain-HTTP
  // public_url elsewhere is refused.
  bool dev_mode = true;
  // Previews are served at <port>-<workspace>.<preview_domain>, a domain separate from the
  // platform's. Empty: no previews.
  std::string preview_domain = "preview.localhost";
  // The web UI's built files; empty: <source>/web/dist when it exists, else a built-in page.
  std::string web_root;
  // Per-person cap on open WebSockets (tool UI, terminals, preview hot reload).
  int max_websockets_per_user = 64;
  // A WebSocket without traffic for this long is closed.
  absl::Duration websocket_idle_timeout = absl::Minutes(5);
  // How often workspace activity is sent to the scaler, batched.
  absl::Duration activity_flush_interval = absl::Seconds(10);
  // The ingresses or load balancers in front of the edge ("10.0.0.0/8", "192.0.2.7/32"): for
  // a connection from one of them, the person's address is the last one in X-Forwarded-For.
  // Anyone else's X-Forwarded-For is ignored (and never reaches a workspace).
  std::vector<std::string> trusted_forwarders;
};

// The scaler's settings (section `scaler`). The idle policy itself (timeouts, pins, per-user
// overrides) is changed at run time with SetPolicy; these are its defaults until then.
struct ScalerConfig {
  // A workspace without authenticated activity for this long sleeps.
  absl::Duration idle_timeout = absl::Minutes(30);
  // How often the scaler checks (a workspace sleeps within idle_timeout plus this).
  absl::Duration check_interval = absl::Seconds(60);
  // What the platform can run at once, for the capacity report (0: not configured).
  int capacity_cpu_millicores = 0;
  int capacity_memory_mib = 0;
};

// The admin's shared model server (section `model_server`), an OpenAI-compatible endpoint every
// workspace may reach through the egress proxy (even on loopback or a private network: it is
// the admin's own) and that tool profiles use as the default provider.
struct ModelServerConfig {
  // "http(s)://host:port/path" of the API ("http://10.0.0.5:8000/v1"); empty: none.
  std::string base_url;
  // The model to ask for by default ("llama-3.1-8b-instruct"); empty: the server's default.
  std::string default_model;
};

// The whole of tidepool.yaml as this build understands it. Every field's initializer is its
// default; LoadPlatformConfig() validates overrides. Later issues add per-service sections.
struct PlatformConfig {
  // Where the settings came from: a file path, or "built-in defaults".
  std::string source = "built-in defaults";

  // Where all state lives (SQLite files, keys, certificates, workspace volumes). Empty means
  // the default (see DefaultDataDir()); --data-dir overrides it.
  std::string data_dir;

  std::string log_level = "info";

  // Generate the platform CA and service certificates under <data_dir>/pki on first start.
  // Off in deployments that mount certificates issued elsewhere.
  bool tls_auto_generate = true;
  // Where the CA and certificates live; empty means <data_dir>/pki.
  std::string tls_dir;

  // How long a stopping process waits for in-flight RPCs before cancelling them.
  absl::Duration shutdown_grace = absl::Seconds(3);

  AuditConfig audit;
  AuthConfig auth;
  ProvisionerConfig provisioner;
  ProxyConfig proxy;
  ScalerConfig scaler;
  SecretsConfig secrets;
  ModelServerConfig model_server;

  // Where people reach the platform in a browser (links printed or mailed point here).
  std::string public_url = "http://127.0.0.1:8080";

  // Per service, keyed by ServiceNames().
  std::map<std::string, ServiceEndpointConfig> services;

  const ServiceEndpointConfig& Service(absl::string_view name) const {
    return services.at(std::string(name));
  }
};

// Returns the defaults with every service's ports filled in.
PlatformConfig DefaultPlatformConfig();

// Loads `path` over the defaults. An empty path returns the defaults. Errors are
// INVALID_ARGUMENT or NOT_FOUND with one line naming the file, line and key.
absl::StatusOr<PlatformConfig> LoadPlatformConfig(const std::string& path);

// Same, from YAML text (tests).
absl::StatusOr<PlatformConfig> LoadPlatformConfigFromString(absl::string_view yaml,
                                                            absl::string_view name);

// Every dotted key tidepool.yaml accepts, sorted.
std::vector<std::string> PlatformConfigKeys();

// $TIDEPOOL_DATA_DIR, else $XDG_DATA_HOME/tidepool, else $HOME/.local/share/tidepool.
std::string DefaultDataDir();

}  // namespace tidepool
