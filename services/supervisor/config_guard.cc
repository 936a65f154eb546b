#include "services/supervisor/config_guard.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "lib/crypto/crypto.h"
#include "lib/log.h"
#include "lib/workspace_credential.h"
#include "services/supervisor/safe_path.h"

namespace tidepool::supervisor {
namespace {

using google::protobuf::util::TimeUtil;

constexpr size_t kMaxManifestBytes = 1 << 20;
constexpr size_t kMaxFileBytes = 4 << 20;
constexpr size_t kMaxFiles = 256;
constexpr uint32_t kDirMask = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM |
                              IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF |
                              IN_MOVE_SELF | IN_DONT_FOLLOW | IN_ONLYDIR;

google::protobuf::Timestamp ToProto(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}


bool WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::vector<std::string> Components(const std::string& path) {
  return absl::StrSplit(path, '/');
}

// Moves whatever occupies `name` in `dir` out of the way, keeping it (it may be the user's).
bool MoveAside(int dir, const std::string& name) {
  const std::string aside =
      absl::StrCat(name, ".tampered-", absl::ToUnixMicros(absl::Now()));
  return ::renameat(dir, name.c_str(), dir, aside.c_str()) == 0;
}


}  // namespace

absl::StatusOr<std::unique_ptr<ConfigGuard>> ConfigGuard::Create(ConfigGuardOptions options) {
  if (options.stamp_dir.empty() || options.volume_root.empty()) {
    return absl::InvalidArgumentError("the config guard needs a stamp directory and a volume root");
  }
  if (options.digest_key.size() != 32) {
    return absl::InvalidArgumentError("the stamp digest key must be 32 bytes");
  }
  if (options.rehash_interval <= absl::ZeroDuration() ||
      options.rehash_interval > absl::Seconds(30)) {
    return absl::InvalidArgumentError("the re-hash interval must be between 0 and 30 s");
  }
  if (options.quarantine_restores < 1 || options.quarantine_window <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the quarantine limit must be positive");
  }
  const int root = ::open(options.volume_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) {
    return ErrnoToStatus(errno, "open", "the volume root");
  }
  return std::unique_ptr<ConfigGuard>(new ConfigGuard(std::move(options), root));
}

ConfigGuard::ConfigGuard(ConfigGuardOptions options, int root_fd)
    : options_(std::move(options)),
      root_fd_(root_fd),
      boot_id_(crypto::HexEncode(crypto::RandomBytes(8).value_or(std::string(8, '\0')))) {}

ConfigGuard::~ConfigGuard() {
  Stop();
  ::close(root_fd_);
}

absl::StatusOr<ConfigGuard::ReloadResult> ConfigGuard::Reload(
    std::optional<uint64_t> expect_generation) {
  absl::StatusOr<SafeRoot> stamp_root = SafeRoot::Open(options_.stamp_dir);
  if (!stamp_root.ok()) {
    return absl::FailedPreconditionError("the stamp directory cannot be opened");
  }
  auto read = [&](const std::string& path, size_t limit) -> absl::StatusOr<std::string> {
    absl::StatusOr<ScopedFd> fd = stamp_root->OpenBeneath(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
    if (!fd.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("the stamped file ", path, " cannot be read"));
    }
    struct stat st {};
    if (::fstat(fd->get(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat("the stamped file ", path, " is not a file"));
    }
    std::optional<std::string> content = ReadToEnd(fd->get(), limit);
    if (!content.has_value()) {
      return absl::FailedPreconditionError(absl::StrCat("the stamped file ", path, " is too large"));
    }
    return *std::move(content);
  };
  absl::StatusOr<std::string> text = read(kStampManifestName, kMaxManifestBytes);
  if (!text.ok()) return text.status();
  v1::StampManifest manifest;
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = false;
  if (!google::protobuf::util::JsonStringToMessage(*text, &manifest, parse).ok()) {
    return absl::InvalidArgumentError("the stamp manifest is malformed");
  }
  if (expect_generation.has_value() && manifest.generation() != *expect_generation) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the stamp directory holds generation ", manifest.generation(), ", not ",
        *expect_generation));
  }
  if (static_cast<size_t>(manifest.files_size()) > kMaxFiles) {
    return absl::InvalidArgumentError("the stamp manifest lists too many files");
  }
  std::vector<File> files;
  std::set<std::string> installs;
  for (const v1::StampManifestEntry& entry : manifest.files()) {
    absl::StatusOr<std::string> path = NormalizePath(entry.path());
    absl::StatusOr<std::string> install = NormalizePath(entry.install_to());
    if (!path.ok() || path->empty() || *path != entry.path() || *path == kStampManifestName ||
        !install.ok() || *install != entry.install_to() ||
        (!install->empty() && !installs.insert(*install).second) || entry.mode() > 0777 ||
        (entry.mode() & 0400) == 0 || entry.hmac_sha256().size() != 32) {
      return absl::InvalidArgumentError(
          absl::StrCat("the stamp manifest has an invalid entry for ", entry.path()));
    }
    absl::StatusOr<std::string> content = read(entry.path(), kMaxFileBytes);
    if (!content.ok()) return content.status();
    if (!crypto::ConstantTimeEquals(crypto::HmacSha256(options_.digest_key, *content),
                                    entry.hmac_sha256())) {
      return absl::FailedPreconditionError(
          absl::StrCat("the stamped file ", entry.path(), " does not match its digest"));
    }
    File file;
    file.entry = entry;
    file.content = *std::move(content);
    file.status.set_path(entry.path());
    file.status.set_install_to(entry.install_to());
    file.status.set_expected_digest(entry.hmac_sha256());
    files.push_back(std::move(file));
  }

  ReloadResult result;
  result.generation = manifest.generation();
  absl::MutexLock lock(&mu_);
  // Keep the counters of files that stay stamped.
  for (File& file : files) {
    for (const File& old : files_) {
      if (old.entry.path() == file.entry.path()) {
        file.status.set_restore_count(old.status.restore_count());
        *file.status.mutable_last_restore_time() = old.status.last_restore_time();
        file.status.set_last_mismatch_digest(old.status.last_mismatch_digest());
      }
    }
  }
  files_ = std::move(files);
  generation_ = manifest.generation();
  loaded_ = true;
  absl::Status installed = absl::OkStatus();
  const absl::Time now = absl::Now();
  for (File& file : files_) {
    *file.status.mutable_last_check_time() = ToProto(now);
    if (file.entry.install_to().empty()) {
      file.status.set_ok(true);
      continue;
    }
    if (Inspect(file).difference != Difference::kNone) {
      absl::Status wrote = Install(file);
      if (!wrote.ok() && installed.ok()) installed = wrote;
      result.changed_paths.push_back(file.entry.install_to());
    }
    file.status.set_ok(Inspect(file).difference == Difference::kNone);
  }
  ArmWatches();
  if (!installed.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("a stamped file cannot be installed: ", installed.message()));
  }
  return result;
}

const char* ConfigGuard::DifferenceName(Difference difference) {
  switch (difference) {
    case Difference::kContent: return "content";
    case Difference::kMode: return "mode";
    case Difference::kType: return "type";
    case Difference::kMissing: return "missing";
    case Difference::kNone: break;
  }
  return "none";
}

ConfigGuard::Observed ConfigGuard::Inspect(const File& file) const {
  Observed observed;
  const std::vector<std::string> parts = Components(file.entry.install_to());
  ScopedFd holder;
  int dir = root_fd_;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    const int fd = ::openat(dir, parts[i].c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      observed.difference = errno == ENOENT ? Difference::kMissing : Difference::kType;
      return observed;
    }
    holder.Reset(fd);
    dir = fd;
  }
  struct stat st {};
  if (::fstatat(dir, parts.back().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    observed.difference = errno == ENOENT ? Difference::kMissing : Difference::kType;
    return observed;
  }
  if (!S_ISREG(st.st_mode)) {
    observed.difference = Difference::kType;
    return observed;
  }
  ScopedFd fd(::openat(dir, parts.back().c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    observed.difference = Difference::kType;
    return observed;
  }
  std::optional<std::string> content = ReadToEnd(fd.get(), kMaxFileBytes);
  if (!content.has_value()) {
    observed.difference = Difference::kContent;
    return observed;
  }
  observed.digest = crypto::HmacSha256(options_.digest_key, *content);
  if (!crypto::ConstantTimeEquals(observed.digest, file.entry.hmac_sha256())) {
    observed.difference = Difference::kContent;
  } else if ((st.st_mode & 07777) != file.entry.mode()) {
    observed.difference = Difference::kMode;
  }
  return observed;
}

absl::Status ConfigGuard::Install(const File& file) const {
  const std::vector<std::string> parts = Components(file.entry.install_to());
  ScopedFd holder;
  int dir = root_fd_;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    const char* name = parts[i].c_str();
    int fd = ::openat(dir, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT) {
      // A symlink or a file where a directory belongs: keep it aside, make the directory.
      if (!MoveAside(dir, parts[i])) return ErrnoToStatus(errno, "rename", parts[i]);
    }
    if (fd < 0) {
      if (::mkdirat(dir, name, 0755) != 0 && errno != EEXIST) {
        return ErrnoToStatus(errno, "mkdir", parts[i]);
      }
      fd = ::openat(dir, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) return ErrnoToStatus(errno, "open", parts[i]);
    }
    holder.Reset(fd);
    dir = fd;
  }
  absl::StatusOr<std::string> suffix = crypto::RandomToken(9);
  if (!suffix.ok()) return suffix.status();
  const std::string temp = absl::StrCat(".tidepool-stamp-", *suffix);
  {
    ScopedFd out(::openat(dir, temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                          file.entry.mode()));
    if (!out.valid()) return ErrnoToStatus(errno, "create", file.entry.install_to());
    if (!WriteAll(out.get(), file.content) || ::fchmod(out.get(), file.entry.mode()) != 0 ||
        ::fsync(out.get()) != 0) {
      const int err = errno;
      ::unlinkat(dir, temp.c_str(), 0);
      return ErrnoToStatus(err, "write", file.entry.install_to());
    }
  }
  const char* name = parts.back().c_str();
  if (::renameat(dir, temp.c_str(), dir, name) != 0) {
    // A directory in the file's place: keep it aside and try once more.
    if ((errno != EISDIR && errno != ENOTEMPTY && errno != EEXIST) || !MoveAside(dir, parts.back()) ||
        ::renameat(dir, temp.c_str(), dir, name) != 0) {
      const int err = errno;
      ::unlinkat(dir, temp.c_str(), 0);
      return ErrnoToStatus(err, "rename", file.entry.install_to());
    }
  }
  return absl::OkStatus();
}

bool ConfigGuard::CheckFile(File& file, const std::string& detected_by, absl::Time now) {
  *file.status.mutable_last_check_time() = ToProto(now);
  Observed observed;
  if (file.entry.install_to().empty()) {
    // Read-only inside the sandbox: only the host can change it, and it cannot be restored
    // from here. Compare it with what was verified at load.
    absl::StatusOr<SafeRoot> stamp_root = SafeRoot::Open(options_.stamp_dir);
    absl::StatusOr<ScopedFd> fd =
        stamp_root.ok() ? stamp_root->OpenBeneath(file.entry.path(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK)
                        : absl::StatusOr<ScopedFd>(stamp_root.status());
    std::optional<std::string> content =
        fd.ok() ? ReadToEnd(fd->get(), kMaxFileBytes) : std::nullopt;
    if (!content.has_value()) {
      observed.difference = Difference::kMissing;
    } else if (*content != file.content) {
      observed.difference = Difference::kContent;
      observed.digest = crypto::HmacSha256(options_.digest_key, *content);
    }
  } else {
    observed = Inspect(file);
  }
  if (observed.difference == Difference::kNone) {
    file.status.set_ok(true);
    return true;
  }
  const bool reported_already =
      !file.status.ok() && file.entry.install_to().empty() &&
      file.status.last_mismatch_digest() == observed.digest;
  v1::ConfigTamperEvent event;
  event.set_path(file.entry.path());
  event.set_install_to(file.entry.install_to());
  event.set_expected_digest(file.entry.hmac_sha256());
  event.set_observed_digest(observed.digest);
  event.set_difference(DifferenceName(observed.difference));
  *event.mutable_detect_time() = ToProto(now);
  event.set_detected_by(detected_by);
  file.status.set_last_mismatch_digest(observed.digest);
  bool restored = false;
  if (!file.entry.install_to().empty()) {
    absl::Status wrote = Install(file);
    restored = wrote.ok() && Inspect(file).difference == Difference::kNone;
    if (!wrote.ok()) {
      LogError("cannot restore a stamped file", {{"path", file.entry.install_to()},
                                                  {"error", std::string(wrote.message())}});
    }
  }
  file.status.set_ok(restored);
  if (restored) {
    const absl::Time done = absl::Now();
    file.status.set_restore_count(file.status.restore_count() + 1);
    *file.status.mutable_last_restore_time() = ToProto(done);
    *event.mutable_restore_time() = ToProto(done);
    recent_restores_.push_back(done);
    while (!recent_restores_.empty() &&
           recent_restores_.front() < done - options_.quarantine_window) {
      recent_restores_.pop_front();
    }
    if (!quarantined_ &&
        recent_restores_.size() > static_cast<size_t>(options_.quarantine_restores)) {
      quarantined_ = true;
      event.set_quarantined(true);
    }
  }
  event.set_restored(restored);
  if (reported_already) return false;
  event.set_sequence(++last_sequence_);
  LogWarning(restored ? "restored a stamped file changed inside the workspace"
                      : "a stamped file does not match and cannot be restored",
             {{"path", file.entry.install_to().empty() ? file.entry.path() : file.entry.install_to()},
              {"difference", event.difference()},
              {"detected_by", detected_by},
              {"quarantined", event.quarantined()}});
  events_.push_back(std::move(event));
  while (events_.size() > kMaxEvents) events_.pop_front();
  return restored;
}

absl::Status ConfigGuard::CheckLocked(const std::string& detected_by) {
  if (!loaded_) {
    return absl::FailedPreconditionError("the stamped configuration has not been verified yet");
  }
  const absl::Time now = absl::Now();
  std::string first_bad;
  for (File& file : files_) {
    if (!CheckFile(file, detected_by, now) && first_bad.empty()) {
      first_bad = file.entry.install_to().empty() ? file.entry.path() : file.entry.install_to();
    }
  }
  ArmWatches();
  if (!first_bad.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the stamped file ", first_bad, " does not match and cannot be restored"));
  }
  return absl::OkStatus();
}

absl::Status ConfigGuard::Check(const std::string& detected_by) {
  bool quarantine_now = false;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    const bool before = quarantined_;
    status = CheckLocked(detected_by);
    quarantine_now = !before && quarantined_;
  }
  if (quarantine_now) {
    LogError("stamped files were changed too often; the tool is stopped", {});
    if (options_.on_quarantine) options_.on_quarantine();
  }
  return status;
}

void ConfigGuard::ArmWatches() {
  if (inotify_fd_ < 0) return;
  // Directory (relative to the volume root) -> the child names on the way to a copy.
  std::map<std::string, std::set<std::string>> wanted;
  for (const File& file : files_) {
    if (file.entry.install_to().empty()) continue;
    const std::vector<std::string> parts = Components(file.entry.install_to());
    std::string dir;
    for (const std::string& part : parts) {
      wanted[dir].insert(part);
      dir = dir.empty() ? part : absl::StrCat(dir, "/", part);
    }
  }
  std::map<int, std::pair<std::string, std::vector<std::string>>> armed;
  for (const auto& [dir, names] : wanted) {
    const std::string path =
        dir.empty() ? options_.volume_root : absl::StrCat(options_.volume_root, "/", dir);
    const int wd = ::inotify_add_watch(inotify_fd_, path.c_str(), kDirMask);
    if (wd < 0) continue;  // missing now; the next check restores it and arms again
    auto& slot = armed[wd];
    slot.first = dir;
    slot.second.insert(slot.second.end(), names.begin(), names.end());
  }
  for (const auto& [wd, unused] : watches_) {
    if (!armed.count(wd) && wd != stamp_watch_) ::inotify_rm_watch(inotify_fd_, wd);
  }
  watches_ = std::move(armed);
  if (stamp_watch_ < 0) {
    stamp_watch_ = ::inotify_add_watch(inotify_fd_, options_.stamp_dir.c_str(),
                                       IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE |
                                           IN_MODIFY | IN_ATTRIB | IN_ONLYDIR);
  }
}

void ConfigGuard::Start() {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable()) return;
  inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ArmWatches();
  thread_ = std::thread([this] { Watch(); });
}

void ConfigGuard::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (!thread_.joinable()) return;
    const uint64_t one = 1;
    (void)!::write(stop_fd_, &one, sizeof(one));
  }
  thread_.join();
  absl::MutexLock lock(&mu_);
  ::close(inotify_fd_);
  ::close(stop_fd_);
  inotify_fd_ = -1;
  stop_fd_ = -1;
  watches_.clear();
  stamp_watch_ = -1;
}

void ConfigGuard::Watch() {
  absl::Time next_rehash = absl::Now() + options_.rehash_interval;
  alignas(struct inotify_event) char buffer[16384];
  for (;;) {
    pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    const int64_t wait_ms =
        std::max<int64_t>(0, absl::ToInt64Milliseconds(next_rehash - absl::Now()) + 1);
    const int ready = ::poll(fds, 2, static_cast<int>(std::min<int64_t>(wait_ms, 60000)));
    if (ready < 0 && errno != EINTR) return;
    if (fds[1].revents != 0) return;
    bool relevant = false;
    bool manifest_changed = false;
    if (fds[0].revents != 0) {
      absl::MutexLock lock(&mu_);
      for (;;) {
        const ssize_t n = ::read(inotify_fd_, buffer, sizeof(buffer));
        if (n <= 0) break;
        for (char* p = buffer; p < buffer + n;) {
          const auto* event = reinterpret_cast<const struct inotify_event*>(p);
          p += sizeof(struct inotify_event) + event->len;
          const std::string name = event->len > 0 ? std::string(event->name) : "";
          if (event->mask & IN_Q_OVERFLOW) {
            relevant = true;
          } else if (event->wd == stamp_watch_) {
            if (name == kStampManifestName) {
              manifest_changed = true;
            } else {
              relevant = true;  // an original changed on the host
            }
          } else if (event->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) {
            relevant = watches_.count(event->wd) > 0 || relevant;
          } else if (auto it = watches_.find(event->wd); it != watches_.end()) {
            for (const std::string& wanted : it->second.second) {
              if (wanted == name) relevant = true;
            }
          }
        }
      }
    }
    if (manifest_changed) {
      absl::StatusOr<ReloadResult> reloaded = Reload();
      if (!reloaded.ok()) {
        LogWarning("cannot load the new stamp yet", {{"error", std::string(reloaded.status().message())}});
      }
    } else if (relevant) {
      (void)Check("inotify");
    }
    if (absl::Now() >= next_rehash) {
      (void)Check("periodic_rehash");
      next_rehash = absl::Now() + options_.rehash_interval;
    }
  }
}

void ConfigGuard::ClearQuarantine() {
  absl::MutexLock lock(&mu_);
  quarantined_ = false;
  recent_restores_.clear();
}

bool ConfigGuard::quarantined() const {
  absl::MutexLock lock(&mu_);
  return quarantined_;
}

uint64_t ConfigGuard::generation() const {
  absl::MutexLock lock(&mu_);
  return generation_;
}

bool ConfigGuard::ok() const {
  absl::MutexLock lock(&mu_);
  if (!loaded_) return false;
  for (const File& file : files_) {
    if (!file.status.ok()) return false;
  }
  return true;
}

std::vector<v1::StampedFileStatus> ConfigGuard::FileStatuses() const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::StampedFileStatus> out;
  for (const File& file : files_) out.push_back(file.status);
  return out;
}

v1::ListConfigEventsResponse ConfigGuard::Events(uint64_t after_sequence,
                                                 absl::Duration wait) const {
  absl::MutexLock lock(&mu_);
  auto arrived = [this, after_sequence]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return last_sequence_ > after_sequence;
  };
  if (wait > absl::ZeroDuration()) mu_.AwaitWithTimeout(absl::Condition(&arrived), wait);
  v1::ListConfigEventsResponse response;
  response.set_boot_id(boot_id_);
  response.set_last_sequence(last_sequence_);
  for (const v1::ConfigTamperEvent& event : events_) {
    if (event.sequence() > after_sequence) *response.add_events() = event;
  }
  return response;
}

}  // namespace tidepool::supervisor
