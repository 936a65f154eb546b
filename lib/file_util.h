#pragma once

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tidepool {

// Reads a whole file. NOT_FOUND ("<path> is missing") if it cannot be opened.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Writes `data` to `path` atomically with `mode` regardless of the umask: a temporary file in
// the same directory, fsync, rename. Readers see the old content or the new, never a mix.
// With gid >= 0 the file's group is set to it before the rename. UNAVAILABLE if any step fails.
absl::Status WriteFileAtomically(const std::string& path, const std::string& data, mode_t mode,
                                 int gid = -1);

// OK if `path` is readable by its owner only; FAILED_PRECONDITION naming the mode and the
// fix ("run chmod 600 on it") otherwise; NOT_FOUND if it does not exist. For key files.
absl::Status CheckOwnerOnly(const std::string& path);

}  // namespace tidepool
