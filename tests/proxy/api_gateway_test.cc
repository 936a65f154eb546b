#include "services/proxy/api_gateway.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "tests/testing/loopback_grpc_server.h"
#include "tidepool/auth/v1/auth_service.grpc.pb.h"
#include "tidepool/provisioner/v1/workspace_service.grpc.pb.h"
#include "tidepool/secrets/v1/secrets_service.grpc.pb.h"

namespace tidepool::proxy {
namespace {

using ::testing::Contains;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

constexpr absl::string_view kAlice = "u_alicealicealicealicealice2";
constexpr absl::string_view kKnownWorkspace = "ws_known";

// The x-tidepool-* metadata of a server call.
std::map<std::string, std::string> TidepoolMetadata(const grpc::ServerContext& context) {
  std::map<std::string, std::string> metadata;
  for (const auto& [key, value] : context.client_metadata()) {
    std::string name(key.data(), key.size());
    if (name.rfind("x-tidepool-", 0) == 0) {
      metadata[name] = std::string(value.data(), value.size());
    }
  }
  return metadata;
}

// What a fake backend saw. Thread-safe.
class Recorder {
 public:
  void Record(absl::string_view method, const grpc::ServerContext& context,
              const google::protobuf::Message& request) {
    absl::MutexLock lock(&mu_);
    ++calls_[std::string(method)];
    metadata_ = TidepoolMetadata(context);
    request_ = request.ShortDebugString();
  }
  int Calls(absl::string_view method) const {
    absl::MutexLock lock(&mu_);
    auto it = calls_.find(std::string(method));
    return it == calls_.end() ? 0 : it->second;
  }
  std::map<std::string, std::string> LastMetadata() const {
    absl::MutexLock lock(&mu_);
    return metadata_;
  }
  std::string LastRequest() const {
    absl::MutexLock lock(&mu_);
    return request_;
  }
  // The status every following call of Put returns instead of succeeding.
  void FailWith(grpc::Status status) {
    absl::MutexLock lock(&mu_);
    failure_ = std::move(status);
  }
  grpc::Status Failure() const {
    absl::MutexLock lock(&mu_);
    return failure_;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, int> calls_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> metadata_ ABSL_GUARDED_BY(mu_);
  std::string request_ ABSL_GUARDED_BY(mu_);
  grpc::Status failure_ ABSL_GUARDED_BY(mu_) = grpc::Status::OK;
};

class FakeSecretsService final : public secrets::v1::SecretsService::Service {
 public:
  explicit FakeSecretsService(Recorder& recorder) : recorder_(recorder) {}

  grpc::Status Put(grpc::ServerContext* context, const secrets::v1::PutRequest* request,
                   secrets::v1::PutResponse* response) override {
    recorder_.Record("Put", *context, *request);
    grpc::Status failure = recorder_.Failure();
    if (!failure.ok()) {
      return failure;
    }
    secrets::v1::SecretMetadata* secret = response->mutable_secret();
    secret->set_user_id(TidepoolMetadata(*context)["x-tidepool-user-id"]);
    secret->set_provider_id(request->provider_id());
    secret->set_field_id(request->field_id());
    secret->set_version(3);
    secret->set_fingerprint("0123456789abcdef");
    secret->mutable_create_time()->set_seconds(1700000000);
    response->set_applies_without_restart(true);
    return grpc::Status::OK;
  }

  grpc::Status List(grpc::ServerContext* context, const secrets::v1::ListRequest* request,
                    secrets::v1::ListResponse* response) override {
    recorder_.Record("List", *context, *request);
    // Echoes the filter, so that concurrent callers can check they got their own answer.
    response->add_capabilities(absl::StrCat("model.", request->provider_id()));
    return grpc::Status::OK;
  }

  grpc::Status Delete(grpc::ServerContext* context, const secrets::v1::DeleteRequest* request,
                      secrets::v1::DeleteResponse* /*response*/) override {
    recorder_.Record("Delete", *context, *request);
    return grpc::Status::OK;
  }

  grpc::Status ResolveForWorkspace(grpc::ServerContext* context,
                                   const secrets::v1::ResolveForWorkspaceRequest* request,
                                   secrets::v1::ResolveForWorkspaceResponse* response) override {
    recorder_.Record("ResolveForWorkspace", *context, *request);
    response->add_secrets()->set_value("sk-plaintext");
    return grpc::Status::OK;
  }

 private:
  Recorder& recorder_;
};

class FakeWorkspaceService final : public provisioner::v1::WorkspaceService::Service {
 public:
  explicit FakeWorkspaceService(Recorder& recorder) : recorder_(recorder) {}

  grpc::Status GetWorkspace(grpc::ServerContext* context,
                            const provisioner::v1::GetWorkspaceRequest* request,
                            provisioner::v1::GetWorkspaceResponse* response) override {
    recorder_.Record("GetWorkspace", *context, *request);
    if (request->workspace_id() != kKnownWorkspace) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("workspace ", request->workspace_id(),
                                       " belongs to u_someoneelse and is RUNNING"));
    }
    FillWorkspace(response->mutable_workspace());
    return grpc::Status::OK;
  }

  // Waits until Release() (or 5 s) before answering: for deadlines and calls in flight.
  grpc::Status WakeWorkspace(grpc::ServerContext* context,
                             const provisioner::v1::WakeWorkspaceRequest* request,
                             provisioner::v1::WakeWorkspaceResponse* response) override {
    recorder_.Record("WakeWorkspace", *context, *request);
    release_.WaitForNotificationWithTimeout(absl::Seconds(5));
    FillWorkspace(response->mutable_workspace());
    return grpc::Status::OK;
  }
  void Release() {
    if (!release_.HasBeenNotified()) {
      release_.Notify();
    }
  }

  grpc::Status GetEndpoint(grpc::ServerContext* context,
                           const provisioner::v1::GetEndpointRequest* request,
                           provisioner::v1::GetEndpointResponse* response) override {
    recorder_.Record("GetEndpoint", *context, *request);
    response->set_credential("supervisor-credential");
    return grpc::Status::OK;
  }

  grpc::Status WatchWorkspaces(
      grpc::ServerContext* context, const provisioner::v1::WatchWorkspacesRequest* request,
      grpc::ServerWriter<provisioner::v1::WatchWorkspacesResponse>* /*writer*/) override {
    recorder_.Record("WatchWorkspaces", *context, *request);
    return grpc::Status::OK;
  }

 private:
  static void FillWorkspace(provisioner::v1::Workspace* workspace) {
    workspace->set_workspace_id(std::string(kKnownWorkspace));
    workspace->set_owner_user_id(std::string(kAlice));
    workspace->set_state(common::v1::WORKSPACE_STATE_RUNNING);
    workspace->set_state_reason("user_request");
  }

  Recorder& recorder_;
  absl::Notification release_;
};

class FakeAuthService final : public auth::v1::AuthService::Service {
 public:
  explicit FakeAuthService(Recorder& recorder) : recorder_(recorder) {}

  grpc::Status SignInWithPassword(grpc::ServerContext* context,
                                  const auth::v1::SignInWithPasswordRequest* request,
                                  auth::v1::SignInWithPasswordResponse* /*response*/) override {
    recorder_.Record("SignInWithPassword", *context, *request);
    return grpc::Status::OK;
  }

 private:
  Recorder& recorder_;
};

// Calls `gateway` and waits (at most 10 s) for its answer; fails the test unless `done` runs
// exactly once.
ApiResponse Call(const ApiGateway& gateway, ApiRequest request) {
  struct Outcome {
    absl::Notification done;
    std::atomic<int> calls{0};
    ApiResponse response;
  };
  auto outcome = std::make_shared<Outcome>();
  gateway.Handle(std::move(request), [outcome](ApiResponse response) {
    if (outcome->calls.fetch_add(1) == 0) {
      outcome->response = std::move(response);
      outcome->done.Notify();
    }
  });
  EXPECT_TRUE(outcome->done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(outcome->calls.load(), 1);
  return outcome->response;
}

ApiRequest Request(absl::string_view path, absl::string_view body) {
  ApiRequest request;
  request.path = std::string(path);
  request.body = std::string(body);
  request.user_id = std::string(kAlice);
  request.request_id = "req-1";
  request.source_address = "203.0.113.7";
  return request;
}

// Parses an answer body as a JSON object (checks that it is well-formed JSON).
google::protobuf::Struct ParseJson(const std::string& body) {
  google::protobuf::Struct parsed;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(body, &parsed).ok()) << body;
  return parsed;
}

class ApiGatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tidepool::testing::LoopbackGrpcServer started =
        tidepool::testing::LoopbackGrpcServer::Start({&secrets_, &workspaces_, &auth_});
    ASSERT_NE(started.server, nullptr);
    server_ = std::move(started.server);
    port_ = started.port;
    channel_ = started.channel;
  }

  void TearDown() override {
    workspaces_.Release();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  std::unique_ptr<ApiGateway> MakeGateway(ApiGatewayOptions options = {}) {
    return std::make_unique<ApiGateway>(
        [this](absl::string_view service) -> std::shared_ptr<grpc::Channel> {
          absl::MutexLock lock(&mu_);
          ++channel_requests_[std::string(service)];
          if (service == "scaler") {
            return nullptr;  // "down"
          }
          return channel_;
        },
        options);
  }

  int ChannelRequests(absl::string_view service) {
    absl::MutexLock lock(&mu_);
    return channel_requests_[std::string(service)];
  }

  Recorder recorder_;
  FakeSecretsService secrets_{recorder_};
  FakeWorkspaceService workspaces_{recorder_};
  FakeAuthService auth_{recorder_};
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  absl::Mutex mu_;
  std::map<std::string, int> channel_requests_ ABSL_GUARDED_BY(mu_);
};

TEST_F(ApiGatewayTest, PutRoundTripsJsonWithProtoNamesInAndCamelCaseOut) {
  auto gateway = MakeGateway();
  ApiResponse response = Call(*gateway, Request("secrets/Put", R"({"provider_id":"anthropic",
      "field_id":"api_key","value":"sk-ant-SECRET","expected_version":"-1"})"));

  EXPECT_EQ(response.http_status, 200);
  EXPECT_EQ(response.body,
            absl::StrCat(R"({"secret":{"userId":")", kAlice,
                         R"(","providerId":"anthropic","fieldId":"api_key",)"
                         R"("createTime":"2023-11-14T22:13:20Z","version":"3",)"
                         R"("fingerprint":"0123456789abcdef"},"appliesWithoutRestart":true})"));
  EXPECT_EQ(recorder_.Calls("Put"), 1);
  EXPECT_EQ(recorder_.LastRequest(),
            R"(provider_id: "anthropic" field_id: "api_key" value: "sk-ant-SECRET" )"
            R"(expected_version: -1)");
}

TEST_F(ApiGatewayTest, CamelCaseInputAndEmptyBodyAreAccepted) {
  auto gateway = MakeGateway();
  ApiResponse response =
      Call(*gateway, Request("secrets/List", R"({"userId":"u_bob","providerId":"openai"})"));
  EXPECT_EQ(response.http_status, 200);
  EXPECT_EQ(response.body, R"({"capabilities":["model.openai"]})");
  EXPECT_EQ(recorder_.LastRequest(), R"(user_id: "u_bob" provider_id: "openai")");

  response = Call(*gateway, Request("secrets/List", ""));
  EXPECT_EQ(response.http_status, 200);
  EXPECT_EQ(response.body, R"({"capabilities":["model."]})");
  EXPECT_EQ(recorder_.LastRequest(), "");
  EXPECT_EQ(recorder_.Calls("List"), 2);
}

TEST_F(ApiGatewayTest, SendsIdentityMetadata) {
  auto gateway = MakeGateway();
  ApiRequest request = Request("secrets/List", "{}");
  EXPECT_EQ(Call(*gateway, request).http_status, 200);
  EXPECT_EQ(recorder_.LastMetadata(), (std::map<std::string, std::string>{
                                          {"x-tidepool-request-id", "req-1"},
                                          {"x-tidepool-role", "user"},
                                          {"x-tidepool-source-address", "203.0.113.7"},
                                          {"x-tidepool-user-id", std::string(kAlice)},
                                      }));

  request.admin = true;
  request.request_id = "req-2";
  EXPECT_EQ(Call(*gateway, request).http_status, 200);
  EXPECT_EQ(recorder_.LastMetadata()["x-tidepool-role"], "admin");
  EXPECT_EQ(recorder_.LastMetadata()["x-tidepool-request-id"], "req-2");
}

TEST_F(ApiGatewayTest, DropsMetadataValuesGrpcWouldRefuse) {
  auto gateway = MakeGateway();
  ApiRequest request = Request("secrets/List", "{}");
  request.request_id = "req\r\nx-evil: 1";
  request.source_address = std::string(300, 'a');
  EXPECT_EQ(Call(*gateway, request).http_status, 200);
  EXPECT_EQ(recorder_.LastMetadata(), (std::map<std::string, std::string>{
                                          {"x-tidepool-role", "user"},
                                          {"x-tidepool-user-id", std::string(kAlice)},
                                      }));
}

TEST_F(ApiGatewayTest, MissingOrMalformedUserIsUnauthenticated) {
  auto gateway = MakeGateway();
  for (absl::string_view user : {"", "alice", "u_bad\nvalue"}) {
    ApiRequest request = Request("secrets/List", "{}");
    request.user_id = std::string(user);
    ApiResponse response = Call(*gateway, request);
    EXPECT_EQ(response.http_status, 401) << user;
    EXPECT_EQ(response.body, R"({"code":"UNAUTHENTICATED","message":"no verified user"})");
  }
  EXPECT_EQ(recorder_.Calls("List"), 0);
}

TEST_F(ApiGatewayTest, InvalidJsonIsBadRequestWithoutCallingTheBackend) {
  auto gateway = MakeGateway();
  const std::string huge_garbage = absl::StrCat(
      R"({"provider_id":"anthropic","value":"sk-ant-SECRET" )", std::string(100000, 'x'));
  for (const std::string& body : {std::string("{"), std::string("not json"), std::string("[]"),
                                  std::string("null"), huge_garbage}) {
    ApiResponse response = Call(*gateway, Request("secrets/Put", body));
    EXPECT_EQ(response.http_status, 400) << body.substr(0, 40);
    google::protobuf::Struct parsed = ParseJson(response.body);
    EXPECT_EQ(parsed.fields().at("code").string_value(), "INVALID_ARGUMENT");
    const std::string& message = parsed.fields().at("message").string_value();
    EXPECT_THAT(message, HasSubstr("invalid JSON request"));
    EXPECT_LE(message.size(), 200u);
    EXPECT_THAT(message, Not(HasSubstr("xxxxxxxxxx")));
  }
  EXPECT_EQ(recorder_.Calls("Put"), 0);
  EXPECT_EQ(ChannelRequests("secrets"), 0);
}

TEST_F(ApiGatewayTest, UnknownFieldOrWrongTypeIsBadRequest) {
  auto gateway = MakeGateway();
  for (absl::string_view body : {R"({"providerId":"anthropic","surprise":1})",
                                 R"({"expectedVersion":"many"})", R"({"providerId":7})"}) {
    ApiResponse response = Call(*gateway, Request("secrets/Put", body));
    EXPECT_EQ(response.http_status, 400) << body;
    EXPECT_EQ(ParseJson(response.body).fields().at("code").string_value(), "INVALID_ARGUMENT");
  }
  EXPECT_EQ(recorder_.Calls("Put"), 0);
}

TEST_F(ApiGatewayTest, ParseErrorsDoNotEchoValues) {
  auto gateway = MakeGateway();
  for (absl::string_view body :
       {R"({"expectedVersion":"sk-ant-SECRET"})", R"({"value":"sk-ant-SECRET" trailing})",
        R"({"value":"sk-ant-SECRET\ud800"})"}) {
    ApiResponse response = Call(*gateway, Request("secrets/Put", body));
    EXPECT_EQ(response.http_status, 400) << body;
    EXPECT_THAT(response.body, Not(HasSubstr("SECRET"))) << response.body;
  }
  ApiResponse response =
      Call(*gateway, Request("secrets/Put", R"({"expectedVersion":"sk-ant-SECRET"})"));
  EXPECT_EQ(response.body,
            R"({"code":"INVALID_ARGUMENT","message":"invalid JSON request: (expected_version): )"
            R"(invalid value for type TYPE_INT64"})");
  EXPECT_EQ(recorder_.Calls("Put"), 0);
}

TEST_F(ApiGatewayTest, EveryNotFoundIsByteIdentical) {
  auto gateway = MakeGateway();
  const std::vector<std::string> local_paths = {
      "secrets/NoSuchMethod",           // unknown route
      "billing/ListInvoices",           // unknown service
      "secrets",                        // no method
      "",                               // nothing
      "secrets/List/extra",             // not canonical
      "Secrets/List",                   // case matters
      "provisioner/GetEndpoint",        // denied: returns the supervisor credential
      "secrets/ResolveForWorkspace",    // denied: plaintext, provisioner only
      "auth/SignInWithPassword",        // denied: the edge's sign-in route
      "provisioner/WatchWorkspaces",    // server streaming
      "provisioner/SetOwnerSuspended",  // not callable by the proxy
      "secrets/RotateMasterKey",        // not callable by the proxy
  };
  for (const std::string& path : local_paths) {
    ApiResponse response = Call(*gateway, Request(path, R"({"workspaceId":"ws_known"})"));
    EXPECT_EQ(response.http_status, 404) << path;
    EXPECT_EQ(response.body, kNotFoundBody) << path;
  }
  EXPECT_EQ(recorder_.Calls("GetEndpoint"), 0);
  EXPECT_EQ(recorder_.Calls("ResolveForWorkspace"), 0);
  EXPECT_EQ(recorder_.Calls("SignInWithPassword"), 0);
  EXPECT_EQ(recorder_.Calls("WatchWorkspaces"), 0);
  EXPECT_EQ(ChannelRequests("auth"), 0);

  // A backend's NOT_FOUND, whatever its message says, is the same answer.
  ApiResponse response =
      Call(*gateway, Request("provisioner/GetWorkspace", R"({"workspaceId":"ws_other"})"));
  EXPECT_EQ(recorder_.Calls("GetWorkspace"), 1);
  EXPECT_EQ(response.http_status, 404);
  EXPECT_EQ(response.body, kNotFoundBody);
  EXPECT_EQ(response.body, R"({"code":"NOT_FOUND","message":"not found"})");

  response = Call(*gateway, Request("provisioner/GetWorkspace", R"({"workspaceId":"ws_known"})"));
  EXPECT_EQ(response.http_status, 200);
  EXPECT_EQ(response.body,
            absl::StrCat(R"({"workspace":{"workspaceId":"ws_known","ownerUserId":")", kAlice,
                         R"(","state":"WORKSPACE_STATE_RUNNING","stateReason":"user_request"}})"));
}

struct ErrorCase {
  grpc::StatusCode code;
  int http_status;
  std::string body;
};

TEST_F(ApiGatewayTest, MapsBackendErrors) {
  auto gateway = MakeGateway();
  const std::string detail = "backend detail: stack at 10.0.0.5";
  const std::vector<ErrorCase> cases = {
      {grpc::StatusCode::PERMISSION_DENIED, 403,
       R"({"code":"PERMISSION_DENIED","message":"backend detail: stack at 10.0.0.5"})"},
      {grpc::StatusCode::INVALID_ARGUMENT, 400,
       R"({"code":"INVALID_ARGUMENT","message":"backend detail: stack at 10.0.0.5"})"},
      {grpc::StatusCode::OUT_OF_RANGE, 400,
       R"({"code":"OUT_OF_RANGE","message":"backend detail: stack at 10.0.0.5"})"},
      {grpc::StatusCode::UNAUTHENTICATED, 401,
       R"({"code":"UNAUTHENTICATED","message":"backend detail: stack at 10.0.0.5"})"},
      {grpc::StatusCode::ALREADY_EXISTS, 409,
       R"({"code":"ALREADY_EXISTS","message":"backend detail: stack at 10.0.0.5"})"},
      {grpc::StatusCode::ABORTED, 409,
       R"({"code":"ABORTED","message":"backend detail: stack at 10.0.0.5"})"},
      {grpc::StatusCode::FAILED_PRECONDITION, 412,
       R"({"code":"FAILED_PRECONDITION","message":"backend detail: stack at 10.0.0.5"})"},
      {grpc::StatusCode::RESOURCE_EXHAUSTED, 429,
       R"({"code":"RESOURCE_EXHAUSTED","message":"backend detail: stack at 10.0.0.5"})"},
      {grpc::StatusCode::NOT_FOUND, 404, std::string(kNotFoundBody)},
      {grpc::StatusCode::INTERNAL, 500, R"({"code":"INTERNAL","message":"internal error"})"},
      {grpc::StatusCode::UNKNOWN, 500, R"({"code":"INTERNAL","message":"internal error"})"},
      {grpc::StatusCode::DATA_LOSS, 500, R"({"code":"INTERNAL","message":"internal error"})"},
      {grpc::StatusCode::UNIMPLEMENTED, 501,
       R"({"code":"UNIMPLEMENTED","message":"not implemented"})"},
      {grpc::StatusCode::UNAVAILABLE, 503,
       R"({"code":"UNAVAILABLE","message":"service unavailable"})"},
      {grpc::StatusCode::CANCELLED, 503, R"({"code":"CANCELLED","message":"request cancelled"})"},
  };
  for (const ErrorCase& error : cases) {
    recorder_.FailWith(grpc::Status(error.code, detail));
    ApiResponse response = Call(*gateway, Request("secrets/Put", R"({"value":"sk-SECRET"})"));
    EXPECT_EQ(response.http_status, error.http_status) << error.code;
    EXPECT_EQ(response.body, error.body) << error.code;
  }
  EXPECT_EQ(recorder_.Calls("Put"), static_cast<int>(cases.size()));
}

TEST_F(ApiGatewayTest, EscapesAndTruncatesBackendMessages) {
  auto gateway = MakeGateway();
  recorder_.FailWith(
      grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                   absl::StrCat("field \"value\"\n\\ <bad> \xff\xfe ", std::string(500, 'm'))));
  ApiResponse response = Call(*gateway, Request("secrets/Put", "{}"));
  EXPECT_EQ(response.http_status, 400);
  google::protobuf::Struct parsed = ParseJson(response.body);
  const std::string& message = parsed.fields().at("message").string_value();
  EXPECT_THAT(message, HasSubstr("field \"value\"\n\\ <bad> "));
  EXPECT_LE(message.size(), 200u + 6u);  // the replaced bytes may grow to U+FFFD each
}

TEST_F(ApiGatewayTest, UnimplementedBackendMethodIs501) {
  auto gateway = MakeGateway();
  ApiResponse response = Call(*gateway, Request("secrets/GetCatalogue", "{}"));
  EXPECT_EQ(response.http_status, 501);
  EXPECT_EQ(response.body, R"({"code":"UNIMPLEMENTED","message":"not implemented"})");
}

TEST_F(ApiGatewayTest, OversizedBodyIs413WithoutCallingTheBackend) {
  ApiGatewayOptions options;
  options.max_body_bytes = 64;
  auto gateway = MakeGateway(options);
  const std::string body = absl::StrCat(R"({"value":")", std::string(60, 'v'), R"("})");
  ApiResponse response = Call(*gateway, Request("secrets/Put", body));
  EXPECT_EQ(response.http_status, 413);
  EXPECT_EQ(response.body,
            R"({"code":"RESOURCE_EXHAUSTED","message":"request body exceeds 64 bytes"})");
  EXPECT_EQ(recorder_.Calls("Put"), 0);

  // Exactly at the limit is fine.
  const std::string fits = absl::StrCat(R"({"value":")", std::string(52, 'v'), R"("})");
  ASSERT_EQ(fits.size(), 64u);
  EXPECT_EQ(Call(*gateway, Request("secrets/Put", fits)).http_status, 200);
}

TEST_F(ApiGatewayTest, DeadlineExceededIs504) {
  ApiGatewayOptions options;
  options.deadline = absl::Milliseconds(200);
  auto gateway = MakeGateway(options);
  const absl::Time start = absl::Now();
  ApiResponse response =
      Call(*gateway, Request("provisioner/WakeWorkspace", R"({"workspaceId":"ws_known"})"));
  EXPECT_EQ(response.http_status, 504);
  EXPECT_EQ(response.body, R"({"code":"DEADLINE_EXCEEDED","message":"deadline exceeded"})");
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_EQ(recorder_.Calls("WakeWorkspace"), 1);
}

TEST_F(ApiGatewayTest, MissingChannelIs503) {
  auto gateway = MakeGateway();
  ApiResponse response = Call(*gateway, Request("scaler/GetPolicy", "{}"));
  EXPECT_EQ(response.http_status, 503);
  EXPECT_EQ(response.body, R"({"code":"UNAVAILABLE","message":"service unavailable"})");
  EXPECT_EQ(ChannelRequests("scaler"), 1);
}

TEST_F(ApiGatewayTest, UnreachableBackendIs503WithoutDetails) {
  // A port nobody listens on: the channel fails fast with UNAVAILABLE and an address in its
  // message, which must not reach the browser.
  std::shared_ptr<grpc::Channel> dead =
      grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials());
  ApiGateway gateway([dead](absl::string_view /*service*/) { return dead; });
  ApiResponse response = Call(gateway, Request("secrets/List", "{}"));
  EXPECT_EQ(response.http_status, 503);
  EXPECT_EQ(response.body, R"({"code":"UNAVAILABLE","message":"service unavailable"})");
}

TEST_F(ApiGatewayTest, CallInFlightOutlivesTheGateway) {
  auto gateway = MakeGateway();
  absl::Notification done;
  ApiResponse response;
  gateway->Handle(Request("provisioner/WakeWorkspace", R"({"workspaceId":"ws_known"})"),
                  [&](ApiResponse r) {
                    response = std::move(r);
                    done.Notify();
                  });
  gateway.reset();
  workspaces_.Release();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(response.http_status, 200);
  EXPECT_THAT(response.body, HasSubstr(R"("workspaceId":"ws_known")"));
}

TEST_F(ApiGatewayTest, ConcurrentCallsAllComplete) {
  auto gateway = MakeGateway();
  constexpr int kThreads = 5;
  constexpr int kCallsPerThread = 10;
  absl::Mutex mu;
  std::map<int, ApiResponse> responses;
  absl::Notification all_done;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        const int id = t * kCallsPerThread + i;
        gateway->Handle(Request("secrets/List", absl::StrCat(R"({"providerId":"p)", id, R"("})")),
                        [&, id](ApiResponse response) {
                          absl::MutexLock lock(&mu);
                          EXPECT_EQ(responses.count(id), 0u);
                          responses[id] = std::move(response);
                          if (responses.size() == kThreads * kCallsPerThread) {
                            all_done.Notify();
                          }
                        });
      }
    });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }
  ASSERT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  absl::MutexLock lock(&mu);
  ASSERT_THAT(responses, SizeIs(kThreads * kCallsPerThread));
  for (const auto& [id, response] : responses) {
    EXPECT_EQ(response.http_status, 200);
    EXPECT_EQ(response.body, absl::StrCat(R"({"capabilities":["model.p)", id, R"("]})"));
  }
  EXPECT_EQ(recorder_.Calls("List"), kThreads * kCallsPerThread);
}

TEST(ApiGatewayRoutesTest, ExposesExactlyTheBrowserMethods) {
  ApiGateway gateway([](absl::string_view /*service*/) { return nullptr; });
  const std::vector<std::string> expected = {
      "audit/GetCheckpoint",
      "audit/Query",
      "audit/Verify",
      "auth/CreateInvite",
      "auth/GetUser",
      "auth/ListInvites",
      "auth/ListUsers",
      "auth/ReinstateUser",
      "auth/RevokeInvite",
      "auth/RotateSigningKey",
      "auth/SetUserRole",
      "auth/SetUserTimezone",
      "auth/SuspendUser",
      "provisioner/DeleteWorkspace",
      "provisioner/EnsureWorkspace",
      "provisioner/GetUsage",
      "provisioner/GetWorkspace",
      "provisioner/ListWorkspaces",
      "provisioner/RestartWorkspace",
      "provisioner/StopWorkspace",
      "provisioner/WakeWorkspace",
      "scaler/GetCapacityReport",
      "scaler/GetIdleStatus",
      "scaler/GetPolicy",
      "scaler/ListDecisions",
      "scaler/ListJobRuns",
      "scaler/PinWorkspace",
      "scaler/SetPolicy",
      "scaler/UnpinWorkspace",
      "secrets/Delete",
      "secrets/GetCatalogue",
      "secrets/List",
      "secrets/Put",
  };
  const std::vector<std::string> routes = gateway.Routes();
  EXPECT_THAT(routes, ElementsAreArray(expected));
  EXPECT_TRUE(std::is_sorted(routes.begin(), routes.end()));
  for (absl::string_view denied : {"auth/ListProviders",
                                   "auth/BeginSignIn",
                                   "auth/CompleteSignIn",
                                   "auth/SignInWithPassword",
                                   "auth/CompleteSetup",
                                   "auth/RefreshSession",
                                   "auth/SignOut",
                                   "auth/SignOutEverywhere",
                                   "auth/VerifySession",
                                   "auth/GetPublicKeys",
                                   "auth/WatchRevocations",
                                   "provisioner/GetEndpoint",
                                   "provisioner/ResolveEgressCredential",
                                   "provisioner/WatchWorkspaces",
                                   "provisioner/SetOwnerSuspended",
                                   "secrets/ResolveForWorkspace",
                                   "secrets/Watch",
                                   "secrets/RotateMasterKey",
                                   "scaler/RecordActivity",
                                   "scaler/WakeForMessage",
                                   "audit/Append",
                                   "audit/Export"}) {
    EXPECT_THAT(routes, Not(Contains(std::string(denied))));
  }
  EXPECT_THAT(routes, Not(IsEmpty()));
}

}  // namespace
}  // namespace tidepool::proxy
