#pragma once

// Durable file operations for the secrets service's key files: a write, rename or removal
// returns only once it survives a crash or power loss (file and directory fsync'd).

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lib/file_util.h"

namespace tidepool::secrets {

// Writes `data` to `path` with mode 0600 (regardless of the umask) through a temporary file,
// fsync and rename, then fsyncs the directory. Readers see the old content or the new.
// Errors: UNAVAILABLE naming the path (never the data).
absl::Status WriteSecretFile(const std::string& path, const std::string& data);

// Renames `from` to `to` (replacing it) and fsyncs the directory. Errors: UNAVAILABLE.
absl::Status RenameDurably(const std::string& from, const std::string& to);

// Removes `path` if it exists and fsyncs the directory. Errors: UNAVAILABLE.
absl::Status RemoveDurably(const std::string& path);

// Fsyncs the directory that holds `path`. Errors: UNAVAILABLE.
absl::Status SyncParentDirectory(const std::string& path);

// True if `path` names an existing file system entry (following symlinks).
bool PathExists(const std::string& path);

}  // namespace tidepool::secrets
