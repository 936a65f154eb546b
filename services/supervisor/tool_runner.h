#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tidepool/supervisor/v1/supervisor_service.pb.h"

namespace tidepool::supervisor {

struct ToolRunnerOptions {
  std::string profile;
  std::vector<std::string> argv;            // the tool; empty runs nothing
  std::map<std::string, std::string> env;   // the tool's whole environment
  std::string log_path;                     // stdout and stderr are appended here
  // KEY=VALUE lines merged into the environment at every start (the owner's keys, stamped by
  // the provisioner into a read-only directory); absent is fine.
  std::string env_file;
  absl::Duration first_backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Seconds(30);
  absl::Duration stop_grace = absl::Seconds(5);
  // HTTP health check inside the sandbox: GET http://127.0.0.1:<health_port><health_path>;
  // 0 means "the process runs" is healthy.
  int health_port = 0;
  std::string health_path = "/";
  absl::Duration health_interval = absl::Seconds(2);
  // Called before every start; when it fails the tool is not started and is held in
  // TOOL_HEALTH_BLOCKED_CONFIG (with the status message) until Restart(). The config guard's
  // check: the tool never starts on a configuration that does not match its stamp.
  std::function<absl::Status()> before_start;
};

// Runs the profile's tool: starts it, restarts it with exponential backoff when it exits, and
// stops it (SIGTERM to its process group, SIGKILL after the grace period). Thread-safe.
class ToolRunner {
 public:
  explicit ToolRunner(ToolRunnerOptions options);
  ~ToolRunner();  // Stop()s

  void Start();
  void Stop();
  // Stops the running tool (SIGTERM, SIGKILL after the grace period) and starts it again at
  // once, re-reading env_file (also after Pause). No-op while stopping.
  void Restart();
  // Stops the tool and keeps it stopped (health STOPPED) until Restart().
  void Pause();
  // As Pause, but reported as TOOL_HEALTH_BLOCKED_CONFIG with `reason` until Restart().
  void Block(const std::string& reason);
  v1::ToolStatus Status() const;

 private:
  void Loop();
  void HealthLoop();
  // SIGTERM to the run `pid`'s process group, SIGKILL after the grace period, until it ended.
  void TerminateRun(pid_t pid);

  const ToolRunnerOptions options_;
  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  pid_t pid_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time start_time_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int restarts_ ABSL_GUARDED_BY(mu_) = -1;
  std::optional<int> last_exit_code_ ABSL_GUARDED_BY(mu_);
  absl::Time last_exit_time_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time next_start_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool restart_now_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  // Why the tool is held stopped by its configuration; empty when it is not.
  std::string blocked_reason_ ABSL_GUARDED_BY(mu_);
  // The last health check's verdict for the current run, and whether it ever passed.
  bool healthy_ ABSL_GUARDED_BY(mu_) = false;
  bool ever_healthy_ ABSL_GUARDED_BY(mu_) = false;
  std::string health_message_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
  std::thread health_thread_;
};

}  // namespace tidepool::supervisor
