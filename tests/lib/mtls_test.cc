// Mutual TLS and per-method caller allowlists, end to end through a real TLS server on
// 127.0.0.1:0 hosting the secrets service (whose ResolveForWorkspace only the provisioner
// may call).
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "lib/authz.h"
#include "lib/platform_client.h"
#include "lib/server_runner.h"
#include "services/secrets/secrets_service.h"
#include "tests/testing/http_get.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"
#include "tidepool/secrets/v1/secrets_service.grpc.pb.h"

namespace tidepool {
namespace {

using ::testing::HasSubstr;
using ::tidepool::testing::IsOk;

class MtlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_THAT(EnsurePlatformPki(pki_dir(), PlatformIdentities()), IsOk());
    absl::StatusOr<TlsIdentity> server_identity = LoadTlsIdentity(pki_dir(), "secrets");
    ASSERT_THAT(server_identity, IsOk());
    data_dir_ = tmp_.path();
    absl::StatusOr<std::vector<HostedService>> hosted = secrets::SecretsServiceDefinition().create(
        ServiceContext{config_, data_dir_, clock_, registry_, nullptr});
    ASSERT_THAT(hosted, IsOk());
    ServerRunnerOptions options;
    options.component = "secrets";
    options.tls = *server_identity;
    absl::StatusOr<std::unique_ptr<ServerRunner>> runner =
        ServerRunner::Start(std::move(options), *std::move(hosted));
    ASSERT_THAT(runner, IsOk());
    runner_ = *std::move(runner);
    target_ = absl::StrCat("127.0.0.1:", runner_->grpc_port());
  }

  std::string pki_dir() const { return tmp_.Join("pki"); }

  TlsIdentity Identity(const std::string& name) {
    absl::StatusOr<TlsIdentity> id = LoadTlsIdentity(pki_dir(), name);
    EXPECT_THAT(id, IsOk());
    return id.ok() ? *id : TlsIdentity{};
  }

  static grpc::Status Resolve(const std::shared_ptr<grpc::Channel>& channel) {
    auto stub = secrets::v1::SecretsService::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    secrets::v1::ResolveForWorkspaceRequest request;
    request.set_workspace_id("ws_aaaaaaaaaaaaaaaaaaaaaaaaaa");
    secrets::v1::ResolveForWorkspaceResponse response;
    return stub->ResolveForWorkspace(&context, request, &response);
  }

  static grpc::Status Health(const std::shared_ptr<grpc::Channel>& channel,
                             const std::string& service,
                             grpc::health::v1::HealthCheckResponse* response) {
    auto stub = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    return stub->Check(&context, request, response);
  }

  tidepool::testing::ScopedTempDir tmp_;
  // The service keeps these (ServiceContext: references outlive the service).
  RealClock clock_;
  prometheus::Registry registry_;
  PlatformConfig config_ = DefaultPlatformConfig();
  std::string data_dir_;
  std::unique_ptr<ServerRunner> runner_;
  std::string target_;
};

TEST_F(MtlsTest, ProvisionerPassesTheAllowlist) {
  grpc::Status status = Resolve(DialPlatformService(Identity("provisioner"), target_));
  // Allowed through: the handler itself checks the request (it names no owner).
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("owner_user_id is malformed"));
}

TEST_F(MtlsTest, EveryOtherPlatformIdentityIsPermissionDenied) {
  for (const std::string& name : PlatformIdentities()) {
    if (name == "provisioner") {
      continue;
    }
    grpc::Status status = Resolve(DialPlatformService(Identity(name), target_));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << name;
    EXPECT_THAT(status.error_message(), HasSubstr("may not call")) << name;
  }
}

TEST_F(MtlsTest, CertificateOfAnUnknownIdentityIsUnauthenticated) {
  absl::StatusOr<TlsIdentity> mallory = LoadTlsIdentity(pki_dir(), "secrets");
  ASSERT_THAT(mallory, IsOk());
  // Issued by the real platform CA, but for a name that is no platform identity.
  CertAuthority ca{mallory->ca_pem, tidepool::testing::ReadFileOrEmpty(pki_dir() + "/ca.key")};
  absl::StatusOr<TlsIdentity> stranger = IssueIdentity(ca, "mallory");
  ASSERT_THAT(stranger, IsOk());
  EXPECT_EQ(Resolve(DialPlatformService(*stranger, target_)).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(MtlsTest, CallerWithoutAClientCertificateCannotConnect) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = Identity("provisioner").ca_pem;  // trusts the server, offers no cert
  auto channel = grpc::CreateChannel(target_, grpc::SslCredentials(ssl));
  grpc::health::v1::HealthCheckResponse response;
  EXPECT_EQ(Health(channel, "", &response).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Resolve(channel).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(MtlsTest, PlaintextCallerCannotConnect) {
  auto channel = grpc::CreateChannel(target_, grpc::InsecureChannelCredentials());
  EXPECT_EQ(Resolve(channel).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(MtlsTest, CertificateFromAnotherCaCannotConnect) {
  absl::StatusOr<CertAuthority> rogue_ca = CreateCertAuthority("Tidepool");
  ASSERT_THAT(rogue_ca, IsOk());
  absl::StatusOr<TlsIdentity> rogue = IssueIdentity(*rogue_ca, "provisioner");
  ASSERT_THAT(rogue, IsOk());
  // Trust the real server, but present a look-alike "provisioner" certificate.
  rogue->ca_pem = Identity("provisioner").ca_pem;
  EXPECT_EQ(Resolve(DialPlatformService(*rogue, target_)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(MtlsTest, HealthIsOpenToEveryPlatformIdentity) {
  for (const std::string& name : PlatformIdentities()) {
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = Health(DialPlatformService(Identity(name), target_),
                                 "tidepool.secrets.v1.SecretsService", &response);
    ASSERT_TRUE(status.ok()) << name << ": " << status.error_message();
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  grpc::health::v1::HealthCheckResponse response;
  EXPECT_EQ(Health(DialPlatformService(Identity("auth"), target_), "tidepool.nope.v1.X", &response)
                .error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(MtlsTest, MetricsCountCallsByCodeAndShutdownStopsServing) {
  ASSERT_EQ(Resolve(DialPlatformService(Identity("provisioner"), target_)).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  const std::string metrics_target = absl::StrCat("127.0.0.1:", runner_->metrics_port());
  absl::StatusOr<tidepool::testing::HttpResponse> metrics =
      tidepool::testing::HttpGet(metrics_target, "/metrics");
  ASSERT_THAT(metrics, IsOk());
  EXPECT_EQ(metrics->status, 200);
  EXPECT_THAT(metrics->body,
              HasSubstr("tidepool_grpc_server_handled_total{grpc_code=\"INVALID_ARGUMENT\","
                        "grpc_method=\"ResolveForWorkspace\",grpc_service=\"tidepool.secrets.v1."
                        "SecretsService\"} 1"));
  EXPECT_THAT(metrics->body, HasSubstr("tidepool_grpc_server_handling_seconds_bucket"));
  absl::StatusOr<tidepool::testing::HttpResponse> ready =
      tidepool::testing::HttpGet(metrics_target, "/readyz");
  ASSERT_THAT(ready, IsOk());
  EXPECT_EQ(ready->status, 200);

  runner_->Shutdown(absl::Now() + absl::Seconds(1));
  EXPECT_EQ(Resolve(DialPlatformService(Identity("provisioner"), target_)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_FALSE(tidepool::testing::HttpGet(metrics_target, "/healthz").ok());
}

}  // namespace
}  // namespace tidepool
