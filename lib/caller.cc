#include "lib/caller.h"

#include "lib/authz.h"

namespace tidepool {
namespace {

std::string Metadata(const grpc::ServerContext& context, const std::string& key) {
  auto range = context.client_metadata().equal_range(key);
  if (range.first == range.second || std::next(range.first) != range.second) {
    return "";  // absent or repeated: not trusted
  }
  return std::string(range.first->second.data(), range.first->second.size());
}

}  // namespace

absl::StatusOr<Caller> ResolveCaller(const grpc::ServerContext& context) {
  Caller caller;
  if (context.auth_context() != nullptr) {
    caller.service = PeerIdentity(*context.auth_context());
  }
  if (caller.service == "tidepoolctl") {
    caller.admin = true;
    return caller;
  }
  if (caller.service != "proxy") {
    return caller;  // another service acting on its own account
  }
  caller.user_id = Metadata(context, "x-tidepool-user-id");
  const std::string role = Metadata(context, "x-tidepool-role");
  if (caller.user_id.size() < 3 || caller.user_id.rfind("u_", 0) != 0 ||
      (role != "user" && role != "admin")) {
    return absl::UnauthenticatedError("the proxy sent no verified end-user identity");
  }
  caller.admin = role == "admin";
  return caller;
}

absl::Status RequireAdmin(const grpc::ServerContext& context) {
  absl::StatusOr<Caller> caller = ResolveCaller(context);
  if (!caller.ok()) {
    return caller.status();
  }
  if (!caller->admin) {
    return absl::PermissionDeniedError("administrators only");
  }
  return absl::OkStatus();
}

}  // namespace tidepool
