#pragma once

// The auth service's session-token signing keys: one current Ed25519 key that signs, plus
// retired keys that keep verifying for a grace window after rotation, persisted in the
// service's SQLite database.
//
// SigningKey, VerificationKey and PublicKeySource are declared in session_token.h, so that
// the token codec (which the proxy also links) does not depend on SQLite.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/clock.h"
#include "lib/sqlite_store.h"
#include "services/auth/session_token.h"

namespace tidepool::auth {

// The longest rotation reason Rotate accepts (RotateSigningKeyRequest.reason).
inline constexpr size_t kMaxRotationReasonBytes = 512;

struct SigningKeyRingOptions {
  // How long a retired key keeps verifying after it stops signing. Must be at least the
  // session token lifetime (G19: and no longer than the session lifetime), so that rotation
  // logs nobody out.
  absl::Duration grace = absl::Minutes(15);
  // Rotate fails FAILED_PRECONDITION if the current key is younger than this.
  absl::Duration min_rotation_interval = absl::Minutes(1);
};

// The outcome of a rotation (RotateSigningKeyResponse).
struct KeyRotation {
  VerificationKey new_key;       // current, not_after = absl::InfiniteFuture()
  VerificationKey previous_key;  // not_after = now + grace
};

// Signing keys over the table
//   signing_keys (key_id TEXT PRIMARY KEY, private_pem TEXT NOT NULL,
//                 created_us INTEGER, retired_us INTEGER)
// holding PKCS#8 PEM private keys (the database file must be 0600, which SqliteDb::Open
// gives new files; only public halves ever leave the service). Exactly one row has
// retired_us NULL: the current key. A retired key verifies until retired + grace; after that
// it is no longer listed, no longer found, and its row (private key included) is deleted on
// the next Open or Rotate.
//
// The table is created with CREATE TABLE IF NOT EXISTS rather than a numbered Migration, so
// that the ring does not claim the database's PRAGMA user_version, which the service's own
// migrations own.
//
// Key ids are the first 16 hex characters of SHA-256 of the raw public key.
//
// Not owned: `db` and `clock` must outlive the ring. The ring uses `db` only inside Open and
// Rotate, holding its own mutex; if other code uses the same SqliteDb from other threads,
// give the ring its own SqliteDb on the same file instead. A ring does not see rotations made
// by another ring (or process) on the same file until it is reopened.
//
// Thread-safe.
class SigningKeyRing final : public PublicKeySource {
 public:
  // Creates the table if missing, loads the keys, deletes keys whose grace window has closed
  // and, if there is no current key, generates and stores one; all in one transaction.
  // Errors: INVALID_ARGUMENT for a negative grace or rotation interval; INTERNAL if a stored
  // key does not parse, its key_id does not match its key, or more than one key is current;
  // UNAVAILABLE if the database is busy; otherwise as SqliteDb.
  static absl::StatusOr<std::unique_ptr<SigningKeyRing>> Open(
      SqliteDb& db, Clock& clock, const SigningKeyRingOptions& options = {});

  SigningKeyRing(const SigningKeyRing&) = delete;
  SigningKeyRing& operator=(const SigningKeyRing&) = delete;

  // Returns the key that signs new tokens (not_after = absl::InfiniteFuture()). The returned
  // key shares ownership of the private key and stays valid after rotations.
  SigningKey Current() const;

  // Generates a new key and makes it current; the previous key stops signing now and keeps
  // verifying until now + grace. `reason` is for the caller's audit record; it is not stored.
  // Errors: INVALID_ARGUMENT if `reason` is over kMaxRotationReasonBytes;
  // FAILED_PRECONDITION if the current key is younger than min_rotation_interval, or if the
  // stored keys were changed by someone else since Open (reopen the ring); UNAVAILABLE if
  // the database is busy; INTERNAL if key generation or the database fails. On error nothing
  // changes.
  absl::StatusOr<KeyRotation> Rotate(absl::string_view reason);

  // Every key that may verify tokens now (now < not_after): the current key first, then
  // retired keys, newest first.
  std::vector<VerificationKey> PublicKeys() const;

  // PublicKeySource: the key named `kid` if now < its not_after.
  std::optional<VerificationKey> Find(absl::string_view kid, absl::Time now) override;

 private:
  struct Entry {
    std::string key_id;
    std::string public_key;
    // Set for the current key only: retired private keys are not kept in memory.
    std::shared_ptr<const crypto::Ed25519PrivateKey> private_key;
    absl::Time created;
    absl::Time retired;  // absl::InfiniteFuture() while current
  };

  SigningKeyRing(SqliteDb& db, Clock& clock, const SigningKeyRingOptions& options,
                 std::vector<Entry> keys);

  VerificationKey ToVerificationKey(const Entry& entry) const;

  SqliteDb& db_;  // Used only with mu_ held exclusively.
  Clock& clock_;
  const SigningKeyRingOptions options_;
  mutable absl::Mutex mu_;
  // keys_[0] is the current key; the rest are retired, newest first.
  std::vector<Entry> keys_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tidepool::auth
