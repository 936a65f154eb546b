// bench/provision: see run beside this file.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/clock.h"
#include "services/provisioner/local_runtime.h"
#include "services/provisioner/volume_image.h"
#include "services/provisioner/workspace_manager.h"

namespace tidepool::provisioner {
namespace {

namespace commonpb = ::tidepool::common::v1;

double Percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  const size_t index = static_cast<size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

void Print(const char* what, const std::vector<double>& ms) {
  std::printf("%-34s p50 %7.1f ms   p95 %7.1f ms   (n=%zu)\n", what, Percentile(ms, 0.5),
              Percentile(ms, 0.95), ms.size());
}

int Main() {
  constexpr int kWorkspaces = 20;
  const std::string root = absl::StrCat("/tmp/tidepool-provision-bench-", ::getpid());
  std::filesystem::create_directories(root);
  RealClock clock;
  absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(root + "/p.db", SqliteOptions{});
  absl::StatusOr<std::unique_ptr<WorkspaceStore>> store =
      db.ok() ? WorkspaceStore::Open(**db, clock) : absl::StatusOr<std::unique_ptr<WorkspaceStore>>(db.status());
  absl::StatusOr<std::map<std::string, ToolProfile>> profiles =
      LoadProfiles(std::string(TIDEPOOL_SOURCE_DIR) + "/profiles");
  LocalRuntimeOptions runtime_options;
  runtime_options.state_dir = root + "/runtime";
  // As the platform runs by default: each volume its own ext4 image of the quota's size.
  const bool hard_quota = ImageVolumesSupported();
  if (hard_quota) runtime_options.volume_images_dir = root + "/images";
  absl::StatusOr<std::unique_ptr<LocalRuntime>> runtime = LocalRuntime::Open(runtime_options);
  if (!store.ok() || !profiles.ok() || !runtime.ok()) {
    std::fprintf(stderr, "setup failed\n");
    return 1;
  }
  WorkspaceManagerOptions options;
  options.dir = root + "/provisioner";
  options.supervisor_binary = std::string(TIDEPOOL_BINARY_DIR) + "/tidepool-supervisor";
  options.profiles = *profiles;
  options.platform_key = std::string(32, 'b');
  options.stop_grace = absl::Seconds(2);
  options.limits.disk_bytes = 10240LL << 20;  // the default quota
  WorkspaceManager manager(options, **store, **runtime, clock, nullptr);
  if (!manager.Start().ok()) return 1;

  // The floor: the same sandboxing (bubblewrap, namespaces, cgroup) around /bin/true.
  std::vector<double> floor_ms;
  for (int i = 0; i < kWorkspaces; ++i) {
    const std::string id =
        absl::StrCat("ws_", std::string(24, 'a'), "f", std::string(1, static_cast<char>('a' + i % 26)));
    SandboxSpec spec;
    spec.workspace_id = id.substr(0, 29);
    spec.volume_dir = absl::StrCat(root, "/floor/", i, "/v");
    spec.socket_dir = absl::StrCat(root, "/floor/", i, "/s");
    spec.command = {"/bin/true"};
    const absl::Time start = absl::Now();
    if (!(*runtime)->Create(spec).ok() || !(*runtime)->Start(spec.workspace_id).ok()) break;
    while (true) {
      absl::StatusOr<SandboxStatus> status = (*runtime)->Status(spec.workspace_id);
      if (!status.ok() || status->phase != SandboxPhase::kRunning) break;
      absl::SleepFor(absl::Microseconds(200));
    }
    floor_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    (void)(*runtime)->Delete(spec.workspace_id);
  }

  std::vector<double> ensure_ms;
  std::vector<std::string> ids;
  // Every exit removes the sandboxes started so far (they outlive this process otherwise).
  auto cleanup = [&] {
    manager.Stop();  // first, so no worker starts a sandbox after it was deleted
    for (const std::string& id : ids) (void)(*runtime)->Delete(id);
    std::error_code ec;
    if (std::getenv("TIDEPOOL_BENCH_KEEP") == nullptr) std::filesystem::remove_all(root, ec);
  };
  for (int i = 0; i < kWorkspaces; ++i) {
    const std::string owner =
        absl::StrCat("u_", std::string(24, 'b'), std::string(1, static_cast<char>('a' + i / 26)),
                     std::string(1, static_cast<char>('a' + i % 26)));
    const absl::Time start = absl::Now();
    absl::StatusOr<EnsureOutcome> outcome = manager.Ensure(owner, "", "UTC");
    if (!outcome.ok()) {
      cleanup();
      return 1;
    }
    ids.push_back(outcome->workspace.workspace_id);
    absl::StatusOr<WorkspaceRecord> ready =
        manager.AwaitSettled(outcome->workspace.workspace_id, absl::Now() + absl::Seconds(30));
    if (!ready.ok() || ready->state != commonpb::WORKSPACE_STATE_RUNNING) {
      std::fprintf(stderr, "workspace did not start\n");
      cleanup();
      return 1;
    }
    ensure_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  std::vector<double> wake_ms;
  for (const std::string& id : ids) {
    if (!manager.Sleep(id, "bench", absl::Now() + absl::Seconds(20)).ok()) {
      cleanup();
      return 1;
    }
    const absl::Time start = absl::Now();
    absl::StatusOr<WorkspaceRecord> awake = manager.Wake(id, absl::Now() + absl::Seconds(30));
    if (!awake.ok() || awake->state != commonpb::WORKSPACE_STATE_RUNNING) {
      std::fprintf(stderr, "workspace did not wake\n");
      cleanup();
      return 1;
    }
    wake_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  std::printf("Workspace start-up, shell profile, %d workspaces, this machine (hard disk quota: %s):\n",
              kWorkspaces, hard_quota ? "a 10 GiB ext4 image per volume" : "off, not root");
  Print("sandbox floor (bwrap /bin/true)", floor_ms);
  Print("ensure -> supervisor ready", ensure_ms);
  Print("wake from SLEEPING -> ready", wake_ms);
  std::printf("target: p50 < 1000 ms for both (the replaced system: 30,000-60,000 ms)\n");
  cleanup();
  return Percentile(ensure_ms, 0.5) < 1000 && Percentile(wake_ms, 0.5) < 1000 ? 0 : 3;
}

}  // namespace
}  // namespace tidepool::provisioner

int main() { return tidepool::provisioner::Main(); }
