#include "services/supervisor/resources.h"

#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::supervisor {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// A /proc with a process per (pid, name).
void AddProcess(const std::string& root, const std::string& pid, const std::string& name) {
  std::filesystem::create_directories(root + "/" + pid);
  std::ofstream(root + "/" + pid + "/comm") << name << "\n";
}

TEST(RunningProcessNamesTest, ReportsWhichWorkProcessesRunEachOnce) {
  tidepool::testing::ScopedTempDir proc;
  AddProcess(proc.path(), "1", "tidepool-superv");
  AddProcess(proc.path(), "20", "make");
  AddProcess(proc.path(), "21", "cc1plus");
  AddProcess(proc.path(), "22", "make");
  AddProcess(proc.path(), "self", "make");  // not a pid
  EXPECT_THAT(RunningProcessNames({"make", "cc1plus", "cargo"}, proc.path()),
              ElementsAre("cc1plus", "make"));
  EXPECT_THAT(RunningProcessNames({"cargo"}, proc.path()), IsEmpty());
  EXPECT_THAT(RunningProcessNames({}, proc.path()), IsEmpty());
}

TEST(RunningProcessNamesTest, SeesThisProcessInTheRealProc) {
  std::ifstream comm("/proc/self/comm");
  std::string self;
  ASSERT_TRUE(std::getline(comm, self));
  EXPECT_THAT(RunningProcessNames({self, "no-such-process"}), ElementsAre(self));
}

}  // namespace
}  // namespace tidepool::supervisor
