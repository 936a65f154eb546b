// The auth service through a real mutual-TLS gRPC server on 127.0.0.1:0, with a recording
// audit emitter that can be switched to fail (as when the audit service is down).
#include "services/auth/auth_service.h"

#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/authz.h"
#include "lib/platform_client.h"
#include "lib/server_runner.h"
#include "tests/testing/recording_audit.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::auth {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::tidepool::testing::RecordingAudit;
using ::tidepool::testing::IsOk;

constexpr char kPassword[] = "correct horse battery staple";

class AuthServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_THAT(EnsurePlatformPki(tmp_.Join("pki"), PlatformIdentities()), IsOk());
    AuthenticatorOptions options;
    options.dir = tmp_.Join("auth");
    options.admin_email = "admin@example.org";
    options.password.log2_n = 10;  // cheap scrypt for tests
    options.min_rotation_interval = absl::ZeroDuration();
    absl::StatusOr<std::unique_ptr<Authenticator>> auth =
        Authenticator::Open(options, clock_, &audit_);
    ASSERT_THAT(auth, IsOk());
    auth_ = *std::move(auth);
    absl::StatusOr<std::optional<std::string>> setup = auth_->EnsureFirstAdmin();
    ASSERT_THAT(setup, IsOk());
    ASSERT_TRUE(setup->has_value());
    setup_token_ = **setup;
    std::vector<HostedService> services;
    services.push_back(HostedService{.full_name = "tidepool.auth.v1.AuthService",
                                     .pending_note = "",
                                     .service = std::make_unique<AuthServiceImpl>(*auth_)});
    ServerRunnerOptions runner_options;
    runner_options.component = "auth";
    runner_options.tls = Identity("auth");
    absl::StatusOr<std::unique_ptr<ServerRunner>> runner =
        ServerRunner::Start(std::move(runner_options), std::move(services));
    ASSERT_THAT(runner, IsOk());
    runner_ = *std::move(runner);
  }

  void TearDown() override { runner_->Shutdown(absl::Now()); }

  TlsIdentity Identity(const std::string& name) {
    absl::StatusOr<TlsIdentity> id = LoadTlsIdentity(tmp_.Join("pki"), name);
    EXPECT_THAT(id, IsOk());
    return id.ok() ? *id : TlsIdentity{};
  }

  std::unique_ptr<v1::AuthService::Stub> Stub(const std::string& identity) {
    return v1::AuthService::NewStub(
        DialPlatformService(Identity(identity), absl::StrCat("127.0.0.1:", runner_->grpc_port())));
  }

  struct Call {
    explicit Call(std::vector<std::pair<std::string, std::string>> metadata = {}) {
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      for (const auto& [k, v] : metadata) {
        context.AddMetadata(k, v);
      }
    }
    grpc::ClientContext context;
  };

  // Completes the admin's setup and returns the grant.
  v1::SessionGrant SetUpAdmin() {
    v1::CompleteSetupRequest request;
    request.set_setup_token(setup_token_);
    request.set_password(kPassword);
    request.set_timezone("Europe/Berlin");
    v1::CompleteSetupResponse response;
    Call call;
    grpc::Status status = Stub("proxy")->CompleteSetup(&call.context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.grant();
  }

  grpc::Status SignIn(const std::string& email, const std::string& password,
                      v1::SignInWithPasswordResponse* response) {
    v1::SignInWithPasswordRequest request;
    request.set_email(email);
    request.set_password(password);
    request.set_source_address("203.0.113.7");
    Call call;
    return Stub("proxy")->SignInWithPassword(&call.context, request, response);
  }

  grpc::StatusCode Verify(const std::string& token) {
    v1::VerifySessionRequest request;
    request.set_session_token(token);
    v1::VerifySessionResponse response;
    Call call;
    return Stub("proxy")->VerifySession(&call.context, request, &response).error_code();
  }

  tidepool::testing::ScopedTempDir tmp_;
  RealClock clock_;
  RecordingAudit audit_;
  std::unique_ptr<Authenticator> auth_;
  std::string setup_token_;
  std::unique_ptr<ServerRunner> runner_;
};

TEST_F(AuthServiceTest, FirstAdminSetsUpThenSignsInAndOut) {
  v1::SessionGrant grant = SetUpAdmin();
  EXPECT_EQ(grant.role(), common::v1::ROLE_ADMIN);
  EXPECT_EQ(grant.user().email(), "admin@example.org");
  EXPECT_EQ(Verify(grant.session_token()), grpc::StatusCode::OK);
  // The setup is the account's first sign-in: its workspace is requested.
  absl::StatusOr<std::vector<OutboxItem>> pending = auth_->provisioner_outbox().Pending();
  ASSERT_THAT(pending, IsOk());
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].action, "ensure");
  EXPECT_EQ((*pending)[0].user_id, grant.user().user_id());
  // The setup link is single use.
  v1::CompleteSetupRequest again;
  again.set_setup_token(setup_token_);
  again.set_password(kPassword);
  v1::CompleteSetupResponse ignored;
  Call call;
  EXPECT_EQ(Stub("proxy")->CompleteSetup(&call.context, again, &ignored).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  v1::SignInWithPasswordResponse signed_in;
  ASSERT_TRUE(SignIn("ADMIN@example.org", kPassword, &signed_in).ok());
  const std::string token = signed_in.grant().session_token();
  EXPECT_EQ(Verify(token), grpc::StatusCode::OK);
  v1::SignOutRequest out;
  out.set_session_token(token);
  v1::SignOutResponse out_response;
  Call sign_out;
  ASSERT_TRUE(Stub("proxy")->SignOut(&sign_out.context, out, &out_response).ok());
  EXPECT_EQ(Verify(token), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(audit_.Actions(),
              ::testing::IsSupersetOf({"auth.setup_completed", "auth.sign_in", "auth.sign_out"}));
  // No secret reaches the audit trail.
  EXPECT_THAT(audit_.AllText(), Not(HasSubstr(kPassword)));
  EXPECT_THAT(audit_.AllText(), Not(HasSubstr(token)));
  EXPECT_THAT(audit_.AllText(), Not(HasSubstr(setup_token_)));
}

TEST_F(AuthServiceTest, WrongPasswordAndUnknownEmailLookTheSame) {
  SetUpAdmin();
  v1::SignInWithPasswordResponse response;
  grpc::Status wrong = SignIn("admin@example.org", "not the password at all", &response);
  grpc::Status unknown = SignIn("nobody@example.org", "not the password at all", &response);
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(wrong.error_message(), unknown.error_message());
  EXPECT_THAT(audit_.Actions(), ::testing::IsSupersetOf({"auth.sign_in_failed:bad_password",
                                                         "auth.sign_in_failed:unknown_account"}));
}

TEST_F(AuthServiceTest, GuessingIsThrottled) {
  SetUpAdmin();
  v1::SignInWithPasswordResponse response;
  grpc::StatusCode last = grpc::StatusCode::OK;
  for (int i = 0; i < 12; ++i) {
    last = SignIn("admin@example.org", absl::StrCat("guess number ", i), &response).error_code();
  }
  EXPECT_EQ(last, grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(AuthServiceTest, SignInFailsClosedWhileAuditIsDown) {
  SetUpAdmin();
  audit_.SetDown(true);
  v1::SignInWithPasswordResponse response;
  EXPECT_EQ(SignIn("admin@example.org", kPassword, &response).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(response.grant().session_token().empty());
  audit_.SetDown(false);
  EXPECT_TRUE(SignIn("admin@example.org", kPassword, &response).ok());
}

TEST_F(AuthServiceTest, RefreshRotatesAndReuseEndsTheSession) {
  v1::SessionGrant grant = SetUpAdmin();
  v1::RefreshSessionRequest request;
  request.set_refresh_token(grant.refresh_token());
  v1::RefreshSessionResponse first;
  Call call;
  ASSERT_TRUE(Stub("proxy")->RefreshSession(&call.context, request, &first).ok());
  EXPECT_NE(first.grant().refresh_token(), grant.refresh_token());
  EXPECT_EQ(Verify(first.grant().session_token()), grpc::StatusCode::OK);
  v1::RefreshSessionResponse reuse;
  Call again;
  EXPECT_EQ(Stub("proxy")->RefreshSession(&again.context, request, &reuse).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Verify(first.grant().session_token()), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(AuthServiceTest, RevocationsAreStreamedToWatchersWithinASecond) {
  v1::SessionGrant admin = SetUpAdmin();
  Call watch_call;
  v1::WatchRevocationsRequest watch_request;
  watch_request.mutable_heartbeat_interval()->set_nanos(100'000'000);
  auto watcher = Stub("proxy")->WatchRevocations(&watch_call.context, watch_request);
  v1::WatchRevocationsResponse message;
  ASSERT_TRUE(watcher->Read(&message));
  EXPECT_TRUE(message.heartbeat().replay_complete());

  v1::SuspendUserRequest suspend;
  suspend.set_user_id(admin.user().user_id());
  v1::SuspendUserResponse suspended;
  Call suspend_call;
  // The last active administrator cannot be suspended.
  EXPECT_EQ(
      Stub("tidepoolctl")->SuspendUser(&suspend_call.context, suspend, &suspended).error_code(),
      grpc::StatusCode::FAILED_PRECONDITION);

  // Sign out everywhere is streamed as a user-wide revocation within a heartbeat or two.
  v1::SignOutEverywhereRequest everywhere;
  everywhere.set_session_token(admin.session_token());
  v1::SignOutEverywhereResponse everywhere_response;
  Call everywhere_call;
  const absl::Time start = absl::Now();
  ASSERT_TRUE(Stub("proxy")
                  ->SignOutEverywhere(&everywhere_call.context, everywhere, &everywhere_response)
                  .ok());
  EXPECT_EQ(everywhere_response.revoked_session_count(), 1);
  bool seen = false;
  while (!seen && watcher->Read(&message)) {
    seen = message.has_revocation() && message.revocation().user_id() == admin.user().user_id();
  }
  EXPECT_TRUE(seen);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_EQ(Verify(admin.session_token()), grpc::StatusCode::UNAUTHENTICATED);
  watch_call.context.TryCancel();
  (void)watcher->Finish();
}

TEST_F(AuthServiceTest, UsersAreAdminOnlyAndOthersLookAbsent) {
  v1::SessionGrant admin = SetUpAdmin();
  const std::string admin_id = admin.user().user_id();
  auto as = [&](const std::string& user_id, const std::string& role) {
    return std::vector<std::pair<std::string, std::string>>{{"x-tidepool-user-id", user_id},
                                                            {"x-tidepool-role", role}};
  };
  v1::ListUsersResponse users;
  Call list_admin(as(admin_id, "admin"));
  ASSERT_TRUE(Stub("proxy")->ListUsers(&list_admin.context, {}, &users).ok());
  ASSERT_EQ(users.users_size(), 1);
  EXPECT_EQ(users.users(0).timezone(), "Europe/Berlin");
  Call list_user(as("u_aaaaaaaaaaaaaaaaaaaaaaaaaa", "user"));
  EXPECT_EQ(Stub("proxy")->ListUsers(&list_user.context, {}, &users).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  Call list_anonymous;
  EXPECT_EQ(Stub("proxy")->ListUsers(&list_anonymous.context, {}, &users).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // Another person asking about the admin gets exactly what a missing user gets.
  v1::GetUserRequest get;
  get.set_user_id(admin_id);
  v1::GetUserResponse got;
  Call other(as("u_aaaaaaaaaaaaaaaaaaaaaaaaaa", "user"));
  grpc::Status hidden = Stub("proxy")->GetUser(&other.context, get, &got);
  get.set_user_id("u_bbbbbbbbbbbbbbbbbbbbbbbbbb");
  Call admin_missing(as(admin_id, "admin"));
  grpc::Status missing = Stub("proxy")->GetUser(&admin_missing.context, get, &got);
  EXPECT_EQ(hidden.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(hidden.error_message(), missing.error_message());
  // "me".
  v1::GetUserRequest me;
  Call self(as(admin_id, "admin"));
  ASSERT_TRUE(Stub("proxy")->GetUser(&self.context, me, &got).ok());
  EXPECT_EQ(got.user().user_id(), admin_id);
}

TEST_F(AuthServiceTest, InvitesAreShownOnceAndRevocable) {
  SetUpAdmin();
  v1::CreateInviteRequest create;
  create.set_max_uses(3);
  create.set_bound_domain("example.org");
  v1::CreateInviteResponse created;
  Call call;
  ASSERT_TRUE(Stub("tidepoolctl")->CreateInvite(&call.context, create, &created).ok());
  EXPECT_THAT(created.code(), ::testing::MatchesRegex("tpi_[a-z2-7]{32}"));
  v1::ListInvitesResponse listed;
  Call list;
  ASSERT_TRUE(Stub("tidepoolctl")->ListInvites(&list.context, {}, &listed).ok());
  ASSERT_EQ(listed.invites_size(), 1);
  EXPECT_THAT(listed.DebugString(), Not(HasSubstr(created.code())));
  EXPECT_THAT(audit_.AllText(), Not(HasSubstr(created.code())));
  v1::RevokeInviteRequest revoke;
  revoke.set_invite_id(created.invite().invite_id());
  v1::RevokeInviteResponse revoked;
  Call revoke_call;
  ASSERT_TRUE(Stub("tidepoolctl")->RevokeInvite(&revoke_call.context, revoke, &revoked).ok());
  EXPECT_EQ(revoked.invite().state(), v1::INVITE_STATE_REVOKED);
}

TEST_F(AuthServiceTest, KeysRotateWithoutLoggingAnyoneOut) {
  v1::SessionGrant grant = SetUpAdmin();
  v1::RotateSigningKeyResponse rotated;
  Call call;
  ASSERT_TRUE(Stub("tidepoolctl")->RotateSigningKey(&call.context, {}, &rotated).ok());
  EXPECT_NE(rotated.new_key().key_id(), rotated.previous_key().key_id());
  v1::GetPublicKeysResponse keys;
  Call keys_call;
  ASSERT_TRUE(Stub("proxy")->GetPublicKeys(&keys_call.context, {}, &keys).ok());
  EXPECT_EQ(keys.keys_size(), 2);
  EXPECT_EQ(Verify(grant.session_token()), grpc::StatusCode::OK);
}

TEST_F(AuthServiceTest, AStaleRoleChangeIsRefusedAndNotAudited) {
  v1::SessionGrant admin = SetUpAdmin();
  v1::SetUserRoleRequest request;
  request.set_user_id(admin.user().user_id());
  request.set_role(common::v1::ROLE_ADMIN);
  request.set_expected_version(999);
  v1::SetUserRoleResponse response;
  Call call;
  EXPECT_EQ(Stub("tidepoolctl")->SetUserRole(&call.context, request, &response).error_code(),
            grpc::StatusCode::ABORTED);
  EXPECT_THAT(audit_.Actions(), Not(::testing::Contains("admin.role_changed")));
}

TEST_F(AuthServiceTest, BeginSignInRefusesAnUnknownOrLocalProvider) {
  for (const char* provider : {"nope", "local", ""}) {
    v1::BeginSignInRequest request;
    request.set_provider_id(provider);
    v1::BeginSignInResponse response;
    Call call;
    grpc::Status status = Stub("proxy")->BeginSignIn(&call.context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << provider;
    EXPECT_THAT(status.error_message(), HasSubstr("unknown sign-in provider"));
  }
}

TEST_F(AuthServiceTest, ListProvidersOffersLocalAccountsByDefault) {
  v1::ListProvidersResponse response;
  Call call;
  ASSERT_TRUE(Stub("proxy")->ListProviders(&call.context, {}, &response).ok());
  ASSERT_EQ(response.providers_size(), 1);
  EXPECT_EQ(response.providers(0).provider_id(), "local");
  EXPECT_EQ(response.providers(0).kind(), v1::PROVIDER_KIND_LOCAL);
  EXPECT_FALSE(response.invite_required());
}

}  // namespace
}  // namespace tidepool::auth
