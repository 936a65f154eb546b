#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/platform_config.h"
#include "lib/service_main.h"
#include "services/secrets/secrets_vault.h"
#include "tidepool/secrets/v1/secrets_service.grpc.pb.h"

namespace tidepool::secrets {

struct SecretsServiceOptions {
  // How long an idle Watch stream goes without a message before a keep-alive is sent.
  absl::Duration watch_keepalive = absl::Seconds(10);
  // The most changes one Watch step reads from the store.
  int watch_batch = 500;
};

// The gRPC adapter for tidepool.secrets.v1.SecretsService over a SecretsVault: maps protos and
// statuses and applies who-may-act-for-whom using the verified caller (lib/caller.h):
//   - Put: a person writes only their own keys (user_id empty or their own id); tidepoolctl
//     names the user. Another user's id answers NOT_FOUND, exactly like a missing secret.
//   - Delete, List: the person themself, an admin person, or tidepoolctl; anyone else gets
//     the same NOT_FOUND.
//   - ResolveForWorkspace: the provisioner only (the mTLS allowlist, checked again here).
//   - RotateMasterKey: administrators (tidepoolctl) only.
// The per-method caller allowlists are enforced before these handlers run. Thread-safe.
class SecretsServiceImpl final : public v1::SecretsService::Service {
 public:
  // `vault` must outlive the service.
  explicit SecretsServiceImpl(SecretsVault& vault, SecretsServiceOptions options = {})
      : vault_(vault), options_(options) {}

  grpc::Status Put(grpc::ServerContext* context, const v1::PutRequest* request,
                   v1::PutResponse* response) override;
  grpc::Status Delete(grpc::ServerContext* context, const v1::DeleteRequest* request,
                      v1::DeleteResponse* response) override;
  grpc::Status List(grpc::ServerContext* context, const v1::ListRequest* request,
                    v1::ListResponse* response) override;
  grpc::Status GetCatalogue(grpc::ServerContext* context, const v1::GetCatalogueRequest* request,
                            v1::GetCatalogueResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context, const v1::WatchRequest* request,
                     grpc::ServerWriter<v1::WatchResponse>* writer) override;
  grpc::Status ResolveForWorkspace(grpc::ServerContext* context,
                                   const v1::ResolveForWorkspaceRequest* request,
                                   v1::ResolveForWorkspaceResponse* response) override;
  grpc::Status RotateMasterKey(grpc::ServerContext* context,
                               const v1::RotateMasterKeyRequest* request,
                               v1::RotateMasterKeyResponse* response) override;

 private:
  SecretsVault& vault_;
  const SecretsServiceOptions options_;
};

// The vault options the platform config asks for: state under <data_dir>/secrets, the master
// key from secrets.master_key_env or secrets.master_key_file (default
// <data_dir>/secrets/master.key), and the limits and rotation policy of the `secrets` section.
SecretsVaultOptions VaultOptionsFromConfig(const PlatformConfig& config,
                                           const std::string& data_dir);

// The service as the platform hosts it (tidepool-secrets and the all-in-one tidepool). Its
// create step first disables core dumps for the process (process_hardening.h), then opens the
// vault; a missing, wrong or unsafe master key, or a rolled-back keyring, keeps it from
// starting (FAILED_PRECONDITION "sealed: ..."). A master key read from an environment variable
// is removed from the process environment once loaded, so child processes do not inherit it.
ServiceDefinition SecretsServiceDefinition();

}  // namespace tidepool::secrets
