#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
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

// Channels to the other platform services, resolved lazily (their run files appear only once
// the whole platform is up, and a service started on port 0 may move when it restarts): a
// target is looked up again after two seconds, and the channel is reused while it stays.
// Thread-safe.
class PlatformChannels {
 public:
  PlatformChannels(TlsIdentity self, std::string data_dir, const PlatformConfig& config)
      : self_(std::move(self)), data_dir_(std::move(data_dir)), config_(config) {}

  // The channel to `service` ("provisioner", ...); null if it cannot be found (yet).
  std::shared_ptr<grpc::Channel> Get(absl::string_view service);

 private:
  struct Entry {
    std::string target;
    std::shared_ptr<grpc::Channel> channel;
    absl::Time resolved = absl::InfinitePast();
  };
  const TlsIdentity self_;
  const std::string data_dir_;
  const PlatformConfig config_;
  absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tidepool
