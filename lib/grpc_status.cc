#include "lib/grpc_status.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "lib/log.h"
#include "lib/request_id.h"

namespace tidepool {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) {
    return grpc::Status::OK;
  }
  const auto code = static_cast<grpc::StatusCode>(status.code());
  if (status.code() == absl::StatusCode::kInternal || status.code() == absl::StatusCode::kUnknown) {
    const std::string request_id = NewRequestId();
    LogError("internal error returned to a caller",
             {{"request_id", request_id}, {"status", status.ToString()}});
    return grpc::Status(code, absl::StrCat("internal error (request id ", request_id, ")"));
  }
  return grpc::Status(code, std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) {
    return absl::OkStatus();
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace tidepool
