// tidepool-audit: the audit service on its own (see README.md beside this file).
#include "lib/service_main.h"
#include "services/audit/audit_service.h"

int main(int argc, char** argv) {
  return tidepool::ServerBinaryMain("tidepool-audit", argc, argv,
                                    {tidepool::audit::AuditServiceDefinition()});
}
