#pragma once

// Session tokens: short-lived, EdDSA-signed JWTs that the proxy verifies locally on every
// request.
//
// Wire format (JWS compact serialization, RFC 7515; base64url without padding):
//
//   B64U(header) "." B64U(payload) "." B64U(signature)
//
//   header    exactly {"alg":"EdDSA","kid":"<key id>","typ":"JWT"}
//   payload   exactly the claims {"exp":..,"iat":..,"iss":"tidepool","role":..,"sid":..,"sub":..}
//             serialized compactly with members in that (sorted) order
//   signature Ed25519 (RFC 8032) over the ASCII bytes B64U(header) "." B64U(payload)
//
// The verifier accepts only that exact shape: the algorithm is fixed by the key, never read
// from the token (RFC 8725 §3.1), and any other header or payload bytes, even ones that
// would mean the same JSON, are rejected.
//
// This module is the codec only. Keys come from a PublicKeySource (the auth service's
// SigningKeyRing, or the proxy's copy of GetPublicKeys); revocation is checked elsewhere.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lib/clock.h"
#include "lib/crypto/crypto.h"

namespace tidepool::auth {

// The `iss` claim of every session token.
inline constexpr absl::string_view kSessionTokenIssuer = "tidepool";
// The two values of the `role` claim.
inline constexpr absl::string_view kRoleUser = "user";
inline constexpr absl::string_view kRoleAdmin = "admin";

// What a session token says. On signing, `key_id` may be empty (the key's id is used); on
// verification it is the id of the key that signed the token. Times are whole Unix seconds
// on the wire: SignSessionToken truncates sub-second parts.
struct SessionClaims {
  std::string user_id;     // "u_" + 26 base32 characters (a-z, 2-7)
  std::string session_id;  // "s_" + 26 base32 characters (a-z, 2-7)
  std::string role;        // kRoleUser or kRoleAdmin
  absl::Time issued_at;
  absl::Time expires_at;
  std::string key_id;  // 16 lower-case hex characters
};

// A key that signs session tokens. `private_key` is shared and immutable: a copy of a
// SigningKey stays usable (and thread-safe to sign with) even after the key ring that handed
// it out has rotated or been destroyed.
struct SigningKey {
  std::string key_id;
  std::shared_ptr<const crypto::Ed25519PrivateKey> private_key;
  // When the key became current, and when it stops signing (absl::InfiniteFuture() while it
  // is current).
  absl::Time not_before;
  absl::Time not_after;
};

// The public half of a signing key, as GetPublicKeys publishes it.
struct VerificationKey {
  std::string key_id;
  std::string public_key;  // raw 32-byte Ed25519 public key
  // Tokens are accepted only when issued at or after `not_before` (less the allowed skew)...
  absl::Time not_before;
  // ...and only while now < `not_after`: the key's retirement plus the grace window, or
  // absl::InfiniteFuture() while the key is current.
  absl::Time not_after;
  // True for the key that signs new tokens.
  bool current = false;
};

// Where a verifier finds public keys (role interface). Implementations must be thread-safe.
class PublicKeySource {
 public:
  virtual ~PublicKeySource() = default;
  // Returns the key named `kid` if it may verify tokens at `now` (now < not_after), or
  // std::nullopt if it is unknown or its verification window has closed.
  virtual std::optional<VerificationKey> Find(absl::string_view kid, absl::Time now) = 0;
};

// True for "u_" followed by exactly 26 characters of [a-z2-7].
bool IsValidUserId(absl::string_view user_id);
// True for "s_" followed by exactly 26 characters of [a-z2-7].
bool IsValidSessionId(absl::string_view session_id);
// True for exactly 16 characters of [0-9a-f].
bool IsValidKeyId(absl::string_view key_id);

// The key id of a raw Ed25519 public key: the first 16 hex characters of its SHA-256.
// Thread-safe.
std::string KeyIdForPublicKey(absl::string_view raw_public_key);

// Signs `claims` with `key` and returns the compact token. The `kid` is key.key_id; the
// `iss` is kSessionTokenIssuer; `iat`/`exp` are claims.issued_at/expires_at truncated to
// whole seconds.
// Errors: INVALID_ARGUMENT if a claim is malformed (user or session id, role), expires_at is
// not after issued_at (in whole seconds), a time is outside 1970..9999, or claims.key_id is
// set and differs from key.key_id, or key.key_id is not the id of key.private_key;
// FAILED_PRECONDITION if `key` has no private key; INTERNAL if signing fails.
// Thread-safe.
absl::StatusOr<std::string> SignSessionToken(const SessionClaims& claims, const SigningKey& key);

struct SessionTokenVerifierOptions {
  // Longer tokens are rejected before any decoding or hashing.
  size_t max_token_bytes = 4096;
  // Tolerated clock difference between signer and verifier, for `exp` and `iat`. Negative
  // values are treated as zero.
  absl::Duration allowed_skew = absl::Seconds(5);
  // The required `iss` claim.
  std::string issuer = std::string(kSessionTokenIssuer);
  // How many verified tokens to remember (keyed by SHA-256 of the token), so that verifying
  // the same token again costs a hash and a lookup instead of an Ed25519 verification.
  // A remembered token is still checked against the clock (expiry, iat) and its key's
  // verification window on every use. The cache has up to 16 shards; a full shard evicts its
  // oldest entry. About 240 bytes per entry (24 MB at the default). 0 disables the cache.
  size_t cache_capacity = 100000;
};

class VerifiedTokenCache;  // defined in session_token.cc

// Verifies session tokens against keys from a PublicKeySource.
//
// Not owned: `keys` and `clock` must outlive the verifier. Thread-safe: Verify may be called
// concurrently from any number of threads (the cache is sharded, each shard behind its own
// absl::Mutex).
class SessionTokenVerifier {
 public:
  SessionTokenVerifier(PublicKeySource& keys, Clock& clock,
                       SessionTokenVerifierOptions options = {});
  ~SessionTokenVerifier();
  SessionTokenVerifier(const SessionTokenVerifier&) = delete;
  SessionTokenVerifier& operator=(const SessionTokenVerifier&) = delete;

  // Returns the token's claims (with key_id set) if `token` is a well-formed session token,
  // signed by a key that `keys` returns for its kid at the current time, issued by the
  // configured issuer, issued no later than now + skew and not before the key's not_before
  // - skew, and not expired (exp > now - skew).
  // Errors: UNAUTHENTICATED for every failure, with a short generic message that never
  // contains any part of the token.
  absl::StatusOr<SessionClaims> Verify(absl::string_view token);

  // Cache counters, for metrics and tests. `size` is the number of remembered tokens.
  struct CacheStats {
    uint64_t hits = 0;
    uint64_t misses = 0;
    size_t size = 0;
  };
  CacheStats GetCacheStats() const;

 private:
  // The full verification: parsing, key lookup, Ed25519, claims and time checks.
  absl::StatusOr<SessionClaims> VerifyUncached(absl::string_view token, absl::Time now,
                                               std::string* public_key);

  PublicKeySource& keys_;
  Clock& clock_;
  const SessionTokenVerifierOptions options_;
  std::unique_ptr<VerifiedTokenCache> cache_;  // null when disabled
};

}  // namespace tidepool::auth
