#include "services/supervisor/file_service.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "lib/status_macros.h"

namespace tidepool::supervisor {
namespace {

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;
constexpr size_t kIoChunk = 64 * 1024;
constexpr int64_t kDirBytes = 4096;

bool IsDir(const struct stat& st) { return S_ISDIR(st.st_mode); }

v1::FileType TypeOf(const struct stat& st) {
  if (S_ISREG(st.st_mode)) {
    return v1::FILE_TYPE_REGULAR;
  }
  if (S_ISDIR(st.st_mode)) {
    return v1::FILE_TYPE_DIRECTORY;
  }
  if (S_ISLNK(st.st_mode)) {
    return v1::FILE_TYPE_SYMLINK;
  }
  return v1::FILE_TYPE_OTHER;
}

std::string BaseName(absl::string_view path) {
  size_t slash = path.rfind('/');
  return std::string(slash == absl::string_view::npos ? path : path.substr(slash + 1));
}

std::string DirName(absl::string_view path) {
  size_t slash = path.rfind('/');
  return slash == absl::string_view::npos ? std::string() : std::string(path.substr(0, slash));
}

std::string ReadLinkAt(int dirfd, const std::string& name) {
  std::string buf(4096, '\0');
  ssize_t n = readlinkat(dirfd, name.c_str(), buf.data(), buf.size());
  if (n < 0) {
    return "";
  }
  buf.resize(static_cast<size_t>(n));
  return buf;
}

v1::FileInfo InfoFromStat(const struct stat& st, absl::string_view path, std::string target) {
  v1::FileInfo info;
  info.set_name(BaseName(path));
  info.set_path(std::string(path));
  info.set_type(TypeOf(st));
  info.set_size_bytes(static_cast<int64_t>(st.st_size));
  info.set_mode(st.st_mode & 07777);
  info.mutable_modify_time()->set_seconds(st.st_mtim.tv_sec);
  info.mutable_modify_time()->set_nanos(static_cast<int32_t>(st.st_mtim.tv_nsec));
  if (S_ISLNK(st.st_mode)) {
    info.set_symlink_target(std::move(target));
  }
  return info;
}

// Names in the directory `dirfd` (any fd of it, O_PATH allowed), without "." and "..".
absl::StatusOr<std::vector<std::string>> ReadDirNames(int dirfd, absl::string_view what) {
  int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return ErrnoToStatus(errno, "open directory", what);
  }
  DIR* d = fdopendir(fd);
  if (d == nullptr) {
    int err = errno;
    close(fd);
    return ErrnoToStatus(err, "read directory", what);
  }
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) {
      continue;
    }
    names.emplace_back(e->d_name);
  }
  int err = errno;
  closedir(d);
  if (err != 0) {
    return ErrnoToStatus(err, "read directory", what);
  }
  return names;
}

// Opens the subdirectory `name` of `dirfd` without following a link.
absl::StatusOr<ScopedFd> OpenSubdir(int dirfd, const std::string& name, absl::string_view what) {
  ScopedFd fd(openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) {
    return ErrnoToStatus(errno, "open directory", what);
  }
  return fd;
}

// Bytes used by the entry `name` in `dirfd` (st_blocks * 512, recursively, links not
// followed). `apparent` sums st_size instead.
int64_t UsageAt(int dirfd, const std::string& name, bool apparent, int depth = 0) {
  struct stat st;
  if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return 0;
  }
  int64_t total =
      apparent ? (S_ISREG(st.st_mode) ? st.st_size : 0) : static_cast<int64_t>(st.st_blocks) * 512;
  if (S_ISDIR(st.st_mode) && depth < 4096) {
    absl::StatusOr<ScopedFd> sub = OpenSubdir(dirfd, name, name);
    if (!sub.ok()) {
      return total;
    }
    absl::StatusOr<std::vector<std::string>> names = ReadDirNames(sub->get(), name);
    if (!names.ok()) {
      return total;
    }
    for (const std::string& n : *names) {
      total += UsageAt(sub->get(), n, apparent, depth + 1);
    }
  }
  return total;
}

// Removes the entry `name` of `dirfd` and everything below it; never follows links.
absl::Status RemoveTreeAt(int dirfd, const std::string& name, int64_t* count) {
  struct stat st;
  if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoToStatus(errno, "stat", name);
  }
  if (IsDir(st)) {
    TP_ASSIGN_OR_RETURN(ScopedFd sub, OpenSubdir(dirfd, name, name));
    TP_ASSIGN_OR_RETURN(std::vector<std::string> names, ReadDirNames(sub.get(), name));
    for (const std::string& n : names) {
      TP_RETURN_IF_ERROR(RemoveTreeAt(sub.get(), n, count));
    }
    if (unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0) {
      return ErrnoToStatus(errno, "remove directory", name);
    }
  } else if (unlinkat(dirfd, name.c_str(), 0) != 0) {
    return ErrnoToStatus(errno, "remove", name);
  }
  if (count != nullptr) {
    ++*count;
  }
  return absl::OkStatus();
}

std::string RandomSuffix() {
  unsigned char bytes[8] = {};
  if (getrandom(bytes, sizeof(bytes), 0) != static_cast<ssize_t>(sizeof(bytes))) {
    auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    std::memcpy(bytes, &now, sizeof(bytes));
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

bool WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// ---- Page tokens: "lf1" NUL path NUL hidden NUL is_dir NUL name, web-safe base64. ----

std::string MakePageToken(absl::string_view path, bool hidden, bool is_dir,
                          absl::string_view name) {
  std::string raw = absl::StrCat(
      "lf1", absl::string_view("\0", 1), path, absl::string_view("\0", 1), hidden ? "1" : "0",
      absl::string_view("\0", 1), is_dir ? "1" : "0", absl::string_view("\0", 1), name);
  return absl::WebSafeBase64Escape(raw);
}

struct PageCursor {
  bool is_dir = false;
  std::string name;
};

absl::StatusOr<PageCursor> ParsePageToken(absl::string_view token, absl::string_view path,
                                          bool hidden) {
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw)) {
    return absl::InvalidArgumentError("malformed page token");
  }
  std::vector<std::string> parts = absl::StrSplit(raw, absl::MaxSplits('\0', 4));
  if (parts.size() != 5 || parts[0] != "lf1" || parts[1] != path ||
      parts[2] != (hidden ? "1" : "0") || (parts[3] != "0" && parts[3] != "1") ||
      parts[4].empty()) {
    return absl::InvalidArgumentError("malformed page token, or issued for other filters");
  }
  return PageCursor{parts[3] == "1", parts[4]};
}

// ---- Copy ----

struct CopyStats {
  int64_t files = 0;
  int64_t bytes = 0;
};

absl::Status CopyAt(FileService& fs, int sdir, const std::string& sname, int ddir,
                    const std::string& dname, CopyStats* stats, int depth) {
  if (depth > 4096) {
    return absl::InvalidArgumentError("tree too deep to copy");
  }
  struct stat st;
  if (fstatat(sdir, sname.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoToStatus(errno, "stat", sname);
  }
  if (S_ISDIR(st.st_mode)) {
    TP_RETURN_IF_ERROR(fs.Reserve(kDirBytes));
    if (mkdirat(ddir, dname.c_str(), (st.st_mode & 0777) | 0700) != 0) {
      fs.Release(kDirBytes);
      return ErrnoToStatus(errno, "create directory", dname);
    }
    TP_ASSIGN_OR_RETURN(ScopedFd s, OpenSubdir(sdir, sname, sname));
    TP_ASSIGN_OR_RETURN(ScopedFd d, OpenSubdir(ddir, dname, dname));
    TP_ASSIGN_OR_RETURN(std::vector<std::string> names, ReadDirNames(s.get(), sname));
    for (const std::string& n : names) {
      TP_RETURN_IF_ERROR(CopyAt(fs, s.get(), n, d.get(), n, stats, depth + 1));
    }
    return absl::OkStatus();
  }
  if (S_ISLNK(st.st_mode)) {
    std::string target = ReadLinkAt(sdir, sname);
    if (symlinkat(target.c_str(), ddir, dname.c_str()) != 0) {
      return ErrnoToStatus(errno, "create link", dname);
    }
    ++stats->files;
    return absl::OkStatus();
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::OkStatus();  // devices, FIFOs, sockets are not copied.
  }
  ScopedFd in(openat(sdir, sname.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!in.valid()) {
    return ErrnoToStatus(errno, "open", sname);
  }
  ScopedFd out(openat(ddir, dname.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                      st.st_mode & 0777));
  if (!out.valid()) {
    return ErrnoToStatus(errno, "create", dname);
  }
  std::string buf(kIoChunk, '\0');
  for (;;) {
    ssize_t n = read(in.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return ErrnoToStatus(errno, "read", sname);
    }
    if (n == 0) {
      break;
    }
    TP_RETURN_IF_ERROR(fs.Reserve(n));
    if (!WriteAll(out.get(), buf.data(), static_cast<size_t>(n))) {
      return ErrnoToStatus(errno, "write", dname);
    }
    stats->bytes += n;
  }
  ++stats->files;
  return absl::OkStatus();
}

// ---- Archive extraction ----

// Splits and checks an in-archive path; returns its components.
absl::StatusOr<std::vector<std::string>> EntryComponents(absl::string_view raw,
                                                         const ExtractLimits& limits) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsafe archive entry \"", absl::CHexEscape(raw.substr(0, 300)), "\": ", why));
  };
  if (raw.size() > kMaxPathBytes) {
    return bad("path over 4096 bytes");
  }
  if (absl::StartsWith(raw, "/")) {
    return bad("absolute path");
  }
  if (absl::StrContains(raw, '\\')) {
    return bad("backslash in path");
  }
  std::vector<std::string> comps;
  for (absl::string_view part : absl::StrSplit(raw, '/')) {
    if (part.empty() || part == ".") {
      continue;
    }
    if (part == "..") {
      return bad("\"..\" component");
    }
    if (part.size() > kMaxComponentBytes) {
      return bad("name over 255 bytes");
    }
    comps.emplace_back(part);
  }
  if (!comps.empty() && comps[0].size() == 2 && comps[0][1] == ':' &&
      absl::ascii_isalpha(static_cast<unsigned char>(comps[0][0]))) {
    return bad("Windows drive path");
  }
  if (static_cast<int>(comps.size()) > limits.max_depth) {
    return bad("nested too deep");
  }
  return comps;
}

class Extractor {
 public:
  Extractor(FileService& fs, const ExtractLimits& limits, int staging_fd)
      : fs_(fs),
        limits_(limits),
        staging_fd_(staging_fd),
        deadline_(std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(absl::ToInt64Milliseconds(limits.time_budget))) {}

  absl::Status Run(int archive_fd) {
    struct archive* a = archive_read_new();
    if (a == nullptr) {
      return absl::InternalError("archive_read_new failed");
    }
    std::unique_ptr<struct archive, int (*)(struct archive*)> guard(a, archive_read_free);
    archive_read_support_filter_all(a);
    archive_read_support_format_all(a);
    if (archive_read_open_fd(a, archive_fd, 64 * 1024) != ARCHIVE_OK) {
      return absl::InvalidArgumentError(absl::StrCat(
          "not a readable archive: ", archive_error_string(a) ? archive_error_string(a) : ""));
    }
    for (;;) {
      struct archive_entry* e = nullptr;
      int r = archive_read_next_header(a, &e);
      if (r == ARCHIVE_EOF) {
        break;
      }
      if (r < ARCHIVE_WARN) {
        const char* err = archive_error_string(a);
        return absl::InvalidArgumentError(
            absl::StrCat("not a readable archive: ", err != nullptr ? err : "bad header"));
      }
      TP_RETURN_IF_ERROR(CheckTime());
      if (++entries_ > limits_.max_entries) {
        return absl::ResourceExhaustedError(
            absl::StrCat("archive holds more than ", limits_.max_entries, " entries"));
      }
      TP_RETURN_IF_ERROR(ExtractEntry(a, e));
    }
    return absl::OkStatus();
  }

  int64_t files() const { return files_; }
  int64_t dirs() const { return dirs_; }
  int64_t symlinks() const { return symlinks_; }
  int64_t bytes() const { return total_bytes_; }

 private:
  absl::Status CheckTime() {
    if (std::chrono::steady_clock::now() > deadline_) {
      return absl::ResourceExhaustedError("extraction exceeded its time budget");
    }
    return absl::OkStatus();
  }

  absl::Status Charge(int64_t bytes, absl::string_view entry) {
    if (total_bytes_ + bytes > limits_.max_total_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("expanded size exceeds ", limits_.max_total_bytes, " bytes at entry \"",
                       absl::CHexEscape(entry), "\""));
    }
    absl::Status s = fs_.Reserve(bytes);
    if (!s.ok()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "expanded size exceeds the volume quota at entry \"", absl::CHexEscape(entry), "\""));
    }
    total_bytes_ += bytes;
    return absl::OkStatus();
  }

  // Walks (creating) the directories comps[0..n) beneath the staging directory, never
  // through a link.
  absl::StatusOr<ScopedFd> OpenParent(const std::vector<std::string>& comps, size_t n, bool create,
                                      absl::string_view entry) {
    ScopedFd cur(fcntl(staging_fd_, F_DUPFD_CLOEXEC, 0));
    for (size_t i = 0; i < n; ++i) {
      const std::string& c = comps[i];
      if (create) {
        if (mkdirat(cur.get(), c.c_str(), 0755) == 0) {
          // Directories implied by entry paths are bounded like entries.
          if (++implicit_dirs_ > limits_.max_entries) {
            return absl::ResourceExhaustedError(
                absl::StrCat("archive implies more than ", limits_.max_entries, " directories"));
          }
        } else if (errno != EEXIST) {
          return ErrnoToStatus(errno, "create directory for entry", entry);
        }
      }
      ScopedFd next(openat(cur.get(), c.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!next.valid()) {
        if (errno == ENOENT && !create) {
          return absl::InvalidArgumentError(absl::StrCat(
              "unsafe archive entry \"", absl::CHexEscape(entry), "\": link target missing"));
        }
        return absl::InvalidArgumentError(
            absl::StrCat("unsafe archive entry \"", absl::CHexEscape(entry),
                         "\": goes through a symbolic link or a file"));
      }
      cur = std::move(next);
    }
    return cur;
  }

  // Makes room for a non-directory at `name`: an earlier non-directory entry of the same
  // name is replaced (removed, never written through); a directory is a conflict.
  absl::Status ClearName(int dirfd, const std::string& name, absl::string_view entry) {
    struct stat st;
    if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return absl::OkStatus();
    }
    if (IsDir(st)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unsafe archive entry \"", absl::CHexEscape(entry), "\": collides with a directory"));
    }
    if (unlinkat(dirfd, name.c_str(), 0) != 0) {
      return ErrnoToStatus(errno, "replace entry", entry);
    }
    return absl::OkStatus();
  }

  absl::Status ExtractEntry(struct archive* a, struct archive_entry* e) {
    const char* raw_c = archive_entry_pathname(e);
    if (raw_c == nullptr) {
      raw_c = archive_entry_pathname_utf8(e);
    }
    if (raw_c == nullptr) {
      return absl::InvalidArgumentError("archive entry without a readable name");
    }
    std::string raw(raw_c);
    TP_ASSIGN_OR_RETURN(std::vector<std::string> comps, EntryComponents(raw, limits_));
    if (comps.empty()) {
      return absl::OkStatus();  // "./" itself.
    }
    const std::string& name = comps.back();
    const char* hardlink = archive_entry_hardlink(e);
    mode_t type = archive_entry_filetype(e);
    auto unsafe = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("unsafe archive entry \"", absl::CHexEscape(raw), "\": ", why));
    };

    if (hardlink != nullptr) {
      TP_ASSIGN_OR_RETURN(std::vector<std::string> tcomps, EntryComponents(hardlink, limits_));
      if (tcomps.empty()) {
        return unsafe("hard link to the destination itself");
      }
      TP_ASSIGN_OR_RETURN(ScopedFd tparent, OpenParent(tcomps, tcomps.size() - 1, false, raw));
      TP_ASSIGN_OR_RETURN(ScopedFd parent, OpenParent(comps, comps.size() - 1, true, raw));
      TP_RETURN_IF_ERROR(ClearName(parent.get(), name, raw));
      if (linkat(tparent.get(), tcomps.back().c_str(), parent.get(), name.c_str(), 0) != 0) {
        return unsafe("hard link target is not an extracted entry");
      }
      ++files_;
      return absl::OkStatus();
    }

    switch (type) {
      case AE_IFDIR: {
        TP_ASSIGN_OR_RETURN(ScopedFd parent, OpenParent(comps, comps.size(), true, raw));
        ++dirs_;
        return absl::OkStatus();
      }
      case AE_IFLNK: {
        const char* target_c = archive_entry_symlink(e);
        std::string target = target_c != nullptr ? target_c : "";
        TP_RETURN_IF_ERROR(CheckSymlinkTarget(target, comps.size() - 1, raw));
        TP_ASSIGN_OR_RETURN(ScopedFd parent, OpenParent(comps, comps.size() - 1, true, raw));
        TP_RETURN_IF_ERROR(ClearName(parent.get(), name, raw));
        if (symlinkat(target.c_str(), parent.get(), name.c_str()) != 0) {
          return ErrnoToStatus(errno, "create link for entry", raw);
        }
        ++symlinks_;
        return absl::OkStatus();
      }
      case AE_IFREG:
      case 0:
        break;
      default:
        return unsafe("device, FIFO or socket");
    }

    TP_ASSIGN_OR_RETURN(ScopedFd parent, OpenParent(comps, comps.size() - 1, true, raw));
    TP_RETURN_IF_ERROR(ClearName(parent.get(), name, raw));
    mode_t mode = (archive_entry_perm(e) & 0777) | 0600;
    ScopedFd out(openat(parent.get(), name.c_str(),
                        O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
    if (!out.valid()) {
      return ErrnoToStatus(errno, "create entry", raw);
    }
    int64_t raw_start = archive_filter_bytes(a, -1);
    int64_t end = 0;  // expanded bytes of this entry (sparse holes count)
    for (;;) {
      const void* buf = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      int r = archive_read_data_block(a, &buf, &size, &offset);
      if (r == ARCHIVE_EOF) {
        break;
      }
      if (r < ARCHIVE_WARN) {
        const char* err = archive_error_string(a);
        return unsafe(absl::StrCat("cannot be read: ", err != nullptr ? err : "data error"));
      }
      TP_RETURN_IF_ERROR(CheckTime());
      int64_t new_end = std::max<int64_t>(end, offset + static_cast<int64_t>(size));
      TP_RETURN_IF_ERROR(Charge(new_end - end, raw));
      end = new_end;
      int64_t consumed = std::max<int64_t>(archive_filter_bytes(a, -1) - raw_start, 1);
      if (end > limits_.ratio_slack_bytes && end / consumed > limits_.max_ratio) {
        return absl::ResourceExhaustedError(absl::StrCat("archive entry \"", absl::CHexEscape(raw),
                                                         "\" expands more than ", limits_.max_ratio,
                                                         ":1 (zip bomb)"));
      }
      const char* p = static_cast<const char*>(buf);
      size_t left = size;
      off_t at = offset;
      while (left > 0) {
        ssize_t w = pwrite(out.get(), p, left, at);
        if (w < 0) {
          if (errno == EINTR) {
            continue;
          }
          return ErrnoToStatus(errno, "write entry", raw);
        }
        p += w;
        at += w;
        left -= static_cast<size_t>(w);
      }
    }
    if (ftruncate(out.get(), end) != 0) {
      return ErrnoToStatus(errno, "size entry", raw);
    }
    ++files_;
    return absl::OkStatus();
  }

  // A link's target must be relative, and ".." may only lead it (then it climbs real
  // directories created without following links) and must not climb above the destination.
  absl::Status CheckSymlinkTarget(const std::string& target, size_t entry_dir_depth,
                                  absl::string_view raw) {
    auto unsafe = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("unsafe archive entry \"", absl::CHexEscape(raw), "\": ", why));
    };
    if (target.empty()) {
      return unsafe("empty link target");
    }
    if (target.size() > kMaxPathBytes) {
      return unsafe("link target over 4096 bytes");
    }
    if (target[0] == '/') {
      return unsafe("link to an absolute path");
    }
    if (absl::StrContains(target, '\\')) {
      return unsafe("backslash in link target");
    }
    size_t ups = 0;
    bool descended = false;
    for (absl::string_view part : absl::StrSplit(target, '/')) {
      if (part.empty() || part == ".") {
        continue;
      }
      if (part == "..") {
        if (descended) {
          return unsafe("\"..\" after a name in link target");
        }
        ++ups;
        continue;
      }
      descended = true;
    }
    if (ups > entry_dir_depth) {
      return unsafe("link points outside the destination");
    }
    return absl::OkStatus();
  }

  FileService& fs_;
  const ExtractLimits& limits_;
  int staging_fd_;
  std::chrono::steady_clock::time_point deadline_;
  int64_t entries_ = 0;
  int64_t implicit_dirs_ = 0;
  int64_t files_ = 0;
  int64_t dirs_ = 0;
  int64_t symlinks_ = 0;
  int64_t total_bytes_ = 0;
};

// Checks (dry_run) or performs the move of the staged tree `sdir` into `ddir`.
absl::Status MergeInto(int sdir, int ddir, bool overwrite, bool dry_run, const std::string& rel) {
  TP_ASSIGN_OR_RETURN(std::vector<std::string> names, ReadDirNames(sdir, rel));
  std::sort(names.begin(), names.end());
  for (const std::string& n : names) {
    std::string p = JoinPath(rel, n);
    struct stat sst;
    struct stat dst;
    if (fstatat(sdir, n.c_str(), &sst, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoToStatus(errno, "stat staged", p);
    }
    if (fstatat(ddir, n.c_str(), &dst, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) {
        return ErrnoToStatus(errno, "stat", p);
      }
      if (!dry_run && renameat2(sdir, n.c_str(), ddir, n.c_str(), RENAME_NOREPLACE) != 0) {
        return ErrnoToStatus(errno, "move into place", p);
      }
      continue;
    }
    if (IsDir(sst) && IsDir(dst)) {
      TP_ASSIGN_OR_RETURN(ScopedFd s, OpenSubdir(sdir, n, p));
      TP_ASSIGN_OR_RETURN(ScopedFd d, OpenSubdir(ddir, n, p));
      TP_RETURN_IF_ERROR(MergeInto(s.get(), d.get(), overwrite, dry_run, p));
      continue;
    }
    if (!overwrite) {
      return absl::AlreadyExistsError(
          absl::StrCat("archive entry \"", absl::CHexEscape(p), "\" exists in the destination"));
    }
    if (!dry_run) {
      // Swap atomically, then remove what was there (a link is removed, never followed).
      if (renameat2(sdir, n.c_str(), ddir, n.c_str(), RENAME_EXCHANGE) != 0) {
        return ErrnoToStatus(errno, "replace", p);
      }
      TP_RETURN_IF_ERROR(RemoveTreeAt(sdir, n, nullptr));
    }
  }
  return absl::OkStatus();
}

// ---- Download ----

struct WriteCtx {
  const std::function<bool(absl::string_view)>* sink = nullptr;
  bool stopped = false;
};

la_ssize_t ArchiveWriteCb(struct archive* /*a*/, void* client, const void* buf, size_t n) {
  auto* ctx = static_cast<WriteCtx*>(client);
  // After the receiver stops, output is swallowed (not failed) so that libarchive can still
  // close cleanly and free its compressor state; AddTree notices `stopped` and unwinds.
  if (!ctx->stopped && !(*ctx->sink)(absl::string_view(static_cast<const char*>(buf), n))) {
    ctx->stopped = true;
  }
  return static_cast<la_ssize_t>(n);
}

absl::Status ArchiveError(struct archive* a, const WriteCtx& ctx, absl::string_view what) {
  if (ctx.stopped) {
    return absl::UnavailableError("download stopped by the receiver");
  }
  const char* err = archive_error_string(a);
  return absl::InternalError(absl::StrCat(what, ": ", err != nullptr ? err : "archive error"));
}

absl::Status AddTree(struct archive* a, const WriteCtx& ctx, int dirfd, const std::string& rel,
                     int depth) {
  if (depth > 4096) {
    return absl::FailedPreconditionError("tree too deep to download");
  }
  TP_ASSIGN_OR_RETURN(std::vector<std::string> names, ReadDirNames(dirfd, rel));
  std::sort(names.begin(), names.end());
  for (const std::string& n : names) {
    std::string p = JoinPath(rel, n);
    struct stat st;
    if (fstatat(dirfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      continue;  // vanished meanwhile
    }
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) {
      continue;
    }
    ScopedFd file;
    if (S_ISREG(st.st_mode)) {
      file.Reset(openat(dirfd, n.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!file.valid() || fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
        continue;
      }
    }
    std::unique_ptr<struct archive_entry, void (*)(struct archive_entry*)> e(archive_entry_new(),
                                                                             archive_entry_free);
    archive_entry_set_pathname(e.get(), S_ISDIR(st.st_mode) ? (p + "/").c_str() : p.c_str());
    archive_entry_set_perm(e.get(), st.st_mode & 0777);
    archive_entry_set_mtime(e.get(), st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    if (S_ISDIR(st.st_mode)) {
      archive_entry_set_filetype(e.get(), AE_IFDIR);
      archive_entry_set_size(e.get(), 0);
    } else if (S_ISLNK(st.st_mode)) {
      archive_entry_set_filetype(e.get(), AE_IFLNK);
      archive_entry_set_symlink(e.get(), ReadLinkAt(dirfd, n).c_str());
      archive_entry_set_size(e.get(), 0);
    } else {
      archive_entry_set_filetype(e.get(), AE_IFREG);
      archive_entry_set_size(e.get(), st.st_size);
    }
    if (ctx.stopped || archive_write_header(a, e.get()) < ARCHIVE_WARN) {
      return ArchiveError(a, ctx, "write header");
    }
    if (S_ISREG(st.st_mode)) {
      std::string buf(kIoChunk, '\0');
      int64_t left = st.st_size;
      while (left > 0) {
        ssize_t r =
            read(file.get(), buf.data(), static_cast<size_t>(std::min<int64_t>(left, kIoChunk)));
        if (r < 0 && errno == EINTR) {
          continue;
        }
        if (r <= 0) {  // shrank meanwhile: pad with zeros to the declared size
          std::fill(buf.begin(), buf.end(), '\0');
          r = static_cast<ssize_t>(std::min<int64_t>(left, kIoChunk));
        }
        if (archive_write_data(a, buf.data(), static_cast<size_t>(r)) < 0 || ctx.stopped) {
          return ArchiveError(a, ctx, "write data");
        }
        left -= r;
      }
    }
    if (S_ISDIR(st.st_mode)) {
      absl::StatusOr<ScopedFd> sub = OpenSubdir(dirfd, n, p);
      if (sub.ok()) {
        TP_RETURN_IF_ERROR(AddTree(a, ctx, sub->get(), p, depth + 1));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

FileService::FileService(std::string root, int64_t quota_bytes, ExtractLimits limits)
    : quota_bytes_(quota_bytes), limits_(limits) {
  absl::StatusOr<SafeRoot> r = SafeRoot::Open(root);
  if (r.ok()) {
    root_ = std::make_unique<SafeRoot>(*std::move(r));
  } else {
    root_status_ = r.status();
  }
}

absl::StatusOr<const SafeRoot*> FileService::root() const {
  if (root_ == nullptr) {
    return root_status_;
  }
  return root_.get();
}

void FileService::SetStampedPaths(std::vector<std::string> paths) {
  absl::MutexLock lock(&mu_);
  stamped_ = std::move(paths);
}

bool FileService::IsStamped(absl::string_view path) {
  absl::MutexLock lock(&mu_);
  return std::find(stamped_.begin(), stamped_.end(), path) != stamped_.end();
}

bool FileService::HasStampedAtOrBelow(absl::string_view path) {
  absl::MutexLock lock(&mu_);
  for (const std::string& s : stamped_) {
    if (path.empty() || s == path || absl::StartsWith(s, absl::StrCat(path, "/"))) {
      return true;
    }
  }
  return false;
}

absl::StatusOr<int64_t> FileService::UsedBytesLocked() {
  if (!used_known_) {
    TP_ASSIGN_OR_RETURN(const SafeRoot* r, root());
    TP_ASSIGN_OR_RETURN(std::vector<std::string> names, ReadDirNames(r->fd(), "root"));
    int64_t total = 0;
    for (const std::string& n : names) {
      total += UsageAt(r->fd(), n, /*apparent=*/false);
    }
    used_bytes_ = total;
    used_known_ = true;
  }
  return used_bytes_;
}

absl::StatusOr<int64_t> FileService::UsedBytes() {
  absl::MutexLock lock(&mu_);
  return UsedBytesLocked();
}

absl::Status FileService::Reserve(int64_t bytes) {
  if (quota_bytes_ <= 0 || bytes <= 0) {
    return absl::OkStatus();
  }
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(int64_t used, UsedBytesLocked());
  if (used + bytes > quota_bytes_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("volume quota of ", quota_bytes_, " bytes reached"));
  }
  used_bytes_ += bytes;
  return absl::OkStatus();
}

void FileService::Release(int64_t bytes) {
  if (bytes <= 0) {
    return;
  }
  absl::MutexLock lock(&mu_);
  used_bytes_ = std::max<int64_t>(0, used_bytes_ - bytes);
}

void FileService::InvalidateUsage() {
  absl::MutexLock lock(&mu_);
  used_known_ = false;
}

absl::StatusOr<v1::FileInfo> FileService::Describe(absl::string_view path) {
  TP_ASSIGN_OR_RETURN(const SafeRoot* r, root());
  TP_ASSIGN_OR_RETURN(ParentRef ref, r->ResolveParent(path));
  struct stat st;
  if (ref.name.empty()) {
    if (fstat(r->fd(), &st) != 0) {
      return ErrnoToStatus(errno, "stat", "root");
    }
    return InfoFromStat(st, "", "");
  }
  if (fstatat(ref.dir.get(), ref.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoToStatus(errno, "stat", ref.path);
  }
  v1::FileInfo info = InfoFromStat(st, ref.path, ReadLinkAt(ref.dir.get(), ref.name));
  info.set_stamped(IsStamped(ref.path));
  return info;
}

absl::StatusOr<v1::StatFileResponse> FileService::StatFile(const v1::StatFileRequest& req) {
  v1::StatFileResponse resp;
  TP_ASSIGN_OR_RETURN(*resp.mutable_file(), Describe(req.path()));
  return resp;
}

absl::StatusOr<v1::ListFilesResponse> FileService::ListFiles(const v1::ListFilesRequest& req) {
  TP_ASSIGN_OR_RETURN(const SafeRoot* r, root());
  TP_ASSIGN_OR_RETURN(std::string path, NormalizePath(req.path()));
  int page_size = req.page().page_size();
  if (page_size < 0) {
    return absl::InvalidArgumentError("page_size must not be negative");
  }
  page_size = page_size == 0 ? kDefaultPageSize : std::min(page_size, kMaxPageSize);
  std::optional<PageCursor> cursor;
  if (!req.page().page_token().empty()) {
    TP_ASSIGN_OR_RETURN(cursor,
                        ParsePageToken(req.page().page_token(), path, req.include_hidden()));
  }
  TP_ASSIGN_OR_RETURN(ScopedFd dir, r->OpenBeneath(path, O_RDONLY | O_DIRECTORY));
  v1::ListFilesResponse resp;
  struct stat dst;
  if (fstat(dir.get(), &dst) != 0) {
    return ErrnoToStatus(errno, "stat", path);
  }
  *resp.mutable_directory() = InfoFromStat(dst, path, "");
  TP_ASSIGN_OR_RETURN(std::vector<std::string> names, ReadDirNames(dir.get(), path));
  struct Item {
    bool is_dir = false;
    std::string name;
    struct stat st {};
  };
  std::vector<Item> items;
  for (std::string& n : names) {
    if (!req.include_hidden() && absl::StartsWith(n, ".")) {
      continue;
    }
    Item it;
    if (fstatat(dir.get(), n.c_str(), &it.st, AT_SYMLINK_NOFOLLOW) != 0) {
      continue;  // removed meanwhile
    }
    it.is_dir = IsDir(it.st);
    it.name = std::move(n);
    items.push_back(std::move(it));
  }
  auto before = [](bool ad, const std::string& an, bool bd, const std::string& bn) {
    if (ad != bd) {
      return ad;
    }
    return an < bn;
  };
  std::sort(items.begin(), items.end(), [&](const Item& a, const Item& b) {
    return before(a.is_dir, a.name, b.is_dir, b.name);
  });
  resp.mutable_page()->set_total_size(static_cast<int64_t>(items.size()));
  size_t start = 0;
  if (cursor.has_value()) {
    while (start < items.size() &&
           !before(cursor->is_dir, cursor->name, items[start].is_dir, items[start].name)) {
      ++start;
    }
  }
  size_t stop = std::min(items.size(), start + static_cast<size_t>(page_size));
  for (size_t i = start; i < stop; ++i) {
    std::string p = JoinPath(path, items[i].name);
    v1::FileInfo* info = resp.add_entries();
    *info = InfoFromStat(items[i].st, p, ReadLinkAt(dir.get(), items[i].name));
    info->set_stamped(IsStamped(p));
  }
  if (stop < items.size() && stop > start) {
    resp.mutable_page()->set_next_page_token(
        MakePageToken(path, req.include_hidden(), items[stop - 1].is_dir, items[stop - 1].name));
  }
  return resp;
}

absl::Status FileService::MakeDirs(absl::string_view dir) {
  TP_ASSIGN_OR_RETURN(const SafeRoot* r, root());
  TP_ASSIGN_OR_RETURN(std::string path, NormalizePath(dir));
  if (path.empty()) {
    return absl::OkStatus();
  }
  std::string prefix;
  for (absl::string_view c : absl::StrSplit(path, '/')) {
    prefix = JoinPath(prefix, c);
    TP_ASSIGN_OR_RETURN(ParentRef ref, r->ResolveParent(prefix));
    TP_RETURN_IF_ERROR(Reserve(kDirBytes));
    if (mkdirat(ref.dir.get(), ref.name.c_str(), 0755) == 0) {
      continue;
    }
    int err = errno;
    Release(kDirBytes);
    if (err != EEXIST) {
      return ErrnoToStatus(err, "create directory", prefix);
    }
    absl::StatusOr<ScopedFd> existing = r->OpenBeneath(prefix, O_PATH | O_DIRECTORY);
    if (!existing.ok()) {
      if (absl::IsInvalidArgument(existing.status())) {
        return existing.status();  // a link out of the volume
      }
      return absl::AlreadyExistsError(
          absl::StrCat("\"", prefix, "\" exists and is not a directory"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::MakeDirectoryResponse> FileService::MakeDirectory(
    const v1::MakeDirectoryRequest& req) {
  TP_ASSIGN_OR_RETURN(const SafeRoot* r, root());
  TP_ASSIGN_OR_RETURN(std::string path, NormalizePath(req.path()));
  if (path.empty()) {
    return absl::InvalidArgumentError("cannot create the root");
  }
  if (req.parents()) {
    TP_RETURN_IF_ERROR(MakeDirs(path));
  } else {
    TP_ASSIGN_OR_RETURN(ParentRef ref, r->ResolveParent(path));
    TP_RETURN_IF_ERROR(Reserve(kDirBytes));
    if (mkdirat(ref.dir.get(), ref.name.c_str(), 0755) != 0) {
      int err = errno;
      Release(kDirBytes);
      return ErrnoToStatus(err, "create directory", path);
    }
  }
  v1::MakeDirectoryResponse resp;
  TP_ASSIGN_OR_RETURN(*resp.mutable_directory(), Describe(path));
  return resp;
}

namespace {
bool Inside(absl::string_view dest, absl::string_view src) {
  return dest == src || src.empty() || absl::StartsWith(dest, absl::StrCat(src, "/"));
}
}  // namespace

absl::StatusOr<v1::MovePathResponse> FileService::MovePath(const v1::MovePathRequest& req) {
  TP_ASSIGN_OR_RETURN(const SafeRoot* r, root());
  TP_ASSIGN_OR_RETURN(std::string src, NormalizePath(req.source_path()));
  TP_ASSIGN_OR_RETURN(std::string dst, NormalizePath(req.destination_path()));
  if (src.empty() || dst.empty()) {
    return absl::InvalidArgumentError("cannot move the root");
  }
  if (Inside(dst, src)) {
    return absl::InvalidArgumentError("destination is inside the source");
  }
  if (HasStampedAtOrBelow(src) || IsStamped(dst)) {
    return absl::FailedPreconditionError("stamped files cannot be moved or replaced");
  }
  TP_ASSIGN_OR_RETURN(ParentRef s, r->ResolveParent(src));
  struct stat sst;
  if (fstatat(s.dir.get(), s.name.c_str(), &sst, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoToStatus(errno, "stat", src);
  }
  TP_ASSIGN_OR_RETURN(ParentRef d, r->ResolveParent(dst));
  struct stat dstst;
  unsigned flags = RENAME_NOREPLACE;
  if (fstatat(d.dir.get(), d.name.c_str(), &dstst, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!req.overwrite()) {
      return absl::AlreadyExistsError(absl::StrCat("\"", dst, "\" exists"));
    }
    if (IsDir(sst) != IsDir(dstst)) {
      return absl::FailedPreconditionError(
          "overwrite would replace a directory with a file or vice versa");
    }
    flags = 0;
  }
  if (renameat2(s.dir.get(), s.name.c_str(), d.dir.get(), d.name.c_str(), flags) != 0) {
    int err = errno;
    if (err == EXDEV) {
      return absl::FailedPreconditionError("source and destination are on different filesystems");
    }
    if (err == EINVAL) {
      return absl::InvalidArgumentError("destination is inside the source");
    }
    return ErrnoToStatus(err, "move", src);
  }
  v1::MovePathResponse resp;
  TP_ASSIGN_OR_RETURN(*resp.mutable_file(), Describe(dst));
  return resp;
}

absl::StatusOr<v1::CopyPathResponse> FileService::CopyPath(const v1::CopyPathRequest& req) {
  TP_ASSIGN_OR_RETURN(const SafeRoot* r, root());
  TP_ASSIGN_OR_RETURN(std::string src, NormalizePath(req.source_path()));
  TP_ASSIGN_OR_RETURN(std::string dst, NormalizePath(req.destination_path()));
  if (dst.empty()) {
    return absl::InvalidArgumentError("cannot copy onto the root");
  }
  if (Inside(dst, src)) {
    return absl::InvalidArgumentError("destination is inside the source");
  }
  if (IsStamped(dst)) {
    return absl::FailedPreconditionError("stamped files cannot be replaced");
  }
  TP_ASSIGN_OR_RETURN(ParentRef s, r->ResolveParent(src));
  // (The root as source was refused above: every destination is inside it.)
  const int sdir = s.dir.get();
  const std::string& sname = s.name;
  struct stat sst;
  if (fstatat(sdir, sname.c_str(), &sst, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoToStatus(errno, "stat", src);
  }
  TP_ASSIGN_OR_RETURN(ParentRef d, r->ResolveParent(dst));
  struct stat dstst;
  bool exists = fstatat(d.dir.get(), d.name.c_str(), &dstst, AT_SYMLINK_NOFOLLOW) == 0;
  if (exists && !req.overwrite()) {
    return absl::AlreadyExistsError(absl::StrCat("\"", dst, "\" exists"));
  }
  // Fail fast when the apparent size cannot fit; the exact charge happens per write.
  if (quota_bytes_ > 0) {
    TP_ASSIGN_OR_RETURN(int64_t used, UsedBytes());
    if (used + UsageAt(sdir, sname, /*apparent=*/true) > quota_bytes_) {
      return absl::ResourceExhaustedError("the copy would exceed the volume quota");
    }
  }
  std::string tmp = absl::StrCat(".tp-copy-", RandomSuffix());
  CopyStats stats;
  absl::Status st = CopyAt(*this, sdir, sname, d.dir.get(), tmp, &stats, 0);
  if (st.ok()) {
    if (!exists) {
      if (renameat2(d.dir.get(), tmp.c_str(), d.dir.get(), d.name.c_str(), RENAME_NOREPLACE) != 0) {
        st = ErrnoToStatus(errno, "move copy into place", dst);
      }
    } else if (renameat2(d.dir.get(), tmp.c_str(), d.dir.get(), d.name.c_str(), RENAME_EXCHANGE) !=
               0) {
      st = ErrnoToStatus(errno, "replace", dst);
    }
  }
  struct stat tst;
  if (fstatat(d.dir.get(), tmp.c_str(), &tst, AT_SYMLINK_NOFOLLOW) == 0) {
    (void)RemoveTreeAt(d.dir.get(), tmp, nullptr);  // the partial copy, or the replaced old
    InvalidateUsage();
  }
  if (!st.ok()) {
    return st;
  }
  v1::CopyPathResponse resp;
  TP_ASSIGN_OR_RETURN(*resp.mutable_file(), Describe(dst));
  resp.set_copied_file_count(stats.files);
  resp.set_copied_bytes(stats.bytes);
  return resp;
}

absl::StatusOr<v1::DeletePathResponse> FileService::DeletePath(const v1::DeletePathRequest& req) {
  TP_ASSIGN_OR_RETURN(const SafeRoot* r, root());
  TP_ASSIGN_OR_RETURN(std::string path, NormalizePath(req.path()));
  if (path.empty()) {
    return absl::InvalidArgumentError("cannot delete the root");
  }
  if (HasStampedAtOrBelow(path)) {
    return absl::FailedPreconditionError("stamped files cannot be deleted");
  }
  TP_ASSIGN_OR_RETURN(ParentRef ref, r->ResolveParent(path));
  struct stat st;
  if (fstatat(ref.dir.get(), ref.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoToStatus(errno, "stat", path);
  }
  v1::DeletePathResponse resp;
  int64_t count = 0;
  if (!IsDir(st)) {
    if (unlinkat(ref.dir.get(), ref.name.c_str(), 0) != 0) {
      return ErrnoToStatus(errno, "delete", path);
    }
    count = 1;
  } else if (unlinkat(ref.dir.get(), ref.name.c_str(), AT_REMOVEDIR) == 0) {
    count = 1;
  } else {
    int err = errno;
    if (err != ENOTEMPTY && err != EEXIST) {
      return ErrnoToStatus(err, "delete", path);
    }
    if (!req.recursive()) {
      return absl::FailedPreconditionError(
          absl::StrCat("\"", path, "\" is a non-empty directory; set recursive"));
    }
    absl::Status s = RemoveTreeAt(ref.dir.get(), ref.name, &count);
    InvalidateUsage();
    TP_RETURN_IF_ERROR(s);
  }
  InvalidateUsage();
  resp.set_deleted_entry_count(count);
  return resp;
}

absl::StatusOr<ScopedFd> FileService::MakeTempDir(absl::string_view prefix, std::string* name_out) {
  TP_ASSIGN_OR_RETURN(const SafeRoot* r, root());
  std::string tmp_dir = absl::StrCat(kInternalDir, "/tmp");
  TP_RETURN_IF_ERROR(MakeDirs(tmp_dir));
  TP_ASSIGN_OR_RETURN(ScopedFd parent, r->OpenBeneath(tmp_dir, O_PATH | O_DIRECTORY));
  std::string name = absl::StrCat(prefix, RandomSuffix());
  if (mkdirat(parent.get(), name.c_str(), 0700) != 0) {
    return ErrnoToStatus(errno, "create staging directory", name);
  }
  *name_out = name;
  return parent;
}

absl::StatusOr<v1::ExtractArchiveResponse> FileService::ExtractArchive(
    const v1::ExtractArchiveRequest& req) {
  TP_ASSIGN_OR_RETURN(const SafeRoot* r, root());
  TP_ASSIGN_OR_RETURN(std::string archive_path, NormalizePath(req.archive_path()));
  TP_ASSIGN_OR_RETURN(std::string dest, NormalizePath(req.destination_path()));
  if (archive_path.empty()) {
    return absl::InvalidArgumentError("archive_path is required");
  }
  if (req.destination_path().empty()) {
    dest = DirName(archive_path);
  }
  TP_ASSIGN_OR_RETURN(ScopedFd archive_fd, r->OpenBeneath(archive_path, O_RDONLY));
  struct stat ast;
  if (fstat(archive_fd.get(), &ast) != 0 || !S_ISREG(ast.st_mode)) {
    return absl::InvalidArgumentError("the archive is not a regular file");
  }
  // The destination must be a directory if it exists; its parent must be reachable.
  absl::StatusOr<ScopedFd> dest_fd = r->OpenBeneath(dest, O_PATH | O_DIRECTORY);
  if (!dest_fd.ok() && !absl::IsNotFound(dest_fd.status())) {
    return dest_fd.status();
  }

  std::string staging_name;
  TP_ASSIGN_OR_RETURN(ScopedFd tmp_parent, MakeTempDir("extract-", &staging_name));
  auto cleanup = [&] {
    (void)RemoveTreeAt(tmp_parent.get(), staging_name, nullptr);
    InvalidateUsage();
  };
  absl::StatusOr<ScopedFd> staging = OpenSubdir(tmp_parent.get(), staging_name, staging_name);
  if (!staging.ok()) {
    cleanup();
    return staging.status();
  }
  ExtractLimits limits = limits_;
  Extractor ex(*this, limits, staging->get());
  absl::Status st = ex.Run(archive_fd.get());
  if (st.ok()) {
    if (!dest_fd.ok()) {
      st = MakeDirs(DirName(dest));
      if (st.ok()) {
        absl::StatusOr<ParentRef> d = r->ResolveParent(dest);
        if (!d.ok()) {
          st = d.status();
        } else if (renameat2(tmp_parent.get(), staging_name.c_str(), d->dir.get(), d->name.c_str(),
                             RENAME_NOREPLACE) != 0) {
          st = ErrnoToStatus(errno, "move extraction into place", dest);
        } else {
          fchmodat(d->dir.get(), d->name.c_str(), 0755, 0);
        }
      }
    } else {
      st = MergeInto(staging->get(), dest_fd->get(), req.overwrite(), /*dry_run=*/true, "");
      if (st.ok()) {
        st = MergeInto(staging->get(), dest_fd->get(), req.overwrite(), /*dry_run=*/false, "");
      }
    }
  }
  struct stat tst;
  if (fstatat(tmp_parent.get(), staging_name.c_str(), &tst, AT_SYMLINK_NOFOLLOW) == 0) {
    cleanup();
  }
  if (!st.ok()) {
    return st;
  }
  if (req.delete_archive()) {
    absl::StatusOr<ParentRef> a = r->ResolveParent(archive_path);
    if (a.ok()) {
      unlinkat(a->dir.get(), a->name.c_str(), 0);
      InvalidateUsage();
    }
  }
  v1::ExtractArchiveResponse resp;
  TP_ASSIGN_OR_RETURN(*resp.mutable_destination(), Describe(dest));
  resp.set_file_count(ex.files());
  resp.set_directory_count(ex.dirs());
  resp.set_symlink_count(ex.symlinks());
  resp.set_extracted_bytes(ex.bytes());
  return resp;
}

absl::StatusOr<ScopedFd> FileService::OpenFileForRead(absl::string_view path) {
  TP_ASSIGN_OR_RETURN(const SafeRoot* r, root());
  TP_ASSIGN_OR_RETURN(ScopedFd fd, r->OpenBeneath(path, O_RDONLY | O_NOCTTY | O_NONBLOCK));
  struct stat st;
  if (fstat(fd.get(), &st) != 0) {
    return ErrnoToStatus(errno, "stat", path);
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("\"", path, "\" is not a regular file"));
  }
  int fl = fcntl(fd.get(), F_GETFL);
  fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK);
  return fd;
}

absl::Status FileService::StreamDownload(absl::string_view path, absl::string_view format,
                                         const std::function<bool(absl::string_view)>& sink) {
  TP_ASSIGN_OR_RETURN(const SafeRoot* r, root());
  if (format != "" && format != "zip" && format != "tar.gz") {
    return absl::InvalidArgumentError("format must be \"zip\" or \"tar.gz\"");
  }
  TP_ASSIGN_OR_RETURN(ScopedFd fd, r->OpenBeneath(path, O_RDONLY | O_NOCTTY | O_NONBLOCK));
  struct stat st;
  if (fstat(fd.get(), &st) != 0) {
    return ErrnoToStatus(errno, "stat", path);
  }
  if (S_ISREG(st.st_mode)) {
    int fl = fcntl(fd.get(), F_GETFL);
    fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK);
    std::string buf(kIoChunk, '\0');
    for (;;) {
      ssize_t n = read(fd.get(), buf.data(), buf.size());
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0) {
        return ErrnoToStatus(errno, "read", path);
      }
      if (n == 0) {
        return absl::OkStatus();
      }
      if (!sink(absl::string_view(buf.data(), static_cast<size_t>(n)))) {
        return absl::UnavailableError("download stopped by the receiver");
      }
    }
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError("only files and directories can be downloaded");
  }
  struct archive* a = archive_write_new();
  if (a == nullptr) {
    return absl::InternalError("archive_write_new failed");
  }
  std::unique_ptr<struct archive, int (*)(struct archive*)> guard(a, archive_write_free);
  if (format == "tar.gz") {
    archive_write_set_format_pax_restricted(a);
    archive_write_add_filter_gzip(a);
  } else {
    archive_write_set_format_zip(a);
  }
  archive_write_set_bytes_in_last_block(a, 1);
  WriteCtx ctx;
  ctx.sink = &sink;
  if (archive_write_open(a, &ctx, nullptr, ArchiveWriteCb, nullptr) != ARCHIVE_OK) {
    return ArchiveError(a, ctx, "open archive");
  }
  absl::Status result = AddTree(a, ctx, fd.get(), "", 0);
  // Close even after an error: it releases the compressor state.
  if (archive_write_close(a) != ARCHIVE_OK && result.ok()) {
    result = ArchiveError(a, ctx, "finish archive");
  }
  if (result.ok() && ctx.stopped) {
    result = absl::UnavailableError("download stopped by the receiver");
  }
  return result;
}

}  // namespace tidepool::supervisor
