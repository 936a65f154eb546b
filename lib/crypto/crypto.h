#pragma once

// Tidepool's cryptographic helpers: a thin, misuse-resistant layer over OpenSSL 3.
//
//   - Randomness: RandomBytes, RandomToken (OpenSSL's CSPRNG).
//   - Hashing and MACs: Sha256, HmacSha256, ConstantTimeEquals.
//   - Encoding: HexEncode, HexDecode.
//   - Authenticated encryption: AES-256-GCM (AesGcmSeal / AesGcmOpen).
//   - Signatures: Ed25519 (Ed25519PrivateKey, Ed25519Verify).
//
// Conventions:
//   - Byte strings (keys, nonces, digests, signatures, ciphertexts) are std::string holding
//     raw bytes; inputs are taken as absl::string_view.
//   - Fallible functions return absl::Status / absl::StatusOr and never throw.
//   - Key material never appears in a log line or in a Status message.
//   - Every function here is safe to call concurrently from several threads; see each
//     comment for the rule on shared objects.
//
// Randomness is not injectable here. Code that needs deterministic tests should reach these
// functions through an injected interface (STYLE.md §5), or use AesGcmSealWithNonce /
// Ed25519PrivateKey::FromSeed with fixed inputs.

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

// OpenSSL's EVP_PKEY (<openssl/types.h>: `typedef struct evp_pkey_st EVP_PKEY;`), forward
// declared so that users of this header do not need OpenSSL's headers.
struct evp_pkey_st;

namespace tidepool::crypto {

// ---------------------------------------------------------------------------------------------
// Randomness

// Returns `n` bytes from OpenSSL's CSPRNG (RAND_bytes). `n == 0` yields an empty string.
// Errors: INTERNAL if the generator fails (for example, it could not be seeded).
// Thread-safe.
absl::StatusOr<std::string> RandomBytes(size_t n);

// Returns `n_bytes` random bytes encoded as URL-safe base64 ("A-Za-z0-9-_") without padding,
// i.e. a string of ceil(4 * n_bytes / 3) characters. Suitable for bearer tokens and ids.
// Errors: INTERNAL if the generator fails. Thread-safe.
absl::StatusOr<std::string> RandomToken(size_t n_bytes);

// ---------------------------------------------------------------------------------------------
// Hashing, MACs and comparison

inline constexpr size_t kSha256Size = 32;

// Returns the 32-byte SHA-256 digest of `data`.
// Never fails on a working OpenSSL; if OpenSSL cannot provide SHA-256 at all (a broken
// installation) the process aborts, because there is no meaningful way to continue.
// Thread-safe.
std::string Sha256(absl::string_view data);

// Returns the 32-byte HMAC-SHA256 (RFC 2104) of `data` under `key`. Any key length is
// accepted, including empty; keys longer than 64 bytes are hashed first, as the RFC specifies.
// Aborts only on a broken OpenSSL installation, as Sha256 does. Thread-safe.
std::string HmacSha256(absl::string_view key, absl::string_view data);

// Returns `data` as lowercase hexadecimal, two characters per byte. Thread-safe.
std::string HexEncode(absl::string_view data);

// Decodes hexadecimal (either case) into bytes.
// Errors: INVALID_ARGUMENT if `hex` has odd length or contains a non-hex character (the
// message does not echo the input, which may be key material). Thread-safe.
absl::StatusOr<std::string> HexDecode(absl::string_view hex);

// Compares `a` and `b` in time that depends only on their lengths, never on their contents
// (CRYPTO_memcmp). Use it for MACs, tokens and other secrets. Inputs of different lengths
// compare unequal; the fact that lengths differ is not hidden. Thread-safe.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// ---------------------------------------------------------------------------------------------
// AES-256-GCM authenticated encryption

inline constexpr size_t kAesKeySize = 32;
inline constexpr size_t kGcmNonceSize = 12;
inline constexpr size_t kGcmTagSize = 16;

// Encrypts and authenticates `plaintext`, and authenticates (without encrypting) `aad`, under
// the 32-byte `key` with a fresh random 96-bit nonce. Returns
// nonce (12 bytes) || ciphertext (plaintext.size() bytes) || tag (16 bytes).
// The same `aad` must be passed to AesGcmOpen. With random nonces, encrypt at most 2^32
// messages under one key (NIST SP 800-38D), then rotate the key.
// Errors: INVALID_ARGUMENT if `key` is not 32 bytes or the input exceeds GCM's limit;
// INTERNAL if the random generator or OpenSSL fails. Thread-safe.
absl::StatusOr<std::string> AesGcmSeal(absl::string_view key, absl::string_view plaintext,
                                       absl::string_view aad);

// As AesGcmSeal, but with the caller's 12-byte `nonce`; returns the same layout.
// DANGER: reusing a nonce with the same key destroys both confidentiality and integrity.
// Meant for AesGcmSeal itself and for known-answer tests; production code should call
// AesGcmSeal.
// Errors: INVALID_ARGUMENT if `key` is not 32 bytes, `nonce` is not 12 bytes, or the input
// exceeds GCM's limit; INTERNAL if OpenSSL fails. Thread-safe.
absl::StatusOr<std::string> AesGcmSealWithNonce(absl::string_view key, absl::string_view nonce,
                                                absl::string_view plaintext, absl::string_view aad);

// Verifies and decrypts `sealed` (nonce || ciphertext || tag, as produced by AesGcmSeal) under
// `key` and `aad`, returning the plaintext. No plaintext is released unless the tag verifies.
// Errors: INVALID_ARGUMENT if `key` is not 32 bytes; INVALID_ARGUMENT with the message
// "decryption failed" for any truncated, altered or forged input, wrong key or wrong `aad`
// (deliberately indistinguishable); INTERNAL if OpenSSL fails. Thread-safe.
absl::StatusOr<std::string> AesGcmOpen(absl::string_view key, absl::string_view sealed,
                                       absl::string_view aad);

// ---------------------------------------------------------------------------------------------
// Ed25519 signatures (RFC 8032, pure Ed25519)

inline constexpr size_t kEd25519SeedSize = 32;
inline constexpr size_t kEd25519PublicKeySize = 32;
inline constexpr size_t kEd25519SignatureSize = 64;

namespace internal {
// Frees an EVP_PKEY; defined in crypto.cc so this header needs no OpenSSL include.
struct EvpPkeyDeleter {
  void operator()(evp_pkey_st* pkey) const;
};
}  // namespace internal

// An Ed25519 private key held in OpenSSL memory.
//
// Movable, not copyable. A moved-from key is empty: PublicKey() returns "" and Sign() and
// ToPem() return FAILED_PRECONDITION.
// Thread safety: const methods may be called concurrently on one object; moving or assigning
// requires exclusive access.
class Ed25519PrivateKey {
 public:
  // Generates a new key from OpenSSL's CSPRNG.
  // Errors: INTERNAL if key generation fails. Thread-safe.
  static absl::StatusOr<Ed25519PrivateKey> Generate();

  // Builds the key whose RFC 8032 private key (seed) is the 32-byte `seed`.
  // Errors: INVALID_ARGUMENT if `seed` is not 32 bytes; INTERNAL if OpenSSL fails.
  // Thread-safe.
  static absl::StatusOr<Ed25519PrivateKey> FromSeed(absl::string_view seed);

  // Parses an unencrypted PEM private key ("-----BEGIN PRIVATE KEY-----", PKCS#8), as
  // written by ToPem or `openssl genpkey -algorithm ed25519`. Never prompts for a passphrase.
  // Errors: INVALID_ARGUMENT if `pem` is not a readable unencrypted private key or holds a
  // key of another type. Thread-safe.
  static absl::StatusOr<Ed25519PrivateKey> FromPem(absl::string_view pem);

  // Moves leave `other` empty (see the class comment).
  Ed25519PrivateKey(Ed25519PrivateKey&& other) noexcept;
  Ed25519PrivateKey& operator=(Ed25519PrivateKey&& other) noexcept;
  Ed25519PrivateKey(const Ed25519PrivateKey&) = delete;
  Ed25519PrivateKey& operator=(const Ed25519PrivateKey&) = delete;
  ~Ed25519PrivateKey() = default;

  // Returns the key as unencrypted PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"). The result is
  // secret: the caller owns it and must protect it (file mode 0600, never log it).
  // Errors: FAILED_PRECONDITION on a moved-from key; INTERNAL if OpenSSL fails.
  absl::StatusOr<std::string> ToPem() const;

  // Returns the raw 32-byte public key (RFC 8032 encoding), or "" on a moved-from key.
  std::string PublicKey() const { return public_key_; }

  // Signs `message` and returns the 64-byte signature. Ed25519 is deterministic: the same
  // key and message always give the same signature.
  // Errors: FAILED_PRECONDITION on a moved-from key; INTERNAL if OpenSSL fails.
  absl::StatusOr<std::string> Sign(absl::string_view message) const;

 private:
  Ed25519PrivateKey(std::unique_ptr<evp_pkey_st, internal::EvpPkeyDeleter> pkey,
                    std::string public_key);

  // Builds the key object around `pkey`, caching its raw public key.
  static absl::StatusOr<Ed25519PrivateKey> Wrap(
      std::unique_ptr<evp_pkey_st, internal::EvpPkeyDeleter> pkey);

  std::unique_ptr<evp_pkey_st, internal::EvpPkeyDeleter> pkey_;
  std::string public_key_;
};

// Verifies an Ed25519 `signature` over `message` against the raw 32-byte `public_key_raw32`.
// Returns OK if and only if the signature is valid.
// Errors: INVALID_ARGUMENT if the public key is not 32 bytes or the signature is not
// 64 bytes; UNAUTHENTICATED ("signature verification failed") if the signature does not
// verify, including for a public key that is not a valid curve point; INTERNAL if OpenSSL
// fails. Thread-safe.
absl::Status Ed25519Verify(absl::string_view public_key_raw32, absl::string_view message,
                           absl::string_view signature);

}  // namespace tidepool::crypto
