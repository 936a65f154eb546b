#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "services/supervisor/file_service.h"
#include "tidepool/supervisor/v1/supervisor_service.pb.h"

namespace tidepool::supervisor {

// Clones a repository with the real git, as this process's user (the workspace user inside
// the sandbox), into the volume behind `files`: into a staging directory first, moved into
// place only when the clone succeeded, so a failed clone leaves nothing behind. `progress`
// gets git's progress as GitCloneResponse messages (the last one has phase DONE and the
// destination); it returns false to stop (the clone is killed, UNAVAILABLE).
// Errors as GitClone in supervisor_service.proto: INVALID_ARGUMENT (URL not https:// or a
// repository inside the volume, credentials in the URL, bad paths or ref), ALREADY_EXISTS,
// NOT_FOUND, RESOURCE_EXHAUSTED (quota), UNAVAILABLE (remote unreachable).
absl::Status GitClone(FileService& files, const v1::GitCloneRequest& request,
                      const std::function<bool(const v1::GitCloneResponse&)>& progress);

}  // namespace tidepool::supervisor
