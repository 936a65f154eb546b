// The workspaces' only way out, end to end with the real binaries: a workspace's tool goes
// through its supervisor's relay to the proxy's egress proxy, which resolves the relay's
// credential through the provisioner, enforces the allowlist, and counts and audits denials.
#include <set>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/platform_client.h"
#include "tests/integration/platform_fixture.h"
#include "tests/testing/http_stub_server.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/terminal_client.h"
#include "tidepool/audit/v1/audit_service.grpc.pb.h"
#include "tidepool/provisioner/v1/workspace_service.grpc.pb.h"
#include "tidepool/proxy/v1/proxy_admin_service.grpc.pb.h"

namespace tidepool {
namespace {

using ::testing::HasSubstr;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::RunningPlatform;
namespace provisionerpb = ::tidepool::provisioner::v1;
namespace proxypb = ::tidepool::proxy::v1;

constexpr char kOwner[] = "u_eeeeeeeeeeeeeeeeeeeeeeeeee";

class EgressTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // "localhost" is listed, and must still be refused: it is a loopback address. The shared
    // model server is on loopback too, and is the one exception.
    const std::string config = tidepool::testing::AllPortsZeroConfig(
        "", absl::StrCat("model_server:\n  base_url: ", model_server_.base_url(), "/v1\n"),
        {{"proxy", "  egress_allowlist: [\"localhost:8080\"]\n"}});
    absl::StatusOr<std::unique_ptr<RunningPlatform>> platform = RunningPlatform::Start(
        {{tidepool::testing::BinaryPath("tidepool"), "up"}},
        {"audit", "auth", "secrets", "provisioner", "scaler", "proxy"}, absl::Seconds(60), config);
    ASSERT_THAT(platform, IsOk());
    platform_ = *std::move(platform);
    absl::StatusOr<TlsIdentity> cli = platform_->CliIdentity();
    ASSERT_THAT(cli, IsOk());
    absl::StatusOr<TlsIdentity> proxy = LoadTlsIdentity(platform_->data_dir() + "/pki", "proxy");
    ASSERT_THAT(proxy, IsOk());
    absl::StatusOr<RunInfo> provisioner = platform_->Info("provisioner");
    ASSERT_THAT(provisioner, IsOk());
    absl::StatusOr<RunInfo> proxy_info = platform_->Info("proxy");
    ASSERT_THAT(proxy_info, IsOk());
    workspaces_ = provisionerpb::WorkspaceService::NewStub(DialPlatformService(*cli, provisioner->grpc));
    as_proxy_ = provisionerpb::WorkspaceService::NewStub(DialPlatformService(*proxy, provisioner->grpc));
    admin_ = proxypb::ProxyAdminService::NewStub(DialPlatformService(*cli, proxy_info->grpc));
  }

  void TearDown() override {
    // Sandboxes outlive the provisioner by design; remove this test's.
    if (workspaces_ == nullptr || workspace_id_.empty()) return;
    provisionerpb::DeleteWorkspaceRequest remove;
    remove.set_workspace_id(workspace_id_);
    remove.set_confirm_workspace_id(workspace_id_);
    provisionerpb::DeleteWorkspaceResponse ignored;
    grpc::ClientContext context;
    (void)workspaces_->DeleteWorkspace(&context, remove, &ignored);
    EXPECT_TRUE(AwaitState(common::v1::WORKSPACE_STATE_DELETED));
  }

  bool AwaitState(common::v1::WorkspaceState state) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      provisionerpb::GetWorkspaceRequest request;
      request.set_workspace_id(workspace_id_);
      provisionerpb::GetWorkspaceResponse response;
      grpc::ClientContext context;
      if (workspaces_->GetWorkspace(&context, request, &response).ok() &&
          response.workspace().state() == state) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return false;
  }

  // Types `command` into a new terminal of the workspace; the output once it holds `until`.
  std::string RunInTerminal(const provisionerpb::GetEndpointResponse& endpoint,
                            const std::string& command, const std::string& until) {
    return tidepool::testing::RunInTerminal(endpoint.unix_socket_path(), endpoint.credential(),
                                            absl::StrCat("e", ++sessions_), command, until);
  }

  // An OpenAI-compatible model server's stand-in (one route is enough here).
  tidepool::testing::HttpStubServer model_server_{[](const tidepool::testing::StubRequest& request) {
    return tidepool::testing::StubResponse{
        .status = request.target == "/v1/models" ? 200 : 404,
        .content_type = "application/json",
        .body = R"({"object":"list","data":[{"id":"tiny","object":"model"}]})"};
  }};
  std::unique_ptr<RunningPlatform> platform_;
  std::unique_ptr<provisionerpb::WorkspaceService::Stub> workspaces_;
  std::unique_ptr<provisionerpb::WorkspaceService::Stub> as_proxy_;
  std::unique_ptr<proxypb::ProxyAdminService::Stub> admin_;
  std::string workspace_id_;
  int sessions_ = 0;
};

TEST_F(EgressTest, AWorkspaceReachesOnlyTheAllowlistAndEveryDenialIsCountedAndNamed) {
  provisionerpb::EnsureWorkspaceRequest ensure;
  ensure.set_owner_user_id(kOwner);
  provisionerpb::EnsureWorkspaceResponse ensured;
  grpc::ClientContext ensure_context;
  grpc::Status status = workspaces_->EnsureWorkspace(&ensure_context, ensure, &ensured);
  ASSERT_TRUE(status.ok()) << status.error_message();
  workspace_id_ = ensured.workspace().workspace_id();
  ASSERT_TRUE(AwaitState(common::v1::WORKSPACE_STATE_RUNNING));
  provisionerpb::GetEndpointRequest get;
  get.set_workspace_id(workspace_id_);
  provisionerpb::GetEndpointResponse endpoint;
  grpc::ClientContext get_context;
  status = as_proxy_->GetEndpoint(&get_context, get, &endpoint);
  ASSERT_TRUE(status.ok()) << status.error_message();

  // Python's urllib inside the sandbox honours HTTP_PROXY, the relay.
  auto fetch = [&](const std::string& url) {
    return RunInTerminal(
        endpoint,
        // NO_PROXY is cleared so that even "localhost" is asked of the egress proxy.
        absl::StrCat("env -u NO_PROXY -u no_proxy python3 -c \"import urllib.request as u\ntry: u.urlopen('", url,
                     "', timeout=10)\nexcept Exception as e: print('result', e.code if hasattr(e, "
                     "'code') else e, e.read().decode() if hasattr(e, 'read') else '')\"; echo "
                     "fin\"\"ished\n"),
        "finished\r\n");
  };
  EXPECT_THAT(fetch("http://example.org/"),
              HasSubstr("result 403 tidepool: example.org:80 is not on this platform's egress "
                        "allowlist"));
  // Listed, but a loopback address: refused all the same.
  EXPECT_THAT(fetch("http://localhost:8080/"), HasSubstr("result 403"));
  // The shared model server, on loopback, is reached; its other ports are not.
  const std::string models = absl::StrCat(model_server_.base_url(), "/v1/models");
  EXPECT_THAT(RunInTerminal(endpoint,
                            absl::StrCat("env -u NO_PROXY -u no_proxy python3 -c \"import "
                                         "urllib.request as u; print('got', u.urlopen('",
                                         models, "', timeout=10).read().decode())\"\n"),
                            "got {"),
              HasSubstr(R"(got {"object":"list")"));
  EXPECT_EQ(model_server_.requests(), 1);
  EXPECT_THAT(fetch(absl::StrCat("http://127.0.0.1:", model_server_.port() + 1, "/")),
              HasSubstr("result 403"));

  // Both denials are counted for this workspace (its relay's credential was resolved).
  proxypb::GetEgressPolicyRequest policy_request;
  policy_request.set_workspace_id(workspace_id_);
  proxypb::GetEgressPolicyResponse policy;
  grpc::ClientContext policy_context;
  status = admin_->GetEgressPolicy(&policy_context, policy_request, &policy);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(policy.rules_size(), 2);
  EXPECT_EQ(policy.rules(0).host(), "localhost");
  EXPECT_EQ(policy.rules(0).port(), 8080);
  EXPECT_EQ(policy.rules(1).host(), "127.0.0.1");
  EXPECT_EQ(policy.rules(1).port(), model_server_.port());
  EXPECT_EQ(policy.rules(1).origin(), "model_server");
  ASSERT_EQ(policy.workspaces_size(), 1);
  EXPECT_EQ(policy.workspaces(0).workspace_id(), workspace_id_);
  EXPECT_EQ(policy.workspaces(0).denied_connection_count(), 3);
  EXPECT_EQ(policy.workspaces(0).allowed_connection_count(), 1);
  EXPECT_EQ(policy.workspaces(0).last_denied_destination(),
            absl::StrCat("127.0.0.1:", model_server_.port() + 1));

  // ...and audited, each with its destination and a reason code the audit accepts.
  absl::StatusOr<TlsIdentity> cli = platform_->CliIdentity();
  ASSERT_THAT(cli, IsOk());
  absl::StatusOr<RunInfo> audit_info = platform_->Info("audit");
  ASSERT_THAT(audit_info, IsOk());
  auto audit = audit::v1::AuditService::NewStub(DialPlatformService(*cli, audit_info->grpc));
  std::set<std::string> audited;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (audited.size() < 3 && absl::Now() < deadline) {
    audit::v1::QueryRequest query;
    query.mutable_filter()->set_action_prefix("egress.denied");
    audit::v1::QueryResponse events;
    grpc::ClientContext context;
    if (audit->Query(&context, query, &events).ok()) {
      for (const auto& event : events.events()) {
        audited.insert(absl::StrCat(event.attributes().at("destination"), " ",
                                    event.reason_code()));
      }
    }
    if (audited.size() < 3) absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_THAT(audited, ::testing::UnorderedElementsAre(
                           "example.org:80 not_on_allowlist", "localhost:8080 private_address",
                           absl::StrCat("127.0.0.1:", model_server_.port() + 1,
                                        " not_on_allowlist")));
}

}  // namespace
}  // namespace tidepool
