#include "services/provisioner/cgroup.h"

#include <sys/stat.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::provisioner {
namespace {

using ::testing::ElementsAre;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::ReadFileOrEmpty;
using ::tidepool::testing::StatusIs;
using ::tidepool::testing::WriteFile;

// These run against a directory standing in for the cgroup filesystem, so the file formats of
// both versions are checked on any host (this one is cgroup v1; the real v1 path is exercised
// by local_runtime_test).

TEST(CgroupManagerTest, WritesV2LimitsAndReadsV2Accounting) {
  tidepool::testing::ScopedTempDir tmp;
  CgroupOptions options;
  options.parent_name = "tp";
  options.fake_root = tmp.path();
  options.fake_version = CgroupVersion::kV2;
  absl::StatusOr<std::unique_ptr<CgroupManager>> manager = CgroupManager::Open(options);
  ASSERT_THAT(manager, IsOk());
  EXPECT_EQ((*manager)->version(), CgroupVersion::kV2);
  EXPECT_THAT((*manager)->Dirs("ws_x"), ElementsAre(tmp.path() + "/tp/ws_x"));
  // Controllers are delegated to the parent and to the sandboxes below it.
  EXPECT_EQ(ReadFileOrEmpty(tmp.Join("cgroup.subtree_control")), "+memory +pids +cpu");
  EXPECT_EQ(ReadFileOrEmpty(tmp.Join("tp/cgroup.subtree_control")), "+memory +pids +cpu");

  ResourceLimits limits;
  limits.memory_bytes = 64 << 20;
  limits.pids = 32;
  limits.cpus = 0.5;
  ASSERT_THAT((*manager)->Prepare("ws_x", limits), IsOk());
  const std::string dir = tmp.Join("tp/ws_x");
  EXPECT_EQ(ReadFileOrEmpty(dir + "/memory.max"), "67108864");
  EXPECT_EQ(ReadFileOrEmpty(dir + "/memory.swap.max"), "0");
  EXPECT_EQ(ReadFileOrEmpty(dir + "/pids.max"), "32");
  EXPECT_EQ(ReadFileOrEmpty(dir + "/cpu.max"), "50000 100000");

  ResourceLimits unlimited;
  unlimited.memory_bytes = 0;
  unlimited.pids = 0;
  unlimited.cpus = 0;
  ASSERT_THAT((*manager)->Prepare("ws_x", unlimited), IsOk());
  EXPECT_EQ(ReadFileOrEmpty(dir + "/memory.max"), "max");
  EXPECT_EQ(ReadFileOrEmpty(dir + "/memory.swap.max"), "max");
  EXPECT_EQ(ReadFileOrEmpty(dir + "/pids.max"), "max");
  EXPECT_EQ(ReadFileOrEmpty(dir + "/cpu.max"), "max 100000");

  ASSERT_TRUE(WriteFile(dir + "/cpu.stat", "usage_usec 2500000\nuser_usec 2000000\n"));
  ASSERT_TRUE(WriteFile(dir + "/memory.current", "12345\n"));
  ASSERT_TRUE(WriteFile(dir + "/pids.current", "7\n"));
  ASSERT_TRUE(WriteFile(dir + "/memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n"));
  ASSERT_TRUE(WriteFile(dir + "/cgroup.procs", "101\n102\n"));
  absl::StatusOr<CgroupStats> stats = (*manager)->Stats("ws_x");
  ASSERT_THAT(stats, IsOk());
  EXPECT_DOUBLE_EQ(stats->cpu_seconds, 2.5);
  EXPECT_EQ(stats->memory_bytes, 12345);
  EXPECT_EQ(stats->processes, 7);
  EXPECT_EQ(stats->oom_kills, 2);
  EXPECT_THAT((*manager)->Pids("ws_x"), ElementsAre(101, 102));
  EXPECT_THAT((*manager)->Stats("ws_other"), StatusIs(absl::StatusCode::kNotFound));
}

TEST(CgroupManagerTest, WritesV1LimitsPerControllerAndReadsV1Accounting) {
  tidepool::testing::ScopedTempDir tmp;
  CgroupOptions options;
  options.parent_name = "tp";
  options.fake_root = tmp.path();
  options.fake_version = CgroupVersion::kV1;
  absl::StatusOr<std::unique_ptr<CgroupManager>> manager = CgroupManager::Open(options);
  ASSERT_THAT(manager, IsOk());
  EXPECT_EQ((*manager)->version(), CgroupVersion::kV1);
  EXPECT_THAT((*manager)->Dirs("ws_x"),
              ElementsAre(tmp.path() + "/memory/tp/ws_x", tmp.path() + "/pids/tp/ws_x",
                          tmp.path() + "/cpu/tp/ws_x", tmp.path() + "/cpuacct/tp/ws_x",
                          tmp.path() + "/freezer/tp/ws_x"));
  ResourceLimits limits;
  limits.memory_bytes = 64 << 20;
  limits.pids = 32;
  limits.cpus = 1.5;
  ASSERT_THAT((*manager)->Prepare("ws_x", limits), IsOk());
  EXPECT_EQ(ReadFileOrEmpty(tmp.Join("memory/tp/ws_x/memory.limit_in_bytes")), "67108864");
  EXPECT_EQ(ReadFileOrEmpty(tmp.Join("memory/tp/ws_x/memory.memsw.limit_in_bytes")), "67108864");
  EXPECT_EQ(ReadFileOrEmpty(tmp.Join("pids/tp/ws_x/pids.max")), "32");
  EXPECT_EQ(ReadFileOrEmpty(tmp.Join("cpu/tp/ws_x/cpu.cfs_period_us")), "100000");
  EXPECT_EQ(ReadFileOrEmpty(tmp.Join("cpu/tp/ws_x/cpu.cfs_quota_us")), "150000");

  ResourceLimits unlimited;
  unlimited.memory_bytes = 0;
  unlimited.pids = 0;
  unlimited.cpus = 0;
  ASSERT_THAT((*manager)->Prepare("ws_x", unlimited), IsOk());
  EXPECT_EQ(ReadFileOrEmpty(tmp.Join("memory/tp/ws_x/memory.limit_in_bytes")), "-1");
  EXPECT_EQ(ReadFileOrEmpty(tmp.Join("memory/tp/ws_x/memory.memsw.limit_in_bytes")), "-1");
  EXPECT_EQ(ReadFileOrEmpty(tmp.Join("pids/tp/ws_x/pids.max")), "max");
  EXPECT_EQ(ReadFileOrEmpty(tmp.Join("cpu/tp/ws_x/cpu.cfs_quota_us")), "-1");

  ASSERT_TRUE(WriteFile(tmp.Join("cpuacct/tp/ws_x/cpuacct.usage"), "1500000000\n"));
  ASSERT_TRUE(WriteFile(tmp.Join("memory/tp/ws_x/memory.usage_in_bytes"), "4096\n"));
  ASSERT_TRUE(WriteFile(tmp.Join("memory/tp/ws_x/memory.oom_control"),
                        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"));
  ASSERT_TRUE(WriteFile(tmp.Join("pids/tp/ws_x/pids.current"), "5\n"));
  absl::StatusOr<CgroupStats> stats = (*manager)->Stats("ws_x");
  ASSERT_THAT(stats, IsOk());
  EXPECT_DOUBLE_EQ(stats->cpu_seconds, 1.5);
  EXPECT_EQ(stats->memory_bytes, 4096);
  EXPECT_EQ(stats->processes, 5);
  EXPECT_EQ(stats->oom_kills, 3);
}

TEST(CgroupManagerTest, RejectsParentNamesThatAreNotOneComponent) {
  for (const char* bad : {"", "a/b", "..", "."}) {
    CgroupOptions options;
    options.parent_name = bad;
    EXPECT_THAT(CgroupManager::Open(options), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
}

}  // namespace
}  // namespace tidepool::provisioner
