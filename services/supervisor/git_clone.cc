#include "services/supervisor/git_clone.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "lib/crypto/crypto.h"
#include "lib/text.h"
#include "services/supervisor/safe_path.h"

namespace tidepool::supervisor {
namespace {

constexpr size_t kMaxUrlBytes = 2048;

bool Clean(absl::string_view text) {
  for (unsigned char c : text) {
    if (c <= 0x20 || c == 0x7f) return false;
  }
  return true;
}

// https://host/owner/repo(.git) without credentials, or "" if not that shape.
bool IsHttpsUrl(absl::string_view url) {
  absl::string_view rest = url;
  if (!absl::ConsumePrefix(&rest, "https://")) return false;
  const absl::string_view authority = rest.substr(0, rest.find('/'));
  return !authority.empty() && authority.find('@') == absl::string_view::npos &&
         rest.size() > authority.size() + 1;
}

std::string RepoName(absl::string_view url) {
  absl::string_view name = url;
  while (absl::ConsumeSuffix(&name, "/")) {
  }
  name = name.substr(name.rfind('/') + 1);
  absl::ConsumeSuffix(&name, ".git");
  return std::string(name);
}

v1::GitClonePhase PhaseOf(absl::string_view line) {
  if (absl::StartsWith(line, "Counting objects") || absl::StartsWith(line, "remote: Counting"))
    return v1::GIT_CLONE_PHASE_COUNTING_OBJECTS;
  if (absl::StartsWith(line, "remote: Compressing") || absl::StartsWith(line, "Compressing"))
    return v1::GIT_CLONE_PHASE_COMPRESSING_OBJECTS;
  if (absl::StartsWith(line, "Receiving objects")) return v1::GIT_CLONE_PHASE_RECEIVING_OBJECTS;
  if (absl::StartsWith(line, "Resolving deltas")) return v1::GIT_CLONE_PHASE_RESOLVING_DELTAS;
  if (absl::StartsWith(line, "Updating files") || absl::StartsWith(line, "Checking out"))
    return v1::GIT_CLONE_PHASE_CHECKING_OUT;
  return v1::GIT_CLONE_PHASE_CONNECTING;
}

int PercentOf(absl::string_view line) {
  const size_t pct = line.find('%');
  if (pct == absl::string_view::npos) return 0;
  size_t start = pct;
  while (start > 0 && absl::ascii_isdigit(static_cast<unsigned char>(line[start - 1]))) --start;
  int value = 0;
  return absl::SimpleAtoi(line.substr(start, pct - start), &value) ? std::min(value, 100) : 0;
}

std::string Printable(absl::string_view line) {
  std::string out;
  for (unsigned char c : line.substr(0, 256)) out.push_back(c < 0x20 || c == 0x7f ? ' ' : c);
  return out;
}

}  // namespace

absl::Status GitClone(FileService& files, const v1::GitCloneRequest& request,
                      const std::function<bool(const v1::GitCloneResponse&)>& progress) {
  const std::string& url = request.repository_url();
  if (url.empty() || url.size() > kMaxUrlBytes || !Clean(url)) {
    return absl::InvalidArgumentError("repository_url is required, without spaces");
  }
  if (!request.ref().empty() &&
      (!Clean(request.ref()) || request.ref().front() == '-' || request.ref().size() > 255)) {
    return absl::InvalidArgumentError("ref is not a valid branch or tag name");
  }
  if (request.depth() < 0) return absl::InvalidArgumentError("depth must not be negative");
  absl::StatusOr<const SafeRoot*> root = files.root();
  if (!root.ok()) return root.status();
  const std::string root_path = (*root)->root_path();
  std::string source;
  if (absl::StartsWith(url, "https://")) {
    if (!IsHttpsUrl(url)) {
      return absl::InvalidArgumentError(
          "repository_url must be https://host/owner/repo without credentials");
    }
    source = url;
  } else if (absl::StrContains(url, "://") || absl::StrContains(url, "@") ||
             absl::StartsWith(url, "-")) {
    return absl::InvalidArgumentError(
        "repository_url must be https:// or the path of a repository in your files");
  } else {
    absl::StatusOr<std::string> local = NormalizePath(url);
    if (!local.ok()) return local.status();
    absl::StatusOr<v1::FileInfo> info = files.Describe(*local);
    if (!info.ok()) return info.status();
    if (info->type() != v1::FILE_TYPE_DIRECTORY) {
      return absl::InvalidArgumentError("repository_url is not a directory in your files");
    }
    source = absl::StrCat(root_path, "/", *local);
  }
  absl::StatusOr<std::string> destination =
      NormalizePath(request.destination_path().empty() ? RepoName(url) : request.destination_path());
  if (!destination.ok()) return destination.status();
  if (destination->empty() || absl::StartsWith(*destination, ".tidepool")) {
    return absl::InvalidArgumentError("destination_path is not a usable folder name");
  }
  if (absl::StatusOr<v1::FileInfo> existing = files.Describe(*destination); existing.ok()) {
    std::error_code ec;
    const std::string abs = absl::StrCat(root_path, "/", *destination);
    if (existing->type() != v1::FILE_TYPE_DIRECTORY ||
        !std::filesystem::is_empty(abs, ec)) {
      return absl::AlreadyExistsError("the destination exists and is not empty");
    }
    std::filesystem::remove(abs, ec);
  }
  // Stage inside the volume so that the final move is a rename.
  absl::StatusOr<std::string> random = crypto::RandomBytes(8);
  if (!random.ok()) return random.status();
  const std::string staging_rel = absl::StrCat(".tidepool/tmp/clone-", Base32Lower(*random));
  if (absl::Status made = files.MakeDirs(".tidepool/tmp"); !made.ok()) return made;
  const std::string staging = absl::StrCat(root_path, "/", staging_rel);
  auto cleanup = [&] {
    std::error_code ec;
    std::filesystem::remove_all(staging, ec);
    files.InvalidateUsage();
  };

  std::vector<std::string> argv = {"/usr/bin/git", "-c", "core.hooksPath=/dev/null",
                                   "-c", "protocol.file.allow=always", "clone", "--progress",
                                   "--no-local"};
  if (request.depth() > 0) {
    argv.push_back("--depth");
    argv.push_back(absl::StrCat(request.depth()));
  }
  if (!request.ref().empty()) {
    argv.push_back("--branch");
    argv.push_back(request.ref());
  }
  argv.push_back("--");
  argv.push_back(source);
  argv.push_back(staging);
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return absl::InternalError("cannot create a pipe");
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const char* home = std::getenv("HOME");
  const std::string home_env = absl::StrCat("HOME=", home == nullptr ? "/" : home);
  std::vector<std::string> env = {home_env, "PATH=/usr/bin:/bin", "GIT_TERMINAL_PROMPT=0",
                                  "GIT_CONFIG_NOSYSTEM=1", "LC_ALL=C"};
  if (const char* proxy = std::getenv("HTTPS_PROXY")) env.push_back(absl::StrCat("HTTPS_PROXY=", proxy));
  std::vector<char*> cenv;
  for (std::string& e : env) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    const int null_fd = ::open("/dev/null", O_RDWR);
    ::dup2(null_fd, 0);
    ::dup2(null_fd, 1);
    ::dup2(err_pipe[1], 2);
    ::execve(cargv[0], cargv.data(), cenv.data());
    _exit(127);
  }
  ::close(err_pipe[1]);
  if (pid < 0) {
    ::close(err_pipe[0]);
    return absl::InternalError("cannot start git");
  }
  // git separates progress updates with '\r' and lines with '\n'.
  std::string pending;
  std::string last_line;
  bool stopped = false;
  char chunk[4096];
  int64_t received = 0;
  for (;;) {
    const ssize_t n = ::read(err_pipe[0], chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(chunk, static_cast<size_t>(n));
    size_t cut;
    while ((cut = pending.find_first_of("\r\n")) != std::string::npos) {
      std::string line = pending.substr(0, cut);
      pending.erase(0, cut + 1);
      if (line.empty()) continue;
      last_line = line;
      v1::GitCloneResponse message;
      message.set_phase(PhaseOf(line));
      message.set_percent(PercentOf(line));
      message.set_message(Printable(line));
      if (message.phase() == v1::GIT_CLONE_PHASE_RECEIVING_OBJECTS) {
        // "... 1.20 MiB | ..." is informational; count bytes read from git's output instead.
        received += static_cast<int64_t>(line.size());
      }
      message.set_received_bytes(received);
      if (!stopped && !progress(message)) {
        stopped = true;
        ::kill(-pid, SIGKILL);
      }
    }
  }
  ::close(err_pipe[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (stopped) {
    cleanup();
    return absl::UnavailableError("the clone was stopped");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    cleanup();
    const std::string lower = absl::AsciiStrToLower(last_line);
    if (absl::StrContains(lower, "not found") || absl::StrContains(lower, "does not exist") ||
        absl::StrContains(lower, "not appear to be a git repository")) {
      return absl::NotFoundError("the repository or ref does not exist");
    }
    if (absl::StrContains(lower, "could not resolve") || absl::StrContains(lower, "unable to access") ||
        absl::StrContains(lower, "connection")) {
      return absl::UnavailableError("the repository cannot be reached from this workspace");
    }
    return absl::UnknownError(absl::StrCat("git clone failed: ", Printable(last_line)));
  }
  files.InvalidateUsage();
  if (files.quota_bytes() > 0) {
    absl::StatusOr<int64_t> used = files.UsedBytes();
    if (used.ok() && *used > files.quota_bytes()) {
      cleanup();
      return absl::ResourceExhaustedError("the clone does not fit in the volume quota");
    }
  }
  v1::MovePathRequest move;
  move.set_source_path(staging_rel);
  move.set_destination_path(*destination);
  absl::StatusOr<v1::MovePathResponse> moved = files.MovePath(move);
  if (!moved.ok()) {
    cleanup();
    return moved.status();
  }
  v1::GitCloneResponse done;
  done.set_phase(v1::GIT_CLONE_PHASE_DONE);
  done.set_percent(100);
  done.set_received_bytes(received);
  if (absl::StatusOr<v1::FileInfo> info = files.Describe(*destination); info.ok()) {
    *done.mutable_destination() = *info;
  }
  progress(done);
  return absl::OkStatus();
}

}  // namespace tidepool::supervisor
