// ID-token verification against the OpenID relying-party negative cases
// (SECURITY-TESTS.md 2.1 #4-#8): each hostile token is rejected with its own reason code.
#include "services/auth/jose.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/auth/test_signer.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"

namespace tidepool::auth::jose {
namespace {

using ::nlohmann::json;
using ::tidepool::auth::testing::JwksOf;
using ::tidepool::auth::testing::SignHs256;
using ::tidepool::auth::testing::TestSigner;
using ::tidepool::auth::testing::Unsigned;
using ::tidepool::testing::FakeClock;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

constexpr char kIssuer[] = "https://idp.example";
constexpr char kClient[] = "tidepool-client";
constexpr char kNonce[] = "n-0S6_WzA2Mj";

class IdTokenTest : public ::testing::Test {
 protected:
  IdTokenTest()
      : signer_("RS256", "key-1"),
        jwks_doc_(JwksOf({signer_.PublicJwk()})),
        cache_([this]() -> absl::StatusOr<std::string> { return jwks_doc_; }, clock_) {

  }

  json Claims() {
    const int64_t now = absl::ToUnixSeconds(clock_.Now());
    return {{"iss", kIssuer}, {"sub", "248289761001"}, {"aud", kClient}, {"nonce", kNonce},
            {"iat", now},     {"exp", now + 300},      {"email", "jane@example.com"},
            {"email_verified", true}, {"name", "Jane Doe"}};
  }

  IdTokenExpectations Expect() {
    IdTokenExpectations expect;
    expect.issuer = kIssuer;
    expect.client_id = kClient;
    expect.nonce = kNonce;
    expect.allowed_algorithms = {"RS256", "ES256", "EdDSA", "PS256"};
    expect.now = clock_.Now();
    return expect;
  }

  // The reason code a token is rejected with ("" if accepted).
  std::string Rejection(const std::string& token, IdTokenExpectations expect) {
    std::string reason;
    absl::StatusOr<IdTokenClaims> claims = VerifyIdToken(token, expect, cache_, &reason);
    if (claims.ok()) return "";
    EXPECT_THAT(claims.status(), StatusIs(absl::StatusCode::kUnauthenticated)) << reason;
    EXPECT_FALSE(reason.empty());
    return reason;
  }
  std::string Rejection(const std::string& token) { return Rejection(token, Expect()); }

  FakeClock clock_{absl::FromUnixSeconds(1'800'000'000)};
  TestSigner signer_;
  std::string jwks_doc_;
  JwksCache cache_;
};

TEST_F(IdTokenTest, AcceptsAValidTokenAndReadsItsClaims) {
  std::string reason;
  absl::StatusOr<IdTokenClaims> claims =
      VerifyIdToken(signer_.Sign(Claims()), Expect(), cache_, &reason);
  ASSERT_THAT(claims.status(), IsOk());
  EXPECT_EQ(claims->subject, "248289761001");
  EXPECT_EQ(claims->email, "jane@example.com");
  EXPECT_TRUE(claims->email_verified);
  EXPECT_EQ(claims->name, "Jane Doe");
}

TEST_F(IdTokenTest, AcceptsEachSupportedAlgorithm) {
  for (const char* alg : {"ES256", "EdDSA", "PS256"}) {
    TestSigner other(alg, std::string("k-") + alg);
    jwks_doc_ = JwksOf({signer_.PublicJwk(), other.PublicJwk()});
    clock_.Advance(absl::Hours(2));  // past the cache's TTL: refetch
    EXPECT_EQ(Rejection(other.Sign(Claims())), "") << alg;
  }
}

TEST_F(IdTokenTest, RejectsAlgNone) {
  json header = {{"alg", "none"}, {"kid", "key-1"}};
  EXPECT_EQ(Rejection(Unsigned(header, Claims())), "alg_not_allowed");
  header["alg"] = "None";
  EXPECT_EQ(Rejection(Unsigned(header, Claims())), "alg_not_allowed");
}

TEST_F(IdTokenTest, RejectsHs256KeyedWithTheProvidersPublicKey) {
  // The classic algorithm-confusion attack: HMAC under the RSA public key's bytes.
  const json header = {{"alg", "HS256"}, {"kid", "key-1"}};
  EXPECT_EQ(Rejection(SignHs256(header, Claims(), signer_.PublicKeyDer())), "alg_not_allowed");
  // Even if an operator wrongly allowed HS256, no key type verifies it.
  IdTokenExpectations expect = Expect();
  expect.allowed_algorithms.push_back("HS256");
  EXPECT_EQ(Rejection(SignHs256(header, Claims(), signer_.PublicKeyDer()), expect),
            "alg_not_allowed");
}

TEST_F(IdTokenTest, RejectsAnAlgorithmOutsideThePinnedSet) {
  TestSigner es("ES256", "key-1");  // same kid, other algorithm
  IdTokenExpectations expect = Expect();
  expect.allowed_algorithms = {"RS256"};
  EXPECT_EQ(Rejection(es.Sign(Claims()), expect), "alg_not_allowed");
}

TEST_F(IdTokenTest, RejectsAValidLookingTokenFromAnUnrelatedKey) {
  TestSigner impostor("RS256", "key-1");  // right header, kid, claims; wrong key
  EXPECT_EQ(Rejection(impostor.Sign(Claims())), "bad_signature");
}

TEST_F(IdTokenTest, RejectsAKeyOfTheWrongTypeForTheAlgorithm) {
  // A token claiming ES256 but naming the RSA key's kid.
  TestSigner es("ES256", "key-1");
  EXPECT_EQ(Rejection(es.Sign(Claims())), "bad_signature");
}

TEST_F(IdTokenTest, IgnoresKeysSuppliedInTheHeader) {
  TestSigner attacker("RS256", "attacker");
  const json header = {{"jwk", attacker.PublicJwk()},
                       {"jku", "https://evil.example/jwks"},
                       {"x5u", "https://evil.example/cert"},
                       {"kid", "key-1"}};
  EXPECT_EQ(Rejection(attacker.Sign(Claims(), header)), "bad_signature");
}

TEST_F(IdTokenTest, EachClaimIsCheckedWithItsOwnReason) {
  auto with = [&](const char* name, json value) {
    json claims = Claims();
    if (value.is_null()) {
      claims.erase(name);
    } else {
      claims[name] = value;
    }
    return Rejection(signer_.Sign(claims));
  };
  EXPECT_EQ(with("iss", "https://other.example"), "wrong_issuer");
  EXPECT_EQ(with("iss", nullptr), "wrong_issuer");
  EXPECT_EQ(with("aud", "someone-else"), "wrong_audience");
  EXPECT_EQ(with("aud", nullptr), "missing_audience");
  EXPECT_EQ(with("aud", json::array({kClient, "untrusted"})), "untrusted_audience");
  EXPECT_EQ(with("azp", "someone-else"), "wrong_audience");
  const int64_t now = absl::ToUnixSeconds(clock_.Now());
  EXPECT_EQ(with("exp", now - 61), "expired");
  EXPECT_EQ(with("exp", nullptr), "missing_exp");
  EXPECT_EQ(with("iat", nullptr), "missing_iat");
  EXPECT_EQ(with("iat", now + 120), "iat_in_future");
  EXPECT_EQ(with("nbf", now + 120), "not_yet_valid");
  EXPECT_EQ(with("sub", nullptr), "missing_sub");
  EXPECT_EQ(with("sub", ""), "missing_sub");
  EXPECT_EQ(with("nonce", nullptr), "missing_nonce");
  EXPECT_EQ(with("nonce", "n-0S6_WzA2Mk"), "nonce_mismatch");
}

TEST_F(IdTokenTest, AllowsAtMostSixtySecondsOfClockSkew) {
  const int64_t now = absl::ToUnixSeconds(clock_.Now());
  json claims = Claims();
  claims["exp"] = now - 59;
  claims["iat"] = now + 59;
  EXPECT_EQ(Rejection(signer_.Sign(claims)), "");
  claims["exp"] = now - 60;
  EXPECT_EQ(Rejection(signer_.Sign(claims)), "expired");
}

TEST_F(IdTokenTest, UnknownKidTriggersAtMostOneRateLimitedRefresh) {
  ASSERT_EQ(Rejection(signer_.Sign(Claims())), "");
  EXPECT_EQ(cache_.fetch_count(), 1);
  TestSigner stranger("RS256", "unknown");
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(Rejection(stranger.Sign(Claims())), "unknown_kid");
  }
  EXPECT_EQ(cache_.fetch_count(), 2) << "a stream of forged kids must not become a stream of fetches";
  clock_.Advance(absl::Seconds(31));
  EXPECT_EQ(Rejection(stranger.Sign(Claims())), "unknown_kid");
  EXPECT_EQ(cache_.fetch_count(), 3);
}

TEST_F(IdTokenTest, ProviderKeyRotationIsPickedUpWithoutRestart) {
  ASSERT_EQ(Rejection(signer_.Sign(Claims())), "");
  TestSigner rotated("RS256", "key-2");
  jwks_doc_ = JwksOf({rotated.PublicJwk()});  // the old key is removed
  EXPECT_EQ(Rejection(rotated.Sign(Claims())), "");
  EXPECT_EQ(Rejection(signer_.Sign(Claims())), "unknown_kid");
}

TEST_F(IdTokenTest, KidlessTokensNeedExactlyOneKey) {
  const json no_kid = {{"kid", nullptr}};
  EXPECT_EQ(Rejection(signer_.Sign(Claims(), no_kid)), "");
  TestSigner second("RS256", "key-2");
  jwks_doc_ = JwksOf({signer_.PublicJwk(), second.PublicJwk()});
  clock_.Advance(absl::Hours(2));
  EXPECT_EQ(Rejection(signer_.Sign(Claims(), no_kid)), "ambiguous_kid");
}

TEST_F(IdTokenTest, MalformedTokensAreRejectedWithoutCrashing) {
  const std::string good = signer_.Sign(Claims());
  for (const std::string& bad :
       {std::string(""), std::string("a.b"), std::string("..."), good + ".x",
        // Cut before the signature (half the token may end inside the signature, which is
        // then a bad signature, not a malformed token).
        good.substr(0, good.rfind('.')), std::string("%%%.%%%.%%%"), std::string(20000, 'a'),
        jose::Base64UrlEncode("[]") + ".e30.", jose::Base64UrlEncode("{\"alg\":1}") + ".e30."}) {
    EXPECT_EQ(Rejection(bad), "malformed_token") << bad.substr(0, 40);
  }
  // Every single-bit flip of a valid token is rejected.
  for (size_t i = 0; i < good.size(); i += 7) {
    std::string flipped = good;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x01);
    EXPECT_NE(Rejection(flipped), "") << i;
  }
}

TEST_F(IdTokenTest, MicrosoftTenantTemplateIsFilledFromTheTokensTid) {
  IdTokenExpectations expect = Expect();
  expect.issuer = "https://login.microsoftonline.com/{tenantid}/v2.0";
  json claims = Claims();
  claims["tid"] = "9188040d-6c67-4c5b-b112-36a304b66dad";
  claims["iss"] = "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0";
  EXPECT_EQ(Rejection(signer_.Sign(claims), expect), "");
  claims["iss"] = "https://login.microsoftonline.com/attacker-tenant/v2.0";
  EXPECT_EQ(Rejection(signer_.Sign(claims), expect), "wrong_issuer");
  claims.erase("tid");
  EXPECT_EQ(Rejection(signer_.Sign(claims), expect), "wrong_issuer");
}

TEST(JwksTest, SkipsUnusableKeysWithoutFailing) {
  TestSigner good("RS256", "good");
  json weak = good.PublicJwk();
  weak["kid"] = "weak";
  weak["n"] = jose::Base64UrlEncode(std::string(128, '\xff'));  // 1024-bit modulus
  const std::string doc = JwksOf({json{{"kty", "RSA"}, {"kid", "broken"}, {"n", "!!"}, {"e", "AQAB"}},
                                  json{{"kty", "oct"}, {"k", "c2VjcmV0"}},
                                  json{{"kty", "EC"}, {"crv", "P-256"}, {"x", "AA"}, {"y", "AA"}},
                                  json{{"kty", "RSA"}, {"use", "enc"}, {"n", "AQAB"}, {"e", "AQAB"}},
                                  weak, good.PublicJwk()});
  absl::StatusOr<JwkSet> set = ParseJwks(doc);
  ASSERT_THAT(set.status(), IsOk());
  ASSERT_EQ(set->keys.size(), 1u);
  EXPECT_EQ(set->keys[0].kid, "good");
  EXPECT_EQ(set->skipped, 5);
  EXPECT_THAT(ParseJwks("not json").status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseJwks("{\"keys\": 3}").status(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Base64UrlTest, RoundTripsAndIsStrict) {
  for (const std::string& bytes : {std::string(""), std::string("f"), std::string("fo"),
                                   std::string("foo"), std::string("\xff\xfe\x00", 3)}) {
    EXPECT_THAT(Base64UrlDecode(Base64UrlEncode(bytes)), ::tidepool::testing::IsOkAndHolds(bytes));
  }
  EXPECT_FALSE(Base64UrlDecode("Zm9v=").ok());
  EXPECT_FALSE(Base64UrlDecode("Zm+v").ok());
  EXPECT_FALSE(Base64UrlDecode("Z").ok());
  EXPECT_FALSE(Base64UrlDecode("Zh").ok()) << "non-canonical trailing bits";
}

}  // namespace
}  // namespace tidepool::auth::jose
