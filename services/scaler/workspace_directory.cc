#include "services/scaler/workspace_directory.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "lib/grpc_status.h"
#include "lib/status_macros.h"
#include "lib/supervisor_client.h"
#include "tidepool/provisioner/v1/workspace_service.grpc.pb.h"

namespace tidepool::scaler {
namespace {

namespace provpb = ::tidepool::provisioner::v1;
using google::protobuf::util::TimeUtil;

constexpr absl::Duration kCallTimeout = absl::Seconds(10);

WorkspaceView ToView(const provpb::Workspace& workspace) {
  WorkspaceView view;
  view.workspace_id = workspace.workspace_id();
  view.owner_user_id = workspace.owner_user_id();
  view.state = workspace.state();
  if (workspace.has_last_transition_time()) {
    view.last_transition_time = absl::FromUnixMicros(
        TimeUtil::TimestampToMicroseconds(workspace.last_transition_time()));
  }
  return view;
}

class GrpcWorkspaceDirectory final : public WorkspaceDirectory {
 public:
  explicit GrpcWorkspaceDirectory(std::function<std::shared_ptr<grpc::Channel>()> provisioner)
      : provisioner_(std::move(provisioner)) {}

  absl::StatusOr<std::vector<WorkspaceView>> List() override {
    std::vector<WorkspaceView> views;
    std::string token;
    do {
      provpb::ListWorkspacesRequest request;
      request.mutable_page()->set_page_size(1000);
      request.mutable_page()->set_page_token(token);
      provpb::ListWorkspacesResponse response;
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + kCallTimeout));
      TP_ASSIGN_OR_RETURN(std::unique_ptr<provpb::WorkspaceService::Stub> stub, Stub());
      grpc::Status status = stub->ListWorkspaces(&context, request, &response);
      if (!status.ok()) return FromGrpcStatus(status);
      for (const provpb::Workspace& workspace : response.workspaces()) {
        if (workspace.state() == common::v1::WORKSPACE_STATE_DELETED) continue;
        views.push_back(ToView(workspace));
      }
      token = response.page().next_page_token();
    } while (!token.empty());
    return views;
  }

  absl::StatusOr<WorkspaceView> Get(const std::string& workspace_id) override {
    provpb::GetWorkspaceRequest request;
    request.set_workspace_id(workspace_id);
    provpb::GetWorkspaceResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kCallTimeout));
    TP_ASSIGN_OR_RETURN(std::unique_ptr<provpb::WorkspaceService::Stub> stub, Stub());
    grpc::Status status = stub->GetWorkspace(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    if (response.workspace().state() == common::v1::WORKSPACE_STATE_DELETED) {
      return absl::NotFoundError("no such workspace");
    }
    return ToView(response.workspace());
  }

  absl::Status Sleep(const std::string& workspace_id, const std::string& reason) override {
    provpb::StopWorkspaceRequest request;
    request.set_workspace_id(workspace_id);
    request.set_reason(reason);
    provpb::StopWorkspaceResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    TP_ASSIGN_OR_RETURN(std::unique_ptr<provpb::WorkspaceService::Stub> stub, Stub());
    return FromGrpcStatus(stub->StopWorkspace(&context, request, &response));
  }

  absl::StatusOr<common::v1::WorkspaceState> Wake(const std::string& workspace_id,
                                                  const std::string& reason) override {
    provpb::WakeWorkspaceRequest request;
    request.set_workspace_id(workspace_id);
    request.set_reason(reason);
    provpb::WakeWorkspaceResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kCallTimeout));
    TP_ASSIGN_OR_RETURN(std::unique_ptr<provpb::WorkspaceService::Stub> stub, Stub());
    grpc::Status status = stub->WakeWorkspace(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response.workspace().state();
  }

  absl::StatusOr<WorkspaceActivityView> Inspect(const std::string& workspace_id) override {
    provpb::GetEndpointRequest request;
    request.set_workspace_id(workspace_id);
    provpb::GetEndpointResponse endpoint;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kCallTimeout));
    TP_ASSIGN_OR_RETURN(std::unique_ptr<provpb::WorkspaceService::Stub> stub, Stub());
    grpc::Status status = stub->GetEndpoint(&context, request, &endpoint);
    if (!status.ok()) return FromGrpcStatus(status);
    if (endpoint.unix_socket_path().empty()) {
      return absl::UnimplementedError("only workspaces on the local runtime can be inspected");
    }
    absl::StatusOr<SupervisorReply> reply =
        PostToSupervisor(endpoint.unix_socket_path(), "/_tidepool/v1/GetStatus",
                         endpoint.credential(), "{}", absl::Seconds(5));
    if (!reply.ok()) return reply.status();
    if (reply->status != 200) {
      return absl::UnavailableError(
          absl::StrCat("the workspace's supervisor answered HTTP ", reply->status));
    }
    supervisor::v1::GetStatusResponse status_response;
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = true;
    if (auto parsed =
            google::protobuf::util::JsonStringToMessage(reply->body, &status_response, options);
        !parsed.ok()) {
      return absl::UnavailableError("the workspace's supervisor sent an unreadable status");
    }
    WorkspaceActivityView view;
    view.jobs.assign(status_response.scheduled_jobs().begin(),
                     status_response.scheduled_jobs().end());
    view.work_processes.assign(status_response.work_processes().begin(),
                               status_response.work_processes().end());
    return view;
  }

 private:
  // The provisioner's stub, or UNAVAILABLE while it cannot be found (it starts after us).
  absl::StatusOr<std::unique_ptr<provpb::WorkspaceService::Stub>> Stub() {
    std::shared_ptr<grpc::Channel> channel = provisioner_();
    if (channel == nullptr) return absl::UnavailableError("the provisioner is not reachable yet");
    return provpb::WorkspaceService::NewStub(channel);
  }

  const std::function<std::shared_ptr<grpc::Channel>()> provisioner_;
};

}  // namespace

std::unique_ptr<WorkspaceDirectory> NewGrpcWorkspaceDirectory(
    std::function<std::shared_ptr<grpc::Channel>()> provisioner) {
  return std::make_unique<GrpcWorkspaceDirectory>(std::move(provisioner));
}

}  // namespace tidepool::scaler
