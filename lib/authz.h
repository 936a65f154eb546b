#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/auth_metadata_processor.h"

namespace tidepool {

// The platform identity name of a tidepool.common.v1.Caller value ("auth", "tidepoolctl", ...),
// or "" for CALLER_UNSPECIFIED / unknown values.
std::string CallerName(int caller_enum_value);

// Every identity the platform CA issues certificates for.
const std::vector<std::string>& PlatformIdentities();

// Who may call which method, read from the (tidepool.common.v1.allowed_callers) option on each
// method of the hosted services. A method without the option is callable by nobody. The
// standard grpc.health.v1.Health and grpc.reflection.v1alpha.ServerReflection services are
// open to every platform identity. Immutable after construction; thread-safe.
class MethodAuthorizer {
 public:
  // Builds the table for the services named by full name (e.g. "tidepool.auth.v1.AuthService").
  // Returns NOT_FOUND if a service is not in the generated descriptor pool.
  static absl::StatusOr<MethodAuthorizer> ForServices(
      const std::vector<std::string>& service_full_names);

  // Decides a call to `path` ("/package.Service/Method") by the identity `caller`.
  // Returns OK, UNAUTHENTICATED if `caller` is not a platform identity, or PERMISSION_DENIED
  // if the method is not hosted here or `caller` is not on its allowlist.
  absl::Status Check(absl::string_view path, absl::string_view caller) const;

  // The allowlist of one method path (empty if unknown). For tests and documentation.
  std::set<std::string> AllowedCallers(absl::string_view path) const;

  // Every hosted tidepool method path.
  std::vector<std::string> MethodPaths() const;

 private:
  std::map<std::string, std::set<std::string>, std::less<>> allowed_;
};

// Enforces a MethodAuthorizer on a mutual-TLS server: reads the caller's identity from the
// verified client certificate's Common Name and the method from the request's :path, and fails
// the call before any handler runs. Non-blocking; thread-safe.
class AllowlistAuthProcessor final : public grpc::AuthMetadataProcessor {
 public:
  explicit AllowlistAuthProcessor(MethodAuthorizer authorizer)
      : authorizer_(std::move(authorizer)) {}

  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  const MethodAuthorizer authorizer_;
};

// The verified platform identity of the peer of a server call, from its certificate's CN;
// "" if none. Use inside handlers that need to know which service is calling.
std::string PeerIdentity(const grpc::AuthContext& context);

}  // namespace tidepool
