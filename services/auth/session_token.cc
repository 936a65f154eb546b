#include "services/auth/session_token.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <deque>
#include <exception>
#include <unordered_map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "lib/status_macros.h"
#include "lib/text.h"
#include "nlohmann/json.hpp"
#include "services/auth/jose.h"

namespace tidepool::auth {

namespace {

using Json = nlohmann::json;

// The latest time a token may carry: 9999-12-31T23:59:59Z.
constexpr int64_t kMaxUnixSeconds = 253402300799;
constexpr size_t kIdSuffixLength = 26;
constexpr size_t kKeyIdLength = 16;
// The base64url length of a 64-byte signature.
constexpr size_t kEncodedSignatureLength = 86;

// Short, generic failure reasons. None of them ever includes token bytes.
constexpr absl::string_view kMalformed = "malformed session token";
constexpr absl::string_view kTooLarge = "session token too large";
constexpr absl::string_view kUnknownKey = "session token key unknown or retired";
constexpr absl::string_view kBadSignature = "session token signature invalid";
constexpr absl::string_view kBadClaims = "session token claims invalid";
constexpr absl::string_view kExpired = "session token expired";
constexpr absl::string_view kNotYetValid = "session token not yet valid";

absl::Status Unauthenticated(absl::string_view reason) {
  return absl::UnauthenticatedError(reason);
}

// Strict base64url: one implementation for the whole service, in jose.h.
using jose::Base64UrlEncode;

bool Base64UrlDecode(absl::string_view in, std::string* out) {
  absl::StatusOr<std::string> decoded = jose::Base64UrlDecode(in);
  if (!decoded.ok()) {
    out->clear();
    return false;
  }
  *out = *std::move(decoded);
  return true;
}

// ---------------------------------------------------------------------------------------------
// JSON

// The one serialization we sign and accept: compact, members sorted by name (nlohmann's
// default object map), UTF-8 passed through. Invalid UTF-8 is replaced rather than thrown
// on, so the result then differs from any input that held it.
std::string Canonical(const Json& doc) {
  return doc.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Parses `text` as a JSON object that is byte-for-byte in canonical form. Duplicate
// members, whitespace, reordering, escapes that are not needed, a BOM, trailing bytes: all
// change the canonical form, so all are refused. Returns a discarded value on failure.
Json ParseCanonicalObject(absl::string_view text) {
  Json doc = Json::parse(text.begin(), text.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || Canonical(doc) != text) {
    return Json(Json::value_t::discarded);
  }
  return doc;
}

// Points `*out` at member `name` if it is a string.
bool GetString(const Json& doc, const char* name, const std::string** out) {
  const auto it = doc.find(name);
  if (it == doc.end() || !it->is_string()) {
    return false;
  }
  *out = &it->get_ref<const std::string&>();
  return true;
}

// Reads member `name` if it is a non-negative integer no later than kMaxUnixSeconds.
bool GetUnixSeconds(const Json& doc, const char* name, absl::Time* out) {
  const auto it = doc.find(name);
  if (it == doc.end() || !it->is_number_unsigned()) {
    return false;
  }
  const uint64_t value = it->get<uint64_t>();
  if (value > static_cast<uint64_t>(kMaxUnixSeconds)) {
    return false;
  }
  *out = absl::FromUnixSeconds(static_cast<int64_t>(value));
  return true;
}

bool IsBase32Suffix(absl::string_view s) { return s.size() == kIdSuffixLength && IsBase32Lower(s); }

bool IsValidRole(absl::string_view role) { return role == kRoleUser || role == kRoleAdmin; }

bool InTokenRange(absl::Time t) {
  return t >= absl::UnixEpoch() && t <= absl::FromUnixSeconds(kMaxUnixSeconds);
}

std::string HeaderJson(absl::string_view kid) {
  Json header = Json::object();
  header["alg"] = "EdDSA";
  header["kid"] = std::string(kid);
  header["typ"] = "JWT";
  return Canonical(header);
}

// Extracts the kid from a decoded header that must be exactly
// {"alg":"EdDSA","kid":"<16 hex>","typ":"JWT"}.
bool ParseHeader(absl::string_view text, std::string* kid) {
  const Json doc = ParseCanonicalObject(text);
  if (doc.is_discarded() || doc.size() != 3) {
    return false;
  }
  const std::string* alg = nullptr;
  const std::string* typ = nullptr;
  const std::string* key_id = nullptr;
  if (!GetString(doc, "alg", &alg) || *alg != "EdDSA" || !GetString(doc, "typ", &typ) ||
      *typ != "JWT" || !GetString(doc, "kid", &key_id) || !IsValidKeyId(*key_id)) {
    return false;
  }
  *kid = *key_id;
  return true;
}

// Parses and validates a decoded payload holding exactly the six claims with the right
// types and formats. Time rules are checked separately (CheckTimes).
bool ParsePayload(absl::string_view text, absl::string_view issuer, SessionClaims* claims) {
  const Json doc = ParseCanonicalObject(text);
  if (doc.is_discarded() || doc.size() != 6) {
    return false;
  }
  const std::string* iss = nullptr;
  const std::string* sub = nullptr;
  const std::string* sid = nullptr;
  const std::string* role = nullptr;
  if (!GetString(doc, "iss", &iss) || *iss != issuer || !GetString(doc, "sub", &sub) ||
      !IsValidUserId(*sub) || !GetString(doc, "sid", &sid) || !IsValidSessionId(*sid) ||
      !GetString(doc, "role", &role) || !IsValidRole(*role) ||
      !GetUnixSeconds(doc, "iat", &claims->issued_at) ||
      !GetUnixSeconds(doc, "exp", &claims->expires_at) || claims->expires_at <= claims->issued_at) {
    return false;
  }
  claims->user_id = *sub;
  claims->session_id = *sid;
  claims->role = *role;
  return true;
}

// The checks that depend on the clock and the key's window; run on every Verify, cached or
// not.
absl::Status CheckTimes(const SessionClaims& claims, const VerificationKey& key, absl::Time now,
                        absl::Duration skew) {
  if (now >= key.not_after) {
    return Unauthenticated(kUnknownKey);
  }
  if (claims.expires_at <= now - skew) {
    return Unauthenticated(kExpired);
  }
  if (claims.issued_at > now + skew) {
    return Unauthenticated(kNotYetValid);
  }
  if (claims.issued_at < key.not_before - skew) {
    return Unauthenticated(kBadClaims);
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Identifiers

bool IsValidUserId(absl::string_view user_id) {
  return user_id.size() == 2 + kIdSuffixLength && user_id.substr(0, 2) == "u_" &&
         IsBase32Suffix(user_id.substr(2));
}

bool IsValidSessionId(absl::string_view session_id) {
  return session_id.size() == 2 + kIdSuffixLength && session_id.substr(0, 2) == "s_" &&
         IsBase32Suffix(session_id.substr(2));
}

bool IsValidKeyId(absl::string_view key_id) {
  if (key_id.size() != kKeyIdLength) {
    return false;
  }
  for (const char c : key_id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

std::string KeyIdForPublicKey(absl::string_view raw_public_key) {
  return crypto::HexEncode(crypto::Sha256(raw_public_key)).substr(0, kKeyIdLength);
}

// ---------------------------------------------------------------------------------------------
// Signing

absl::StatusOr<std::string> SignSessionToken(const SessionClaims& claims, const SigningKey& key) {
  if (key.private_key == nullptr) {
    return absl::FailedPreconditionError("signing key has no private key");
  }
  if (!IsValidKeyId(key.key_id) || key.key_id != KeyIdForPublicKey(key.private_key->PublicKey())) {
    return absl::InvalidArgumentError("signing key id does not match its key");
  }
  if (!claims.key_id.empty() && claims.key_id != key.key_id) {
    return absl::InvalidArgumentError("claims name a different key id than the signing key");
  }
  if (!IsValidUserId(claims.user_id)) {
    return absl::InvalidArgumentError("malformed user id");
  }
  if (!IsValidSessionId(claims.session_id)) {
    return absl::InvalidArgumentError("malformed session id");
  }
  if (!IsValidRole(claims.role)) {
    return absl::InvalidArgumentError("role must be \"user\" or \"admin\"");
  }
  if (!InTokenRange(claims.issued_at) || !InTokenRange(claims.expires_at)) {
    return absl::InvalidArgumentError("token times must lie between 1970 and 9999");
  }
  const int64_t iat = absl::ToUnixSeconds(claims.issued_at);
  const int64_t exp = absl::ToUnixSeconds(claims.expires_at);
  if (exp <= iat) {
    return absl::InvalidArgumentError("expiry must be after issue time");
  }

  Json payload = Json::object();
  payload["iss"] = std::string(kSessionTokenIssuer);
  payload["sub"] = claims.user_id;
  payload["sid"] = claims.session_id;
  payload["role"] = claims.role;
  payload["iat"] = static_cast<uint64_t>(iat);
  payload["exp"] = static_cast<uint64_t>(exp);

  std::string token = absl::StrCat(Base64UrlEncode(HeaderJson(key.key_id)), ".",
                                   Base64UrlEncode(Canonical(payload)));
  TP_ASSIGN_OR_RETURN(const std::string signature, key.private_key->Sign(token));
  absl::StrAppend(&token, ".", Base64UrlEncode(signature));
  return token;
}

// ---------------------------------------------------------------------------------------------
// The verified-token cache

using Digest = std::array<char, crypto::kSha256Size>;

// SHA-256 output is uniformly distributed, so its first 8 bytes are a fine hash.
struct DigestHash {
  size_t operator()(const Digest& d) const {
    size_t h = 0;
    std::memcpy(&h, d.data(), sizeof(h));
    return h;
  }
};

// Remembers tokens that passed full verification, keyed by the SHA-256 of the token. Holds
// only the claims and the public key that verified them, which is what the clock- and
// key-dependent re-checks need. Sharded by digest; each shard evicts its oldest entry when full.
// Thread-safe.
class VerifiedTokenCache {
 public:
  explicit VerifiedTokenCache(size_t capacity)
      : shard_count_(capacity < kMaxShards ? 1 : kMaxShards),
        shards_(std::make_unique<Shard[]>(shard_count_)) {
    for (size_t i = 0; i < shard_count_; ++i) {
      // Spread `capacity` exactly: the first (capacity % shards) shards take one more.
      shards_[i].capacity = capacity / shard_count_ + (i < capacity % shard_count_ ? 1 : 0);
    }
  }

  static Digest DigestOf(absl::string_view token) {
    const std::string sha = crypto::Sha256(token);
    Digest digest;
    std::memcpy(digest.data(), sha.data(), digest.size());
    return digest;
  }

  // Copies the entry for `digest` out, if present.
  bool Lookup(const Digest& digest, SessionClaims* claims, std::string* public_key) {
    Shard& shard = ShardFor(digest);
    {
      absl::ReaderMutexLock lock(&shard.mu);
      const auto it = shard.entries.find(digest);
      if (it != shard.entries.end()) {
        Unpack(it->second, claims, public_key);
        shard.hits.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
    }
    shard.misses.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

  void Insert(const Digest& digest, const SessionClaims& claims, absl::string_view public_key) {
    Entry entry;
    if (!Pack(claims, public_key, &entry)) {
      return;  // Not the shape a verified token has; just don't remember it.
    }
    Shard& shard = ShardFor(digest);
    absl::MutexLock lock(&shard.mu);
    if (shard.capacity == 0 || shard.entries.count(digest) != 0) {
      return;  // Another thread verified the same token concurrently.
    }
    // Invariant: `order` holds exactly the keys of `entries`, oldest first.
    while (shard.entries.size() >= shard.capacity) {
      shard.entries.erase(shard.order.front());
      shard.order.pop_front();
    }
    shard.entries.emplace(digest, entry);
    shard.order.push_back(digest);
  }

  SessionTokenVerifier::CacheStats Stats() const {
    SessionTokenVerifier::CacheStats stats;
    for (size_t i = 0; i < shard_count_; ++i) {
      Shard& shard = shards_[i];
      stats.hits += shard.hits.load(std::memory_order_relaxed);
      stats.misses += shard.misses.load(std::memory_order_relaxed);
      absl::ReaderMutexLock lock(&shard.mu);
      stats.size += shard.entries.size();
    }
    return stats;
  }

 private:
  static constexpr size_t kMaxShards = 16;

  // A verified token in fixed-size fields, so that an entry costs no heap allocation beyond
  // its map node (about 240 bytes per entry in all, queue slot included): validated ids have fixed
  // lengths, key ids are 16 characters, Ed25519 public keys 32 bytes, and token times whole
  // seconds.
  struct Entry {
    std::array<char, 2 + kIdSuffixLength> user_id;
    std::array<char, 2 + kIdSuffixLength> session_id;
    std::array<char, kKeyIdLength> key_id;
    std::array<char, crypto::kEd25519PublicKeySize> public_key;
    bool admin;
    int64_t issued_at;
    int64_t expires_at;
  };

  template <size_t N>
  static bool CopyExact(absl::string_view from, std::array<char, N>* to) {
    if (from.size() != N) {
      return false;
    }
    std::memcpy(to->data(), from.data(), N);
    return true;
  }

  static bool Pack(const SessionClaims& claims, absl::string_view public_key, Entry* entry) {
    entry->admin = claims.role == kRoleAdmin;
    entry->issued_at = absl::ToUnixSeconds(claims.issued_at);
    entry->expires_at = absl::ToUnixSeconds(claims.expires_at);
    return CopyExact(claims.user_id, &entry->user_id) &&
           CopyExact(claims.session_id, &entry->session_id) &&
           CopyExact(claims.key_id, &entry->key_id) && CopyExact(public_key, &entry->public_key) &&
           (entry->admin || claims.role == kRoleUser) &&
           absl::FromUnixSeconds(entry->issued_at) == claims.issued_at &&
           absl::FromUnixSeconds(entry->expires_at) == claims.expires_at;
  }

  static void Unpack(const Entry& entry, SessionClaims* claims, std::string* public_key) {
    claims->user_id.assign(entry.user_id.data(), entry.user_id.size());
    claims->session_id.assign(entry.session_id.data(), entry.session_id.size());
    claims->role = std::string(entry.admin ? kRoleAdmin : kRoleUser);
    claims->issued_at = absl::FromUnixSeconds(entry.issued_at);
    claims->expires_at = absl::FromUnixSeconds(entry.expires_at);
    claims->key_id.assign(entry.key_id.data(), entry.key_id.size());
    public_key->assign(entry.public_key.data(), entry.public_key.size());
  }

  struct Shard {
    absl::Mutex mu;
    size_t capacity = 0;  // Set once at construction.
    std::unordered_map<Digest, Entry, DigestHash> entries ABSL_GUARDED_BY(mu);
    std::deque<Digest> order ABSL_GUARDED_BY(mu);
    std::atomic<uint64_t> hits{0};
    std::atomic<uint64_t> misses{0};
  };

  Shard& ShardFor(const Digest& digest) const {
    // Byte 8 is independent of the bytes DigestHash uses for bucket selection.
    return shards_[static_cast<unsigned char>(digest[8]) % shard_count_];
  }

  const size_t shard_count_;
  const std::unique_ptr<Shard[]> shards_;
};

// ---------------------------------------------------------------------------------------------
// Verification

SessionTokenVerifier::SessionTokenVerifier(PublicKeySource& keys, Clock& clock,
                                           SessionTokenVerifierOptions options)
    : keys_(keys), clock_(clock), options_(std::move(options)) {
  if (options_.cache_capacity > 0) {
    cache_ = std::make_unique<VerifiedTokenCache>(options_.cache_capacity);
  }
}

SessionTokenVerifier::~SessionTokenVerifier() = default;

absl::StatusOr<SessionClaims> SessionTokenVerifier::Verify(absl::string_view token) {
  if (token.size() > options_.max_token_bytes) {
    return Unauthenticated(kTooLarge);
  }
  if (token.empty()) {
    return Unauthenticated(kMalformed);
  }
  const absl::Time now = clock_.Now();
  const absl::Duration skew = std::max(options_.allowed_skew, absl::ZeroDuration());
  if (cache_ == nullptr) {
    std::string public_key;
    return VerifyUncached(token, now, &public_key);
  }

  const Digest digest = VerifiedTokenCache::DigestOf(token);
  SessionClaims claims;
  std::string public_key;
  if (cache_->Lookup(digest, &claims, &public_key)) {
    // A hit proves the bytes were verified before; the key must still be in its window and
    // still be the same key, and the clock-dependent rules must still hold.
    const std::optional<VerificationKey> key = keys_.Find(claims.key_id, now);
    if (!key.has_value() || !crypto::ConstantTimeEquals(key->public_key, public_key)) {
      return Unauthenticated(kUnknownKey);
    }
    TP_RETURN_IF_ERROR(CheckTimes(claims, *key, now, skew));
    return claims;
  }
  absl::StatusOr<SessionClaims> verified = VerifyUncached(token, now, &public_key);
  if (verified.ok()) {
    cache_->Insert(digest, *verified, public_key);
  }
  return verified;
}

absl::StatusOr<SessionClaims> SessionTokenVerifier::VerifyUncached(absl::string_view token,
                                                                   absl::Time now,
                                                                   std::string* public_key) {
  // Exactly three non-empty parts.
  const size_t first_dot = token.find('.');
  if (first_dot == absl::string_view::npos) {
    return Unauthenticated(kMalformed);
  }
  const size_t second_dot = token.find('.', first_dot + 1);
  if (second_dot == absl::string_view::npos ||
      token.find('.', second_dot + 1) != absl::string_view::npos) {
    return Unauthenticated(kMalformed);
  }
  const absl::string_view header_b64 = token.substr(0, first_dot);
  const absl::string_view payload_b64 = token.substr(first_dot + 1, second_dot - first_dot - 1);
  const absl::string_view signature_b64 = token.substr(second_dot + 1);
  const absl::string_view signing_input = token.substr(0, second_dot);
  if (header_b64.empty() || payload_b64.empty() ||
      signature_b64.size() != kEncodedSignatureLength) {
    return Unauthenticated(kMalformed);
  }

  std::string header;
  std::string payload;
  std::string signature;
  if (!Base64UrlDecode(header_b64, &header) || !Base64UrlDecode(payload_b64, &payload) ||
      !Base64UrlDecode(signature_b64, &signature) ||
      signature.size() != crypto::kEd25519SignatureSize) {
    return Unauthenticated(kMalformed);
  }

  SessionClaims claims;
  const absl::Duration skew = std::max(options_.allowed_skew, absl::ZeroDuration());
  // nlohmann may still throw std::bad_alloc; nothing else in these calls throws.
  try {
    if (!ParseHeader(header, &claims.key_id)) {
      return Unauthenticated(kMalformed);
    }
    // The algorithm is fixed (Ed25519) by the key: the header merely names it.
    const std::optional<VerificationKey> key = keys_.Find(claims.key_id, now);
    if (!key.has_value()) {
      return Unauthenticated(kUnknownKey);
    }
    if (!crypto::Ed25519Verify(key->public_key, signing_input, signature).ok()) {
      return Unauthenticated(kBadSignature);
    }
    if (!ParsePayload(payload, options_.issuer, &claims)) {
      return Unauthenticated(kBadClaims);
    }
    TP_RETURN_IF_ERROR(CheckTimes(claims, *key, now, skew));
    *public_key = key->public_key;
  } catch (const std::exception&) {
    return Unauthenticated(kMalformed);
  }
  return claims;
}

SessionTokenVerifier::CacheStats SessionTokenVerifier::GetCacheStats() const {
  if (cache_ == nullptr) {
    return CacheStats{};
  }
  return cache_->Stats();
}

}  // namespace tidepool::auth
