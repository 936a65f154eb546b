#include "lib/authz.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tidepool/audit/v1/audit_service.grpc.pb.h"
#include "tidepool/auth/v1/auth_service.grpc.pb.h"
#include "tidepool/common/v1/options.pb.h"
#include "tidepool/provisioner/v1/workspace_service.grpc.pb.h"
#include "tidepool/proxy/v1/proxy_admin_service.grpc.pb.h"
#include "tidepool/scaler/v1/scaler_service.grpc.pb.h"
#include "tidepool/secrets/v1/secrets_service.grpc.pb.h"
#include "tidepool/supervisor/v1/supervisor_service.grpc.pb.h"

namespace tidepool {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::UnorderedElementsAreArray;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

// The full name of the one service in the .proto file that defines `message`. Going through a
// message descriptor also makes the linker keep that file's generated code.
std::string ServiceOf(const google::protobuf::Descriptor* message) {
  EXPECT_EQ(message->file()->service_count(), 1) << message->file()->name();
  return message->file()->service(0)->full_name();
}

const std::vector<std::string>& AllTidepoolServices() {
  static const std::vector<std::string>* names =
      new std::vector<std::string>{ServiceOf(audit::v1::AppendRequest::descriptor()),
                                   ServiceOf(auth::v1::ListProvidersRequest::descriptor()),
                                   ServiceOf(secrets::v1::PutRequest::descriptor()),
                                   ServiceOf(provisioner::v1::EnsureWorkspaceRequest::descriptor()),
                                   ServiceOf(scaler::v1::RecordActivityRequest::descriptor()),
                                   ServiceOf(proxy::v1::ListConnectionsRequest::descriptor()),
                                   ServiceOf(supervisor::v1::GetStatusRequest::descriptor())};
  return *names;
}

TEST(MethodAuthorizerTest, CallerNamesFollowTheEnum) {
  EXPECT_EQ(CallerName(common::v1::CALLER_AUTH), "auth");
  EXPECT_EQ(CallerName(common::v1::CALLER_PROVISIONER), "provisioner");
  EXPECT_EQ(CallerName(common::v1::CALLER_CLI), "tidepoolctl");
  EXPECT_EQ(CallerName(common::v1::CALLER_UNSPECIFIED), "");
  EXPECT_EQ(CallerName(9999), "");
  EXPECT_THAT(PlatformIdentities(),
              UnorderedElementsAreArray({"auth", "provisioner", "secrets", "proxy", "scaler",
                                         "audit", "supervisor", "tidepoolctl"}));
}

// Fail-closed guard: a method without (allowed_callers) would be callable by nobody, which is
// safe but surely a mistake; every contract must say who may call each RPC.
TEST(MethodAuthorizerTest, EveryTidepoolMethodDeclaresItsCallers) {
  ASSERT_EQ(AllTidepoolServices().size(), 7u);
  EXPECT_EQ(AllTidepoolServices()[0], "tidepool.audit.v1.AuditService");
  absl::StatusOr<MethodAuthorizer> authorizer =
      MethodAuthorizer::ForServices(AllTidepoolServices());
  ASSERT_THAT(authorizer, IsOk());
  ASSERT_GT(authorizer->MethodPaths().size(), 50u);
  for (const std::string& path : authorizer->MethodPaths()) {
    EXPECT_THAT(authorizer->AllowedCallers(path), Not(IsEmpty())) << path;
  }
}

TEST(MethodAuthorizerTest, OnlyTheProvisionerMayResolvePlaintextSecrets) {
  absl::StatusOr<MethodAuthorizer> authorizer = MethodAuthorizer::ForServices(
      {std::string(secrets::v1::SecretsService::service_full_name())});
  ASSERT_THAT(authorizer, IsOk());
  const std::string path = "/tidepool.secrets.v1.SecretsService/ResolveForWorkspace";
  EXPECT_THAT(authorizer->AllowedCallers(path), ElementsAre("provisioner"));
  EXPECT_THAT(authorizer->Check(path, "provisioner"), IsOk());
  for (const std::string& other : PlatformIdentities()) {
    if (other != "provisioner") {
      EXPECT_THAT(authorizer->Check(path, other), StatusIs(absl::StatusCode::kPermissionDenied))
          << other;
    }
  }
}

TEST(MethodAuthorizerTest, DecidesUnknownCallersMethodsAndOpenServices) {
  absl::StatusOr<MethodAuthorizer> authorizer =
      MethodAuthorizer::ForServices({ServiceOf(audit::v1::AppendRequest::descriptor())});
  ASSERT_THAT(authorizer, IsOk());
  EXPECT_THAT(authorizer->Check("/grpc.health.v1.Health/Check", "mallory"),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(authorizer->Check("/grpc.health.v1.Health/Check", ""),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(authorizer->Check("/grpc.health.v1.Health/Check", "scaler"), IsOk());
  EXPECT_THAT(authorizer->Check("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                "tidepoolctl"),
              IsOk());
  // Services not hosted by this server are denied, even to a platform identity.
  EXPECT_THAT(
      authorizer->Check("/tidepool.secrets.v1.SecretsService/ResolveForWorkspace", "provisioner"),
      StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(authorizer->Check("/tidepool.audit.v1.AuditService/Nope", "auth"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(authorizer->Check("/grpc.health.v1.HealthX/Check", "auth"),
              StatusIs(absl::StatusCode::kPermissionDenied));
}

TEST(MethodAuthorizerTest, UnknownServiceIsNotFound) {
  EXPECT_THAT(MethodAuthorizer::ForServices({"tidepool.nope.v1.NopeService"}),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace tidepool
