#include "services/provisioner/seccomp_filter.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace tidepool::provisioner {
namespace {

using ::testing::Contains;
using ::testing::Field;
using ::tidepool::testing::IsOk;

// Loads the filter in a forked child and checks each probe there; the child's exit code is the
// number of the first failed probe (0 = all passed).
int RunProbesUnderFilter(const std::string& bpf) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    struct sock_fprog prog;
    prog.len = static_cast<unsigned short>(bpf.size() / sizeof(struct sock_filter));
    prog.filter = reinterpret_cast<struct sock_filter*>(const_cast<char*>(bpf.data()));
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
      ::_exit(100);
    }
    auto denied = [](long rc, int err) { return rc == -1 && errno == err; };
    if (!denied(::unshare(CLONE_NEWUSER), EPERM)) ::_exit(1);
    if (!denied(::unshare(CLONE_NEWNS), EPERM)) ::_exit(2);
    if (!denied(::syscall(SYS_setns, 0, 0), EPERM)) ::_exit(3);
    if (!denied(::syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, nullptr), EPERM)) ::_exit(4);
    if (!denied(::syscall(SYS_ptrace, 0, 0, 0, 0), EPERM)) ::_exit(5);
    if (!denied(::syscall(SYS_bpf, 0, nullptr, 0), EPERM)) ::_exit(6);
    if (!denied(::syscall(SYS_keyctl, 0, 0, 0, 0, 0), EPERM)) ::_exit(7);
    if (!denied(::syscall(SYS_userfaultfd, 0), EPERM)) ::_exit(8);
    if (!denied(::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0), EPERM)) ::_exit(9);
    if (!denied(::syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0), EPERM)) ::_exit(10);
    if (!denied(::syscall(SYS_clone3, nullptr, 0), ENOSYS)) ::_exit(11);
    if (!denied(::syscall(SYS_personality, ADDR_NO_RANDOMIZE), EPERM)) ::_exit(12);
    if (!denied(::syscall(SYS_personality, READ_IMPLIES_EXEC), EPERM)) ::_exit(13);
    if (!denied(::socket(AF_VSOCK, SOCK_STREAM, 0), EPERM)) ::_exit(14);
    if (!denied(::syscall(SYS_open_by_handle_at, 0, nullptr, 0), EPERM)) ::_exit(15);
    if (!denied(::syscall(SYS_process_vm_readv, 1, nullptr, 0, nullptr, 0, 0), EPERM)) ::_exit(16);
    if (!denied(::syscall(SYS_perf_event_open, nullptr, 0, -1, -1, 0), EPERM)) ::_exit(17);
    if (!denied(::syscall(SYS_fsopen, "tmpfs", 0), EPERM)) ::_exit(18);
    // Ordinary life still works: query and default personality, sockets, fork, threads.
    if (::syscall(SYS_personality, 0xffffffffUL) == -1) ::_exit(30);
    if (::syscall(SYS_personality, 0) == -1) ::_exit(31);
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) ::_exit(32);
    ::close(s);
    const pid_t child = ::fork();
    if (child < 0) ::_exit(33);
    if (child == 0) ::_exit(0);
    int status = 0;
    ::waitpid(child, &status, 0);
    bool ran = false;
    std::thread([&ran] { ran = true; }).join();  // pthread_create falls back from clone3
    if (!ran) ::_exit(34);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 200 + WTERMSIG(status);
}

TEST(SeccompFilterTest, DeniesEscapeSyscallsAndAllowsOrdinaryOnes) {
  absl::StatusOr<std::string> bpf = BuildSandboxSeccompBpf();
  ASSERT_THAT(bpf, IsOk());
  ASSERT_EQ(bpf->size() % sizeof(struct sock_filter), 0u);
  EXPECT_EQ(RunProbesUnderFilter(*bpf), 0) << "see the probe numbers in the test";
}

TEST(SeccompFilterTest, ListsTheRulesItInstalls) {
  std::vector<SeccompDenyRule> rules = SandboxSeccompRules();
  for (const char* name : {"mount",
                           "umount2",
                           "unshare",
                           "setns",
                           "ptrace",
                           "kexec_load",
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
                           "pivot_root",
                           "open_by_handle_at",
                           "process_vm_readv",
                           "process_vm_writev",
                           "personality",
                           "clone",
                           "clone3"}) {
    EXPECT_THAT(rules, Contains(Field(&SeccompDenyRule::syscall, std::string(name)))) << name;
  }
}

TEST(SeccompFilterTest, GivesEachLaunchItsOwnRewoundFd) {
  absl::StatusOr<std::string> bpf = BuildSandboxSeccompBpf();
  ASSERT_THAT(bpf, IsOk());
  absl::StatusOr<int> fd = SeccompBpfToFd(*bpf);
  ASSERT_THAT(fd, IsOk());
  std::string back(bpf->size(), '\0');
  EXPECT_EQ(::read(*fd, back.data(), back.size()), static_cast<ssize_t>(back.size()));
  EXPECT_EQ(back, *bpf);
  ::close(*fd);
}

}  // namespace
}  // namespace tidepool::provisioner
