#include "services/provisioner/local_runtime.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "lib/file_util.h"
#include "lib/log.h"
#include "lib/status_macros.h"
#include "lib/text.h"
#include "nlohmann/json.hpp"
#include "services/provisioner/seccomp_filter.h"
#include "services/provisioner/volume_image.h"

namespace tidepool::provisioner {

// ---------------------------------------------------------------------------------------------
// Records.

struct LocalRuntime::Record {
  // How to recognise the running sandbox later, even from another process: a pid alone could
  // have been reused, so the kernel's start time (clock ticks since boot, /proc/<pid>/stat
  // field 22) and the boot id must match too.
  struct Run {
    int monitor_pid = 0;  // the outer bwrap process (the one Start exec'd)
    uint64_t monitor_ticks = 0;
    int init_pid = 0;  // the sandbox's pid 1 (bwrap's init inside the namespaces), host pid
    uint64_t init_ticks = 0;
    std::string boot_id;
    int64_t started_unix_ms = 0;
  };
  SandboxSpec spec;
  std::optional<Run> run;
  std::optional<int> last_exit_code;
};

namespace {

constexpr char kHome[] = "/home/user";
constexpr char kSocketMount[] = "/run/tidepool";
constexpr char kStampMount[] = "/etc/tidepool";
constexpr int kSandboxUid = 1000;
constexpr int kSandboxGid = 1000;
constexpr int kRecordVersion = 1;
constexpr off_t kMaxLogBytes = 8 << 20;
constexpr char kDefaultPath[] = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

// Host directories that make up the read-only system view. On a merged-/usr host most of them
// are symlinks into /usr, which are recreated as symlinks.
constexpr const char* kSystemDirs[] = {"/usr",   "/bin",   "/sbin",  "/lib",
                                       "/lib32", "/lib64", "/libx32"};
// The only host /etc entries a process needs (passwd, group and hosts are synthesised).
constexpr const char* kEtcEntries[] = {
    "/etc/ld.so.cache", "/etc/nsswitch.conf",   "/etc/resolv.conf",     "/etc/localtime",
    "/etc/ssl/certs",   "/etc/ssl/openssl.cnf", "/etc/ca-certificates", "/etc/alternatives",
};
// Sandbox paths extra binds may not land on or under: the platform's own mounts and the
// system view.
constexpr const char* kReservedPrefixes[] = {
    "/proc", "/dev",  "/sys", "/home",  "/run/tidepool", "/etc",    "/usr",
    "/bin",  "/sbin", "/lib", "/lib32", "/lib64",        "/libx32", "/tmp"};

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    Reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(-1); }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  void Reset(int fd) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

std::string Errno(int err) { return std::strerror(err); }

bool IsValidWorkspaceId(absl::string_view id) { return IsRandomId(id, "ws_"); }

bool IsUtf8(absl::string_view text) {
  std::vector<char32_t> ignored;
  return DecodeUtf8(text, &ignored);
}

// Absolute, no empty, "." or ".." components, no trailing slash (except "/"), no NUL.
bool IsNormalAbsolutePath(absl::string_view path) {
  if (path.empty() || path[0] != '/' || path.find('\0') != absl::string_view::npos) {
    return false;
  }
  if (path == "/") {
    return true;
  }
  for (absl::string_view part : absl::StrSplit(path.substr(1), '/')) {
    if (part.empty() || part == "." || part == "..") {
      return false;
    }
  }
  return true;
}

// True if `path` equals `prefix` or lies below it.
bool IsAtOrUnder(absl::string_view path, absl::string_view prefix) {
  if (prefix == "/") {
    return true;
  }
  return path == prefix || (absl::StartsWith(path, prefix) && path.size() > prefix.size() &&
                            path[prefix.size()] == '/');
}

bool Overlaps(absl::string_view a, absl::string_view b) {
  return IsAtOrUnder(a, b) || IsAtOrUnder(b, a);
}

std::optional<std::string> ReadSmallFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) {
    return std::nullopt;
  }
  return *std::move(text);
}

struct ProcStat {
  char state = '?';
  int ppid = 0;
  uint64_t start_ticks = 0;
};

std::optional<ProcStat> ReadProcStat(int pid) {
  if (pid <= 0) {
    return std::nullopt;
  }
  std::optional<std::string> text = ReadSmallFile(absl::StrCat("/proc/", pid, "/stat"));
  if (!text) {
    return std::nullopt;
  }
  // "pid (comm) state ppid ..." where comm may contain spaces and parentheses.
  const size_t close = text->rfind(')');
  if (close == std::string::npos || close + 2 >= text->size()) {
    return std::nullopt;
  }
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(*text).substr(close + 2), ' ');
  // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
  ProcStat stat;
  if (fields.size() < 20 || fields[0].empty() || !absl::SimpleAtoi(fields[19], &stat.start_ticks)) {
    return std::nullopt;
  }
  stat.state = fields[0][0];
  if (!absl::SimpleAtoi(fields[1], &stat.ppid)) {
    return std::nullopt;
  }
  return stat;
}

// The process `pid` exists, is not a zombie, and is the one that started at `ticks`.
bool IsSameLiveProcess(int pid, uint64_t ticks) {
  if (pid <= 0 || ticks == 0) {
    return false;
  }
  std::optional<ProcStat> stat = ReadProcStat(pid);
  return stat && stat->state != 'Z' && stat->state != 'X' && stat->start_ticks == ticks;
}

bool IsLiveNonZombie(int pid) {
  std::optional<ProcStat> stat = ReadProcStat(pid);
  return stat && stat->state != 'Z' && stat->state != 'X';
}

std::string PidNamespaceOf(int pid) {
  char buf[64];
  const std::string link = absl::StrCat("/proc/", pid, "/ns/pid");
  const ssize_t n = ::readlink(link.c_str(), buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// Every live process whose pid namespace is `ns` ("pid:[N]").
std::vector<pid_t> ProcessesInPidNamespace(const std::string& ns) {
  std::vector<pid_t> pids;
  if (ns.empty()) {
    return pids;
  }
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) {
    return pids;
  }
  while (struct dirent* entry = ::readdir(dir)) {
    int pid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &pid) || pid <= 0) {
      continue;
    }
    if (PidNamespaceOf(pid) == ns && IsLiveNonZombie(pid)) {
      pids.push_back(pid);
    }
  }
  ::closedir(dir);
  return pids;
}

absl::StatusOr<UniqueFd> DataFd(absl::string_view name, absl::string_view data) {
  UniqueFd fd(::memfd_create(std::string(name).c_str(), MFD_CLOEXEC));
  if (!fd.ok()) {
    return absl::UnavailableError(absl::StrCat("memfd_create: ", Errno(errno)));
  }
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd.get(), data.data() + off, data.size() - off);
    if (n <= 0) {
      return absl::UnavailableError("cannot fill a memfd");
    }
    off += static_cast<size_t>(n);
  }
  if (::lseek(fd.get(), 0, SEEK_SET) != 0) {
    return absl::UnavailableError("cannot rewind a memfd");
  }
  return fd;
}

// Creates `path` and missing parents (0700), or checks that an existing one is a real
// directory (not a symlink).
absl::Status EnsureDir(const std::string& path, mode_t mode) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(path, " exists and is not a directory"));
    }
    return absl::OkStatus();
  }
  std::filesystem::path p(path);
  if (p.has_parent_path() && p.parent_path() != p) {
    TP_RETURN_IF_ERROR(EnsureDir(p.parent_path().string(), 0700));
  }
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    return absl::UnavailableError(absl::StrCat("cannot create ", path, ": ", Errno(errno)));
  }
  ::chmod(path.c_str(), mode);
  return absl::OkStatus();
}

absl::Status RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);  // never follows symlinks
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot remove ", path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

// Allocated bytes below `root` (st_blocks * 512), without following symlinks or crossing
// mounts, each hard-linked inode once. Stops at `deadline` or below kMaxDepth open directories
// and says the result is partial.
struct DiskMeasure {
  int64_t bytes = 0;
  bool partial = false;
};

DiskMeasure MeasureDisk(const std::string& root, absl::Time deadline) {
  constexpr size_t kMaxDepth = 128;
  DiskMeasure out;
  const int root_fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (root_fd < 0) {
    return out;
  }
  struct stat root_st {};
  if (::fstat(root_fd, &root_st) != 0) {
    ::close(root_fd);
    return out;
  }
  out.bytes += static_cast<int64_t>(root_st.st_blocks) * 512;
  std::set<std::pair<dev_t, ino_t>> linked;
  std::vector<DIR*> stack;
  if (DIR* d = ::fdopendir(root_fd)) {
    stack.push_back(d);
  } else {
    ::close(root_fd);
    return out;
  }
  size_t visited = 0;
  while (!stack.empty()) {
    DIR* dir = stack.back();
    struct dirent* entry = ::readdir(dir);
    if (entry == nullptr) {
      ::closedir(dir);
      stack.pop_back();
      continue;
    }
    if (std::strcmp(entry->d_name, ".") == 0 || std::strcmp(entry->d_name, "..") == 0) {
      continue;
    }
    if ((++visited & 255) == 0 && absl::Now() >= deadline) {
      out.partial = true;
      break;
    }
    struct stat st {};
    if (::fstatat(::dirfd(dir), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        st.st_dev != root_st.st_dev) {
      continue;
    }
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && !linked.insert({st.st_dev, st.st_ino}).second) {
      continue;
    }
    out.bytes += static_cast<int64_t>(st.st_blocks) * 512;
    if (S_ISDIR(st.st_mode)) {
      if (stack.size() >= kMaxDepth) {
        out.partial = true;
        continue;
      }
      const int fd =
          ::openat(::dirfd(dir), entry->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) {
        continue;
      }
      if (DIR* child = ::fdopendir(fd)) {
        stack.push_back(child);
      } else {
        ::close(fd);
      }
    }
  }
  for (DIR* d : stack) {
    ::closedir(d);
  }
  return out;
}

nlohmann::json SpecToJson(const SandboxSpec& spec) {
  nlohmann::json binds = nlohmann::json::array();
  for (const auto& [from, to] : spec.ro_binds) {
    binds.push_back({from, to});
  }
  return {
      {"workspace_id", spec.workspace_id},
      {"volume_dir", spec.volume_dir},
      {"socket_dir", spec.socket_dir},
      {"stamp_dir", spec.stamp_dir},
      {"ro_binds", binds},
      {"command", spec.command},
      {"env", spec.env},
      {"limits",
       {{"memory_bytes", spec.limits.memory_bytes},
        {"pids", spec.limits.pids},
        {"cpus", spec.limits.cpus},
        {"disk_bytes", spec.limits.disk_bytes}}},
  };
}

SandboxSpec SpecFromJson(const nlohmann::json& j) {
  SandboxSpec spec;
  spec.workspace_id = j.at("workspace_id").get<std::string>();
  spec.volume_dir = j.at("volume_dir").get<std::string>();
  spec.socket_dir = j.at("socket_dir").get<std::string>();
  spec.stamp_dir = j.at("stamp_dir").get<std::string>();
  for (const nlohmann::json& bind : j.at("ro_binds")) {
    spec.ro_binds.emplace_back(bind.at(0).get<std::string>(), bind.at(1).get<std::string>());
  }
  spec.command = j.at("command").get<std::vector<std::string>>();
  spec.env = j.at("env").get<std::map<std::string, std::string>>();
  const nlohmann::json& limits = j.at("limits");
  spec.limits.memory_bytes = limits.at("memory_bytes").get<int64_t>();
  spec.limits.pids = limits.at("pids").get<int>();
  spec.limits.cpus = limits.at("cpus").get<double>();
  spec.limits.disk_bytes = limits.at("disk_bytes").get<int64_t>();
  return spec;
}

// What the launcher's children report through a close-on-exec pipe. Each record is written
// with one write(2) (atomic: far below PIPE_BUF).
struct LaunchReport {
  int kind = 0;  // 1: the pid of the process that execs bwrap; 2: a failure
  int stage = 0;
  int err = 0;
  int pid = 0;
};
enum LaunchStage {
  kStageFork = 1,
  kStageCgroup = 2,
  kStageCredentials = 3,
  kStageExec = 4,
  kStageMounts = 5
};

const char* StageName(int stage) {
  switch (stage) {
    case kStageFork:
      return "fork";
    case kStageCgroup:
      return "joining the sandbox cgroup";
    case kStageCredentials:
      return "switching to the sandbox host uid";
    case kStageExec:
      return "exec of bwrap";
    case kStageMounts:
      return "staging the sandbox's bind sources";
    default:
      return "launch";
  }
}

// Only async-signal-safe calls below: this runs between fork and exec in a child of a
// multi-threaded process.
void Report(int fd, int kind, int stage, int err, int pid) {
  LaunchReport report;
  report.kind = kind;
  report.stage = stage;
  report.err = err;
  report.pid = pid;
  ssize_t ignored = ::write(fd, &report, sizeof(report));
  (void)ignored;
}

// Everything the child needs, prepared before fork.
struct LaunchPlan {
  const char* bwrap = nullptr;
  std::vector<char*> argv;  // bwrap --args N, null-terminated
  std::vector<char*> envp;  // null-terminated
  std::vector<const char*> cgroup_procs;
  // Set when bwrap runs as another host uid (sandbox_host_uid): each source is bound at its
  // target in a private mount namespace (a tmpfs at stage_dir), so bwrap reaches it whatever
  // the permissions of the directories above it (a data dir under /root, a 0700 temp dir).
  struct StagedBind {
    const char* source;
    const char* target;
    bool dir;
  };
  const char* stage_dir = nullptr;
  std::vector<StagedBind> staged;
  int uid = -1;
  int gid = -1;
  // source fd -> target fd in bwrap (0..kLastTarget); the report fd is the last and stays
  // close-on-exec.
  std::vector<std::pair<int, int>> fds;
  int report_target = -1;
};

[[noreturn]] void RunLaunchChild(const LaunchPlan& plan, int report_fd) {
  // Default dispositions and an empty mask: the provisioner may ignore SIGPIPE or block
  // signals in its threads, and ignored signals survive exec.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    ::sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  // Join the sandbox's cgroup before anything of the sandbox runs ("0" = the writer).
  for (const char* procs : plan.cgroup_procs) {
    const int fd = ::open(procs, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::write(fd, "0", 1) != 1) {
      Report(report_fd, 2, kStageCgroup, errno, 0);
      ::_exit(126);
    }
    ::close(fd);
  }
  if (plan.stage_dir != nullptr) {
    // Slave, so nothing mounted here reaches the host (and the host's unmounts still arrive).
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0 ||
        ::mount("tidepool-stage", plan.stage_dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "mode=0755,size=64k") != 0) {
      Report(report_fd, 2, kStageMounts, errno, 0);
      ::_exit(126);
    }
    for (const LaunchPlan::StagedBind& bind : plan.staged) {
      int made = 0;
      if (bind.dir) {
        made = ::mkdir(bind.target, 0755);
      } else {
        const int fd = ::open(bind.target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        made = fd < 0 ? -1 : ::close(fd);
      }
      if (made != 0 || ::mount(bind.source, bind.target, nullptr, MS_BIND | MS_REC, nullptr) != 0) {
        Report(report_fd, 2, kStageMounts, errno, 0);
        ::_exit(126);
      }
    }
  }
  if (plan.uid >= 0) {
    // Raw syscalls: only this (single) thread exists, and glibc's set*id broadcast is not
    // async-signal-safe.
    if (::syscall(SYS_setgroups, 0, nullptr) != 0 ||
        ::syscall(SYS_setresgid, plan.gid, plan.gid, plan.gid) != 0 ||
        ::syscall(SYS_setresuid, plan.uid, plan.uid, plan.uid) != 0) {
      Report(report_fd, 2, kStageCredentials, errno, 0);
      ::_exit(126);
    }
  }
  // Move every fd bwrap needs out of the way, then into place; close everything else so no
  // provisioner fd (sockets, databases, other sandboxes' pipes) reaches the sandbox.
  int moved[16];
  const size_t count = plan.fds.size();
  for (size_t i = 0; i < count; ++i) {
    moved[i] = ::fcntl(plan.fds[i].first, F_DUPFD_CLOEXEC, 64);
    if (moved[i] < 0) {
      Report(report_fd, 2, kStageExec, errno, 0);
      ::_exit(126);
    }
  }
  const int report_moved = ::fcntl(report_fd, F_DUPFD_CLOEXEC, 64);
  for (size_t i = 0; i < count; ++i) {
    if (::dup2(moved[i], plan.fds[i].second) < 0) {
      Report(report_moved, 2, kStageExec, errno, 0);
      ::_exit(126);
    }
  }
  if (::dup3(report_moved, plan.report_target, O_CLOEXEC) < 0) {
    ::_exit(126);
  }
  ::syscall(SYS_close_range, static_cast<unsigned>(plan.report_target + 1), ~0U, 0U);
  ::execve(plan.bwrap, plan.argv.data(), plan.envp.data());
  Report(plan.report_target, 2, kStageExec, errno, 0);
  ::_exit(127);
}

// A volume whose top directory another host uid owns (its sandboxes ran as root before
// provisioner.sandbox_user, or as another user) is handed to `uid` whole, once: otherwise its
// files show as nobody's inside and cannot be written. Symlinks are changed, never followed.
absl::Status AdoptVolume(const std::string& volume_dir, uid_t uid, gid_t gid) {
  struct stat st {};
  if (::lstat(volume_dir.c_str(), &st) != 0 || st.st_uid == uid) return absl::OkStatus();
  std::error_code ec;
  int64_t changed = 0;
  for (std::filesystem::recursive_directory_iterator it(volume_dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (::lchown(it->path().c_str(), uid, gid) == 0) ++changed;
  }
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot hand the volume ", volume_dir,
                                               " to the sandbox user: ", ec.message()));
  }
  if (::lchown(volume_dir.c_str(), uid, gid) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot chown ", volume_dir, ": ", Errno(errno)));
  }
  LogInfo("handed a volume to the sandbox user",
          {{"volume_dir", volume_dir}, {"from_uid", static_cast<int64_t>(st.st_uid)},
           {"to_uid", static_cast<int64_t>(uid)}, {"entries", changed}});
  return absl::OkStatus();
}

std::string PasswdFor() {
  return absl::StrCat("root:x:0:0:root:/root:/usr/sbin/nologin\n", "user:x:", kSandboxUid, ":",
                      kSandboxGid, ":user:", kHome, ":/bin/sh\n",
                      "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
}

std::string GroupFor() {
  return absl::StrCat("root:x:0:\n", "user:x:", kSandboxGid, ":\n", "nogroup:x:65534:\n");
}

std::string HostsFor(const std::string& hostname) {
  return absl::StrCat("127.0.0.1\tlocalhost\n127.0.1.1\t", hostname,
                      "\n::1\tlocalhost ip6-localhost ip6-loopback\n");
}

// The last line bwrap printed about itself ("bwrap: ...") in the sandbox log, for errors.
std::string LastBwrapError(const std::string& log_path) {
  std::optional<std::string> text = ReadSmallFile(log_path);
  if (!text) {
    return "";
  }
  std::string last;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "bwrap: ")) {
      last = std::string(line);
    }
  }
  return last;
}

std::string ReadBootId() {
  return std::string(
      absl::StripAsciiWhitespace(ReadSmallFile("/proc/sys/kernel/random/boot_id").value_or("")));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Spec checks and the bwrap command line.

std::string SandboxHostname(const std::string& workspace_id) {
  return absl::StrCat("ws-", absl::StripPrefix(workspace_id, "ws_"));
}

absl::Status ValidateSandboxSpec(const SandboxSpec& spec) {
  if (!IsValidWorkspaceId(spec.workspace_id)) {
    return absl::InvalidArgumentError("workspace_id must be \"ws_\" + 26 base32 characters");
  }
  for (const auto& [what, path] :
       {std::pair<const char*, const std::string*>{"volume_dir", &spec.volume_dir},
        {"socket_dir", &spec.socket_dir}}) {
    if (!IsNormalAbsolutePath(*path) || *path == "/") {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " must be a normalised absolute path other than /"));
    }
  }
  if (!spec.stamp_dir.empty() && (!IsNormalAbsolutePath(spec.stamp_dir) || spec.stamp_dir == "/")) {
    return absl::InvalidArgumentError("stamp_dir must be a normalised absolute path other than /");
  }
  if (Overlaps(spec.volume_dir, spec.socket_dir) ||
      (!spec.stamp_dir.empty() &&
       (Overlaps(spec.volume_dir, spec.stamp_dir) || Overlaps(spec.socket_dir, spec.stamp_dir)))) {
    return absl::InvalidArgumentError("volume_dir, socket_dir and stamp_dir must not overlap");
  }
  for (const auto& [from, to] : spec.ro_binds) {
    if (!IsNormalAbsolutePath(from) || from == "/") {
      return absl::InvalidArgumentError(
          "ro_binds sources must be normalised absolute paths other than /");
    }
    if (Overlaps(from, spec.volume_dir) || Overlaps(from, spec.socket_dir)) {
      return absl::InvalidArgumentError(
          "ro_binds sources must not overlap the volume or socket dir");
    }
    if (!IsNormalAbsolutePath(to) || to == "/" || to == "/run") {
      return absl::InvalidArgumentError("ro_binds targets must be normalised absolute paths");
    }
    for (const char* reserved : kReservedPrefixes) {
      if (IsAtOrUnder(to, reserved)) {
        return absl::InvalidArgumentError(
            absl::StrCat("ro_binds target ", to, " is inside the reserved ", reserved));
      }
    }
  }
  if (spec.command.empty() || spec.command[0].empty()) {
    return absl::InvalidArgumentError("command must not be empty");
  }
  for (const std::string& arg : spec.command) {
    if (arg.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError("command arguments must not contain NUL");
    }
  }
  for (const auto& [name, value] : spec.env) {
    if (name.empty() || name.find('=') != std::string::npos ||
        name.find('\0') != std::string::npos || value.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          "env names must be non-empty without '=' or NUL, and "
          "values without NUL");
    }
  }
  // The record is JSON: every string must be UTF-8.
  std::vector<absl::string_view> strings = {spec.volume_dir, spec.socket_dir, spec.stamp_dir};
  for (const auto& [from, to] : spec.ro_binds) {
    strings.push_back(from);
    strings.push_back(to);
  }
  strings.insert(strings.end(), spec.command.begin(), spec.command.end());
  for (const auto& [name, value] : spec.env) {
    strings.push_back(name);
    strings.push_back(value);
  }
  for (absl::string_view text : strings) {
    if (!IsUtf8(text)) {
      return absl::InvalidArgumentError("spec strings (paths, command, env) must be UTF-8");
    }
  }
  if (spec.limits.memory_bytes < 0 || spec.limits.pids < 0 || spec.limits.cpus < 0 ||
      spec.limits.disk_bytes < 0) {
    return absl::InvalidArgumentError("limits must not be negative");
  }
  return absl::OkStatus();
}

std::vector<std::string> BuildBwrapArgv(const std::string& bwrap_path, const SandboxSpec& spec,
                                        const BwrapFds& fds) {
  std::vector<std::string> a = {bwrap_path};
  auto add = [&a](std::initializer_list<std::string> items) {
    a.insert(a.end(), items.begin(), items.end());
  };
  // Namespaces: user, mount, pid, ipc, uts, net, cgroup. --unshare-user is explicit so a host
  // without user namespaces fails instead of silently running without one. No
  // --die-with-parent: sandboxes outlive the provisioner.
  add({"--unshare-user", "--unshare-all", "--disable-userns", "--new-session", "--cap-drop", "ALL",
       "--uid", absl::StrCat(kSandboxUid), "--gid", absl::StrCat(kSandboxGid), "--hostname",
       SandboxHostname(spec.workspace_id)});
  // Read-only view of the host system.
  for (const char* dir : kSystemDirs) {
    struct stat st {};
    if (::lstat(dir, &st) != 0) {
      continue;
    }
    if (S_ISLNK(st.st_mode)) {
      struct stat resolved {};
      if (::stat(dir, &resolved) != 0) {
        continue;  // dangling on this host (e.g. /lib32 -> usr/lib32 without multilib)
      }
      char target[4096];
      const ssize_t n = ::readlink(dir, target, sizeof(target) - 1);
      if (n > 0) {
        add({"--symlink", std::string(target, static_cast<size_t>(n)), dir});
      }
    } else if (S_ISDIR(st.st_mode)) {
      add({"--ro-bind", dir, dir});
    }
  }
  for (const char* entry : kEtcEntries) {
    add({"--ro-bind-try", entry, entry});
  }
  add({"--perms", "0644", "--ro-bind-data", absl::StrCat(fds.passwd), "/etc/passwd"});
  add({"--perms", "0644", "--ro-bind-data", absl::StrCat(fds.group), "/etc/group"});
  add({"--perms", "0644", "--ro-bind-data", absl::StrCat(fds.hosts), "/etc/hosts"});
  add({"--proc", "/proc", "--dev", "/dev"});
  if (spec.limits.memory_bytes > 0) {
    add({"--size", absl::StrCat(spec.limits.memory_bytes)});
  }
  add({"--tmpfs", "/tmp"});
  for (const auto& [from, to] : spec.ro_binds) {
    add({"--ro-bind", from, to});
  }
  add({"--bind", spec.volume_dir, kHome});
  add({"--bind", spec.socket_dir, kSocketMount});
  if (!spec.stamp_dir.empty()) {
    add({"--ro-bind", spec.stamp_dir, kStampMount});
  }
  // The root tmpfs bwrap builds (with the mount points) becomes read-only too: the volume,
  // /tmp, /dev (shm) and /run/tidepool are the only writable places.
  add({"--remount-ro", "/", "--chdir", kHome, "--clearenv"});
  for (const auto& [name, value] : spec.env) {
    if (name != "HOME") {
      add({"--setenv", name, value});
    }
  }
  if (spec.env.find("PATH") == spec.env.end()) {
    add({"--setenv", "PATH", kDefaultPath});
  }
  add({"--setenv", "HOME", kHome});
  add({"--seccomp", absl::StrCat(fds.seccomp), "--json-status-fd", absl::StrCat(fds.json_status),
       "--info-fd", absl::StrCat(fds.info), "--"});
  a.insert(a.end(), spec.command.begin(), spec.command.end());
  return a;
}

// ---------------------------------------------------------------------------------------------
// Locking: flock(2) on locks/<id>.lock, valid across threads and processes. A holder that
// deletes the workspace unlinks the file; a waiter that then gets the lock on the unlinked
// inode notices and retries on a fresh file.

class LocalRuntime::WorkspaceLock {
 public:
  static absl::StatusOr<WorkspaceLock> Acquire(const std::string& path) {
    for (;;) {
      UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
      if (!fd.ok()) {
        return absl::UnavailableError(absl::StrCat("cannot open ", path, ": ", Errno(errno)));
      }
      while (::flock(fd.get(), LOCK_EX) != 0) {
        if (errno != EINTR) {
          return absl::UnavailableError(absl::StrCat("cannot lock ", path, ": ", Errno(errno)));
        }
      }
      struct stat held {};
      struct stat now {};
      if (::fstat(fd.get(), &held) == 0 && ::stat(path.c_str(), &now) == 0 &&
          held.st_dev == now.st_dev && held.st_ino == now.st_ino) {
        return WorkspaceLock(path, std::move(fd));
      }
    }
  }
  WorkspaceLock(WorkspaceLock&&) = default;
  ~WorkspaceLock() {
    if (fd_.ok()) {
      ::flock(fd_.get(), LOCK_UN);
    }
  }
  // Unlinks the lock file while holding it (Delete).
  void RemoveFile() { ::unlink(path_.c_str()); }

 private:
  WorkspaceLock(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  UniqueFd fd_;
};

// ---------------------------------------------------------------------------------------------

absl::StatusOr<SandboxHostUser> ResolveSandboxHostUser(const std::string& user) {
  SandboxHostUser resolved;
  if (const size_t colon = user.find(':'); colon != std::string::npos) {
    if (!absl::SimpleAtoi(user.substr(0, colon), &resolved.uid) ||
        !absl::SimpleAtoi(user.substr(colon + 1), &resolved.gid)) {
      return absl::InvalidArgumentError(
          absl::StrCat("provisioner.sandbox_user \"", user, "\" is not a user name or uid:gid"));
    }
  } else {
    struct passwd entry {};
    struct passwd* found = nullptr;
    std::vector<char> buffer(16384);
    if (::getpwnam_r(user.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 ||
        found == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "provisioner.sandbox_user \"", user,
          "\" does not exist on this host: the provisioner runs as root and never runs sandboxes "
          "as root. Create the user (scripts/setup does: useradd --system --user-group "
          "--no-create-home --shell /usr/sbin/nologin ",
          user, ") or name another one"));
    }
    resolved.uid = found->pw_uid;
    resolved.gid = found->pw_gid;
  }
  if (resolved.uid == 0 || resolved.gid == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("provisioner.sandbox_user \"", user, "\" is root; name an unprivileged user"));
  }
  return resolved;
}

absl::StatusOr<std::unique_ptr<LocalRuntime>> LocalRuntime::Open(
    const LocalRuntimeOptions& options) {
  if (!IsNormalAbsolutePath(options.state_dir) || options.state_dir == "/") {
    return absl::InvalidArgumentError("state_dir must be a normalised absolute path");
  }
  if ((options.sandbox_host_uid >= 0) != (options.sandbox_host_gid >= 0)) {
    return absl::InvalidArgumentError("set both sandbox_host_uid and sandbox_host_gid, or neither");
  }
  if (options.sandbox_host_uid >= 0 && ::geteuid() != 0) {
    return absl::FailedPreconditionError("sandbox_host_uid needs a provisioner running as root");
  }
  if (options.sandbox_host_uid >= 0) {
    if (!IsNormalAbsolutePath(options.stage_dir) || options.stage_dir == "/") {
      return absl::InvalidArgumentError("stage_dir must be a normalised absolute path");
    }
    // Stays empty on the host: each launch mounts its own tmpfs here in a private namespace.
    TP_RETURN_IF_ERROR(EnsureDir(options.stage_dir, 0755));
  }
  if (::access(options.bwrap_path.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("bubblewrap not found at ", options.bwrap_path, " (install bubblewrap)"));
  }
  for (const std::string& dir : {options.state_dir, options.state_dir + "/run",
                                 options.state_dir + "/logs", options.state_dir + "/locks"}) {
    TP_RETURN_IF_ERROR(EnsureDir(dir, 0700));
    ::chmod(dir.c_str(), 0700);
  }
  TP_ASSIGN_OR_RETURN(std::string bpf, BuildSandboxSeccompBpf());

  CgroupOptions cgroup_options;
  cgroup_options.parent_name = options.cgroup_parent;
  cgroup_options.nest_under_own_cgroup = options.nest_cgroup_under_own;
  absl::StatusOr<std::unique_ptr<CgroupManager>> cgroups =
      options.use_cgroups ? CgroupManager::Open(cgroup_options)
                          : absl::StatusOr<std::unique_ptr<CgroupManager>>(
                                absl::FailedPreconditionError("cgroups disabled by options"));
  std::string note;
  std::unique_ptr<CgroupManager> manager;
  if (!options.use_cgroups) {
    note = "limits NOT enforced: cgroups disabled by options";
  } else if (cgroups.ok()) {
    manager = *std::move(cgroups);
    note = absl::StrCat("cgroup ", manager->Describe());
  } else if (options.require_cgroups ||
             cgroups.status().code() == absl::StatusCode::kInvalidArgument) {
    return absl::FailedPreconditionError(
        absl::StrCat("cgroups are required but unusable: ", cgroups.status().message()));
  } else {
    note = absl::StrCat("limits NOT enforced: ", cgroups.status().message());
    LogWarning("sandbox resource limits are not enforced",
               {{"reason", std::string(cgroups.status().message())}});
  }
  return std::unique_ptr<LocalRuntime>(
      new LocalRuntime(options, std::move(bpf), std::move(manager), std::move(note)));
}

LocalRuntime::LocalRuntime(LocalRuntimeOptions options, std::string seccomp_bpf,
                           std::unique_ptr<CgroupManager> cgroups, std::string limits_note)
    : options_(std::move(options)),
      seccomp_bpf_(std::move(seccomp_bpf)),
      cgroups_(std::move(cgroups)),
      limits_note_(std::move(limits_note)),
      boot_id_(ReadBootId()) {}

std::string LocalRuntime::RecordPath(const std::string& id) const {
  return absl::StrCat(options_.state_dir, "/", id, ".json");
}
std::string LocalRuntime::ImagePath(const std::string& id) const {
  return absl::StrCat(options_.volume_images_dir, "/", id, ".img");
}

std::string LocalRuntime::RunDir(const std::string& id) const {
  return absl::StrCat(options_.state_dir, "/run/", id);
}
std::string LocalRuntime::StatusFilePath(const std::string& id) const {
  return absl::StrCat(RunDir(id), "/status.json");
}
std::string LocalRuntime::LogPath(const std::string& id) const {
  return absl::StrCat(options_.state_dir, "/logs/", id, ".log");
}

absl::StatusOr<LocalRuntime::Record> LocalRuntime::LoadRecord(const std::string& id) const {
  if (!IsValidWorkspaceId(id)) {
    return absl::InvalidArgumentError("workspace_id must be \"ws_\" + 26 base32 characters");
  }
  std::optional<std::string> text = ReadSmallFile(RecordPath(id));
  if (!text) {
    return absl::NotFoundError(absl::StrCat("workspace ", id, " has no sandbox"));
  }
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InternalError(absl::StrCat("sandbox record of ", id, " is corrupt"));
  }
  try {
    Record record;
    record.spec = SpecFromJson(j.at("spec"));
    if (record.spec.workspace_id != id) {
      return absl::InternalError(absl::StrCat("sandbox record of ", id, " names another id"));
    }
    if (j.contains("run") && j["run"].is_object()) {
      const nlohmann::json& r = j["run"];
      Record::Run run;
      run.monitor_pid = r.at("monitor_pid").get<int>();
      run.monitor_ticks = r.at("monitor_ticks").get<uint64_t>();
      run.init_pid = r.at("init_pid").get<int>();
      run.init_ticks = r.at("init_ticks").get<uint64_t>();
      run.boot_id = r.at("boot_id").get<std::string>();
      run.started_unix_ms = r.at("started_unix_ms").get<int64_t>();
      record.run = run;
    }
    if (j.contains("last_exit_code") && j["last_exit_code"].is_number_integer()) {
      record.last_exit_code = j["last_exit_code"].get<int>();
    }
    return record;
  } catch (const nlohmann::json::exception&) {
    return absl::InternalError(absl::StrCat("sandbox record of ", id, " is corrupt"));
  }
}

absl::Status LocalRuntime::SaveRecord(const Record& record) const {
  nlohmann::json j = {{"version", kRecordVersion}, {"spec", SpecToJson(record.spec)}};
  if (record.run) {
    j["run"] = {
        {"monitor_pid", record.run->monitor_pid}, {"monitor_ticks", record.run->monitor_ticks},
        {"init_pid", record.run->init_pid},       {"init_ticks", record.run->init_ticks},
        {"boot_id", record.run->boot_id},         {"started_unix_ms", record.run->started_unix_ms}};
  }
  if (record.last_exit_code) {
    j["last_exit_code"] = *record.last_exit_code;
  }
  std::string text;
  try {
    text = j.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {
    return absl::InternalError(absl::StrCat("cannot encode the sandbox record: ", e.what()));
  }
  return WriteFileAtomically(RecordPath(record.spec.workspace_id), text, 0600);
}

bool LocalRuntime::IsRunning(const Record& record) const {
  if (!record.run || record.run->boot_id != boot_id_) {
    return false;
  }
  return IsSameLiveProcess(record.run->monitor_pid, record.run->monitor_ticks) ||
         IsSameLiveProcess(record.run->init_pid, record.run->init_ticks);
}

std::vector<pid_t> LocalRuntime::SandboxPids(const Record& record) const {
  // The union of the cgroup's members and the members of the sandbox's pid namespace (plus the
  // outer bwrap): the namespace alone finds everything even without cgroups, or when this
  // provisioner computes a different cgroup parent than the one that started the sandbox.
  std::vector<pid_t> pids;
  auto add = [&pids](pid_t pid) {
    if (std::find(pids.begin(), pids.end(), pid) == pids.end()) {
      pids.push_back(pid);
    }
  };
  if (cgroups_ != nullptr) {
    for (pid_t pid : cgroups_->Pids(record.spec.workspace_id)) {
      if (IsLiveNonZombie(pid)) {
        add(pid);
      }
    }
  }
  if (!IsRunning(record)) {
    return pids;
  }
  if (IsSameLiveProcess(record.run->monitor_pid, record.run->monitor_ticks)) {
    add(record.run->monitor_pid);
  }
  if (IsSameLiveProcess(record.run->init_pid, record.run->init_ticks)) {
    for (pid_t pid : ProcessesInPidNamespace(PidNamespaceOf(record.run->init_pid))) {
      add(pid);
    }
  }
  return pids;
}

std::optional<int> LocalRuntime::ExitCodeFromStatusFile(const std::string& id) const {
  std::optional<std::string> text = ReadSmallFile(StatusFilePath(id));
  if (!text) {
    return std::nullopt;
  }
  // bwrap writes one JSON document per event: {"child-pid": ...} then {"exit-code": N}.
  std::optional<int> code;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("exit-code") &&
        j["exit-code"].is_number_integer()) {
      code = j["exit-code"].get<int>();
    }
  }
  return code;
}

// ---------------------------------------------------------------------------------------------
// Runtime.

absl::Status LocalRuntime::Create(const SandboxSpec& spec) {
  TP_RETURN_IF_ERROR(ValidateSandboxSpec(spec));
  std::vector<std::string> host_paths = {spec.volume_dir, spec.socket_dir};
  if (!spec.stamp_dir.empty()) {
    host_paths.push_back(spec.stamp_dir);
  }
  for (const auto& bind : spec.ro_binds) {
    host_paths.push_back(bind.first);
  }
  for (const std::string& path : host_paths) {
    if (Overlaps(path, options_.state_dir)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " overlaps the runtime's state directory"));
    }
  }
  TP_ASSIGN_OR_RETURN(WorkspaceLock lock,
                      WorkspaceLock::Acquire(
                          absl::StrCat(options_.state_dir, "/locks/", spec.workspace_id, ".lock")));
  Record record;
  absl::StatusOr<Record> existing = LoadRecord(spec.workspace_id);
  const bool is_new = absl::IsNotFound(existing.status());
  if (existing.ok()) {
    record = *std::move(existing);
    // Moving the volume under a live record would orphan the old one (and Delete would
    // remove the wrong tree): that takes a Delete first.
    if (record.spec.volume_dir != spec.volume_dir || record.spec.socket_dir != spec.socket_dir) {
      return absl::FailedPreconditionError(
          absl::StrCat("the sandbox of ", spec.workspace_id,
                       " already exists with another volume_dir or socket_dir; Delete it first"));
    }
  } else if (!is_new) {
    return existing.status();
  }
  const bool running = existing.ok() && IsRunning(record);
  record.spec = spec;
  if (!options_.volume_images_dir.empty() && spec.limits.disk_bytes > 0) {
    const uint32_t uid = options_.sandbox_host_uid >= 0 ? options_.sandbox_host_uid : ::geteuid();
    const uint32_t gid = options_.sandbox_host_gid >= 0 ? options_.sandbox_host_gid : ::getegid();
    absl::Status mounted = EnsureImageVolume(ImagePath(spec.workspace_id), spec.volume_dir,
                                             spec.limits.disk_bytes, uid, gid,
                                             /*may_remount=*/!running);
    if (absl::IsFailedPrecondition(mounted)) {
      LogInfo("the volume predates hard quotas; it keeps the soft quota",
              {{"workspace_id", spec.workspace_id}});
    } else if (!mounted.ok()) {
      return mounted;
    }
  }
  if (options_.sandbox_host_uid >= 0) {
    TP_RETURN_IF_ERROR(AdoptVolume(spec.volume_dir, static_cast<uid_t>(options_.sandbox_host_uid),
                                   static_cast<gid_t>(options_.sandbox_host_gid)));
  }
  for (const std::string& dir : {spec.volume_dir, spec.socket_dir}) {
    TP_RETURN_IF_ERROR(EnsureDir(dir, 0700));
    if (::chmod(dir.c_str(), 0700) != 0) {
      return absl::UnavailableError(absl::StrCat("cannot chmod ", dir, ": ", Errno(errno)));
    }
    if (options_.sandbox_host_uid >= 0 &&
        ::lchown(dir.c_str(), static_cast<uid_t>(options_.sandbox_host_uid),
                 static_cast<gid_t>(options_.sandbox_host_gid)) != 0) {
      return absl::UnavailableError(absl::StrCat("cannot chown ", dir, ": ", Errno(errno)));
    }
  }
  TP_RETURN_IF_ERROR(EnsureDir(RunDir(spec.workspace_id), 0700));
  if (cgroups_ != nullptr) {
    TP_RETURN_IF_ERROR(cgroups_->Prepare(spec.workspace_id, spec.limits));
  }
  TP_RETURN_IF_ERROR(SaveRecord(record));
  Log(is_new ? LogLevel::kInfo : LogLevel::kDebug, is_new ? "sandbox created" : "sandbox updated",
      {{"workspace_id", spec.workspace_id}, {"limits_enforced", cgroups_ != nullptr}});
  return absl::OkStatus();
}

absl::Status LocalRuntime::Start(const std::string& workspace_id) {
  if (!IsValidWorkspaceId(workspace_id)) {
    return absl::InvalidArgumentError("workspace_id must be \"ws_\" + 26 base32 characters");
  }
  TP_ASSIGN_OR_RETURN(
      WorkspaceLock lock,
      WorkspaceLock::Acquire(absl::StrCat(options_.state_dir, "/locks/", workspace_id, ".lock")));
  absl::StatusOr<Record> record = LoadRecord(workspace_id);
  if (absl::IsNotFound(record.status())) {
    return absl::FailedPreconditionError(
        absl::StrCat("workspace ", workspace_id, " has no sandbox: Create it first"));
  }
  if (!record.ok()) {
    return record.status();
  }
  return StartLocked(*record);
}

absl::Status LocalRuntime::StartLocked(Record& record) {
  const std::string& id = record.spec.workspace_id;
  if (IsRunning(record)) {
    return absl::OkStatus();
  }
  if (record.run) {
    // The previous run ended without a Stop (crash, or the entry exited): keep its exit code.
    if (std::optional<int> code = ExitCodeFromStatusFile(id)) {
      record.last_exit_code = code;
    }
    record.run.reset();
  }
  std::vector<std::string> must_exist = {record.spec.volume_dir, record.spec.socket_dir};
  if (!record.spec.stamp_dir.empty()) {
    must_exist.push_back(record.spec.stamp_dir);
  }
  for (const auto& bind : record.spec.ro_binds) {
    must_exist.push_back(bind.first);
  }
  for (const std::string& path : must_exist) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot start ", id, ": ", path, " does not exist"));
    }
  }
  if (cgroups_ != nullptr) {
    // After a reboot the groups are gone; after a crash leftovers may remain.
    TP_RETURN_IF_ERROR(cgroups_->Prepare(id, record.spec.limits));
    TP_RETURN_IF_ERROR(cgroups_->KillAll(id, absl::Seconds(10)));
  }
  TP_RETURN_IF_ERROR(EnsureDir(RunDir(id), 0700));
  return Launch(record);
}

absl::Status LocalRuntime::Launch(Record& record) {
  const SandboxSpec& spec = record.spec;
  const std::string& id = spec.workspace_id;
  const absl::Time begin = absl::Now();

  // Files and pipes for bwrap, all close-on-exec in this process. The log keeps one previous
  // generation once it passes kMaxLogBytes (checked at each start).
  struct stat log_st {};
  if (::stat(LogPath(id).c_str(), &log_st) == 0 && log_st.st_size > kMaxLogBytes) {
    ::rename(LogPath(id).c_str(), (LogPath(id) + ".1").c_str());
  }
  UniqueFd null_fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
  UniqueFd log_fd(
      ::open(LogPath(id).c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600));
  UniqueFd status_fd(::open(StatusFilePath(id).c_str(),
                            O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!null_fd.ok() || !log_fd.ok() || !status_fd.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot open the sandbox files of ", id, ": ", Errno(errno)));
  }
  TP_ASSIGN_OR_RETURN(int seccomp_raw, SeccompBpfToFd(seccomp_bpf_));
  UniqueFd seccomp_fd(seccomp_raw);
  TP_ASSIGN_OR_RETURN(UniqueFd passwd_fd, DataFd("passwd", PasswdFor()));
  TP_ASSIGN_OR_RETURN(UniqueFd group_fd, DataFd("group", GroupFor()));
  TP_ASSIGN_OR_RETURN(UniqueFd hosts_fd, DataFd("hosts", HostsFor(SandboxHostname(id))));

  const BwrapFds targets;
  constexpr int kArgsTarget = 9;
  constexpr int kReportTarget = 10;
  // Run as another host uid, bwrap finds the bind sources staged by the launch child (see
  // LaunchPlan::StagedBind) instead of at their host paths.
  SandboxSpec bwrap_spec = spec;
  std::vector<std::pair<std::string, std::string>> staged;  // source, target
  std::vector<bool> staged_dirs;
  if (options_.sandbox_host_uid >= 0) {
    auto stage = [&](std::string& path) {
      std::string target = absl::StrCat(options_.stage_dir, "/", staged.size());
      std::error_code ec;
      staged_dirs.push_back(std::filesystem::is_directory(path, ec));
      staged.emplace_back(path, target);
      path = std::move(target);
    };
    for (auto& bind : bwrap_spec.ro_binds) stage(bind.first);
    stage(bwrap_spec.volume_dir);
    stage(bwrap_spec.socket_dir);
    if (!bwrap_spec.stamp_dir.empty()) stage(bwrap_spec.stamp_dir);
  }
  std::vector<std::string> argv = BuildBwrapArgv(options_.bwrap_path, bwrap_spec, targets);
  // The options (with the env values) go through the fd; "--" and the entry's argv must stay
  // on the command line, where bwrap looks for the command.
  const size_t separator = argv.size() - spec.command.size() - 1;
  std::string packed;
  for (size_t i = 1; i < separator; ++i) {
    packed.append(argv[i]);
    packed.push_back('\0');
  }
  TP_ASSIGN_OR_RETURN(UniqueFd args_fd, DataFd("bwrap-args", packed));

  int info_pipe[2];
  int report_pipe[2];
  if (::pipe2(info_pipe, O_CLOEXEC) != 0) {
    return absl::UnavailableError(absl::StrCat("pipe2: ", Errno(errno)));
  }
  UniqueFd info_r(info_pipe[0]);
  UniqueFd info_w(info_pipe[1]);
  if (::pipe2(report_pipe, O_CLOEXEC) != 0) {
    return absl::UnavailableError(absl::StrCat("pipe2: ", Errno(errno)));
  }
  UniqueFd report_r(report_pipe[0]);
  UniqueFd report_w(report_pipe[1]);

  // Everything the children use is built now: after fork only async-signal-safe calls.
  std::string args_fd_text = absl::StrCat(kArgsTarget);
  std::string arg_flag = "--args";
  std::string bwrap = options_.bwrap_path;
  std::string env_path = absl::StrCat("PATH=", kDefaultPath);
  std::vector<std::string> procs;
  if (cgroups_ != nullptr) {
    for (const std::string& dir : cgroups_->Dirs(id)) {
      procs.push_back(dir + "/cgroup.procs");
    }
  }
  LaunchPlan plan;
  plan.bwrap = bwrap.c_str();
  std::vector<std::string> tail(argv.begin() + static_cast<std::ptrdiff_t>(separator), argv.end());
  plan.argv = {bwrap.data(), arg_flag.data(), args_fd_text.data()};
  for (std::string& arg : tail) {
    plan.argv.push_back(arg.data());
  }
  plan.argv.push_back(nullptr);
  plan.envp = {env_path.data(), nullptr};
  for (const std::string& p : procs) {
    plan.cgroup_procs.push_back(p.c_str());
  }
  if (!staged.empty()) {
    plan.stage_dir = options_.stage_dir.c_str();
    for (size_t i = 0; i < staged.size(); ++i) {
      plan.staged.push_back(
          {staged[i].first.c_str(), staged[i].second.c_str(), static_cast<bool>(staged_dirs[i])});
    }
  }
  plan.uid = options_.sandbox_host_uid;
  plan.gid = options_.sandbox_host_gid;
  plan.fds = {{null_fd.get(), 0},
              {log_fd.get(), 1},
              {log_fd.get(), 2},
              {seccomp_fd.get(), targets.seccomp},
              {status_fd.get(), targets.json_status},
              {info_w.get(), targets.info},
              {passwd_fd.get(), targets.passwd},
              {group_fd.get(), targets.group},
              {hosts_fd.get(), targets.hosts},
              {args_fd.get(), kArgsTarget}};
  plan.report_target = kReportTarget;

  const pid_t first = ::fork();
  if (first < 0) {
    return absl::UnavailableError(absl::StrCat("fork: ", Errno(errno)));
  }
  if (first == 0) {
    // A new session, then a second fork: the sandbox is not the provisioner's child, has no
    // controlling terminal, and survives the provisioner.
    ::setsid();
    const pid_t second = ::fork();
    if (second < 0) {
      Report(report_w.get(), 2, kStageFork, errno, 0);
      ::_exit(1);
    }
    if (second > 0) {
      Report(report_w.get(), 1, 0, 0, second);
      ::_exit(0);
    }
    RunLaunchChild(plan, report_w.get());
  }
  info_w.Reset(-1);
  report_w.Reset(-1);
  int wait_status = 0;
  while (::waitpid(first, &wait_status, 0) < 0 && errno == EINTR) {
  }

  // Reports until EOF: the launcher's pid, and a failure if one happened before exec.
  const absl::Time deadline = begin + options_.start_timeout;
  auto read_until_eof = [&](int fd, std::string* out) -> bool {
    char buf[512];
    for (;;) {
      const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (left_ms <= 0) {
        return false;
      }
      struct pollfd pfd = {fd, POLLIN, 0};
      const int rc = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left_ms, 1000)));
      if (rc < 0 && errno != EINTR) {
        return false;
      }
      if (rc <= 0) {
        continue;
      }
      const ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n == 0) {
        return true;
      }
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) {
          continue;
        }
        return false;
      }
      out->append(buf, static_cast<size_t>(n));
    }
  };
  std::string reports;
  const bool reports_done = read_until_eof(report_r.get(), &reports);
  int monitor_pid = 0;
  std::string failure;
  for (size_t off = 0; off + sizeof(LaunchReport) <= reports.size(); off += sizeof(LaunchReport)) {
    LaunchReport report;
    std::memcpy(&report, reports.data() + off, sizeof(report));
    if (report.kind == 1) {
      monitor_pid = report.pid;
    } else if (report.kind == 2) {
      failure = absl::StrCat(StageName(report.stage), " failed: ", Errno(report.err));
    }
  }
  auto cleanup = [&]() {
    if (cgroups_ != nullptr) {
      (void)cgroups_->KillAll(id, absl::Seconds(5));
    } else if (monitor_pid > 0) {
      ::kill(monitor_pid, SIGKILL);
    }
  };
  if (!failure.empty() || !reports_done || monitor_pid <= 0) {
    cleanup();
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot start the sandbox of ", id, ": ",
        failure.empty() ? std::string("the launcher did not report in time") : failure));
  }
  // bwrap writes {"child-pid": N, ...namespaces} to the info fd once the sandbox's pid 1
  // exists, then closes it; EOF without it means bwrap gave up (its message is in the log).
  std::string info;
  const bool info_done = read_until_eof(info_r.get(), &info);
  nlohmann::json info_json = nlohmann::json::parse(info, nullptr, false);
  int init_pid = 0;
  std::string pid_namespace;
  if (!info_json.is_discarded() && info_json.is_object() && info_json.contains("child-pid") &&
      info_json["child-pid"].is_number_integer()) {
    init_pid = info_json["child-pid"].get<int>();
    if (info_json.contains("pid-namespace") && info_json["pid-namespace"].is_number_unsigned()) {
      pid_namespace = absl::StrCat("pid:[", info_json["pid-namespace"].get<uint64_t>(), "]");
    }
  }
  if (init_pid <= 0) {
    cleanup();
    const std::string bwrap_error = LastBwrapError(LogPath(id));
    if (!info_done) {
      return absl::DeadlineExceededError(
          absl::StrCat("the sandbox of ", id, " did not start within ",
                       absl::FormatDuration(options_.start_timeout)));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("bwrap could not start the sandbox of ", id, ": ",
                     bwrap_error.empty() ? std::string("no reason given") : bwrap_error));
  }
  Record::Run run;
  run.monitor_pid = monitor_pid;
  run.init_pid = init_pid;
  run.boot_id = boot_id_;
  run.started_unix_ms = absl::ToUnixMillis(absl::Now());
  // Identify both processes beyond doubt before recording them (a start time read from a
  // reused pid would make a stranger "the sandbox"): the init must live in the pid namespace
  // bwrap reported, and, read afterwards, still be the child of the monitor.
  const std::optional<ProcStat> monitor_stat = ReadProcStat(monitor_pid);
  const std::optional<ProcStat> init_stat = ReadProcStat(init_pid);
  const bool init_known =
      init_stat && (pid_namespace.empty() || PidNamespaceOf(init_pid) == pid_namespace);
  if (init_known) {
    run.init_ticks = init_stat->start_ticks;
    if (monitor_stat && init_stat->ppid == monitor_pid) {
      run.monitor_ticks = monitor_stat->start_ticks;
    }
  }
  record.run = run;
  if (absl::Status saved = SaveRecord(record); !saved.ok()) {
    cleanup();
    record.run.reset();
    return saved;
  }
  LogInfo("sandbox started", {{"workspace_id", id},
                              {"pid", monitor_pid},
                              {"init_pid", init_pid},
                              {"start_ms", absl::ToDoubleMilliseconds(absl::Now() - begin)},
                              {"limits_enforced", cgroups_ != nullptr}});
  return absl::OkStatus();
}

absl::Status LocalRuntime::Stop(const std::string& workspace_id, absl::Duration grace) {
  if (!IsValidWorkspaceId(workspace_id)) {
    return absl::InvalidArgumentError("workspace_id must be \"ws_\" + 26 base32 characters");
  }
  TP_ASSIGN_OR_RETURN(
      WorkspaceLock lock,
      WorkspaceLock::Acquire(absl::StrCat(options_.state_dir, "/locks/", workspace_id, ".lock")));
  TP_ASSIGN_OR_RETURN(Record record, LoadRecord(workspace_id));
  return StopLocked(record, grace);
}

absl::Status LocalRuntime::StopLocked(Record& record, absl::Duration grace) {
  const std::string& id = record.spec.workspace_id;
  const bool was_running = IsRunning(record);
  bool killed = false;
  if (was_running) {
    // SIGTERM to every process but bwrap's own two (the outer monitor, which records the exit
    // code, and the sandbox's pid 1, which ignores it): the entry and everything it started.
    for (pid_t pid : SandboxPids(record)) {
      if (pid != record.run->monitor_pid && pid != record.run->init_pid) {
        ::kill(pid, SIGTERM);
      }
    }
    const absl::Time deadline = absl::Now() + grace;
    while (IsRunning(record) && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    killed = IsRunning(record);
  }
  // SIGKILL whatever is left, including leftovers of a run that ended without a Stop: the
  // cgroup (frozen first on v1, cgroup.kill on v2), and the pid namespace's init, whose death
  // kills every process in the namespace.
  if (cgroups_ != nullptr) {
    TP_RETURN_IF_ERROR(cgroups_->KillAll(id, absl::Seconds(10)));
  }
  if (record.run && IsRunning(record)) {
    if (IsSameLiveProcess(record.run->init_pid, record.run->init_ticks)) {
      ::kill(record.run->init_pid, SIGKILL);
    }
    if (IsSameLiveProcess(record.run->monitor_pid, record.run->monitor_ticks)) {
      ::kill(record.run->monitor_pid, SIGKILL);
    }
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (IsRunning(record)) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("the sandbox of ", id, " did not stop"));
    }
    absl::SleepFor(absl::Milliseconds(2));
  }
  if (record.run) {
    std::optional<int> code = ExitCodeFromStatusFile(id);
    if (!code && killed) {
      code = 128 + SIGKILL;
    }
    record.last_exit_code = code;
    record.run.reset();
    TP_RETURN_IF_ERROR(SaveRecord(record));
  }
  if (was_running) {
    LogInfo("sandbox stopped", {{"workspace_id", id}, {"killed", killed}});
  }
  return absl::OkStatus();
}

absl::Status LocalRuntime::Delete(const std::string& workspace_id) {
  if (!IsValidWorkspaceId(workspace_id)) {
    return absl::InvalidArgumentError("workspace_id must be \"ws_\" + 26 base32 characters");
  }
  TP_ASSIGN_OR_RETURN(
      WorkspaceLock lock,
      WorkspaceLock::Acquire(absl::StrCat(options_.state_dir, "/locks/", workspace_id, ".lock")));
  absl::StatusOr<Record> record = LoadRecord(workspace_id);
  if (absl::IsNotFound(record.status())) {
    lock.RemoveFile();
    return absl::OkStatus();
  }
  if (!record.ok()) {
    return record.status();
  }
  TP_RETURN_IF_ERROR(StopLocked(*record, options_.delete_grace));
  if (cgroups_ != nullptr) {
    TP_RETURN_IF_ERROR(cgroups_->Remove(workspace_id));
  }
  if (!options_.volume_images_dir.empty()) {
    TP_RETURN_IF_ERROR(ReleaseImageVolume(ImagePath(workspace_id), record->spec.volume_dir));
  }
  TP_RETURN_IF_ERROR(RemoveTree(record->spec.volume_dir));
  TP_RETURN_IF_ERROR(RemoveTree(record->spec.socket_dir));
  TP_RETURN_IF_ERROR(RemoveTree(RunDir(workspace_id)));
  ::unlink(LogPath(workspace_id).c_str());
  ::unlink((LogPath(workspace_id) + ".1").c_str());
  // The record goes last: a Delete interrupted before this point can be repeated.
  if (::unlink(RecordPath(workspace_id).c_str()) != 0 && errno != ENOENT) {
    return absl::UnavailableError(
        absl::StrCat("cannot remove the record of ", workspace_id, ": ", Errno(errno)));
  }
  lock.RemoveFile();
  LogInfo("sandbox deleted", {{"workspace_id", workspace_id}});
  return absl::OkStatus();
}

absl::StatusOr<SandboxStatus> LocalRuntime::Status(const std::string& workspace_id) {
  absl::StatusOr<Record> record = LoadRecord(workspace_id);
  SandboxStatus status;
  if (absl::IsNotFound(record.status())) {
    return status;
  }
  if (!record.ok()) {
    return record.status();
  }
  status.last_exit_code = record->last_exit_code;
  if (IsRunning(*record)) {
    status.phase = SandboxPhase::kRunning;
    // The outer bwrap normally; the sandbox's pid 1 if someone killed the outer one alone.
    status.pid = IsSameLiveProcess(record->run->monitor_pid, record->run->monitor_ticks)
                     ? record->run->monitor_pid
                     : record->run->init_pid;
    return status;
  }
  status.phase = SandboxPhase::kStopped;
  if (record->run && record->run->boot_id == boot_id_) {
    // Ended on its own since the last Start: bwrap recorded the entry's exit code.
    status.last_exit_code = ExitCodeFromStatusFile(workspace_id);
  }
  return status;
}

absl::StatusOr<SandboxUsage> LocalRuntime::Usage(const std::string& workspace_id) {
  TP_ASSIGN_OR_RETURN(Record record, LoadRecord(workspace_id));
  SandboxUsage usage;
  if (cgroups_ != nullptr) {
    absl::StatusOr<CgroupStats> stats = cgroups_->Stats(workspace_id);
    if (stats.ok()) {
      usage.cpu_seconds = stats->cpu_seconds;
      usage.memory_bytes = stats->memory_bytes;
      usage.processes = stats->processes;
      usage.oom_kills = stats->oom_kills;
    }
  } else {
    usage.processes = static_cast<int>(SandboxPids(record).size());
  }
  if (IsMountPoint(record.spec.volume_dir)) {
    // An image volume: its own file system says exactly what counts against the quota.
    TP_ASSIGN_OR_RETURN(usage.disk_bytes, MountedBytesUsed(record.spec.volume_dir));
  } else {
    const DiskMeasure disk =
        MeasureDisk(record.spec.volume_dir, absl::Now() + options_.disk_walk_budget);
    usage.disk_bytes = disk.bytes;
    usage.disk_bytes_partial = disk.partial;
  }
  return usage;
}

absl::StatusOr<std::vector<std::string>> LocalRuntime::List() {
  std::vector<std::string> ids;
  DIR* dir = ::opendir(options_.state_dir.c_str());
  if (dir == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot list ", options_.state_dir, ": ", Errno(errno)));
  }
  while (struct dirent* entry = ::readdir(dir)) {
    absl::string_view name = entry->d_name;
    if (absl::ConsumeSuffix(&name, ".json") && IsValidWorkspaceId(name)) {
      ids.emplace_back(name);
    }
  }
  ::closedir(dir);
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace tidepool::provisioner
