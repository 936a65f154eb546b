#include "lib/grpc_logging.h"

#include <grpc/support/log.h>

#include "lib/log.h"

namespace tidepool {
namespace {

void LogFromGrpc(gpr_log_func_args* args) {
  const char* severity = "info";
  if (args->severity == GPR_LOG_SEVERITY_ERROR) {
    severity = "error";
  } else if (args->severity == GPR_LOG_SEVERITY_DEBUG) {
    severity = "debug";
  }
  LogDebug(args->message == nullptr ? "" : args->message,
           {{"component", "grpc"},
            {"grpc_severity", severity},
            {"file", args->file == nullptr ? "" : args->file},
            {"line", args->line}});
}

}  // namespace

void RouteGrpcCoreLogs() {
  gpr_log_verbosity_init();  // honours GRPC_VERBOSITY (default ERROR) before grpc_init runs
  gpr_set_log_function(&LogFromGrpc);
}

}  // namespace tidepool
