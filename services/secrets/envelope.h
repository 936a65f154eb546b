#pragma once

// Envelope encryption of bring-your-own keys, over lib/crypto's AES-256-GCM (random 96-bit
// nonces) and HMAC-SHA256. Nothing here invents a primitive; it fixes the layouts.
//
//   value  --AES-256-GCM under-->  the user's data key (DEK, 32 random bytes, one per user)
//   DEK    --AES-256-GCM under-->  a keyring term's key-encryption key (KEK, keyring.h)
//   KEK    --AES-256-GCM under-->  the master key (the sealed keyring file)
//
// Additional authenticated data (AAD) binds every ciphertext to where it belongs, so a row
// copied to another user, provider, field, version or data-key generation does not open:
//   data key: "tidepool.secrets.dek/v1" 0x00 u64(term) u64(generation) field(user_id)
//   value:    "tidepool.secrets.value/v1" 0x00 u8(format) u64(generation) u64(version)
//             field(user_id) field(provider_id) field(field_id)
// (u64 = 8 bytes big-endian; field = u32 big-endian length, then the bytes.) The keyring term
// is bound where it is used, in the wrapped data key; values are bound to the data key's
// generation instead, so that rotating the keyring rewraps data keys without touching values.
//
// Stored layouts: a wrapped data key is nonce(12) || ciphertext(32) || tag(16); a sealed value
// is u8(format = 1) || nonce(12) || ciphertext || tag(16).
//
// Failures to open are INTERNAL with a fixed message ("... failed authentication"), which
// never carries key or value bytes. Every function is thread-safe.

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/secrets/secret_bytes.h"

namespace tidepool::secrets {

inline constexpr size_t kDataKeySize = 32;
inline constexpr uint8_t kValueFormatV1 = 1;

// Where a data key belongs.
struct DataKeyBinding {
  std::string user_id;
  uint64_t term = 0;
  int64_t generation = 0;
};

// Where a secret value belongs.
struct ValueBinding {
  std::string user_id;
  std::string provider_id;
  std::string field_id;
  int64_t version = 0;
  int64_t generation = 0;
};

// The AAD layouts (see the top of this file); exposed for tests.
std::string DataKeyAad(const DataKeyBinding& binding);
std::string ValueAad(const ValueBinding& binding);

// A fresh random data key. Errors: INTERNAL if the random generator fails.
absl::StatusOr<SecretBytes> NewDataKey();

// Wraps `data_key` under the term's `kek`. Errors: INVALID_ARGUMENT for keys that are not 32
// bytes; INTERNAL if encryption fails.
absl::StatusOr<std::string> WrapDataKey(absl::string_view kek, const DataKeyBinding& binding,
                                        absl::string_view data_key);

// Unwraps a data key. Errors: INTERNAL "a stored data key failed authentication" if the bytes,
// the binding or the KEK do not match what WrapDataKey used.
absl::StatusOr<SecretBytes> UnwrapDataKey(absl::string_view kek, const DataKeyBinding& binding,
                                          absl::string_view wrapped);

// Seals a value under the user's data key with a fresh random nonce.
// Errors: INVALID_ARGUMENT for a data key that is not 32 bytes; INTERNAL if encryption fails.
absl::StatusOr<std::string> SealValue(absl::string_view data_key, const ValueBinding& binding,
                                      absl::string_view plaintext);

// Opens a sealed value. Errors: INTERNAL "a stored secret failed authentication" for an unknown
// format byte, a truncated or altered ciphertext, a wrong data key or a wrong binding; no
// partial plaintext is ever returned.
absl::StatusOr<SecretBytes> OpenValue(absl::string_view data_key, const ValueBinding& binding,
                                      absl::string_view sealed);

// The keyed fingerprint shown instead of a value: the first 16 lower-case hex characters of
// HMAC-SHA256(fingerprint_key, value). Equal values give equal fingerprints within a
// deployment; without the key the fingerprint reveals nothing useful.
std::string Fingerprint(absl::string_view fingerprint_key, absl::string_view value);

}  // namespace tidepool::secrets
