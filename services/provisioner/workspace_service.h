#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/service_main.h"
#include "services/provisioner/workspace_manager.h"
#include "tidepool/provisioner/v1/workspace_service.grpc.pb.h"

namespace tidepool::provisioner {

// The gRPC adapter for tidepool.provisioner.v1.WorkspaceService over a WorkspaceManager. It
// checks input, applies the owner-or-admin rules with the caller (lib/caller.h; a workspace
// that is not the caller's answers exactly like a missing one) and maps statuses.
// ReportConfigTamper arrives with the supervisor's config guard (issue #7).
class WorkspaceServiceImpl final : public v1::WorkspaceService::Service {
 public:
  explicit WorkspaceServiceImpl(WorkspaceManager& manager) : manager_(manager) {}

  grpc::Status EnsureWorkspace(grpc::ServerContext* context, const v1::EnsureWorkspaceRequest* request,
                               v1::EnsureWorkspaceResponse* response) override;
  grpc::Status GetWorkspace(grpc::ServerContext* context, const v1::GetWorkspaceRequest* request,
                            v1::GetWorkspaceResponse* response) override;
  grpc::Status ListWorkspaces(grpc::ServerContext* context,
                              const v1::ListWorkspacesRequest* request,
                              v1::ListWorkspacesResponse* response) override;
  grpc::Status WakeWorkspace(grpc::ServerContext* context, const v1::WakeWorkspaceRequest* request,
                             v1::WakeWorkspaceResponse* response) override;
  grpc::Status StopWorkspace(grpc::ServerContext* context, const v1::StopWorkspaceRequest* request,
                             v1::StopWorkspaceResponse* response) override;
  grpc::Status RestartWorkspace(grpc::ServerContext* context,
                                const v1::RestartWorkspaceRequest* request,
                                v1::RestartWorkspaceResponse* response) override;
  grpc::Status DeleteWorkspace(grpc::ServerContext* context,
                               const v1::DeleteWorkspaceRequest* request,
                               v1::DeleteWorkspaceResponse* response) override;
  grpc::Status GetEndpoint(grpc::ServerContext* context, const v1::GetEndpointRequest* request,
                           v1::GetEndpointResponse* response) override;
  grpc::Status GetUsage(grpc::ServerContext* context, const v1::GetUsageRequest* request,
                        v1::GetUsageResponse* response) override;
  grpc::Status WatchWorkspaces(grpc::ServerContext* context,
                               const v1::WatchWorkspacesRequest* request,
                               grpc::ServerWriter<v1::WatchWorkspacesResponse>* writer) override;
  grpc::Status ResolveEgressCredential(grpc::ServerContext* context,
                                       const v1::ResolveEgressCredentialRequest* request,
                                       v1::ResolveEgressCredentialResponse* response) override;
  grpc::Status SetOwnerSuspended(grpc::ServerContext* context,
                                 const v1::SetOwnerSuspendedRequest* request,
                                 v1::SetOwnerSuspendedResponse* response) override;

 private:
  // Sets the workspace's health as its supervisor reports it (running workspaces only).
  void SetHealth(const WorkspaceRecord& record, v1::Workspace* out);
  // The workspace if the caller may see it; NOT_FOUND otherwise (same as a missing one).
  absl::StatusOr<WorkspaceRecord> Visible(const grpc::ServerContext& context,
                                          const std::string& workspace_id);

  WorkspaceManager& manager_;
};

// Converts a record to its wire form.
void ToProto(const WorkspaceRecord& record, v1::Workspace* out);

// The service as the platform hosts it (used by tidepool-provisioner and the all-in-one tidepool).
ServiceDefinition ProvisionerServiceDefinition();

}  // namespace tidepool::provisioner
