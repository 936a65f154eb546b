#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "lib/service_main.h"
#include "tidepool/audit/v1/audit_service.grpc.pb.h"

namespace tidepool::audit {

// The gRPC adapter for tidepool.audit.v1.AuditService. Nothing is built yet: every method falls
// through to the generated base class, and the server runner turns its UNIMPLEMENTED reply into one
// that says what is missing (the tamper-evident audit trail (Append, Query, Export, Verify,
// GetCheckpoint) arrives with issue #3).
class AuditServiceImpl final : public v1::AuditService::Service {};

// The service as the platform hosts it (used by tidepool-audit and the all-in-one tidepool).
ServiceDefinition AuditServiceDefinition();

}  // namespace tidepool::audit
