#pragma once

// The keyring (after HashiCorp Vault's): numbered terms, each a 32-byte key-encryption key
// (KEK) that wraps users' data keys, plus the per-deployment fingerprint key. The newest term
// is active: new data keys are wrapped under it; older terms stay so that data keys wrapped
// under them still open. Rotation adds a term online.
//
// On disk (<data_dir>/secrets/keyring, mode 0600) the keyring is one JSON object:
//   {"format": "tidepool.secrets.keyring/v1", "term": <active term>, "sealed": "<base64>"}
// where "sealed" is AES-256-GCM under the master key (nonce || ciphertext || tag) with
// additional data "tidepool.secrets.keyring/v1" 0x00 u64(term): the active term in the clear
// header is authenticated, so editing it breaks the seal. The plaintext is binary:
//   u32 count, then per term: u64 term, u64 create time (Unix microseconds), 32-byte KEK;
//   then the 32-byte fingerprint key.
//
// Rollback detection: a keyring is only half the story. The database records the highest term
// it has seen (SecretStore::HighestKeyringTerm); a keyring whose active term is lower was
// restored from an older copy and is refused (CheckNotRolledBack).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "services/secrets/secret_bytes.h"

namespace tidepool::secrets {

// Vault's ceiling for encryptions under one key with random 96-bit nonces: 10 % below 2^32
// (NIST SP 800-38D), to absorb counting loss.
inline constexpr int64_t kMaxEncryptionsPerKey = 3'865'470'566;

// One term of the keyring.
struct KeyringTerm {
  uint64_t term = 0;
  SecretBytes key;
  absl::Time create_time;
};

// An immutable keyring snapshot. Move-only (it holds key material); share it as
// std::shared_ptr<const Keyring>. Const methods are thread-safe.
class Keyring {
 public:
  // A new keyring with term 1 and a fresh fingerprint key, both random.
  // Errors: INTERNAL if the random generator fails.
  static absl::StatusOr<Keyring> Create(absl::Time now);

  // Opens a keyring file produced by Seal under `master_key` and returns the keyring.
  // Errors: FAILED_PRECONDITION "sealed: ..." if the file is malformed, was altered, or the
  // master key is not the one it was sealed with (deliberately indistinguishable);
  // INVALID_ARGUMENT for a master key that is not 32 bytes.
  static absl::StatusOr<Keyring> Unseal(absl::string_view master_key, absl::string_view file);

  Keyring(Keyring&&) = default;
  Keyring& operator=(Keyring&&) = default;

  // This keyring plus a new random term (active + 1), created at `now`. The fingerprint key
  // is kept. Errors: INTERNAL if the random generator fails.
  absl::StatusOr<Keyring> WithNewTerm(absl::Time now) const;

  // The keyring file's bytes, sealed under `master_key`.
  // Errors: INVALID_ARGUMENT for a master key that is not 32 bytes; INTERNAL if sealing fails.
  absl::StatusOr<std::string> Seal(absl::string_view master_key) const;

  uint64_t active_term() const { return terms_.back().term; }
  absl::Time active_create_time() const { return terms_.back().create_time; }
  absl::string_view active_key() const { return terms_.back().key.view(); }
  // The KEK of `term`. Errors: FAILED_PRECONDITION if the keyring has no such term (data
  // wrapped under a term this keyring does not know: a rolled-back keyring).
  absl::StatusOr<absl::string_view> KeyOf(uint64_t term) const;
  // The per-deployment key of keyed fingerprints (HMAC-SHA256).
  absl::string_view fingerprint_key() const { return fingerprint_key_.view(); }
  // Every term, oldest first.
  std::vector<uint64_t> terms() const;

 private:
  Keyring() = default;

  std::vector<KeyringTerm> terms_;  // ascending; never empty once built
  SecretBytes fingerprint_key_;
};

// Reads and unseals the keyring file at `path`. Errors: NOT_FOUND if it does not exist;
// FAILED_PRECONDITION as Keyring::Unseal.
absl::StatusOr<Keyring> LoadKeyringFile(const std::string& path, absl::string_view master_key);

// Seals `keyring` under `master_key` and writes it to `path` durably (0600; see
// secret_file.h). Errors: UNAVAILABLE if it cannot be written; as Keyring::Seal.
absl::Status SaveKeyringFile(const std::string& path, const Keyring& keyring,
                             absl::string_view master_key);

// OK unless `keyring` is older than the newest term the database has recorded.
// Errors: FAILED_PRECONDITION "sealed: keyring rollback detected ..." naming both terms.
absl::Status CheckNotRolledBack(const Keyring& keyring, uint64_t highest_term_seen);

// When a keyring term is retired automatically (Vault's auto-rotation).
struct RotationPolicy {
  // Rotate before the active term's KEK has wrapped more than this many keys.
  int64_t max_operations = kMaxEncryptionsPerKey;
  // Rotate once the active term is this old.
  absl::Duration max_age = absl::Hours(24 * 90);
};

// Why a rotation is due now, or "" if it is not: "operations" when one more encryption would
// exceed policy.max_operations, "age" when the active term is policy.max_age old.
std::string RotationDue(const RotationPolicy& policy, int64_t active_term_encryptions,
                        absl::Time active_term_created, absl::Time now);

}  // namespace tidepool::secrets
