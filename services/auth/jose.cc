#include "services/auth/jose.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "lib/status_macros.h"

namespace tidepool::auth::jose {
namespace {

using Json = nlohmann::json;

constexpr size_t kMaxTokenBytes = 16 * 1024;
constexpr size_t kMaxJwksKeys = 100;

constexpr char kB64Alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// Maps a character to its 6-bit value, or -1 for anything outside the base64url alphabet
// (padding, '+', '/', whitespace, NUL, non-ASCII...).
constexpr std::array<int8_t, 256> MakeB64DecodeTable() {
  std::array<int8_t, 256> table{};
  for (auto& v : table) {
    v = -1;
  }
  for (int i = 0; i < 64; ++i) {
    table[static_cast<unsigned char>(kB64Alphabet[i])] = static_cast<int8_t>(i);
  }
  return table;
}
constexpr std::array<int8_t, 256> kB64DecodeTable = MakeB64DecodeTable();

struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
struct ParamBldDeleter {
  void operator()(OSSL_PARAM_BLD* bld) const { OSSL_PARAM_BLD_free(bld); }
};
struct ParamDeleter {
  void operator()(OSSL_PARAM* params) const { OSSL_PARAM_free(params); }
};
struct BnDeleter {
  void operator()(BIGNUM* bn) const { BN_free(bn); }
};
struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* ctx) const { EVP_PKEY_CTX_free(ctx); }
};

std::shared_ptr<EVP_PKEY> Share(EVP_PKEY* key) { return std::shared_ptr<EVP_PKEY>(key, PkeyDeleter()); }

std::string StringMember(const Json& object, const char* name) {
  auto it = object.find(name);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Builds an EVP_PKEY of `type` ("RSA", "EC") from OpenSSL parameters.
std::shared_ptr<EVP_PKEY> FromData(const char* type, OSSL_PARAM_BLD* bld) {
  std::unique_ptr<OSSL_PARAM, ParamDeleter> params(OSSL_PARAM_BLD_to_param(bld));
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter> ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* key = nullptr;
  if (params == nullptr || ctx == nullptr || EVP_PKEY_fromdata_init(ctx.get()) <= 0 ||
      EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) <= 0) {
    return nullptr;
  }
  return Share(key);
}

std::shared_ptr<EVP_PKEY> RsaKey(const Json& jwk) {
  absl::StatusOr<std::string> n = Base64UrlDecode(StringMember(jwk, "n"));
  absl::StatusOr<std::string> e = Base64UrlDecode(StringMember(jwk, "e"));
  if (!n.ok() || !e.ok() || n->empty() || e->empty() || e->size() > 8) {
    return nullptr;
  }
  std::unique_ptr<BIGNUM, BnDeleter> bn_n(
      BN_bin2bn(reinterpret_cast<const unsigned char*>(n->data()), static_cast<int>(n->size()), nullptr));
  std::unique_ptr<BIGNUM, BnDeleter> bn_e(
      BN_bin2bn(reinterpret_cast<const unsigned char*>(e->data()), static_cast<int>(e->size()), nullptr));
  if (bn_n == nullptr || bn_e == nullptr || BN_num_bits(bn_n.get()) < 2048 ||
      BN_num_bits(bn_n.get()) > 8192) {
    return nullptr;
  }
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldDeleter> bld(OSSL_PARAM_BLD_new());
  if (bld == nullptr || !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) ||
      !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get())) {
    return nullptr;
  }
  return FromData("RSA", bld.get());
}

std::shared_ptr<EVP_PKEY> EcKey(const Json& jwk) {
  if (StringMember(jwk, "crv") != "P-256") {
    return nullptr;
  }
  absl::StatusOr<std::string> x = Base64UrlDecode(StringMember(jwk, "x"));
  absl::StatusOr<std::string> y = Base64UrlDecode(StringMember(jwk, "y"));
  if (!x.ok() || !y.ok() || x->size() != 32 || y->size() != 32) {
    return nullptr;
  }
  const std::string point = absl::StrCat(std::string(1, '\x04'), *x, *y);
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldDeleter> bld(OSSL_PARAM_BLD_new());
  char group[] = "P-256";
  if (bld == nullptr ||
      !OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
      !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                        point.size())) {
    return nullptr;
  }
  // EVP_PKEY_fromdata checks that the point is on the curve.
  return FromData("EC", bld.get());
}

std::shared_ptr<EVP_PKEY> OkpKey(const Json& jwk) {
  if (StringMember(jwk, "crv") != "Ed25519") {
    return nullptr;
  }
  absl::StatusOr<std::string> x = Base64UrlDecode(StringMember(jwk, "x"));
  if (!x.ok() || x->size() != 32) {
    return nullptr;
  }
  EVP_PKEY* key = EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(x->data()), x->size());
  return key == nullptr ? nullptr : Share(key);
}

// Which key type an algorithm needs.
const char* KeyTypeFor(absl::string_view alg) {
  if (alg == "RS256" || alg == "PS256") return "RSA";
  if (alg == "ES256") return "EC";
  if (alg == "EdDSA") return "OKP";
  return nullptr;
}

// Converts a JOSE ECDSA signature (r || s, 32 bytes each) to DER.
std::optional<std::string> EcdsaRawToDer(absl::string_view raw) {
  if (raw.size() != 64) {
    return std::nullopt;
  }
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), 32, nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data() + 32), 32, nullptr);
  if (sig == nullptr || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return std::nullopt;
  }
  unsigned char* der = nullptr;
  const int length = i2d_ECDSA_SIG(sig, &der);
  ECDSA_SIG_free(sig);
  if (length <= 0) {
    return std::nullopt;
  }
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(length));
  OPENSSL_free(der);
  return out;
}

absl::Status Reject(std::string* reason, absl::string_view code, absl::string_view message) {
  if (reason != nullptr) {
    *reason = std::string(code);
  }
  return absl::UnauthenticatedError(absl::StrCat("the identity token is invalid: ", message));
}

std::optional<absl::Time> NumericDate(const Json& claims, const char* name) {
  auto it = claims.find(name);
  if (it == claims.end() || !it->is_number()) {
    return std::nullopt;
  }
  const double seconds = it->get<double>();
  if (!(seconds >= 0 && seconds < 1e11)) {
    return std::nullopt;
  }
  return absl::FromUnixSeconds(static_cast<int64_t>(seconds));
}

}  // namespace

// Canonical unpadded base64url only: the 64 alphabet characters, a length that is not 1 mod
// 4, and zero unused low bits in the last character, so every byte string has exactly one
// accepted encoding.
absl::StatusOr<std::string> Base64UrlDecode(absl::string_view text) {
  if (text.size() % 4 == 1) {
    return absl::InvalidArgumentError("not valid base64url");
  }
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t buffer = 0;
  int bits = 0;
  for (const char c : text) {
    const int8_t v = kB64DecodeTable[static_cast<unsigned char>(c)];
    if (v < 0) {
      return absl::InvalidArgumentError("not valid base64url");
    }
    buffer = (buffer << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xFF));
    }
  }
  // 2 or 4 leftover bits must be zero, or another string would decode to the same bytes.
  if ((buffer & ((1u << bits) - 1)) != 0) {
    return absl::InvalidArgumentError("not valid base64url");
  }
  return out;
}

std::string Base64UrlEncode(absl::string_view in) {
  std::string out;
  out.reserve((in.size() * 4 + 2) / 3);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = (static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << 16) |
                       (static_cast<uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8) |
                       static_cast<uint32_t>(static_cast<unsigned char>(in[i + 2]));
    out.push_back(kB64Alphabet[(v >> 18) & 63]);
    out.push_back(kB64Alphabet[(v >> 12) & 63]);
    out.push_back(kB64Alphabet[(v >> 6) & 63]);
    out.push_back(kB64Alphabet[v & 63]);
  }
  const size_t rest = in.size() - i;
  if (rest == 1) {
    const uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << 16;
    out.push_back(kB64Alphabet[(v >> 18) & 63]);
    out.push_back(kB64Alphabet[(v >> 12) & 63]);
  } else if (rest == 2) {
    const uint32_t v = (static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << 16) |
                       (static_cast<uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8);
    out.push_back(kB64Alphabet[(v >> 18) & 63]);
    out.push_back(kB64Alphabet[(v >> 12) & 63]);
    out.push_back(kB64Alphabet[(v >> 6) & 63]);
  }
  return out;
}

const std::vector<std::string>& SupportedAlgorithms() {
  static const auto* const kAlgorithms =
      new std::vector<std::string>{"RS256", "PS256", "ES256", "EdDSA"};
  return *kAlgorithms;
}

absl::StatusOr<JwkSet> ParseJwks(absl::string_view json) {
  Json doc = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.contains("keys") || !doc["keys"].is_array()) {
    return absl::InvalidArgumentError("the JWKS is not a JSON object with a \"keys\" array");
  }
  JwkSet set;
  for (const Json& entry : doc["keys"]) {
    if (set.keys.size() >= kMaxJwksKeys) {
      ++set.skipped;
      continue;
    }
    if (!entry.is_object()) {
      ++set.skipped;
      continue;
    }
    const std::string use = StringMember(entry, "use");
    Jwk jwk;
    jwk.kid = StringMember(entry, "kid");
    jwk.kty = StringMember(entry, "kty");
    jwk.alg = StringMember(entry, "alg");
    if (!use.empty() && use != "sig") {
      ++set.skipped;
      continue;
    }
    if (jwk.kty == "RSA") {
      jwk.key = RsaKey(entry);
    } else if (jwk.kty == "EC") {
      jwk.key = EcKey(entry);
    } else if (jwk.kty == "OKP") {
      jwk.key = OkpKey(entry);
    }
    if (jwk.key == nullptr) {
      ++set.skipped;
      continue;
    }
    set.keys.push_back(std::move(jwk));
  }
  return set;
}

absl::StatusOr<CompactJws> ParseCompactJws(absl::string_view token) {
  if (token.empty() || token.size() > kMaxTokenBytes) {
    return absl::InvalidArgumentError("the token is empty or larger than 16 KiB");
  }
  std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3 || parts[0].empty() || parts[1].empty()) {
    return absl::InvalidArgumentError("the token is not a compact JWS");
  }
  absl::StatusOr<std::string> header = Base64UrlDecode(parts[0]);
  absl::StatusOr<std::string> payload = Base64UrlDecode(parts[1]);
  absl::StatusOr<std::string> signature = Base64UrlDecode(parts[2]);
  if (!header.ok() || !payload.ok() || !signature.ok()) {
    return absl::InvalidArgumentError("the token is not valid base64url");
  }
  Json parsed = Json::parse(*header, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object() || !parsed.contains("alg") || !parsed["alg"].is_string()) {
    return absl::InvalidArgumentError("the token header is not a JSON object with an alg");
  }
  CompactJws jws;
  jws.alg = parsed["alg"].get<std::string>();
  if (auto kid = parsed.find("kid"); kid != parsed.end()) {
    if (!kid->is_string()) {
      return absl::InvalidArgumentError("the token's kid is not a string");
    }
    jws.kid = kid->get<std::string>();
    jws.has_kid = true;
  }
  if (parsed.contains("crit")) {
    // No critical extensions are understood (RFC 7515 §4.1.11).
    return absl::InvalidArgumentError("the token names critical header extensions");
  }
  jws.payload_json = *std::move(payload);
  jws.signing_input = absl::StrCat(parts[0], ".", parts[1]);
  jws.signature = *std::move(signature);
  return jws;
}

bool VerifyJwsSignature(const CompactJws& jws, const Jwk& key) {
  const char* type = KeyTypeFor(jws.alg);
  if (type == nullptr || key.key == nullptr || key.kty != type ||
      (!key.alg.empty() && key.alg != jws.alg)) {
    return false;
  }
  std::string signature = jws.signature;
  if (jws.alg == "ES256") {
    std::optional<std::string> der = EcdsaRawToDer(signature);
    if (!der.has_value()) {
      return false;
    }
    signature = *std::move(der);
  }
  std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  const EVP_MD* md = jws.alg == "EdDSA" ? nullptr : EVP_sha256();
  if (ctx == nullptr ||
      EVP_DigestVerifyInit(ctx.get(), &pctx, md, nullptr, key.key.get()) != 1) {
    return false;
  }
  if (jws.alg == "PS256" &&
      (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
       EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) {
    return false;
  }
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                          signature.size(),
                          reinterpret_cast<const unsigned char*>(jws.signing_input.data()),
                          jws.signing_input.size()) == 1;
}

JwksCache::JwksCache(Fetcher fetch, Clock& clock, absl::Duration ttl,
                     absl::Duration unknown_kid_refresh_interval)
    : fetch_(std::move(fetch)),
      clock_(clock),
      ttl_(ttl),
      unknown_kid_refresh_interval_(unknown_kid_refresh_interval) {}

int JwksCache::fetch_count() const {
  absl::MutexLock lock(&mu_);
  return fetch_count_;
}

absl::Status JwksCache::RefreshLocked() {
  ++fetch_count_;
  absl::StatusOr<std::string> body = fetch_();
  if (!body.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot fetch the provider's keys: ",
                                               body.status().message()));
  }
  absl::StatusOr<JwkSet> set = ParseJwks(*body);
  if (!set.ok()) {
    return absl::UnavailableError(absl::StrCat("the provider's keys are unusable: ",
                                               set.status().message()));
  }
  keys_ = *std::move(set);
  fetched_at_ = clock_.Now();
  return absl::OkStatus();
}

absl::StatusOr<Jwk> JwksCache::KeyFor(absl::string_view kid, bool has_kid) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.Now();
  if (!keys_.has_value() || now - fetched_at_ >= ttl_) {
    absl::Status refreshed = RefreshLocked();
    if (!refreshed.ok() && !keys_.has_value()) {
      return refreshed;
    }
  }
  auto find = [&]() -> absl::StatusOr<Jwk> {
    if (!has_kid) {
      if (keys_->keys.size() == 1) {
        return keys_->keys.front();
      }
      return absl::FailedPreconditionError("a token without kid meets several keys");
    }
    const Jwk* match = nullptr;
    for (const Jwk& key : keys_->keys) {
      if (key.kid == kid) {
        if (match != nullptr) {
          return absl::FailedPreconditionError("several keys share the token's kid");
        }
        match = &key;
      }
    }
    if (match == nullptr) {
      return absl::NotFoundError("no key has the token's kid");
    }
    return *match;
  };
  absl::StatusOr<Jwk> key = find();
  if (key.ok() || !absl::IsNotFound(key.status())) {
    return key;
  }
  if (now - unknown_kid_refresh_at_ < unknown_kid_refresh_interval_) {
    return key;
  }
  unknown_kid_refresh_at_ = now;
  if (absl::Status refreshed = RefreshLocked(); !refreshed.ok()) {
    return key;
  }
  return find();
}

absl::StatusOr<IdTokenClaims> VerifyIdToken(absl::string_view token,
                                            const IdTokenExpectations& expect, JwksCache& keys,
                                            std::string* reason) {
  absl::StatusOr<CompactJws> jws = ParseCompactJws(token);
  if (!jws.ok()) {
    return Reject(reason, "malformed_token", jws.status().message());
  }
  if (std::find(expect.allowed_algorithms.begin(), expect.allowed_algorithms.end(), jws->alg) ==
          expect.allowed_algorithms.end() ||
      KeyTypeFor(jws->alg) == nullptr) {
    return Reject(reason, "alg_not_allowed", "its signing algorithm is not allowed");
  }
  absl::StatusOr<Jwk> key = keys.KeyFor(jws->kid, jws->has_kid);
  if (!key.ok()) {
    if (absl::IsUnavailable(key.status())) {
      if (reason != nullptr) *reason = "jwks_unavailable";
      return key.status();
    }
    return Reject(reason, absl::IsNotFound(key.status()) ? "unknown_kid" : "ambiguous_kid",
                  key.status().message());
  }
  if (!VerifyJwsSignature(*jws, *key)) {
    return Reject(reason, "bad_signature", "its signature does not verify");
  }
  Json claims = Json::parse(jws->payload_json, nullptr, /*allow_exceptions=*/false);
  if (!claims.is_object()) {
    return Reject(reason, "malformed_token", "its payload is not a JSON object");
  }
  IdTokenClaims out;
  out.issuer = StringMember(claims, "iss");
  out.subject = StringMember(claims, "sub");
  out.email = StringMember(claims, "email");
  out.name = StringMember(claims, "name");
  out.preferred_username = StringMember(claims, "preferred_username");
  out.tenant_id = StringMember(claims, "tid");
  out.object_id = StringMember(claims, "oid");
  out.hosted_domain = StringMember(claims, "hd");
  if (auto it = claims.find("email_verified"); it != claims.end()) {
    // Some issuers send the string "true".
    out.email_verified = (it->is_boolean() && it->get<bool>()) ||
                         (it->is_string() && it->get<std::string>() == "true");
  }
  if (auto it = claims.find("groups"); it != claims.end() && it->is_array()) {
    for (const Json& group : *it) {
      if (group.is_string()) out.groups.push_back(group.get<std::string>());
    }
  }
  std::string expected_issuer = expect.issuer;
  if (expected_issuer.find("{tenantid}") != std::string::npos) {
    if (out.tenant_id.empty()) {
      return Reject(reason, "wrong_issuer", "it has no tenant to check the issuer against");
    }
    expected_issuer = absl::StrReplaceAll(expected_issuer, {{"{tenantid}", out.tenant_id}});
  }
  if (out.issuer.empty() || out.issuer != expected_issuer) {
    return Reject(reason, "wrong_issuer", "it was issued by another issuer");
  }
  if (auto it = claims.find("aud"); it != claims.end()) {
    if (it->is_string()) {
      out.audience.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const Json& aud : *it) {
        if (aud.is_string()) out.audience.push_back(aud.get<std::string>());
      }
    }
  }
  if (out.audience.empty()) {
    return Reject(reason, "missing_audience", "it has no audience");
  }
  if (std::find(out.audience.begin(), out.audience.end(), expect.client_id) ==
      out.audience.end()) {
    return Reject(reason, "wrong_audience", "it was issued for another client");
  }
  if (out.audience.size() > 1) {
    return Reject(reason, "untrusted_audience", "it names audiences besides this client");
  }
  if (claims.contains("azp") && StringMember(claims, "azp") != expect.client_id) {
    return Reject(reason, "wrong_audience", "its authorized party is another client");
  }
  std::optional<absl::Time> exp = NumericDate(claims, "exp");
  if (!exp.has_value()) {
    return Reject(reason, "missing_exp", "it has no expiry");
  }
  if (*exp + expect.max_skew <= expect.now) {
    return Reject(reason, "expired", "it has expired");
  }
  out.expire_time = *exp;
  std::optional<absl::Time> iat = NumericDate(claims, "iat");
  if (!iat.has_value()) {
    return Reject(reason, "missing_iat", "it has no issue time");
  }
  if (*iat > expect.now + expect.max_skew) {
    return Reject(reason, "iat_in_future", "it was issued in the future");
  }
  out.issue_time = *iat;
  if (claims.contains("nbf")) {
    std::optional<absl::Time> nbf = NumericDate(claims, "nbf");
    if (!nbf.has_value() || *nbf > expect.now + expect.max_skew) {
      return Reject(reason, "not_yet_valid", "it is not valid yet");
    }
  }
  if (out.subject.empty()) {
    return Reject(reason, "missing_sub", "it has no subject");
  }
  const std::string nonce = StringMember(claims, "nonce");
  if (nonce.empty()) {
    return Reject(reason, "missing_nonce", "it has no nonce");
  }
  if (expect.nonce.empty() || nonce.size() != expect.nonce.size() ||
      CRYPTO_memcmp(nonce.data(), expect.nonce.data(), nonce.size()) != 0) {
    return Reject(reason, "nonce_mismatch", "its nonce does not match this sign-in");
  }
  return out;
}

}  // namespace tidepool::auth::jose
