#include "services/audit/audit_service.h"

#include <memory>
#include <utility>

namespace tidepool::audit {

ServiceDefinition AuditServiceDefinition() {
  ServiceDefinition definition;
  definition.name = "audit";
  definition.create =
      [](const ServiceContext& /*context*/) -> absl::StatusOr<std::vector<HostedService>> {
    std::vector<HostedService> hosted;
    hosted.push_back(HostedService{"tidepool.audit.v1.AuditService",
                                   "the tamper-evident audit trail (Append, Query, Export, Verify, "
                                   "GetCheckpoint) arrives with issue #3",
                                   std::make_unique<AuditServiceImpl>()});
    return hosted;
  };
  return definition;
}

}  // namespace tidepool::audit
