#pragma once

// The browser's JSON API: POST /api/v1/<service>/<Method> with a JSON body, served by calling
// the platform's gRPC services with protobuf's JSON mapping. The proxy's HTTP edge
// authenticates the person (session, CSRF, method POST, path canonicalized) and hands each
// request to ApiGateway::Handle; this file maps it to one unary gRPC call and the answer back
// to JSON.
//
// Routes. Built once from the generated descriptor pool for tidepool.auth.v1.AuthService
// ("auth"), tidepool.provisioner.v1.WorkspaceService ("provisioner"),
// tidepool.secrets.v1.SecretsService ("secrets"), tidepool.scaler.v1.ScalerService ("scaler")
// and tidepool.audit.v1.AuditService ("audit"). A method is a route "<service>/<Method>" iff it
// is unary, its (tidepool.common.v1.allowed_callers) option lists CALLER_PROXY, and it is not
// proxy-internal (see kDeniedMethods in api_gateway.cc). With today's protos that is:
//   auth:        CreateInvite GetUser ListInvites ListUsers ReinstateUser RevokeInvite
//                RotateSigningKey SetUserRole SetUserTimezone SuspendUser
//   provisioner: DeleteWorkspace EnsureWorkspace GetUsage GetWorkspace ListWorkspaces
//                RestartWorkspace StopWorkspace WakeWorkspace
//   secrets:     Delete GetCatalogue List Put
//   scaler:      GetCapacityReport GetIdleStatus GetPolicy ListDecisions ListJobRuns
//                PinWorkspace SetPolicy UnpinWorkspace
//   audit:       GetCheckpoint Query Verify
//
// Requests. The body is the request message in protobuf JSON ("" means "{}"); field names may
// be lowerCamelCase or the proto names; unknown fields are refused. The call carries the
// metadata x-tidepool-user-id, x-tidepool-role ("admin" or "user"), x-tidepool-request-id and
// x-tidepool-source-address (proto/tidepool/common/v1/common.proto), and the options' deadline.
// The backends, not this gateway, decide what the person may do.
//
// Responses. Always a JSON body. 200 with the response message (lowerCamelCase names, default
// values omitted). Errors are {"code":"<gRPC code name>","message":"..."} with:
//   INVALID_ARGUMENT 400, OUT_OF_RANGE 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403,
//   NOT_FOUND 404, ALREADY_EXISTS 409, ABORTED 409, FAILED_PRECONDITION 412,
//   RESOURCE_EXHAUSTED 429 (413 for an oversized request body), UNIMPLEMENTED 501,
//   UNAVAILABLE 503, CANCELLED 503, DEADLINE_EXCEEDED 504, anything else 500.
// The backend's message is passed on for the 4xx codes except NOT_FOUND; 5xx answers carry a
// fixed text ("internal error" for INTERNAL, UNKNOWN, DATA_LOSS), never backend details.
//
// Every 404 — an unknown route or service, a method that is not exposed, and any NOT_FOUND from
// a backend — is exactly kNotFoundBody, so that "exists but is not yours" cannot be told apart
// from "does not exist".
//
// Logging: one line per request with the route, HTTP status, gRPC code, duration and request
// id. Request and response bodies are never logged (they can carry secret values).

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/status.h"

namespace google::protobuf {
class Descriptor;
}  // namespace google::protobuf

namespace tidepool::proxy {

// The body of every 404 answer of the API (the edge reuses it for its own 404s under /api/).
inline constexpr absl::string_view kNotFoundBody = R"({"code":"NOT_FOUND","message":"not found"})";

// One authenticated API request, as the edge hands it over.
struct ApiRequest {
  // The canonical path after "/api/v1/", e.g. "secrets/List". The edge has already checked the
  // HTTP method (POST) and CSRF.
  std::string path;
  // The JSON request body; "" means "{}".
  std::string body;
  // The verified end user ("u_..."). Required: an empty or malformed one is answered 401.
  std::string user_id;
  // The person's role: sent as x-tidepool-role "admin" or "user".
  bool admin = false;
  // Sent as x-tidepool-request-id, and logged. Omitted from the call if not printable ASCII or
  // longer than 256 bytes.
  std::string request_id;
  // The browser's address, sent as x-tidepool-source-address (omitted like request_id).
  std::string source_address;
};

// The answer to one API request. `body` is always JSON.
struct ApiResponse {
  int http_status = 200;
  std::string body;
};

// {"code": <code>, "message": <message>}, the message cut to a bounded length and escaped.
std::string ApiErrorBody(absl::string_view code, absl::string_view message);

// The HTTP answer for a failed gRPC call, by the table in the file comment (NOT_FOUND is
// kNotFoundBody; 5xx answers never carry the backend's message). The edge uses it too.
ApiResponse ApiErrorFromGrpc(const grpc::Status& status);

struct ApiGatewayOptions {
  // The deadline of each backend call; DEADLINE_EXCEEDED is answered 504. A non-positive value
  // means the default.
  absl::Duration deadline = absl::Seconds(15);
  // Larger request bodies are answered 413 (code RESOURCE_EXHAUSTED) without calling anything.
  size_t max_body_bytes = 1024 * 1024;
};

// Maps API requests onto unary gRPC calls (see the file comment). Thread-safe: Handle may be
// called from any number of threads at once.
class ApiGateway {
 public:
  // `channel_for` returns the channel to a service, named "auth", "provisioner", "secrets",
  // "scaler" or "audit"; nullptr means the service is unreachable (answered 503 UNAVAILABLE).
  // It is called on every routed request, possibly from several threads at once, so it must be
  // thread-safe and should be cheap (e.g. return a cached channel).
  explicit ApiGateway(
      std::function<std::shared_ptr<grpc::Channel>(absl::string_view service)> channel_for,
      ApiGatewayOptions options = {});

  ApiGateway(const ApiGateway&) = delete;
  ApiGateway& operator=(const ApiGateway&) = delete;

  // Handles one request asynchronously. `done` is called exactly once: inline for an answer
  // that needs no backend (404, 400, 401, 413, 503 without a channel), otherwise on a gRPC
  // callback thread when the call ends. Never blocks on the network. A call in flight holds
  // everything it needs (including its channel), so it completes even if the gateway is
  // destroyed first; `done` must stay callable until then.
  void Handle(ApiRequest request, std::function<void(ApiResponse)> done) const;

  // The routes served ("auth/ListUsers", ...), sorted.
  std::vector<std::string> Routes() const;

 private:
  struct Route {
    std::string service;      // "secrets"
    std::string grpc_method;  // "/tidepool.secrets.v1.SecretsService/List"
    const google::protobuf::Descriptor* input = nullptr;
    const google::protobuf::Descriptor* output = nullptr;
  };

  const std::function<std::shared_ptr<grpc::Channel>(absl::string_view service)> channel_for_;
  const ApiGatewayOptions options_;
  std::map<std::string, Route, std::less<>> routes_;  // by "<service>/<Method>"; immutable
};

}  // namespace tidepool::proxy
