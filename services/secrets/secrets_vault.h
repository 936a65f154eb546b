#pragma once

// SecretsVault: the core of the secrets service, free of gRPC. It ties the catalogue, the
// master key, the keyring, the envelope and the store together, enforces the limits, and
// records every operation in the audit trail before it takes effect (EmitDurable; the
// operation fails with UNAVAILABLE when the audit service cannot make the event durable).
// Values never reach an audit event, a log line, a metric or a status message: at most their
// keyed fingerprint does.
//
// Files under options.dir (created 0700): secrets.db (SecretStore), keyring (keyring.h) and,
// unless the master key comes from elsewhere, master.key.

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/audit_client.h"
#include "lib/clock.h"
#include "prometheus/registry.h"
#include "services/secrets/catalogue.h"
#include "services/secrets/keyring.h"
#include "services/secrets/master_key.h"
#include "services/secrets/secret_bytes.h"
#include "services/secrets/secret_store.h"

namespace tidepool::secrets {

struct SecretsVaultOptions {
  // Where secrets.db and the keyring live.
  std::string dir;
  // Where the master key comes from (exactly one of file and env_var).
  MasterKeySource master_key;
  // Longest accepted value, in bytes (fields may accept less).
  int max_value_bytes = 16384;
  // Most secrets (fields) one user may store.
  int max_secrets_per_user = 200;
  // When the keyring's active term is retired automatically.
  RotationPolicy rotation;
  // A user's data key is replaced before it seals more values than this.
  int64_t max_encryptions_per_data_key = kMaxEncryptionsPerKey;
  // How many changes the Watch feed keeps.
  int64_t change_retention = 10000;
  // The tool profile whose mapping decides PutResponse.applies_without_restart.
  std::string default_profile = "openclaw";
  // How long an operation waits for its audit event to become durable.
  absl::Duration audit_timeout = absl::Seconds(5);
};

// Who asks: a person (through the proxy) or a platform service on its own account.
struct Actor {
  // The person's user id; empty for a service (tidepoolctl, the provisioner).
  std::string user_id;
  // The caller's mutual-TLS identity ("proxy", "tidepoolctl", "provisioner").
  std::string service;
};

struct PutOutcome {
  SecretMeta secret;
  bool applies_without_restart = false;
};

struct ListOutcome {
  std::vector<SecretMeta> secrets;
  std::vector<std::string> capabilities;
};

// One decrypted field, with where the requested profile wants it.
struct ResolvedField {
  SecretMeta meta;
  SecretBytes value;
  std::vector<CatalogueTarget> targets;
  bool applies_without_restart = false;
};

struct Resolution {
  std::vector<ResolvedField> secrets;
  std::vector<std::string> capabilities;
  uint64_t watch_sequence = 0;
};

struct RotationOutcome {
  uint64_t term = 0;
  int64_t rewrapped_data_keys = 0;
  absl::Time complete_time;
};

// Thread-safe. Not owned: `catalogue`, `clock`, `audit` (may be null: every audited operation
// then fails UNAVAILABLE) and `registry` (may be null) must outlive the vault.
class SecretsVault {
 public:
  // Opens or initialises the vault (see master_key.h for the start-up policy): loads the
  // master key, opens the database, unseals the keyring (finishing an interrupted master-key
  // rotation if it finds one), and refuses a rolled-back keyring.
  // Errors: FAILED_PRECONDITION "sealed: ..." when the master key or keyring cannot be used
  // (the service must not start); INVALID_ARGUMENT for bad options; UNAVAILABLE or INTERNAL
  // for I/O failures.
  static absl::StatusOr<std::unique_ptr<SecretsVault>> Open(SecretsVaultOptions options,
                                                            const Catalogue& catalogue,
                                                            Clock& clock, AuditEmitter* audit,
                                                            prometheus::Registry* registry);
  ~SecretsVault();

  // Stores a value for `user_id` (authorisation is the caller's job). Checks the value
  // against the catalogue, the version condition and the per-user limit, audits
  // "secrets.put" with the value's fingerprint, then writes atomically.
  // Errors: INVALID_ARGUMENT (catalogue check, bad expected_version); ALREADY_EXISTS, ABORTED
  // (version condition); RESOURCE_EXHAUSTED (limit); UNAVAILABLE (audit or store); INTERNAL.
  absl::StatusOr<PutOutcome> Put(const Actor& actor, absl::string_view user_id,
                                 absl::string_view provider_id, absl::string_view field_id,
                                 absl::string_view value, int64_t expected_version);

  // Deletes one field (or all fields of the provider when `field_id` is empty), audited
  // ("secrets.delete") before it happens. Errors: INVALID_ARGUMENT (malformed ids,
  // expected_version without a field); NOT_FOUND; ABORTED; UNAVAILABLE.
  absl::StatusOr<std::vector<SecretMeta>> Delete(const Actor& actor, absl::string_view user_id,
                                                 absl::string_view provider_id,
                                                 absl::string_view field_id,
                                                 int64_t expected_version);

  // Metadata of a user's secrets and the capabilities they unlock. Recorded in the audit
  // trail without blocking. Errors: INVALID_ARGUMENT (malformed provider id); UNAVAILABLE.
  absl::StatusOr<ListOutcome> List(const Actor& actor, absl::string_view user_id,
                                   absl::string_view provider_id);

  // Decrypts every secret of `owner_user_id` for the workspace's `profile`, audited
  // ("secrets.resolved", field names only) before the plaintext is returned.
  // Errors: INVALID_ARGUMENT (malformed ids, unknown profile); UNAVAILABLE; INTERNAL if any
  // ciphertext fails authentication (nothing is returned; audited as
  // "secrets.integrity_failure").
  absl::StatusOr<Resolution> Resolve(const Actor& actor, absl::string_view workspace_id,
                                     absl::string_view owner_user_id, absl::string_view profile);

  // Replaces the master key online: adds a keyring term sealed under `new_key`, rewraps every
  // data key under it, and replaces the key file (only file-sourced master keys can be
  // replaced). Audited ("secrets.master_key_rotated") before it takes effect.
  // Errors: INVALID_ARGUMENT (a key that is not a usable 32-byte key); ALREADY_EXISTS (equal to
  // the current key); FAILED_PRECONDITION (another rotation is running, or the master key comes
  // from an environment variable); UNAVAILABLE (audit or storage).
  absl::StatusOr<RotationOutcome> RotateMasterKey(const Actor& actor, SecretBytes new_key,
                                                  absl::string_view reason,
                                                  absl::string_view key_source);

  // Adds a keyring term (same master key) if the rotation policy says one is due, audited
  // ("secrets.keyring_rotated") first. Returns the active term afterwards. Called before
  // every write and periodically. Errors: UNAVAILABLE (audit or storage).
  absl::StatusOr<uint64_t> RotateKeyringIfDue();

  // Records a refused cross-user attempt (the caller answers NOT_FOUND) without blocking.
  void RecordDenied(const Actor& actor, absl::string_view action,
                    absl::string_view requested_user_id);

  // The active keyring term.
  uint64_t active_term() ABSL_LOCKS_EXCLUDED(keyring_mu_);
  // True if this start generated the master key file.
  bool master_key_generated() const { return master_key_generated_; }
  const Catalogue& catalogue() const { return catalogue_; }
  SecretStore& store() { return *store_; }

 private:
  struct Metrics;

  SecretsVault(SecretsVaultOptions options, const Catalogue& catalogue, Clock& clock,
               AuditEmitter* audit, prometheus::Registry* registry);

  absl::StatusOr<PutOutcome> PutImpl(const Actor& actor, absl::string_view user_id,
                                     absl::string_view provider_id, absl::string_view field_id,
                                     absl::string_view value, int64_t expected_version);
  absl::StatusOr<std::vector<SecretMeta>> DeleteImpl(const Actor& actor, absl::string_view user_id,
                                                     absl::string_view provider_id,
                                                     absl::string_view field_id,
                                                     int64_t expected_version);
  absl::StatusOr<Resolution> ResolveImpl(const Actor& actor, absl::string_view workspace_id,
                                         absl::string_view owner_user_id,
                                         absl::string_view profile);
  absl::StatusOr<RotationOutcome> RotateMasterKeyImpl(const Actor& actor, SecretBytes new_key,
                                                      absl::string_view reason,
                                                      absl::string_view key_source);
  std::shared_ptr<const Keyring> Snapshot() ABSL_LOCKS_EXCLUDED(keyring_mu_);
  absl::Mutex& UserLock(absl::string_view user_id);
  absl::Status AuditDurable(common::v1::AuditEvent event);
  void AuditNonBlocking(common::v1::AuditEvent event);
  // Adds a term sealed under `new_master_key` (or the current key when null), persists it,
  // swaps it in and records the term; with `rewrap`, also rewraps every data key under it.
  absl::StatusOr<RotationOutcome> RotateLocked(const SecretBytes* new_master_key, bool rewrap)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(rotation_mu_) ABSL_LOCKS_EXCLUDED(keyring_mu_);
  // Runs `op` with the current keyring; if it fails because a data key is already wrapped
  // under a term newer than that snapshot (a rotation ran meanwhile), runs it again with a
  // fresh one.
  template <typename T>
  absl::StatusOr<T> WithKeyring(const std::function<absl::StatusOr<T>(const Keyring& keyring)>& op);
  void Count(absl::string_view operation, const absl::Status& status);

  const SecretsVaultOptions options_;
  const Catalogue& catalogue_;
  Clock& clock_;
  AuditEmitter* const audit_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<SecretStore> store_;
  std::string keyring_path_;
  bool master_key_generated_ = false;

  // Writes of one user are serialised (check, audit, write) by one of these stripes.
  std::array<absl::Mutex, 64> user_locks_;
  // Serialises rotations. Acquired before keyring_mu_, never while waiting for a user lock.
  absl::Mutex rotation_mu_ ABSL_ACQUIRED_BEFORE(keyring_mu_);
  absl::Mutex keyring_mu_;
  std::shared_ptr<const Keyring> keyring_ ABSL_GUARDED_BY(keyring_mu_);
  SecretBytes master_key_ ABSL_GUARDED_BY(keyring_mu_);
};

// True for "u_" followed by 26 lower-case base32 characters.
bool IsValidUserId(absl::string_view user_id);
// True for "ws_" followed by 26 lower-case base32 characters.
bool IsValidWorkspaceId(absl::string_view workspace_id);
// True for a catalogue-style id: [a-z][a-z0-9_]*, at most 64 characters.
bool IsValidCatalogueId(absl::string_view id);

}  // namespace tidepool::secrets
