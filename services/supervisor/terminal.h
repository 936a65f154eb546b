#pragma once

// Terminals for the workspace supervisor: shells running on pseudo-terminals, kept alive
// across WebSocket reconnects for a retention period, with a bounded scrollback.

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/clock.h"

namespace tidepool::supervisor {

struct TerminalOptions {
  // The shell's argv. Empty means {"/bin/bash", "-l"}, or {"/bin/sh", "-l"} when /bin/bash is
  // not executable.
  std::vector<std::string> shell;
  // The shell's whole environment. TERM is always set to xterm-256color, and PATH to a
  // default when absent.
  std::map<std::string, std::string> env;
  // The shell's working directory; empty keeps the supervisor's.
  std::string working_dir;
  // Output bytes kept per session and replayed on (re-)attach.
  size_t scrollback_bytes = 256 * 1024;
  // How long a session with no attachment keeps its shell before the reaper kills it.
  absl::Duration retention = absl::Minutes(5);
  // Sessions whose shell still runs, at most.
  int max_sessions = 16;
  // How often the background reaper runs; zero disables it (call ReapIdle() yourself).
  absl::Duration reap_interval = absl::Seconds(5);
  // Between SIGHUP and SIGKILL when a session is killed.
  absl::Duration kill_grace = absl::Seconds(2);
};

// The retained tail of a session's output. `end_offset` is the stream offset just past the
// last byte, so the bytes cover [end_offset - bytes.size(), end_offset).
struct TerminalScrollback {
  std::string bytes;
  uint64_t end_offset = 0;
};

// Output bytes, with the stream offset of data[0]. Called on the session's reader thread, in
// order; must not block for long and must not call back into the subscription.
using TerminalOutputCallback = std::function<void(absl::string_view data, uint64_t offset)>;
// The shell's exit code (128 + signal if killed by a signal). Called once, on the reader
// thread, after the last output callback.
using TerminalExitCallback = std::function<void(int exit_code)>;

// A registered pair of callbacks. Cancel() (or destruction) unregisters them; when it returns
// no callback is running or will run. Must not be cancelled from inside its own callback.
class TerminalSubscription {
 public:
  struct State;
  explicit TerminalSubscription(std::shared_ptr<State> state);
  ~TerminalSubscription();
  TerminalSubscription(const TerminalSubscription&) = delete;
  TerminalSubscription& operator=(const TerminalSubscription&) = delete;

  void Cancel();

 private:
  std::shared_ptr<State> state_;
};

struct TerminalSubscribeResult {
  // Everything retained so far; the first output callback continues at its end_offset.
  TerminalScrollback scrollback;
  // Set if the shell had already exited; the exit callback is then never called.
  std::optional<int> exit_code;
  std::unique_ptr<TerminalSubscription> subscription;
};

// One shell on a PTY. Created by TerminalManager::Attach. A reader thread copies the PTY's
// output into the scrollback ring and to subscribers and reaps the shell. Thread-safe.
// Destruction kills the shell (SIGHUP to its process group, SIGKILL after the grace period).
class TerminalSession {
 public:
  ~TerminalSession();
  TerminalSession(const TerminalSession&) = delete;
  TerminalSession& operator=(const TerminalSession&) = delete;

  const std::string& id() const { return id_; }
  // The shell's pid (also its process group and session id).
  pid_t pid() const { return pid_; }

  // Writes input to the PTY, blocking while its input queue is full. Returns
  // FAILED_PRECONDITION once the shell has exited, INTERNAL on an I/O error.
  absl::Status Write(absl::string_view data);
  // Writes as much input as the PTY takes now without blocking and returns that count.
  // FAILED_PRECONDITION once the shell has exited, INTERNAL on an I/O error.
  absl::StatusOr<size_t> TryWrite(absl::string_view data);
  // Sets the window size (TIOCSWINSZ; the shell gets SIGWINCH). INVALID_ARGUMENT outside
  // 1..1000, FAILED_PRECONDITION once the shell has exited.
  absl::Status Resize(int cols, int rows);

  // Registers callbacks and returns the current scrollback atomically with the registration:
  // no byte is missed or repeated between the scrollback and the first output callback.
  TerminalSubscribeResult Subscribe(TerminalOutputCallback on_output, TerminalExitCallback on_exit);
  // The current scrollback.
  TerminalScrollback Snapshot() const;

  // Ends one attachment made by TerminalManager::Attach (call once per Attach). With no
  // attachment left the retention period starts.
  void Detach();

  // The exit code, once the shell has exited and been reaped.
  std::optional<int> exit_code() const;
  // Waits up to `timeout` for the shell to exit; returns its exit code if it did.
  std::optional<int> WaitForExit(absl::Duration timeout) const;

 private:
  friend class TerminalManager;
  struct Subscriber;

  TerminalSession(std::string id, size_t scrollback_bytes, absl::Duration kill_grace, Clock& clock);
  // Starts the shell; called once by the manager.
  absl::Status Start(const std::vector<std::string>& argv,
                     const std::map<std::string, std::string>& env, const std::string& working_dir,
                     int cols, int rows);
  void ReaderLoop();
  void Deliver(absl::string_view data);
  void Finish(int exit_code);
  // SIGHUP to the process group, SIGKILL after the grace period; waits for the exit.
  void Kill();
  void Attached();
  // Attachments == 0 since when; InfiniteFuture while attached.
  absl::Time DetachedSince() const;

  const std::string id_;
  const size_t capacity_;
  const absl::Duration kill_grace_;
  Clock& clock_;
  pid_t pid_ = 0;
  int pidfd_ = -1;
  std::thread reader_;

  mutable absl::Mutex mu_;
  int master_fd_ ABSL_GUARDED_BY(mu_) = -1;
  std::string ring_ ABSL_GUARDED_BY(mu_);      // capacity_ bytes once full
  size_t ring_head_ ABSL_GUARDED_BY(mu_) = 0;  // next write position once full
  uint64_t end_offset_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::shared_ptr<TerminalSubscription::State>> subscribers_ ABSL_GUARDED_BY(mu_);
  bool reaped_ ABSL_GUARDED_BY(mu_) = false;  // waitpid succeeded: pid_ may be reused
  std::optional<int> exit_code_ ABSL_GUARDED_BY(mu_);
  int attachments_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time detached_since_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
};

// Owns the terminal sessions of one workspace, keyed by client-chosen session id, and reaps
// sessions left detached past the retention period. Thread-safe. Destruction kills every
// shell; sessions still referenced elsewhere stay valid objects with an exited shell.
class TerminalManager {
 public:
  // Uses the wall clock.
  explicit TerminalManager(TerminalOptions options);
  // Not owned: `clock` must outlive this object.
  TerminalManager(TerminalOptions options, Clock& clock);
  ~TerminalManager();
  TerminalManager(const TerminalManager&) = delete;
  TerminalManager& operator=(const TerminalManager&) = delete;

  // Re-attaches to the running session `session_id`, or starts a new shell of size cols x rows
  // (replacing an exited session of that id). Each successful call must be paired with one
  // TerminalSession::Detach(). Returns INVALID_ARGUMENT for an id that is not 1-64 characters
  // of [A-Za-z0-9_-] or a size outside 1..1000, RESOURCE_EXHAUSTED when max_sessions shells
  // run, INTERNAL if the PTY or the process cannot be created.
  absl::StatusOr<std::shared_ptr<TerminalSession>> Attach(absl::string_view session_id, int cols,
                                                          int rows);

  // One reaper pass: kills sessions detached for longer than the retention period and drops
  // exited, detached sessions. Returns the number of shells killed. Blocks up to kill_grace.
  int ReapIdle();

  // Sessions held, running or exited.
  int SessionCount() const;

 private:
  void ReaperLoop();
  std::vector<std::string> ShellArgv() const;

  const TerminalOptions options_;
  std::unique_ptr<RealClock> own_clock_;
  Clock& clock_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<TerminalSession>> sessions_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread reaper_;
};

// True for 1-64 characters of [A-Za-z0-9_-].
bool IsValidTerminalSessionId(absl::string_view session_id);

}  // namespace tidepool::supervisor
