#include "services/supervisor/safe_path.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace tidepool::supervisor {
namespace {

long Openat2(int dirfd, const char* path, int flags, int mode, uint64_t resolve) {
  struct open_how how;
  std::memset(&how, 0, sizeof(how));
  how.flags = static_cast<uint64_t>(flags);
  how.mode = (flags & (O_CREAT | O_TMPFILE)) != 0 ? static_cast<uint64_t>(mode) : 0;
  how.resolve = resolve;
  return syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

constexpr uint64_t kResolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;

// The component-by-component fallback: every component is opened with O_NOFOLLOW, so a
// symlink anywhere on the way is refused rather than followed.
absl::StatusOr<ScopedFd> WalkNoFollow(int root_fd, const std::string& path, int flags, int mode) {
  std::vector<std::string> parts =
      path.empty() ? std::vector<std::string>{} : absl::StrSplit(path, '/');
  ScopedFd cur(fcntl(root_fd, F_DUPFD_CLOEXEC, 0));
  if (!cur.valid()) {
    return ErrnoToStatus(errno, "dup", "root");
  }
  if (parts.empty()) {
    ScopedFd fd(openat(root_fd, ".", flags | O_CLOEXEC, mode));
    if (!fd.valid()) {
      return ErrnoToStatus(errno, "open", "root");
    }
    return fd;
  }
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    ScopedFd next(
        openat(cur.get(), parts[i].c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) {
      int err = errno;
      struct stat st;
      if (fstatat(cur.get(), parts[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          S_ISLNK(st.st_mode)) {
        return absl::InvalidArgumentError(
            absl::StrCat("path \"", path, "\" goes through a symbolic link"));
      }
      return ErrnoToStatus(err, "open", path);
    }
    cur = std::move(next);
  }
  ScopedFd fd(openat(cur.get(), parts.back().c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode));
  if (!fd.valid()) {
    int err = errno;
    struct stat lst;
    if (err == ELOOP || (fstatat(cur.get(), parts.back().c_str(), &lst, AT_SYMLINK_NOFOLLOW) == 0 &&
                         S_ISLNK(lst.st_mode))) {
      return absl::InvalidArgumentError(absl::StrCat("path \"", path, "\" is a symbolic link"));
    }
    return ErrnoToStatus(err, "open", path);
  }
  struct stat st;
  if (fstat(fd.get(), &st) == 0 && S_ISLNK(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("path \"", path, "\" is a symbolic link"));
  }
  return fd;
}

}  // namespace

void ScopedFd::Reset(int fd) {
  if (fd_ >= 0) {
    close(fd_);
  }
  fd_ = fd;
}

absl::StatusOr<std::string> NormalizePath(absl::string_view path) {
  if (path.size() > kMaxPathBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("path is longer than ", kMaxPathBytes, " bytes"));
  }
  if (path.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError("path contains a NUL byte");
  }
  std::vector<absl::string_view> out;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == ".") {
      continue;
    }
    if (part == "..") {
      return absl::InvalidArgumentError("path contains a \"..\" component");
    }
    if (part.size() > kMaxComponentBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("path component is longer than ", kMaxComponentBytes, " bytes"));
    }
    out.push_back(part);
  }
  return absl::StrJoin(out, "/");
}

std::string JoinPath(absl::string_view a, absl::string_view b) {
  if (a.empty()) {
    return std::string(b);
  }
  if (b.empty()) {
    return std::string(a);
  }
  return absl::StrCat(a, "/", b);
}

absl::Status ErrnoToStatus(int err, absl::string_view op, absl::string_view what) {
  std::string msg = absl::StrCat(op, " \"", what, "\": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    case ENOTDIR:
    case EISDIR:
    case ENOTEMPTY:
    case EACCES:
    case EPERM:
    case EROFS:
    case EBUSY:
      return absl::FailedPreconditionError(msg);
    case EXDEV:
    case ELOOP:
      return absl::InvalidArgumentError(
          absl::StrCat(op, " \"", what, "\": the path leaves the volume or loops"));
    case ENAMETOOLONG:
    case EINVAL:
      return absl::InvalidArgumentError(msg);
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::StatusOr<SafeRoot> SafeRoot::Open(const std::string& root_path) {
  ScopedFd fd(open(root_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) {
    return ErrnoToStatus(errno, "open root", root_path);
  }
  bool use_openat2 = true;
  long probe = Openat2(fd.get(), ".", O_PATH | O_DIRECTORY | O_CLOEXEC, 0, kResolve);
  if (probe < 0 && errno == ENOSYS) {
    use_openat2 = false;
  } else if (probe >= 0) {
    close(static_cast<int>(probe));
  }
  return SafeRoot(std::move(fd), root_path, use_openat2);
}

absl::StatusOr<ScopedFd> SafeRoot::OpenBeneath(absl::string_view path, int flags, int mode) const {
  std::string rel;
  {
    absl::StatusOr<std::string> norm = NormalizePath(path);
    if (!norm.ok()) {
      return norm.status();
    }
    rel = *std::move(norm);
  }
  if (!use_openat2_) {
    return WalkNoFollow(fd_.get(), rel, flags, mode);
  }
  const char* p = rel.empty() ? "." : rel.c_str();
  for (int attempt = 0; attempt < 8; ++attempt) {
    long r = Openat2(fd_.get(), p, flags | O_CLOEXEC, mode, kResolve);
    if (r >= 0) {
      return ScopedFd(static_cast<int>(r));
    }
    if (errno == EAGAIN || errno == EINTR) {
      continue;  // a concurrent rename raced the lookup; retry.
    }
    return ErrnoToStatus(errno, "open", rel);
  }
  return absl::UnavailableError(absl::StrCat("open \"", rel, "\": lookup kept racing"));
}

absl::StatusOr<ParentRef> SafeRoot::ResolveParent(absl::string_view path) const {
  ParentRef ref;
  {
    absl::StatusOr<std::string> norm = NormalizePath(path);
    if (!norm.ok()) {
      return norm.status();
    }
    ref.path = *std::move(norm);
  }
  std::string parent;
  size_t slash = ref.path.rfind('/');
  if (slash == std::string::npos) {
    parent = "";
    ref.name = ref.path;
  } else {
    parent = ref.path.substr(0, slash);
    ref.name = ref.path.substr(slash + 1);
  }
  absl::StatusOr<ScopedFd> dir = OpenBeneath(parent, O_PATH | O_DIRECTORY);
  if (!dir.ok()) {
    return dir.status();
  }
  ref.dir = *std::move(dir);
  return ref;
}

std::optional<std::string> ReadToEnd(int fd, size_t limit) {
  std::string out;
  char buffer[16384];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) return out;
    out.append(buffer, static_cast<size_t>(n));
    if (out.size() > limit) return std::nullopt;
  }
}

}  // namespace tidepool::supervisor
