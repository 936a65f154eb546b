#pragma once

// Control groups for workspace sandboxes, over cgroup v2 (unified) or v1 (one hierarchy per
// controller), detected at run time. Every sandbox gets its own group under one parent group
// ("tidepool" by default); limits are memory, pids and CPU.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "services/provisioner/runtime.h"

namespace tidepool::provisioner {

enum class CgroupVersion { kNone, kV1, kV2 };

struct CgroupOptions {
  // The parent group's name (a single path component).
  std::string parent_name = "tidepool";
  // true: the parent is created under the provisioner's own group in each hierarchy (what a
  // delegated systemd unit or a container allows); false: under the hierarchy's root.
  bool nest_under_own_cgroup = true;
  // Tests only: a directory standing in for the cgroup filesystem; mounts are not read. v2 uses
  // it as the unified root, v1 uses <fake_root>/<controller>. Files are created as needed.
  std::string fake_root;
  CgroupVersion fake_version = CgroupVersion::kNone;
};

struct CgroupStats {
  double cpu_seconds = 0;
  int64_t memory_bytes = 0;
  int processes = 0;
  int64_t oom_kills = 0;
};

// Creates, limits, inspects, empties and removes the groups of sandboxes. Names are checked by
// the caller (the workspace id). Thread-safe: all state lives in the cgroup filesystem.
class CgroupManager {
 public:
  // Detects the cgroup version and creates the parent group. FAILED_PRECONDITION, naming the
  // reason, when no usable hierarchy with the memory and pids controllers exists or the parent
  // cannot be created (no permission; cgroup v2 without delegation).
  static absl::StatusOr<std::unique_ptr<CgroupManager>> Open(const CgroupOptions& options);

  CgroupVersion version() const { return version_; }
  // e.g. "v1 memory=/sys/fs/cgroup/memory/x/tidepool pids=..." for logs.
  std::string Describe() const;

  // The group directories of sandbox `name`: one on v2, one per controller on v1. A process
  // joins the sandbox by writing its pid to cgroup.procs in each of them.
  std::vector<std::string> Dirs(absl::string_view name) const;

  // Creates the group if needed and writes the limits (0 = unlimited). Idempotent; may be
  // called on a running sandbox to change its limits. UNAVAILABLE if a write fails.
  absl::Status Prepare(absl::string_view name, const ResourceLimits& limits);

  // True if the group exists.
  bool Exists(absl::string_view name) const;

  // The host pids in the group (empty if it does not exist).
  std::vector<pid_t> Pids(absl::string_view name) const;

  // Sends `signal_number` to every process of the group except `except_pid` (0 = none).
  void SignalAll(absl::string_view name, int signal_number, pid_t except_pid) const;

  // SIGKILLs every process of the group (cgroup.kill on v2; freeze, kill, thaw on v1 with a
  // freezer; otherwise kill until empty) and waits until it is empty. DEADLINE_EXCEEDED if
  // processes remain after `timeout`.
  absl::Status KillAll(absl::string_view name, absl::Duration timeout) const;

  // Current accounting of the group. NOT_FOUND if it does not exist.
  absl::StatusOr<CgroupStats> Stats(absl::string_view name) const;

  // KillAll, then removes the group. OK if it does not exist.
  absl::Status Remove(absl::string_view name) const;

  // Removes the (empty) parent group; for tests and uninstall. OK if already gone.
  absl::Status RemoveParent() const;

 private:
  struct Controller {
    std::string name;        // "memory", "pids", "cpu", "cpuacct", "freezer"; "" on v2
    std::string parent_dir;  // the parent group's directory in this hierarchy
  };
  CgroupManager(CgroupVersion version, std::vector<Controller> controllers, bool fake)
      : version_(version), controllers_(std::move(controllers)), fake_(fake) {}

  // The directory of `name` in the hierarchy of `controller` ("" = v2), or "" if not mounted.
  std::string DirFor(absl::string_view controller, absl::string_view name) const;
  absl::Status WriteFile(const std::string& path, absl::string_view value) const;

  CgroupVersion version_;
  std::vector<Controller> controllers_;
  bool fake_;
};

}  // namespace tidepool::provisioner
