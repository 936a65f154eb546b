#pragma once

// The seam between the provisioner's reconciler and whatever runs sandboxes: a local
// bubblewrap runtime (services/provisioner/local_runtime.h) in the embedded default, a
// Kubernetes runtime later. The reconciler drives desired state through this interface only.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tidepool::provisioner {

// Resource bounds of one sandbox. A runtime that cannot enforce a bound says so (for the
// local runtime: LocalRuntime::limits_enforced()).
struct ResourceLimits {
  int64_t memory_bytes = 1LL << 30;  // 0 = unlimited
  int pids = 256;                    // 0 = unlimited
  double cpus = 1.0;                 // CPU quota in cores; 0 = unlimited
  int64_t disk_bytes =
      10LL << 30;  // volume quota; enforced by the runtime where it can, at least measured
};

// Everything a runtime needs to build one workspace's sandbox. Paths are host paths unless
// said otherwise.
struct SandboxSpec {
  std::string workspace_id;  // "ws_" + 26 base32 chars (a-z, 2-7)
  std::string volume_dir;    // host dir: the ONLY writable place; bound at /home/user (HOME)
  // Host dir (mode 0700, owned by the platform) bound read-write at /run/tidepool inside: the
  // supervisor listens on /run/tidepool/supervisor.sock.
  std::string socket_dir;
  // Host dir with the stamped config files, bound READ-ONLY at /etc/tidepool (a directory, so a
  // re-stamp is seen inside without remount). May be empty: then nothing is bound there.
  std::string stamp_dir;
  // Extra read-only binds host->sandbox (e.g. the dir holding tidepool-supervisor ->
  // /opt/tidepool/bin, a tools dir -> /opt/tidepool/tools).
  std::vector<std::pair<std::string, std::string>> ro_binds;
  std::vector<std::string> command;        // the entry process argv as seen INSIDE the sandbox
  std::map<std::string, std::string> env;  // the entry process's environment (nothing inherited)
  ResourceLimits limits;
};

enum class SandboxPhase { kMissing, kStopped, kRunning };

struct SandboxStatus {
  SandboxPhase phase = SandboxPhase::kMissing;
  int pid = 0;  // host pid of the sandbox's outermost process while running, else 0
  // The entry process's exit code of the last run if known (128 + signal when it was killed).
  std::optional<int> last_exit_code;
};

struct SandboxUsage {
  double cpu_seconds = 0;    // cumulative CPU time of the sandbox's processes
  int64_t memory_bytes = 0;  // current memory charge (includes page cache and /tmp)
  int64_t disk_bytes = 0;    // allocated bytes under the volume (st_blocks * 512)
  int processes = 0;         // current number of processes (tasks on cgroup v1)
  // Added by the local runtime: how often the kernel's OOM killer fired in this sandbox, and
  // whether disk_bytes is a lower bound because the volume walk hit its time cap.
  int64_t oom_kills = 0;
  bool disk_bytes_partial = false;
};

// Creates, runs and removes workspace sandboxes. Implementations are thread-safe.
class Runtime {
 public:
  virtual ~Runtime() = default;

  // Idempotent: prepares dirs, cgroup, records the spec; does not start. A changed spec
  // replaces the recorded one and applies from the next Start (limits apply at once where
  // the runtime can). INVALID_ARGUMENT for a malformed spec.
  virtual absl::Status Create(const SandboxSpec& spec) = 0;

  // Idempotent (a running sandbox is left alone); FAILED_PRECONDITION if not created.
  virtual absl::Status Start(const std::string& workspace_id) = 0;

  // SIGTERM the whole sandbox, SIGKILL after grace (kill every process in the cgroup); volume
  // kept; idempotent. NOT_FOUND if not created.
  virtual absl::Status Stop(const std::string& workspace_id, absl::Duration grace) = 0;

  // Stop + remove cgroup, volume, socket dir, records; idempotent (OK if already gone).
  virtual absl::Status Delete(const std::string& workspace_id) = 0;

  // kMissing (OK status) for a workspace never created or deleted.
  virtual absl::StatusOr<SandboxStatus> Status(const std::string& workspace_id) = 0;

  // NOT_FOUND if not created.
  virtual absl::StatusOr<SandboxUsage> Usage(const std::string& workspace_id) = 0;

  // Every created workspace id (for re-adoption after a provisioner restart), sorted.
  virtual absl::StatusOr<std::vector<std::string>> List() = 0;
};

}  // namespace tidepool::provisioner
