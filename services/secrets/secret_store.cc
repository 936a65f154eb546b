#include "services/secrets/secret_store.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/status_macros.h"
#include "services/secrets/envelope.h"

namespace tidepool::secrets {
namespace {

const std::vector<Migration>& Migrations() {
  static const std::vector<Migration>* migrations = new std::vector<Migration>{{1, R"sql(
CREATE TABLE meta (
  name TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE term_usage (
  term INTEGER PRIMARY KEY,
  encryptions INTEGER NOT NULL
);
CREATE TABLE data_keys (
  user_id TEXT PRIMARY KEY,
  generation INTEGER NOT NULL CHECK (generation > 0),
  term INTEGER NOT NULL CHECK (term > 0),
  wrapped_key BLOB NOT NULL,
  encryptions INTEGER NOT NULL,
  create_time_us INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE secrets (
  user_id TEXT NOT NULL,
  provider_id TEXT NOT NULL,
  field_id TEXT NOT NULL,
  version INTEGER NOT NULL CHECK (version > 0),
  key_generation INTEGER NOT NULL,
  ciphertext BLOB NOT NULL,
  fingerprint TEXT NOT NULL,
  create_time_us INTEGER NOT NULL,
  update_time_us INTEGER NOT NULL,
  PRIMARY KEY (user_id, provider_id, field_id)
) WITHOUT ROWID;
CREATE TABLE field_versions (
  user_id TEXT NOT NULL,
  provider_id TEXT NOT NULL,
  field_id TEXT NOT NULL,
  last_version INTEGER NOT NULL,
  PRIMARY KEY (user_id, provider_id, field_id)
) WITHOUT ROWID;
CREATE TABLE changes (
  sequence INTEGER PRIMARY KEY AUTOINCREMENT,
  kind INTEGER NOT NULL,
  user_id TEXT NOT NULL,
  provider_id TEXT NOT NULL,
  field_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  fingerprint TEXT NOT NULL,
  create_time_us INTEGER NOT NULL,
  update_time_us INTEGER NOT NULL,
  change_time_us INTEGER NOT NULL
);
CREATE INDEX changes_by_user ON changes (user_id, sequence);
)sql"}};
  return *migrations;
}

int64_t Micros(absl::Time t) { return absl::ToUnixMicros(t); }
absl::Time FromMicros(int64_t us) { return absl::FromUnixMicros(us); }

// Columns: user_id, provider_id, field_id, version, create_time_us, update_time_us, fingerprint
// starting at `first`.
SecretMeta MetaFromRow(const Statement& row, int first) {
  SecretMeta meta;
  meta.user_id = row.ColumnText(first);
  meta.provider_id = row.ColumnText(first + 1);
  meta.field_id = row.ColumnText(first + 2);
  meta.version = row.ColumnInt(first + 3);
  meta.create_time = FromMicros(row.ColumnInt(first + 4));
  meta.update_time = FromMicros(row.ColumnInt(first + 5));
  meta.fingerprint = row.ColumnText(first + 6);
  return meta;
}

absl::Status Run(Statement& statement) {
  absl::StatusOr<bool> stepped = statement.Step();
  return stepped.status();
}

absl::StatusOr<int64_t> QueryOneInt(SqliteDb& db, absl::string_view sql,
                                    const std::vector<std::string>& texts, int64_t fallback) {
  TP_ASSIGN_OR_RETURN(Statement statement, db.Prepare(sql));
  for (size_t i = 0; i < texts.size(); ++i) {
    TP_RETURN_IF_ERROR(statement.Bind(static_cast<int>(i + 1), absl::string_view(texts[i])));
  }
  TP_ASSIGN_OR_RETURN(bool row, statement.Step());
  if (!row || statement.ColumnIsNull(0)) {
    return fallback;
  }
  return statement.ColumnInt(0);
}

}  // namespace

struct SecretStore::DataKeyRow {
  int64_t generation = 0;
  uint64_t term = 0;
  std::string wrapped_key;
  int64_t encryptions = 0;
};

absl::StatusOr<std::unique_ptr<SecretStore>> SecretStore::Open(const SecretStoreOptions& options,
                                                               Clock& clock) {
  if (options.path.empty() || options.max_secrets_per_user < 1 || options.change_retention < 1 ||
      options.max_encryptions_per_data_key <= options.max_secrets_per_user) {
    return absl::InvalidArgumentError(
        "secret store: a path, max_secrets_per_user >= 1, change_retention >= 1 and a data-key "
        "budget above max_secrets_per_user are required");
  }
  SqliteOptions sqlite;
  sqlite.durability = Durability::kFull;
  TP_ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, SqliteDb::Open(options.path, sqlite));
  TP_RETURN_IF_ERROR(db->Migrate(Migrations()));
  auto store = std::unique_ptr<SecretStore>(new SecretStore(options, clock, std::move(db)));
  absl::MutexLock lock(&store->mu_);
  TP_ASSIGN_OR_RETURN(
      int64_t latest,
      QueryOneInt(*store->db_, "SELECT seq FROM sqlite_sequence WHERE name = 'changes'", {}, 0));
  store->latest_sequence_ = static_cast<uint64_t>(latest);
  return store;
}

absl::StatusOr<uint64_t> SecretStore::HighestKeyringTerm() {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(
      int64_t term, QueryOneInt(*db_, "SELECT value FROM meta WHERE name = 'keyring_term'", {}, 0));
  return static_cast<uint64_t>(term);
}

absl::Status SecretStore::RecordKeyringTerm(uint64_t term) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement statement,
                      db_->Prepare("INSERT INTO meta (name, value) VALUES ('keyring_term', ?1) "
                                   "ON CONFLICT (name) DO UPDATE SET "
                                   "value = max(value, excluded.value)"));
  TP_RETURN_IF_ERROR(statement.Bind(1, static_cast<int64_t>(term)));
  return Run(statement);
}

absl::StatusOr<int64_t> SecretStore::TermEncryptions(uint64_t term) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement statement,
                      db_->Prepare("SELECT encryptions FROM term_usage WHERE term = ?1"));
  TP_RETURN_IF_ERROR(statement.Bind(1, static_cast<int64_t>(term)));
  TP_ASSIGN_OR_RETURN(bool row, statement.Step());
  return row ? statement.ColumnInt(0) : 0;
}

absl::StatusOr<uint64_t> SecretStore::HighestDataKeyTerm() {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(int64_t term, QueryOneInt(*db_, "SELECT max(term) FROM data_keys", {}, 0));
  return static_cast<uint64_t>(term);
}

absl::StatusOr<std::vector<SecretMeta>> SecretStore::ListLocked(absl::string_view user_id,
                                                                absl::string_view provider_id,
                                                                absl::string_view field_id) {
  std::string sql =
      "SELECT user_id, provider_id, field_id, version, create_time_us, update_time_us, "
      "fingerprint FROM secrets WHERE user_id = ?1";
  if (!provider_id.empty()) {
    sql += " AND provider_id = ?2";
  }
  if (!field_id.empty()) {
    sql += " AND field_id = ?3";
  }
  sql += " ORDER BY provider_id, field_id";
  TP_ASSIGN_OR_RETURN(Statement statement, db_->Prepare(sql));
  TP_RETURN_IF_ERROR(statement.Bind(1, user_id));
  if (!provider_id.empty()) {
    TP_RETURN_IF_ERROR(statement.Bind(2, provider_id));
  }
  if (!field_id.empty()) {
    TP_RETURN_IF_ERROR(statement.Bind(3, field_id));
  }
  std::vector<SecretMeta> out;
  while (true) {
    TP_ASSIGN_OR_RETURN(bool row, statement.Step());
    if (!row) {
      break;
    }
    out.push_back(MetaFromRow(statement, 0));
  }
  return out;
}

absl::StatusOr<std::optional<SecretMeta>> SecretStore::Get(absl::string_view user_id,
                                                           absl::string_view provider_id,
                                                           absl::string_view field_id) {
  if (provider_id.empty() || field_id.empty()) {
    return absl::InvalidArgumentError("provider and field are required");
  }
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(std::vector<SecretMeta> rows, ListLocked(user_id, provider_id, field_id));
  if (rows.empty()) {
    return std::optional<SecretMeta>();
  }
  return std::optional<SecretMeta>(std::move(rows.front()));
}

absl::StatusOr<std::vector<SecretMeta>> SecretStore::List(absl::string_view user_id,
                                                          absl::string_view provider_id) {
  absl::MutexLock lock(&mu_);
  return ListLocked(user_id, provider_id, "");
}

absl::StatusOr<int64_t> SecretStore::Count(absl::string_view user_id) {
  absl::MutexLock lock(&mu_);
  return QueryOneInt(*db_, "SELECT count(*) FROM secrets WHERE user_id = ?1",
                     {std::string(user_id)}, 0);
}

absl::StatusOr<int64_t> SecretStore::LastVersion(absl::string_view user_id,
                                                 absl::string_view provider_id,
                                                 absl::string_view field_id) {
  absl::MutexLock lock(&mu_);
  return QueryOneInt(*db_,
                     "SELECT last_version FROM field_versions WHERE user_id = ?1 AND "
                     "provider_id = ?2 AND field_id = ?3",
                     {std::string(user_id), std::string(provider_id), std::string(field_id)}, 0);
}

absl::StatusOr<std::optional<SecretStore::DataKeyRow>> SecretStore::ReadDataKeyLocked(
    absl::string_view user_id) {
  TP_ASSIGN_OR_RETURN(Statement statement,
                      db_->Prepare("SELECT generation, term, wrapped_key, encryptions "
                                   "FROM data_keys WHERE user_id = ?1"));
  TP_RETURN_IF_ERROR(statement.Bind(1, user_id));
  TP_ASSIGN_OR_RETURN(bool row, statement.Step());
  if (!row) {
    return std::optional<DataKeyRow>();
  }
  DataKeyRow key;
  key.generation = statement.ColumnInt(0);
  key.term = static_cast<uint64_t>(statement.ColumnInt(1));
  key.wrapped_key = statement.ColumnBlob(2);
  key.encryptions = statement.ColumnInt(3);
  return std::optional<DataKeyRow>(std::move(key));
}

absl::Status SecretStore::CountTermUseLocked(uint64_t term, int64_t n) {
  TP_ASSIGN_OR_RETURN(Statement statement,
                      db_->Prepare("INSERT INTO term_usage (term, encryptions) VALUES (?1, ?2) "
                                   "ON CONFLICT (term) DO UPDATE SET "
                                   "encryptions = encryptions + excluded.encryptions"));
  TP_RETURN_IF_ERROR(statement.Bind(1, static_cast<int64_t>(term)));
  TP_RETURN_IF_ERROR(statement.Bind(2, n));
  return Run(statement);
}

absl::StatusOr<uint64_t> SecretStore::AppendChangeLocked(ChangeKind kind, const SecretMeta& meta,
                                                         absl::Time now) {
  TP_ASSIGN_OR_RETURN(
      Statement insert,
      db_->Prepare("INSERT INTO changes (kind, user_id, provider_id, field_id, version, "
                   "fingerprint, create_time_us, update_time_us, change_time_us) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"));
  TP_RETURN_IF_ERROR(insert.Bind(1, static_cast<int64_t>(kind)));
  TP_RETURN_IF_ERROR(insert.Bind(2, absl::string_view(meta.user_id)));
  TP_RETURN_IF_ERROR(insert.Bind(3, absl::string_view(meta.provider_id)));
  TP_RETURN_IF_ERROR(insert.Bind(4, absl::string_view(meta.field_id)));
  TP_RETURN_IF_ERROR(insert.Bind(5, meta.version));
  TP_RETURN_IF_ERROR(insert.Bind(6, absl::string_view(meta.fingerprint)));
  TP_RETURN_IF_ERROR(insert.Bind(7, Micros(meta.create_time)));
  TP_RETURN_IF_ERROR(insert.Bind(8, Micros(meta.update_time)));
  TP_RETURN_IF_ERROR(insert.Bind(9, Micros(now)));
  TP_RETURN_IF_ERROR(Run(insert));
  const int64_t sequence = db_->LastInsertRowId();
  TP_ASSIGN_OR_RETURN(Statement prune, db_->Prepare("DELETE FROM changes WHERE sequence <= ?1"));
  TP_RETURN_IF_ERROR(prune.Bind(1, sequence - options_.change_retention));
  TP_RETURN_IF_ERROR(Run(prune));
  return static_cast<uint64_t>(sequence);
}

absl::StatusOr<StoredPut> SecretStore::Put(const Keyring& keyring, absl::string_view user_id,
                                           absl::string_view provider_id,
                                           absl::string_view field_id, absl::string_view value,
                                           absl::string_view fingerprint,
                                           int64_t expected_version) {
  if (user_id.empty() || provider_id.empty() || field_id.empty() || expected_version < -1) {
    return absl::InvalidArgumentError("user, provider and field are required");
  }
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.Now();
  TP_ASSIGN_OR_RETURN(Transaction transaction, db_->Begin());

  TP_ASSIGN_OR_RETURN(std::vector<SecretMeta> current, ListLocked(user_id, provider_id, field_id));
  const SecretMeta* existing = current.empty() ? nullptr : &current.front();
  if (expected_version == -1 && existing != nullptr) {
    return absl::AlreadyExistsError(absl::StrCat(
        provider_id, ".", field_id, " is already stored (version ", existing->version, ")"));
  }
  if (expected_version > 0 && (existing == nullptr || existing->version != expected_version)) {
    return absl::AbortedError(
        absl::StrCat("version conflict: ", provider_id, ".", field_id, " is ",
                     existing == nullptr ? std::string("not stored")
                                         : absl::StrCat("at version ", existing->version),
                     ", not at version ", expected_version, "; read it again and retry"));
  }
  if (existing == nullptr) {
    TP_ASSIGN_OR_RETURN(int64_t count,
                        QueryOneInt(*db_, "SELECT count(*) FROM secrets WHERE user_id = ?1",
                                    {std::string(user_id)}, 0));
    if (count >= options_.max_secrets_per_user) {
      return absl::ResourceExhaustedError(
          absl::StrCat("you already store ", count, " secrets, the most allowed per user (",
                       options_.max_secrets_per_user, "); delete some first"));
    }
  }
  TP_ASSIGN_OR_RETURN(
      int64_t last_version,
      QueryOneInt(*db_,
                  "SELECT last_version FROM field_versions WHERE user_id = ?1 AND "
                  "provider_id = ?2 AND field_id = ?3",
                  {std::string(user_id), std::string(provider_id), std::string(field_id)}, 0));
  const int64_t version =
      std::max(last_version, existing == nullptr ? int64_t{0} : existing->version) + 1;

  // The user's data key: created on first use, replaced when its budget is spent.
  const uint64_t active_term = keyring.active_term();
  SecretBytes data_key;
  int64_t generation = 0;
  bool replaced = false;
  TP_ASSIGN_OR_RETURN(std::optional<DataKeyRow> stored_key, ReadDataKeyLocked(user_id));
  if (!stored_key.has_value()) {
    TP_ASSIGN_OR_RETURN(data_key, NewDataKey());
    generation = 1;
    TP_ASSIGN_OR_RETURN(std::string wrapped,
                        WrapDataKey(keyring.active_key(),
                                    DataKeyBinding{std::string(user_id), active_term, generation},
                                    data_key.view()));
    TP_ASSIGN_OR_RETURN(Statement insert,
                        db_->Prepare("INSERT INTO data_keys (user_id, generation, term, "
                                     "wrapped_key, encryptions, create_time_us) "
                                     "VALUES (?1, ?2, ?3, ?4, 0, ?5)"));
    TP_RETURN_IF_ERROR(insert.Bind(1, user_id));
    TP_RETURN_IF_ERROR(insert.Bind(2, generation));
    TP_RETURN_IF_ERROR(insert.Bind(3, static_cast<int64_t>(active_term)));
    TP_RETURN_IF_ERROR(insert.BindBlob(4, wrapped));
    TP_RETURN_IF_ERROR(insert.Bind(5, Micros(now)));
    TP_RETURN_IF_ERROR(Run(insert));
    TP_RETURN_IF_ERROR(CountTermUseLocked(active_term, 1));
  } else {
    TP_ASSIGN_OR_RETURN(absl::string_view kek, keyring.KeyOf(stored_key->term));
    TP_ASSIGN_OR_RETURN(
        data_key,
        UnwrapDataKey(
            kek, DataKeyBinding{std::string(user_id), stored_key->term, stored_key->generation},
            stored_key->wrapped_key));
    generation = stored_key->generation;
    if (stored_key->encryptions + 1 > options_.max_encryptions_per_data_key) {
      // Budget spent: a new data key, and every other value of the user resealed under it.
      TP_ASSIGN_OR_RETURN(SecretBytes next_key, NewDataKey());
      const int64_t next_generation = generation + 1;
      TP_ASSIGN_OR_RETURN(Statement rows,
                          db_->Prepare("SELECT provider_id, field_id, version, key_generation, "
                                       "ciphertext FROM secrets WHERE user_id = ?1"));
      TP_RETURN_IF_ERROR(rows.Bind(1, user_id));
      struct Resealed {
        std::string provider_id, field_id, ciphertext;
      };
      std::vector<Resealed> resealed;
      while (true) {
        TP_ASSIGN_OR_RETURN(bool row, rows.Step());
        if (!row) {
          break;
        }
        Resealed item{rows.ColumnText(0), rows.ColumnText(1), ""};
        if (item.provider_id == provider_id && item.field_id == field_id) {
          continue;  // replaced by this put
        }
        if (rows.ColumnInt(3) != generation) {
          return absl::InternalError("a stored secret failed authentication");
        }
        ValueBinding binding{std::string(user_id), item.provider_id, item.field_id,
                             rows.ColumnInt(2), generation};
        TP_ASSIGN_OR_RETURN(SecretBytes plain,
                            OpenValue(data_key.view(), binding, rows.ColumnBlob(4)));
        binding.generation = next_generation;
        TP_ASSIGN_OR_RETURN(item.ciphertext, SealValue(next_key.view(), binding, plain.view()));
        resealed.push_back(std::move(item));
      }
      for (const Resealed& item : resealed) {
        TP_ASSIGN_OR_RETURN(Statement update,
                            db_->Prepare("UPDATE secrets SET ciphertext = ?1, key_generation = ?2 "
                                         "WHERE user_id = ?3 AND provider_id = ?4 AND "
                                         "field_id = ?5"));
        TP_RETURN_IF_ERROR(update.BindBlob(1, item.ciphertext));
        TP_RETURN_IF_ERROR(update.Bind(2, next_generation));
        TP_RETURN_IF_ERROR(update.Bind(3, user_id));
        TP_RETURN_IF_ERROR(update.Bind(4, absl::string_view(item.provider_id)));
        TP_RETURN_IF_ERROR(update.Bind(5, absl::string_view(item.field_id)));
        TP_RETURN_IF_ERROR(Run(update));
      }
      TP_ASSIGN_OR_RETURN(
          std::string wrapped,
          WrapDataKey(keyring.active_key(),
                      DataKeyBinding{std::string(user_id), active_term, next_generation},
                      next_key.view()));
      TP_ASSIGN_OR_RETURN(Statement update_key,
                          db_->Prepare("UPDATE data_keys SET generation = ?1, term = ?2, "
                                       "wrapped_key = ?3, encryptions = ?4, create_time_us = ?5 "
                                       "WHERE user_id = ?6"));
      TP_RETURN_IF_ERROR(update_key.Bind(1, next_generation));
      TP_RETURN_IF_ERROR(update_key.Bind(2, static_cast<int64_t>(active_term)));
      TP_RETURN_IF_ERROR(update_key.BindBlob(3, wrapped));
      TP_RETURN_IF_ERROR(update_key.Bind(4, static_cast<int64_t>(resealed.size())));
      TP_RETURN_IF_ERROR(update_key.Bind(5, Micros(now)));
      TP_RETURN_IF_ERROR(update_key.Bind(6, user_id));
      TP_RETURN_IF_ERROR(Run(update_key));
      TP_RETURN_IF_ERROR(CountTermUseLocked(active_term, 1));
      data_key = std::move(next_key);
      generation = next_generation;
      replaced = true;
    }
  }

  TP_ASSIGN_OR_RETURN(std::string ciphertext,
                      SealValue(data_key.view(),
                                ValueBinding{std::string(user_id), std::string(provider_id),
                                             std::string(field_id), version, generation},
                                value));
  TP_ASSIGN_OR_RETURN(
      Statement count_use,
      db_->Prepare("UPDATE data_keys SET encryptions = encryptions + 1 WHERE user_id = ?1"));
  TP_RETURN_IF_ERROR(count_use.Bind(1, user_id));
  TP_RETURN_IF_ERROR(Run(count_use));

  SecretMeta meta;
  meta.user_id = std::string(user_id);
  meta.provider_id = std::string(provider_id);
  meta.field_id = std::string(field_id);
  meta.version = version;
  meta.create_time = existing == nullptr ? now : existing->create_time;
  meta.update_time = now;
  meta.fingerprint = std::string(fingerprint);
  TP_ASSIGN_OR_RETURN(
      Statement upsert,
      db_->Prepare("INSERT INTO secrets (user_id, provider_id, field_id, version, key_generation, "
                   "ciphertext, fingerprint, create_time_us, update_time_us) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
                   "ON CONFLICT (user_id, provider_id, field_id) DO UPDATE SET "
                   "version = excluded.version, key_generation = excluded.key_generation, "
                   "ciphertext = excluded.ciphertext, fingerprint = excluded.fingerprint, "
                   "update_time_us = excluded.update_time_us"));
  TP_RETURN_IF_ERROR(upsert.Bind(1, user_id));
  TP_RETURN_IF_ERROR(upsert.Bind(2, provider_id));
  TP_RETURN_IF_ERROR(upsert.Bind(3, field_id));
  TP_RETURN_IF_ERROR(upsert.Bind(4, version));
  TP_RETURN_IF_ERROR(upsert.Bind(5, generation));
  TP_RETURN_IF_ERROR(upsert.BindBlob(6, ciphertext));
  TP_RETURN_IF_ERROR(upsert.Bind(7, fingerprint));
  TP_RETURN_IF_ERROR(upsert.Bind(8, Micros(meta.create_time)));
  TP_RETURN_IF_ERROR(upsert.Bind(9, Micros(now)));
  TP_RETURN_IF_ERROR(Run(upsert));
  TP_ASSIGN_OR_RETURN(Statement versions,
                      db_->Prepare("INSERT INTO field_versions (user_id, provider_id, field_id, "
                                   "last_version) VALUES (?1, ?2, ?3, ?4) "
                                   "ON CONFLICT (user_id, provider_id, field_id) DO UPDATE SET "
                                   "last_version = excluded.last_version"));
  TP_RETURN_IF_ERROR(versions.Bind(1, user_id));
  TP_RETURN_IF_ERROR(versions.Bind(2, provider_id));
  TP_RETURN_IF_ERROR(versions.Bind(3, field_id));
  TP_RETURN_IF_ERROR(versions.Bind(4, version));
  TP_RETURN_IF_ERROR(Run(versions));
  TP_ASSIGN_OR_RETURN(uint64_t sequence, AppendChangeLocked(ChangeKind::kPut, meta, now));
  TP_RETURN_IF_ERROR(transaction.Commit());
  latest_sequence_ = std::max(latest_sequence_, sequence);
  return StoredPut{std::move(meta), sequence, replaced};
}

absl::StatusOr<StoredDelete> SecretStore::Delete(absl::string_view user_id,
                                                 absl::string_view provider_id,
                                                 absl::string_view field_id,
                                                 int64_t expected_version) {
  if (user_id.empty() || provider_id.empty() || (field_id.empty() && expected_version != 0)) {
    return absl::InvalidArgumentError(
        "user and provider are required; expected_version needs a field");
  }
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.Now();
  TP_ASSIGN_OR_RETURN(Transaction transaction, db_->Begin());
  TP_ASSIGN_OR_RETURN(std::vector<SecretMeta> rows, ListLocked(user_id, provider_id, field_id));
  if (rows.empty()) {
    return absl::NotFoundError(kNoSuchSecret);
  }
  if (expected_version != 0 && rows.front().version != expected_version) {
    return absl::AbortedError(absl::StrCat("version conflict: ", provider_id, ".", field_id,
                                           " is at version ", rows.front().version, ", not ",
                                           expected_version, "; read it again and retry"));
  }
  std::string sql = "DELETE FROM secrets WHERE user_id = ?1 AND provider_id = ?2";
  if (!field_id.empty()) {
    sql += " AND field_id = ?3";
  }
  TP_ASSIGN_OR_RETURN(Statement erase, db_->Prepare(sql));
  TP_RETURN_IF_ERROR(erase.Bind(1, user_id));
  TP_RETURN_IF_ERROR(erase.Bind(2, provider_id));
  if (!field_id.empty()) {
    TP_RETURN_IF_ERROR(erase.Bind(3, field_id));
  }
  TP_RETURN_IF_ERROR(Run(erase));
  StoredDelete result;
  for (const SecretMeta& row : rows) {
    TP_ASSIGN_OR_RETURN(result.sequence, AppendChangeLocked(ChangeKind::kDelete, row, now));
  }
  TP_RETURN_IF_ERROR(transaction.Commit());
  latest_sequence_ = std::max(latest_sequence_, result.sequence);
  result.deleted = std::move(rows);
  return result;
}

absl::StatusOr<std::vector<PlainSecret>> SecretStore::DecryptAll(const Keyring& keyring,
                                                                 absl::string_view user_id) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(
      Statement rows,
      db_->Prepare("SELECT user_id, provider_id, field_id, version, create_time_us, "
                   "update_time_us, fingerprint, key_generation, ciphertext FROM secrets "
                   "WHERE user_id = ?1 ORDER BY provider_id, field_id"));
  TP_RETURN_IF_ERROR(rows.Bind(1, user_id));
  std::vector<PlainSecret> out;
  std::optional<DataKeyRow> stored_key;
  SecretBytes data_key;
  while (true) {
    TP_ASSIGN_OR_RETURN(bool row, rows.Step());
    if (!row) {
      break;
    }
    if (!stored_key.has_value()) {
      TP_ASSIGN_OR_RETURN(stored_key, ReadDataKeyLocked(user_id));
      if (!stored_key.has_value()) {
        return absl::InternalError("stored secrets have no data key");
      }
      TP_ASSIGN_OR_RETURN(absl::string_view kek, keyring.KeyOf(stored_key->term));
      TP_ASSIGN_OR_RETURN(
          data_key,
          UnwrapDataKey(
              kek, DataKeyBinding{std::string(user_id), stored_key->term, stored_key->generation},
              stored_key->wrapped_key));
    }
    PlainSecret secret;
    secret.meta = MetaFromRow(rows, 0);
    if (rows.ColumnInt(7) != stored_key->generation) {
      return absl::InternalError("a stored secret failed authentication");
    }
    TP_ASSIGN_OR_RETURN(
        secret.value,
        OpenValue(data_key.view(),
                  ValueBinding{secret.meta.user_id, secret.meta.provider_id, secret.meta.field_id,
                               secret.meta.version, stored_key->generation},
                  rows.ColumnBlob(8)));
    out.push_back(std::move(secret));
  }
  return out;
}

absl::StatusOr<int64_t> SecretStore::RewrapDataKeys(const Keyring& keyring, int batch) {
  if (batch < 1) {
    return absl::InvalidArgumentError("batch must be positive");
  }
  absl::MutexLock lock(&mu_);
  const uint64_t active_term = keyring.active_term();
  TP_ASSIGN_OR_RETURN(Transaction transaction, db_->Begin());
  TP_ASSIGN_OR_RETURN(Statement select,
                      db_->Prepare("SELECT user_id, generation, term, wrapped_key FROM data_keys "
                                   "WHERE term != ?1 ORDER BY user_id LIMIT ?2"));
  TP_RETURN_IF_ERROR(select.Bind(1, static_cast<int64_t>(active_term)));
  TP_RETURN_IF_ERROR(select.Bind(2, batch));
  struct Rewrapped {
    std::string user_id;
    std::string wrapped;
  };
  std::vector<Rewrapped> rewrapped;
  while (true) {
    TP_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) {
      break;
    }
    const std::string user_id = select.ColumnText(0);
    const int64_t generation = select.ColumnInt(1);
    const uint64_t term = static_cast<uint64_t>(select.ColumnInt(2));
    TP_ASSIGN_OR_RETURN(absl::string_view kek, keyring.KeyOf(term));
    TP_ASSIGN_OR_RETURN(
        SecretBytes data_key,
        UnwrapDataKey(kek, DataKeyBinding{user_id, term, generation}, select.ColumnBlob(3)));
    TP_ASSIGN_OR_RETURN(
        std::string wrapped,
        WrapDataKey(keyring.active_key(), DataKeyBinding{user_id, active_term, generation},
                    data_key.view()));
    rewrapped.push_back(Rewrapped{user_id, std::move(wrapped)});
  }
  for (const Rewrapped& item : rewrapped) {
    TP_ASSIGN_OR_RETURN(
        Statement update,
        db_->Prepare("UPDATE data_keys SET term = ?1, wrapped_key = ?2 WHERE user_id = ?3"));
    TP_RETURN_IF_ERROR(update.Bind(1, static_cast<int64_t>(active_term)));
    TP_RETURN_IF_ERROR(update.BindBlob(2, item.wrapped));
    TP_RETURN_IF_ERROR(update.Bind(3, absl::string_view(item.user_id)));
    TP_RETURN_IF_ERROR(Run(update));
  }
  if (!rewrapped.empty()) {
    TP_RETURN_IF_ERROR(CountTermUseLocked(active_term, static_cast<int64_t>(rewrapped.size())));
  }
  TP_RETURN_IF_ERROR(transaction.Commit());
  return static_cast<int64_t>(rewrapped.size());
}

absl::StatusOr<std::vector<SecretChange>> SecretStore::ChangesAfter(uint64_t after_sequence,
                                                                    absl::string_view user_id,
                                                                    int limit) {
  absl::MutexLock lock(&mu_);
  std::string sql =
      "SELECT user_id, provider_id, field_id, version, create_time_us, update_time_us, "
      "fingerprint, sequence, kind, change_time_us FROM changes WHERE sequence > ?1";
  if (!user_id.empty()) {
    sql += " AND user_id = ?3";
  }
  sql += " ORDER BY sequence LIMIT ?2";
  TP_ASSIGN_OR_RETURN(Statement statement, db_->Prepare(sql));
  TP_RETURN_IF_ERROR(statement.Bind(1, static_cast<int64_t>(after_sequence)));
  TP_RETURN_IF_ERROR(statement.Bind(2, std::max(limit, 1)));
  if (!user_id.empty()) {
    TP_RETURN_IF_ERROR(statement.Bind(3, user_id));
  }
  std::vector<SecretChange> out;
  while (true) {
    TP_ASSIGN_OR_RETURN(bool row, statement.Step());
    if (!row) {
      break;
    }
    SecretChange change;
    change.secret = MetaFromRow(statement, 0);
    change.sequence = static_cast<uint64_t>(statement.ColumnInt(7));
    change.kind = statement.ColumnInt(8) == static_cast<int64_t>(ChangeKind::kDelete)
                      ? ChangeKind::kDelete
                      : ChangeKind::kPut;
    change.change_time = FromMicros(statement.ColumnInt(9));
    out.push_back(std::move(change));
  }
  return out;
}

absl::StatusOr<uint64_t> SecretStore::OldestRetainedSequence() {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(int64_t oldest, QueryOneInt(*db_, "SELECT min(sequence) FROM changes", {},
                                                  static_cast<int64_t>(latest_sequence_) + 1));
  return static_cast<uint64_t>(oldest);
}

uint64_t SecretStore::LatestSequence() {
  absl::MutexLock lock(&mu_);
  return latest_sequence_;
}

uint64_t SecretStore::WaitForNewer(uint64_t after_sequence, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto newer = [&]()
                   ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return latest_sequence_ > after_sequence; };
  mu_.AwaitWithDeadline(absl::Condition(&newer), deadline);
  return latest_sequence_;
}

}  // namespace tidepool::secrets
