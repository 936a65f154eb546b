#include "lib/grpc_logging.h"

#include <grpc/support/log.h>

#include <string>

#include "google/protobuf/stubs/logging.h"
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

void LogFromProtobuf(google::protobuf::LogLevel level, const char* filename, int line,
                     const std::string& message) {
  LogDebug(message, {{"component", "protobuf"},
                     {"protobuf_level", static_cast<int>(level)},
                     {"file", filename == nullptr ? "" : filename},
                     {"line", line}});
}

}  // namespace

void RouteLibraryLogs() {
  google::protobuf::SetLogHandler(&LogFromProtobuf);
  gpr_log_verbosity_init();  // honours GRPC_VERBOSITY (default ERROR) before grpc_init runs
  gpr_set_log_function(&LogFromGrpc);
}

}  // namespace tidepool
