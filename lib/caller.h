#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/server_context.h"

namespace tidepool {

// Who is behind a server call: the mutual-TLS platform identity and, for calls the proxy makes
// on behalf of a person, that person (from the x-tidepool-user-id and x-tidepool-role
// metadata, trusted only from the proxy; see proto/tidepool/common/v1/common.proto).
struct Caller {
  std::string service;  // "proxy", "tidepoolctl", "auth", ...
  std::string user_id;  // empty unless the proxy acts for a person
  bool admin = false;   // tidepoolctl, or a person whose role is admin
};

// Resolves the caller of a server call. Errors: UNAUTHENTICATED if the proxy calls without a
// well-formed end-user identity.
absl::StatusOr<Caller> ResolveCaller(const grpc::ServerContext& context);

// OK for tidepoolctl and for an admin person through the proxy; PERMISSION_DENIED for a
// person who is not an admin and for other services; UNAUTHENTICATED as ResolveCaller.
absl::Status RequireAdmin(const grpc::ServerContext& context);

}  // namespace tidepool
