#pragma once

// What the scaler needs from the rest of the platform: the workspaces and their states (the
// provisioner), sleep and wake (the provisioner), and each running workspace's scheduled jobs
// (its supervisor's status, reached through the provisioner's endpoint lookup). An interface,
// so the idle loop is tested with a fake platform and a fake clock.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "tidepool/common/v1/common.pb.h"
#include "tidepool/supervisor/v1/supervisor_service.pb.h"

namespace tidepool::scaler {

struct WorkspaceView {
  std::string workspace_id;
  std::string owner_user_id;
  common::v1::WorkspaceState state = common::v1::WORKSPACE_STATE_UNSPECIFIED;
  // When it entered its current state (for RUNNING: when it started running).
  absl::Time last_transition_time = absl::InfinitePast();
};

// A running workspace's own view of its work.
struct WorkspaceActivityView {
  std::vector<supervisor::v1::ScheduledJob> jobs;
  // Messaging channels the tool has connected ("slack"); empty when none or unknown.
  std::vector<std::string> messaging_channels;
  // The profile's work processes running now (a build, a long agent task).
  std::vector<std::string> work_processes;
};

class WorkspaceDirectory {
 public:
  virtual ~WorkspaceDirectory() = default;

  // Every workspace that is not DELETED.
  virtual absl::StatusOr<std::vector<WorkspaceView>> List() = 0;
  // One workspace; NOT_FOUND if it does not exist (or is DELETED).
  virtual absl::StatusOr<WorkspaceView> Get(const std::string& workspace_id) = 0;
  // Puts a running workspace to sleep (volume kept). `reason` is audited by the provisioner.
  virtual absl::Status Sleep(const std::string& workspace_id, const std::string& reason) = 0;
  // Wakes a sleeping workspace without waiting for it; returns its state after the call.
  virtual absl::StatusOr<common::v1::WorkspaceState> Wake(const std::string& workspace_id,
                                                          const std::string& reason) = 0;
  // A running workspace's scheduled jobs and channels, from its supervisor.
  virtual absl::StatusOr<WorkspaceActivityView> Inspect(const std::string& workspace_id) = 0;
};

// The directory over the provisioner's gRPC API (as the scaler's mTLS identity) and the
// supervisors' status route. `provisioner` gives the current channel (null: not reachable yet,
// every call then fails UNAVAILABLE).
std::unique_ptr<WorkspaceDirectory> NewGrpcWorkspaceDirectory(
    std::function<std::shared_ptr<grpc::Channel>()> provisioner);

}  // namespace tidepool::scaler
