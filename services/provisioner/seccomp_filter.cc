#include "services/provisioner/seccomp_filter.h"

#include <errno.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"

namespace tidepool::provisioner {
namespace {

// Denied whatever the arguments. Mount-related calls include the new mount API (fsopen and
// friends), which would otherwise be a second way to the same effect.
constexpr const char* kAlwaysDenied[] = {
    "mount",
    "umount2",
    "unshare",
    "setns",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "reboot",
    "swapon",
    "swapoff",
    "open_by_handle_at",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "vhangup",
    "lookup_dcookie",
    "iopl",
    "ioperm",
    "uselib",
    "settimeofday",
    "clock_settime",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
};

// clone(2) flags that create namespaces. CLONE_NEWTIME (0x80) is not listed: for clone(2) the
// low byte is the exit signal, and a new time namespace can only be made with unshare/clone3.
struct NamedFlag {
  const char* name;
  uint64_t flag;
};
constexpr NamedFlag kNamespaceFlags[] = {
    {"CLONE_NEWNS", CLONE_NEWNS},     {"CLONE_NEWCGROUP", CLONE_NEWCGROUP},
    {"CLONE_NEWUTS", CLONE_NEWUTS},   {"CLONE_NEWIPC", CLONE_NEWIPC},
    {"CLONE_NEWUSER", CLONE_NEWUSER}, {"CLONE_NEWPID", CLONE_NEWPID},
    {"CLONE_NEWNET", CLONE_NEWNET},
};

struct FilterDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};
using FilterPtr = std::unique_ptr<void, FilterDeleter>;

absl::Status Add(scmp_filter_ctx ctx, const char* name, int error, unsigned int arg_count,
                 const scmp_arg_cmp* args) {
  const int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) {
    return absl::InternalError(absl::StrCat("seccomp: unknown syscall ", name));
  }
  const int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(static_cast<uint32_t>(error)), nr,
                                        arg_count, args);
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat("seccomp: cannot add a rule for ", name, ": ", std::strerror(-rc)));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<SeccompDenyRule> SandboxSeccompRules() {
  std::vector<SeccompDenyRule> rules;
  for (const char* name : kAlwaysDenied) {
    rules.push_back({name, "", EPERM});
  }
  for (const NamedFlag& flag : kNamespaceFlags) {
    rules.push_back({"clone", absl::StrCat("flags & ", flag.name), EPERM});
  }
  rules.push_back({"clone3", "(arguments not inspectable: glibc falls back to clone)", ENOSYS});
  rules.push_back({"personality", "persona other than 0 or 0xffffffff (query)", EPERM});
  rules.push_back(
      {"socket", "domain == AF_VSOCK (not namespaced: would reach the VM host)", EPERM});
  return rules;
}

absl::StatusOr<std::string> BuildSandboxSeccompBpf() {
  FilterPtr filter(seccomp_init(SCMP_ACT_ALLOW));
  if (filter == nullptr) {
    return absl::InternalError("seccomp_init failed");
  }
  scmp_filter_ctx ctx = filter.get();
  for (const char* name : kAlwaysDenied) {
    if (absl::Status s = Add(ctx, name, EPERM, 0, nullptr); !s.ok()) {
      return s;
    }
  }
  for (const NamedFlag& flag : kNamespaceFlags) {
    const scmp_arg_cmp cmp = SCMP_A0(SCMP_CMP_MASKED_EQ, flag.flag, flag.flag);
    if (absl::Status s = Add(ctx, "clone", EPERM, 1, &cmp); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = Add(ctx, "clone3", ENOSYS, 0, nullptr); !s.ok()) {
    return s;
  }
  // personality(2) reads a 32-bit value. "Not 0 and not all ones" is the union over k of
  // "bit k set and bit k+1 (cyclically) clear": any value with both a set and a clear bit has
  // such a pair. libseccomp allows one comparison per argument per rule, hence 32 rules.
  for (int k = 0; k < 32; ++k) {
    const uint64_t set_bit = uint64_t{1} << k;
    const uint64_t clear_bit = uint64_t{1} << ((k + 1) % 32);
    const scmp_arg_cmp cmp = SCMP_A0(SCMP_CMP_MASKED_EQ, set_bit | clear_bit, set_bit);
    if (absl::Status s = Add(ctx, "personality", EPERM, 1, &cmp); !s.ok()) {
      return s;
    }
  }
  {
    const scmp_arg_cmp cmp = SCMP_A0(SCMP_CMP_EQ, static_cast<uint64_t>(AF_VSOCK));
    if (absl::Status s = Add(ctx, "socket", EPERM, 1, &cmp); !s.ok()) {
      return s;
    }
  }

  const int fd = memfd_create("tidepool-seccomp-export", MFD_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("memfd_create: ", std::strerror(errno)));
  }
  const int rc = seccomp_export_bpf(ctx, fd);
  if (rc != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat("seccomp_export_bpf: ", std::strerror(-rc)));
  }
  std::string bpf;
  const off_t size = ::lseek(fd, 0, SEEK_END);
  if (size <= 0) {
    ::close(fd);
    return absl::InternalError("seccomp_export_bpf wrote nothing");
  }
  bpf.resize(static_cast<size_t>(size));
  const ssize_t n = ::pread(fd, bpf.data(), bpf.size(), 0);
  ::close(fd);
  if (n != size) {
    return absl::InternalError("cannot read back the exported seccomp program");
  }
  return bpf;
}

absl::StatusOr<int> SeccompBpfToFd(const std::string& bpf) {
  const int fd = memfd_create("tidepool-seccomp", MFD_CLOEXEC);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("memfd_create: ", std::strerror(errno)));
  }
  size_t off = 0;
  while (off < bpf.size()) {
    const ssize_t n = ::write(fd, bpf.data() + off, bpf.size() - off);
    if (n <= 0) {
      ::close(fd);
      return absl::UnavailableError("cannot write the seccomp program to a memfd");
    }
    off += static_cast<size_t>(n);
  }
  if (::lseek(fd, 0, SEEK_SET) != 0) {
    ::close(fd);
    return absl::UnavailableError("cannot rewind the seccomp memfd");
  }
  return fd;
}

}  // namespace tidepool::provisioner
