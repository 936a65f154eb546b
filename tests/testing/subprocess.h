#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tidepool::testing {

// A child process started from a test, with stdout and stderr captured to files. The
// destructor SIGKILLs and reaps the child if it is still running, so a failing test never
// leaves a server behind. Not thread-safe.
class Subprocess {
 public:
  // Starts argv[0] (a path) with `argv`; output goes to files under `log_dir`.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(const std::vector<std::string>& argv,
                                                           const std::string& log_dir);
  ~Subprocess();

  pid_t pid() const { return pid_; }
  bool Signal(int signal_number);

  // Waits up to `timeout` for the child to end. Returns its exit code, or 128 + the signal
  // that killed it; DEADLINE_EXCEEDED if it is still running.
  absl::StatusOr<int> Wait(absl::Duration timeout);

  std::string Stdout() const;
  std::string Stderr() const;

 private:
  Subprocess() = default;
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::string stdout_path_;
  std::string stderr_path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs a command to completion (killing it after `timeout`).
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const std::string& log_dir,
                                         absl::Duration timeout = absl::Seconds(30));

// Reads a whole file ("" if it cannot be read).
std::string ReadFileOrEmpty(const std::string& path);

}  // namespace tidepool::testing
