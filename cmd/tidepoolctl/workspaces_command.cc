#include "cmd/tidepoolctl/workspaces_command.h"

#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "cmd/tidepoolctl/ctl_args.h"
#include "cmd/tidepoolctl/scaler_command.h"
#include "grpcpp/client_context.h"
#include "tidepool/provisioner/v1/workspace_service.grpc.pb.h"

namespace tidepool::ctl {
namespace {

namespace provisionerpb = ::tidepool::provisioner::v1;
namespace commonpb = ::tidepool::common::v1;

constexpr char kUsage[] =
    "usage: tidepoolctl workspaces <command> [flags]\n"
    "  list [--owner USER_ID] [--limit 100]\n"
    "  ensure --owner USER_ID [--profile NAME] [--wait]   create or wake a user's workspace\n"
    "  wake --workspace WS_ID [--wait]\n"
    "  stop --workspace WS_ID                              sleep it; files are kept\n"
    "  restart --workspace WS_ID\n"
    "  delete --workspace WS_ID --confirm WS_ID            removes every file\n"
    "  usage --workspace WS_ID\n"
    "  idle [--workspace WS_ID]                            why each is awake or asleep (scaler)\n";

std::string State(commonpb::WorkspaceState state) {
  std::string name = commonpb::WorkspaceState_Name(state);
  const std::string prefix = "WORKSPACE_STATE_";
  return name.rfind(prefix, 0) == 0 ? absl::AsciiStrToLower(name.substr(prefix.size())) : name;
}

void Print(const provisionerpb::Workspace& w, std::ostream& out) {
  out << absl::StrFormat("%-30s %-30s %-8s %-13s %-9s %s\n", w.workspace_id(), w.owner_user_id(),
                         Printable(w.profile()), State(w.state()), State(w.desired_state()),
                         Printable(w.state_reason()));
}

}  // namespace

int WorkspacesCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.empty() || args[0] == "help" || args[0] == "--help") {
    (args.empty() ? err : out) << kUsage;
    return args.empty() ? kExitUsage : kExitOk;
  }
  const std::string command = args[0];
  if (command == "idle") {
    return IdleStatusCommand(std::vector<std::string>(args.begin() + 1, args.end()), out, err);
  }
  std::set<std::string> with_values;
  std::set<std::string> switches;
  if (command == "list") {
    with_values = {"owner", "limit"};
  } else if (command == "ensure") {
    with_values = {"owner", "profile"};
    switches = {"wait"};
  } else if (command == "wake") {
    with_values = {"workspace"};
    switches = {"wait"};
  } else if (command == "stop" || command == "restart" || command == "usage") {
    with_values = {"workspace"};
  } else if (command == "delete") {
    with_values = {"workspace", "confirm"};
  } else {
    err << "tidepoolctl workspaces: unknown command \"" << command << "\"\n" << kUsage;
    return kExitUsage;
  }
  absl::StatusOr<CtlArgs> parsed = CtlArgs::Parse(
      std::vector<std::string>(args.begin() + 1, args.end()), with_values, switches);
  if (!parsed.ok()) {
    err << "tidepoolctl workspaces " << command << ": " << parsed.status().message() << "\n";
    return kExitUsage;
  }
  if (command == "ensure" && !parsed->Has("owner")) {
    err << "tidepoolctl workspaces ensure: --owner USER_ID is required\n";
    return kExitUsage;
  }
  if (with_values.count("workspace") && !parsed->Has("workspace")) {
    err << "tidepoolctl workspaces " << command << ": --workspace WS_ID is required\n";
    return kExitUsage;
  }
  int limit = 100;
  if (command == "list" &&
      (!absl::SimpleAtoi(parsed->Get("limit", "100"), &limit) || limit < 1 || limit > 1000)) {
    err << "tidepoolctl workspaces list: --limit must be 1 to 1000\n";
    return kExitUsage;
  }
  absl::StatusOr<CtlContext> context = LoadCtlContext(parsed->server_flags());
  if (!context.ok()) {
    err << "tidepoolctl: " << context.status().message() << "\n";
    return kExitFailure;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = DialService(*context, "provisioner");
  if (!channel.ok()) {
    err << "tidepoolctl: " << channel.status().message() << "\n";
    return kExitFailure;
  }
  auto stub = provisionerpb::WorkspaceService::NewStub(*channel);
  grpc::ClientContext call;
  call.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  const std::string workspace = parsed->Get("workspace");
  grpc::Status status;
  if (command == "list") {
    provisionerpb::ListWorkspacesRequest request;
    request.set_owner_user_id(parsed->Get("owner"));
    request.mutable_page()->set_page_size(limit);
    provisionerpb::ListWorkspacesResponse response;
    status = stub->ListWorkspaces(&call, request, &response);
    if (status.ok()) {
      out << absl::StrFormat("%-30s %-30s %-8s %-13s %-9s %s\n", "WORKSPACE", "OWNER", "PROFILE",
                             "STATE", "DESIRED", "REASON");
      for (const auto& w : response.workspaces()) Print(w, out);
    }
  } else if (command == "ensure") {
    provisionerpb::EnsureWorkspaceRequest request;
    request.set_owner_user_id(parsed->Get("owner"));
    request.set_profile(parsed->Get("profile"));
    provisionerpb::EnsureWorkspaceResponse response;
    status = stub->EnsureWorkspace(&call, request, &response);
    if (status.ok() && parsed->Has("wait")) {
      grpc::ClientContext wait_call;
      wait_call.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
      provisionerpb::WakeWorkspaceRequest wake;
      wake.set_workspace_id(response.workspace().workspace_id());
      wake.set_wait_until_ready(true);
      provisionerpb::WakeWorkspaceResponse woken;
      status = stub->WakeWorkspace(&wait_call, wake, &woken);
      if (status.ok()) *response.mutable_workspace() = woken.workspace();
    }
    if (status.ok()) Print(response.workspace(), out);
  } else if (command == "wake") {
    provisionerpb::WakeWorkspaceRequest request;
    request.set_workspace_id(workspace);
    request.set_wait_until_ready(parsed->Has("wait"));
    provisionerpb::WakeWorkspaceResponse response;
    status = stub->WakeWorkspace(&call, request, &response);
    if (status.ok()) Print(response.workspace(), out);
  } else if (command == "stop") {
    provisionerpb::StopWorkspaceRequest request;
    request.set_workspace_id(workspace);
    request.set_reason("admin_request");
    provisionerpb::StopWorkspaceResponse response;
    status = stub->StopWorkspace(&call, request, &response);
    if (status.ok()) Print(response.workspace(), out);
  } else if (command == "restart") {
    provisionerpb::RestartWorkspaceRequest request;
    request.set_workspace_id(workspace);
    provisionerpb::RestartWorkspaceResponse response;
    status = stub->RestartWorkspace(&call, request, &response);
    if (status.ok()) Print(response.workspace(), out);
  } else if (command == "delete") {
    provisionerpb::DeleteWorkspaceRequest request;
    request.set_workspace_id(workspace);
    request.set_confirm_workspace_id(parsed->Get("confirm"));
    provisionerpb::DeleteWorkspaceResponse response;
    status = stub->DeleteWorkspace(&call, request, &response);
    if (status.ok()) out << "deleted " << workspace << "\n";
  } else if (command == "usage") {
    provisionerpb::GetUsageRequest request;
    request.set_workspace_id(workspace);
    provisionerpb::GetUsageResponse response;
    status = stub->GetUsage(&call, request, &response);
    if (status.ok()) {
      const provisionerpb::WorkspaceUsage& u = response.usage();
      out << absl::StrFormat(
          "state %s\ncpu time %.1fs (limit %d millicores)\nmemory %d MiB of %d MiB\n"
          "disk %d MiB of %d MiB\nprocesses %d of %d\n",
          State(response.state()),
          static_cast<double>(u.cpu_time().seconds()) + u.cpu_time().nanos() / 1e9,
          u.cpu_limit_millicores(), u.memory_bytes() >> 20, u.memory_limit_bytes() >> 20,
          u.disk_used_bytes() >> 20, u.disk_quota_bytes() >> 20, u.pid_count(), u.pid_limit());
    }
  }
  if (!status.ok()) {
    err << "tidepoolctl: " << status.error_message() << "\n";
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace tidepool::ctl
