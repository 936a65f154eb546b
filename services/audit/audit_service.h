#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/service_main.h"
#include "services/audit/audit_log.h"
#include "tidepool/audit/v1/audit_service.grpc.pb.h"

namespace tidepool::audit {

// The gRPC adapter for tidepool.audit.v1.AuditService over an AuditLog: maps protos and
// statuses, stamps the caller's mTLS identity as source_service, and lets only administrators
// (tidepoolctl, or an admin person through the proxy) read the trail. The per-method caller
// allowlists are enforced before these handlers run (lib/authz.h). Thread-safe.
class AuditServiceImpl final : public v1::AuditService::Service {
 public:
  // `log` must outlive the service.
  explicit AuditServiceImpl(AuditLog& log) : log_(log) {}

  grpc::Status Append(grpc::ServerContext* context, const v1::AppendRequest* request,
                      v1::AppendResponse* response) override;
  grpc::Status Query(grpc::ServerContext* context, const v1::QueryRequest* request,
                     v1::QueryResponse* response) override;
  grpc::Status Export(grpc::ServerContext* context, const v1::ExportRequest* request,
                      grpc::ServerWriter<v1::ExportResponse>* writer) override;
  grpc::Status Verify(grpc::ServerContext* context, const v1::VerifyRequest* request,
                      v1::VerifyResponse* response) override;
  grpc::Status GetCheckpoint(grpc::ServerContext* context, const v1::GetCheckpointRequest* request,
                             v1::GetCheckpointResponse* response) override;

 private:
  AuditLog& log_;
};

// The most events one Append may carry.
inline constexpr int kMaxAppendBatch = 1000;

// The service as the platform hosts it (used by tidepool-audit and the all-in-one tidepool):
// the log lives in <data_dir>/audit/, a background task signs due checkpoints every second,
// and a final checkpoint is signed when the server stops.
ServiceDefinition AuditServiceDefinition();

}  // namespace tidepool::audit
