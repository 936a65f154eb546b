#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

#include "absl/status/statusor.h"
#include "lib/service_main.h"
#include "services/scaler/idle_engine.h"
#include "tidepool/scaler/v1/scaler_service.grpc.pb.h"

namespace tidepool::scaler {

// The gRPC adapter for tidepool.scaler.v1.ScalerService over an IdleEngine. It checks input,
// applies the caller rules (lib/caller.h: a person sees only their own workspaces, and one that
// is not theirs answers exactly like a missing one; policy, pins and capacity are for admins)
// and maps statuses.
// RecordActivity calls per caller identity: `burst` at once, refilled at `per_second` (the
// proxy sends one batch every few seconds).
struct ActivityBudget {
  double burst = 200;
  double per_second = 50;
};

class ScalerServiceImpl final : public v1::ScalerService::Service {
 public:
  explicit ScalerServiceImpl(IdleEngine& engine, ActivityBudget budget = ActivityBudget())
      : engine_(engine), budget_(budget) {}

  grpc::Status RecordActivity(grpc::ServerContext* context, const v1::RecordActivityRequest* request,
                              v1::RecordActivityResponse* response) override;
  grpc::Status GetIdleStatus(grpc::ServerContext* context, const v1::GetIdleStatusRequest* request,
                             v1::GetIdleStatusResponse* response) override;
  grpc::Status SetPolicy(grpc::ServerContext* context, const v1::SetPolicyRequest* request,
                         v1::SetPolicyResponse* response) override;
  grpc::Status GetPolicy(grpc::ServerContext* context, const v1::GetPolicyRequest* request,
                         v1::GetPolicyResponse* response) override;
  grpc::Status PinWorkspace(grpc::ServerContext* context, const v1::PinWorkspaceRequest* request,
                            v1::PinWorkspaceResponse* response) override;
  grpc::Status UnpinWorkspace(grpc::ServerContext* context,
                              const v1::UnpinWorkspaceRequest* request,
                              v1::UnpinWorkspaceResponse* response) override;
  grpc::Status ListDecisions(grpc::ServerContext* context, const v1::ListDecisionsRequest* request,
                             v1::ListDecisionsResponse* response) override;
  grpc::Status GetCapacityReport(grpc::ServerContext* context,
                                 const v1::GetCapacityReportRequest* request,
                                 v1::GetCapacityReportResponse* response) override;
  grpc::Status ListJobRuns(grpc::ServerContext* context, const v1::ListJobRunsRequest* request,
                           v1::ListJobRunsResponse* response) override;
  grpc::Status WakeForMessage(grpc::ServerContext* context,
                              const v1::WakeForMessageRequest* request,
                              v1::WakeForMessageResponse* response) override;

 private:
  // The workspaces a list may show: `requested` if the caller may see it (NOT_FOUND
  // otherwise), else every workspace the caller may see (an empty list for nobody's).
  absl::StatusOr<std::vector<std::string>> VisibleWorkspaces(const grpc::ServerContext& context,
                                                             const std::string& requested,
                                                             bool* all);

  // False once `caller` has used up its RecordActivity budget.
  bool TakeActivityCall(const std::string& caller);

  IdleEngine& engine_;
  const ActivityBudget budget_;
  absl::Mutex budget_mu_;
  // Per caller: tokens left and when they were counted.
  std::map<std::string, std::pair<double, absl::Time>> buckets_ ABSL_GUARDED_BY(budget_mu_);
};

// The service as the platform hosts it (used by tidepool-scaler and the all-in-one tidepool).
ServiceDefinition ScalerServiceDefinition();

}  // namespace tidepool::scaler
