#pragma once

// The seccomp filter every workspace sandbox runs under, built with libseccomp and handed to
// bubblewrap (`bwrap --seccomp FD`) as classic BPF.

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tidepool::provisioner {

// One rule of the sandbox filter, for documentation and tests.
struct SeccompDenyRule {
  std::string syscall;
  std::string condition;  // "" = always; otherwise what the arguments must match
  int error = 0;          // the errno returned (EPERM unless noted)
};

// The rules, in the order they are added. Default action: allow. Foreign architectures
// (the i386 int 0x80 entry, x32) are killed by libseccomp's bad-arch action.
std::vector<SeccompDenyRule> SandboxSeccompRules();

// Builds the filter and returns the BPF program bytes (a whole number of sock_filter
// records). INTERNAL if libseccomp refuses a rule. Thread-safe.
absl::StatusOr<std::string> BuildSandboxSeccompBpf();

// Writes `bpf` into a fresh memfd (close-on-exec, offset 0) and returns the fd, which the
// caller owns. bwrap reads the program from the fd's current offset to EOF, so each launch gets
// its own fd. UNAVAILABLE if the memfd cannot be made.
absl::StatusOr<int> SeccompBpfToFd(const std::string& bpf);

}  // namespace tidepool::provisioner
