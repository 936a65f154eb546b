#pragma once

#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "tidepool/supervisor/v1/supervisor_service.pb.h"

namespace tidepool::supervisor {

// The TCP ports listening inside this sandbox (from /proc/net/tcp and tcp6 of its network
// namespace), each with the process that owns the socket when /proc shows it, ordered by port.
// `tool_pids` marks the tool's own ports; `omit_ports` (the supervisor's own) are left out.
// `proc_root` is "/proc" except in tests. UNAVAILABLE if the socket tables cannot be read.
absl::StatusOr<v1::ListPortsResponse> ListListeningPorts(const std::set<int>& tool_pids,
                                                         const std::set<int>& omit_ports,
                                                         const std::string& proc_root = "/proc");

}  // namespace tidepool::supervisor
