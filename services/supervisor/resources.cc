#include "services/supervisor/resources.h"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/time_util.h"

namespace tidepool::supervisor {

v1::ResourceUsage SampleProcesses(const std::string& proc_root) {
  const long ticks = ::sysconf(_SC_CLK_TCK);
  const long page = ::sysconf(_SC_PAGESIZE);
  int64_t cpu_ticks = 0;
  int64_t rss_pages = 0;
  int processes = 0;
  if (DIR* dir = ::opendir(proc_root.c_str()); dir != nullptr) {
    while (dirent* entry = ::readdir(dir)) {
      int pid = 0;
      if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
      std::ifstream stat(absl::StrCat(proc_root, "/", pid, "/stat"));
      std::string line;
      if (!std::getline(stat, line)) continue;
      // The command name may hold spaces and parentheses: fields start after the last ')'.
      const size_t close = line.rfind(')');
      if (close == std::string::npos) continue;
      std::vector<std::string> fields =
          absl::StrSplit(line.substr(close + 2), ' ', absl::SkipEmpty());
      // fields[0] is field 3 (state); utime 14, stime 15, rss 24 (1-based) → 11, 12, 21.
      int64_t utime = 0, stime = 0, rss = 0;
      if (fields.size() < 22 || !absl::SimpleAtoi(fields[11], &utime) ||
          !absl::SimpleAtoi(fields[12], &stime) || !absl::SimpleAtoi(fields[21], &rss)) {
        continue;
      }
      cpu_ticks += utime + stime;
      rss_pages += rss;
      ++processes;
    }
    ::closedir(dir);
  }
  v1::ResourceUsage usage;
  if (ticks > 0) {
    *usage.mutable_cpu_time() =
        google::protobuf::util::TimeUtil::MicrosecondsToDuration(cpu_ticks * 1000000 / ticks);
  }
  usage.set_memory_bytes(rss_pages * page);
  usage.set_pid_count(processes);
  return usage;
}

std::vector<std::string> RunningProcessNames(const std::set<std::string>& names,
                                             const std::string& proc_root) {
  std::set<std::string> running;
  if (names.empty()) return {};
  if (DIR* dir = ::opendir(proc_root.c_str()); dir != nullptr) {
    while (dirent* entry = ::readdir(dir)) {
      int pid = 0;
      if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
      std::ifstream comm(absl::StrCat(proc_root, "/", pid, "/comm"));
      std::string name;
      if (std::getline(comm, name) && names.count(name)) running.insert(name);
    }
    ::closedir(dir);
  }
  return std::vector<std::string>(running.begin(), running.end());
}

}  // namespace tidepool::supervisor
