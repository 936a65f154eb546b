#pragma once

#include <set>
#include <string>
#include <vector>

#include "tidepool/supervisor/v1/supervisor_service.pb.h"

namespace tidepool::supervisor {

// CPU time, resident memory and the number of processes of every process this supervisor can
// see (inside the sandbox: the whole sandbox, through its own pid namespace's /proc).
// `proc_root` is "/proc" except in tests. Missing or unreadable entries are skipped.
v1::ResourceUsage SampleProcesses(const std::string& proc_root = "/proc");

// Which of `names` (process names as in /proc/<pid>/comm) have a process running now, sorted,
// each once.
std::vector<std::string> RunningProcessNames(const std::set<std::string>& names,
                                             const std::string& proc_root = "/proc");

}  // namespace tidepool::supervisor
