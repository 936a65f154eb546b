#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tidepool {

struct SupervisorReply {
  int status = 0;
  std::string body;
};

// POSTs `body` (JSON) to `path` on the supervisor listening at `socket_path`, with the
// workspace credential. UNAVAILABLE if the socket cannot be reached or answers nothing within
// `timeout`.
// Any request: `method` ("GET", "PUT", "DELETE", ...) to `target` (path and query) with `body`.
// `headers` are added to the request (for the tool's web UI: the identity headers).
absl::StatusOr<SupervisorReply> SendToSupervisor(
    const std::string& socket_path, const std::string& method, const std::string& target,
    const std::string& credential, const std::string& body, absl::Duration timeout,
    const std::vector<std::pair<std::string, std::string>>& headers = {});

absl::StatusOr<SupervisorReply> PostToSupervisor(const std::string& socket_path,
                                                 const std::string& path,
                                                 const std::string& credential,
                                                 const std::string& body, absl::Duration timeout);

}  // namespace tidepool
