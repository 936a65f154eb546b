// The provisioner's lifecycle with the real pieces: the bubblewrap runtime, the real
// tidepool-supervisor binary as each sandbox's entry process, and the shell profile.
#include "services/provisioner/workspace_manager.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <utility>

#include <boost/asio/buffers_iterator.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "nlohmann/json.hpp"
#include "gtest/gtest.h"
#include "google/protobuf/util/json_util.h"
#include "lib/crypto/crypto.h"
#include "lib/workspace_credential.h"
#include "services/provisioner/local_runtime.h"
#include "lib/supervisor_client.h"
#include "tidepool/supervisor/v1/supervisor_service.pb.h"
#include "tests/testing/recording_audit.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/terminal_client.h"

namespace tidepool::provisioner {
namespace {

using ::testing::HasSubstr;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::ReadFileOrEmpty;
using ::tidepool::testing::StatusIs;
namespace commonpb = ::tidepool::common::v1;
namespace supervisorpb = ::tidepool::supervisor::v1;

constexpr char kAlice[] = "u_aaaaaaaaaaaaaaaaaaaaaaaaaa";
constexpr char kBob[] = "u_bbbbbbbbbbbbbbbbbbbbbbbbbb";

class WorkspaceManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<SqliteDb>> db =
        SqliteDb::Open(tmp_.Join("p.db"), SqliteOptions{});
    ASSERT_THAT(db, IsOk());
    db_ = *std::move(db);
    absl::StatusOr<std::unique_ptr<WorkspaceStore>> store = WorkspaceStore::Open(*db_, clock_);
    ASSERT_THAT(store, IsOk());
    store_ = *std::move(store);
    absl::StatusOr<std::map<std::string, ToolProfile>> profiles =
        LoadProfiles(std::string(TIDEPOOL_SOURCE_DIR) + "/profiles");
    ASSERT_THAT(profiles, IsOk());
    options_.dir = tmp_.Join("provisioner");
    options_.supervisor_binary = std::string(TIDEPOOL_BINARY_DIR) + "/tidepool-supervisor";
    options_.profiles = *profiles;
    options_.platform_key = std::string(32, 'k');
    options_.limits.memory_bytes = 256 << 20;
    options_.limits.pids = 64;
    options_.stop_grace = absl::Seconds(2);
    StartManager();
  }

  void TearDown() override {
    if (HasFailure()) {
      // The sandboxes' and the tools' logs, to see why.
      std::error_code ec;
      for (const std::string dir : {"provisioner/runtime/logs", "provisioner/volumes"}) {
        for (const auto& entry : std::filesystem::directory_iterator(tmp_.Join(dir), ec)) {
          const std::string path = entry.is_directory()
                                       ? entry.path().string() + "/.tidepool/logs/tool.log"
                                       : entry.path().string();
          std::ifstream in(path);
          if (in) std::cerr << "--- " << path << "\n" << in.rdbuf() << "\n";
        }
      }
    }
    if (manager_ == nullptr) return;
    // Stop the workers first (one could otherwise start a sandbox after it was deleted), then
    // leave no sandbox behind.
    manager_->Stop();
    absl::StatusOr<std::vector<WorkspaceRecord>> live = store_->ListLive();
    if (live.ok()) {
      for (const WorkspaceRecord& w : *live) (void)runtime_->Delete(w.workspace_id);
    }
  }

  void StartManager() {
    manager_.reset();
    runtime_.reset();
    LocalRuntimeOptions runtime_options;
    runtime_options.state_dir = tmp_.Join("provisioner/runtime");
    // As a root provisioner runs them with provisioner.sandbox_user.
    runtime_options.sandbox_host_uid = sandbox_host_uid_;
    runtime_options.sandbox_host_gid = sandbox_host_uid_;
    options_.sandbox_gid = sandbox_host_uid_;
    absl::StatusOr<std::unique_ptr<LocalRuntime>> runtime = LocalRuntime::Open(runtime_options);
    ASSERT_THAT(runtime, IsOk());
    runtime_ = *std::move(runtime);
    manager_ = std::make_unique<WorkspaceManager>(options_, *store_, *runtime_, clock_, &audit_);
    ASSERT_THAT(manager_->Start(), IsOk());
  }

  WorkspaceRecord EnsureRunning(const std::string& owner, const std::string& profile = "") {
    absl::StatusOr<EnsureOutcome> outcome = manager_->Ensure(owner, profile, "Europe/Berlin");
    EXPECT_THAT(outcome, IsOk());
    if (!outcome.ok()) return {};
    absl::StatusOr<WorkspaceRecord> settled =
        manager_->AwaitSettled(outcome->workspace.workspace_id, absl::Now() + absl::Seconds(30));
    EXPECT_THAT(settled, IsOk());
    EXPECT_EQ(settled->state, commonpb::WORKSPACE_STATE_RUNNING) << settled->state_reason;
    return *settled;
  }

  // Types `command` into a terminal of the workspace (a shell inside its sandbox) and returns
  // the terminal's output once it contains `until` (or after 10 s).
  std::string RunInTerminal(const std::string& workspace_id, const std::string& command,
                            const std::string& until) {
    absl::StatusOr<Endpoint> endpoint = manager_->GetEndpoint(workspace_id, "proxy");
    EXPECT_THAT(endpoint, IsOk());
    if (!endpoint.ok()) return "";
    // A new session each time: re-attaching would replay the last one's output.
    return tidepool::testing::RunInTerminal(endpoint->unix_socket_path, endpoint->credential,
                                            absl::StrCat("t", ++terminal_sessions_), command,
                                            until);
  }

  int Status(const std::string& id, const std::string& credential) {
    absl::StatusOr<SupervisorReply> reply = PostToSupervisor(
        manager_->SocketPath(id), "/_tidepool/v1/GetStatus", credential, "{}", absl::Seconds(5));
    return reply.ok() ? reply->status : -1;
  }

  tidepool::testing::ScopedTempDir tmp_;
  RealClock clock_;
  tidepool::testing::RecordingAudit audit_;
  int sandbox_host_uid_ = -1;  // also the gid
  int terminal_sessions_ = 0;
  std::unique_ptr<SqliteDb> db_;
  std::unique_ptr<WorkspaceStore> store_;
  WorkspaceManagerOptions options_;
  std::unique_ptr<LocalRuntime> runtime_;
  std::unique_ptr<WorkspaceManager> manager_;
};

TEST_F(WorkspaceManagerTest, EnsureEndsWithARunningSupervisorThatChecksCredentials) {
  const absl::Time start = absl::Now();
  WorkspaceRecord workspace = EnsureRunning(kAlice);
  std::cerr << "ensure -> supervisor ready: " << absl::FormatDuration(absl::Now() - start) << "\n";
  absl::StatusOr<Endpoint> endpoint = manager_->GetEndpoint(workspace.workspace_id, "proxy");
  ASSERT_THAT(endpoint, IsOk());
  EXPECT_EQ(Status(workspace.workspace_id, endpoint->credential), 200);
  // Another workspace's credential, a forged one, an expired one and none are refused.
  const std::string key = DeriveWorkspaceKey(options_.platform_key, workspace.workspace_id);
  EXPECT_EQ(
      Status(workspace.workspace_id, MintWorkspaceCredential(key, workspace.workspace_id, "proxy",
                                                             absl::Now() - absl::Seconds(1))),
      401);
  EXPECT_EQ(Status(workspace.workspace_id,
                   MintWorkspaceCredential(std::string(32, 'x'), workspace.workspace_id, "proxy",
                                           absl::Now() + absl::Minutes(1))),
            401);
  EXPECT_EQ(Status(workspace.workspace_id, ""), 401);
  // The status reports the sandbox's processes and the volume's use against its quota.
  absl::StatusOr<SupervisorReply> status = PostToSupervisor(
      manager_->SocketPath(workspace.workspace_id), "/_tidepool/v1/GetStatus",
      endpoint->credential, "{}", absl::Seconds(5));
  ASSERT_THAT(status, IsOk());
  EXPECT_THAT(status->body, HasSubstr("\"pidCount\":"));
  EXPECT_THAT(status->body, HasSubstr("\"memoryBytes\":"));
  EXPECT_THAT(status->body, HasSubstr("\"diskQuotaBytes\":\"10737418240\""));
  // The stamped config is there, read-only to the workspace.
  std::ifstream stamped(
      tmp_.Join("provisioner/stamps/" + workspace.workspace_id + "/workspace.json"));
  std::string text((std::istreambuf_iterator<char>(stamped)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr(workspace.workspace_id));
  EXPECT_THAT(text, HasSubstr("Europe/Berlin"));
}

TEST_F(WorkspaceManagerTest, TheTerminalIsAShellInsideTheSandbox) {
  WorkspaceRecord workspace = EnsureRunning(kAlice);
  EXPECT_THAT(RunInTerminal(workspace.workspace_id,
                            "echo uid=$(id -u) home=$HOME x=$((6*7)); ls /root 2>&1 | head -1\n",
                            "x=42"),
              HasSubstr("uid=1000 home=/home/user x=42"));
}

TEST_F(WorkspaceManagerTest, TheFileApiWorksOnTheVolumeAndNothingElse) {
  WorkspaceRecord workspace = EnsureRunning(kAlice);
  absl::StatusOr<Endpoint> endpoint = manager_->GetEndpoint(workspace.workspace_id, "proxy");
  ASSERT_THAT(endpoint, IsOk());
  auto call = [&](const std::string& method, const std::string& body) {
    absl::StatusOr<SupervisorReply> reply =
        PostToSupervisor(endpoint->unix_socket_path, "/_tidepool/v1/" + method,
                         endpoint->credential, body, absl::Seconds(10));
    EXPECT_THAT(reply, IsOk());
    return reply.ok() ? *reply : SupervisorReply{};
  };
  SupervisorReply made = call("MakeDirectory", R"({"path":"projects/app","parents":true})");
  EXPECT_EQ(made.status, 200) << made.body;
  EXPECT_TRUE(std::filesystem::is_directory(manager_->VolumeDir(workspace.workspace_id) +
                                            "/projects/app"));
  SupervisorReply listed = call("ListFiles", R"({"path":"projects"})");
  EXPECT_EQ(listed.status, 200) << listed.body;
  EXPECT_THAT(listed.body, HasSubstr("\"app\""));
  EXPECT_EQ(call("ListFiles", R"({"path":"../../etc"})").status, 400);
  EXPECT_EQ(call("StatFile", R"({"path":"nope"})").status, 404);
  EXPECT_EQ(call("ListFiles", R"({"path":"projects","bogus":1})").status, 400);

  // Upload in two chunks of over 1 MiB each (Content-Length bodies; the second resumes at the
  // received size), then download it back.
  const std::string socket = endpoint->unix_socket_path;
  std::string data;
  for (int i = 0; i < 5000000; ++i) data.push_back(static_cast<char>('a' + i % 26));
  const std::string base = "/_tidepool/v1/upload?upload_id=up1abcdefghijklmnop&path=projects%2Fapp%2Fdata.txt&total_size=5000000";
  absl::StatusOr<SupervisorReply> first = SendToSupervisor(
      socket, "PUT", base + "&offset=0", endpoint->credential, data.substr(0, 2000000), absl::Seconds(10));
  ASSERT_THAT(first, IsOk());
  EXPECT_EQ(first->status, 200) << first->body;
  absl::StatusOr<SupervisorReply> wrong = SendToSupervisor(
      socket, "PUT", base + "&offset=5", endpoint->credential, "x", absl::Seconds(10));
  ASSERT_THAT(wrong, IsOk());
  EXPECT_EQ(wrong->status, 409) << "a chunk must start at the received size";
  EXPECT_THAT(wrong->body, HasSubstr("2000000"));
  absl::StatusOr<SupervisorReply> second = SendToSupervisor(
      socket, "PUT", base + "&offset=2000000", endpoint->credential, data.substr(2000000), absl::Seconds(10));
  ASSERT_THAT(second, IsOk());
  EXPECT_EQ(second->status, 200) << second->body;
  std::ifstream stored(manager_->VolumeDir(workspace.workspace_id) + "/projects/app/data.txt",
                       std::ios::binary);
  std::string on_disk((std::istreambuf_iterator<char>(stored)), std::istreambuf_iterator<char>());
  EXPECT_EQ(on_disk, data);
  absl::StatusOr<SupervisorReply> download = SendToSupervisor(
      socket, "GET", "/_tidepool/v1/download?path=projects/app/data.txt", endpoint->credential, "",
      absl::Seconds(10));
  ASSERT_THAT(download, IsOk());
  EXPECT_EQ(download->status, 200);
  EXPECT_EQ(download->body, data);
  absl::StatusOr<SupervisorReply> folder = SendToSupervisor(
      socket, "GET", "/_tidepool/v1/download?path=projects&format=tar.gz", endpoint->credential,
      "", absl::Seconds(10));
  ASSERT_THAT(folder, IsOk());
  EXPECT_EQ(folder->status, 200);
  EXPECT_GT(folder->body.size(), 100u);
  EXPECT_EQ(folder->body.substr(0, 2), std::string("\x1f\x8b", 2)) << "gzip magic";
  absl::StatusOr<SupervisorReply> missing = SendToSupervisor(
      socket, "GET", "/_tidepool/v1/download?path=nope", endpoint->credential, "", absl::Seconds(10));
  ASSERT_THAT(missing, IsOk());
  EXPECT_EQ(missing->status, 404);
}

// Issue #7's acceptance through the real socket: upload (one Content-Length chunk) and download
// give back every byte at 0 B, 1 B and 100 MB.
TEST_F(WorkspaceManagerTest, UploadAndDownloadAreByteForByteAtZeroOneAndHundredMegabytes) {
  WorkspaceRecord workspace = EnsureRunning(kAlice);
  absl::StatusOr<Endpoint> endpoint = manager_->GetEndpoint(workspace.workspace_id, "proxy");
  ASSERT_THAT(endpoint, IsOk());
  for (const size_t size : {size_t{0}, size_t{1}, size_t{100} << 20}) {
    SCOPED_TRACE(size);
    std::string data(size, '\0');
    uint32_t x = 2463534242u;
    for (char& c : data) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      c = static_cast<char>(x);
    }
    const std::string name = absl::StrCat("blob-", size);
    absl::StatusOr<SupervisorReply> put = SendToSupervisor(
        endpoint->unix_socket_path, "PUT",
        absl::StrCat("/_tidepool/v1/upload?upload_id=", "up", size, "abcdefghijklmnopqrstu",
                     "&path=", name, "&offset=0&total_size=", size),
        endpoint->credential, data, absl::Seconds(60));
    ASSERT_THAT(put, IsOk());
    EXPECT_EQ(put->status, 200) << put->body;
    EXPECT_THAT(put->body, HasSubstr("\"complete\":true"));
    absl::StatusOr<SupervisorReply> got = SendToSupervisor(
        endpoint->unix_socket_path, "GET", "/_tidepool/v1/download?path=" + name,
        endpoint->credential, "", absl::Seconds(60));
    ASSERT_THAT(got, IsOk());
    EXPECT_EQ(got->status, 200);
    EXPECT_EQ(got->body.size(), size);
    EXPECT_TRUE(got->body == data) << "the downloaded bytes differ";
  }
}

TEST_F(WorkspaceManagerTest, GitCloneUsesTheRealGitInsideTheSandboxAndStreamsProgress) {
  WorkspaceRecord workspace = EnsureRunning(kAlice);
  absl::StatusOr<Endpoint> endpoint = manager_->GetEndpoint(workspace.workspace_id, "proxy");
  ASSERT_THAT(endpoint, IsOk());
  // A repository in the volume, made with the host's git.
  const std::string volume = manager_->VolumeDir(workspace.workspace_id);
  const std::string make = "cd " + volume +
                           " && git init -q -b main src && cd src && echo hello > README.md && "
                           "git -c user.name=t -c user.email=t@example.org add README.md && "
                           "git -c user.name=t -c user.email=t@example.org commit -q -m first";
  ASSERT_EQ(std::system(make.c_str()), 0);
  auto clone = [&](const std::string& body) {
    absl::StatusOr<SupervisorReply> reply = SendToSupervisor(
        endpoint->unix_socket_path, "POST", "/_tidepool/v1/GitClone", endpoint->credential, body,
        absl::Seconds(30));
    EXPECT_THAT(reply, IsOk());
    return reply.ok() ? *reply : SupervisorReply{};
  };
  SupervisorReply done = clone(R"({"repositoryUrl":"src","destinationPath":"copy"})");
  EXPECT_EQ(done.status, 200) << done.body;
  EXPECT_THAT(done.body, HasSubstr("GIT_CLONE_PHASE_DONE"));
  std::ifstream readme(volume + "/copy/README.md");
  std::string text((std::istreambuf_iterator<char>(readme)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "hello\n");
  EXPECT_EQ(clone(R"({"repositoryUrl":"src","destinationPath":"copy"})").status, 409);
  EXPECT_EQ(clone(R"({"repositoryUrl":"https://user:token@github.com/a/b"})").status, 400);
  EXPECT_EQ(clone(R"({"repositoryUrl":"ssh://github.com/a/b"})").status, 400);
  EXPECT_EQ(clone(R"({"repositoryUrl":"--upload-pack=x"})").status, 400);
  EXPECT_EQ(clone(R"({"repositoryUrl":"nothing-here"})").status, 404);
  // No network but loopback: a remote clone fails cleanly and leaves nothing behind.
  SupervisorReply remote = clone(R"({"repositoryUrl":"https://github.com/git/git","destinationPath":"git"})");
  // (git reported progress first, so the error is the stream's last line.)
  EXPECT_THAT(remote.body, HasSubstr("\"code\":\"UNAVAILABLE\"")) << remote.body;
  EXPECT_THAT(remote.body, ::testing::Not(HasSubstr("GIT_CLONE_PHASE_DONE")));
  EXPECT_FALSE(std::filesystem::exists(volume + "/git"));
}

TEST_F(WorkspaceManagerTest, FiftyConcurrentEnsureAndWakeCallsYieldOneSandbox) {
  std::vector<std::thread> threads;
  std::atomic<int> created{0};
  for (int i = 0; i < 50; ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<EnsureOutcome> outcome = manager_->Ensure(kAlice, "", "");
      ASSERT_THAT(outcome, IsOk());
      if (outcome->created) ++created;
      if (i % 2 == 0) {
        (void)manager_->Wake(outcome->workspace.workspace_id, absl::InfinitePast());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(created.load(), 1);
  WorkspaceRecord workspace = EnsureRunning(kAlice);
  absl::StatusOr<std::vector<std::string>> sandboxes = runtime_->List();
  ASSERT_THAT(sandboxes, IsOk());
  EXPECT_THAT(*sandboxes, ::testing::ElementsAre(workspace.workspace_id));
}

TEST_F(WorkspaceManagerTest, SleepThenWakeKeepsEveryFileAndTheProvisionerRestartReadopts) {
  WorkspaceRecord workspace = EnsureRunning(kAlice);
  const std::string file = manager_->VolumeDir(workspace.workspace_id) + "/notes.bin";
  std::string bytes;
  for (int i = 0; i < 100000; ++i) bytes.push_back(static_cast<char>((i * 7919) & 0xff));
  {
    std::ofstream out(file, std::ios::binary);
    out << bytes;
  }
  absl::StatusOr<WorkspaceRecord> asleep =
      manager_->Sleep(workspace.workspace_id, "idle_timeout", absl::Now() + absl::Seconds(20));
  ASSERT_THAT(asleep, IsOk());
  EXPECT_EQ(asleep->state, commonpb::WORKSPACE_STATE_SLEEPING);
  EXPECT_EQ(Status(workspace.workspace_id, "x"), -1) << "nothing listens while asleep";
  const absl::Time wake_start = absl::Now();
  absl::StatusOr<WorkspaceRecord> awake =
      manager_->Wake(workspace.workspace_id, absl::Now() + absl::Seconds(30));
  ASSERT_THAT(awake, IsOk());
  EXPECT_EQ(awake->state, commonpb::WORKSPACE_STATE_RUNNING);
  std::cerr << "wake -> supervisor ready: " << absl::FormatDuration(absl::Now() - wake_start)
            << "\n";
  std::ifstream in(file, std::ios::binary);
  std::string read((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(read, bytes);

  // A provisioner restart re-adopts the running sandbox instead of starting another.
  absl::StatusOr<SandboxStatus> before = runtime_->Status(workspace.workspace_id);
  ASSERT_THAT(before, IsOk());
  manager_->Stop();
  StartManager();
  absl::StatusOr<WorkspaceRecord> settled =
      manager_->AwaitSettled(workspace.workspace_id, absl::Now() + absl::Seconds(30));
  ASSERT_THAT(settled, IsOk());
  EXPECT_EQ(settled->state, commonpb::WORKSPACE_STATE_RUNNING);
  absl::StatusOr<SandboxStatus> after = runtime_->Status(workspace.workspace_id);
  ASSERT_THAT(after, IsOk());
  EXPECT_EQ(after->pid, before->pid);
}

TEST_F(WorkspaceManagerTest, SuspensionStopsAndHoldsUntilReinstated) {
  WorkspaceRecord workspace = EnsureRunning(kBob);
  ASSERT_THAT(manager_->SetOwnerSuspended(kBob, true, "left the company"), IsOk());
  absl::StatusOr<WorkspaceRecord> held =
      manager_->AwaitSettled(workspace.workspace_id, absl::Now() + absl::Seconds(20));
  ASSERT_THAT(held, IsOk());
  EXPECT_EQ(held->state, commonpb::WORKSPACE_STATE_SUSPENDED);
  EXPECT_THAT(manager_->Ensure(kBob, "", "").status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(manager_->Wake(workspace.workspace_id, absl::InfinitePast()).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_THAT(manager_->SetOwnerSuspended(kBob, false, ""), IsOk());
  absl::StatusOr<WorkspaceRecord> released =
      manager_->AwaitSettled(workspace.workspace_id, absl::Now() + absl::Seconds(20));
  ASSERT_THAT(released, IsOk());
  EXPECT_EQ(released->state, commonpb::WORKSPACE_STATE_SLEEPING);
}

// The host pid of the supervisor inside `workspace_id`'s sandbox (a descendant of the
// sandbox's outermost process), or 0.
pid_t SupervisorPid(Runtime& runtime, const std::string& workspace_id) {
  absl::StatusOr<SandboxStatus> sandbox = runtime.Status(workspace_id);
  if (!sandbox.ok() || sandbox->pid <= 0) return 0;
  auto parent_of = [](pid_t pid, std::string* comm) -> pid_t {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos) return 0;
    *comm = stat.substr(open + 1, close - open - 1);
    std::istringstream rest(stat.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    return ppid;
  };
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = std::stoi(name);
    std::string comm;
    pid_t up = parent_of(pid, &comm);
    if (comm != "tidepool-superv") continue;
    for (int depth = 0; up > 1 && depth < 8; ++depth) {
      if (up == sandbox->pid) return pid;
      std::string ignored;
      up = parent_of(up, &ignored);
    }
  }
  return 0;
}

// SECURITY-TESTS.md #80: a supervisor that stops answering (SIGSTOPped, as the tool could do
// to freeze its guard) or is killed (taking its sandbox with it) is noticed by the
// provisioner's heartbeat, audited, and the workspace is restarted with a fresh supervisor.
class SupervisorHeartbeatTest : public WorkspaceManagerTest,
                                public ::testing::WithParamInterface<int> {};

TEST_P(SupervisorHeartbeatTest, IsNoticedAuditedAndTheWorkspaceRestarted) {
  const int signal = GetParam();
  manager_->Stop();
  options_.guard_poll_interval = absl::Milliseconds(100);
  StartManager();
  WorkspaceRecord workspace = EnsureRunning(kAlice);
  const pid_t frozen = SupervisorPid(*runtime_, workspace.workspace_id);
  ASSERT_GT(frozen, 0);
  if (signal == 0) {
    // The whole sandbox goes: SIGKILL to its pid namespace's init (the supervisor's parent).
    std::ifstream in("/proc/" + std::to_string(frozen) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::istringstream rest(stat.substr(stat.rfind(')') + 2));
    std::string state;
    pid_t init = 0;
    rest >> state >> init;
    ASSERT_GT(init, 1);
    ASSERT_EQ(::kill(init, SIGKILL), 0);
  } else {
    ASSERT_EQ(::kill(frozen, signal), 0);
  }
  auto unresponsive = [&] {
    // Killed, the supervisor may leave the sandbox running a moment (its tool orphaned) or
    // take it down: either way it is noticed.
    for (const commonpb::AuditEvent& event : audit_.Events()) {
      if ((signal != 0 && event.action() == "workspace.supervisor_unresponsive") ||
          (signal != SIGSTOP && event.action() == "workspace.sandbox_exited")) {
        return true;
      }
    }
    return false;
  };
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!unresponsive() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(50));
  ASSERT_TRUE(unresponsive()) << ::testing::PrintToString(audit_.Actions());
  // The restart follows the audit event: a new supervisor answers.
  pid_t fresh = 0;
  int answer = -1;
  while (absl::Now() < deadline && answer != 200) {
    absl::SleepFor(absl::Milliseconds(50));
    fresh = SupervisorPid(*runtime_, workspace.workspace_id);
    absl::StatusOr<Endpoint> endpoint = manager_->GetEndpoint(workspace.workspace_id, "proxy");
    if (fresh > 0 && fresh != frozen && endpoint.ok()) {
      answer = Status(workspace.workspace_id, endpoint->credential);
    }
  }
  EXPECT_EQ(answer, 200);
  EXPECT_NE(fresh, frozen);
  absl::StatusOr<WorkspaceRecord> settled =
      manager_->AwaitSettled(workspace.workspace_id, absl::Now() + absl::Seconds(30));
  ASSERT_THAT(settled, IsOk());
  EXPECT_EQ(settled->state, commonpb::WORKSPACE_STATE_RUNNING);
  ::kill(frozen, SIGKILL);  // in case it outlived its sandbox
}

// SIGSTOP or SIGKILL to the supervisor; 0: the whole sandbox killed.
INSTANTIATE_TEST_SUITE_P(StoppedOrKilled, SupervisorHeartbeatTest,
                         ::testing::Values(SIGSTOP, SIGKILL, 0));

// A stand-in for the platform's egress proxy on the socket the sandbox sees: it accepts one
// connection and, for each of `replies` in turn, reads a request head (through "\r\n\r\n")
// and answers with the reply.
class StandInEgressProxy {
 public:
  StandInEgressProxy(const std::string& socket_path, std::vector<std::string> replies)
      : acceptor_(io_, boost::asio::local::stream_protocol::endpoint(socket_path)),
        thread_([this, replies = std::move(replies)] { Serve(replies); }) {}
  ~StandInEgressProxy() { Finish(); }

  // Stops waiting for a connection, waits for the exchange to end, and returns the heads read,
  // in order (the first starts with the relay's preamble line).
  std::vector<std::string> Finish() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    if (thread_.joinable()) thread_.join();
    return heads_;
  }

 private:
  void Serve(const std::vector<std::string>& replies) {
    boost::asio::local::stream_protocol::socket socket(io_);
    boost::system::error_code ec;
    acceptor_.accept(socket, ec);
    boost::asio::streambuf buffer;
    for (const std::string& reply : replies) {
      if (ec) return;
      const size_t n = boost::asio::read_until(socket, buffer, "\r\n\r\n", ec);
      if (ec) return;
      std::string head(boost::asio::buffers_begin(buffer.data()),
                       boost::asio::buffers_begin(buffer.data()) + static_cast<std::ptrdiff_t>(n));
      buffer.consume(n);
      heads_.push_back(std::move(head));
      boost::asio::write(socket, boost::asio::buffer(reply), ec);
    }
  }

  boost::asio::io_context io_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::vector<std::string> heads_;
  std::thread thread_;  // last: it starts once the members above exist
};

// The sandbox's only way out: the tool's HTTP(S)_PROXY is the supervisor's relay, which answers
// 502 while the platform's egress proxy is not listening, and otherwise forwards each
// connection to its Unix socket behind a preamble naming the workspace (egress_relay.h).
TEST_F(WorkspaceManagerTest, TheOnlyWayOutIsTheRelayToTheEgressProxy) {
  WorkspaceRecord workspace = EnsureRunning(kAlice);
  const std::string fetch =
      "python3 -c \"import urllib.request as u\ntry: print('got', u.urlopen('http://example.test/"
      "x', timeout=10).read().decode())\nexcept Exception as e: print('failed', e)\"; echo do\"\"ne\n";
  EXPECT_THAT(RunInTerminal(workspace.workspace_id, fetch, "done\r\n"),
              HasSubstr("failed HTTP Error 502"));
  StandInEgressProxy proxy(manager_->EgressSocketDir() + "/egress.sock",
                           {"HTTP/1.1 200 OK\r\nContent-Length: 17\r\nConnection: close\r\n\r\n"
                            "hello-from-egress"});
  const std::string out = RunInTerminal(workspace.workspace_id, fetch, "done\r\n");
  const std::vector<std::string> heads = proxy.Finish();
  ASSERT_EQ(heads.size(), 1u);
  const std::string preamble = heads[0].substr(0, heads[0].find("\r\n"));
  const std::string request = heads[0].substr(heads[0].find("\r\n") + 2);
  EXPECT_THAT(out, HasSubstr("got hello-from-egress"));
  EXPECT_THAT(request, ::testing::StartsWith("GET http://example.test/x HTTP/1.1\r\n"));
  // The preamble names the workspace with a credential the platform can verify.
  ASSERT_THAT(preamble, ::testing::StartsWith("TIDEPOOL-EGRESS/1 "));
  absl::StatusOr<std::string> caller = VerifyWorkspaceCredential(
      DeriveWorkspaceKey(options_.platform_key, workspace.workspace_id), workspace.workspace_id,
      preamble.substr(std::string("TIDEPOOL-EGRESS/1 ").size()), absl::Now());
  ASSERT_THAT(caller, IsOk());
  EXPECT_EQ(*caller, "egress");
}

TEST_F(WorkspaceManagerTest, AModelServerOnTheHostsLoopbackIsReachedAtTheSameAddressInside) {
  manager_->Stop();
  options_.model_server_url = "http://127.0.0.1:18431/v1";
  StartManager();
  WorkspaceRecord workspace = EnsureRunning(kAlice);
  // The forward asks the egress proxy for a tunnel, then speaks through it.
  StandInEgressProxy proxy(
      manager_->EgressSocketDir() + "/egress.sock",
      {"HTTP/1.1 200 Connection established\r\n\r\n",
       "HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\nmodels-via-fwd"});
  const std::string out = RunInTerminal(
      workspace.workspace_id,
      "python3 -c \"import urllib.request as u\ntry: print('got', u.urlopen('http://127.0.0.1:18431/"
      "v1/models', timeout=10).read().decode())\nexcept Exception as e: print('failed', e)\"; "
      "echo do\"\"ne\n",
      "done\r\n");
  const std::vector<std::string> heads = proxy.Finish();
  ASSERT_EQ(heads.size(), 2u);
  const std::string preamble = heads[0].substr(0, heads[0].find("\r\n"));
  const std::string connect = heads[0].substr(heads[0].find("\r\n") + 2);
  const std::string request = heads[1];
  EXPECT_THAT(out, HasSubstr("got models-via-fwd"));
  EXPECT_THAT(connect, ::testing::StartsWith("CONNECT 127.0.0.1:18431 HTTP/1.1\r\n"));
  EXPECT_THAT(request, ::testing::StartsWith("GET /v1/models HTTP/1.1\r\n"));
  ASSERT_THAT(preamble, ::testing::StartsWith("TIDEPOOL-EGRESS/1 "));
}

TEST_F(WorkspaceManagerTest, UsageHasTheCpuRateAndHealthIsTheSupervisorsView) {
  WorkspaceRecord workspace = EnsureRunning(kAlice);
  EXPECT_EQ(manager_->Health(workspace), WorkspaceHealthView::kHealthy);
  // Idle: close to no CPU (a fresh sample pair is taken on the first call).
  absl::StatusOr<WorkspaceUsageSample> idle = manager_->Usage(workspace.workspace_id);
  ASSERT_THAT(idle, IsOk());
  EXPECT_LT(idle->cpu_millicores, 300);
  // A busy loop for 3 s: about one core over the next interval (the limit is one core).
  RunInTerminal(workspace.workspace_id,
                "(timeout 3 sh -c 'while :; do :; done' &) ; echo st\"\"arted\n", "started\r\n");
  absl::SleepFor(absl::Milliseconds(1500));
  absl::StatusOr<WorkspaceUsageSample> busy = manager_->Usage(workspace.workspace_id);
  ASSERT_THAT(busy, IsOk());
  EXPECT_GT(busy->cpu_millicores, 400) << "cpu seconds " << busy->usage.cpu_seconds;
  // A sleeping workspace has no health to report.
  ASSERT_THAT(manager_->Sleep(workspace.workspace_id, "idle", absl::Now() + absl::Seconds(20)),
              IsOk());
  absl::StatusOr<WorkspaceRecord> asleep = manager_->store().Get(workspace.workspace_id);
  ASSERT_THAT(asleep, IsOk());
  EXPECT_EQ(manager_->Health(*asleep), WorkspaceHealthView::kUnknown);
}

TEST_F(WorkspaceManagerTest, AProfileThatNeedsTheModelServerSaysSoWithoutOne) {
  ASSERT_TRUE(options_.model_server_url.empty());
  ASSERT_TRUE(options_.profiles.count("openclaw"));
  EXPECT_THAT(manager_->Ensure(kAlice, "openclaw", "UTC"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("model_server.base_url")));
  EXPECT_THAT(manager_->store().GetByOwner(kAlice),
              ::tidepool::testing::IsOkAndHolds(::testing::Eq(std::nullopt)))
      << "nothing is created";
}

TEST_F(WorkspaceManagerTest, DeleteRemovesTheSandboxAndTheVolume) {
  WorkspaceRecord workspace = EnsureRunning(kAlice);
  absl::StatusOr<WorkspaceRecord> deleted =
      manager_->Delete(workspace.workspace_id, absl::Now() + absl::Seconds(20));
  ASSERT_THAT(deleted, IsOk());
  EXPECT_EQ(deleted->state, commonpb::WORKSPACE_STATE_DELETED);
  EXPECT_FALSE(std::filesystem::exists(manager_->VolumeDir(workspace.workspace_id)));
  EXPECT_THAT(manager_->GetEndpoint(workspace.workspace_id, "proxy").status(),
              StatusIs(absl::StatusCode::kNotFound));
  // The owner can get a fresh workspace afterwards.
  WorkspaceRecord fresh = EnsureRunning(kAlice);
  EXPECT_NE(fresh.workspace_id, workspace.workspace_id);
}

// Stands in for the secrets service (an internal seam; the real service is tested on its own).
class FakeSecrets final : public SecretsSource {
 public:
  absl::StatusOr<std::vector<WorkspaceSecret>> Resolve(const std::string&, const std::string&,
                                                       const std::string&) override {
    absl::MutexLock lock(&mu_);
    return secrets_;
  }
  void Set(std::vector<WorkspaceSecret> secrets) {
    absl::MutexLock lock(&mu_);
    secrets_ = std::move(secrets);
  }

 private:
  absl::Mutex mu_;
  std::vector<WorkspaceSecret> secrets_ ABSL_GUARDED_BY(mu_);
};

WorkspaceSecret Key(const std::string& provider, const std::string& value,
                    std::vector<std::string> env, std::vector<std::string> config, bool reloadable) {
  WorkspaceSecret secret;
  secret.provider_id = provider;
  secret.field_id = "api_key";
  secret.value = value;
  secret.env_vars = std::move(env);
  secret.config_entries = std::move(config);
  secret.applies_without_restart = reloadable;
  return secret;
}

class WorkspaceSecretsTest : public WorkspaceManagerTest {
 protected:
  void SetUp() override {
    absl::StatusOr<std::map<std::string, ToolProfile>> extra =
        LoadProfiles(std::string(TIDEPOOL_SOURCE_DIR) + "/tests/provisioner/profiles");
    ASSERT_THAT(extra, IsOk());
    WorkspaceManagerTest::SetUp();
    manager_->Stop();
    options_.profiles.insert(extra->begin(), extra->end());
    options_.default_profile = "envdump";
    options_.secrets = &secrets_;
    options_.guard_poll_interval = absl::Milliseconds(100);
    StartManager();
  }

  // The tool's environment as it last wrote it, once it contains `needle`.
  std::string EnvOnceContains(const std::string& id, const std::string& needle) {
    const absl::Time deadline = absl::Now() + absl::Seconds(15);
    std::string text;
    while (absl::Now() < deadline) {
      std::ifstream in(manager_->VolumeDir(id) + "/env.txt");
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      if (text.find(needle) != std::string::npos) return text;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return text;
  }

  FakeSecrets secrets_;
};

TEST_F(WorkspaceSecretsTest, KeysReachTheToolAndAChangeRestartsItOnlyWhenItMust) {
  secrets_.Set({Key("anthropic", "sk-ant-first-value-000000", {"ANTHROPIC_API_KEY"}, {}, false)});
  WorkspaceRecord workspace = EnsureRunning(kAlice);
  EXPECT_THAT(EnvOnceContains(workspace.workspace_id, "ANTHROPIC_API_KEY=sk-ant-first"),
              HasSubstr("ANTHROPIC_API_KEY=sk-ant-first-value-000000"));
  // The key reached the tool, not the supervisor's or bwrap's command line.
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::ifstream cmdline(entry.path() / "cmdline");
    std::string text((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
    EXPECT_THAT(text, ::testing::Not(HasSubstr("sk-ant-first"))) << entry.path();
  }
  // A changed key that needs a restart: the tool is restarted and sees it.
  secrets_.Set({Key("anthropic", "sk-ant-second-value-00000", {"ANTHROPIC_API_KEY"}, {}, false)});
  ASSERT_THAT(manager_->OnSecretsChanged(kAlice), IsOk());
  EXPECT_THAT(EnvOnceContains(workspace.workspace_id, "sk-ant-second"),
              HasSubstr("ANTHROPIC_API_KEY=sk-ant-second-value-00000"));
  // A key the tool reloads on its own (a config entry): stamped, no restart.
  std::filesystem::remove(manager_->VolumeDir(workspace.workspace_id) + "/env.txt");
  secrets_.Set({Key("anthropic", "sk-ant-second-value-00000", {"ANTHROPIC_API_KEY"}, {}, false),
                Key("brave", "BSA-brave-key-0000000000", {}, {"plugins.entries.brave.apiKey"}, true)});
  ASSERT_THAT(manager_->OnSecretsChanged(kAlice), IsOk());
  std::ifstream config(tmp_.Join("provisioner/secrets/" + workspace.workspace_id + "/config.json"));
  std::string text((std::istreambuf_iterator<char>(config)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr("BSA-brave-key"));
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_FALSE(std::filesystem::exists(manager_->VolumeDir(workspace.workspace_id) + "/env.txt"))
      << "the tool was restarted although nothing it needs a restart for changed";
  // Asleep, the keys are not on disk; awake again, they are stamped again.
  const std::string env_file = tmp_.Join("provisioner/secrets/" + workspace.workspace_id + "/env");
  ASSERT_THAT(manager_->Sleep(workspace.workspace_id, "idle", absl::Now() + absl::Seconds(20)), IsOk());
  EXPECT_FALSE(std::filesystem::exists(env_file));
  ASSERT_THAT(manager_->Wake(workspace.workspace_id, absl::Now() + absl::Seconds(30)), IsOk());
  EXPECT_TRUE(std::filesystem::exists(env_file));
  // A removed key leaves the environment (the restarted tool writes its file anew; the one
  // from the wake is removed first so that it is not mistaken for the new one).
  EXPECT_THAT(EnvOnceContains(workspace.workspace_id, "ANTHROPIC_API_KEY"),
              HasSubstr("ANTHROPIC_API_KEY"));
  std::filesystem::remove(manager_->VolumeDir(workspace.workspace_id) + "/env.txt");
  secrets_.Set({});
  ASSERT_THAT(manager_->OnSecretsChanged(kAlice), IsOk());
  const std::string after = EnvOnceContains(workspace.workspace_id, "PATH=");
  EXPECT_THAT(after, ::testing::Not(HasSubstr("ANTHROPIC_API_KEY")));
}

TEST_F(WorkspaceSecretsTest, TheProfileIsRenderedForItsOwnerAndRestampedWhenTheirKeysChange) {
  manager_->Stop();
  options_.model_server_url = "http://10.0.0.5:8000/v1";
  options_.model_server_model = "tiny-instruct";
  options_.public_origin = "https://tidepool.example.com";
  StartManager();
  secrets_.Set({Key("anthropic", "sk-ant-first-value-000000", {"ANTHROPIC_API_KEY"}, {}, false)});
  auto running = [&](const std::string& owner) {
    absl::StatusOr<EnsureOutcome> outcome = manager_->Ensure(owner, "stampvars", "Asia/Tokyo");
    EXPECT_THAT(outcome, IsOk());
    absl::StatusOr<WorkspaceRecord> settled = manager_->AwaitSettled(
        outcome->workspace.workspace_id, absl::Now() + absl::Seconds(30));
    EXPECT_THAT(settled, IsOk());
    return *settled;
  };
  const WorkspaceRecord alice = running(kAlice);
  ASSERT_EQ(alice.state, commonpb::WORKSPACE_STATE_RUNNING);
  // The copy the guard installed in the volume, once it says `needle`.
  auto installed = [&](const std::string& id, const std::string& needle) {
    std::string text;
    const absl::Time deadline = absl::Now() + absl::Seconds(15);
    while (absl::Now() < deadline) {
      std::ifstream in(manager_->VolumeDir(id) + "/.config/stampvars.json");
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      if (text.find(needle) != std::string::npos) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return nlohmann::json::parse(text, nullptr, false);
  };
  nlohmann::json seen = installed(alice.workspace_id, "anthropic");
  ASSERT_TRUE(seen.is_object());
  EXPECT_EQ(seen["owner"], kAlice);
  EXPECT_EQ(seen["tz"], "Asia/Tokyo");
  EXPECT_EQ(seen["model"]["url"], "http://10.0.0.5:8000/v1");
  EXPECT_EQ(seen["model"]["name"], "tiny-instruct");
  EXPECT_EQ(seen["capabilities"], nlohmann::json::array({"anthropic"}));
  const std::string token = seen["token"];
  EXPECT_EQ(token.size(), 64u);
  // Each workspace has its own tool credential.
  const WorkspaceRecord bob = running(kBob);
  EXPECT_NE(installed(bob.workspace_id, "token")["token"], token);
  // A new key unlocks a capability: the file is stamped again and the guard installs it.
  secrets_.Set({Key("anthropic", "sk-ant-first-value-000000", {"ANTHROPIC_API_KEY"}, {}, false),
                Key("brave", "BSA-brave-key-0000000000", {}, {"plugins.entries.brave.apiKey"}, true)});
  ASSERT_THAT(manager_->OnSecretsChanged(kAlice), IsOk());
  seen = installed(alice.workspace_id, "brave");
  EXPECT_EQ(seen["capabilities"], nlohmann::json::array({"anthropic", "brave"}));
  EXPECT_EQ(seen["token"], token) << "the tool credential is stable across stamps";
  EXPECT_EQ(seen["origin"], "https://tidepool.example.com");
  EXPECT_EQ(seen["egress"], "http://127.0.0.1:3128");
  // merge_keys: the config-entry key is set at its dotted path, next to what the template says.
  auto merged = [&](const std::string& needle) {
    std::string text;
    const absl::Time deadline = absl::Now() + absl::Seconds(15);
    while (absl::Now() < deadline) {
      std::ifstream in(manager_->VolumeDir(alice.workspace_id) + "/.config/merged.json");
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      if (text.find(needle) != std::string::npos) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return nlohmann::json::parse(text, nullptr, false);
  };
  nlohmann::json config = merged("BSA-brave-key-0000000000");
  ASSERT_TRUE(config.is_object());
  // The original with the keys is the platform's alone on the host.
  const std::string stamps = tmp_.Join("provisioner/stamps/" + alice.workspace_id);
  EXPECT_EQ(std::filesystem::status(stamps).permissions(), std::filesystem::perms::owner_all);
  EXPECT_EQ(std::filesystem::status(stamps + "/merged.json").permissions() &
                (std::filesystem::perms::group_all | std::filesystem::perms::others_all),
            std::filesystem::perms::none);
  EXPECT_EQ(config["plugins"]["entries"]["brave"]["apiKey"], "BSA-brave-key-0000000000");
  EXPECT_EQ(config["plugins"]["entries"]["memory"]["enabled"], true);
  EXPECT_EQ(config["kept"], alice.workspace_id);
  // A new value for the same key (no new capability) is stamped too.
  secrets_.Set({Key("anthropic", "sk-ant-first-value-000000", {"ANTHROPIC_API_KEY"}, {}, false),
                Key("brave", "BSA-brave-key-1111111111", {}, {"plugins.entries.brave.apiKey"}, true)});
  ASSERT_THAT(manager_->OnSecretsChanged(kAlice), IsOk());
  EXPECT_EQ(merged("BSA-brave-key-1111111111")["plugins"]["entries"]["brave"]["apiKey"],
            "BSA-brave-key-1111111111");
  // Env values are templates too (read from inside the sandbox).
  EXPECT_THAT(RunInTerminal(alice.workspace_id,
                            "tr '\\0' '\\n' < /proc/$(pgrep -x sleep | head -1)/environ | "
                            "grep STAMPED_ORIGIN; echo do\"\"ne\n",
                            "done\r\n"),
              HasSubstr("STAMPED_ORIGIN=https://tidepool.example.com"));
}

TEST_F(WorkspaceSecretsTest, ARootProvisionersSandboxRunsAsItsOwnHostUserAndReadsItsStampAndKeys) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs a root provisioner";
  manager_->Stop();
  sandbox_host_uid_ = 65534;  // nobody: as provisioner.sandbox_user would name
  options_.model_server_url = "http://10.0.0.5:8000/v1";
  options_.model_server_model = "tiny-instruct";
  StartManager();
  secrets_.Set(
      {Key("anthropic", "sk-ant-first-value-000000", {"ANTHROPIC_API_KEY"}, {}, false),
       Key("brave", "BSA-brave-key-0000000000", {}, {"plugins.entries.brave.apiKey"}, true)});
  absl::StatusOr<EnsureOutcome> outcome = manager_->Ensure(kAlice, "stampvars", "UTC");
  ASSERT_THAT(outcome, IsOk());
  absl::StatusOr<WorkspaceRecord> settled =
      manager_->AwaitSettled(outcome->workspace.workspace_id, absl::Now() + absl::Seconds(30));
  ASSERT_THAT(settled, IsOk());
  ASSERT_EQ(settled->state, commonpb::WORKSPACE_STATE_RUNNING) << settled->state_reason;
  const std::string id = settled->workspace_id;
  // Every process of the sandbox is the sandbox user's on the host, none root's.
  absl::StatusOr<SandboxStatus> status = runtime_->Status(id);
  ASSERT_THAT(status, IsOk());
  struct stat st {};
  ASSERT_EQ(::stat(absl::StrCat("/proc/", status->pid).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);
  // The data dir above it stays the platform's alone (the launch stages the bind sources).
  ASSERT_EQ(::stat(tmp_.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  // The stamp and the keys: the sandbox group reads them, nobody else, and nobody writes.
  for (const std::string& path :
       {tmp_.Join("provisioner/stamps/" + id), tmp_.Join("provisioner/secrets/" + id)}) {
    ASSERT_EQ(::stat(path.c_str(), &st), 0) << path;
    EXPECT_EQ(st.st_mode & 0777, 0750u) << path;
    EXPECT_EQ(st.st_gid, 65534u) << path;
  }
  for (const std::string& path : {tmp_.Join("provisioner/stamps/" + id + "/merged.json"),
                                  tmp_.Join("provisioner/secrets/" + id + "/env")}) {
    ASSERT_EQ(::stat(path.c_str(), &st), 0) << path;
    EXPECT_EQ(st.st_mode & 0777, 0640u) << path;
    EXPECT_EQ(st.st_gid, 65534u) << path;
    EXPECT_EQ(st.st_uid, 0u) << path;
  }
  // Read from inside: the guard installed the stamp with the merged key, the tool has the env
  // key, and the stamp cannot be changed.
  EXPECT_THAT(RunInTerminal(id,
                            "id -u; grep -c BSA-brave-key ~/.config/merged.json; "
                            "tr '\\0' '\\n' < /proc/$(pgrep -x sleep | head -1)/environ | "
                            "grep -c ANTHROPIC_API_KEY=sk-ant; "
                            "echo x >> /etc/tidepool/merged.json || echo re\"\"fused; "
                            "echo do\"\"ne\n",
                            "done\r\n"),
              ::testing::AllOf(HasSubstr("1000\r\n1\r\n1\r\n"), HasSubstr("refused")));
}

TEST_F(WorkspaceSecretsTest, ANewPersonGetsAStartedSpareStampedForThemWithoutARestart) {
  manager_->Stop();
  options_.default_profile = "sparetool";
  options_.warm_spares = 1;
  StartManager();
  // A ready spare: a running sandbox that is no one's workspace.
  auto wait_for_spare = [&](const std::string& other) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      for (const std::string& id : manager_->ReadySpares()) {
        absl::StatusOr<SandboxStatus> status = runtime_->Status(id);
        if (id != other && absl::IsNotFound(store_->Get(id).status()) && status.ok() &&
            status->phase == SandboxPhase::kRunning) {
          return id;
        }
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return std::string();
  };
  const std::string spare = wait_for_spare("");
  ASSERT_FALSE(spare.empty()) << "no spare was started";
  const std::string stamp = tmp_.Join("provisioner/stamps/" + spare + "/owner.json");
  EXPECT_THAT(ReadFileOrEmpty(stamp), HasSubstr("\"owner\": \"tidepool-spare\""));
  // The spare is nobody's: no list shows it and it has no endpoint.
  EXPECT_THAT(manager_->GetEndpoint(spare, "proxy"), StatusIs(absl::StatusCode::kNotFound));
  const std::string pid = ReadFileOrEmpty(manager_->VolumeDir(spare) + "/tool.pid");
  ASSERT_FALSE(pid.empty());

  // A new person's sign-in claims it: stamped for her while it runs, the tool not restarted,
  // and RUNNING only once the tool lets her in.
  secrets_.Set({Key("anthropic", "sk-ant-first-value-000000", {"ANTHROPIC_API_KEY"}, {}, true)});
  const absl::Time begin = absl::Now();
  const WorkspaceRecord alice = EnsureRunning(kAlice);
  const absl::Duration claim = absl::Now() - begin;
  EXPECT_EQ(alice.workspace_id, spare);
  EXPECT_EQ(alice.owner_user_id, kAlice);
  EXPECT_THAT(ReadFileOrEmpty(stamp), HasSubstr(absl::StrCat("\"owner\": \"", kAlice, "\"")));
  EXPECT_THAT(ReadFileOrEmpty(stamp), HasSubstr("\"tz\": \"Europe/Berlin\""));
  EXPECT_EQ(ReadFileOrEmpty(manager_->VolumeDir(spare) + "/tool.pid"), pid);
  EXPECT_THAT(ReadFileOrEmpty(tmp_.Join("provisioner/secrets/" + spare + "/env")),
              HasSubstr("ANTHROPIC_API_KEY=sk-ant-first-value-000000"));
  EXPECT_LT(claim, absl::Seconds(5));
  bool audited = false;
  for (const commonpb::AuditEvent& event : audit_.Events()) {
    if (event.action() == "workspace.created" && event.subject_user_id() == kAlice) {
      audited = event.attributes().at("workspace_id") == spare &&
                event.attributes().count("from_spare") > 0;
    }
  }
  EXPECT_TRUE(audited);
  // Its endpoint is hers now, and it is no longer marked a spare.
  EXPECT_THAT(manager_->GetEndpoint(spare, "proxy"), IsOk());
  EXPECT_FALSE(std::filesystem::exists(tmp_.Join("provisioner/spares/" + spare)));

  // Another spare is made for the next person; Alice asking again keeps hers.
  const std::string next = wait_for_spare(spare);
  ASSERT_FALSE(next.empty()) << "no spare was made after the claim";
  EXPECT_EQ(EnsureRunning(kAlice).workspace_id, spare);
  EXPECT_EQ(manager_->ReadySpares(), std::vector<std::string>{next});
  // A workspace of another profile is not a spare's.
  EXPECT_NE(EnsureRunning(kBob, "envdump").workspace_id, next);

  // Stopping the provisioner deletes the spare, not the workspaces.
  manager_->Stop();
  EXPECT_EQ(runtime_->Status(next)->phase, SandboxPhase::kMissing);
  EXPECT_FALSE(std::filesystem::exists(tmp_.Join("provisioner/stamps/" + next)));
  EXPECT_FALSE(std::filesystem::exists(tmp_.Join("provisioner/spares/" + next)));
  EXPECT_EQ(runtime_->Status(spare)->phase, SandboxPhase::kRunning);

  // A spare a crashed run left behind (its marker names it) is deleted at the next start.
  SandboxSpec orphan;
  orphan.workspace_id = "ws_" + std::string(26, 'o');
  orphan.volume_dir = tmp_.Join("provisioner/volumes/" + orphan.workspace_id);
  orphan.socket_dir = tmp_.Join("provisioner/sockets/" + orphan.workspace_id);
  orphan.command = {"/bin/sleep", "1000"};
  ASSERT_THAT(runtime_->Create(orphan), IsOk());
  ASSERT_THAT(runtime_->Start(orphan.workspace_id), IsOk());
  std::ofstream(tmp_.Join("provisioner/spares/" + orphan.workspace_id)).close();
  options_.warm_spares = 0;
  StartManager();
  EXPECT_EQ(runtime_->Status(orphan.workspace_id)->phase, SandboxPhase::kMissing);
  EXPECT_FALSE(std::filesystem::exists(tmp_.Join("provisioner/spares/" + orphan.workspace_id)));
  EXPECT_EQ(runtime_->Status(spare)->phase, SandboxPhase::kRunning);
}

TEST_F(WorkspaceSecretsTest, AToolWithAnHttpHealthCheckIsReportedHealthyOnceItAnswers) {
  absl::StatusOr<EnsureOutcome> outcome = manager_->Ensure(kBob, "webtool", "");
  ASSERT_THAT(outcome, IsOk());
  absl::StatusOr<WorkspaceRecord> settled =
      manager_->AwaitSettled(outcome->workspace.workspace_id, absl::Now() + absl::Seconds(30));
  ASSERT_THAT(settled, IsOk());
  ASSERT_EQ(settled->state, commonpb::WORKSPACE_STATE_RUNNING);
  absl::StatusOr<Endpoint> endpoint = manager_->GetEndpoint(settled->workspace_id, "proxy");
  ASSERT_THAT(endpoint, IsOk());
  EXPECT_TRUE(endpoint->identity.enabled);
  EXPECT_EQ(endpoint->identity.user_header, "x-forwarded-user");
  const std::string key = DeriveWorkspaceKey(options_.platform_key, settled->workspace_id);
  const std::string credential = MintWorkspaceCredential(key, settled->workspace_id, "provisioner",
                                                         absl::Now() + absl::Minutes(1));
  std::string body;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    absl::StatusOr<SupervisorReply> reply =
        PostToSupervisor(manager_->SocketPath(settled->workspace_id), "/_tidepool/v1/GetStatus",
                         credential, "{}", absl::Seconds(5));
    ASSERT_THAT(reply, IsOk());
    body = reply->body;
    if (body.find("TOOL_HEALTH_HEALTHY") != std::string::npos) break;
    EXPECT_THAT(body, HasSubstr("TOOL_HEALTH_STARTING"));
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_THAT(body, HasSubstr("TOOL_HEALTH_HEALTHY"));

  // The tool's scheduled jobs (its schedule store, in the volume), with their next run in
  // the owner's timezone; a job that cannot be understood is listed with the reason.
  std::filesystem::create_directories(manager_->VolumeDir(settled->workspace_id) + "/.webtool");
  std::ofstream(manager_->VolumeDir(settled->workspace_id) + "/.webtool/jobs.json")
      << R"({"jobs": [{"jobId": "report", "schedule": "0 9 * * *", "timezone": "Europe/Berlin",)"
      << R"( "enabled": true}, {"jobId": "bad", "schedule": "whenever", "enabled": true}]})";
  absl::StatusOr<SupervisorReply> scheduled =
      PostToSupervisor(manager_->SocketPath(settled->workspace_id), "/_tidepool/v1/GetStatus",
                       credential, "{}", absl::Seconds(5));
  ASSERT_THAT(scheduled, IsOk());
  supervisorpb::GetStatusResponse status;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(scheduled->body, &status).ok());
  ASSERT_EQ(status.scheduled_jobs_size(), 2);
  const absl::Time next = absl::FromUnixSeconds(status.scheduled_jobs(0).next_run_time().seconds());
  EXPECT_GT(next, absl::Now());
  EXPECT_LE(next, absl::Now() + absl::Hours(24));
  absl::TimeZone berlin;
  ASSERT_TRUE(absl::LoadTimeZone("Europe/Berlin", &berlin));
  EXPECT_EQ(absl::FormatTime("%H:%M", next, berlin), "09:00");
  EXPECT_FALSE(status.scheduled_jobs(1).schedule_error().empty());

  // Previews: the tool's port, with its process, as the proxy would list them.
  absl::StatusOr<SupervisorReply> ports =
      PostToSupervisor(manager_->SocketPath(settled->workspace_id), "/_tidepool/v1/ListPorts",
                       endpoint->credential, "{}", absl::Seconds(5));
  ASSERT_THAT(ports, IsOk());
  EXPECT_EQ(ports->status, 200) << ports->body;
  EXPECT_THAT(ports->body, HasSubstr("\"port\":8765"));
  EXPECT_THAT(ports->body, HasSubstr("python3"));
  EXPECT_THAT(ports->body, HasSubstr("\"tool\":true"));
  // Tool control is the provisioner's alone.
  absl::StatusOr<SupervisorReply> denied =
      PostToSupervisor(manager_->SocketPath(settled->workspace_id), "/_tidepool/v1/StopTool",
                       endpoint->credential, "{}", absl::Seconds(5));
  ASSERT_THAT(denied, IsOk());
  EXPECT_EQ(denied->status, 403);
  absl::StatusOr<SupervisorReply> stopped =
      PostToSupervisor(manager_->SocketPath(settled->workspace_id), "/_tidepool/v1/StopTool",
                       credential, "{}", absl::Seconds(15));
  ASSERT_THAT(stopped, IsOk());
  EXPECT_EQ(stopped->status, 200) << stopped->body;
  EXPECT_THAT(stopped->body, HasSubstr("TOOL_HEALTH_STOPPED"));
  absl::StatusOr<SupervisorReply> restarted =
      PostToSupervisor(manager_->SocketPath(settled->workspace_id), "/_tidepool/v1/RestartTool",
                       credential, "{\"reason\":\"test\"}", absl::Seconds(15));
  ASSERT_THAT(restarted, IsOk());
  EXPECT_EQ(restarted->status, 200) << restarted->body;
  // Malformed bodies and unknown fields are refused.
  absl::StatusOr<SupervisorReply> malformed =
      PostToSupervisor(manager_->SocketPath(settled->workspace_id), "/_tidepool/v1/RestartTool",
                       credential, "{\"nope\":1}", absl::Seconds(5));
  ASSERT_THAT(malformed, IsOk());
  EXPECT_EQ(malformed->status, 400);
}

}  // namespace
}  // namespace tidepool::provisioner

namespace tidepool::provisioner {
namespace {

// SECURITY-TESTS.md #78 and G8 through the real sandbox: a stamped file the profile installs
// into the volume, changed from a shell inside the workspace, is restored within 5 s,
// reported to the provisioner and audited; the tool's next start sees the stamped content.
TEST_F(WorkspaceSecretsTest, AStampedFileChangedInsideTheWorkspaceIsRestoredAndAudited) {
  const std::string id = EnsureRunning(kAlice, "guarded").workspace_id;
  ASSERT_FALSE(id.empty());
  const std::string copy = manager_->VolumeDir(id) + "/.config/guarded/config.json";
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const std::string stamped = read(copy);
  ASSERT_THAT(stamped, HasSubstr("trusted-proxy"));
  ASSERT_THAT(stamped, HasSubstr(id));
  // The read-only original cannot be written from inside; the installed copy can, and is put
  // back.
  const std::string seen = RunInTerminal(
      id,
      "echo '{\"auth\": \"none\"}' > /etc/tidepool/guarded.json; echo ro=$?; "
      "echo '{\"gateway\": {\"auth\": {\"mode\": \"none\"}}}' > ~/.config/guarded/config.json; "
      "echo tamp\"\"ered\n",
      "tampered\r\n");
  const absl::Time tampered = absl::Now();
  EXPECT_THAT(seen, HasSubstr("ro=1"));
  while (read(copy) != stamped && absl::Now() - tampered < absl::Seconds(5)) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(read(copy), stamped);
  std::cerr << "tamper -> restored (seen from outside): "
            << absl::FormatDuration(absl::Now() - tampered) << "\n";
  // Pulled from the supervisor and audited.
  auto tamper_events = [&] {
    std::vector<commonpb::AuditEvent> out;
    for (const commonpb::AuditEvent& event : audit_.Events()) {
      if (event.action() == "config.tamper_detected") out.push_back(event);
    }
    return out;
  };
  const absl::Time audit_deadline = absl::Now() + absl::Seconds(5);
  while (tamper_events().empty() && absl::Now() < audit_deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  std::vector<commonpb::AuditEvent> events = tamper_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].subject_user_id(), kAlice);
  EXPECT_EQ(events[0].reason_code(), "restored");
  EXPECT_EQ(events[0].attributes().at("workspace_id"), id);
  EXPECT_EQ(events[0].attributes().at("install_to"), ".config/guarded/config.json");
  EXPECT_EQ(events[0].attributes().at("difference"), "content");
  // The status reports the guard's view.
  absl::StatusOr<Endpoint> endpoint = manager_->GetEndpoint(id, "proxy");
  ASSERT_THAT(endpoint, IsOk());
  absl::StatusOr<SupervisorReply> status = PostToSupervisor(
      manager_->SocketPath(id), "/_tidepool/v1/GetStatus", endpoint->credential, "{}",
      absl::Seconds(5));
  ASSERT_THAT(status, IsOk());
  EXPECT_THAT(status->body, HasSubstr("\"configOk\":true"));
  EXPECT_THAT(status->body, HasSubstr("\"restoreCount\":1"));
  EXPECT_THAT(status->body, HasSubstr("\"stampGeneration\":\"1\""));
  // Every start of the tool saw the stamped content.
  ASSERT_THAT(manager_->Restart(id, absl::Now() + absl::Seconds(30)), IsOk());
  auto starts = [&] {
    std::vector<std::string> seen;
    for (const auto& entry : std::filesystem::directory_iterator(manager_->VolumeDir(id))) {
      if (entry.path().filename().string().rfind("seen.", 0) == 0) {
        seen.push_back(read(entry.path().string()));
      }
    }
    return seen;
  };
  const absl::Time restart_deadline = absl::Now() + absl::Seconds(10);
  while (starts().size() < 2 && absl::Now() < restart_deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_THAT(starts(), ::testing::ElementsAre(stamped, stamped));
}

}  // namespace
}  // namespace tidepool::provisioner

namespace tidepool::provisioner {
namespace {

// While the tool does not answer (a gateway still starting, or stopped), a browser navigation
// gets a page saying so that reloads itself; any other request a JSON 502.
TEST_F(WorkspaceSecretsTest, ABrowserSeesAStartingPageWhileTheToolDoesNotAnswer) {
  namespace asio = boost::asio;
  const std::string id = EnsureRunning(kBob, "wsecho").workspace_id;
  ASSERT_FALSE(id.empty());
  absl::StatusOr<Endpoint> endpoint = manager_->GetEndpoint(id, "proxy");
  ASSERT_THAT(endpoint, IsOk());
  const std::string provisioner = MintWorkspaceCredential(
      DeriveWorkspaceKey(options_.platform_key, id), id, "provisioner", absl::Now() + absl::Minutes(1));
  absl::StatusOr<SupervisorReply> stopped = PostToSupervisor(
      endpoint->unix_socket_path, "/_tidepool/v1/StopTool", provisioner, "{}", absl::Seconds(10));
  ASSERT_THAT(stopped, IsOk());
  ASSERT_EQ(stopped->status, 200) << stopped->body;
  auto get = [&](const std::string& accept) {
    asio::io_context io;
    asio::local::stream_protocol::socket socket(io);
    socket.connect(asio::local::stream_protocol::endpoint(endpoint->unix_socket_path));
    const std::string request = absl::StrCat(
        "GET /app HTTP/1.1\r\nHost: workspace\r\nX-Tidepool-Credential: ", endpoint->credential,
        "\r\n", accept.empty() ? "" : absl::StrCat("Accept: ", accept, "\r\n"), "\r\n");
    asio::write(socket, asio::buffer(request));
    std::string answer;
    boost::system::error_code ec;
    char chunk[4096];
    for (;;) {
      const size_t n = socket.read_some(asio::buffer(chunk), ec);
      if (ec) break;
      answer.append(chunk, n);
    }
    return answer;
  };
  const std::string page = get("text/html,application/xhtml+xml,*/*;q=0.8");
  EXPECT_THAT(page, ::testing::StartsWith("HTTP/1.1 503 "));
  EXPECT_THAT(page, HasSubstr("Retry-After: 2"));
  EXPECT_THAT(page, HasSubstr("<h1>Your agent is starting</h1>"));
  const std::string api = get("application/json");
  EXPECT_THAT(api, ::testing::StartsWith("HTTP/1.1 502 "));
  EXPECT_THAT(api, HasSubstr("\"code\":\"UNAVAILABLE\""));
}

// The tool's own web UI through the supervisor's socket, as the proxy reaches it: HTTP with
// a streamed body and WebSocket both ways, platform headers removed, for the proxy only.
TEST_F(WorkspaceSecretsTest, TheToolsWebUiIsReachedThroughTheSupervisorWithWebSockets) {
  namespace asio = boost::asio;
  namespace beast = boost::beast;
  const std::string id = EnsureRunning(kBob, "wsecho").workspace_id;
  ASSERT_FALSE(id.empty());
  absl::StatusOr<Endpoint> endpoint = manager_->GetEndpoint(id, "proxy");
  ASSERT_THAT(endpoint, IsOk());
  // The tool needs a moment to listen; the supervisor answers 502 until then.
  absl::StatusOr<SupervisorReply> reply;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  do {
    reply = SendToSupervisor(endpoint->unix_socket_path, "GET", "/app/page?x=1",
                             endpoint->credential, "", absl::Seconds(5));
    ASSERT_THAT(reply, IsOk());
    if (reply->status == 502) absl::SleepFor(absl::Milliseconds(50));
  } while (reply->status == 502 && absl::Now() < deadline);
  EXPECT_EQ(reply->status, 200);
  EXPECT_THAT(reply->body, ::testing::StartsWith("GET /app/page?x=1 len=0 "));
  EXPECT_THAT(reply->body, HasSubstr("tidepool=none"));  // the credential never reaches it
  // A 1 MiB body arrives whole.
  std::string big(1 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 131) % 251);
  reply = SendToSupervisor(endpoint->unix_socket_path, "POST", "/upload", endpoint->credential,
                           big, absl::Seconds(10));
  ASSERT_THAT(reply, IsOk());
  EXPECT_EQ(reply->status, 200);
  EXPECT_THAT(reply->body, HasSubstr(absl::StrCat("len=1048576 sha=",
                                                  crypto::HexEncode(crypto::Sha256(big)))));
  // Only the proxy: no credential, or another caller's, is refused before the tool sees it.
  reply = SendToSupervisor(endpoint->unix_socket_path, "GET", "/app", "", "", absl::Seconds(5));
  ASSERT_THAT(reply, IsOk());
  EXPECT_EQ(reply->status, 401);
  const std::string scaler = MintWorkspaceCredential(
      DeriveWorkspaceKey(options_.platform_key, id), id, "scaler", absl::Now() + absl::Minutes(1));
  reply = SendToSupervisor(endpoint->unix_socket_path, "GET", "/app", scaler, "", absl::Seconds(5));
  ASSERT_THAT(reply, IsOk());
  EXPECT_EQ(reply->status, 403);
  // A WebSocket to the tool, both ways.
  asio::io_context io;
  beast::websocket::stream<asio::local::stream_protocol::socket> ws(io);
  ws.next_layer().connect(asio::local::stream_protocol::endpoint(endpoint->unix_socket_path));
  ws.set_option(beast::websocket::stream_base::decorator(
      [&](beast::websocket::request_type& request) {
        request.set("X-Tidepool-Credential", endpoint->credential);
      }));
  ws.handshake("workspace", "/socket");
  ws.auto_fragment(false);  // the test tool echoes frame by frame
  for (const std::string& message : {std::string("hello"), std::string(5000, 'w')}) {
    ws.write(asio::buffer(message));
    beast::flat_buffer buffer;
    ws.read(buffer);
    EXPECT_EQ(beast::buffers_to_string(buffer.data()), message);
  }
  ws.close(beast::websocket::close_code::normal);
}

}  // namespace
}  // namespace tidepool::provisioner
