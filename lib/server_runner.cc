#include "lib/server_runner.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/support/server_interceptor.h"
#include "lib/authz.h"
#include "lib/log.h"
#include "lib/platform_client.h"

namespace tidepool {
namespace {

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

// Records per-RPC metrics and gives UNIMPLEMENTED replies from not-yet-built methods a message
// that names what is missing.
class RpcInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcInterceptor(grpc::experimental::ServerRpcInfo* info, GrpcServerMetrics& metrics,
                 const std::map<std::string, std::string>& notes)
      : metrics_(metrics), notes_(notes) {
    const std::string path = info->method() == nullptr ? "" : info->method();
    std::vector<std::string> parts = absl::StrSplit(path, '/', absl::SkipEmpty());
    service_ = parts.size() == 2 ? parts[0] : "unknown";
    method_ = parts.size() == 2 ? parts[1] : "unknown";
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      start_ = absl::Now();
      metrics_.Started(service_, method_);
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status status = methods->GetSendStatus();
      if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
          status.error_message().empty()) {
        auto note = notes_.find(service_);
        status = grpc::Status(
            grpc::StatusCode::UNIMPLEMENTED,
            absl::StrCat(service_, "/", method_, " is not implemented yet",
                         note == notes_.end() ? "" : absl::StrCat(": ", note->second)));
        methods->ModifySendStatus(status);
      }
      metrics_.Handled(
          service_, method_, CodeName(status.error_code()),
          start_ == absl::InfinitePast() ? absl::ZeroDuration() : absl::Now() - start_);
    }
    methods->Proceed();
  }

 private:
  GrpcServerMetrics& metrics_;
  const std::map<std::string, std::string>& notes_;
  std::string service_;
  std::string method_;
  absl::Time start_ = absl::InfinitePast();
};

class RpcInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  RpcInterceptorFactory(GrpcServerMetrics& metrics, const std::map<std::string, std::string>& notes)
      : metrics_(metrics), notes_(notes) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcInterceptor(info, metrics_, notes_);
  }

 private:
  GrpcServerMetrics& metrics_;
  const std::map<std::string, std::string>& notes_;
};

void GlobalGrpcSetup() {
  static const bool once = [] {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    return true;
  }();
  (void)once;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServerRunner>> ServerRunner::Start(
    ServerRunnerOptions options, std::vector<HostedService> services) {
  GlobalGrpcSetup();
  std::unique_ptr<ServerRunner> runner(new ServerRunner());
  runner->options_ = std::move(options);
  runner->registry_ = runner->options_.registry != nullptr
                          ? runner->options_.registry
                          : std::make_shared<prometheus::Registry>();
  runner->metrics_ = std::make_unique<GrpcServerMetrics>(*runner->registry_);
  runner->services_ = std::move(services);
  const ServerRunnerOptions& opts = runner->options_;

  for (const HostedService& hosted : runner->services_) {
    runner->service_names_.push_back(hosted.full_name);
    runner->pending_notes_[hosted.full_name] = hosted.pending_note;
  }
  absl::StatusOr<MethodAuthorizer> authorizer =
      MethodAuthorizer::ForServices(runner->service_names_);
  if (!authorizer.ok()) {
    return authorizer.status();
  }

  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_root_certs = opts.tls.ca_pem;
  ssl.pem_key_cert_pairs.push_back({opts.tls.key_pem, opts.tls.cert_pem});
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::SslServerCredentials(ssl);
  creds->SetAuthMetadataProcessor(std::make_shared<AllowlistAuthProcessor>(*std::move(authorizer)));

  grpc::ServerBuilder builder;
  const std::string address = HostPort(opts.grpc_address, opts.grpc_port);
  builder.AddListeningPort(address, creds, &runner->grpc_port_);
  builder.SetMaxReceiveMessageSize(16 * 1024 * 1024);
  // gRPC sets SO_REUSEPORT by default, which would let a second instance bind the same port and
  // silently take half the connections. A taken port must be a startup error instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  for (HostedService& hosted : runner->services_) {
    builder.RegisterService(hosted.service.get());
  }
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
  factories.push_back(
      std::make_unique<RpcInterceptorFactory>(*runner->metrics_, runner->pending_notes_));
  builder.experimental().SetInterceptorCreators(std::move(factories));
  runner->server_ = builder.BuildAndStart();
  if (runner->server_ == nullptr || runner->grpc_port_ == 0) {
    return absl::UnavailableError(absl::StrCat(opts.component, ": cannot listen for gRPC on ",
                                               address, " (address in use or not local?)"));
  }

  ServerRunner* raw = runner.get();
  runner->http_ =
      std::make_unique<AdminHttpServer>(runner->registry_, [raw] { return raw->ready_.load(); });
  absl::StatusOr<int> metrics_port = runner->http_->Start(opts.metrics_address, opts.metrics_port);
  if (!metrics_port.ok()) {
    runner->server_->Shutdown(std::chrono::system_clock::now());
    return absl::UnavailableError(
        absl::StrCat(opts.component, ": ", metrics_port.status().message()));
  }
  runner->metrics_port_ = *metrics_port;

  grpc::HealthCheckServiceInterface* health = runner->server_->GetHealthCheckService();
  for (const std::string& name : runner->service_names_) {
    health->SetServingStatus(name, true);
  }
  health->SetServingStatus("", true);
  runner->ready_ = true;
  return runner;
}

void ServerRunner::Shutdown(absl::Time deadline) {
  if (shut_down_) {
    return;
  }
  shut_down_ = true;
  ready_ = false;
  if (server_ != nullptr) {
    server_->GetHealthCheckService()->SetServingStatus(false);
    server_->Shutdown(absl::ToChronoTime(deadline));
    server_->Wait();
  }
  for (HostedService& hosted : services_) {
    if (hosted.on_stopped) {
      hosted.on_stopped();
    }
  }
  if (http_ != nullptr) {
    http_->Stop();
  }
}

ServerRunner::~ServerRunner() { Shutdown(absl::Now()); }

}  // namespace tidepool
