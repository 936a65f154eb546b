#pragma once

// The config guard: keeps every stamped file exactly as the provisioner rendered it
// (supervisor_service.proto, CONFIG GUARD; SECURITY-TESTS.md 2.7, goal G8).
//
// The provisioner writes the rendered files and stamp-manifest.json (a v1::StampManifest)
// into a host directory bound read-only into the sandbox. The guard loads the manifest,
// checks each original against its HMAC-SHA256 under the workspace's stamp digest key and
// keeps the verified content in memory. A file the manifest installs into the volume
// (install_to) is copied there and watched: inotify on its directory and on every directory
// above it up to the volume root, plus a full re-check every `rehash_interval`. A mismatch in
// content, mode or type is restored (a new file renamed over the path; a symlinked or
// non-directory component on the way is removed and recreated as a directory) and recorded
// as a ConfigTamperEvent, which the provisioner pulls and audits.
//
// Thread-safe. Start() runs the watcher on its own thread; Check() may be called from any
// thread (the tool runner calls it before every start).

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tidepool/supervisor/v1/supervisor_service.pb.h"

namespace tidepool::supervisor {

struct ConfigGuardOptions {
  // The read-only stamp directory (/etc/tidepool in the sandbox) holding the originals and
  // stamp-manifest.json.
  std::string stamp_dir;
  // The volume root (the home directory); install_to paths are relative to it.
  std::string volume_root;
  // The workspace's stamp digest key (DeriveStampDigestKey), 32 bytes. Never logged.
  std::string digest_key;
  // The full re-check that backs up inotify; at most 30 s.
  absl::Duration rehash_interval = absl::Seconds(10);
  // More than `quarantine_restores` restores within `quarantine_window` quarantine the
  // workspace: `on_quarantine` is called (the supervisor stops the tool).
  int quarantine_restores = 30;
  absl::Duration quarantine_window = absl::Minutes(1);
  std::function<void()> on_quarantine;
};

class ConfigGuard {
 public:
  static constexpr size_t kMaxEvents = 1000;

  // Validates the options (INVALID_ARGUMENT) and opens the volume root. Loads nothing yet.
  static absl::StatusOr<std::unique_ptr<ConfigGuard>> Create(ConfigGuardOptions options);
  ~ConfigGuard();  // Stop()s

  struct ReloadResult {
    uint64_t generation = 0;
    std::vector<std::string> changed_paths;  // installed copies (re)written
  };
  // Loads the manifest and the originals, verifies every digest, then installs the copies.
  // With `expect_generation`, FAILED_PRECONDITION unless the manifest holds exactly it.
  // FAILED_PRECONDITION too if the manifest is missing, an original does not match its
  // digest, or a copy cannot be installed; INVALID_ARGUMENT for a malformed manifest. On a
  // failure before installing, the previously loaded generation stays in force.
  absl::StatusOr<ReloadResult> Reload(std::optional<uint64_t> expect_generation = std::nullopt);

  // Checks every stamped file now and restores mismatched copies, recording an event for
  // each mismatch with `detected_by`. OK when every file matches afterwards; otherwise
  // FAILED_PRECONDITION naming the first file that does not (also before any Reload
  // succeeded: nothing verified yet means the tool must not start).
  absl::Status Check(const std::string& detected_by);

  // Runs the watcher thread (inotify and the periodic re-check). Idempotent.
  void Start();
  void Stop();

  // Ends a quarantine (the provisioner restarted the tool on purpose).
  void ClearQuarantine();
  bool quarantined() const;

  uint64_t generation() const;
  bool ok() const;
  std::vector<v1::StampedFileStatus> FileStatuses() const;
  // Events after `after_sequence`, waiting up to `wait` for the first one.
  v1::ListConfigEventsResponse Events(uint64_t after_sequence, absl::Duration wait) const;

 private:
  struct File {
    v1::StampManifestEntry entry;
    std::string content;  // the verified original
    v1::StampedFileStatus status;
  };
  enum class Difference { kNone, kContent, kMode, kType, kMissing };
  // ConfigTamperEvent.difference for it.
  static const char* DifferenceName(Difference difference);
  struct Observed {
    Difference difference = Difference::kNone;
    std::string digest;  // of what was found, when it was a regular file
  };

  explicit ConfigGuard(ConfigGuardOptions options, int root_fd);

  // What is at `file`'s installed path now. Read-only.
  Observed Inspect(const File& file) const;
  // Writes `file`'s content to its installed path (atomically) and verifies it.
  absl::Status Install(const File& file) const;
  // Checks one file; restores and records an event on a mismatch. True if it matches after.
  bool CheckFile(File& file, const std::string& detected_by, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckLocked(const std::string& detected_by) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Watch();
  // (Re)adds inotify watches on every directory on the way to an installed copy.
  void ArmWatches() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ConfigGuardOptions options_;
  const int root_fd_;
  const std::string boot_id_;
  mutable absl::Mutex mu_;
  bool loaded_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<File> files_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::ConfigTamperEvent> events_ ABSL_GUARDED_BY(mu_);
  uint64_t last_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<absl::Time> recent_restores_ ABSL_GUARDED_BY(mu_);
  bool quarantined_ ABSL_GUARDED_BY(mu_) = false;
  // inotify watch descriptor -> (directory relative to the volume root, the child names on
  // the way to an installed copy); the stamp directory's watch has an empty name set.
  int inotify_fd_ = -1;
  int stop_fd_ = -1;  // eventfd that wakes the watcher to stop
  std::map<int, std::pair<std::string, std::vector<std::string>>> watches_ ABSL_GUARDED_BY(mu_);
  int stamp_watch_ ABSL_GUARDED_BY(mu_) = -1;
  std::thread thread_;
};

}  // namespace tidepool::supervisor
