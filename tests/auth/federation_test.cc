// Federated sign-in end to end through the Authenticator, against a hostile OpenID provider
// played by a loopback HTTP server (the real-provider tests use oidc-provider, see
// oidc_e2e_test.cc). Every negative case of SECURITY-TESTS.md 2.1 that needs a lying or
// broken provider is here, and each must leave no session behind.
#include <sqlite3.h>

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/crypto/crypto.h"
#include "services/auth/authenticator.h"
#include "services/auth/jose.h"
#include "tests/testing/recording_audit.h"
#include "tests/auth/test_signer.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/http_stub_server.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::auth {
namespace {

using ::nlohmann::json;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::tidepool::auth::testing::JwksOf;
using ::tidepool::testing::RecordingAudit;
using ::tidepool::auth::testing::TestSigner;
using ::tidepool::testing::FakeClock;
using ::tidepool::testing::HttpStubServer;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;
using ::tidepool::testing::StubRequest;
using ::tidepool::testing::StubResponse;

constexpr char kClientId[] = "tidepool-test";
constexpr char kClientSecret[] = "s3cr3t-client-value";

std::string UrlDecode(absl::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size()) {
      out.push_back(static_cast<char>(std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(in[i] == '+' ? ' ' : in[i]);
    }
  }
  return out;
}

std::map<std::string, std::string> ParseQuery(absl::string_view query) {
  std::map<std::string, std::string> params;
  for (absl::string_view pair : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
    params[UrlDecode(kv.first)] = UrlDecode(kv.second);
  }
  return params;
}

// An OpenID provider that does whatever the test tells it, including lying.
class HostileIdp {
 public:
  HostileIdp()
      : signer_("RS256", "idp-key-1"),
        server_([this](const StubRequest& request) { return Handle(request); }) {
    jwks_ = JwksOf({signer_.PublicJwk()});
  }

  std::string issuer() const { return server_.base_url(); }
  TestSigner& signer() { return signer_; }

  // What the token endpoint puts into the next ID token (merged over valid claims), and
  // which key signs it.
  void SetClaimOverrides(json overrides) {
    absl::MutexLock lock(&mu_);
    overrides_ = std::move(overrides);
  }
  void SetTokenSigner(const TestSigner* signer) {
    absl::MutexLock lock(&mu_);
    token_signer_ = signer;
  }
  void SetRawIdToken(std::string token) {
    absl::MutexLock lock(&mu_);
    raw_token_ = std::move(token);
  }
  void SetDiscovery(json extra) {
    absl::MutexLock lock(&mu_);
    discovery_extra_ = std::move(extra);
  }
  void SetJwks(std::string jwks) {
    absl::MutexLock lock(&mu_);
    jwks_ = std::move(jwks);
  }
  int token_requests() {
    absl::MutexLock lock(&mu_);
    return token_requests_;
  }
  std::map<std::string, std::string> last_token_form() {
    absl::MutexLock lock(&mu_);
    return last_form_;
  }
  // A code the "browser" got for a flow; `sub` overrides the subject for this code only.
  void Remember(const std::string& code, const std::string& nonce, const std::string& challenge,
                const std::string& sub) {
    absl::MutexLock lock(&mu_);
    codes_[code] = {nonce, challenge, sub};
  }

 private:
  StubResponse Handle(const StubRequest& request) {
    absl::MutexLock lock(&mu_);
    if (request.target == "/.well-known/openid-configuration") {
      json doc = {{"issuer", issuer()},
                  {"authorization_endpoint", issuer() + "/authorize"},
                  {"token_endpoint", issuer() + "/token"},
                  {"jwks_uri", issuer() + "/jwks"},
                  {"id_token_signing_alg_values_supported", {"RS256", "ES256"}},
                  {"code_challenge_methods_supported", {"S256"}},
                  {"token_endpoint_auth_methods_supported", {"client_secret_post"}},
                  {"authorization_response_iss_parameter_supported", true}};
      doc.update(discovery_extra_);
      return {200, "application/json", doc.dump()};
    }
    if (request.target == "/jwks") {
      return {200, "application/json", jwks_};
    }
    if (request.target == "/token" && request.method == "POST") {
      ++token_requests_;
      last_form_ = ParseQuery(request.body);
      auto code = codes_.find(last_form_["code"]);
      if (code == codes_.end() || last_form_["client_secret"] != kClientSecret) {
        return {400, "application/json", R"({"error":"invalid_grant"})"};
      }
      // A real provider checks PKCE: S256(code_verifier) must equal the challenge.
      if (jose::Base64UrlEncode(crypto::Sha256(last_form_["code_verifier"])) !=
          code->second.challenge) {
        return {400, "application/json", R"({"error":"invalid_grant"})"};
      }
      const std::string nonce = code->second.nonce;
      const std::string code_sub = code->second.sub;
      codes_.erase(code);  // single use
      if (!raw_token_.empty()) {
        return {200, "application/json", json{{"id_token", raw_token_}}.dump()};
      }
      const int64_t now = absl::ToUnixSeconds(absl::Now());
      json claims = {{"iss", issuer()}, {"sub", "alice-sub"}, {"aud", kClientId},
                     {"nonce", nonce},  {"iat", now},         {"exp", now + 300},
                     {"email", "alice@example.com"}, {"email_verified", true},
                     {"name", "Alice"}};
      for (auto it = overrides_.begin(); it != overrides_.end(); ++it) {
        if (it.value().is_null()) {
          claims.erase(it.key());
        } else {
          claims[it.key()] = it.value();
        }
      }
      if (!code_sub.empty()) claims["sub"] = code_sub;
      const TestSigner& signer = token_signer_ != nullptr ? *token_signer_ : signer_;
      return {200, "application/json",
              json{{"access_token", "at"}, {"token_type", "Bearer"}, {"id_token", signer.Sign(claims)}}
                  .dump()};
    }
    return {404, "application/json", "{}"};
  }

  TestSigner signer_;
  absl::Mutex mu_;
  std::string jwks_ ABSL_GUARDED_BY(mu_);
  json overrides_ ABSL_GUARDED_BY(mu_) = json::object();
  json discovery_extra_ ABSL_GUARDED_BY(mu_) = json::object();
  const TestSigner* token_signer_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::string raw_token_ ABSL_GUARDED_BY(mu_);
  int token_requests_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, std::string> last_form_ ABSL_GUARDED_BY(mu_);
  struct Code {
    std::string nonce;
    std::string challenge;
    std::string sub;
  };
  std::map<std::string, Code> codes_ ABSL_GUARDED_BY(mu_);
  HttpStubServer server_;  // last: stops before the state it uses goes away
};

// Records what the outbox would send to the provisioner; can be told to fail.
class FakeProvisioner final : public ProvisionerRequests {
 public:
  absl::Status EnsureWorkspace(const std::string& user_id, const std::string&) override {
    absl::MutexLock lock(&mu_);
    if (fail_) return absl::UnimplementedError("provisioner not built");
    ensured_.push_back(user_id);
    return absl::OkStatus();
  }
  absl::Status SetOwnerSuspended(const std::string& user_id, bool suspended,
                                 const std::string&) override {
    absl::MutexLock lock(&mu_);
    if (fail_) return absl::UnavailableError("down");
    suspensions_.push_back(user_id + (suspended ? ":suspend" : ":release"));
    return absl::OkStatus();
  }
  void SetFail(bool fail) {
    absl::MutexLock lock(&mu_);
    fail_ = fail;
  }
  std::vector<std::string> ensured() {
    absl::MutexLock lock(&mu_);
    return ensured_;
  }
  std::vector<std::string> suspensions() {
    absl::MutexLock lock(&mu_);
    return suspensions_;
  }

 private:
  absl::Mutex mu_;
  bool fail_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::string> ensured_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> suspensions_ ABSL_GUARDED_BY(mu_);
};

class FederationTest : public ::testing::Test {
 protected:
  void SetUp() override { clock_.Set(absl::Now()); }

  void Open(bool invite_required = false, std::vector<std::string> allowed_domains = {}) {
    IdentityProviderConfig config;
    config.id = "corp";
    config.kind = "oidc";
    config.issuer = idp_.issuer();
    config.client_id = kClientId;
    config.allowed_email_domains = std::move(allowed_domains);
    AuthenticatorOptions options;
    options.dir = tmp_.Join("auth");
    options.password.log2_n = 10;
    options.invite_required = invite_required;
    options.public_url = "https://tidepool.example";
    options.providers.push_back(MakeFederatedProvider(config, kClientSecret, clock_));
    options.provisioner = &provisioner_;
    auth_.reset();
    absl::StatusOr<std::unique_ptr<Authenticator>> auth = Authenticator::Open(options, clock_, &audit_);
    ASSERT_THAT(auth, IsOk());
    auth_ = *std::move(auth);
  }

  struct Started {
    std::string url;
    std::string cookie;
    std::map<std::string, std::string> query;
  };

  // BeginSignIn, then "the provider" issues a code bound to the flow's nonce and challenge.
  Started Begin(const std::string& invite = "", const std::string& sub = "") {
    absl::StatusOr<FederatedStart> start = auth_->BeginFederatedSignIn(
        "corp", "/files", "Europe/Berlin", invite, "198.51.100.7");
    EXPECT_THAT(start, IsOk());
    Started started;
    if (!start.ok()) return started;
    started.url = start->authorization_url;
    started.cookie = start->cookie_value;
    started.query = ParseQuery(started.url.substr(started.url.find('?') + 1));
    idp_.Remember("code-" + started.query["state"].substr(0, 8), started.query["nonce"],
                  started.query["code_challenge"], sub);
    return started;
  }

  std::map<std::string, std::string> Callback(const Started& started) {
    return {{"code", "code-" + started.query.at("state").substr(0, 8)},
            {"state", started.query.at("state")},
            {"iss", idp_.issuer()}};
  }

  absl::StatusOr<Grant> Complete(const Started& started,
                                 std::map<std::string, std::string> params,
                                 const std::string& provider = "corp") {
    std::string return_path;
    bool new_user = false;
    absl::StatusOr<Grant> grant = auth_->CompleteFederatedSignIn(
        provider, params, started.cookie, "198.51.100.7", &return_path, &new_user);
    if (grant.ok()) {
      last_return_path_ = return_path;
      last_new_user_ = new_user;
    }
    return grant;
  }
  absl::StatusOr<Grant> Complete(const Started& started) {
    return Complete(started, Callback(started));
  }

  InviteSpec OneUseInvite() {
    InviteSpec spec;
    spec.max_uses = 1;
    spec.expire_time = clock_.Now() + absl::Hours(1);
    return spec;
  }

  int64_t Count(const std::string& table) {
    sqlite3* db = nullptr;
    sqlite3_open_v2(tmp_.Join("auth/auth.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
    sqlite3_stmt* stmt = nullptr;
    sqlite3_prepare_v2(db, ("SELECT count(*) FROM " + table).c_str(), -1, &stmt, nullptr);
    int64_t n = -1;
    if (sqlite3_step(stmt) == SQLITE_ROW) n = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return n;
  }

  // Asserts the attempt failed with `code`, created no session, and was audited with `reason`.
  void ExpectRefused(const absl::StatusOr<Grant>& grant, absl::StatusCode code,
                     const std::string& reason) {
    EXPECT_THAT(grant.status(), StatusIs(code));
    EXPECT_EQ(Count("sessions"), sessions_before_) << "no session may be created";
    EXPECT_THAT(audit_.Actions(), Contains("auth.sign_in_failed:" + reason));
  }

  ::tidepool::testing::ScopedTempDir tmp_;
  FakeClock clock_{absl::Now()};
  RecordingAudit audit_;
  FakeProvisioner provisioner_;
  HostileIdp idp_;
  std::unique_ptr<Authenticator> auth_;
  std::string last_return_path_;
  bool last_new_user_ = false;
  int64_t sessions_before_ = 0;
};

TEST_F(FederationTest, SignsInCreatesTheAccountOnceAndAsksForAWorkspace) {
  Open();
  Started started = Begin();
  EXPECT_EQ(started.query["code_challenge_method"], "S256");
  EXPECT_EQ(started.query["redirect_uri"], "https://tidepool.example/auth/callback/corp");
  EXPECT_EQ(started.query["client_id"], kClientId);
  EXPECT_THAT(started.query["scope"], HasSubstr("openid"));
  EXPECT_GE(started.query["state"].size(), 43u) << "256-bit state";
  absl::StatusOr<Grant> grant = Complete(started);
  ASSERT_THAT(grant, IsOk());
  EXPECT_TRUE(last_new_user_);
  EXPECT_EQ(last_return_path_, "/files");
  EXPECT_EQ(grant->user.email, "alice@example.com");
  EXPECT_EQ(grant->user.timezone, "Europe/Berlin");
  EXPECT_FALSE(grant->user.local);
  // The client authenticated at the token endpoint and sent the PKCE verifier.
  EXPECT_EQ(idp_.last_token_form()["client_secret"], kClientSecret);
  EXPECT_FALSE(idp_.last_token_form()["code_verifier"].empty());
  EXPECT_THAT(auth_->VerifySession(grant->session_token), IsOk());
  EXPECT_THAT(audit_.Actions(), Contains("auth.account_created"));
  EXPECT_THAT(audit_.Actions(), Contains("auth.sign_in"));
  // The workspace request went through the outbox.
  EXPECT_EQ(auth_->provisioner_outbox().DrainOnce(), 1);
  EXPECT_THAT(provisioner_.ensured(), ::testing::ElementsAre(grant->user.user_id));

  // A second sign-in of the same identity finds the same account.
  absl::StatusOr<Grant> again = Complete(Begin());
  ASSERT_THAT(again, IsOk());
  EXPECT_FALSE(last_new_user_);
  EXPECT_EQ(again->user.user_id, grant->user.user_id);
  absl::StatusOr<std::vector<IdentityRecord>> identities = auth_->ListIdentities(grant->user.user_id);
  ASSERT_THAT(identities, IsOk());
  ASSERT_EQ(identities->size(), 1u);
  EXPECT_EQ((*identities)[0].subject, idp_.issuer() + "#alice-sub");
  // The client secret never reaches the audit trail.
  EXPECT_THAT(audit_.AllText(), ::testing::Not(HasSubstr(kClientSecret)));
}

TEST_F(FederationTest, AnUnreachableProvisionerDoesNotFailSignInAndIsRetried) {
  Open();
  provisioner_.SetFail(true);
  absl::StatusOr<Grant> grant = Complete(Begin());
  ASSERT_THAT(grant, IsOk());
  EXPECT_EQ(auth_->provisioner_outbox().DrainOnce(), 0);
  absl::StatusOr<std::vector<OutboxItem>> pending = auth_->provisioner_outbox().Pending();
  ASSERT_THAT(pending, IsOk());
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].attempts, 1);
  EXPECT_EQ((*pending)[0].last_error, "UNIMPLEMENTED");
  provisioner_.SetFail(false);
  EXPECT_EQ(auth_->provisioner_outbox().DrainOnce(), 0) << "backoff: not due yet";
  clock_.Advance(absl::Seconds(6));
  EXPECT_EQ(auth_->provisioner_outbox().DrainOnce(), 1);
  EXPECT_THAT(provisioner_.ensured(), ::testing::ElementsAre(grant->user.user_id));
  EXPECT_THAT(auth_->provisioner_outbox().Pending(), ::tidepool::testing::IsOkAndHolds(::testing::IsEmpty()));
}

TEST_F(FederationTest, StateMissingAlteredOrFromAnotherBrowserIsRefused) {
  Open();
  Started started = Begin();
  std::map<std::string, std::string> params = Callback(started);
  params.erase("state");
  ExpectRefused(Complete(started, params), absl::StatusCode::kUnauthenticated, "state_missing");

  Started altered = Begin();
  params = Callback(altered);
  params["state"][3] = params["state"][3] == 'A' ? 'B' : 'A';
  ExpectRefused(Complete(altered, params), absl::StatusCode::kUnauthenticated, "state_unknown");

  // Login CSRF: the attacker's state with the victim's browser cookie.
  Started attacker = Begin();
  Started victim = Begin();
  Started mixed = attacker;
  mixed.cookie = victim.cookie;
  ExpectRefused(Complete(mixed), absl::StatusCode::kUnauthenticated, "state_cookie_mismatch");
  EXPECT_EQ(idp_.token_requests(), 0) << "no code is exchanged for a bad state";
}

TEST_F(FederationTest, ACompletedCallbackCannotBeReplayed) {
  Open();
  Started started = Begin();
  ASSERT_THAT(Complete(started), IsOk());
  sessions_before_ = Count("sessions");
  ExpectRefused(Complete(started), absl::StatusCode::kUnauthenticated, "state_unknown");
  EXPECT_EQ(idp_.token_requests(), 1) << "the code is never exchanged twice";
}

TEST_F(FederationTest, AnExpiredStateIsRefused) {
  Open();
  Started started = Begin();
  clock_.Advance(absl::Minutes(11));
  ExpectRefused(Complete(started), absl::StatusCode::kUnauthenticated, "state_expired");
}

TEST_F(FederationTest, TamperingWithTheStoredVerifierFailsClosed) {
  Open();
  Started started = Begin();
  // Flip a byte of the sealed secrets (nonce, PKCE verifier) in the database.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(tmp_.Join("auth/auth.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "UPDATE signin_states SET sealed = "
                         "substr(sealed, 1, 20) || X'00' || substr(sealed, 22)",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  ExpectRefused(Complete(started), absl::StatusCode::kUnauthenticated, "state_unknown");
  EXPECT_EQ(idp_.token_requests(), 0);
}

TEST_F(FederationTest, OnlyS256IsEverOffered) {
  idp_.SetDiscovery({{"code_challenge_methods_supported", {"plain"}}});
  Open();
  absl::StatusOr<FederatedStart> start =
      auth_->BeginFederatedSignIn("corp", "/", "", "", "198.51.100.7");
  EXPECT_THAT(start.status(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(start.status().message(), HasSubstr("PKCE"));
}

TEST_F(FederationTest, IssuerMixUpIsCaughtBeforeTheTokenEndpoint) {
  Open();
  Started started = Begin();
  std::map<std::string, std::string> params = Callback(started);
  params["iss"] = "https://other-idp.example";
  ExpectRefused(Complete(started, params), absl::StatusCode::kUnauthenticated, "issuer_mismatch");
  Started missing = Begin();
  params = Callback(missing);
  params.erase("iss");
  ExpectRefused(Complete(missing, params), absl::StatusCode::kUnauthenticated, "issuer_missing");
  // A response delivered to another provider's callback path.
  Started other = Begin();
  ExpectRefused(Complete(other, Callback(other), "github"), absl::StatusCode::kUnauthenticated,
                "provider_mismatch");
  EXPECT_EQ(idp_.token_requests(), 0);
}

TEST_F(FederationTest, HostileIdTokensAreRejectedWithoutASession) {
  Open();
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  TestSigner unrelated("RS256", "idp-key-1");
  const std::vector<std::pair<json, std::string>> cases = {
      {{{"iss", "https://evil.example"}}, "wrong_issuer"},
      {{{"aud", "another-client"}}, "wrong_audience"},
      {{{"aud", json::array({kClientId, "evil"})}}, "untrusted_audience"},
      {{{"exp", now - 120}}, "expired"},
      {{{"iat", nullptr}}, "missing_iat"},
      {{{"sub", nullptr}}, "missing_sub"},
      {{{"nonce", nullptr}}, "missing_nonce"},
      {{{"nonce", "replayed-nonce"}}, "nonce_mismatch"},
  };
  for (const auto& [overrides, reason] : cases) {
    idp_.SetClaimOverrides(overrides);
    ExpectRefused(Complete(Begin()), absl::StatusCode::kUnauthenticated, reason);
  }
  idp_.SetClaimOverrides(json::object());
  idp_.SetTokenSigner(&unrelated);
  ExpectRefused(Complete(Begin()), absl::StatusCode::kUnauthenticated, "bad_signature");
  TestSigner unknown("RS256", "who-is-this");
  idp_.SetTokenSigner(&unknown);
  ExpectRefused(Complete(Begin()), absl::StatusCode::kUnauthenticated, "unknown_kid");
  idp_.SetTokenSigner(nullptr);
  // alg none and HS256 keyed with the provider's public key.
  const json claims = {{"iss", idp_.issuer()}, {"sub", "x"}, {"aud", kClientId},
                       {"iat", now}, {"exp", now + 300}, {"nonce", "x"}};
  idp_.SetRawIdToken(testing::Unsigned({{"alg", "none"}}, claims));
  ExpectRefused(Complete(Begin()), absl::StatusCode::kUnauthenticated, "alg_not_allowed");
  idp_.SetRawIdToken(testing::SignHs256({{"alg", "HS256"}, {"kid", "idp-key-1"}}, claims,
                                        idp_.signer().PublicKeyDer()));
  ExpectRefused(Complete(Begin()), absl::StatusCode::kUnauthenticated, "alg_not_allowed");
  EXPECT_EQ(Count("users"), 0) << "no account was created by any hostile token";
}

TEST_F(FederationTest, ProviderErrorsAreNotReflected) {
  Open();
  Started started = Begin();
  std::map<std::string, std::string> params = {
      {"state", started.query["state"]},
      {"error", "access_denied"},
      {"error_description", "<script>alert(1)</script>"}};
  absl::StatusOr<Grant> grant = Complete(started, params);
  ExpectRefused(grant, absl::StatusCode::kInvalidArgument, "provider_error");
  EXPECT_THAT(grant.status().message(), HasSubstr("access_denied"));
  EXPECT_THAT(grant.status().message(), ::testing::Not(HasSubstr("<script>")));
  Started odd = Begin();
  params = {{"state", odd.query["state"]}, {"error", "<b>x</b>"}};
  grant = Complete(odd, params);
  EXPECT_THAT(grant.status().message(), ::testing::Not(HasSubstr("<b>")));
  // 64 KB of parameters.
  Started big = Begin();
  params = Callback(big);
  params["junk"] = std::string(64 * 1024, 'x');
  ExpectRefused(Complete(big, params), absl::StatusCode::kInvalidArgument, "callback_too_large");
}

TEST_F(FederationTest, EmailDomainRuleNeedsAVerifiedAddress) {
  Open(false, {"example.com"});
  ASSERT_THAT(Complete(Begin()), IsOk());
  sessions_before_ = Count("sessions");
  idp_.SetClaimOverrides({{"sub", "bob"}, {"email", "bob@example.com"}, {"email_verified", false}});
  ExpectRefused(Complete(Begin()), absl::StatusCode::kPermissionDenied, "email_domain_not_allowed");
  idp_.SetClaimOverrides({{"sub", "carol"}, {"email", "carol@elsewhere.org"}});
  ExpectRefused(Complete(Begin()), absl::StatusCode::kPermissionDenied, "email_domain_not_allowed");
}

TEST_F(FederationTest, InvitesGateNewAccountsAndAreSingleUse) {
  Open(/*invite_required=*/true);
  absl::StatusOr<std::pair<InviteRecord, std::string>> invite =
      auth_->CreateInvite(Actor{"", "tidepoolctl"}, OneUseInvite());
  ASSERT_THAT(invite, IsOk());
  ExpectRefused(Complete(Begin()), absl::StatusCode::kPermissionDenied, "invite_required");
  idp_.SetClaimOverrides({{"sub", "first"}});
  absl::StatusOr<Grant> first = Complete(Begin(invite->second));
  ASSERT_THAT(first, IsOk()) << audit_.AllText();
  EXPECT_TRUE(last_new_user_);
  sessions_before_ = Count("sessions");
  idp_.SetClaimOverrides({{"sub", "second"}});
  EXPECT_THAT(Complete(Begin(invite->second)).status(),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_EQ(Count("sessions"), sessions_before_);
  EXPECT_THAT(audit_.Actions(), Contains("auth.invite_redeem_failed:used_up"));
  // An existing account signs in without an invite.
  idp_.SetClaimOverrides({{"sub", "first"}});
  EXPECT_THAT(Complete(Begin()), IsOk());
}

TEST_F(FederationTest, ConcurrentFirstSignInsWithOneSingleUseInviteCreateOneAccount) {
  Open(/*invite_required=*/true);
  absl::StatusOr<std::pair<InviteRecord, std::string>> invite =
      auth_->CreateInvite(Actor{"", "tidepoolctl"}, OneUseInvite());
  ASSERT_THAT(invite, IsOk());
  constexpr int kRacers = 20;
  std::vector<Started> flows;
  for (int i = 0; i < kRacers; ++i) {
    flows.push_back(Begin(invite->second, absl::StrCat("person-", i)));  // 20 different people
  }
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kRacers; ++i) {
    threads.emplace_back([&, i] {
      if (Complete(flows[i]).ok()) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 1);
  EXPECT_EQ(Count("users"), 1);
  EXPECT_EQ(Count("sessions"), 1);
}

TEST_F(FederationTest, SuspendedAccountsCannotSignInAndSuspensionReachesTheProvisioner) {
  Open();
  absl::StatusOr<Grant> grant = Complete(Begin());
  ASSERT_THAT(grant, IsOk());
  ASSERT_THAT(auth_->SuspendUser(Actor{"", "tidepoolctl"}, grant->user.user_id, "left"), IsOk());
  EXPECT_THAT(auth_->VerifySession(grant->session_token).status(),
              StatusIs(absl::StatusCode::kUnauthenticated));
  sessions_before_ = Count("sessions");
  ExpectRefused(Complete(Begin()), absl::StatusCode::kPermissionDenied, "suspended");
  auth_->provisioner_outbox().DrainOnce();
  EXPECT_THAT(provisioner_.suspensions(), Contains(grant->user.user_id + ":suspend"));
}

TEST_F(FederationTest, BeginSignInValidatesItsInput) {
  Open();
  for (const char* path : {"//evil.example", "https://evil.example", "/\\evil", "javascript:x"}) {
    EXPECT_THAT(auth_->BeginFederatedSignIn("corp", path, "", "", "1.2.3.4").status(),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << path;
  }
  EXPECT_THAT(auth_->BeginFederatedSignIn("corp", "/", "Mars/Olympus", "", "1.2.3.4").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(auth_->BeginFederatedSignIn("nope", "/", "", "", "1.2.3.4").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // One source address cannot hold unlimited unfinished sign-ins.
  absl::Status last;
  for (int i = 0; i < 25; ++i) {
    last = auth_->BeginFederatedSignIn("corp", "/", "", "", "203.0.113.9").status();
  }
  EXPECT_THAT(last, StatusIs(absl::StatusCode::kResourceExhausted));
}

}  // namespace
}  // namespace tidepool::auth
