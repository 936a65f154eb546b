#pragma once

#include "absl/status/status.h"

namespace tidepool::secrets {

// Keeps secrets out of core files and away from debuggers of the same user: marks the whole
// process non-dumpable (prctl PR_SET_DUMPABLE 0, which also makes ptrace attach need
// CAP_SYS_PTRACE and hides /proc/<pid>/mem, environ and fd from other processes of the user)
// and sets both limits of RLIMIT_CORE to 0, so no core file is written on a crash.
// Idempotent. Affects every service hosted in the process (the all-in-one binary included).
// Errors: INTERNAL naming the call that failed.
absl::Status DisableCoreDumps();

}  // namespace tidepool::secrets
