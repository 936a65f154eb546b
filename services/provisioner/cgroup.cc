#include "services/provisioner/cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace tidepool::provisioner {
namespace {

constexpr int64_t kCpuPeriodUs = 100000;

std::optional<std::string> ReadSmall(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

int64_t ReadInt(const std::string& path, int64_t fallback) {
  std::optional<std::string> text = ReadSmall(path);
  int64_t value = 0;
  if (!text || !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &value)) {
    return fallback;
  }
  return value;
}

// The value of `key` in a flat keyed file ("key value" lines: cpu.stat, memory.events,
// memory.oom_control).
int64_t ReadKeyed(const std::string& path, absl::string_view key, int64_t fallback) {
  std::optional<std::string> text = ReadSmall(path);
  if (!text) {
    return fallback;
  }
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(line, absl::MaxSplits(' ', 1));
    int64_t value = 0;
    if (kv.first == key && absl::SimpleAtoi(absl::StripAsciiWhitespace(kv.second), &value)) {
      return value;
    }
  }
  return fallback;
}

std::vector<pid_t> ReadPids(const std::string& procs_path) {
  std::vector<pid_t> pids;
  std::optional<std::string> text = ReadSmall(procs_path);
  if (!text) {
    return pids;
  }
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    int value = 0;
    if (absl::SimpleAtoi(line, &value) && value > 0) {
      pids.push_back(value);
    }
  }
  return pids;
}

bool IsDir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

absl::Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) {
    return absl::OkStatus();
  }
  const int err = errno;
  return absl::FailedPreconditionError(
      absl::StrCat("cannot create cgroup ", path, ": ", std::strerror(err),
                   err == EACCES || err == EPERM || err == EROFS
                       ? " (the provisioner needs write access to the cgroup hierarchy: run it "
                         "as root or in a delegated cgroup)"
                       : ""));
}

struct Mount {
  std::string point;
  std::string fstype;
  std::vector<std::string> super_options;
};

std::vector<Mount> ReadCgroupMounts() {
  std::vector<Mount> mounts;
  std::optional<std::string> text = ReadSmall("/proc/self/mountinfo");
  if (!text) {
    return mounts;
  }
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    // id parent major:minor root point options [optional...] - fstype source super_options
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ');
    size_t dash = 0;
    while (dash < fields.size() && fields[dash] != "-") {
      ++dash;
    }
    if (dash < 5 || dash + 2 >= fields.size()) {
      continue;
    }
    const absl::string_view fstype = fields[dash + 1];
    if (fstype != "cgroup" && fstype != "cgroup2") {
      continue;
    }
    Mount mount;
    mount.point = std::string(fields[4]);
    mount.fstype = std::string(fstype);
    if (dash + 3 < fields.size()) {
      mount.super_options = absl::StrSplit(fields[dash + 3], ',');
    }
    mounts.push_back(std::move(mount));
  }
  return mounts;
}

// /proc/self/cgroup: controller name (or "" for v2) -> own path.
std::map<std::string, std::string> ReadOwnCgroups() {
  std::map<std::string, std::string> own;
  std::optional<std::string> text = ReadSmall("/proc/self/cgroup");
  if (!text) {
    return own;
  }
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (fields.size() != 3) {
      continue;
    }
    if (fields[1].empty()) {
      own[""] = std::string(fields[2]);
      continue;
    }
    for (absl::string_view controller : absl::StrSplit(fields[1], ',')) {
      own[std::string(controller)] = std::string(fields[2]);
    }
  }
  return own;
}

std::string JoinPath(absl::string_view a, absl::string_view b) {
  std::string out(absl::StripSuffix(a, "/"));
  absl::string_view rest = absl::StripPrefix(b, "/");
  if (!rest.empty()) {
    absl::StrAppend(&out, "/", rest);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CgroupManager>> CgroupManager::Open(const CgroupOptions& options) {
  if (options.parent_name.empty() || options.parent_name.find('/') != std::string::npos ||
      options.parent_name == "." || options.parent_name == "..") {
    return absl::InvalidArgumentError("cgroup parent name must be one path component");
  }
  const bool fake = !options.fake_root.empty();
  CgroupVersion version = CgroupVersion::kNone;
  std::vector<Controller> controllers;
  std::map<std::string, std::string> own =
      fake ? std::map<std::string, std::string>{} : ReadOwnCgroups();
  auto base_for = [&](const std::string& mount_point, const std::string& key) {
    if (!options.nest_under_own_cgroup || fake) {
      return mount_point;
    }
    auto it = own.find(key);
    return it == own.end() ? mount_point : JoinPath(mount_point, it->second);
  };

  if (fake) {
    version = options.fake_version;
    if (version == CgroupVersion::kV2) {
      controllers.push_back({"", JoinPath(options.fake_root, options.parent_name)});
    } else if (version == CgroupVersion::kV1) {
      for (const char* c : {"memory", "pids", "cpu", "cpuacct", "freezer"}) {
        controllers.push_back({c, JoinPath(JoinPath(options.fake_root, c), options.parent_name)});
      }
    } else {
      return absl::InvalidArgumentError("fake cgroup root needs a version");
    }
  } else {
    std::vector<Mount> mounts = ReadCgroupMounts();
    // Prefer v2 when the unified hierarchy has the controllers we need (a pure v2 host); on a
    // hybrid host the unified hierarchy is controller-less and v1 does the work.
    for (const Mount& mount : mounts) {
      if (mount.fstype != "cgroup2") {
        continue;
      }
      std::optional<std::string> available = ReadSmall(JoinPath(mount.point, "cgroup.controllers"));
      if (!available) {
        continue;
      }
      std::vector<std::string> names =
          absl::StrSplit(absl::StripAsciiWhitespace(*available), ' ', absl::SkipEmpty());
      auto has = [&](absl::string_view n) {
        return std::find(names.begin(), names.end(), n) != names.end();
      };
      if (has("memory") && has("pids")) {
        version = CgroupVersion::kV2;
        const std::string base = base_for(mount.point, "");
        controllers.push_back({"", JoinPath(base, options.parent_name)});
        break;
      }
    }
    if (version == CgroupVersion::kNone) {
      for (const char* wanted : {"memory", "pids", "cpu", "cpuacct", "freezer"}) {
        for (const Mount& mount : mounts) {
          if (mount.fstype != "cgroup") {
            continue;
          }
          if (std::find(mount.super_options.begin(), mount.super_options.end(), wanted) ==
              mount.super_options.end()) {
            continue;
          }
          controllers.push_back(
              {wanted, JoinPath(base_for(mount.point, wanted), options.parent_name)});
          break;
        }
      }
      auto has = [&](absl::string_view n) {
        for (const Controller& c : controllers) {
          if (c.name == n) {
            return true;
          }
        }
        return false;
      };
      if (!has("memory") || !has("pids")) {
        return absl::FailedPreconditionError(
            "no usable cgroup hierarchy: need cgroup v2 with the memory and pids controllers, "
            "or cgroup v1 memory and pids hierarchies");
      }
      version = CgroupVersion::kV1;
    }
  }

  std::unique_ptr<CgroupManager> manager(new CgroupManager(version, std::move(controllers), fake));
  for (const Controller& c : manager->controllers_) {
    if (!fake) {
      // The parent's own parent must exist (the provisioner's group, or the root).
      const std::string above = c.parent_dir.substr(0, c.parent_dir.rfind('/'));
      if (!IsDir(above)) {
        return absl::FailedPreconditionError(absl::StrCat("cgroup ", above, " does not exist"));
      }
    } else {
      if (absl::Status s = MakeDir(c.parent_dir.substr(0, c.parent_dir.rfind('/'))); !s.ok()) {
        return s;
      }
    }
    if (absl::Status s = MakeDir(c.parent_dir); !s.ok()) {
      return s;
    }
  }
  if (version == CgroupVersion::kV2) {
    // Controllers must be enabled in every ancestor's subtree_control down to the sandbox's
    // group: in the group holding the parent (fails with EBUSY when that group has processes
    // of its own and is not the root: the "no internal processes" rule) and in the parent.
    const std::string parent = manager->controllers_[0].parent_dir;
    const std::string above = parent.substr(0, parent.rfind('/'));
    for (const std::string& dir : {above, parent}) {
      std::string enabled = ReadSmall(JoinPath(dir, "cgroup.subtree_control")).value_or("");
      std::string available =
          fake ? "memory pids cpu" : ReadSmall(JoinPath(dir, "cgroup.controllers")).value_or("");
      std::vector<std::string> have =
          absl::StrSplit(enabled, absl::ByAnyChar(" \n"), absl::SkipEmpty());
      std::vector<std::string> can =
          absl::StrSplit(available, absl::ByAnyChar(" \n"), absl::SkipEmpty());
      std::string want;
      for (const char* c : {"memory", "pids", "cpu"}) {
        const bool enabled_now = std::find(have.begin(), have.end(), c) != have.end();
        const bool possible = std::find(can.begin(), can.end(), c) != can.end();
        if (!enabled_now && possible) {
          absl::StrAppend(&want, want.empty() ? "" : " ", "+", c);
        }
      }
      if (want.empty()) {
        continue;
      }
      if (absl::Status s = manager->WriteFile(JoinPath(dir, "cgroup.subtree_control"), want);
          !s.ok()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "cgroup v2: cannot enable ", want, " in ", dir, ": ", s.message(),
            " (a group that holds processes cannot delegate controllers: run the provisioner "
            "in a leaf of a delegated subtree, e.g. systemd Delegate=yes, or set "
            "nest_under_own_cgroup=false when running as root)"));
      }
    }
  }
  return manager;
}

std::string CgroupManager::Describe() const {
  std::vector<std::string> parts;
  for (const Controller& c : controllers_) {
    parts.push_back(c.name.empty() ? c.parent_dir : absl::StrCat(c.name, "=", c.parent_dir));
  }
  return absl::StrCat(version_ == CgroupVersion::kV2 ? "v2 " : "v1 ", absl::StrJoin(parts, " "));
}

std::string CgroupManager::DirFor(absl::string_view controller, absl::string_view name) const {
  for (const Controller& c : controllers_) {
    if (c.name == controller) {
      return JoinPath(c.parent_dir, name);
    }
  }
  return "";
}

std::vector<std::string> CgroupManager::Dirs(absl::string_view name) const {
  std::vector<std::string> dirs;
  for (const Controller& c : controllers_) {
    const std::string dir = JoinPath(c.parent_dir, name);
    if (std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) {
      dirs.push_back(dir);
    }
  }
  return dirs;
}

absl::Status CgroupManager::WriteFile(const std::string& path, absl::string_view value) const {
  const int flags = O_WRONLY | O_CLOEXEC | (fake_ ? (O_CREAT | O_TRUNC) : 0);
  const int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  const ssize_t n = ::write(fd, value.data(), value.size());
  const int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(value.size())) {
    return absl::UnavailableError(
        absl::StrCat("cannot write \"", value, "\" to ", path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::Status CgroupManager::Prepare(absl::string_view name, const ResourceLimits& limits) {
  for (const std::string& dir : Dirs(name)) {
    if (absl::Status s = MakeDir(dir); !s.ok()) {
      return s;
    }
  }
  const bool cpu_limited = limits.cpus > 0;
  const int64_t quota_us =
      cpu_limited ? std::max<int64_t>(1000, std::llround(limits.cpus * kCpuPeriodUs)) : -1;
  if (version_ == CgroupVersion::kV2) {
    const std::string dir = DirFor("", name);
    const std::string memory =
        limits.memory_bytes > 0 ? absl::StrCat(limits.memory_bytes) : std::string("max");
    if (absl::Status s = WriteFile(JoinPath(dir, "memory.max"), memory); !s.ok()) {
      return s;
    }
    // No swap beyond the memory limit (the file exists only with swap accounting).
    if (fake_ || ::access(JoinPath(dir, "memory.swap.max").c_str(), F_OK) == 0) {
      if (absl::Status s =
              WriteFile(JoinPath(dir, "memory.swap.max"), limits.memory_bytes > 0 ? "0" : "max");
          !s.ok()) {
        return s;
      }
    }
    if (absl::Status s = WriteFile(JoinPath(dir, "pids.max"),
                                   limits.pids > 0 ? absl::StrCat(limits.pids) : "max");
        !s.ok()) {
      return s;
    }
    if (fake_ || ::access(JoinPath(dir, "cpu.max").c_str(), F_OK) == 0) {
      const std::string cpu = cpu_limited ? absl::StrCat(quota_us, " ", kCpuPeriodUs)
                                          : absl::StrCat("max ", kCpuPeriodUs);
      if (absl::Status s = WriteFile(JoinPath(dir, "cpu.max"), cpu); !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }

  // v1. memory.memsw.limit_in_bytes (memory + swap) must stay >= memory.limit_in_bytes, so the
  // order of the two writes depends on the direction of the change.
  const std::string memory_dir = DirFor("memory", name);
  const std::string limit = limits.memory_bytes > 0 ? absl::StrCat(limits.memory_bytes) : "-1";
  const std::string memsw_path = JoinPath(memory_dir, "memory.memsw.limit_in_bytes");
  const bool has_memsw = fake_ || ::access(memsw_path.c_str(), F_OK) == 0;
  const int64_t current_memsw = ReadInt(memsw_path, INT64_MAX);
  const bool raise = limits.memory_bytes <= 0 || limits.memory_bytes > current_memsw;
  if (has_memsw && raise) {
    if (absl::Status s = WriteFile(memsw_path, limit); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = WriteFile(JoinPath(memory_dir, "memory.limit_in_bytes"), limit); !s.ok()) {
    return s;
  }
  if (has_memsw && !raise) {
    if (absl::Status s = WriteFile(memsw_path, limit); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = WriteFile(JoinPath(DirFor("pids", name), "pids.max"),
                                 limits.pids > 0 ? absl::StrCat(limits.pids) : "max");
      !s.ok()) {
    return s;
  }
  const std::string cpu_dir = DirFor("cpu", name);
  if (!cpu_dir.empty()) {
    if (absl::Status s =
            WriteFile(JoinPath(cpu_dir, "cpu.cfs_period_us"), absl::StrCat(kCpuPeriodUs));
        !s.ok()) {
      return s;
    }
    if (absl::Status s = WriteFile(JoinPath(cpu_dir, "cpu.cfs_quota_us"), absl::StrCat(quota_us));
        !s.ok()) {
      return s;
    }
  } else if (cpu_limited) {
    return absl::FailedPreconditionError("cgroup v1 cpu controller is not mounted");
  }
  return absl::OkStatus();
}

bool CgroupManager::Exists(absl::string_view name) const {
  for (const std::string& dir : Dirs(name)) {
    if (!IsDir(dir)) {
      return false;
    }
  }
  return true;
}

std::vector<pid_t> CgroupManager::Pids(absl::string_view name) const {
  // Every process of the sandbox is in every hierarchy's group; one of them is enough. On v1 a
  // process that failed to join all would still be found by the union, so read them all.
  std::vector<pid_t> all;
  for (const std::string& dir : Dirs(name)) {
    for (pid_t pid : ReadPids(JoinPath(dir, "cgroup.procs"))) {
      if (std::find(all.begin(), all.end(), pid) == all.end()) {
        all.push_back(pid);
      }
    }
  }
  return all;
}

void CgroupManager::SignalAll(absl::string_view name, int signal_number, pid_t except_pid) const {
  for (pid_t pid : Pids(name)) {
    if (pid != except_pid && pid > 1) {
      ::kill(pid, signal_number);
    }
  }
}

absl::Status CgroupManager::KillAll(absl::string_view name, absl::Duration timeout) const {
  if (!Exists(name) && Pids(name).empty()) {
    return absl::OkStatus();
  }
  const absl::Time deadline = absl::Now() + timeout;
  if (version_ == CgroupVersion::kV2) {
    const std::string dir = DirFor("", name);
    const std::string kill_path = JoinPath(dir, "cgroup.kill");
    if (!fake_ && ::access(kill_path.c_str(), F_OK) == 0) {
      (void)WriteFile(kill_path, "1");
    } else if (!fake_) {
      // Before 5.14: freeze so nothing forks while we kill, then thaw so the kills land.
      (void)WriteFile(JoinPath(dir, "cgroup.freeze"), "1");
      SignalAll(name, SIGKILL, 0);
      (void)WriteFile(JoinPath(dir, "cgroup.freeze"), "0");
    }
  } else {
    const std::string freezer = DirFor("freezer", name);
    if (!freezer.empty() && !fake_ && IsDir(freezer)) {
      if (WriteFile(JoinPath(freezer, "freezer.state"), "FROZEN").ok()) {
        const absl::Time freeze_deadline = absl::Now() + absl::Seconds(1);
        while (absl::Now() < freeze_deadline &&
               absl::StripAsciiWhitespace(
                   ReadSmall(JoinPath(freezer, "freezer.state")).value_or("")) != "FROZEN") {
          absl::SleepFor(absl::Milliseconds(1));
        }
        SignalAll(name, SIGKILL, 0);
        (void)WriteFile(JoinPath(freezer, "freezer.state"), "THAWED");
      }
    }
  }
  for (;;) {
    std::vector<pid_t> left = Pids(name);
    if (left.empty()) {
      return absl::OkStatus();
    }
    for (pid_t pid : left) {
      if (pid > 1) {
        ::kill(pid, SIGKILL);
      }
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(left.size(), " processes remain in cgroup ", name, " after SIGKILL"));
    }
    absl::SleepFor(absl::Milliseconds(2));
  }
}

absl::StatusOr<CgroupStats> CgroupManager::Stats(absl::string_view name) const {
  if (!Exists(name)) {
    return absl::NotFoundError(absl::StrCat("no cgroup for ", name));
  }
  CgroupStats stats;
  if (version_ == CgroupVersion::kV2) {
    const std::string dir = DirFor("", name);
    stats.cpu_seconds =
        static_cast<double>(ReadKeyed(JoinPath(dir, "cpu.stat"), "usage_usec", 0)) / 1e6;
    stats.memory_bytes = ReadInt(JoinPath(dir, "memory.current"), 0);
    stats.processes = static_cast<int>(ReadInt(JoinPath(dir, "pids.current"), 0));
    stats.oom_kills = ReadKeyed(JoinPath(dir, "memory.events"), "oom_kill", 0);
    return stats;
  }
  const std::string cpuacct = DirFor("cpuacct", name);
  if (!cpuacct.empty()) {
    stats.cpu_seconds = static_cast<double>(ReadInt(JoinPath(cpuacct, "cpuacct.usage"), 0)) / 1e9;
  }
  const std::string memory = DirFor("memory", name);
  stats.memory_bytes = ReadInt(JoinPath(memory, "memory.usage_in_bytes"), 0);
  stats.oom_kills = ReadKeyed(JoinPath(memory, "memory.oom_control"), "oom_kill", 0);
  stats.processes = static_cast<int>(ReadInt(JoinPath(DirFor("pids", name), "pids.current"), 0));
  return stats;
}

absl::Status CgroupManager::Remove(absl::string_view name) const {
  if (absl::Status s = KillAll(name, absl::Seconds(10)); !s.ok()) {
    return s;
  }
  for (const std::string& dir : Dirs(name)) {
    // A group whose last tasks are still exiting can refuse rmdir briefly.
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    for (;;) {
      if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) {
        break;
      }
      const int err = errno;
      if (err != EBUSY || absl::Now() >= deadline) {
        return absl::UnavailableError(
            absl::StrCat("cannot remove cgroup ", dir, ": ", std::strerror(err)));
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
  }
  return absl::OkStatus();
}

absl::Status CgroupManager::RemoveParent() const {
  for (const Controller& c : controllers_) {
    if (::rmdir(c.parent_dir.c_str()) != 0 && errno != ENOENT) {
      return absl::UnavailableError(
          absl::StrCat("cannot remove cgroup ", c.parent_dir, ": ", std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

}  // namespace tidepool::provisioner
