#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tidepool::ctl {

// The health of one platform service as tidepoolctl sees it.
struct ServiceStatus {
  std::string service;    // "auth"
  std::string full_name;  // "tidepool.auth.v1.AuthService"
  std::string grpc;       // host:port, empty if not running
  std::string metrics;    // host:port
  int64_t pid = 0;
  // SERVING, NOT_SERVING, NOT_RUNNING (no run file), UNREACHABLE (run file but no answer),
  // or UNKNOWN.
  std::string state;
  std::string detail;  // why, when not SERVING
};

// Checks every platform service found under `data_dir` with grpc.health.v1 Check over mutual
// TLS as the tidepoolctl identity (certificates from `tls_dir`). Each check has `timeout`.
// Returns NOT_FOUND / FAILED_PRECONDITION if tidepoolctl's certificate cannot be loaded.
absl::StatusOr<std::vector<ServiceStatus>> CheckPlatformStatus(const std::string& data_dir,
                                                               const std::string& tls_dir,
                                                               absl::Duration timeout);

// Prints a table (SERVICE, STATE, GRPC, METRICS, PID, DETAIL).
void PrintStatusTable(const std::vector<ServiceStatus>& statuses, std::ostream& out);

// Prints a JSON document {"services":[{...}], "all_serving": bool}.
void PrintStatusJson(const std::vector<ServiceStatus>& statuses, std::ostream& out);

// Runs `tidepoolctl status [--json] [--data-dir DIR] [--config FILE] [--timeout 2s]`.
// Exit code 0 when every service is SERVING, 1 otherwise, 2 on bad usage.
int StatusCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace tidepool::ctl
