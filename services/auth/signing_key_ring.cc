#include "services/auth/signing_key_ring.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/strings/str_cat.h"
#include "lib/crypto/crypto.h"
#include "lib/status_macros.h"

namespace tidepool::auth {

namespace {

constexpr absl::string_view kCreateTable =
    "CREATE TABLE IF NOT EXISTS signing_keys ("
    "  key_id TEXT PRIMARY KEY,"
    "  private_pem TEXT NOT NULL,"
    "  created_us INTEGER,"
    "  retired_us INTEGER)";

// Times are stored as Unix microseconds; keep the in-memory copies at the same precision so
// that a reopened ring reports exactly what the running one did.
absl::Time ToStoredPrecision(absl::Time t) { return absl::FromUnixMicros(absl::ToUnixMicros(t)); }

// A freshly generated key and its PEM form (secret: stored, never logged).
struct GeneratedKey {
  std::string key_id;
  std::string pem;
  std::shared_ptr<const crypto::Ed25519PrivateKey> private_key;
};

absl::StatusOr<GeneratedKey> GenerateKey() {
  TP_ASSIGN_OR_RETURN(crypto::Ed25519PrivateKey key, crypto::Ed25519PrivateKey::Generate());
  GeneratedKey generated;
  TP_ASSIGN_OR_RETURN(generated.pem, key.ToPem());
  generated.key_id = KeyIdForPublicKey(key.PublicKey());
  generated.private_key = std::make_shared<const crypto::Ed25519PrivateKey>(std::move(key));
  return generated;
}

absl::Status InsertKey(SqliteDb& db, const GeneratedKey& key, absl::Time created) {
  TP_ASSIGN_OR_RETURN(Statement insert,
                      db.Prepare("INSERT INTO signing_keys (key_id, private_pem, created_us, "
                                 "retired_us) VALUES (?, ?, ?, NULL)"));
  TP_RETURN_IF_ERROR(insert.Bind(1, absl::string_view(key.key_id)));
  TP_RETURN_IF_ERROR(insert.Bind(2, absl::string_view(key.pem)));
  TP_RETURN_IF_ERROR(insert.Bind(3, absl::ToUnixMicros(created)));
  return insert.Step().status();
}

// Deletes every key whose verification window closed at or before `now`.
absl::Status DeleteExpired(SqliteDb& db, absl::Time now, absl::Duration grace) {
  TP_ASSIGN_OR_RETURN(
      Statement remove,
      db.Prepare("DELETE FROM signing_keys WHERE retired_us IS NOT NULL AND retired_us <= ?"));
  TP_RETURN_IF_ERROR(remove.Bind(1, absl::ToUnixMicros(now - grace)));
  return remove.Step().status();
}

}  // namespace

SigningKeyRing::SigningKeyRing(SqliteDb& db, Clock& clock, const SigningKeyRingOptions& options,
                               std::vector<Entry> keys)
    : db_(db), clock_(clock), options_(options), keys_(std::move(keys)) {}

absl::StatusOr<std::unique_ptr<SigningKeyRing>> SigningKeyRing::Open(
    SqliteDb& db, Clock& clock, const SigningKeyRingOptions& options) {
  if (options.grace < absl::ZeroDuration() ||
      options.min_rotation_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("key ring grace and rotation interval must not be negative");
  }
  TP_ASSIGN_OR_RETURN(Transaction txn, db.Begin());
  TP_RETURN_IF_ERROR(db.Exec(kCreateTable));
  const absl::Time now = ToStoredPrecision(clock.Now());
  TP_RETURN_IF_ERROR(DeleteExpired(db, now, options.grace));

  std::vector<Entry> keys;
  int current_count = 0;
  {
    TP_ASSIGN_OR_RETURN(Statement select,
                        db.Prepare("SELECT key_id, private_pem, created_us, retired_us "
                                   "FROM signing_keys"));
    while (true) {
      TP_ASSIGN_OR_RETURN(const bool row, select.Step());
      if (!row) {
        break;
      }
      Entry entry;
      entry.key_id = select.ColumnText(0);
      absl::StatusOr<crypto::Ed25519PrivateKey> key =
          crypto::Ed25519PrivateKey::FromPem(select.ColumnText(1));
      if (!key.ok()) {
        return absl::InternalError(
            absl::StrCat("stored signing key ", entry.key_id, " does not parse"));
      }
      entry.public_key = key->PublicKey();
      if (KeyIdForPublicKey(entry.public_key) != entry.key_id) {
        return absl::InternalError(
            absl::StrCat("stored signing key ", entry.key_id, " does not match its key id"));
      }
      entry.created = absl::FromUnixMicros(select.ColumnInt(2));
      if (select.ColumnIsNull(3)) {
        ++current_count;
        entry.retired = absl::InfiniteFuture();
        entry.private_key = std::make_shared<const crypto::Ed25519PrivateKey>(*std::move(key));
      } else {
        entry.retired = absl::FromUnixMicros(select.ColumnInt(3));
      }
      keys.push_back(std::move(entry));
    }
  }
  if (current_count > 1) {
    return absl::InternalError(
        absl::StrCat("signing_keys holds ", current_count, " current keys; expected one"));
  }
  if (current_count == 0) {
    TP_ASSIGN_OR_RETURN(GeneratedKey generated, GenerateKey());
    TP_RETURN_IF_ERROR(InsertKey(db, generated, now));
    Entry entry;
    entry.key_id = generated.key_id;
    entry.public_key = generated.private_key->PublicKey();
    entry.private_key = std::move(generated.private_key);
    entry.created = now;
    entry.retired = absl::InfiniteFuture();
    keys.push_back(std::move(entry));
  }
  TP_RETURN_IF_ERROR(txn.Commit());

  // The current key (retired = InfiniteFuture) first, then retired keys, newest first.
  std::sort(keys.begin(), keys.end(), [](const Entry& a, const Entry& b) {
    return a.retired != b.retired ? a.retired > b.retired : a.created > b.created;
  });
  return absl::WrapUnique(new SigningKeyRing(db, clock, options, std::move(keys)));
}

SigningKey SigningKeyRing::Current() const {
  absl::ReaderMutexLock lock(&mu_);
  const Entry& current = keys_.front();
  return SigningKey{current.key_id, current.private_key, current.created, absl::InfiniteFuture()};
}

absl::StatusOr<KeyRotation> SigningKeyRing::Rotate(absl::string_view reason) {
  if (reason.size() > kMaxRotationReasonBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("rotation reason is over ", kMaxRotationReasonBytes, " bytes"));
  }
  absl::MutexLock lock(&mu_);
  const absl::Time now = ToStoredPrecision(clock_.Now());
  if (now < keys_.front().created + options_.min_rotation_interval) {
    return absl::FailedPreconditionError(
        absl::StrCat("the signing key was rotated less than ",
                     absl::FormatDuration(options_.min_rotation_interval), " ago"));
  }
  TP_ASSIGN_OR_RETURN(GeneratedKey generated, GenerateKey());
  {
    TP_ASSIGN_OR_RETURN(Transaction txn, db_.Begin());
    TP_ASSIGN_OR_RETURN(Statement retire, db_.Prepare("UPDATE signing_keys SET retired_us = ? "
                                                      "WHERE key_id = ? AND retired_us IS NULL"));
    TP_RETURN_IF_ERROR(retire.Bind(1, absl::ToUnixMicros(now)));
    TP_RETURN_IF_ERROR(retire.Bind(2, absl::string_view(keys_.front().key_id)));
    TP_RETURN_IF_ERROR(retire.Step().status());
    if (db_.Changes() != 1) {
      return absl::FailedPreconditionError(
          "signing keys were changed outside this key ring; reopen it");
    }
    TP_RETURN_IF_ERROR(InsertKey(db_, generated, now));
    TP_RETURN_IF_ERROR(DeleteExpired(db_, now, options_.grace));
    TP_RETURN_IF_ERROR(txn.Commit());
  }

  // Stored: now mirror it in memory. The old private key is dropped here; SigningKey copies
  // handed out earlier keep it alive until they are gone.
  keys_.front().retired = now;
  keys_.front().private_key.reset();
  Entry entry;
  entry.key_id = generated.key_id;
  entry.public_key = generated.private_key->PublicKey();
  entry.private_key = std::move(generated.private_key);
  entry.created = now;
  entry.retired = absl::InfiniteFuture();
  keys_.insert(keys_.begin(), std::move(entry));
  keys_.erase(std::remove_if(keys_.begin() + 1, keys_.end(),
                             [&](const Entry& e) { return e.retired + options_.grace <= now; }),
              keys_.end());
  return KeyRotation{ToVerificationKey(keys_[0]), ToVerificationKey(keys_[1])};
}

std::vector<VerificationKey> SigningKeyRing::PublicKeys() const {
  const absl::Time now = clock_.Now();
  std::vector<VerificationKey> result;
  absl::ReaderMutexLock lock(&mu_);
  for (const Entry& entry : keys_) {
    VerificationKey key = ToVerificationKey(entry);
    if (now < key.not_after) {
      result.push_back(std::move(key));
    }
  }
  return result;
}

std::optional<VerificationKey> SigningKeyRing::Find(absl::string_view kid, absl::Time now) {
  absl::ReaderMutexLock lock(&mu_);
  for (const Entry& entry : keys_) {
    if (entry.key_id == kid) {
      VerificationKey key = ToVerificationKey(entry);
      if (now < key.not_after) {
        return key;
      }
      return std::nullopt;
    }
  }
  return std::nullopt;
}

VerificationKey SigningKeyRing::ToVerificationKey(const Entry& entry) const {
  const bool current = entry.retired == absl::InfiniteFuture();
  return VerificationKey{entry.key_id, entry.public_key, entry.created,
                         current ? absl::InfiniteFuture() : entry.retired + options_.grace,
                         current};
}

}  // namespace tidepool::auth
