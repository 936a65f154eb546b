#pragma once

// Starts real Tidepool binaries as child processes on 127.0.0.1 with every port 0, each
// instance in its own data directory, and waits until they have written their run files.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/pki.h"
#include "lib/platform_client.h"
#include "tidepool/provisioner/v1/workspace_service.grpc.pb.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::testing {

inline std::string BinaryPath(const std::string& name) {
  return std::string(TIDEPOOL_BINARY_DIR) + "/" + name;
}

// A config that puts every port at 0 (the kernel picks free ones). `auth_extra` holds more
// keys of the auth section (indented by two spaces), `top_extra` more top-level sections, and
// `section_extra` more keys of other service sections, by section name.
inline std::string AllPortsZeroConfig(const std::string& auth_extra = "",
                                      const std::string& top_extra = "",
                                      const std::map<std::string, std::string>& section_extra = {}) {
  std::string yaml = "log:\n  level: info\n" + top_extra;
  for (const char* svc : {"auth", "provisioner", "secrets", "proxy", "scaler", "audit"}) {
    yaml += std::string(svc) + ":\n  grpc_port: 0\n  metrics_port: 0\n";
    if (std::string(svc) == "auth") yaml += auth_extra;
    if (std::string(svc) == "proxy") yaml += "  http_port: 0\n";
    if (auto it = section_extra.find(svc); it != section_extra.end()) yaml += it->second;
  }
  // The append-only checkpoint file could not be removed with the test's temporary directory.
  yaml += "  checkpoint_append_only: false\n";  // continues the audit section above
  return yaml;
}

class RunningPlatform {
 public:
  // Starts `commands` (each an argv without --config/--data-dir, which are appended) sharing
  // one fresh data directory, and waits up to `timeout` for the run files of `services`.
  static absl::StatusOr<std::unique_ptr<RunningPlatform>> Start(
      const std::vector<std::vector<std::string>>& commands,
      const std::vector<std::string>& services, absl::Duration timeout = absl::Seconds(60),
      const std::string& config = AllPortsZeroConfig());

  // Stops the processes, then detaches any volume image still mounted under the data
  // directory (the provisioner leaves them mounted, as it leaves sandboxes running).
  ~RunningPlatform();

  const std::string& data_dir() const { return data_dir_; }
  const std::string& log_dir() const { return tmp_.path(); }
  const std::string& config_path() const { return config_path_; }
  std::vector<std::unique_ptr<Subprocess>>& processes() { return processes_; }
  // The admin CLI's certificate, as tidepoolctl would load it.
  absl::StatusOr<TlsIdentity> CliIdentity() const {
    return LoadTlsIdentity(data_dir_ + "/pki", "tidepoolctl");
  }
  absl::StatusOr<RunInfo> Info(const std::string& service) const {
    return ReadRunInfo(data_dir_, service);
  }

 private:
  ScopedTempDir tmp_;
  std::string data_dir_;
  std::string config_path_;
  std::vector<std::unique_ptr<Subprocess>> processes_;
};

// Deletes every workspace (as tidepoolctl through `workspaces`) and waits up to 20 s until all
// are DELETED: sandboxes outlive the provisioner by design (they are re-adopted), so tests that
// create workspaces remove them.
void DeleteAllWorkspaces(provisioner::v1::WorkspaceService::Stub& workspaces);

}  // namespace tidepool::testing
