#pragma once

// SecretStore: the secrets service's SQLite database (<data_dir>/secrets/secrets.db, WAL,
// synchronous=FULL, mode 0600). It holds only ciphertext and metadata:
//
//   secrets         one row per (user, provider, field): the sealed value (envelope.h), its
//                   version, the data-key generation it was sealed under, its keyed
//                   fingerprint, create and update times.
//   data_keys       one row per user: the user's data key wrapped under a keyring term, its
//                   generation and how many values it has sealed.
//   field_versions  the last version ever used per (user, provider, field), kept across
//                   deletes so that a version number is never reused (a copy of an old row
//                   cannot pass for a newer value).
//   changes         the change feed behind Watch: one row per put or delete, with a strictly
//                   increasing sequence; the newest `change_retention` rows are kept.
//   meta, term_usage  the highest keyring term ever recorded (rollback detection, see
//                   keyring.h) and how many data keys each term's KEK has wrapped.
//
// Every write is one transaction: a put is entirely old or entirely new, never torn, and an
// acknowledged write survives a crash or power loss.
//
// Thread-safe: one connection guarded by a mutex.

#include <cstdint>
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
#include "services/secrets/keyring.h"
#include "services/secrets/secret_bytes.h"

namespace tidepool::secrets {

// The one NOT_FOUND message of the service: a secret that does not exist and a secret of
// someone else look exactly alike.
inline constexpr char kNoSuchSecret[] = "no such secret";

struct SecretStoreOptions {
  // The database file; its directory must exist.
  std::string path;
  // Most secrets (fields) one user may store.
  int max_secrets_per_user = 200;
  // A user's data key is replaced (and the user's values resealed under the new one, in the
  // same transaction) before it would seal more values than this.
  int64_t max_encryptions_per_data_key = kMaxEncryptionsPerKey;
  // How many of the newest changes the Watch feed keeps.
  int64_t change_retention = 10000;
};

// What is known about a stored secret. Never the value.
struct SecretMeta {
  std::string user_id;
  std::string provider_id;
  std::string field_id;
  int64_t version = 0;
  absl::Time create_time;
  absl::Time update_time;
  std::string fingerprint;
};

enum class ChangeKind { kPut = 1, kDelete = 2 };

// One entry of the change feed.
struct SecretChange {
  uint64_t sequence = 0;
  ChangeKind kind = ChangeKind::kPut;
  SecretMeta secret;
  absl::Time change_time;
};

// The result of a put.
struct StoredPut {
  SecretMeta secret;
  uint64_t sequence = 0;
  // True if the user's data key was replaced first (its encryption budget was used up).
  bool data_key_replaced = false;
};

// The result of a delete.
struct StoredDelete {
  std::vector<SecretMeta> deleted;
  uint64_t sequence = 0;  // of the last change written
};

// A decrypted secret (ResolveForWorkspace only).
struct PlainSecret {
  SecretMeta meta;
  SecretBytes value;
};

class SecretStore {
 public:
  // Opens (creating if missing) the database and brings its schema up to date. `clock` must
  // outlive the store. Errors: INVALID_ARGUMENT for bad options; UNAVAILABLE or INTERNAL from
  // SQLite; FAILED_PRECONDITION for a database from a newer release.
  static absl::StatusOr<std::unique_ptr<SecretStore>> Open(const SecretStoreOptions& options,
                                                           Clock& clock);

  // --- Keyring bookkeeping -----------------------------------------------------------------

  // The highest keyring term ever recorded (0 for a new database).
  absl::StatusOr<uint64_t> HighestKeyringTerm() ABSL_LOCKS_EXCLUDED(mu_);
  // Raises the recorded term to `term` (never lowers it). Errors: UNAVAILABLE, INTERNAL.
  absl::Status RecordKeyringTerm(uint64_t term) ABSL_LOCKS_EXCLUDED(mu_);
  // How many data keys `term`'s KEK has wrapped (persisted; 0 if none).
  absl::StatusOr<int64_t> TermEncryptions(uint64_t term) ABSL_LOCKS_EXCLUDED(mu_);
  // The highest term any stored data key is wrapped under (0 if none).
  absl::StatusOr<uint64_t> HighestDataKeyTerm() ABSL_LOCKS_EXCLUDED(mu_);

  // --- Reads (metadata only) ----------------------------------------------------------------

  // One field's metadata, or nullopt if it is not stored.
  absl::StatusOr<std::optional<SecretMeta>> Get(absl::string_view user_id,
                                                absl::string_view provider_id,
                                                absl::string_view field_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  // A user's secrets ordered by provider then field; only `provider_id`'s when it is set.
  absl::StatusOr<std::vector<SecretMeta>> List(absl::string_view user_id,
                                               absl::string_view provider_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  // How many secrets a user stores.
  absl::StatusOr<int64_t> Count(absl::string_view user_id) ABSL_LOCKS_EXCLUDED(mu_);
  // The last version ever used for the field (also after a delete), 0 if never stored.
  absl::StatusOr<int64_t> LastVersion(absl::string_view user_id, absl::string_view provider_id,
                                      absl::string_view field_id) ABSL_LOCKS_EXCLUDED(mu_);

  // --- Writes -------------------------------------------------------------------------------

  // Stores `value` (already checked against the catalogue) as the field's next version, in
  // one transaction: creates the user's data key on first use (wrapped under the keyring's
  // active term), replaces it when its budget is used up, seals the value, and appends the
  // change. `expected_version` 0 means unconditional, -1 "only if absent", N "only if the
  // stored version is N". `fingerprint` is the value's keyed fingerprint.
  // Errors: ALREADY_EXISTS / ABORTED for a failed condition; RESOURCE_EXHAUSTED if the user
  // already stores max_secrets_per_user secrets; INTERNAL if the user's data key or a value to
  // reseal fails authentication, or the keyring lacks its term (FAILED_PRECONDITION);
  // UNAVAILABLE if the database is busy or cannot be written. Nothing changes on error.
  absl::StatusOr<StoredPut> Put(const Keyring& keyring, absl::string_view user_id,
                                absl::string_view provider_id, absl::string_view field_id,
                                absl::string_view value, absl::string_view fingerprint,
                                int64_t expected_version) ABSL_LOCKS_EXCLUDED(mu_);

  // Deletes one field, or every field of the provider when `field_id` is empty, and appends
  // one change per deleted field, in one transaction. `expected_version` (non-zero, with a
  // field only) must equal the stored version.
  // Errors: NOT_FOUND if nothing matches; ABORTED for a version mismatch; UNAVAILABLE.
  absl::StatusOr<StoredDelete> Delete(absl::string_view user_id, absl::string_view provider_id,
                                      absl::string_view field_id, int64_t expected_version)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Decrypts every secret of a user, ordered by provider then field.
  // Errors: INTERNAL (fail closed, nothing returned) if any data key or value fails
  // authentication or belongs to another data-key generation; FAILED_PRECONDITION if the
  // keyring lacks the term a data key is wrapped under; UNAVAILABLE.
  absl::StatusOr<std::vector<PlainSecret>> DecryptAll(const Keyring& keyring,
                                                      absl::string_view user_id)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Rewraps up to `batch` data keys that are not under the keyring's active term, in one
  // transaction, and returns how many it rewrapped (0 when none is left). Errors: as
  // DecryptAll.
  absl::StatusOr<int64_t> RewrapDataKeys(const Keyring& keyring, int batch)
      ABSL_LOCKS_EXCLUDED(mu_);

  // --- Change feed --------------------------------------------------------------------------

  // Up to `limit` changes after `after_sequence`, oldest first; only `user_id`'s when set.
  absl::StatusOr<std::vector<SecretChange>> ChangesAfter(uint64_t after_sequence,
                                                         absl::string_view user_id, int limit)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The oldest sequence still in the feed, or LatestSequence() + 1 when the feed is empty.
  absl::StatusOr<uint64_t> OldestRetainedSequence() ABSL_LOCKS_EXCLUDED(mu_);
  // The newest sequence written (0 if none ever).
  uint64_t LatestSequence() ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until a change newer than `after_sequence` is written or `deadline` passes (real
  // time: the Watch stream's wait). Returns the latest sequence.
  uint64_t WaitForNewer(uint64_t after_sequence, absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

  const SecretStoreOptions& options() const { return options_; }

 private:
  SecretStore(SecretStoreOptions options, Clock& clock, std::unique_ptr<SqliteDb> db)
      : options_(std::move(options)), clock_(clock), db_(std::move(db)) {}

  struct DataKeyRow;
  absl::StatusOr<std::optional<DataKeyRow>> ReadDataKeyLocked(absl::string_view user_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CountTermUseLocked(uint64_t term, int64_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint64_t> AppendChangeLocked(ChangeKind kind, const SecretMeta& meta,
                                              absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<SecretMeta>> ListLocked(absl::string_view user_id,
                                                     absl::string_view provider_id,
                                                     absl::string_view field_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const SecretStoreOptions options_;
  Clock& clock_;
  absl::Mutex mu_;
  const std::unique_ptr<SqliteDb> db_ ABSL_PT_GUARDED_BY(mu_);
  uint64_t latest_sequence_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tidepool::secrets
