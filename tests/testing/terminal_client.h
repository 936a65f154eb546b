#pragma once

#include <string>

namespace tidepool::testing {

// Opens the terminal `session_id` of the workspace whose supervisor listens on `socket_path`
// (a WebSocket with `credential`), types `command`, and returns the terminal's output once it
// contains `until` (or after 20 s). The output includes the echo of what was typed, so
// `until` should not appear in `command` itself.
std::string RunInTerminal(const std::string& socket_path, const std::string& credential,
                          const std::string& session_id, const std::string& command,
                          const std::string& until);

}  // namespace tidepool::testing
