#include "services/proxy/api_gateway.h"

#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/client_context.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "grpcpp/support/status.h"
#include "grpcpp/support/stub_options.h"
#include "lib/log.h"
#include "nlohmann/json.hpp"
#include "tidepool/audit/v1/audit_service.pb.h"
#include "tidepool/auth/v1/auth_service.pb.h"
#include "tidepool/common/v1/options.pb.h"
#include "tidepool/provisioner/v1/workspace_service.pb.h"
#include "tidepool/scaler/v1/scaler_service.pb.h"
#include "tidepool/secrets/v1/secrets_service.pb.h"

namespace tidepool::proxy {
namespace {

namespace protobuf = ::google::protobuf;

// The services behind the API. `anchor` returns a message descriptor of the service's proto
// file; calling it links that generated file in (and with it its descriptors in the generated
// pool) even though nothing else here names its types.
struct ServiceSpec {
  absl::string_view short_name;
  absl::string_view full_name;
  const protobuf::Descriptor* (*anchor)();
};
const std::array<ServiceSpec, 5> kServices = {{
    {"auth", "tidepool.auth.v1.AuthService", &auth::v1::ListUsersRequest::descriptor},
    {"provisioner", "tidepool.provisioner.v1.WorkspaceService",
     &provisioner::v1::GetWorkspaceRequest::descriptor},
    {"secrets", "tidepool.secrets.v1.SecretsService", &secrets::v1::PutRequest::descriptor},
    {"scaler", "tidepool.scaler.v1.ScalerService", &scaler::v1::GetPolicyRequest::descriptor},
    {"audit", "tidepool.audit.v1.AuditService", &audit::v1::QueryRequest::descriptor},
}};

// Methods that CALLER_PROXY may call but that are not for browsers: the proxy uses them itself,
// or the edge serves them through its own routes (sign-in, sessions), or they return secrets
// meant only for the proxy.
//   auth:        ListProviders BeginSignIn CompleteSignIn SignInWithPassword CompleteSetup
//                RefreshSession SignOut SignOutEverywhere (edge's sign-in and session routes;
//                they return session tokens), VerifySession GetPublicKeys WatchRevocations
//                (the proxy's session checks).
//   provisioner: GetEndpoint (returns the per-workspace supervisor credential),
//                ResolveEgressCredential (the egress proxy's preamble check).
//   secrets:     ResolveForWorkspace (plaintext secrets; the provisioner's alone anyway).
//   scaler:      RecordActivity (the proxy reports activity itself), WakeForMessage (the
//                messaging relay's hook: it wakes any workspace by id, without an owner check).
//   audit:       every method starting with Append, Emit or Record (writing the log).
// Streaming methods (WatchWorkspaces, audit Export, ...) are never routes.
const std::array<absl::string_view, 18> kDeniedMethods = {
    "tidepool.auth.v1.AuthService.ListProviders",
    "tidepool.auth.v1.AuthService.BeginSignIn",
    "tidepool.auth.v1.AuthService.CompleteSignIn",
    "tidepool.auth.v1.AuthService.SignInWithPassword",
    "tidepool.auth.v1.AuthService.CompleteSetup",
    "tidepool.auth.v1.AuthService.RefreshSession",
    "tidepool.auth.v1.AuthService.SignOut",
    "tidepool.auth.v1.AuthService.SignOutEverywhere",
    "tidepool.auth.v1.AuthService.VerifySession",
    "tidepool.auth.v1.AuthService.GetPublicKeys",
    "tidepool.auth.v1.AuthService.WatchRevocations",
    "tidepool.provisioner.v1.WorkspaceService.GetEndpoint",
    "tidepool.provisioner.v1.WorkspaceService.ResolveEgressCredential",
    "tidepool.secrets.v1.SecretsService.ResolveForWorkspace",
    "tidepool.scaler.v1.ScalerService.RecordActivity",
    "tidepool.scaler.v1.ScalerService.WakeForMessage",
    "tidepool.audit.v1.AuditService.Append",
    "tidepool.audit.v1.AuditService.Emit",
};

bool IsDenied(const protobuf::MethodDescriptor& method) {
  if (std::find(kDeniedMethods.begin(), kDeniedMethods.end(), method.full_name()) !=
      kDeniedMethods.end()) {
    return true;
  }
  if (method.service()->full_name() == "tidepool.audit.v1.AuditService") {
    const std::string& name = method.name();
    return absl::StartsWith(name, "Append") || absl::StartsWith(name, "Emit") ||
           absl::StartsWith(name, "Record");
  }
  return false;
}

bool AllowsProxy(const protobuf::MethodDescriptor& method) {
  const protobuf::MethodOptions& options = method.options();
  for (int i = 0; i < options.ExtensionSize(common::v1::allowed_callers); ++i) {
    if (options.GetExtension(common::v1::allowed_callers, i) == common::v1::CALLER_PROXY) {
      return true;
    }
  }
  return false;
}

constexpr size_t kMaxMessageBytes = 200;
constexpr size_t kMaxMetadataValueBytes = 256;
constexpr size_t kMaxLoggedPathBytes = 200;

// A value gRPC accepts as ASCII metadata (an invalid one would abort the call at start).
bool IsMetadataValue(absl::string_view value) {
  return value.size() <= kMaxMetadataValueBytes &&
         std::all_of(value.begin(), value.end(), [](char c) { return c >= 0x20 && c <= 0x7e; });
}

// {"code":..,"message":..}, with `message` cut to kMaxMessageBytes and properly escaped (invalid
// UTF-8 replaced).
}  // namespace

std::string ApiErrorBody(absl::string_view code, absl::string_view message) {
  if (message.size() > kMaxMessageBytes) {
    message = message.substr(0, kMaxMessageBytes);
  }
  nlohmann::json body = {{"code", std::string(code)}, {"message", std::string(message)}};
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

ApiResponse NotFound() { return ApiResponse{404, std::string(kNotFoundBody)}; }

std::string ErrorBody(absl::string_view code, absl::string_view message) {
  return ApiErrorBody(code, message);
}

std::string CodeName(grpc::StatusCode code) {
  // gRPC's codes and absl's share their numbers and names.
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

}  // namespace

ApiResponse ApiErrorFromGrpc(const grpc::Status& status) {
  const grpc::StatusCode code = status.error_code();
  const std::string& message = status.error_message();
  switch (code) {
    case grpc::StatusCode::NOT_FOUND:
      return NotFound();
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return {400, ErrorBody(CodeName(code), message)};
    case grpc::StatusCode::UNAUTHENTICATED:
      return {401, ErrorBody(CodeName(code), message)};
    case grpc::StatusCode::PERMISSION_DENIED:
      return {403, ErrorBody(CodeName(code), message)};
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::ABORTED:
      return {409, ErrorBody(CodeName(code), message)};
    case grpc::StatusCode::FAILED_PRECONDITION:
      return {412, ErrorBody(CodeName(code), message)};
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return {429, ErrorBody(CodeName(code), message)};
    case grpc::StatusCode::UNIMPLEMENTED:
      return {501, ErrorBody(CodeName(code), "not implemented")};
    case grpc::StatusCode::UNAVAILABLE:
      return {503, ErrorBody(CodeName(code), "service unavailable")};
    case grpc::StatusCode::CANCELLED:
      return {503, ErrorBody(CodeName(code), "request cancelled")};
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return {504, ErrorBody(CodeName(code), "deadline exceeded")};
    default:  // INTERNAL, UNKNOWN, DATA_LOSS and anything unexpected
      return {500, ErrorBody("INTERNAL", "internal error")};
  }
}

namespace {

ApiResponse InternalError() { return {500, ErrorBody("INTERNAL", "internal error")}; }

// What a parse error says, without echoing the input: protobuf's excerpt around the error (the
// lines after the first) and the rejected value in `(field): invalid value "..." for type T`
// are dropped (a mistyped field may hold a secret). ErrorBody cuts it to kMaxMessageBytes.
std::string JsonErrorMessage(absl::string_view text) {
  size_t newline = text.find('\n');
  if (newline != absl::string_view::npos) {
    text = text.substr(0, newline);
  }
  constexpr absl::string_view kInvalidValue = "invalid value ";
  const size_t value_at = text.find(kInvalidValue);
  const size_t type_at = text.rfind(" for type ");
  if (value_at != absl::string_view::npos && type_at != absl::string_view::npos &&
      type_at > value_at) {
    return absl::StrCat("invalid JSON request: ", text.substr(0, value_at), "invalid value",
                        text.substr(type_at));
  }
  return absl::StrCat("invalid JSON request: ", text);
}

void LogRequest(absl::string_view route, int http_status, absl::string_view grpc_code,
                absl::Time start, absl::string_view request_id) {
  LogInfo("api request", {{"route", route.substr(0, kMaxLoggedPathBytes)},
                          {"http_status", http_status},
                          {"grpc_code", grpc_code},
                          {"duration_ms", absl::ToDoubleMilliseconds(absl::Now() - start)},
                          {"request_id", request_id.substr(0, kMaxMetadataValueBytes)}});
}

// Everything one backend call needs until its completion callback, which deletes it.
struct CallState {
  explicit CallState(std::shared_ptr<grpc::Channel> channel) : stub(std::move(channel)) {}

  grpc::GenericStub stub;  // holds the channel
  grpc::ClientContext context;
  grpc::ByteBuffer request;
  grpc::ByteBuffer response;
  std::string grpc_method;
  std::string route;
  std::string request_id;
  const protobuf::Message* response_prototype = nullptr;  // from the generated factory
  absl::Time start = absl::InfinitePast();
  std::function<void(ApiResponse)> done;
};

// Turns a finished call into the answer.
ApiResponse Finish(const CallState& call, const grpc::Status& status) {
  if (!status.ok()) {
    return ApiErrorFromGrpc(status);
  }
  std::vector<grpc::Slice> slices;
  if (!call.response.Dump(&slices).ok()) {
    return InternalError();
  }
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  std::unique_ptr<protobuf::Message> message(call.response_prototype->New());
  if (!message->ParseFromString(bytes)) {
    LogError("api response does not parse", {{"route", call.route}});
    return InternalError();
  }
  std::string json;
  if (!protobuf::util::MessageToJsonString(*message, &json).ok()) {
    LogError("api response cannot be written as JSON", {{"route", call.route}});
    return InternalError();
  }
  return {200, std::move(json)};
}

}  // namespace

ApiGateway::ApiGateway(
    std::function<std::shared_ptr<grpc::Channel>(absl::string_view service)> channel_for,
    ApiGatewayOptions options)
    : channel_for_(std::move(channel_for)), options_(options) {
  const protobuf::DescriptorPool* pool = protobuf::DescriptorPool::generated_pool();
  for (const ServiceSpec& spec : kServices) {
    spec.anchor();
    const protobuf::ServiceDescriptor* service =
        pool->FindServiceByName(std::string(spec.full_name));
    if (service == nullptr) {
      LogError("api gateway: service missing from the descriptor pool",
               {{"service", spec.full_name}});
      continue;
    }
    for (int i = 0; i < service->method_count(); ++i) {
      const protobuf::MethodDescriptor& method = *service->method(i);
      if (method.client_streaming() || method.server_streaming() || !AllowsProxy(method) ||
          IsDenied(method)) {
        continue;
      }
      routes_.emplace(absl::StrCat(spec.short_name, "/", method.name()),
                      Route{std::string(spec.short_name),
                            absl::StrCat("/", service->full_name(), "/", method.name()),
                            method.input_type(), method.output_type()});
    }
  }
}

std::vector<std::string> ApiGateway::Routes() const {
  std::vector<std::string> names;
  names.reserve(routes_.size());
  for (const auto& [name, route] : routes_) {
    names.push_back(name);
  }
  return names;  // std::map keeps them sorted
}

void ApiGateway::Handle(ApiRequest request, std::function<void(ApiResponse)> done) const {
  const absl::Time start = absl::Now();
  auto answer_locally = [&](ApiResponse response, absl::string_view code) {
    LogRequest(request.path, response.http_status, code, start, request.request_id);
    done(std::move(response));
  };

  if (request.body.size() > options_.max_body_bytes) {
    answer_locally(
        {413, ErrorBody("RESOURCE_EXHAUSTED",
                        absl::StrCat("request body exceeds ", options_.max_body_bytes, " bytes"))},
        "RESOURCE_EXHAUSTED");
    return;
  }
  auto found = routes_.find(request.path);
  if (found == routes_.end()) {
    answer_locally(NotFound(), "NOT_FOUND");
    return;
  }
  const Route& route = found->second;
  if (!absl::StartsWith(request.user_id, "u_") || !IsMetadataValue(request.user_id)) {
    answer_locally({401, ErrorBody("UNAUTHENTICATED", "no verified user")}, "UNAUTHENTICATED");
    return;
  }

  const protobuf::Message* request_prototype =
      protobuf::MessageFactory::generated_factory()->GetPrototype(route.input);
  const protobuf::Message* response_prototype =
      protobuf::MessageFactory::generated_factory()->GetPrototype(route.output);
  if (request_prototype == nullptr || response_prototype == nullptr) {
    answer_locally(InternalError(), "INTERNAL");
    return;
  }
  std::unique_ptr<protobuf::Message> message(request_prototype->New());
  protobuf::util::JsonParseOptions parse_options;
  parse_options.ignore_unknown_fields = false;
  const absl::string_view body = request.body.empty() ? absl::string_view("{}") : request.body;
  const auto parsed = protobuf::util::JsonStringToMessage(
      protobuf::StringPiece(body.data(), body.size()), message.get(), parse_options);
  if (!parsed.ok()) {
    const auto text = parsed.message();
    answer_locally({400, ErrorBody("INVALID_ARGUMENT",
                                   JsonErrorMessage(absl::string_view(text.data(), text.size())))},
                   "INVALID_ARGUMENT");
    return;
  }
  std::string serialized;
  if (!message->SerializeToString(&serialized)) {
    answer_locally(InternalError(), "INTERNAL");
    return;
  }

  std::shared_ptr<grpc::Channel> channel = channel_for_ ? channel_for_(route.service) : nullptr;
  if (channel == nullptr) {
    answer_locally({503, ErrorBody("UNAVAILABLE", "service unavailable")}, "UNAVAILABLE");
    return;
  }

  auto call = std::make_unique<CallState>(std::move(channel));
  grpc::Slice slice(serialized);
  call->request = grpc::ByteBuffer(&slice, 1);
  call->grpc_method = route.grpc_method;
  call->route = found->first;
  call->response_prototype = response_prototype;
  call->start = start;
  call->done = std::move(done);
  const absl::Duration deadline =
      options_.deadline > absl::ZeroDuration() ? options_.deadline : ApiGatewayOptions{}.deadline;
  call->context.set_deadline(absl::ToChronoTime(start + deadline));
  call->context.AddMetadata("x-tidepool-user-id", request.user_id);
  call->context.AddMetadata("x-tidepool-role", request.admin ? "admin" : "user");
  if (!request.request_id.empty() && IsMetadataValue(request.request_id)) {
    call->context.AddMetadata("x-tidepool-request-id", request.request_id);
    call->request_id = std::move(request.request_id);
  }
  if (!request.source_address.empty() && IsMetadataValue(request.source_address)) {
    call->context.AddMetadata("x-tidepool-source-address", request.source_address);
  }

  CallState* raw = call.release();  // owned by the callback from here on
  raw->stub.UnaryCall(&raw->context, raw->grpc_method, grpc::StubOptions(), &raw->request,
                      &raw->response, [raw](const grpc::Status& status) {
                        std::unique_ptr<CallState> owned(raw);
                        ApiResponse response = Finish(*owned, status);
                        LogRequest(owned->route, response.http_status,
                                   CodeName(status.error_code()), owned->start, owned->request_id);
                        std::function<void(ApiResponse)> done = std::move(owned->done);
                        owned.reset();
                        done(std::move(response));
                      });
}

}  // namespace tidepool::proxy
