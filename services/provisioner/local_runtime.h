#pragma once

// The local (embedded default) Runtime: every workspace is a bubblewrap sandbox on this host,
// in its own cgroup, that outlives the provisioner and is re-adopted by the next one.
//
// Layout under options.state_dir (0700):
//   <id>.json           the record: the spec and, while started, how to recognise the sandbox
//                       (pid + /proc start time + boot id of the outer bwrap and of the sandbox's
//                       pid-1); 0600 because the spec's env may carry credentials
//   run/<id>/status.json  bwrap's --json-status-fd output (child pid, then the exit code)
//   logs/<id>.log       the sandbox's stdout and stderr (0600; rotated to .log.1 at a start
//                       once over 8 MiB; not capped within one run)
//   locks/<id>.lock     flock(2) that serialises operations on one workspace across threads and
//                       processes

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/provisioner/cgroup.h"
#include "services/provisioner/runtime.h"

namespace tidepool::provisioner {

struct LocalRuntimeOptions {
  // Records, one JSON per workspace; created 0700. Required.
  std::string state_dir;
  std::string bwrap_path = "/usr/bin/bwrap";
  // The cgroup parent group's name, and where it lives (see CgroupOptions).
  std::string cgroup_parent = "tidepool";
  bool nest_cgroup_under_own = true;
  // true: Open fails when cgroups cannot be used. false: sandboxes then run without memory,
  // pids and CPU limits and limits_enforced() says so.
  bool require_cgroups = true;
  // false: never use cgroups (no limits; for hosts where another layer bounds the sandboxes).
  // Stop, Usage and re-adoption then work through the sandbox's pid namespace alone.
  bool use_cgroups = true;
  // If >= 0 (the provisioner must run as root): sandboxes run as this host uid/gid instead of
  // the provisioner's, and Create chowns the volume (every file, once, if it was another
  // uid's) and the socket dir to it. Without it a root provisioner's sandbox user (uid 1000
  // inside) is host uid 0 without capabilities. The stamp dir and ro_bind sources must be
  // readable by that uid or gid; their parent directories need not be (see stage_dir).
  int sandbox_host_uid = -1;
  int sandbox_host_gid = -1;
  // With sandbox_host_uid: the (empty, 0755) host directory under which each launch binds the
  // sandbox's sources in a private mount namespace, so they need not be reachable by that uid
  // at their host paths. Created by Open.
  std::string stage_dir = "/run/tidepool-stage";
  // How long Start waits for bwrap to report the sandbox's pid-1.
  absl::Duration start_timeout = absl::Seconds(10);
  // The SIGTERM grace Delete gives a running sandbox.
  absl::Duration delete_grace = absl::Seconds(2);
  // Non-empty: hard disk quotas. Each volume is an ext4 image (<dir>/<workspace>.img) of
  // limits.disk_bytes, loop-mounted at volume_dir by Create (volume_image.h; root and loop
  // devices needed). A volume that already holds files without an image keeps a soft quota.
  std::string volume_images_dir;
  // Upper bound on the volume walk in Usage; beyond it disk_bytes is partial.
  absl::Duration disk_walk_budget = absl::Seconds(2);
};

// The host user a root provisioner's sandboxes run as (provisioner.sandbox_user).
struct SandboxHostUser {
  uint32_t uid = 0;
  uint32_t gid = 0;
};
// `user` is a name in the host's user database or "uid:gid". FailedPrecondition (saying how
// to create it) when the name is unknown; InvalidArgument for root or a malformed value.
absl::StatusOr<SandboxHostUser> ResolveSandboxHostUser(const std::string& user);

// Builds bubblewrap's argv for `spec` (exposed for tests and the report). The fds must be open
// in bwrap: the BPF program, the status file, the pipe bwrap writes the child pid to and
// closes, and the synthetic /etc/passwd, /etc/group and /etc/hosts contents.
struct BwrapFds {
  int seccomp = 3;
  int json_status = 4;
  int info = 5;
  int passwd = 6;
  int group = 7;
  int hosts = 8;
};
// bwrap is started as `bwrap --args FD -- <command>` with the options (argv[1] up to "--")
// NUL-separated in FD, so the env values (credentials) never appear in the host's
// /proc/<pid>/cmdline.
std::vector<std::string> BuildBwrapArgv(const std::string& bwrap_path, const SandboxSpec& spec,
                                        const BwrapFds& fds);

// The sandbox's hostname: "ws-" + the id's 26 characters.
std::string SandboxHostname(const std::string& workspace_id);

// INVALID_ARGUMENT naming the first problem of `spec`: id format, relative or non-normal
// paths, binds over the platform's mount points, an empty command, env names or values that
// bwrap cannot carry.
absl::Status ValidateSandboxSpec(const SandboxSpec& spec);

class LocalRuntime final : public Runtime {
 public:
  // Creates the state dirs, builds the seccomp filter, opens the cgroup hierarchy.
  // INVALID_ARGUMENT for bad options; FAILED_PRECONDITION when bwrap is missing or cgroups are
  // required but unusable (the message says why).
  static absl::StatusOr<std::unique_ptr<LocalRuntime>> Open(const LocalRuntimeOptions& options);

  // Leaves every sandbox running: a later LocalRuntime on the same state_dir re-adopts them.
  ~LocalRuntime() override = default;

  absl::Status Create(const SandboxSpec& spec) override;
  absl::Status Start(const std::string& workspace_id) override;
  absl::Status Stop(const std::string& workspace_id, absl::Duration grace) override;
  absl::Status Delete(const std::string& workspace_id) override;
  absl::StatusOr<SandboxStatus> Status(const std::string& workspace_id) override;
  absl::StatusOr<SandboxUsage> Usage(const std::string& workspace_id) override;
  absl::StatusOr<std::vector<std::string>> List() override;

  // Whether memory, pids and CPU limits are enforced (cgroups usable); if not, why.
  bool limits_enforced() const { return cgroups_ != nullptr; }
  const std::string& limits_note() const { return limits_note_; }
  CgroupVersion cgroup_version() const {
    return cgroups_ ? cgroups_->version() : CgroupVersion::kNone;
  }
  // The disk quota is measured (Usage) but not enforced: no project quotas here.
  bool disk_quota_enforced() const { return false; }
  // The cgroup manager (nullptr without cgroups); for diagnostics and tests.
  const CgroupManager* cgroups() const { return cgroups_.get(); }

 private:
  struct Record;
  class WorkspaceLock;

  LocalRuntime(LocalRuntimeOptions options, std::string seccomp_bpf,
               std::unique_ptr<CgroupManager> cgroups, std::string limits_note);

  std::string RecordPath(const std::string& id) const;
  std::string RunDir(const std::string& id) const;
  // The image backing `id`'s volume when hard quotas are on.
  std::string ImagePath(const std::string& id) const;
  std::string StatusFilePath(const std::string& id) const;
  std::string LogPath(const std::string& id) const;

  absl::StatusOr<Record> LoadRecord(const std::string& id) const;
  absl::Status SaveRecord(const Record& record) const;
  bool IsRunning(const Record& record) const;
  std::vector<pid_t> SandboxPids(const Record& record) const;
  std::optional<int> ExitCodeFromStatusFile(const std::string& id) const;

  absl::Status StartLocked(Record& record);
  absl::Status StopLocked(Record& record, absl::Duration grace);
  absl::Status Launch(Record& record);

  const LocalRuntimeOptions options_;
  const std::string seccomp_bpf_;
  const std::unique_ptr<CgroupManager> cgroups_;
  const std::string limits_note_;
  const std::string boot_id_;
};

}  // namespace tidepool::provisioner
