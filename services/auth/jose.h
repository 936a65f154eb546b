#pragma once

// JOSE for relying on identity providers: JSON Web Keys (RFC 7517), compact JWS (RFC 7515)
// and the verification of OpenID Connect ID tokens (OIDC Core §3.1.3.7), hardened along
// RFC 8725 and the OpenID Foundation's relying-party negative tests:
//   - the algorithm is pinned by configuration (never chosen by the token): "none", HS*
//     and anything not in the allowed set are rejected before any key is touched;
//   - a key is used only for an algorithm its type supports (an RSA key never verifies an
//     HMAC, so the "HS256 keyed with the RSA public key" confusion cannot happen);
//   - header-supplied keys and key URLs (jwk, jku, x5u, x5c) are ignored;
//   - unparseable keys in a JWKS are skipped, never fatal; RSA keys under 2048 bits are
//     skipped;
//   - a token without "kid" is accepted only when exactly one usable key exists.
//
// Thread-safe: JwksCache locks internally; the rest is stateless.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/clock.h"

typedef struct evp_pkey_st EVP_PKEY;

namespace tidepool::auth::jose {

// Strict base64url (RFC 4648 §5) without padding: any other character, padding, or a
// length that cannot occur is INVALID_ARGUMENT.
absl::StatusOr<std::string> Base64UrlDecode(absl::string_view text);
std::string Base64UrlEncode(absl::string_view bytes);

// A public signature key from a JWKS.
struct Jwk {
  std::string kid;  // may be empty
  std::string kty;  // "RSA", "EC" (P-256 only) or "OKP" (Ed25519 only)
  std::string alg;  // the key's "alg" member, if any
  std::shared_ptr<EVP_PKEY> key;
};

struct JwkSet {
  std::vector<Jwk> keys;
  // Keys skipped as unparseable, unsupported, too weak or meant for encryption.
  int skipped = 0;
};

// Parses a JWKS document ({"keys": [...]}). INVALID_ARGUMENT if it is not a JSON object with
// a "keys" array; individual bad keys are skipped and counted.
absl::StatusOr<JwkSet> ParseJwks(absl::string_view json);

// A compact JWS split and decoded; signature not yet verified.
struct CompactJws {
  std::string alg;
  std::string kid;
  bool has_kid = false;
  std::string payload_json;   // decoded payload
  std::string signing_input;  // "<header>.<payload>" as received
  std::string signature;      // decoded signature bytes
};

// At most 16 KiB, three base64url parts, a JSON object header with a string "alg", a
// non-empty payload. INVALID_ARGUMENT otherwise (the message never echoes the token).
absl::StatusOr<CompactJws> ParseCompactJws(absl::string_view token);

// True if `jws`'s signature verifies under `key` with `jws.alg`, which must be one of RS256,
// PS256, ES256, EdDSA and match the key's type (and the key's own "alg" if it has one).
bool VerifyJwsSignature(const CompactJws& jws, const Jwk& key);

// The algorithms Tidepool verifies ID tokens with.
const std::vector<std::string>& SupportedAlgorithms();

// A provider's JWKS, fetched on first use, refreshed after `ttl`, and refreshed at most once
// per `unknown_kid_refresh_interval` when a token names a kid the cached set lacks (so a
// stream of forged kids cannot turn into a stream of fetches).
class JwksCache {
 public:
  // Returns the JWKS document body, or an error.
  using Fetcher = std::function<absl::StatusOr<std::string>()>;

  JwksCache(Fetcher fetch, Clock& clock, absl::Duration ttl = absl::Hours(1),
            absl::Duration unknown_kid_refresh_interval = absl::Seconds(30));

  // The keys to try for a token with `kid` (empty when the token has none): the one key
  // with that kid, or, for a token without kid, the single usable key. Refreshes per the
  // rules above. Errors: UNAVAILABLE when the JWKS cannot be fetched and nothing is cached,
  // NOT_FOUND for an unknown kid (after the permitted refresh), FAILED_PRECONDITION when a
  // kid-less token meets several keys.
  absl::StatusOr<Jwk> KeyFor(absl::string_view kid, bool has_kid);

  // How many times the JWKS was fetched (for tests and metrics).
  int fetch_count() const;

 private:
  absl::Status RefreshLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Fetcher fetch_;
  Clock& clock_;
  const absl::Duration ttl_;
  const absl::Duration unknown_kid_refresh_interval_;
  mutable absl::Mutex mu_;
  std::optional<JwkSet> keys_ ABSL_GUARDED_BY(mu_);
  absl::Time fetched_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time unknown_kid_refresh_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int fetch_count_ ABSL_GUARDED_BY(mu_) = 0;
};

// The claims Tidepool reads from an ID token.
struct IdTokenClaims {
  std::string issuer;
  std::string subject;
  std::vector<std::string> audience;
  std::string email;
  bool email_verified = false;
  std::string name;
  std::string preferred_username;
  std::string tenant_id;  // Microsoft "tid"
  std::string object_id;  // Microsoft "oid"
  std::string hosted_domain;  // Google "hd"
  std::vector<std::string> groups;
  absl::Time expire_time;
  absl::Time issue_time;
};

// What an ID token must satisfy.
struct IdTokenExpectations {
  // The exact issuer. For Microsoft multi-tenant endpoints it may contain "{tenantid}", which
  // is replaced by the token's "tid" claim before comparing.
  std::string issuer;
  std::string client_id;
  // The nonce stored with the sign-in state.
  std::string nonce;
  // The configured algorithms (intersected with the provider's metadata by the caller).
  std::vector<std::string> allowed_algorithms;
  absl::Time now;
  absl::Duration max_skew = absl::Seconds(60);
};

// Verifies an ID token: algorithm, key, signature, then each claim (iss, aud — our client id
// and no other audience —, azp when present, exp and nbf with skew, iat present and not in
// the future, sub present, nonce equal). On failure returns UNAUTHENTICATED and sets
// `*reason` to a stable reason code such as "bad_signature" or "wrong_issuer" (for audit);
// UNAVAILABLE if the JWKS cannot be fetched.
absl::StatusOr<IdTokenClaims> VerifyIdToken(absl::string_view token,
                                            const IdTokenExpectations& expect, JwksCache& keys,
                                            std::string* reason);

}  // namespace tidepool::auth::jose
