#pragma once

// Resolution of file API paths beneath the workspace volume root, race-free and without
// following any symbolic link out of the root (SECURITY-TESTS.md #84-#92).
//
// Every lookup starts at an fd of the root and uses openat2(2) with RESOLVE_BENEATH |
// RESOLVE_NO_MAGICLINKS, so ".." and symlinks (absolute or relative, in chains) can never
// leave the root, and a directory swapped for a symlink mid-operation cannot redirect it.
// If the kernel lacks openat2 (ENOSYS), a component-by-component O_NOFOLLOW walk is used,
// which refuses every symlink on the way (stricter, never weaker).

#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tidepool::supervisor {

// Owns one file descriptor; closes it on destruction. Move-only. Not thread-safe.
class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() { Reset(); }
  ScopedFd(ScopedFd&& other) noexcept : fd_(other.Release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept {
    if (this != &other) {
      Reset(other.Release());
    }
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership and returns the fd (-1 if none).
  int Release() { return std::exchange(fd_, -1); }
  // Closes the owned fd (if any) and takes `fd`.
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Limits from the PATHS rules of supervisor_service.proto.
inline constexpr size_t kMaxPathBytes = 4096;
inline constexpr size_t kMaxComponentBytes = 255;

// Validates a contract path and returns its canonical relative form: no leading, trailing
// or repeated "/", no "." components; "" (or "/") is the root, returned as "".
// Returns INVALID_ARGUMENT for a ".." component, a NUL byte, a component over 255 bytes
// or a total over 4096 bytes.
absl::StatusOr<std::string> NormalizePath(absl::string_view path);

// Joins two canonical relative paths ("" is the root).
std::string JoinPath(absl::string_view a, absl::string_view b);

// The directory that holds a path's last component, plus that component, so callers act on
// the entry itself with *at() calls (AT_SYMLINK_NOFOLLOW, unlinkat, renameat2...), which
// never follow a final symlink.
struct ParentRef {
  // An O_PATH | O_DIRECTORY fd of the parent directory (the root itself for top-level names).
  ScopedFd dir;
  // The final component; empty when the path is the root.
  std::string name;
  // The canonical relative path (as NormalizePath).
  std::string path;
};

// The volume root: an open directory fd plus the lookups beneath it. Thread-compatible:
// the const methods may be called concurrently.
class SafeRoot {
 public:
  // Opens `root_path` (an absolute or cwd-relative directory). Returns NOT_FOUND if it does
  // not exist, FAILED_PRECONDITION if it is not a directory.
  static absl::StatusOr<SafeRoot> Open(const std::string& root_path);

  // Opens `path` (a contract path) beneath the root with open(2) `flags` (O_CLOEXEC is
  // added) and `mode` for O_CREAT. Symlinks are followed only while they stay beneath the
  // root. Returns INVALID_ARGUMENT for an invalid path or one that would leave the root,
  // NOT_FOUND if a component does not exist, FAILED_PRECONDITION if a non-final component
  // is not a directory (or `flags` has O_DIRECTORY and the target is not one), ALREADY_EXISTS
  // for O_EXCL on an existing entry, and other errno values as INTERNAL.
  absl::StatusOr<ScopedFd> OpenBeneath(absl::string_view path, int flags, int mode = 0) const;

  // Resolves everything but the last component of `path` (which must itself exist as a
  // directory). Same errors as OpenBeneath for the parent.
  absl::StatusOr<ParentRef> ResolveParent(absl::string_view path) const;

  int fd() const { return fd_.get(); }
  const std::string& root_path() const { return root_path_; }
  // True when openat2(2) is in use (false: the O_NOFOLLOW walk fallback).
  bool uses_openat2() const { return use_openat2_; }

  // For tests: force the fallback walk.
  void ForceWalkFallbackForTesting() { use_openat2_ = false; }

 private:
  SafeRoot(ScopedFd fd, std::string root_path, bool use_openat2)
      : fd_(std::move(fd)), root_path_(std::move(root_path)), use_openat2_(use_openat2) {}

  ScopedFd fd_;
  std::string root_path_;
  bool use_openat2_ = true;
};

// Reads `fd` to its end. nullopt on a read error or when it holds more than `limit` bytes.
std::optional<std::string> ReadToEnd(int fd, size_t limit);

// Maps an errno from a path operation to a Status with the contract's codes (ENOENT ->
// NOT_FOUND, EEXIST/ENOTEMPTY... see .cc). `what` names the path for the message.
absl::Status ErrnoToStatus(int err, absl::string_view op, absl::string_view what);

}  // namespace tidepool::supervisor
