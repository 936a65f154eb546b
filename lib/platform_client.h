#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "lib/pki.h"
#include "lib/platform_config.h"

namespace tidepool {

// Opens a mutual-TLS channel to a platform service at `target` ("host:port"), presenting
// `self`'s certificate and trusting only the platform CA. The server's certificate must name
// the host (every platform certificate names localhost, 127.0.0.1 and ::1). Connects lazily.
std::shared_ptr<grpc::Channel> DialPlatformService(const TlsIdentity& self,
                                                   const std::string& target);

// "host:port", with an IPv6 host in brackets ("[::1]:7401").
std::string HostPort(const std::string& host, int port);

// The state file of a running service: <data_dir>/run/<name>.json.
std::string RunFilePath(const std::string& data_dir, const std::string& name);

// What a running service wrote to <data_dir>/run/<name>.json.
struct RunInfo {
  std::string service;
  std::vector<std::string> full_names;
  std::string grpc;     // host:port
  std::string metrics;  // host:port
  int64_t pid = 0;
  std::string started;
};

// Reads a run file. NOT_FOUND if the service has not written one (it is not running);
// INVALID_ARGUMENT if the file is malformed.
absl::StatusOr<RunInfo> ReadRunInfo(const std::string& data_dir, const std::string& name);

// Where the platform service `name` can be reached now ("host:port"): its run file (it may
// have picked a free port) or else its configured address. UNAVAILABLE if it has no run file
// and its configured port is 0 (any free port). One small file read per call.
absl::StatusOr<std::string> ResolveServiceTarget(const std::string& data_dir,
                                                 const std::string& name,
                                                 const ServiceEndpointConfig& configured);

}  // namespace tidepool
