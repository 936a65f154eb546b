#include "services/provisioner/local_runtime.h"
#include "services/provisioner/volume_image.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::provisioner {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::ReadFileOrEmpty;
using ::tidepool::testing::StatusIs;
using ::tidepool::testing::WriteFile;

// Set to 1 only where the host cannot give this test cgroups (e.g. an unprivileged CI
// container): cgroup-dependent tests are then skipped with a message instead of failing.
constexpr char kAllowNoCgroupsEnv[] = "TIDEPOOL_TEST_ALLOW_NO_CGROUPS";
constexpr char kSecret[] = "tp-test-credential-9f8e7d6c";

std::string Id(char c) { return "ws_" + std::string(26, c); }

// Polls `done` every 5 ms until it holds or `timeout` passes (sandboxes run asynchronously).
bool WaitUntil(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(15)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() >= deadline) {
      return false;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

bool ProcessAlive(int pid) {
  const std::string stat = ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/stat"));
  if (stat.empty()) {
    return false;
  }
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

// How many live host processes have exactly this command line (arguments joined by spaces).
int HostProcessesRunning(const std::string& args) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::string cmdline = ReadFileOrEmpty(entry.path().string() + "/cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    int pid = 0;
    if (absl::StripTrailingAsciiWhitespace(cmdline) == args &&
        absl::SimpleAtoi(entry.path().filename().string(), &pid) && ProcessAlive(pid)) {
      ++count;
    }
  }
  return count;
}

// Every file, directory and symlink under `root` with its content (or link target).
std::map<std::string, std::string> Snapshot(const std::string& root) {
  std::map<std::string, std::string> out;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    const std::string rel = std::filesystem::relative(entry.path(), root).string();
    if (entry.is_symlink()) {
      out[rel] = "link:" + std::filesystem::read_symlink(entry.path()).string();
    } else if (entry.is_directory()) {
      out[rel] = "dir";
    } else {
      out[rel] = "file:" + ReadFileOrEmpty(entry.path().string());
    }
  }
  return out;
}

// Fails the test (or skips it, when the environment says so) if limits are not enforced.
#define REQUIRE_CGROUPS()                                                          \
  do {                                                                             \
    if (!runtime_->limits_enforced()) {                                            \
      if (AllowNoCgroups()) {                                                      \
        GTEST_SKIP() << "cgroups unusable here and " << kAllowNoCgroupsEnv         \
                     << "=1: " << runtime_->limits_note();                         \
      }                                                                            \
      FAIL() << "cgroups are required for this test: " << runtime_->limits_note(); \
    }                                                                              \
  } while (false)

class LocalRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A provisioner-only variable that must not leak into sandboxes.
    ::setenv("TIDEPOOL_PROVISIONER_ONLY", "host-secret", 1);
    options_.state_dir = tmp_.Join("state");
    options_.cgroup_parent = absl::StrCat("tidepool-test-", ::getpid());
    OpenRuntime();
  }

  void OpenRuntime() {
    absl::StatusOr<std::unique_ptr<LocalRuntime>> runtime = LocalRuntime::Open(options_);
    if (!runtime.ok() && AllowNoCgroups()) {
      LocalRuntimeOptions relaxed = options_;
      relaxed.require_cgroups = false;
      runtime = LocalRuntime::Open(relaxed);
    }
    ASSERT_THAT(runtime, IsOk()) << "the local runtime needs bubblewrap and cgroups (set "
                                 << kAllowNoCgroupsEnv << "=1 to run without cgroups)";
    runtime_ = *std::move(runtime);
  }

  void TearDown() override {
    if (runtime_ == nullptr) {
      return;
    }
    absl::StatusOr<std::vector<std::string>> ids = runtime_->List();
    if (ids.ok()) {
      for (const std::string& id : *ids) {
        EXPECT_THAT(runtime_->Delete(id), IsOk()) << id;
      }
    }
    runtime_.reset();
    // The parent group this test binary created (possibly by an earlier runtime of the test).
    CgroupOptions cgroup_options;
    cgroup_options.parent_name = options_.cgroup_parent;
    absl::StatusOr<std::unique_ptr<CgroupManager>> cgroups = CgroupManager::Open(cgroup_options);
    if (cgroups.ok()) {
      EXPECT_THAT((*cgroups)->RemoveParent(), IsOk());
    }
  }

  static bool AllowNoCgroups() {
    const char* env = std::getenv(kAllowNoCgroupsEnv);
    return env != nullptr && std::string(env) == "1";
  }

  SandboxSpec MakeSpec(const std::string& id, const std::string& script) {
    SandboxSpec spec;
    spec.workspace_id = id;
    spec.volume_dir = tmp_.Join("volumes/" + id);
    spec.socket_dir = tmp_.Join("sockets/" + id);
    spec.stamp_dir = tmp_.Join("stamps/" + id);
    std::filesystem::create_directories(spec.stamp_dir);
    WriteFile(spec.stamp_dir + "/tool.json", "{\"stamped\": true}\n");
    spec.command = {"/bin/sh", "-c", script};
    spec.env = {{"TIDEPOOL_WORKSPACE_ID", id}, {"TOOL_API_KEY", kSecret}};
    spec.limits.memory_bytes = 256LL << 20;
    spec.limits.pids = 128;
    spec.limits.cpus = 1.0;
    return spec;
  }

  // Creates and starts a sandbox and waits for `marker` (a path relative to the socket dir)
  // to appear, which the script writes when its checks are done.
  void Run(const SandboxSpec& spec, const std::string& marker = "done") {
    ASSERT_THAT(runtime_->Create(spec), IsOk());
    ASSERT_THAT(runtime_->Start(spec.workspace_id), IsOk());
    ASSERT_TRUE(WaitUntil([&] { return Exists(spec.socket_dir + "/" + marker); }))
        << "sandbox did not finish; log: "
        << ReadFileOrEmpty(options_.state_dir + "/logs/" + spec.workspace_id + ".log");
  }

  std::string Out(const SandboxSpec& spec, const std::string& name) {
    return std::string(absl::StripAsciiWhitespace(ReadFileOrEmpty(spec.volume_dir + "/" + name)));
  }

  tidepool::testing::ScopedTempDir tmp_;
  LocalRuntimeOptions options_;
  std::unique_ptr<LocalRuntime> runtime_;
};

// --- Spec handling -------------------------------------------------------------------------

TEST_F(LocalRuntimeTest, RejectsMalformedSpecs) {
  SandboxSpec good = MakeSpec(Id('a'), "true");
  EXPECT_THAT(ValidateSandboxSpec(good), IsOk());
  auto with = [&](const std::function<void(SandboxSpec&)>& edit) {
    SandboxSpec spec = good;
    edit(spec);
    return runtime_->Create(spec);
  };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(with([](SandboxSpec& s) { s.workspace_id = "ws_short"; }), StatusIs(kInvalid));
  EXPECT_THAT(with([](SandboxSpec& s) { s.workspace_id = "ws_" + std::string(26, 'A'); }),
              StatusIs(kInvalid));
  EXPECT_THAT(with([](SandboxSpec& s) { s.workspace_id = "../../etc/passwd"; }),
              StatusIs(kInvalid));
  EXPECT_THAT(with([](SandboxSpec& s) { s.volume_dir = "relative/dir"; }), StatusIs(kInvalid));
  EXPECT_THAT(with([](SandboxSpec& s) { s.volume_dir = "/"; }), StatusIs(kInvalid));
  EXPECT_THAT(with([&](SandboxSpec& s) { s.volume_dir = tmp_.Join("v/../../x"); }),
              StatusIs(kInvalid));
  EXPECT_THAT(with([&](SandboxSpec& s) { s.volume_dir = options_.state_dir + "/vol"; }),
              StatusIs(kInvalid));
  EXPECT_THAT(with([](SandboxSpec& s) { s.ro_binds = {{"/", "/opt/host"}}; }), StatusIs(kInvalid));
  EXPECT_THAT(with([](SandboxSpec& s) {
                s.ro_binds = {{"/usr/bin", "/home/user/bin"}};
              }),
              StatusIs(kInvalid));
  EXPECT_THAT(with([](SandboxSpec& s) {
                s.ro_binds = {{"/usr/bin", "/run/tidepool/x"}};
              }),
              StatusIs(kInvalid));
  EXPECT_THAT(with([](SandboxSpec& s) {
                s.ro_binds = {{"/usr/bin", "/proc"}};
              }),
              StatusIs(kInvalid));
  EXPECT_THAT(with([&](SandboxSpec& s) {
                s.ro_binds = {{options_.state_dir, "/opt/s"}};
              }),
              StatusIs(kInvalid));
  EXPECT_THAT(with([](SandboxSpec& s) { s.command.clear(); }), StatusIs(kInvalid));
  EXPECT_THAT(with([](SandboxSpec& s) { s.env["A=B"] = "x"; }), StatusIs(kInvalid));
  EXPECT_THAT(with([](SandboxSpec& s) { s.limits.pids = -1; }), StatusIs(kInvalid));
  EXPECT_THAT(with([](SandboxSpec& s) { s.env["BIN"] = "\xff\xfe"; }), StatusIs(kInvalid));
  EXPECT_THAT(runtime_->List(), ::tidepool::testing::IsOkAndHolds(IsEmpty()));
}

TEST_F(LocalRuntimeTest, AnswersForUnknownWorkspaces) {
  EXPECT_THAT(runtime_->Start(Id('z')), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(runtime_->Stop(Id('z'), absl::Seconds(1)), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(runtime_->Usage(Id('z')), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(runtime_->Delete(Id('z')), IsOk());
  absl::StatusOr<SandboxStatus> status = runtime_->Status(Id('z'));
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->phase, SandboxPhase::kMissing);
  EXPECT_THAT(runtime_->Status("nonsense"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(LocalRuntimeTest, BuildsTheDocumentedBwrapCommandLine) {
  SandboxSpec spec = MakeSpec(Id('a'), "true");
  spec.ro_binds = {{"/usr/bin", "/opt/tidepool/bin"}};
  const std::vector<std::string> argv = BuildBwrapArgv("/usr/bin/bwrap", spec, BwrapFds{});
  const std::string line = absl::StrJoin(argv, " ");
  std::cout << "[ bwrap    ] " << line << "\n";
  for (const char* part :
       {"--unshare-user --unshare-all --disable-userns --new-session --cap-drop ALL --uid 1000 "
        "--gid 1000 --hostname ws-aaaaaaaaaaaaaaaaaaaaaaaaaa",
        "--ro-bind /usr /usr", "--proc /proc --dev /dev", "--tmpfs /tmp",
        "--ro-bind /usr/bin /opt/tidepool/bin", "--remount-ro / --chdir /home/user --clearenv",
        "--setenv HOME /home/user",
        "--seccomp 3 --json-status-fd 4 --info-fd 5 -- /bin/sh -c true"}) {
    EXPECT_THAT(line, HasSubstr(part));
  }
  EXPECT_THAT(line, HasSubstr(absl::StrCat("--bind ", spec.volume_dir, " /home/user")));
  EXPECT_THAT(line, HasSubstr(absl::StrCat("--bind ", spec.socket_dir, " /run/tidepool")));
  EXPECT_THAT(line, HasSubstr(absl::StrCat("--ro-bind ", spec.stamp_dir, " /etc/tidepool")));
  EXPECT_THAT(argv, Not(Contains("--die-with-parent")));
  EXPECT_THAT(line, Not(HasSubstr("--ro-bind /etc /etc")));
  EXPECT_THAT(line, Not(HasSubstr("/root")));
}

// --- Hardening seen from inside one sandbox --------------------------------------------------

TEST_F(LocalRuntimeTest, EntryRunsConfinedAndHardened) {
  const std::string host_tmp = tmp_.path();
  const std::string script = absl::StrCat(R"(
date +%s%N > /run/tidepool/t_entry
cd /home/user
grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status > status.txt
id -u > uid.txt
hostname > hostname.txt
pwd > pwd.txt
echo "$HOME" > home.txt
env > env.txt
cat /etc/tidepool/tool.json > stamp.txt
for p in /usr/x /etc/tidepool/x /etc/x /x /run/x /opt/x /home/x; do
  if touch "$p" 2>/dev/null; then echo "$p writable"; else echo "$p denied"; fi
done > writes.txt
touch /home/user/w && touch /tmp/w && echo ok > rw.txt
for p in /root /etc/shadow /sys /var /boot /etc/sudoers /etc/ssh )",
                                          host_tmp, " ", options_.state_dir, R"(; do
  if [ -e "$p" ]; then echo "$p visible"; else echo "$p absent"; fi
done > hidden.txt
ls /etc | tr '\n' ' ' > etc.txt
ls /proc/self/fd | tr '\n' ' ' > fds.txt
if unshare -U true 2>/dev/null; then echo unshare-ok; else echo unshare-denied; fi > unshare.txt
mkdir -p /tmp/m
if mount -t tmpfs none /tmp/m 2>/dev/null; then echo mount-ok; else echo mount-denied; fi > mount.txt
/usr/bin/python3 -c '
import socket, errno
try:
    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    print("vsock-allowed")
except OSError as e:
    print("vsock-" + errno.errorcode[e.errno])
' > vsock.txt 2>&1
echo done > /run/tidepool/done
exec sleep 1000
)");
  SandboxSpec spec = MakeSpec(Id('a'), script);
  ASSERT_THAT(runtime_->Create(spec), IsOk());
  const absl::Time before = absl::Now();
  ASSERT_THAT(runtime_->Start(spec.workspace_id), IsOk())
      << ReadFileOrEmpty(options_.state_dir + "/logs/" + spec.workspace_id + ".log");
  const absl::Duration start_call = absl::Now() - before;
  ASSERT_TRUE(WaitUntil([&] { return Exists(spec.socket_dir + "/done"); }))
      << ReadFileOrEmpty(options_.state_dir + "/logs/" + spec.workspace_id + ".log");
  int64_t entry_ns = 0;
  ASSERT_TRUE(absl::SimpleAtoi(
      absl::StripAsciiWhitespace(ReadFileOrEmpty(spec.socket_dir + "/t_entry")), &entry_ns));
  std::cout << "[ latency  ] Start() returned after " << absl::ToDoubleMilliseconds(start_call)
            << " ms; the entry process was running "
            << absl::ToDoubleMilliseconds(absl::FromUnixNanos(entry_ns) - before)
            << " ms after Start() was called\n";

  EXPECT_EQ(Out(spec, "status.txt"),
            "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n"
            "NoNewPrivs:\t1\nSeccomp:\t2");
  EXPECT_EQ(Out(spec, "uid.txt"), "1000");
  EXPECT_EQ(Out(spec, "hostname.txt"), "ws-aaaaaaaaaaaaaaaaaaaaaaaaaa");
  EXPECT_EQ(Out(spec, "pwd.txt"), "/home/user");
  EXPECT_EQ(Out(spec, "home.txt"), "/home/user");
  const std::string env = Out(spec, "env.txt");
  EXPECT_THAT(env, HasSubstr("TIDEPOOL_WORKSPACE_ID=" + spec.workspace_id));
  EXPECT_THAT(env, HasSubstr(absl::StrCat("TOOL_API_KEY=", kSecret)));
  EXPECT_THAT(env, Not(HasSubstr("TIDEPOOL_PROVISIONER_ONLY")));
  EXPECT_EQ(Out(spec, "stamp.txt"), "{\"stamped\": true}");
  EXPECT_EQ(Out(spec, "writes.txt"),
            "/usr/x denied\n/etc/tidepool/x denied\n/etc/x denied\n/x denied\n/run/x denied\n"
            "/opt/x denied\n/home/x denied");
  EXPECT_EQ(Out(spec, "rw.txt"), "ok");
  EXPECT_EQ(Out(spec, "hidden.txt"),
            absl::StrCat("/root absent\n/etc/shadow absent\n/sys absent\n/var absent\n"
                         "/boot absent\n/etc/sudoers absent\n/etc/ssh absent\n",
                         host_tmp, " absent\n", options_.state_dir, " absent"));
  for (absl::string_view entry : absl::StrSplit(Out(spec, "etc.txt"), ' ', absl::SkipEmpty())) {
    EXPECT_THAT((std::vector<std::string>{"alternatives", "ca-certificates", "group", "hosts",
                                          "ld.so.cache", "localtime", "nsswitch.conf", "passwd",
                                          "resolv.conf", "ssl", "tidepool"}),
                Contains(std::string(entry)));
  }
  EXPECT_THAT(Out(spec, "etc.txt"), HasSubstr("passwd"));
  EXPECT_EQ(Out(spec, "fds.txt"), "0 1 2 3");  // stdio and ls's own: no provisioner fd leaks
  EXPECT_EQ(Out(spec, "unshare.txt"), "unshare-denied");
  EXPECT_EQ(Out(spec, "mount.txt"), "mount-denied");
  EXPECT_EQ(Out(spec, "vsock.txt"), "vsock-EPERM");

  // The host never sees the credential on a command line, and the record is private.
  absl::StatusOr<SandboxStatus> status = runtime_->Status(spec.workspace_id);
  ASSERT_THAT(status, IsOk());
  ASSERT_EQ(status->phase, SandboxPhase::kRunning);
  // The record identifies both bwrap processes by pid and start time; Status names the outer.
  const nlohmann::json record = nlohmann::json::parse(
      ReadFileOrEmpty(options_.state_dir + "/" + spec.workspace_id + ".json"));
  EXPECT_EQ(record["run"]["monitor_pid"].get<int>(), status->pid);
  EXPECT_NE(record["run"]["monitor_ticks"].get<uint64_t>(), 0u);
  EXPECT_NE(record["run"]["init_ticks"].get<uint64_t>(), 0u);
  std::string cmdline = ReadFileOrEmpty(absl::StrCat("/proc/", status->pid, "/cmdline"));
  std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
  EXPECT_THAT(cmdline, HasSubstr("bwrap --args"));
  EXPECT_THAT(cmdline, Not(HasSubstr(kSecret)));
  struct stat st {};
  ASSERT_EQ(::stat((options_.state_dir + "/" + spec.workspace_id + ".json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(options_.state_dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat(spec.socket_dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_F(LocalRuntimeTest, StartsTheEntryWellUnderASecond) {
  SandboxSpec spec = MakeSpec(Id('t'), R"(
date +%s%N > /run/tidepool/t_entry
exec sleep 1000
)");
  ASSERT_THAT(runtime_->Create(spec), IsOk());
  std::vector<double> returned_ms;
  std::vector<double> entry_ms;
  for (int i = 0; i < 10; ++i) {
    ::unlink((spec.socket_dir + "/t_entry").c_str());
    const absl::Time before = absl::Now();
    ASSERT_THAT(runtime_->Start(spec.workspace_id), IsOk());
    returned_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - before));
    int64_t entry_ns = 0;
    ASSERT_TRUE(WaitUntil([&] {
      return absl::SimpleAtoi(
          absl::StripAsciiWhitespace(ReadFileOrEmpty(spec.socket_dir + "/t_entry")), &entry_ns);
    }));
    entry_ms.push_back(absl::ToDoubleMilliseconds(absl::FromUnixNanos(entry_ns) - before));
    ASSERT_THAT(runtime_->Stop(spec.workspace_id, absl::ZeroDuration()), IsOk());
  }
  std::sort(returned_ms.begin(), returned_ms.end());
  std::sort(entry_ms.begin(), entry_ms.end());
  std::cout << "[ latency  ] 10 starts: Start() returned p50 " << returned_ms[4] << " ms, max "
            << returned_ms[9] << " ms; entry running p50 " << entry_ms[4] << " ms, max "
            << entry_ms[9] << " ms after Start() was called\n";
  EXPECT_LT(entry_ms[4], 1000);
}

TEST_F(LocalRuntimeTest, HasNoNetworkButLoopback) {
  // A listener in the host's network namespace that the sandbox must not reach.
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 8), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  // Positive control: the port is reachable from the host.
  const int probe = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(probe);

  SandboxSpec spec = MakeSpec(Id('n'), R"(
cd /home/user
tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > ifaces.txt
if bash -c "exec 3<>/dev/tcp/127.0.0.1/$HOST_PORT" 2>/dev/null; then echo connected; else echo refused; fi > host_port.txt
if bash -c "exec 3<>/dev/tcp/1.1.1.1/53" 2>/dev/null; then echo connected; else echo unreachable; fi > outside.txt
/usr/bin/python3 -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
c = socket.create_connection(s.getsockname()); a, _ = s.accept(); c.sendall(b"hi")
print("loopback-" + a.recv(2).decode())
' > loopback.txt 2>&1
echo done > /run/tidepool/done
)");
  spec.env["HOST_PORT"] = absl::StrCat(port);
  Run(spec);
  ::close(listener);
  EXPECT_EQ(Out(spec, "ifaces.txt"), "lo");
  EXPECT_EQ(Out(spec, "host_port.txt"), "refused");
  EXPECT_EQ(Out(spec, "outside.txt"), "unreachable");
  EXPECT_EQ(Out(spec, "loopback.txt"), "loopback-hi");
}

// --- Isolation between two workspaces -------------------------------------------------------

TEST_F(LocalRuntimeTest, WorkspacesCannotSeeEachOther) {
  SandboxSpec b = MakeSpec(Id('b'), R"(
echo b > /tmp/b_tmp_marker
echo b > /home/user/b_vol_marker
/usr/bin/python3 -c '
import socket, time
s = socket.socket(socket.AF_UNIX); s.bind("\0tidepool-b-abstract"); s.listen()
u = socket.socket(socket.AF_UNIX); u.bind("/run/tidepool/b.sock"); u.listen()
open("/run/tidepool/ready", "w").write("1")
time.sleep(1000)
' &
exec sleep 1001
)");
  Run(b, "ready");
  ASSERT_TRUE(Exists(b.socket_dir + "/b.sock"));

  const std::string script = absl::StrCat(
      R"(
cd /home/user
for p in )",
      b.volume_dir, " ", b.socket_dir, " ", b.socket_dir, "/b.sock ", b.volume_dir,
      R"(/b_vol_marker /tmp/b_tmp_marker /home/user/b_vol_marker /run/tidepool/b.sock; do
  if [ -e "$p" ]; then echo "$p visible"; else echo "$p absent"; fi
done > paths.txt
ls /proc | grep -E '^[0-9]+$' | wc -l > nprocs.txt
cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' ' ' > cmdlines.txt
ps -eo pid,args > ps.txt
cat /proc/net/unix > unix.txt
ls -A /tmp > tmp.txt
echo done > /run/tidepool/done
exec sleep 1000
)");
  SandboxSpec a = MakeSpec(Id('a'), script);
  Run(a);
  EXPECT_EQ(Out(a, "paths.txt"),
            absl::StrCat(b.volume_dir, " absent\n", b.socket_dir, " absent\n", b.socket_dir,
                         "/b.sock absent\n", b.volume_dir,
                         "/b_vol_marker absent\n/tmp/b_tmp_marker absent\n"
                         "/home/user/b_vol_marker absent\n/run/tidepool/b.sock absent"));
  int nprocs = 0;
  ASSERT_TRUE(absl::SimpleAtoi(Out(a, "nprocs.txt"), &nprocs));
  EXPECT_LE(nprocs, 8) << Out(a, "ps.txt");  // bwrap's init, the shell and its pipeline
  EXPECT_THAT(Out(a, "cmdlines.txt"), Not(HasSubstr("sleep 1001")));
  EXPECT_THAT(Out(a, "cmdlines.txt"), Not(HasSubstr("python3")));
  EXPECT_THAT(Out(a, "ps.txt"), Not(HasSubstr("sleep 1001")));
  EXPECT_THAT(Out(a, "ps.txt"), HasSubstr("ps -eo pid,args"));
  EXPECT_THAT(Out(a, "unix.txt"), Not(HasSubstr("tidepool-b-abstract")));
  EXPECT_THAT(Out(a, "unix.txt"), Not(HasSubstr("b.sock")));
  EXPECT_EQ(Out(a, "tmp.txt"), "");
  // And B still sees its own things.
  EXPECT_EQ(Out(b, "b_vol_marker"), "b");
}

// --- Resource limits ------------------------------------------------------------------------

TEST_F(LocalRuntimeTest, ForkBombIsContainedByPidsLimit) {
  REQUIRE_CGROUPS();
  // A neighbour whose responsiveness is measured while the bomb runs.
  SandboxSpec b = MakeSpec(Id('b'), R"(
echo up > /run/tidepool/ready
while :; do date +%s%N >> /run/tidepool/heartbeat; sleep 0.05; done
)");
  Run(b, "ready");

  // A persistent bomb (every process forks forever, ignoring failures) and a prober that
  // reports once its own forks are refused.
  SandboxSpec a = MakeSpec(Id('a'), R"(
/usr/bin/python3 -c '
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
' &
exec /usr/bin/python3 -c '
import errno, os, time
refused = 0
while True:
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    except OSError as e:
        if e.errno == errno.EAGAIN:
            refused += 1
            if refused == 3:
                # Written whole, then renamed: the test polls for the name.
                with open("/run/tidepool/refused.tmp", "w") as f:
                    f.write("EAGAIN")
                os.rename("/run/tidepool/refused.tmp", "/run/tidepool/refused")
    time.sleep(0.01)
'
)");
  a.limits.memory_bytes = 1LL << 30;
  a.limits.pids = 32;
  a.limits.cpus = 0.5;
  Run(a, "refused");
  EXPECT_EQ(ReadFileOrEmpty(a.socket_dir + "/refused"), "EAGAIN");

  // While the bomb is at its limit: the sandbox holds at most 32 tasks, the host can still
  // fork and exec, and the neighbour keeps beating.
  absl::StatusOr<SandboxUsage> usage = runtime_->Usage(a.workspace_id);
  ASSERT_THAT(usage, IsOk());
  EXPECT_LE(usage->processes, 32);
  EXPECT_GE(usage->processes, 8);
  absl::Duration slowest_host_exec;
  for (int i = 0; i < 10; ++i) {
    const absl::Time t0 = absl::Now();
    absl::StatusOr<tidepool::testing::CommandResult> result =
        tidepool::testing::RunCommand({"/bin/true"}, tmp_.path(), absl::Seconds(10));
    ASSERT_THAT(result, IsOk());
    EXPECT_EQ(result->exit_code, 0);
    slowest_host_exec = std::max(slowest_host_exec, absl::Now() - t0);
  }
  std::vector<std::string> before_beats =
      absl::StrSplit(ReadFileOrEmpty(b.socket_dir + "/heartbeat"), '\n', absl::SkipEmpty());
  ASSERT_TRUE(WaitUntil([&] {
    std::vector<std::string> now =
        absl::StrSplit(ReadFileOrEmpty(b.socket_dir + "/heartbeat"), '\n', absl::SkipEmpty());
    return now.size() >= before_beats.size() + 10;
  })) << "the neighbour stopped beating during the fork bomb";
  std::vector<std::string> beats =
      absl::StrSplit(ReadFileOrEmpty(b.socket_dir + "/heartbeat"), '\n', absl::SkipEmpty());
  int64_t max_gap_ns = 0;
  for (size_t i = before_beats.size() > 0 ? before_beats.size() - 1 : 0; i + 1 < beats.size();
       ++i) {
    int64_t x = 0;
    int64_t y = 0;
    if (absl::SimpleAtoi(beats[i], &x) && absl::SimpleAtoi(beats[i + 1], &y)) {
      max_gap_ns = std::max(max_gap_ns, y - x);
    }
  }
  std::cout << "[ forkbomb ] sandbox tasks " << usage->processes << "/32; slowest host fork+exec "
            << absl::ToDoubleMilliseconds(slowest_host_exec)
            << " ms; neighbour's largest heartbeat gap " << max_gap_ns / 1e6
            << " ms (nominal 50 ms)\n";
  EXPECT_LT(slowest_host_exec, absl::Seconds(1));
  EXPECT_LT(max_gap_ns, 1'000'000'000) << "neighbour slowed past the 1 s bound";

  // Stop kills the whole bomb at once.
  const absl::Time t0 = absl::Now();
  ASSERT_THAT(runtime_->Stop(a.workspace_id, absl::ZeroDuration()), IsOk());
  std::cout << "[ forkbomb ] Stop() took " << absl::ToDoubleMilliseconds(absl::Now() - t0)
            << " ms\n";
  EXPECT_THAT(runtime_->cgroups()->Pids(a.workspace_id), IsEmpty());
  absl::StatusOr<SandboxStatus> b_status = runtime_->Status(b.workspace_id);
  ASSERT_THAT(b_status, IsOk());
  EXPECT_EQ(b_status->phase, SandboxPhase::kRunning);
}

TEST_F(LocalRuntimeTest, MemoryHogIsOomKilledAtTheLimit) {
  REQUIRE_CGROUPS();
  SandboxSpec spec = MakeSpec(Id('m'), R"(
/usr/bin/python3 -c 'x = b"x" * (256 << 20); print(len(x))' > /home/user/hog.txt 2>&1
echo $? > /home/user/hog_rc.txt
echo alive > /home/user/after.txt
echo done > /run/tidepool/done
exec sleep 1000
)");
  spec.limits.memory_bytes = 64LL << 20;
  Run(spec);
  EXPECT_EQ(Out(spec, "hog_rc.txt"), "137");                       // SIGKILL from the OOM killer
  EXPECT_THAT(Out(spec, "hog.txt"), Not(HasSubstr("268435456")));  // never got the memory
  EXPECT_EQ(Out(spec, "after.txt"), "alive");  // the rest of the sandbox lives on
  absl::StatusOr<SandboxUsage> usage = runtime_->Usage(spec.workspace_id);
  ASSERT_THAT(usage, IsOk());
  EXPECT_GE(usage->oom_kills, 1);
  EXPECT_LE(usage->memory_bytes, 64LL << 20);
}

TEST_F(LocalRuntimeTest, ReportsUsage) {
  SandboxSpec spec = MakeSpec(Id('u'), R"(
head -c 3145728 /dev/urandom > /home/user/blob
ln -s /usr /home/user/usr-link
i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done
echo done > /run/tidepool/done
exec sleep 1000
)");
  Run(spec);
  absl::StatusOr<SandboxUsage> usage = runtime_->Usage(spec.workspace_id);
  ASSERT_THAT(usage, IsOk());
  EXPECT_GE(usage->disk_bytes, 3145728);
  EXPECT_LT(usage->disk_bytes, 4 << 20);  // the symlink to /usr was not followed
  EXPECT_FALSE(usage->disk_bytes_partial);
  if (runtime_->limits_enforced()) {
    EXPECT_GT(usage->cpu_seconds, 0.01);
    EXPECT_GT(usage->memory_bytes, 0);
    EXPECT_GE(usage->processes, 2);  // bwrap's monitor and init, the sleep
  }
}

// Hard disk quotas: the volume is its own file system of the quota's size, so any write past
// it fails inside the sandbox, the shell's as much as the file API's; Delete releases it.
TEST_F(LocalRuntimeTest, AHardQuotaStopsEveryWriteAtTheQuota) {
  if (!ImageVolumesSupported()) {
    GTEST_SKIP() << "image volumes need root and loop devices";
  }
  runtime_.reset();
  options_.volume_images_dir = tmp_.Join("images");
  OpenRuntime();
  SandboxSpec spec = MakeSpec(Id('q'), R"(
head -c 20971520 /dev/zero > /home/user/first 2> /run/tidepool/first.err; echo $? > /run/tidepool/first
head -c 20971520 /dev/zero > /home/user/second 2> /run/tidepool/second.err; echo $? > /run/tidepool/second
echo done > /run/tidepool/done
exec sleep 1000
)");
  spec.limits.disk_bytes = 32LL << 20;
  Run(spec);
  EXPECT_TRUE(IsMountPoint(spec.volume_dir));
  EXPECT_EQ(ReadFileOrEmpty(spec.socket_dir + "/first"), "0\n");
  EXPECT_NE(ReadFileOrEmpty(spec.socket_dir + "/second"), "0\n");
  EXPECT_THAT(ReadFileOrEmpty(spec.socket_dir + "/second.err"), HasSubstr("No space left"));
  absl::StatusOr<SandboxUsage> usage = runtime_->Usage(spec.workspace_id);
  ASSERT_THAT(usage, IsOk());
  EXPECT_GE(usage->disk_bytes, 20 << 20);
  EXPECT_LE(usage->disk_bytes, 32 << 20);
  // Stop and start keep the files; Delete unmounts and removes the image.
  ASSERT_THAT(runtime_->Stop(spec.workspace_id, absl::Seconds(2)), IsOk());
  ASSERT_THAT(runtime_->Create(spec), IsOk());
  EXPECT_EQ(std::filesystem::file_size(spec.volume_dir + "/first"), 20u << 20);
  // A raised quota grows the stopped volume, keeping its files; a lowered one is not applied.
  auto capacity = [&] {
    struct statvfs fs {};
    EXPECT_EQ(::statvfs(spec.volume_dir.c_str(), &fs), 0);
    return static_cast<int64_t>(fs.f_blocks * fs.f_frsize);
  };
  EXPECT_LE(capacity(), 32LL << 20);
  spec.limits.disk_bytes = 96LL << 20;
  ASSERT_THAT(runtime_->Create(spec), IsOk());
  EXPECT_TRUE(IsMountPoint(spec.volume_dir));
  EXPECT_GT(capacity(), 80LL << 20);
  EXPECT_EQ(std::filesystem::file_size(spec.volume_dir + "/first"), 20u << 20);
  spec.limits.disk_bytes = 32LL << 20;
  ASSERT_THAT(runtime_->Create(spec), IsOk());
  EXPECT_GT(capacity(), 80LL << 20);
  ASSERT_THAT(runtime_->Delete(spec.workspace_id), IsOk());
  EXPECT_FALSE(IsMountPoint(spec.volume_dir));
  EXPECT_FALSE(std::filesystem::exists(options_.volume_images_dir + "/" + spec.workspace_id + ".img"));
  // A volume that already holds files keeps them, and the soft quota.
  SandboxSpec old = MakeSpec(Id('o'), "echo done > /run/tidepool/done; exec sleep 1000");
  old.limits.disk_bytes = 32LL << 20;
  std::filesystem::create_directories(old.volume_dir);
  WriteFile(old.volume_dir + "/kept.txt", "mine");
  Run(old);
  EXPECT_FALSE(IsMountPoint(old.volume_dir));
  EXPECT_EQ(ReadFileOrEmpty(old.volume_dir + "/kept.txt"), "mine");
}

TEST_F(LocalRuntimeTest, CreateAgainUpdatesLimitsOfARunningSandbox) {
  REQUIRE_CGROUPS();
  SandboxSpec spec = MakeSpec(Id('l'), "echo up > /run/tidepool/ready; exec sleep 1000");
  Run(spec, "ready");
  std::string pids_max;
  for (const std::string& dir : runtime_->cgroups()->Dirs(spec.workspace_id)) {
    if (Exists(dir + "/pids.max")) {
      pids_max = dir + "/pids.max";
    }
  }
  ASSERT_FALSE(pids_max.empty());
  EXPECT_EQ(ReadFileOrEmpty(pids_max), "128\n");
  spec.limits.pids = 64;
  ASSERT_THAT(runtime_->Create(spec), IsOk());
  EXPECT_EQ(ReadFileOrEmpty(pids_max), "64\n");
  EXPECT_EQ(runtime_->Status(spec.workspace_id)->phase, SandboxPhase::kRunning);
  SandboxSpec moved = spec;
  moved.volume_dir = tmp_.Join("elsewhere");
  EXPECT_THAT(runtime_->Create(moved), StatusIs(absl::StatusCode::kFailedPrecondition));
}

// --- Lifecycle ------------------------------------------------------------------------------

TEST_F(LocalRuntimeTest, StopThenStartKeepsEveryVolumeByte) {
  SandboxSpec spec = MakeSpec(Id('p'), R"(
cd /home/user
if [ ! -f random.bin ]; then
  head -c 1048576 /dev/urandom > random.bin
  mkdir -p deep/er/dir && printf 'nested' > deep/er/dir/file
  ln -s random.bin link
  printf '' > empty
fi
echo x >> /run/tidepool/starts
trap 'echo term > /run/tidepool/got_term; exit 0' TERM
echo up > /run/tidepool/ready
sleep 1000 &
wait
)");
  ASSERT_TRUE(std::filesystem::create_directories(spec.volume_dir));
  std::string all_bytes;
  for (int i = 0; i < 256; ++i) {
    all_bytes.push_back(static_cast<char>(i));
  }
  ASSERT_TRUE(WriteFile(spec.volume_dir + "/host_written.bin", all_bytes));
  Run(spec, "ready");
  const std::map<std::string, std::string> before = Snapshot(spec.volume_dir);
  ASSERT_EQ(before.count("random.bin"), 1u);
  EXPECT_EQ(before.at("random.bin").size(), std::string("file:").size() + 1048576);
  absl::StatusOr<SandboxStatus> first = runtime_->Status(spec.workspace_id);
  ASSERT_THAT(first, IsOk());
  ASSERT_EQ(first->phase, SandboxPhase::kRunning);

  ASSERT_THAT(runtime_->Stop(spec.workspace_id, absl::Seconds(5)), IsOk());
  absl::StatusOr<SandboxStatus> stopped = runtime_->Status(spec.workspace_id);
  ASSERT_THAT(stopped, IsOk());
  EXPECT_EQ(stopped->phase, SandboxPhase::kStopped);
  EXPECT_EQ(stopped->last_exit_code, 0);  // the SIGTERM trap ran and exited cleanly
  EXPECT_EQ(ReadFileOrEmpty(spec.socket_dir + "/got_term"), "term\n");
  EXPECT_FALSE(ProcessAlive(first->pid));
  EXPECT_EQ(Snapshot(spec.volume_dir), before);
  ASSERT_THAT(runtime_->Stop(spec.workspace_id, absl::Seconds(5)), IsOk());  // idempotent

  ::unlink((spec.socket_dir + "/ready").c_str());
  ASSERT_THAT(runtime_->Start(spec.workspace_id), IsOk());
  ASSERT_TRUE(WaitUntil([&] { return Exists(spec.socket_dir + "/ready"); }));
  absl::StatusOr<SandboxStatus> second = runtime_->Status(spec.workspace_id);
  ASSERT_THAT(second, IsOk());
  EXPECT_EQ(second->phase, SandboxPhase::kRunning);
  EXPECT_NE(second->pid, first->pid);
  EXPECT_EQ(ReadFileOrEmpty(spec.socket_dir + "/starts"), "x\nx\n");
  EXPECT_EQ(Snapshot(spec.volume_dir), before);
  EXPECT_EQ(ReadFileOrEmpty(spec.volume_dir + "/host_written.bin"), all_bytes);
}

TEST_F(LocalRuntimeTest, StopKillsASandboxThatIgnoresSigterm) {
  SandboxSpec spec = MakeSpec(Id('k'), R"(
trap '' TERM
echo up > /run/tidepool/ready
while :; do sleep 1; done
)");
  Run(spec, "ready");
  const absl::Time t0 = absl::Now();
  ASSERT_THAT(runtime_->Stop(spec.workspace_id, absl::Milliseconds(300)), IsOk());
  const absl::Duration took = absl::Now() - t0;
  EXPECT_GE(took, absl::Milliseconds(300));
  EXPECT_LT(took, absl::Seconds(5));
  absl::StatusOr<SandboxStatus> status = runtime_->Status(spec.workspace_id);
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->phase, SandboxPhase::kStopped);
  EXPECT_EQ(status->last_exit_code, 128 + SIGKILL);
  if (runtime_->limits_enforced()) {
    EXPECT_THAT(runtime_->cgroups()->Pids(spec.workspace_id), IsEmpty());
  }
}

TEST_F(LocalRuntimeTest, ReportsTheExitCodeOfAnEntryThatEnds) {
  SandboxSpec spec = MakeSpec(Id('e'), "exit 3");
  ASSERT_THAT(runtime_->Create(spec), IsOk());
  ASSERT_THAT(runtime_->Start(spec.workspace_id), IsOk());
  ASSERT_TRUE(WaitUntil([&] {
    absl::StatusOr<SandboxStatus> s = runtime_->Status(spec.workspace_id);
    return s.ok() && s->phase == SandboxPhase::kStopped;
  }));
  absl::StatusOr<SandboxStatus> status = runtime_->Status(spec.workspace_id);
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->last_exit_code, 3);
  EXPECT_EQ(status->pid, 0);
}

TEST_F(LocalRuntimeTest, FailsStartWithBwrapsReasonWhenABindSourceIsMissing) {
  SandboxSpec spec = MakeSpec(Id('f'), "true");
  spec.ro_binds = {{tmp_.Join("tools"), "/opt/tidepool/tools"}};
  ASSERT_THAT(runtime_->Create(spec), IsOk());
  EXPECT_THAT(runtime_->Start(spec.workspace_id),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("does not exist")));
  spec.command = {"/no/such/entry"};
  spec.ro_binds.clear();
  ASSERT_THAT(runtime_->Create(spec), IsOk());
  // bwrap starts, the exec inside fails: the sandbox stops with bwrap's exit code.
  ASSERT_THAT(runtime_->Start(spec.workspace_id), IsOk());
  ASSERT_TRUE(WaitUntil([&] {
    absl::StatusOr<SandboxStatus> s = runtime_->Status(spec.workspace_id);
    return s.ok() && s->phase == SandboxPhase::kStopped;
  }));
  EXPECT_THAT(ReadFileOrEmpty(options_.state_dir + "/logs/" + spec.workspace_id + ".log"),
              HasSubstr("/no/such/entry"));
}

TEST_F(LocalRuntimeTest, ConcurrentStartsRunOneSandbox) {
  SandboxSpec spec = MakeSpec(Id('c'), R"(
echo x >> /run/tidepool/starts
exec sleep 1000
)");
  ASSERT_THAT(runtime_->Create(spec), IsOk());
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      if (runtime_->Start(spec.workspace_id).ok()) {
        ok.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) {
    t.join();
  }
  EXPECT_EQ(ok.load(), 8);
  // Every Start has returned, so any duplicate's bwrap processes exist by now; once the
  // sandbox's command has run (bwrap's short-lived setup child has exec'd by then), one sandbox
  // is exactly two of them (the outer monitor and the namespace's init).
  ASSERT_TRUE(WaitUntil([&] { return Exists(spec.socket_dir + "/starts"); }));
  if (runtime_->limits_enforced()) {
    int bwraps = 0;
    for (pid_t pid : runtime_->cgroups()->Pids(spec.workspace_id)) {
      if (absl::StripAsciiWhitespace(ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/comm"))) ==
          "bwrap") {
        ++bwraps;
      }
    }
    EXPECT_EQ(bwraps, 2);
  }
  // The shell creates the file before it writes the line; wait for the line itself.
  ASSERT_TRUE(WaitUntil([&] { return !ReadFileOrEmpty(spec.socket_dir + "/starts").empty(); }));
  EXPECT_EQ(ReadFileOrEmpty(spec.socket_dir + "/starts"), "x\n");
}

TEST_F(LocalRuntimeTest, SecondRuntimeReadoptsARunningSandbox) {
  SandboxSpec spec = MakeSpec(Id('r'), R"(
echo x >> /run/tidepool/starts
echo up > /run/tidepool/ready
exec sleep 1000
)");
  Run(spec, "ready");
  absl::StatusOr<SandboxStatus> before = runtime_->Status(spec.workspace_id);
  ASSERT_THAT(before, IsOk());
  ASSERT_EQ(before->phase, SandboxPhase::kRunning);

  // The provisioner "restarts": the first runtime goes away, the sandbox does not.
  runtime_.reset();
  ASSERT_TRUE(ProcessAlive(before->pid));
  OpenRuntime();
  ASSERT_NE(runtime_, nullptr);
  EXPECT_THAT(runtime_->List(), ::tidepool::testing::IsOkAndHolds(ElementsAre(spec.workspace_id)));
  absl::StatusOr<SandboxStatus> adopted = runtime_->Status(spec.workspace_id);
  ASSERT_THAT(adopted, IsOk());
  EXPECT_EQ(adopted->phase, SandboxPhase::kRunning);
  EXPECT_EQ(adopted->pid, before->pid);
  ASSERT_THAT(runtime_->Create(spec), IsOk());  // the reconciler's idempotent re-Create
  ASSERT_THAT(runtime_->Start(spec.workspace_id), IsOk());
  EXPECT_EQ(runtime_->Status(spec.workspace_id)->pid, before->pid);
  EXPECT_EQ(ReadFileOrEmpty(spec.socket_dir + "/starts"), "x\n");
  ASSERT_THAT(runtime_->Stop(spec.workspace_id, absl::Seconds(2)), IsOk());
  EXPECT_EQ(runtime_->Status(spec.workspace_id)->phase, SandboxPhase::kStopped);
  EXPECT_FALSE(ProcessAlive(before->pid));
  if (runtime_->limits_enforced()) {
    EXPECT_THAT(runtime_->cgroups()->Pids(spec.workspace_id), IsEmpty());
  }
}

TEST_F(LocalRuntimeTest, NeverMistakesAReusedPidForTheSandbox) {
  SandboxSpec spec = MakeSpec(Id('q'), "exec sleep 1000");
  ASSERT_THAT(runtime_->Create(spec), IsOk());
  // An unrelated process holds the pid the record names, but started at another time (as
  // after pid reuse).
  absl::StatusOr<std::unique_ptr<tidepool::testing::Subprocess>> bystander =
      tidepool::testing::Subprocess::Start({"/bin/sleep", "1000"}, tmp_.path());
  ASSERT_THAT(bystander, IsOk());
  const int pid = (*bystander)->pid();
  const std::string record_path = options_.state_dir + "/" + spec.workspace_id + ".json";
  nlohmann::json record = nlohmann::json::parse(ReadFileOrEmpty(record_path));
  const std::string boot_id(
      absl::StripAsciiWhitespace(ReadFileOrEmpty("/proc/sys/kernel/random/boot_id")));
  record["run"] = {{"monitor_pid", pid}, {"monitor_ticks", 1}, {"init_pid", pid},
                   {"init_ticks", 1},    {"boot_id", boot_id}, {"started_unix_ms", 0}};
  ASSERT_TRUE(WriteFile(record_path, record.dump()));
  absl::StatusOr<SandboxStatus> status = runtime_->Status(spec.workspace_id);
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->phase, SandboxPhase::kStopped);
  ASSERT_THAT(runtime_->Stop(spec.workspace_id, absl::Milliseconds(100)), IsOk());
  EXPECT_TRUE(ProcessAlive(pid)) << "Stop killed a process that is not the sandbox";
  // Start launches a real sandbox rather than believing the stale record.
  ASSERT_THAT(runtime_->Start(spec.workspace_id), IsOk());
  status = runtime_->Status(spec.workspace_id);
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->phase, SandboxPhase::kRunning);
  EXPECT_NE(status->pid, pid);
  EXPECT_TRUE(ProcessAlive(pid));
}

TEST_F(LocalRuntimeTest, DeleteRemovesEverything) {
  SandboxSpec spec = MakeSpec(Id('d'), R"(
echo data > /home/user/file
echo up > /run/tidepool/ready
exec sleep 1000
)");
  Run(spec, "ready");
  absl::StatusOr<SandboxStatus> status = runtime_->Status(spec.workspace_id);
  ASSERT_THAT(status, IsOk());
  std::vector<std::string> cgroup_dirs;
  if (runtime_->cgroups() != nullptr) {
    cgroup_dirs = runtime_->cgroups()->Dirs(spec.workspace_id);
    for (const std::string& dir : cgroup_dirs) {
      EXPECT_TRUE(Exists(dir)) << dir;
    }
  }
  ASSERT_THAT(runtime_->Delete(spec.workspace_id), IsOk());
  EXPECT_FALSE(ProcessAlive(status->pid));
  EXPECT_FALSE(Exists(spec.volume_dir));
  EXPECT_FALSE(Exists(spec.socket_dir));
  EXPECT_FALSE(Exists(options_.state_dir + "/" + spec.workspace_id + ".json"));
  EXPECT_FALSE(Exists(options_.state_dir + "/run/" + spec.workspace_id));
  EXPECT_FALSE(Exists(options_.state_dir + "/logs/" + spec.workspace_id + ".log"));
  EXPECT_FALSE(Exists(options_.state_dir + "/locks/" + spec.workspace_id + ".lock"));
  for (const std::string& dir : cgroup_dirs) {
    EXPECT_FALSE(Exists(dir)) << dir;
  }
  EXPECT_TRUE(Exists(spec.stamp_dir));  // the stamper's directory is not the runtime's
  EXPECT_EQ(runtime_->Status(spec.workspace_id)->phase, SandboxPhase::kMissing);
  EXPECT_THAT(runtime_->List(), ::tidepool::testing::IsOkAndHolds(IsEmpty()));
  EXPECT_THAT(runtime_->Delete(spec.workspace_id), IsOk());
  EXPECT_THAT(runtime_->Start(spec.workspace_id), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(LocalRuntimeTest, RunsAsADedicatedHostUidWhenConfigured) {
  // The temp dir stays 0700 (root's): the launch stages the bind sources, so the sandbox's
  // uid needs to read only the stamp dir itself, not the directories above it.
  struct stat tmp_st {};
  ASSERT_EQ(::stat(tmp_.path().c_str(), &tmp_st), 0);
  ASSERT_EQ(tmp_st.st_mode & 0777, 0700u);
  runtime_.reset();
  options_.sandbox_host_uid = 65534;
  options_.sandbox_host_gid = 65534;
  OpenRuntime();
  ASSERT_NE(runtime_, nullptr);
  SandboxSpec spec = MakeSpec(Id('h'), R"(
id -u > /home/user/uid.txt
cat /etc/tidepool/tool.json > /home/user/stamp.txt
echo more >> /home/user/old/made-by-root.txt && echo appended > /home/user/adopted.txt
touch /home/user/suid && chmod 4755 /home/user/suid
grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status > /home/user/status.txt
echo done > /run/tidepool/done
exec sleep 1000
)");
  // A volume its sandboxes wrote as host root before: handed to the sandbox user whole.
  std::filesystem::create_directories(spec.volume_dir + "/old");
  WriteFile(spec.volume_dir + "/old/made-by-root.txt", "root's\n");
  ASSERT_EQ(::symlink("/etc/hostname", (spec.volume_dir + "/old/link").c_str()), 0);
  ASSERT_EQ(::chmod(spec.stamp_dir.c_str(), 0755), 0);
  ASSERT_EQ(::chmod((spec.stamp_dir + "/tool.json").c_str(), 0644), 0);
  Run(spec);
  EXPECT_EQ(Out(spec, "uid.txt"), "1000");
  EXPECT_EQ(Out(spec, "stamp.txt"), "{\"stamped\": true}");
  EXPECT_EQ(Out(spec, "status.txt"), "CapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2");
  EXPECT_EQ(Out(spec, "adopted.txt"), "appended");
  EXPECT_EQ(Out(spec, "old/made-by-root.txt"), "root's\nmore");
  struct stat st {};
  ASSERT_EQ(::lstat((spec.volume_dir + "/old/link").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);  // the link itself, not what it points to
  ASSERT_EQ(::stat("/etc/hostname", &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  ASSERT_EQ(::stat((spec.volume_dir + "/suid").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);  // a set-uid file made inside is not host root's
  absl::StatusOr<SandboxStatus> status = runtime_->Status(spec.workspace_id);
  ASSERT_THAT(status, IsOk());
  ASSERT_EQ(::stat(absl::StrCat("/proc/", status->pid).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);
  // The staging leaves nothing on the host.
  EXPECT_TRUE(std::filesystem::is_empty(options_.stage_dir));
}

TEST(SandboxHostUserTest, ResolvesNamesAndUidGidAndRefusesRootAndUnknownUsers) {
  EXPECT_THAT(ResolveSandboxHostUser("nobody"),
              ::tidepool::testing::IsOkAndHolds(::testing::AllOf(
                  ::testing::Field(&SandboxHostUser::uid, 65534u),
                  ::testing::Field(&SandboxHostUser::gid, 65534u))));
  EXPECT_THAT(ResolveSandboxHostUser("4242:4343"),
              ::tidepool::testing::IsOkAndHolds(::testing::AllOf(
                  ::testing::Field(&SandboxHostUser::uid, 4242u),
                  ::testing::Field(&SandboxHostUser::gid, 4343u))));
  EXPECT_THAT(ResolveSandboxHostUser("no-such-user-here"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("useradd --system")));
  EXPECT_THAT(ResolveSandboxHostUser("root"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ResolveSandboxHostUser("0:0"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ResolveSandboxHostUser("12:x"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(LocalRuntimeTest, StopsAndReadoptsThroughThePidNamespaceWithoutCgroups) {
  runtime_.reset();
  options_.use_cgroups = false;
  OpenRuntime();
  ASSERT_NE(runtime_, nullptr);
  EXPECT_FALSE(runtime_->limits_enforced());
  EXPECT_THAT(runtime_->limits_note(), HasSubstr("NOT enforced"));
  SandboxSpec spec = MakeSpec(Id('w'), R"(
trap '' TERM
(trap '' TERM; exec sleep 1002) &
(trap '' TERM; exec sleep 1003) &
echo up > /run/tidepool/ready
while :; do sleep 1; done
)");
  Run(spec, "ready");
  absl::StatusOr<SandboxStatus> status = runtime_->Status(spec.workspace_id);
  ASSERT_THAT(status, IsOk());
  ASSERT_EQ(status->phase, SandboxPhase::kRunning);
  ASSERT_TRUE(WaitUntil([] {
    return HostProcessesRunning("sleep 1002") == 1 && HostProcessesRunning("sleep 1003") == 1;
  }));
  absl::StatusOr<SandboxUsage> usage = runtime_->Usage(spec.workspace_id);
  ASSERT_THAT(usage, IsOk());
  EXPECT_GE(usage->processes, 5);  // outer bwrap, init, the shell, two sleeps
  runtime_.reset();
  OpenRuntime();
  ASSERT_NE(runtime_, nullptr);
  EXPECT_EQ(runtime_->Status(spec.workspace_id)->pid, status->pid);
  ASSERT_THAT(runtime_->Stop(spec.workspace_id, absl::Milliseconds(200)), IsOk());
  EXPECT_FALSE(ProcessAlive(status->pid));
  // Nothing of the sandbox survives: its sleeps are gone from the host's process table.
  EXPECT_EQ(HostProcessesRunning("sleep 1002"), 0);
  EXPECT_EQ(HostProcessesRunning("sleep 1003"), 0);
  EXPECT_EQ(runtime_->Status(spec.workspace_id)->last_exit_code, 128 + SIGKILL);
}

}  // namespace
}  // namespace tidepool::provisioner
