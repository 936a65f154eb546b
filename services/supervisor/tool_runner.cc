#include "services/supervisor/tool_runner.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"

namespace tidepool::supervisor {
namespace {

using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp Stamp(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

// Forks and execs `argv` in its own process group with exactly `env`; output to `log_path`.
pid_t Spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
            const std::string& log_path) {
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> cargv;
  for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::vector<char*> cenv;
  for (const std::string& e : env_strings) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid != 0) {
    return pid;
  }
  ::setpgid(0, 0);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  const int null_fd = ::open("/dev/null", O_RDONLY);
  const int log_fd = log_path.empty()
                         ? ::open("/dev/null", O_WRONLY)
                         : ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  ::dup2(null_fd, 0);
  ::dup2(log_fd, 1);
  ::dup2(log_fd, 2);
  ::execve(cargv[0], cargv.data(), cenv.data());
  _exit(127);
}

// Reads KEY=VALUE lines (no quoting; a value ends at the newline). Malformed lines are skipped.
std::map<std::string, std::string> ReadEnvFile(const std::string& path) {
  std::map<std::string, std::string> env;
  if (path.empty()) return env;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const size_t eq = line.find('=');
    if (eq == std::string::npos || eq == 0) continue;
    env[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return env;
}

void TerminateGroup(pid_t pid, absl::Duration grace, const std::function<bool()>& gone) {
  ::kill(-pid, SIGTERM);
  const absl::Time deadline = absl::Now() + grace;
  while (absl::Now() < deadline && !gone()) absl::SleepFor(absl::Milliseconds(20));
  if (!gone()) ::kill(-pid, SIGKILL);
}

// One HTTP/1.1 GET to 127.0.0.1:port; true for a 2xx or 3xx answer within `timeout`.
bool HttpHealthy(int port, const std::string& path, absl::Duration timeout, std::string* message) {
  namespace asio = boost::asio;
  namespace http = boost::beast::http;
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect({asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)}, ec);
  if (ec) {
    *message = "health check: nothing listens on the port yet";
    return false;
  }
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(absl::ToInt64Seconds(timeout));
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  http::request<http::empty_body> request(http::verb::get, path, 11);
  request.set(http::field::host, "127.0.0.1");
  request.set(http::field::user_agent, "tidepool-supervisor");
  http::write(socket, request, ec);
  boost::beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024);
  if (!ec) http::read(socket, buffer, parser, ec);
  if (ec) {
    *message = "health check: no HTTP answer";
    return false;
  }
  const unsigned status = parser.get().result_int();
  *message = status < 400 ? "" : absl::StrCat("health check answered HTTP ", status);
  return status >= 200 && status < 400;
}

}  // namespace

ToolRunner::ToolRunner(ToolRunnerOptions options) : options_(std::move(options)) {}

ToolRunner::~ToolRunner() { Stop(); }

void ToolRunner::Start() {
  if (options_.argv.empty() || thread_.joinable()) {
    return;
  }
  thread_ = std::thread([this] { Loop(); });
  if (options_.health_port > 0) health_thread_ = std::thread([this] { HealthLoop(); });
}

void ToolRunner::HealthLoop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      // Check quickly while starting, then at the interval.
      const absl::Duration wait = ever_healthy_ ? options_.health_interval : absl::Milliseconds(200);
      mu_.AwaitWithTimeout(absl::Condition(&stop), wait);
      if (stopping_) return;
      if (pid_ == 0) continue;
    }
    std::string message;
    const bool healthy =
        HttpHealthy(options_.health_port, options_.health_path, absl::Seconds(2), &message);
    absl::MutexLock lock(&mu_);
    if (pid_ == 0) continue;
    healthy_ = healthy;
    ever_healthy_ = ever_healthy_ || healthy;
    health_message_ = message;
  }
}

void ToolRunner::Loop() {
  absl::Duration backoff = options_.first_backoff;
  for (;;) {
    pid_t pid = 0;
    {
      absl::MutexLock lock(&mu_);
      auto runnable = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !paused_;
      };
      mu_.Await(absl::Condition(&runnable));
      if (stopping_) return;
      if (options_.before_start) {
        mu_.Unlock();
        const absl::Status ready = options_.before_start();
        mu_.Lock();
        if (stopping_) return;
        if (!ready.ok()) {
          paused_ = true;  // held until Restart()
          blocked_reason_ = std::string(ready.message());
          continue;
        }
        if (paused_) continue;  // paused while checking
      }
      std::map<std::string, std::string> env = options_.env;
      for (auto& [k, v] : ReadEnvFile(options_.env_file)) env[k] = std::move(v);
      pid = Spawn(options_.argv, env, options_.log_path);
      pid_ = pid;
      healthy_ = false;
      ever_healthy_ = false;
      health_message_.clear();
      start_time_ = absl::Now();
      ++restarts_;
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    absl::MutexLock lock(&mu_);
    pid_ = 0;
    last_exit_code_ = code;
    last_exit_time_ = absl::Now();
    if (stopping_) return;
    // A tool that ran for a while, or was restarted on request, starts the backoff afresh.
    if (last_exit_time_ - start_time_ > options_.max_backoff) backoff = options_.first_backoff;
    if (restart_now_ || paused_) {
      restart_now_ = false;
      backoff = options_.first_backoff;
      continue;  // paused: waits above until Restart()
    }
    next_start_ = absl::Now() + backoff;
    const absl::Time wake = next_start_;
    auto stop_or_due = [this, wake]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || restart_now_ || paused_ || absl::Now() >= wake;
    };
    mu_.AwaitWithDeadline(absl::Condition(&stop_or_due), wake);
    if (restart_now_) {
      restart_now_ = false;
      backoff = options_.first_backoff;
    } else {
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
  }
}

void ToolRunner::Block(const std::string& reason) {
  pid_t pid = 0;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    blocked_reason_ = reason;
    paused_ = true;
    pid = pid_;
    next_start_ = absl::Now();  // ends a backoff wait at once
  }
  TerminateRun(pid);
}

void ToolRunner::Pause() {
  pid_t pid = 0;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ || paused_) return;
    paused_ = true;
    pid = pid_;
    next_start_ = absl::Now();  // ends a backoff wait at once
  }
  TerminateRun(pid);
}

void ToolRunner::TerminateRun(pid_t pid) {
  if (pid <= 0) return;
  TerminateGroup(pid, options_.stop_grace, [this, pid] {
    absl::MutexLock lock(&mu_);
    return pid_ != pid;
  });
}

void ToolRunner::Restart() {
  pid_t pid = 0;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    blocked_reason_.clear();
    if (paused_) {
      paused_ = false;  // the loop is waiting to start it
      return;
    }
    restart_now_ = true;
    pid = pid_;
    next_start_ = absl::Now();  // ends a backoff wait at once
  }
  TerminateRun(pid);
}

void ToolRunner::Stop() {
  pid_t pid = 0;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    pid = pid_;
  }
  if (pid > 0) {
    TerminateGroup(pid, options_.stop_grace, [this] {
      absl::MutexLock lock(&mu_);
      return pid_ == 0;
    });
  }
  if (thread_.joinable()) thread_.join();
  if (health_thread_.joinable()) health_thread_.join();
}

v1::ToolStatus ToolRunner::Status() const {
  absl::MutexLock lock(&mu_);
  v1::ToolStatus status;
  status.set_profile(options_.profile);
  if (options_.argv.empty()) {
    status.set_health(v1::TOOL_HEALTH_HEALTHY);
    status.set_message("this profile runs no tool");
    return status;
  }
  if (!stopping_ && paused_ && pid_ == 0 && !blocked_reason_.empty()) {
    status.set_health(v1::TOOL_HEALTH_BLOCKED_CONFIG);
    status.set_message(blocked_reason_);
  } else if (stopping_ || (paused_ && pid_ == 0)) {
    status.set_health(v1::TOOL_HEALTH_STOPPED);
  } else if (pid_ > 0) {
    status.set_health(options_.health_port == 0 || healthy_ ? v1::TOOL_HEALTH_HEALTHY
                      : ever_healthy_                        ? v1::TOOL_HEALTH_UNHEALTHY
                                                             : v1::TOOL_HEALTH_STARTING);
    status.set_message(health_message_);
    status.set_pid(pid_);
    *status.mutable_start_time() = Stamp(start_time_);
  } else if (restarts_ < 0 || next_start_ == absl::InfinitePast()) {
    status.set_health(v1::TOOL_HEALTH_STARTING);  // the first start is under way
  } else {
    status.set_health(v1::TOOL_HEALTH_RESTARTING);
    *status.mutable_next_start_time() = Stamp(next_start_);
  }
  status.set_restart_count(std::max(0, restarts_));
  if (last_exit_code_.has_value()) {
    status.set_last_exit_code(*last_exit_code_);
    *status.mutable_last_exit_time() = Stamp(last_exit_time_);
  }
  return status;
}

}  // namespace tidepool::supervisor
