#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/client_context.h"
#include "lib/pki.h"
#include "lib/platform_config.h"

namespace tidepool::provisioner {

// One of the owner's keys as the workspace's profile consumes it. `value` is PLAINTEXT: it is
// written only into the workspace's secrets directory and never logged.
struct WorkspaceSecret {
  std::string provider_id;
  std::string field_id;
  std::string value;
  std::vector<std::string> env_vars;       // environment variables of the tool
  std::vector<std::string> config_entries;  // dotted paths in the tool's config (openclaw)
  bool applies_without_restart = false;
};

// Where the provisioner gets an owner's keys (the secrets service).
class SecretsSource {
 public:
  virtual ~SecretsSource() = default;
  virtual absl::StatusOr<std::vector<WorkspaceSecret>> Resolve(const std::string& workspace_id,
                                                               const std::string& owner_user_id,
                                                               const std::string& profile) = 0;
};

// The secrets service over mutual TLS (as the provisioner), wherever it runs now.
class GrpcSecretsSource final : public SecretsSource {
 public:
  GrpcSecretsSource(TlsIdentity self, std::string data_dir, ServiceEndpointConfig configured);
  absl::StatusOr<std::vector<WorkspaceSecret>> Resolve(const std::string& workspace_id,
                                                       const std::string& owner_user_id,
                                                       const std::string& profile) override;

  // Follows every user's key changes (SecretsService.Watch), calling `on_change(user_id)` for
  // each, reconnecting with backoff and resuming after the last change seen, until
  // StopWatching(). `on_resync()` runs when a stream starts without a position to resume from
  // (the first connection), so that changes made before it are not missed.
  void WatchChanges(const std::function<void(const std::string&)>& on_change,
                    const std::function<void()>& on_resync);
  // Ends WatchChanges promptly (cancels the open stream).
  void StopWatching();

 private:
  bool Stopping();

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* current_ ABSL_GUARDED_BY(mu_) = nullptr;
  const TlsIdentity self_;
  const std::string data_dir_;
  const ServiceEndpointConfig configured_;
};

}  // namespace tidepool::provisioner
