#include "services/provisioner/secrets_source.h"

#include <chrono>
#include <memory>
#include <utility>

#include "lib/grpc_status.h"
#include "lib/log.h"
#include "lib/platform_client.h"
#include "tidepool/secrets/v1/secrets_service.grpc.pb.h"

namespace tidepool::provisioner {

namespace secretspb = ::tidepool::secrets::v1;

GrpcSecretsSource::GrpcSecretsSource(TlsIdentity self, std::string data_dir,
                                     ServiceEndpointConfig configured)
    : self_(std::move(self)), data_dir_(std::move(data_dir)), configured_(std::move(configured)) {}

absl::StatusOr<std::vector<WorkspaceSecret>> GrpcSecretsSource::Resolve(
    const std::string& workspace_id, const std::string& owner_user_id, const std::string& profile) {
  absl::StatusOr<std::string> target = ResolveServiceTarget(data_dir_, "secrets", configured_);
  if (!target.ok()) return target.status();
  auto stub = secretspb::SecretsService::NewStub(DialPlatformService(self_, *target));
  secretspb::ResolveForWorkspaceRequest request;
  request.set_workspace_id(workspace_id);
  request.set_owner_user_id(owner_user_id);
  request.set_profile(profile);
  secretspb::ResolveForWorkspaceResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (grpc::Status status = stub->ResolveForWorkspace(&context, request, &response); !status.ok()) {
    return FromGrpcStatus(status);
  }
  std::vector<WorkspaceSecret> out;
  for (const secretspb::ResolvedSecret& resolved : response.secrets()) {
    WorkspaceSecret secret;
    secret.provider_id = resolved.provider_id();
    secret.field_id = resolved.field_id();
    secret.value = resolved.value();
    secret.applies_without_restart = resolved.applies_without_restart();
    for (const secretspb::FieldTarget& target : resolved.targets()) {
      if (target.has_env_var()) secret.env_vars.push_back(target.env_var());
      if (target.has_config_entry()) secret.config_entries.push_back(target.config_entry());
    }
    out.push_back(std::move(secret));
  }
  return out;
}

bool GrpcSecretsSource::Stopping() {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

void GrpcSecretsSource::StopWatching() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  if (current_ != nullptr) current_->TryCancel();
}

void GrpcSecretsSource::WatchChanges(const std::function<void(const std::string&)>& on_change,
                                     const std::function<void()>& on_resync) {
  auto stopping = [this] { return Stopping(); };
  uint64_t after = 0;
  absl::Duration backoff = absl::Milliseconds(500);
  while (!stopping()) {
    absl::StatusOr<std::string> target = ResolveServiceTarget(data_dir_, "secrets", configured_);
    if (target.ok()) {
      auto stub = secretspb::SecretsService::NewStub(DialPlatformService(self_, *target));
      grpc::ClientContext context;
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return;
        current_ = &context;
      }
      secretspb::WatchRequest request;
      request.set_after_sequence(after);
      std::unique_ptr<grpc::ClientReader<secretspb::WatchResponse>> reader =
          stub->Watch(&context, request);
      secretspb::WatchResponse message;
      // The server sends a keep-alive at least every 10 s, so Read() returns often enough to
      // notice `stopping`.
      bool positioned = after != 0;
      while (!stopping() && reader->Read(&message)) {
        backoff = absl::Milliseconds(500);
        if (!positioned) {
          // No position to resume from: changes made before this stream are not replayed, so
          // every running workspace is stamped again.
          positioned = true;
          after = message.latest_sequence();
          on_resync();
        }
        if (message.has_change()) {
          after = std::max(after, message.change().sequence());
          on_change(message.change().secret().user_id());
        }
      }
      context.TryCancel();
      const grpc::Status ended = reader->Finish();
      if (!Stopping()) {
        LogInfo("the key-change watch ended; reconnecting",
                {{"code", absl::StatusCodeToString(FromGrpcStatus(ended).code())},
                 {"message", ended.error_message()}});
      }
      {
        absl::MutexLock lock(&mu_);
        current_ = nullptr;
      }
    }
    const absl::Time until = absl::Now() + backoff;
    while (!stopping() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(100));
    backoff = std::min(backoff * 2, absl::Seconds(10));
  }
}

}  // namespace tidepool::provisioner
