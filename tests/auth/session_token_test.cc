#include "services/auth/session_token.h"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/crypto/crypto.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"

namespace tidepool::auth {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::tidepool::testing::FakeClock;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

constexpr absl::string_view kUser = "u_7h3kq2m4x5c6v7b2n3m4k5j6h7";
constexpr absl::string_view kSession = "s_abcdefghijklmnopqrstuvwxyz";
constexpr int64_t kStartSeconds = 1'700'000'000;
const absl::Time kStart = absl::FromUnixSeconds(kStartSeconds);
constexpr absl::Duration kLifetime = absl::Minutes(15);

std::string B64(absl::string_view bytes) { return absl::WebSafeBase64Escape(bytes); }

// A distinct, well-formed session id for each `i` in [0, 32^4).
std::string SessionId(int i) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::string id = "s_" + std::string(22, 'q');
  for (int d = 0; d < 4; ++d) {
    id.push_back(kAlphabet[(i >> (5 * d)) & 31]);
  }
  return id;
}

// An in-memory PublicKeySource with the same window rule as the key ring: a key is found
// while now < not_after.
class FakeKeySource final : public PublicKeySource {
 public:
  void Add(const VerificationKey& key) {
    absl::MutexLock lock(&mu_);
    keys_[key.key_id] = key;
  }
  void Remove(const std::string& kid) {
    absl::MutexLock lock(&mu_);
    keys_.erase(kid);
  }
  // A lax source returns keys whatever their window (the verifier must still check it).
  void SetLax(bool lax) {
    absl::MutexLock lock(&mu_);
    lax_ = lax;
  }
  std::optional<VerificationKey> Find(absl::string_view kid, absl::Time now) override {
    absl::MutexLock lock(&mu_);
    const auto it = keys_.find(std::string(kid));
    if (it == keys_.end() || (!lax_ && now >= it->second.not_after)) {
      return std::nullopt;
    }
    return it->second;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, VerificationKey> keys_ ABSL_GUARDED_BY(mu_);
  bool lax_ ABSL_GUARDED_BY(mu_) = false;
};

struct TestKey {
  SigningKey signing;
  VerificationKey verification;
};

// A deterministic key from a fixed seed.
TestKey MakeKey(char seed, absl::Time not_before, absl::Time not_after = absl::InfiniteFuture()) {
  absl::StatusOr<crypto::Ed25519PrivateKey> key =
      crypto::Ed25519PrivateKey::FromSeed(std::string(crypto::kEd25519SeedSize, seed));
  EXPECT_THAT(key, IsOk());
  TestKey test_key;
  const std::string public_key = key->PublicKey();
  const std::string kid = KeyIdForPublicKey(public_key);
  test_key.signing =
      SigningKey{kid, std::make_shared<const crypto::Ed25519PrivateKey>(*std::move(key)),
                 not_before, not_after};
  test_key.verification = VerificationKey{kid, public_key, not_before, not_after, true};
  return test_key;
}

std::string HeaderJson(absl::string_view kid) {
  return absl::StrCat(R"({"alg":"EdDSA","kid":")", kid, R"(","typ":"JWT"})");
}

// The canonical payload, or a variant written with the placeholders $I (iat), $E (exp),
// $S (session id) and $U (user id).
std::string PayloadJson(
    absl::string_view pattern =
        R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
    int64_t iat = kStartSeconds, int64_t exp = kStartSeconds + 900) {
  return absl::StrReplaceAll(
      pattern,
      {{"$I", absl::StrCat(iat)}, {"$E", absl::StrCat(exp)}, {"$S", kSession}, {"$U", kUser}});
}

// A token with arbitrary header and payload bytes, correctly Ed25519-signed by `key`, so that
// only the header or payload content can make it fail.
std::string Forge(absl::string_view header, absl::string_view payload,
                  const crypto::Ed25519PrivateKey& key) {
  const std::string input = absl::StrCat(B64(header), ".", B64(payload));
  absl::StatusOr<std::string> signature = key.Sign(input);
  EXPECT_THAT(signature, IsOk());
  return absl::StrCat(input, ".", B64(*signature));
}

std::vector<std::string> Parts(const std::string& token) { return absl::StrSplit(token, '.'); }

class SessionTokenTest : public ::testing::Test {
 protected:
  SessionTokenTest()
      : clock_(kStart),
        key_(MakeKey('k', kStart - absl::Hours(1))),
        uncached_(keys_, clock_, Options(0)),
        cached_(keys_, clock_, Options(1000)) {
    keys_.Add(key_.verification);
  }

  static SessionTokenVerifierOptions Options(size_t cache_capacity) {
    SessionTokenVerifierOptions options;
    options.cache_capacity = cache_capacity;
    return options;
  }

  SessionClaims Claims(absl::string_view session_id = kSession) {
    return SessionClaims{std::string(kUser), std::string(session_id),  "user",
                         clock_.Now(),       clock_.Now() + kLifetime, ""};
  }

  std::string Sign(const SessionClaims& claims, const SigningKey& key) {
    absl::StatusOr<std::string> token = SignSessionToken(claims, key);
    EXPECT_THAT(token, IsOk());
    return token.ok() ? *token : std::string();
  }
  std::string Sign(const SessionClaims& claims) { return Sign(claims, key_.signing); }

  std::string ForgeWithKey(absl::string_view header, absl::string_view payload) {
    return Forge(header, payload, *key_.signing.private_key);
  }

  // Both verifiers (with and without the cache) must refuse `token`; returns false (and
  // records a failure) otherwise.
  bool Rejected(absl::string_view token) {
    const absl::StatusOr<SessionClaims> plain = uncached_.Verify(token);
    const absl::StatusOr<SessionClaims> cached = cached_.Verify(token);
    return plain.status().code() == absl::StatusCode::kUnauthenticated &&
           cached.status().code() == absl::StatusCode::kUnauthenticated;
  }

  void ExpectRejected(absl::string_view token, absl::string_view what) {
    EXPECT_THAT(uncached_.Verify(token), StatusIs(absl::StatusCode::kUnauthenticated)) << what;
    EXPECT_THAT(cached_.Verify(token), StatusIs(absl::StatusCode::kUnauthenticated)) << what;
  }

  FakeClock clock_;
  FakeKeySource keys_;
  TestKey key_;
  SessionTokenVerifier uncached_;
  SessionTokenVerifier cached_;
};

// ---------------------------------------------------------------------------------------------
// Round trip and format

TEST_F(SessionTokenTest, RoundTripsClaims) {
  SessionClaims claims = Claims();
  claims.role = "admin";
  const std::string token = Sign(claims);
  // The second cached verification is answered from the cache.
  for (SessionTokenVerifier* verifier : {&uncached_, &cached_, &cached_}) {
    absl::StatusOr<SessionClaims> verified = verifier->Verify(token);
    ASSERT_THAT(verified, IsOk());
    EXPECT_EQ(verified->user_id, kUser);
    EXPECT_EQ(verified->session_id, kSession);
    EXPECT_EQ(verified->role, "admin");
    EXPECT_EQ(verified->issued_at, kStart);
    EXPECT_EQ(verified->expires_at, kStart + kLifetime);
    EXPECT_EQ(verified->key_id, key_.signing.key_id);
  }
  EXPECT_EQ(cached_.GetCacheStats().hits, 1u);
}

TEST_F(SessionTokenTest, EncodesExactHeaderAndPayload) {
  const std::vector<std::string> parts = Parts(Sign(Claims()));
  ASSERT_EQ(parts.size(), 3u);
  std::string header;
  std::string payload;
  std::string signature;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(parts[0], &header));
  ASSERT_TRUE(absl::WebSafeBase64Unescape(parts[1], &payload));
  ASSERT_TRUE(absl::WebSafeBase64Unescape(parts[2], &signature));
  EXPECT_EQ(header, HeaderJson(key_.signing.key_id));
  EXPECT_EQ(payload, PayloadJson());
  EXPECT_EQ(signature.size(), crypto::kEd25519SignatureSize);
  for (const std::string& part : parts) {
    EXPECT_EQ(part.find_first_of("=+/"), std::string::npos);
  }
  EXPECT_THAT(crypto::Ed25519Verify(key_.verification.public_key,
                                    absl::StrCat(parts[0], ".", parts[1]), signature),
              IsOk());
}

// Every forged variant below differs from a signer-made token only where the test says.
TEST_F(SessionTokenTest, ForgeHelperReproducesSignerOutput) {
  EXPECT_EQ(ForgeWithKey(HeaderJson(key_.signing.key_id), PayloadJson()), Sign(Claims()));
}

TEST_F(SessionTokenTest, KeyIdIsSha256PrefixOfPublicKey) {
  const std::string pub = key_.verification.public_key;
  EXPECT_EQ(KeyIdForPublicKey(pub), crypto::HexEncode(crypto::Sha256(pub)).substr(0, 16));
  EXPECT_TRUE(IsValidKeyId(KeyIdForPublicKey(pub)));
}

TEST_F(SessionTokenTest, ValidatesIdentifiers) {
  EXPECT_TRUE(IsValidUserId(kUser));
  EXPECT_TRUE(IsValidSessionId(kSession));
  EXPECT_FALSE(IsValidUserId(kSession));
  EXPECT_FALSE(IsValidSessionId(kUser));
  EXPECT_FALSE(IsValidUserId("u_7h3kq2m4x5c6v7b2n3m4k5j6h"));    // 25
  EXPECT_FALSE(IsValidUserId("u_7h3kq2m4x5c6v7b2n3m4k5j6h77"));  // 27
  EXPECT_FALSE(IsValidUserId("u_7h3kq2m4x5c6v7b2n3m4k5j6h1"));   // '1' is not base32
  EXPECT_FALSE(IsValidUserId("u_7H3KQ2M4X5C6V7B2N3M4K5J6H7"));
  EXPECT_FALSE(IsValidKeyId("0123456789ABCDEF"));
  EXPECT_FALSE(IsValidKeyId("0123456789abcde"));
}

// ---------------------------------------------------------------------------------------------
// Signing errors

TEST_F(SessionTokenTest, SignRejectsMalformedClaims) {
  SessionClaims claims = Claims();
  claims.user_id = "alice";
  EXPECT_THAT(SignSessionToken(claims, key_.signing), StatusIs(absl::StatusCode::kInvalidArgument));
  claims = Claims();
  claims.session_id = "s_short";
  EXPECT_THAT(SignSessionToken(claims, key_.signing), StatusIs(absl::StatusCode::kInvalidArgument));
  claims = Claims();
  claims.role = "root";
  EXPECT_THAT(SignSessionToken(claims, key_.signing), StatusIs(absl::StatusCode::kInvalidArgument));
  claims = Claims();
  claims.expires_at = claims.issued_at + absl::Milliseconds(999);  // same whole second
  EXPECT_THAT(SignSessionToken(claims, key_.signing), StatusIs(absl::StatusCode::kInvalidArgument));
  claims = Claims();
  claims.issued_at = absl::FromUnixSeconds(-10);
  EXPECT_THAT(SignSessionToken(claims, key_.signing), StatusIs(absl::StatusCode::kInvalidArgument));
  claims = Claims();
  claims.key_id = "0123456789abcdef";
  EXPECT_THAT(SignSessionToken(claims, key_.signing), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(SessionTokenTest, SignRejectsKeyWithoutPrivateKeyOrWrongId) {
  SigningKey empty = key_.signing;
  empty.private_key = nullptr;
  EXPECT_THAT(SignSessionToken(Claims(), empty), StatusIs(absl::StatusCode::kFailedPrecondition));
  SigningKey mislabelled = key_.signing;
  mislabelled.key_id = MakeKey('z', kStart).signing.key_id;
  EXPECT_THAT(SignSessionToken(Claims(), mislabelled),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(SessionTokenTest, SignTruncatesTimesToWholeSeconds) {
  SessionClaims claims = Claims();
  claims.issued_at += absl::Milliseconds(700);
  claims.expires_at += absl::Milliseconds(700);
  absl::StatusOr<SessionClaims> verified = uncached_.Verify(Sign(claims));
  ASSERT_THAT(verified, IsOk());
  EXPECT_EQ(verified->issued_at, kStart);
  EXPECT_EQ(verified->expires_at, kStart + kLifetime);
}

// ---------------------------------------------------------------------------------------------
// Tampering: bit flips, truncation, extension, splicing

TEST_F(SessionTokenTest, RejectsEverySingleBitFlip) {
  const std::string token = Sign(Claims());
  ASSERT_THAT(cached_.Verify(token), IsOk());  // the original is in the cache
  std::vector<std::string> accepted;
  for (size_t i = 0; i < token.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string flipped = token;
      flipped[i] = static_cast<char>(flipped[i] ^ (1 << bit));
      if (!Rejected(flipped)) {
        accepted.push_back(absl::StrCat("byte ", i, " bit ", bit));
      }
    }
  }
  EXPECT_THAT(accepted, ::testing::IsEmpty());
  EXPECT_THAT(uncached_.Verify(token), IsOk());
}

TEST_F(SessionTokenTest, RejectsEveryTruncation) {
  const std::string token = Sign(Claims());
  std::vector<size_t> accepted;
  for (size_t length = 0; length < token.size(); ++length) {
    if (!Rejected(absl::string_view(token).substr(0, length))) {
      accepted.push_back(length);
    }
  }
  EXPECT_THAT(accepted, ::testing::IsEmpty());
}

TEST_F(SessionTokenTest, RejectsExtensionsAndExtraParts) {
  const std::string token = Sign(Claims());
  const std::vector<std::string> parts = Parts(token);
  const std::vector<std::string> suffixes = {".",  "A", "AA", "AAAA",  "=",
                                             "==", " ", "\n", ".AAAA", std::string(1, '\0')};
  for (const std::string& suffix : suffixes) {
    ExpectRejected(token + suffix, absl::StrCat("suffix ", absl::CEscape(suffix)));
  }
  ExpectRejected(" " + token, "leading space");
  ExpectRejected("." + token, "leading dot");
  ExpectRejected(absl::StrCat(token, ".", parts[2]), "signature twice");
  ExpectRejected(absl::StrCat(parts[0], ".", parts[1]), "two parts");
  ExpectRejected(absl::StrCat(parts[0], "..", parts[2]), "empty payload");
  ExpectRejected(absl::StrCat(".", parts[1], ".", parts[2]), "empty header");
  ExpectRejected(absl::StrCat(parts[0], ".", parts[1], "."), "empty signature");
  ExpectRejected("", "empty");
  ExpectRejected("..", "only dots");
}

TEST_F(SessionTokenTest, RejectsSplicedTokens) {
  const std::vector<std::string> a = Parts(Sign(Claims(SessionId(1))));
  const std::vector<std::string> b = Parts(Sign(Claims(SessionId(2))));
  SessionClaims admin = Claims(SessionId(1));
  admin.role = "admin";
  const std::vector<std::string> c = Parts(Sign(admin));
  const TestKey other = MakeKey('o', kStart - absl::Hours(1));
  keys_.Add(other.verification);
  const std::vector<std::string> d = Parts(Sign(Claims(SessionId(1)), other.signing));
  ASSERT_THAT(uncached_.Verify(absl::StrJoin(d, ".")), IsOk());

  ExpectRejected(absl::StrCat(a[0], ".", b[1], ".", a[2]), "payload of B, signature of A");
  ExpectRejected(absl::StrCat(a[0], ".", a[1], ".", b[2]), "signature of B");
  ExpectRejected(absl::StrCat(a[0], ".", c[1], ".", a[2]), "role escalated payload");
  ExpectRejected(absl::StrCat(d[0], ".", a[1], ".", a[2]), "header naming the other key");
  ExpectRejected(absl::StrCat(a[0], ".", d[1], ".", d[2]), "signature by the other key");
  ExpectRejected(absl::StrCat(a[0], ".", a[1], ".", d[2]), "same claims, other key's signature");
}

// ---------------------------------------------------------------------------------------------
// Algorithm and key confusion

TEST_F(SessionTokenTest, RejectsAlgNone) {
  const std::string payload = B64(PayloadJson());
  for (const std::string& header :
       {absl::StrCat(R"({"alg":"none","kid":")", key_.signing.key_id, R"(","typ":"JWT"})"),
        std::string(R"({"alg":"none","typ":"JWT"})"), std::string(R"({"alg":"none"})")}) {
    ExpectRejected(absl::StrCat(B64(header), ".", payload, "."), header);
    ExpectRejected(absl::StrCat(B64(header), ".", payload), header);
  }
}

TEST_F(SessionTokenTest, RejectsHs256SignedWithThePublicKey) {
  const std::string& public_key = key_.verification.public_key;
  const std::string header =
      absl::StrCat(R"({"alg":"HS256","kid":")", key_.signing.key_id, R"(","typ":"JWT"})");
  const std::string input = absl::StrCat(B64(header), ".", B64(PayloadJson()));
  ExpectRejected(absl::StrCat(input, ".", B64(crypto::HmacSha256(public_key, input))),
                 "HMAC keyed with the raw public key");
  ExpectRejected(
      absl::StrCat(input, ".", B64(crypto::HmacSha256(crypto::HexEncode(public_key), input))),
      "HMAC keyed with the hex public key");
  // A 64-byte MAC, the length of an Ed25519 signature.
  const std::string mac = crypto::HmacSha256(public_key, input);
  ExpectRejected(absl::StrCat(input, ".", B64(mac + crypto::HmacSha256(public_key, mac))),
                 "64-byte MAC");
  // The same trick with the correct EdDSA header: the signature must still be Ed25519.
  const std::string eddsa_input =
      absl::StrCat(B64(HeaderJson(key_.signing.key_id)), ".", B64(PayloadJson()));
  const std::string eddsa_mac = crypto::HmacSha256(public_key, eddsa_input);
  ExpectRejected(
      absl::StrCat(eddsa_input, ".", B64(eddsa_mac + crypto::HmacSha256(public_key, eddsa_mac))),
      "EdDSA header, MAC signature");
}

TEST_F(SessionTokenTest, RejectsRs256) {
  const std::string header =
      absl::StrCat(R"({"alg":"RS256","kid":")", key_.signing.key_id, R"(","typ":"JWT"})");
  const std::string input = absl::StrCat(B64(header), ".", B64(PayloadJson()));
  ExpectRejected(absl::StrCat(input, ".", B64(std::string(256, '\x5a'))), "RS256");
  ExpectRejected(ForgeWithKey(header, PayloadJson()), "RS256 header, valid Ed25519 signature");
}

// Headers that are correctly signed by the real key: only their content can reject them.
TEST_F(SessionTokenTest, RejectsAnyHeaderButTheExactOne) {
  const std::string kid = key_.signing.key_id;
  const std::vector<std::string> headers = {
      absl::StrCat(R"({"alg":"none","kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":"HS256","kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":"ES256","kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":"EdDSA ","kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":" EdDSA","kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":"eddsa","kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":"EDDSA","kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":"Ed25519","kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":"","kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":null,"kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":["EdDSA"],"kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":"Ed\u0044SA","kid":")", kid, R"(","typ":"JWT"})"),
      // Extra, missing and duplicate members.
      absl::StrCat(R"({"alg":"EdDSA","kid":")", kid, R"(","typ":"JWT","x":1})"),
      absl::StrCat(R"({"alg":"EdDSA","crit":["x"],"kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":"EdDSA","jku":"https://evil.example/keys","kid":")", kid,
                   R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":"EdDSA","kid":")", kid, R"("})"),
      std::string(R"({"alg":"EdDSA","typ":"JWT"})"),
      absl::StrCat(R"({"kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":"none","alg":"EdDSA","kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":"EdDSA","alg":"none","kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":"EdDSA","alg":"EdDSA","kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":"EdDSA","kid":"0123456789abcdef","kid":")", kid, R"(","typ":"JWT"})"),
      // Same meaning, other bytes.
      absl::StrCat(R"({"kid":")", kid, R"(","alg":"EdDSA","typ":"JWT"})"),
      absl::StrCat(R"({"alg": "EdDSA","kid":")", kid, R"(","typ":"JWT"})"),
      absl::StrCat(HeaderJson(kid), "\n"),
      absl::StrCat("\xEF\xBB\xBF", HeaderJson(kid)),
      absl::StrCat(HeaderJson(kid), std::string(1, '\0')),
      // typ and kid variants.
      absl::StrCat(R"({"alg":"EdDSA","kid":")", kid, R"(","typ":"jwt"})"),
      absl::StrCat(R"({"alg":"EdDSA","kid":")", kid, R"(","typ":"at+jwt"})"),
      absl::StrCat(R"({"alg":"EdDSA","kid":")", absl::AsciiStrToUpper(kid), R"(","typ":"JWT"})"),
      absl::StrCat(R"({"alg":"EdDSA","kid":")", kid, R"( ","typ":"JWT"})"),
      std::string(R"({"alg":"EdDSA","kid":1,"typ":"JWT"})"),
      // Not an object.
      std::string("[]"),
      std::string("{}"),
      std::string("null"),
      std::string(R"("EdDSA")"),
      std::string("not json"),
  };
  for (const std::string& header : headers) {
    ExpectRejected(ForgeWithKey(header, PayloadJson()), header);
  }
}

TEST_F(SessionTokenTest, RejectsValidTokenFromUnrelatedKeyClaimingKnownKid) {
  const TestKey unrelated = MakeKey('u', kStart - absl::Hours(1));
  ExpectRejected(
      Forge(HeaderJson(key_.signing.key_id), PayloadJson(), *unrelated.signing.private_key),
      "unrelated key, known kid");
}

TEST_F(SessionTokenTest, RejectsUnknownKid) {
  const TestKey unknown = MakeKey('u', kStart - absl::Hours(1));
  const std::string token = Sign(Claims(), unknown.signing);
  ExpectRejected(token, "unknown kid");
  keys_.Add(unknown.verification);
  EXPECT_THAT(uncached_.Verify(token), IsOk());
}

// ---------------------------------------------------------------------------------------------
// Encoding strictness

TEST_F(SessionTokenTest, RejectsPaddingAndStandardBase64Alphabet) {
  const std::string token = Sign(Claims());
  const std::vector<std::string> parts = Parts(token);
  std::string signature;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(parts[2], &signature));
  // Standard, padded base64 of the same signature bytes ("==" at the end).
  ExpectRejected(absl::StrCat(parts[0], ".", parts[1], ".", absl::Base64Escape(signature)),
                 "padded signature");
  ExpectRejected(absl::StrCat(parts[0], "=.", parts[1], ".", parts[2]), "padded header");
  ExpectRejected(absl::StrCat(parts[0], ".", parts[1], "=.", parts[2]), "padded payload");
  ExpectRejected(absl::StrCat(parts[0], ".", parts[1], ".", parts[2], "=="), "trailing ==");

  // '+' and '/' in place of '-' and '_': find tokens containing each.
  bool saw_dash = false;
  bool saw_underscore = false;
  for (int i = 0; i < 64 && !(saw_dash && saw_underscore); ++i) {
    const std::string candidate = Sign(Claims(SessionId(i)));
    if (candidate.find('-') != std::string::npos) {
      saw_dash = true;
      ExpectRejected(absl::StrReplaceAll(candidate, {{"-", "+"}}), "'+' for '-'");
    }
    if (candidate.find('_') != std::string::npos) {
      saw_underscore = true;
      ExpectRejected(absl::StrReplaceAll(candidate, {{"_", "/"}}), "'/' for '_'");
    }
  }
  EXPECT_TRUE(saw_dash);
  EXPECT_TRUE(saw_underscore);
}

TEST_F(SessionTokenTest, RejectsWhitespaceAnywhere) {
  const std::string token = Sign(Claims());
  const std::vector<std::string> parts = Parts(token);
  const size_t positions[] = {
      0,           5, parts[0].size(), parts[0].size() + 1, parts[0].size() + 10, token.size() - 10,
      token.size()};
  for (const size_t pos : positions) {
    for (const char* ws : {" ", "\t", "\n", "\r"}) {
      std::string spaced = token;
      spaced.insert(pos, ws);
      ExpectRejected(spaced, absl::StrCat("whitespace at ", pos));
    }
  }
}

TEST_F(SessionTokenTest, RejectsNonCanonicalTrailingBits) {
  static constexpr absl::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const std::vector<std::string> parts = Parts(Sign(Claims()));
  // A 64-byte signature is 86 characters whose last one carries 4 unused (zero) bits; the
  // 52-byte header likewise. Setting an unused bit leaves the decoded bytes unchanged for a
  // lenient decoder.
  ASSERT_EQ(parts[2].size(), 86u);
  ASSERT_EQ(parts[0].size() % 4, 2u);
  for (int part : {0, 2}) {
    std::vector<std::string> altered = parts;
    const size_t value = kAlphabet.find(altered[part].back());
    ASSERT_EQ(value & 0xF, 0u);
    altered[part].back() = kAlphabet[value | 1];
    ExpectRejected(absl::StrJoin(altered, "."), absl::StrCat("trailing bits in part ", part));
  }
}

// ---------------------------------------------------------------------------------------------
// Claims

TEST_F(SessionTokenTest, RejectsAnyPayloadButExactlyTheExpectedClaims) {
  const std::string header = HeaderJson(key_.signing.key_id);
  const std::vector<std::string> patterns = {
      // Issuer.
      R"({"exp":$E,"iat":$I,"iss":"tidepool2","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":"Tidepool","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":"","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":1,"role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"role":"user","sid":"$S","sub":"$U"})",
      // Subject.
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"u_alice"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"U_7H3KQ2M4X5C6V7B2N3M4K5J6H7"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"u_7h3kq2m4x5c6v7b2n3m4k5j6h1"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"$S"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"$U "})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":12345})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":null})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"user","sid":"$S"})",
      // Session id.
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"user","sid":"s_1","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"user","sid":"$U","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"user","sid":["$S"],"sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"user","sub":"$U"})",
      // Role.
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"root","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"Admin","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"admin ","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":["admin"],"sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","sid":"$S","sub":"$U"})",
      // Times.
      R"({"exp":"$E","iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":$E.0,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":1.7e12,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":18446744073709551615,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":99999999999999999999999,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":null,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":-1,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":"$I","iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      R"({"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":$I,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":$I,"iat":$E,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      // Extra and duplicate claims.
      R"({"aud":"proxy","exp":$E,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","nbf":$I,"role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"user","role":"admin","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"admin","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"exp":9999999999,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      // Same meaning, other bytes.
      R"({"iat":$I,"exp":$E,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      R"({ "exp":$E,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"us\u0065r","sid":"$S","sub":"$U"})",
      R"({"exp":$E,"iat":$I,"iss":"tidepool","role":"user","sid":"$S","sub":"$U"} )",
      // Not an object.
      R"([$E,$I])",
      R"("$U")",
      R"(null)",
      R"({})",
  };
  // The control: the canonical pattern verifies.
  EXPECT_THAT(uncached_.Verify(ForgeWithKey(header, PayloadJson())), IsOk());
  for (const std::string& pattern : patterns) {
    ExpectRejected(ForgeWithKey(header, PayloadJson(pattern)), pattern);
  }
}

TEST_F(SessionTokenTest, RejectsWrongIssuerConfigured) {
  SessionTokenVerifierOptions options = Options(0);
  options.issuer = "tidepool-staging";
  SessionTokenVerifier verifier(keys_, clock_, options);
  EXPECT_THAT(verifier.Verify(Sign(Claims())), StatusIs(absl::StatusCode::kUnauthenticated));
}

// ---------------------------------------------------------------------------------------------
// Time

TEST_F(SessionTokenTest, RejectsExpiredBeyondSkew) {
  const absl::Time now = clock_.Now();
  SessionClaims claims = Claims();
  claims.issued_at = now - absl::Minutes(20);
  claims.expires_at = now - absl::Seconds(6);
  ExpectRejected(Sign(claims), "expired 6 s ago");
  claims.expires_at = now - absl::Seconds(5);
  ExpectRejected(Sign(claims), "expired exactly skew ago");
  claims.expires_at = now - absl::Seconds(4);
  EXPECT_THAT(uncached_.Verify(Sign(claims)), IsOk());
}

TEST_F(SessionTokenTest, RejectsIssuedInTheFutureBeyondSkew) {
  const absl::Time now = clock_.Now();
  SessionClaims claims = Claims();
  claims.issued_at = now + absl::Seconds(6);
  ExpectRejected(Sign(claims), "iat 6 s ahead");
  claims.issued_at = now + absl::Seconds(5);
  EXPECT_THAT(uncached_.Verify(Sign(claims)), IsOk());
}

TEST_F(SessionTokenTest, RejectsTokenIssuedBeforeItsKeyExisted) {
  const TestKey young = MakeKey('y', kStart);
  keys_.Add(young.verification);
  SessionClaims claims = Claims();
  claims.issued_at = kStart - absl::Seconds(10);
  ExpectRejected(Sign(claims, young.signing), "iat before key not_before");
  claims.issued_at = kStart - absl::Seconds(5);
  EXPECT_THAT(uncached_.Verify(Sign(claims, young.signing)), IsOk());
}

TEST_F(SessionTokenTest, RejectsKeyOutsideItsVerificationWindow) {
  const TestKey retiring = MakeKey('r', kStart - absl::Hours(1), kStart + absl::Minutes(1));
  keys_.Add(retiring.verification);
  const std::string token = Sign(Claims(), retiring.signing);  // expires kStart + 15 min
  EXPECT_THAT(uncached_.Verify(token), IsOk());
  clock_.Advance(absl::Minutes(1));
  ExpectRejected(token, "key window closed");
  keys_.SetLax(true);  // a source that hands out the key anyway
  ExpectRejected(token, "key window closed, lax source");
}

// ---------------------------------------------------------------------------------------------
// Size and error messages

TEST_F(SessionTokenTest, RejectsOversizeTokens) {
  const std::string token = Sign(Claims());
  SessionTokenVerifierOptions options = Options(0);
  options.max_token_bytes = token.size() - 1;
  SessionTokenVerifier tight(keys_, clock_, options);
  EXPECT_THAT(tight.Verify(token), StatusIs(absl::StatusCode::kUnauthenticated));
  options.max_token_bytes = token.size();
  SessionTokenVerifier exact(keys_, clock_, options);
  EXPECT_THAT(exact.Verify(token), IsOk());

  ExpectRejected(token + std::string(4097 - token.size(), 'A'), "4097 bytes");
  ExpectRejected(std::string(1 << 20, 'A'), "1 MiB");
  const std::string huge_payload = PayloadJson(
      absl::StrCat(R"({"exp":$E,"iat":$I,"iss":"tidepool","pad":")", std::string(5000, 'x'),
                   R"(","role":"user","sid":"$S","sub":"$U"})"));
  ExpectRejected(ForgeWithKey(HeaderJson(key_.signing.key_id), huge_payload), "signed, huge");
}

TEST_F(SessionTokenTest, ErrorsNeverEchoTheToken) {
  const std::string token = Sign(Claims());
  const std::vector<std::string> parts = Parts(token);
  std::string expired_token;
  {
    SessionClaims claims = Claims();
    claims.issued_at = kStart - absl::Hours(2);
    claims.expires_at = kStart - absl::Hours(1);
    expired_token = Sign(claims);
  }
  const std::vector<std::string> bad = {
      token.substr(0, token.size() - 1),
      absl::StrCat(parts[0], ".", parts[1]),
      ForgeWithKey(R"({"alg":"none"})", PayloadJson()),
      ForgeWithKey(
          HeaderJson(key_.signing.key_id),
          PayloadJson(R"({"exp":$E,"iat":$I,"iss":"x","role":"user","sid":"$S","sub":"$U"})")),
      Sign(Claims(), MakeKey('u', kStart).signing),
      expired_token,
      std::string(5000, 'A'),
  };
  for (const std::string& candidate : bad) {
    const absl::Status status = uncached_.Verify(candidate).status();
    ASSERT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
    EXPECT_LT(status.message().size(), 64u);
    for (const std::string& secret : {parts[0], parts[1], parts[2], std::string(kUser),
                                      std::string(kSession), key_.signing.key_id}) {
      EXPECT_THAT(std::string(status.message()), Not(HasSubstr(secret)));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The verified-token cache

TEST_F(SessionTokenTest, CacheServesRepeatedVerifications) {
  const std::string token = Sign(Claims());
  for (int i = 0; i < 5; ++i) {
    ASSERT_THAT(cached_.Verify(token), IsOk());
  }
  const SessionTokenVerifier::CacheStats stats = cached_.GetCacheStats();
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.hits, 4u);
  EXPECT_EQ(stats.size, 1u);
}

TEST_F(SessionTokenTest, CacheDoesNotRememberFailures) {
  const std::string token = Sign(Claims());
  ExpectRejected(token.substr(0, token.size() - 2), "truncated");
  ExpectRejected(token.substr(0, token.size() - 2), "truncated again");
  EXPECT_EQ(cached_.GetCacheStats().size, 0u);
}

TEST_F(SessionTokenTest, CachedTokenStillExpiresOnTime) {
  const std::string token = Sign(Claims());  // exp = kStart + 15 min; skew 5 s
  ASSERT_THAT(cached_.Verify(token), IsOk());
  clock_.Set(kStart + kLifetime + absl::Seconds(4));
  EXPECT_THAT(cached_.Verify(token), IsOk());
  clock_.Set(kStart + kLifetime + absl::Seconds(5));
  EXPECT_THAT(cached_.Verify(token), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_GE(cached_.GetCacheStats().hits, 2u);
}

TEST_F(SessionTokenTest, CachedTokenRejectedAfterKeyWindowCloses) {
  const TestKey retiring = MakeKey('r', kStart - absl::Hours(1), kStart + absl::Minutes(5));
  keys_.Add(retiring.verification);
  const std::string token = Sign(Claims(), retiring.signing);
  ASSERT_THAT(cached_.Verify(token), IsOk());
  clock_.Advance(absl::Minutes(4));
  EXPECT_THAT(cached_.Verify(token), IsOk());
  clock_.Advance(absl::Minutes(1));
  EXPECT_THAT(cached_.Verify(token), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_EQ(cached_.GetCacheStats().hits, 2u);
}

TEST_F(SessionTokenTest, CachedTokenRejectedWhenKeyDisappearsOrChanges) {
  const std::string token = Sign(Claims());
  ASSERT_THAT(cached_.Verify(token), IsOk());
  keys_.Remove(key_.signing.key_id);
  EXPECT_THAT(cached_.Verify(token), StatusIs(absl::StatusCode::kUnauthenticated));
  // The kid now maps to different key material.
  VerificationKey impostor = key_.verification;
  impostor.public_key = MakeKey('i', kStart).verification.public_key;
  keys_.Add(impostor);
  EXPECT_THAT(cached_.Verify(token), StatusIs(absl::StatusCode::kUnauthenticated));
  keys_.Add(key_.verification);
  EXPECT_THAT(cached_.Verify(token), IsOk());
}

TEST_F(SessionTokenTest, CacheIsBounded) {
  for (const size_t capacity : {size_t{8}, size_t{20}}) {
    SessionTokenVerifier verifier(keys_, clock_, Options(capacity));
    std::vector<std::string> tokens;
    for (int i = 0; i < 200; ++i) {
      tokens.push_back(Sign(Claims(SessionId(i))));
      ASSERT_THAT(verifier.Verify(tokens.back()), IsOk());
      ASSERT_LE(verifier.GetCacheStats().size, capacity);
    }
    EXPECT_GT(verifier.GetCacheStats().size, 0u);
    // Evicted tokens still verify, through the full path.
    for (const std::string& token : tokens) {
      EXPECT_THAT(verifier.Verify(token), IsOk());
    }
    EXPECT_LE(verifier.GetCacheStats().size, capacity);
  }
}

TEST_F(SessionTokenTest, ZeroCapacityDisablesTheCache) {
  const std::string token = Sign(Claims());
  ASSERT_THAT(uncached_.Verify(token), IsOk());
  ASSERT_THAT(uncached_.Verify(token), IsOk());
  const SessionTokenVerifier::CacheStats stats = uncached_.GetCacheStats();
  EXPECT_EQ(stats.hits, 0u);
  EXPECT_EQ(stats.size, 0u);
}

TEST_F(SessionTokenTest, VerifiesConcurrently) {
  std::vector<std::string> tokens;
  for (int i = 0; i < 16; ++i) {
    tokens.push_back(Sign(Claims(SessionId(i))));
  }
  const std::string forged = ForgeWithKey(R"({"alg":"none"})", PayloadJson());
  constexpr int kThreads = 4;
  constexpr int kRounds = 200;
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        const std::string& token = tokens[static_cast<size_t>(i + t) % tokens.size()];
        if (!cached_.Verify(token).ok() || cached_.Verify(forged).ok()) {
          ++failures[static_cast<size_t>(t)];
        }
      }
    });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }
  EXPECT_THAT(failures, ::testing::Each(0));
  const SessionTokenVerifier::CacheStats stats = cached_.GetCacheStats();
  EXPECT_EQ(stats.size, tokens.size());
  EXPECT_EQ(stats.hits + stats.misses, 2u * kThreads * kRounds);
}

}  // namespace
}  // namespace tidepool::auth
