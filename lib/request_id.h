#pragma once

#include <string>

namespace tidepool {

// Returns a new random request id ("req_" + 16 hex characters) for correlating a client-visible
// error with the server log. Not a secret. Thread-safe.
std::string NewRequestId();

}  // namespace tidepool
