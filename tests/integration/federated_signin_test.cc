// Federated sign-in end to end, with real binaries and real providers on loopback:
//   - two instances of the `oidc-provider` npm package (tests/idp/oidc_idp.mjs), one
//     Google-like and one Microsoft-like (multi-tenant, tid/oid claims, no RFC 9207 iss),
//   - a GitHub stand-in that speaks GitHub's OAuth and REST wire format
//     (tests/idp/github_fake.mjs),
// all enabled at once in one tidepool.yaml, driven through the auth service's gRPC API as the
// proxy would, with a cookie-keeping HTTP client playing the browser.
#include <curl/curl.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/idp_fixture.h"
#include "tests/integration/platform_fixture.h"
#include "tests/testing/status_matchers.h"
#include "tidepool/auth/v1/auth_service.grpc.pb.h"
#include "tidepool/provisioner/v1/workspace_service.grpc.pb.h"
#include "tidepool/secrets/v1/secrets_service.grpc.pb.h"

namespace tidepool {
namespace {

using ::nlohmann::json;
using ::testing::HasSubstr;
using ::tidepool::testing::BinaryPath;
using ::tidepool::testing::BrowserResult;
using ::tidepool::testing::Collect;
using ::tidepool::testing::FollowUntil;
using ::tidepool::testing::NodeServer;
using ::tidepool::testing::QueryOf;
using ::tidepool::testing::WriteTestFile;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::RunningPlatform;
using ::tidepool::testing::ScopedTempDir;
using ::tidepool::testing::Subprocess;
namespace authpb = ::tidepool::auth::v1;
namespace provisionerpb = ::tidepool::provisioner::v1;

constexpr char kPublicUrl[] = "https://tidepool.test";
constexpr char kTenantA[] = "11111111-1111-1111-1111-111111111111";
constexpr char kTenantB[] = "22222222-2222-2222-2222-222222222222";

int HttpPostJson(const std::string& url, const json& body) {
  CURL* curl = curl_easy_init();
  std::string text = body.dump();
  std::string out;
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, text.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &Collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &out);
  curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return static_cast<int>(status);
}

json HttpGetJson(const std::string& url) {
  CURL* curl = curl_easy_init();
  std::string out;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &Collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &out);
  curl_easy_perform(curl);
  curl_easy_cleanup(curl);
  return json::parse(out, nullptr, false);
}

class FederatedSignInTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { curl_global_init(CURL_GLOBAL_DEFAULT); }

  void SetUp() override {
    auto client = [](const std::string& id) {
      return json{{"client_id", "tidepool-" + id},
                  {"client_secret", "secret-for-" + id},
                  {"redirect_uris", {absl::StrCat(kPublicUrl, "/auth/callback/", id)}}};
    };
    google_ = NodeServer::Start(
        "oidc_idp.mjs",
        {{"name", "google"},
         {"clients", {client("google")}},
         {"accounts",
          {{"alice", {{"sub", "104169999999999999999"}, {"email", "alice@example.com"},
                      {"email_verified", true}, {"name", "Alice Example"}}},
           {"mallory", {{"sub", "109999999999999999999"}, {"email", "mallory@evil.example"},
                        {"email_verified", true}, {"name", "Mallory"}}}}}},
        tmp_.path());
    ASSERT_NE(google_, nullptr);
    microsoft_ = NodeServer::Start(
        "oidc_idp.mjs",
        {{"name", "microsoft"},
         {"issuer_path", "/organizations/v2.0"},
         {"authorization_response_iss", false},
         {"clients", {client("microsoft")}},
         {"accounts",
          {{"victim", {{"sub", "pairwise-victim"}, {"tid", kTenantA},
                       {"oid", "aaaaaaaa-0000-0000-0000-000000000001"},
                       {"email", "ceo@contoso.example"}, {"name", "The CEO"},
                       {"preferred_username", "ceo@contoso.example"}}},
           {"attacker", {{"sub", "pairwise-attacker"}, {"tid", kTenantB},
                         {"oid", "bbbbbbbb-0000-0000-0000-000000000001"},
                         {"email", "ceo@contoso.example"}, {"name", "Not The CEO"},
                         {"preferred_username", "ceo@contoso.example"}}}}}},
        tmp_.path());
    ASSERT_NE(microsoft_, nullptr);
    github_ = NodeServer::Start(
        "github_fake.mjs",
        {{"name", "github"},
         {"clients", {client("github")}},
         {"accounts",
          {{"octocat", {{"id", 583231}, {"login", "octocat"}, {"name", "The Octocat"},
                        {"emails", {{{"email", "octocat@github.example"}, {"primary", true},
                                     {"verified", true}, {"visibility", "public"}}}},
                        {"orgs", {"acme"}}}},
           {"outsider", {{"id", 999}, {"login", "outsider"}, {"name", "Out Sider"},
                         {"emails", json::array()}, {"orgs", json::array()}}}}}},
        tmp_.path());
    ASSERT_NE(github_, nullptr);
    for (const char* id : {"google", "microsoft", "github"}) {
      ASSERT_TRUE(WriteTestFile(tmp_.Join(absl::StrCat(id, ".secret")), absl::StrCat("secret-for-", id, "\n")));
    }
    const std::string providers = absl::StrCat(
        "  providers:\n"
        "    - id: google\n      kind: google\n      issuer: ", google_->info()["issuer"].get<std::string>(),
        "\n      client_id: tidepool-google\n      client_secret_file: ", tmp_.Join("google.secret"),
        "\n    - id: microsoft\n      kind: microsoft\n      issuer: ",
        microsoft_->info()["issuer"].get<std::string>(),
        "\n      client_id: tidepool-microsoft\n      client_secret_file: ", tmp_.Join("microsoft.secret"),
        "\n    - id: github\n      kind: github\n      github_web_url: ", github_->base(),
        "\n      github_api_url: ", github_->base(),
        "\n      client_id: tidepool-github\n      client_secret_file: ", tmp_.Join("github.secret"),
        "\n      allowed_github_orgs: [acme]\n");
    std::vector<std::vector<std::string>> commands = {{BinaryPath("tidepool-audit")},
                                                      {BinaryPath("tidepool-auth")}};
    std::vector<std::string> services = {"audit", "auth"};
    if (with_provisioner_) {
      commands.push_back({BinaryPath("tidepool-secrets")});
      services.push_back("secrets");
      commands.push_back({BinaryPath("tidepool-provisioner")});
      services.push_back("provisioner");
    }
    absl::StatusOr<std::unique_ptr<RunningPlatform>> platform = RunningPlatform::Start(
        commands, services,
        absl::Seconds(60),
        tidepool::testing::AllPortsZeroConfig(
            providers, absl::StrCat("platform:\n  public_url: ", kPublicUrl, "\n")));
    ASSERT_THAT(platform, IsOk());
    platform_ = *std::move(platform);
    absl::StatusOr<TlsIdentity> proxy = LoadTlsIdentity(platform_->data_dir() + "/pki", "proxy");
    ASSERT_THAT(proxy, IsOk());
    absl::StatusOr<RunInfo> auth = platform_->Info("auth");
    ASSERT_THAT(auth, IsOk());
    stub_ = authpb::AuthService::NewStub(DialPlatformService(*proxy, auth->grpc));
  }

  struct Outcome {
    grpc::Status status;
    authpb::CompleteSignInResponse response;
    std::map<std::string, std::string> callback;
  };

  // Begins a sign-in as the proxy would, lets the "browser" go through the provider as
  // `login`, and completes it with the callback's parameters.
  Outcome SignIn(const std::string& provider, const std::string& login,
                 const std::string& invite = "") {
    Outcome outcome;
    authpb::BeginSignInRequest begin;
    begin.set_provider_id(provider);
    begin.set_return_path("/workspaces");
    begin.set_timezone("America/New_York");
    begin.set_invite_code(invite);
    begin.set_source_address("192.0.2.10");
    authpb::BeginSignInResponse started;
    {
      grpc::ClientContext context;
      outcome.status = stub_->BeginSignIn(&context, begin, &started);
      if (!outcome.status.ok()) return outcome;
    }
    const std::string hint = provider == "github" ? "login" : "login_hint";
    BrowserResult browser =
        FollowUntil(absl::StrCat(started.authorization_url(), "&", hint, "=", login),
                    absl::StrCat(kPublicUrl, "/auth/callback/", provider));
    EXPECT_FALSE(browser.final_url.empty()) << browser.trace;
    outcome.callback = QueryOf(browser.final_url);
    authpb::CompleteSignInRequest complete;
    complete.set_provider_id(provider);
    for (const auto& [k, v] : outcome.callback) (*complete.mutable_callback_params())[k] = v;
    complete.set_state_cookie_value(started.state_cookie_value());
    complete.set_source_address("192.0.2.10");
    grpc::ClientContext context;
    outcome.status = stub_->CompleteSignIn(&context, complete, &outcome.response);
    last_cookie_ = started.state_cookie_value();
    return outcome;
  }

  bool with_provisioner_ = false;
  ScopedTempDir tmp_;
  std::unique_ptr<NodeServer> google_;
  std::unique_ptr<NodeServer> microsoft_;
  std::unique_ptr<NodeServer> github_;
  std::unique_ptr<RunningPlatform> platform_;
  std::unique_ptr<authpb::AuthService::Stub> stub_;
  std::string last_cookie_;
};

TEST_F(FederatedSignInTest, EveryEnabledProviderIsListed) {
  authpb::ListProvidersResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(stub_->ListProviders(&context, {}, &response).ok());
  std::vector<std::string> ids;
  for (const auto& provider : response.providers()) ids.push_back(provider.provider_id());
  EXPECT_THAT(ids, ::testing::ElementsAre("local", "google", "microsoft", "github"));
  EXPECT_EQ(response.providers(1).kind(), authpb::PROVIDER_KIND_GOOGLE);
  EXPECT_EQ(response.providers(2).display_name(), "Sign in with Microsoft");
  EXPECT_THAT(response.DebugString(), ::testing::Not(HasSubstr("secret-for")));
}

TEST_F(FederatedSignInTest, GoogleAndMicrosoftSignInsWorkSideBySide) {
  Outcome google = SignIn("google", "alice");
  ASSERT_TRUE(google.status.ok()) << google.status.error_message();
  EXPECT_TRUE(google.response.new_user());
  EXPECT_EQ(google.response.return_path(), "/workspaces");
  EXPECT_EQ(google.response.grant().user().email(), "alice@example.com");
  EXPECT_EQ(google.callback["iss"], google_->info()["issuer"].get<std::string>())
      << "oidc-provider sends RFC 9207 iss";

  Outcome microsoft = SignIn("microsoft", "victim");
  ASSERT_TRUE(microsoft.status.ok()) << microsoft.status.error_message();
  EXPECT_TRUE(microsoft.response.new_user());
  EXPECT_NE(microsoft.response.grant().user().user_id(), google.response.grant().user().user_id());

  // Each session verifies online; signing in again finds the same accounts.
  for (const Outcome* outcome : {&google, &microsoft}) {
    authpb::VerifySessionRequest verify;
    verify.set_session_token(outcome->response.grant().session_token());
    authpb::VerifySessionResponse verified;
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->VerifySession(&context, verify, &verified).ok());
    EXPECT_EQ(verified.user_id(), outcome->response.grant().user().user_id());
  }
  Outcome again = SignIn("google", "alice");
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_FALSE(again.response.new_user());
  EXPECT_EQ(again.response.grant().user().user_id(), google.response.grant().user().user_id());
}

TEST_F(FederatedSignInTest, NOAuthEmailCollisionAcrossTenantsNeverReachesTheVictim) {
  Outcome victim = SignIn("microsoft", "victim");
  ASSERT_TRUE(victim.status.ok()) << victim.status.error_message();
  // Another tenant's user with the very same e-mail and preferred_username.
  Outcome attacker = SignIn("microsoft", "attacker");
  ASSERT_TRUE(attacker.status.ok()) << attacker.status.error_message();
  EXPECT_TRUE(attacker.response.new_user());
  EXPECT_NE(attacker.response.grant().user().user_id(), victim.response.grant().user().user_id());
  EXPECT_EQ(attacker.response.grant().user().display_name(), "Not The CEO");
}

TEST_F(FederatedSignInTest, ReplayedCallbacksAndForeignBrowsersAreRefused) {
  Outcome first = SignIn("google", "alice");
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  const int tokens_before = HttpGetJson(google_->base() + "/__test/stats")["token_requests"];
  authpb::CompleteSignInRequest replay;
  replay.set_provider_id("google");
  for (const auto& [k, v] : first.callback) (*replay.mutable_callback_params())[k] = v;
  replay.set_state_cookie_value(last_cookie_);
  authpb::CompleteSignInResponse response;
  grpc::ClientContext context;
  EXPECT_EQ(stub_->CompleteSignIn(&context, replay, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(response.grant().session_token().empty());
  EXPECT_EQ(HttpGetJson(google_->base() + "/__test/stats")["token_requests"].get<int>(),
            tokens_before)
      << "a replayed code is never sent to the provider";
}

TEST_F(FederatedSignInTest, ProviderKeyRotationIsPickedUpWithoutRestart) {
  ASSERT_TRUE(SignIn("google", "alice").status.ok());
  ASSERT_EQ(HttpPostJson(google_->base() + "/__test/rotate-keys", json::object()), 200);
  Outcome after = SignIn("google", "alice");
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
}

TEST_F(FederatedSignInTest, GitHubSignInKeysOnTheNumericIdAndChecksTheOrg) {
  Outcome octocat = SignIn("github", "octocat");
  ASSERT_TRUE(octocat.status.ok()) << octocat.status.error_message();
  EXPECT_EQ(octocat.response.grant().user().email(), "octocat@github.example");
  EXPECT_EQ(octocat.response.grant().user().display_name(), "The Octocat");

  // Renamed login and a new unverified address: still the same account (keyed on the id).
  ASSERT_EQ(HttpPostJson(
                github_->base() + "/__test/accounts",
                {{"octocat-renamed",
                  {{"id", 583231}, {"login", "octocat-renamed"}, {"name", "The Octocat"},
                   {"emails", {{{"email", "new@evil.example"}, {"primary", true},
                                {"verified", false}, {"visibility", "public"}}}},
                   {"orgs", {"acme"}}}},
                 {"octocat", {{"id", 4242}, {"login", "octocat"}, {"name", "Squatter"},
                              {"emails", json::array()}, {"orgs", {"acme"}}}}}),
            200);
  Outcome renamed = SignIn("github", "octocat-renamed");
  ASSERT_TRUE(renamed.status.ok()) << renamed.status.error_message();
  EXPECT_EQ(renamed.response.grant().user().user_id(), octocat.response.grant().user().user_id());
  // Whoever registers the freed login is somebody else.
  Outcome squatter = SignIn("github", "octocat");
  ASSERT_TRUE(squatter.status.ok()) << squatter.status.error_message();
  EXPECT_NE(squatter.response.grant().user().user_id(), octocat.response.grant().user().user_id());
}

TEST_F(FederatedSignInTest, GitHubUsersOutsideTheAllowedOrgAreRefused) {
  Outcome outsider = SignIn("github", "outsider");
  EXPECT_EQ(outsider.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(outsider.status.error_message(), HasSubstr("organization"));
  EXPECT_TRUE(outsider.response.grant().session_token().empty());
}

TEST_F(FederatedSignInTest, AProviderErrorIsAnInvalidArgumentWithoutASession) {
  Outcome unknown = SignIn("google", "nobody");  // the provider answers access_denied
  EXPECT_EQ(unknown.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(unknown.status.error_message(), HasSubstr("access_denied"));
}

// With the provisioner running too: a new user's first sign-in ends with their workspace
// running (auth asks the provisioner through its outbox; the sandbox is real).
class SignInProvisionsTest : public FederatedSignInTest {
 protected:
  void SetUp() override {
    with_provisioner_ = true;
    FederatedSignInTest::SetUp();
    absl::StatusOr<TlsIdentity> cli = platform_->CliIdentity();
    ASSERT_THAT(cli, IsOk());
    absl::StatusOr<RunInfo> provisioner = platform_->Info("provisioner");
    ASSERT_THAT(provisioner, IsOk());
    workspaces_ = provisionerpb::WorkspaceService::NewStub(DialPlatformService(*cli, provisioner->grpc));
  }

  void TearDown() override {
    if (workspaces_ != nullptr) tidepool::testing::DeleteAllWorkspaces(*workspaces_);
  }

  std::unique_ptr<provisionerpb::WorkspaceService::Stub> workspaces_;
};

TEST_F(SignInProvisionsTest, AKeyPutThroughTheSecretsServiceReachesTheRunningWorkspace) {
  Outcome alice = SignIn("google", "alice");
  ASSERT_TRUE(alice.status.ok()) << alice.status.error_message();
  const std::string user_id = alice.response.grant().user().user_id();
  std::string workspace_id;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline && workspace_id.empty()) {
    provisionerpb::ListWorkspacesRequest request;
    request.set_owner_user_id(user_id);
    request.add_states(common::v1::WORKSPACE_STATE_RUNNING);
    provisionerpb::ListWorkspacesResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(workspaces_->ListWorkspaces(&context, request, &response).ok());
    if (response.workspaces_size() == 1) workspace_id = response.workspaces(0).workspace_id();
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_FALSE(workspace_id.empty());
  // A canary token (never printed): put as tidepoolctl on the user's behalf.
  const std::string canary = "ghp_" + std::string(36, 'C');
  absl::StatusOr<TlsIdentity> cli = platform_->CliIdentity();
  ASSERT_THAT(cli, IsOk());
  absl::StatusOr<RunInfo> secrets_info = platform_->Info("secrets");
  ASSERT_THAT(secrets_info, IsOk());
  auto secrets = secrets::v1::SecretsService::NewStub(DialPlatformService(*cli, secrets_info->grpc));
  secrets::v1::PutRequest put;
  put.set_user_id(user_id);
  put.set_provider_id("github");
  put.set_field_id("token");
  put.set_value(canary);
  secrets::v1::PutResponse put_response;
  grpc::ClientContext put_context;
  grpc::Status put_status = secrets->Put(&put_context, put, &put_response);
  ASSERT_TRUE(put_status.ok()) << put_status.error_message();
  // The provisioner hears of it (Watch), resolves it and stamps it for the tool.
  const std::string env_file =
      platform_->data_dir() + "/provisioner/secrets/" + workspace_id + "/env";
  bool stamped = false;
  const absl::Time stamp_deadline = absl::Now() + absl::Seconds(15);
  while (absl::Now() < stamp_deadline && !stamped) {
    std::ifstream in(env_file);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    stamped = text.find("GH_TOKEN=" + canary) != std::string::npos;
    if (!stamped) absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(stamped) << "the key did not reach the workspace";
  // And the canary is in no service's log.
  for (auto& process : platform_->processes()) {
    EXPECT_EQ(process->Stdout().find(canary), std::string::npos);
    EXPECT_EQ(process->Stderr().find(canary), std::string::npos);
  }
}

TEST_F(SignInProvisionsTest, ANewUsersSignInEndsWithARunningWorkspace) {
  const absl::Time start = absl::Now();
  Outcome alice = SignIn("google", "alice");
  ASSERT_TRUE(alice.status.ok()) << alice.status.error_message();
  const std::string user_id = alice.response.grant().user().user_id();
  provisionerpb::Workspace workspace;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    provisionerpb::ListWorkspacesRequest request;
    request.set_owner_user_id(user_id);
    provisionerpb::ListWorkspacesResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(workspaces_->ListWorkspaces(&context, request, &response).ok());
    if (response.workspaces_size() == 1) workspace = response.workspaces(0);
    if (workspace.state() == common::v1::WORKSPACE_STATE_RUNNING) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(workspace.state(), common::v1::WORKSPACE_STATE_RUNNING)
      << workspace.ShortDebugString();
  EXPECT_EQ(workspace.owner_user_id(), user_id);
  EXPECT_EQ(workspace.profile(), "shell");
  std::cerr << "sign-in (through the IdP) to a running workspace: "
            << absl::FormatDuration(absl::Now() - start) << "\n";
}

}  // namespace
}  // namespace tidepool
