#include "services/supervisor/terminal.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tidepool::supervisor {
namespace {

constexpr int kMaxDimension = 1000;
constexpr char kDefaultPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

absl::Status ErrnoError(absl::string_view what, int err) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(err)));
}

bool ValidDimension(int n) { return n >= 1 && n <= kMaxDimension; }

int ExitCodeFromStatus(int status) {
  if (WIFEXITED(status)) {
    return WEXITSTATUS(status);
  }
  if (WIFSIGNALED(status)) {
    return 128 + WTERMSIG(status);
  }
  return 255;
}

// Async-signal-safe: used between fork and exec.
void WriteAll(int fd, const char* text) {
  size_t left = std::strlen(text);
  while (left > 0) {
    ssize_t n = ::write(fd, text, left);
    if (n <= 0) {
      return;
    }
    text += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace

bool IsValidTerminalSessionId(absl::string_view session_id) {
  if (session_id.empty() || session_id.size() > 64) {
    return false;
  }
  return std::all_of(session_id.begin(), session_id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  });
}

// ---- TerminalSubscription ----

struct TerminalSubscription::State {
  TerminalOutputCallback on_output;
  TerminalExitCallback on_exit;
  // Held while a callback runs, so Cancel() waits for a running callback.
  absl::Mutex mu;
  bool active ABSL_GUARDED_BY(mu) = true;
  // Set with `active` cleared; read without `mu` to prune the subscriber list.
  std::atomic<bool> cancelled{false};
};

TerminalSubscription::TerminalSubscription(std::shared_ptr<State> state)
    : state_(std::move(state)) {}

TerminalSubscription::~TerminalSubscription() { Cancel(); }

void TerminalSubscription::Cancel() {
  if (state_ == nullptr) {
    return;
  }
  absl::MutexLock lock(&state_->mu);
  state_->active = false;
  state_->cancelled = true;
}

// ---- TerminalSession ----

TerminalSession::TerminalSession(std::string id, size_t scrollback_bytes, absl::Duration kill_grace,
                                 Clock& clock)
    : id_(std::move(id)),
      capacity_(std::max<size_t>(scrollback_bytes, 1)),
      kill_grace_(kill_grace),
      clock_(clock) {}

TerminalSession::~TerminalSession() {
  Kill();
  if (reader_.joinable()) {
    reader_.join();
  }
  if (pidfd_ >= 0) {
    ::close(pidfd_);
  }
  absl::MutexLock lock(&mu_);
  if (master_fd_ >= 0) {
    ::close(master_fd_);
    master_fd_ = -1;
  }
}

absl::Status TerminalSession::Start(const std::vector<std::string>& argv,
                                    const std::map<std::string, std::string>& env,
                                    const std::string& working_dir, int cols, int rows) {
  if (argv.empty()) {
    return absl::InvalidArgumentError("empty shell command");
  }
  int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) {
    return ErrnoError("posix_openpt", errno);
  }
  char slave_name[128];
  if (::grantpt(master) != 0 || ::unlockpt(master) != 0 ||
      ::ptsname_r(master, slave_name, sizeof(slave_name)) != 0) {
    const int err = errno;
    ::close(master);
    return ErrnoError("preparing the pty", err);
  }
  int slave = ::open(slave_name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) {
    const int err = errno;
    ::close(master);
    return ErrnoError("opening the pty slave", err);
  }
  struct winsize size = {};
  size.ws_col = static_cast<unsigned short>(cols);
  size.ws_row = static_cast<unsigned short>(rows);
  ::ioctl(slave, TIOCSWINSZ, &size);

  // Everything the child needs is built before fork: only async-signal-safe calls follow.
  std::vector<std::string> env_strings;
  bool has_path = false;
  for (const auto& [key, value] : env) {
    if (key == "TERM") {
      continue;
    }
    has_path = has_path || key == "PATH";
    env_strings.push_back(absl::StrCat(key, "=", value));
  }
  env_strings.push_back("TERM=xterm-256color");
  if (!has_path) {
    env_strings.push_back(absl::StrCat("PATH=", kDefaultPath));
  }
  std::vector<char*> child_argv;
  for (const std::string& arg : argv) {
    child_argv.push_back(const_cast<char*>(arg.c_str()));
  }
  child_argv.push_back(nullptr);
  std::vector<char*> child_env;
  for (std::string& entry : env_strings) {
    child_env.push_back(entry.data());
  }
  child_env.push_back(nullptr);
  const std::string chdir_error = absl::StrCat("tidepool: cannot enter ", working_dir, "\r\n");
  const std::string exec_error = absl::StrCat("tidepool: cannot run ", argv[0], "\r\n");
  struct rlimit files = {};
  int max_fd = 1024;
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY) {
    max_fd = static_cast<int>(std::min<rlim_t>(files.rlim_cur, 65536));
  }

  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(slave);
    ::close(master);
    return ErrnoError("fork", err);
  }
  if (pid == 0) {
    // Child: a new session with the PTY as its controlling terminal.
    ::setsid();
    ::ioctl(slave, TIOCSCTTY, 0);
    ::dup2(slave, 0);
    ::dup2(slave, 1);
    ::dup2(slave, 2);
    if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
      for (int fd = 3; fd < max_fd; ++fd) {
        ::close(fd);
      }
    }
    struct sigaction dfl = {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) {
      ::sigaction(sig, &dfl, nullptr);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (!working_dir.empty() && ::chdir(working_dir.c_str()) != 0) {
      WriteAll(2, chdir_error.c_str());
      ::_exit(127);
    }
    ::execve(child_argv[0], child_argv.data(), child_env.data());
    WriteAll(2, exec_error.c_str());
    ::_exit(127);
  }
  ::close(slave);
  pid_ = pid;
  pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));  // -1: fall back to polling
  ::fcntl(master, F_SETFL, ::fcntl(master, F_GETFL) | O_NONBLOCK);
  {
    absl::MutexLock lock(&mu_);
    master_fd_ = master;
  }
  reader_ = std::thread([this] { ReaderLoop(); });
  return absl::OkStatus();
}

void TerminalSession::ReaderLoop() {
  int master;
  {
    absl::MutexLock lock(&mu_);
    master = master_fd_;
  }
  char buffer[16 * 1024];
  bool pty_open = true;
  std::optional<int> status;
  while (!status.has_value()) {
    struct pollfd fds[2] = {};
    int count = 0;
    if (pty_open) {
      fds[count++] = {master, POLLIN, 0};
    }
    if (pidfd_ >= 0) {
      fds[count++] = {pidfd_, POLLIN, 0};
    }
    // Without a pidfd, or with the PTY already at EOF, poll the child's state now and then.
    const int timeout_ms = (pidfd_ >= 0 && pty_open) ? -1 : 100;
    int ready = ::poll(fds, static_cast<nfds_t>(count), timeout_ms);
    if (ready < 0 && errno != EINTR) {
      break;
    }
    if (pty_open) {
      for (;;) {
        ssize_t n = ::read(master, buffer, sizeof(buffer));
        if (n > 0) {
          Deliver(absl::string_view(buffer, static_cast<size_t>(n)));
          continue;
        }
        if (n < 0 && errno == EINTR) {
          continue;
        }
        if (n == 0 || (n < 0 && errno != EAGAIN)) {
          pty_open = false;  // EIO: every slave descriptor is closed
        }
        break;
      }
    }
    int wstatus = 0;
    pid_t done = ::waitpid(pid_, &wstatus, WNOHANG);
    if (done == pid_) {
      status = wstatus;
    } else if (done < 0 && errno != EINTR) {
      status = 255 << 8;  // someone else reaped it
    }
  }
  if (!status.has_value()) {
    int wstatus = 0;
    while (::waitpid(pid_, &wstatus, 0) < 0 && errno == EINTR) {
    }
    status = wstatus;
  }
  {
    absl::MutexLock lock(&mu_);
    reaped_ = true;
  }
  // Drain what the shell wrote before it exited (bounded: a leftover background process may
  // keep writing).
  for (int i = 0; i < 64; ++i) {
    ssize_t n = ::read(master, buffer, sizeof(buffer));
    if (n > 0) {
      Deliver(absl::string_view(buffer, static_cast<size_t>(n)));
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    break;
  }
  Finish(ExitCodeFromStatus(*status));
}

void TerminalSession::Deliver(absl::string_view data) {
  std::vector<std::shared_ptr<TerminalSubscription::State>> subscribers;
  uint64_t offset = 0;
  {
    absl::MutexLock lock(&mu_);
    offset = end_offset_;
    end_offset_ += data.size();
    absl::string_view rest = data;
    if (rest.size() >= capacity_) {
      ring_.assign(rest.data() + rest.size() - capacity_, capacity_);
      ring_head_ = 0;
    } else {
      if (ring_.size() < capacity_) {
        const size_t room = capacity_ - ring_.size();
        const size_t take = std::min(room, rest.size());
        ring_.append(rest.data(), take);
        rest.remove_prefix(take);
        ring_head_ = 0;
      }
      // Full: overwrite from ring_head_, wrapping.
      while (!rest.empty()) {
        const size_t take = std::min(capacity_ - ring_head_, rest.size());
        ring_.replace(ring_head_, take, rest.data(), take);
        rest.remove_prefix(take);
        ring_head_ = (ring_head_ + take) % capacity_;
      }
    }
    subscribers = subscribers_;
  }
  for (const auto& subscriber : subscribers) {
    absl::MutexLock lock(&subscriber->mu);
    if (subscriber->active && subscriber->on_output) {
      subscriber->on_output(data, offset);
    }
  }
}

void TerminalSession::Finish(int exit_code) {
  std::vector<std::shared_ptr<TerminalSubscription::State>> subscribers;
  {
    absl::MutexLock lock(&mu_);
    if (master_fd_ >= 0) {
      ::close(master_fd_);
      master_fd_ = -1;
    }
    exit_code_ = exit_code;
    subscribers.swap(subscribers_);
  }
  for (const auto& subscriber : subscribers) {
    absl::MutexLock lock(&subscriber->mu);
    if (subscriber->active && subscriber->on_exit) {
      subscriber->on_exit(exit_code);
    }
    subscriber->active = false;
  }
}

void TerminalSession::Kill() {
  if (pid_ <= 0) {
    return;
  }
  for (int sig : {SIGHUP, SIGKILL}) {
    {
      absl::MutexLock lock(&mu_);
      if (reaped_) {
        break;
      }
      // The group may not exist yet if the child has not reached setsid().
      if (::kill(-pid_, sig) != 0) {
        ::kill(pid_, sig);
      }
    }
    if (WaitForExit(sig == SIGHUP ? kill_grace_ : absl::Seconds(30)).has_value()) {
      return;
    }
  }
}

absl::StatusOr<size_t> TerminalSession::TryWrite(absl::string_view data) {
  absl::MutexLock lock(&mu_);
  if (master_fd_ < 0 || exit_code_.has_value()) {
    return absl::FailedPreconditionError("the shell has exited");
  }
  size_t written = 0;
  while (written < data.size()) {
    ssize_t n = ::write(master_fd_, data.data() + written, data.size() - written);
    if (n > 0) {
      written += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && errno == EAGAIN) {
      break;
    }
    if (n < 0 && errno == EIO) {
      return absl::FailedPreconditionError("the shell has exited");
    }
    return ErrnoError("writing to the pty", errno);
  }
  return written;
}

absl::Status TerminalSession::Write(absl::string_view data) {
  while (!data.empty()) {
    absl::StatusOr<size_t> written = TryWrite(data);
    if (!written.ok()) {
      return written.status();
    }
    data.remove_prefix(*written);
    if (data.empty()) {
      break;
    }
    int fd;
    {
      absl::MutexLock lock(&mu_);
      fd = master_fd_;
    }
    // Wait for room; re-check the shell's state at least every 100 ms (the fd may be closed
    // by the reader thread meanwhile, which only shortens the wait).
    struct pollfd pfd = {fd, POLLOUT, 0};
    ::poll(&pfd, 1, 100);
  }
  return absl::OkStatus();
}

absl::Status TerminalSession::Resize(int cols, int rows) {
  if (!ValidDimension(cols) || !ValidDimension(rows)) {
    return absl::InvalidArgumentError("cols and rows must be within 1..1000");
  }
  absl::MutexLock lock(&mu_);
  if (master_fd_ < 0 || exit_code_.has_value()) {
    return absl::FailedPreconditionError("the shell has exited");
  }
  struct winsize size = {};
  size.ws_col = static_cast<unsigned short>(cols);
  size.ws_row = static_cast<unsigned short>(rows);
  if (::ioctl(master_fd_, TIOCSWINSZ, &size) != 0) {
    return ErrnoError("TIOCSWINSZ", errno);
  }
  return absl::OkStatus();
}

TerminalScrollback TerminalSession::Snapshot() const {
  absl::MutexLock lock(&mu_);
  TerminalScrollback out;
  out.end_offset = end_offset_;
  if (ring_.size() < capacity_ || ring_head_ == 0) {
    out.bytes = ring_;
  } else {
    out.bytes.reserve(ring_.size());
    out.bytes.append(ring_, ring_head_, std::string::npos);
    out.bytes.append(ring_, 0, ring_head_);
  }
  return out;
}

TerminalSubscribeResult TerminalSession::Subscribe(TerminalOutputCallback on_output,
                                                   TerminalExitCallback on_exit) {
  auto state = std::make_shared<TerminalSubscription::State>();
  state->on_output = std::move(on_output);
  state->on_exit = std::move(on_exit);
  TerminalSubscribeResult result;
  // The reader thread appends to the ring and copies the subscriber list under mu_, so the
  // snapshot and the registration are atomic with respect to output.
  absl::MutexLock lock(&mu_);
  result.scrollback.end_offset = end_offset_;
  if (ring_.size() < capacity_ || ring_head_ == 0) {
    result.scrollback.bytes = ring_;
  } else {
    result.scrollback.bytes.reserve(ring_.size());
    result.scrollback.bytes.append(ring_, ring_head_, std::string::npos);
    result.scrollback.bytes.append(ring_, 0, ring_head_);
  }
  if (exit_code_.has_value()) {
    result.exit_code = exit_code_;
    {
      absl::MutexLock state_lock(&state->mu);
      state->active = false;
    }
  } else {
    subscribers_.push_back(state);
  }
  result.subscription = std::make_unique<TerminalSubscription>(std::move(state));
  return result;
}

void TerminalSession::Attached() {
  absl::MutexLock lock(&mu_);
  ++attachments_;
  detached_since_ = absl::InfiniteFuture();
}

void TerminalSession::Detach() {
  absl::MutexLock lock(&mu_);
  if (attachments_ == 0) {
    return;
  }
  if (--attachments_ == 0) {
    detached_since_ = clock_.Now();
  }
  // Drop cancelled subscribers (their callbacks may hold references to the attachment).
  subscribers_.erase(std::remove_if(subscribers_.begin(), subscribers_.end(),
                                    [](const std::shared_ptr<TerminalSubscription::State>& s) {
                                      return s->cancelled.load();
                                    }),
                     subscribers_.end());
}

absl::Time TerminalSession::DetachedSince() const {
  absl::MutexLock lock(&mu_);
  return detached_since_;
}

std::optional<int> TerminalSession::exit_code() const {
  absl::MutexLock lock(&mu_);
  return exit_code_;
}

std::optional<int> TerminalSession::WaitForExit(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto exited = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return exit_code_.has_value(); };
  mu_.AwaitWithTimeout(absl::Condition(&exited), timeout);
  return exit_code_;
}

// ---- TerminalManager ----

TerminalManager::TerminalManager(TerminalOptions options)
    : options_(std::move(options)), own_clock_(std::make_unique<RealClock>()), clock_(*own_clock_) {
  if (options_.reap_interval > absl::ZeroDuration()) {
    reaper_ = std::thread([this] { ReaperLoop(); });
  }
}

TerminalManager::TerminalManager(TerminalOptions options, Clock& clock)
    : options_(std::move(options)), clock_(clock) {
  if (options_.reap_interval > absl::ZeroDuration()) {
    reaper_ = std::thread([this] { ReaperLoop(); });
  }
}

TerminalManager::~TerminalManager() {
  std::map<std::string, std::shared_ptr<TerminalSession>> sessions;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    sessions.swap(sessions_);
  }
  if (reaper_.joinable()) {
    reaper_.join();
  }
  for (auto& [id, session] : sessions) {
    session->Kill();
  }
}

std::vector<std::string> TerminalManager::ShellArgv() const {
  if (!options_.shell.empty()) {
    return options_.shell;
  }
  if (::access("/bin/bash", X_OK) == 0) {
    return {"/bin/bash", "-l"};
  }
  return {"/bin/sh", "-l"};
}

absl::StatusOr<std::shared_ptr<TerminalSession>> TerminalManager::Attach(
    absl::string_view session_id, int cols, int rows) {
  if (!IsValidTerminalSessionId(session_id)) {
    return absl::InvalidArgumentError(
        "session_id must be 1-64 characters of letters, digits, '_' and '-'");
  }
  if (!ValidDimension(cols) || !ValidDimension(rows)) {
    return absl::InvalidArgumentError("cols and rows must be within 1..1000");
  }
  std::shared_ptr<TerminalSession> replaced;  // destroyed outside the lock
  absl::MutexLock lock(&mu_);
  if (stopping_) {
    return absl::UnavailableError("the terminal manager is shutting down");
  }
  auto it = sessions_.find(std::string(session_id));
  if (it != sessions_.end()) {
    if (!it->second->exit_code().has_value()) {
      it->second->Attached();
      (void)it->second->Resize(cols, rows);
      return it->second;
    }
    replaced = std::move(it->second);
    sessions_.erase(it);
  }
  int running = 0;
  for (const auto& [id, session] : sessions_) {
    if (!session->exit_code().has_value()) {
      ++running;
    }
  }
  if (running >= options_.max_sessions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("at most ", options_.max_sessions, " terminal sessions may run at once"));
  }
  std::shared_ptr<TerminalSession> session(new TerminalSession(
      std::string(session_id), options_.scrollback_bytes, options_.kill_grace, clock_));
  absl::Status started =
      session->Start(ShellArgv(), options_.env, options_.working_dir, cols, rows);
  if (!started.ok()) {
    return started;
  }
  session->Attached();
  sessions_[std::string(session_id)] = session;
  return session;
}

int TerminalManager::ReapIdle() {
  std::vector<std::shared_ptr<TerminalSession>> expired;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_.Now();
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      const absl::Time detached_since = it->second->DetachedSince();
      const bool detached = detached_since != absl::InfiniteFuture();
      if (detached &&
          (it->second->exit_code().has_value() || now - detached_since > options_.retention)) {
        expired.push_back(std::move(it->second));
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
  }
  int killed = 0;
  for (const auto& session : expired) {
    if (!session->exit_code().has_value()) {
      session->Kill();
      ++killed;
    }
  }
  return killed;
}

int TerminalManager::SessionCount() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(sessions_.size());
}

void TerminalManager::ReaperLoop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), options_.reap_interval)) {
        return;
      }
    }
    ReapIdle();
  }
}

}  // namespace tidepool::supervisor
