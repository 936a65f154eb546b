#include "services/provisioner/volume_image.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/status_macros.h"

extern char** environ;

namespace tidepool::provisioner {
namespace {

constexpr int64_t kMinBytes = 16LL << 20;

// Runs `argv` (an absolute program path first) and waits; its output goes to a pipe whose
// last 2 KiB are returned in the error.
// Runs `argv`; an exit status above `ok_exit_max` (or a signal) is UNAVAILABLE with the tail of
// its output.
absl::Status Run(const std::vector<std::string>& argv, int ok_exit_max = 0) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return absl::UnavailableError("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, out[1], 2);
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = ::posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  std::string output;
  char buffer[4096];
  for (ssize_t n; (n = ::read(out[0], buffer, sizeof(buffer))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    output.append(buffer, static_cast<size_t>(n));
    if (output.size() > 2048) output.erase(0, output.size() - 2048);
  }
  ::close(out[0]);
  if (spawned != 0) {
    return absl::UnavailableError(absl::StrCat("cannot run ", argv[0], ": ", std::strerror(spawned)));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) > ok_exit_max) {
    while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
    return absl::UnavailableError(absl::StrCat(argv[0], " failed: ", output));
  }
  return absl::OkStatus();
}

std::string FindTool(const char* name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    const std::string path = absl::StrCat(dir, name);
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

// Grows the (unmounted) image to `bytes` when the quota was raised: the file, a forced check
// (exit 1 means it corrected something, which is fine), then the file system. A lowered
// quota is not applied to an existing volume: shrinking could lose data.
absl::Status GrowIfSmaller(const std::string& image, int64_t bytes) {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(image, ec);
  if (ec || size >= static_cast<uintmax_t>(bytes)) return absl::OkStatus();
  if (::truncate(image.c_str(), bytes) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot grow ", image, ": ", std::strerror(errno)));
  }
  TP_RETURN_IF_ERROR(Run({FindTool("e2fsck"), "-f", "-p", image}, /*ok_exit_max=*/1));
  return Run({FindTool("resize2fs"), image});
}

}  // namespace

bool ImageVolumesSupported() {
  return ::geteuid() == 0 && ::access("/dev/loop-control", R_OK | W_OK) == 0 &&
         !FindTool("mkfs.ext4").empty() && !FindTool("mount").empty() &&
         !FindTool("umount").empty() && !FindTool("e2fsck").empty() &&
         !FindTool("resize2fs").empty();
}

bool IsMountPoint(const std::string& dir) {
  struct stat self {};
  struct stat parent {};
  if (::stat(dir.c_str(), &self) != 0 || ::stat((dir + "/..").c_str(), &parent) != 0) return false;
  return self.st_dev != parent.st_dev;
}

absl::Status EnsureImageVolume(const std::string& image, const std::string& mount_dir,
                               int64_t bytes, uint32_t uid, uint32_t gid, bool may_remount) {
  if (bytes < kMinBytes) {
    return absl::InvalidArgumentError("an image volume needs a quota of at least 16 MiB");
  }
  std::error_code ec;
  if (IsMountPoint(mount_dir)) {
    const uintmax_t size = std::filesystem::file_size(image, ec);
    if (!may_remount || ec || size >= static_cast<uintmax_t>(bytes)) return absl::OkStatus();
    // A raised quota: grown while nothing uses the volume (still in use: at a later start).
    if (!Run({FindTool("umount"), mount_dir}).ok()) return absl::OkStatus();
  }
  const bool have_image = std::filesystem::exists(image, ec);
  if (!have_image && std::filesystem::exists(mount_dir, ec) &&
      !std::filesystem::is_empty(mount_dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat(mount_dir, " already holds files without an image; it keeps a soft quota"));
  }
  if (!have_image) {
    std::filesystem::create_directories(std::filesystem::path(image).parent_path(), ec);
    const std::string partial = image + ".partial";
    const int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ::ftruncate(fd, bytes) != 0) {
      const int err = errno;
      if (fd >= 0) ::close(fd);
      return absl::UnavailableError(absl::StrCat("cannot create ", partial, ": ", std::strerror(err)));
    }
    ::close(fd);
    absl::Status made = Run({FindTool("mkfs.ext4"), "-q", "-F", "-m", "0", "-E",
                             absl::StrCat("lazy_itable_init=1,lazy_journal_init=1,root_owner=",
                                          uid, ":", gid),
                             partial});
    if (!made.ok()) {
      std::filesystem::remove(partial, ec);
      return made;
    }
    std::filesystem::rename(partial, image, ec);
    if (ec) return absl::UnavailableError(absl::StrCat("cannot rename ", partial, ": ", ec.message()));
  }
  TP_RETURN_IF_ERROR(GrowIfSmaller(image, bytes));
  std::filesystem::create_directories(mount_dir, ec);
  absl::Status mounted =
      Run({FindTool("mount"), "-o", "loop,nosuid,nodev,noatime", image, mount_dir});
  if (!mounted.ok()) return mounted;
  // A fresh file system's lost+found is not the user's; fsck makes one again if it needs it.
  ::rmdir((mount_dir + "/lost+found").c_str());
  return absl::OkStatus();
}

absl::Status ReleaseImageVolume(const std::string& image, const std::string& mount_dir) {
  if (IsMountPoint(mount_dir)) {
    absl::Status unmounted = Run({FindTool("umount"), mount_dir});
    if (!unmounted.ok()) return unmounted;
  }
  std::error_code ec;
  std::filesystem::remove(image, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot remove ", image, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> MountedBytesUsed(const std::string& dir) {
  struct statvfs fs {};
  if (::statvfs(dir.c_str(), &fs) != 0) {
    return absl::UnavailableError(absl::StrCat("statvfs ", dir, ": ", std::strerror(errno)));
  }
  return static_cast<int64_t>((fs.f_blocks - fs.f_bfree) * fs.f_frsize);
}

}  // namespace tidepool::provisioner
