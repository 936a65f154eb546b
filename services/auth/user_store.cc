#include "services/auth/user_store.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "lib/crypto/crypto.h"
#include "lib/status_macros.h"
#include "lib/text.h"

namespace tidepool::auth {
namespace {

constexpr absl::string_view kUsersTable =
    "CREATE TABLE IF NOT EXISTS users ("
    "  user_id TEXT PRIMARY KEY,"
    "  email TEXT NOT NULL,"
    "  display_name TEXT NOT NULL,"
    "  role INTEGER NOT NULL,"
    "  suspended INTEGER NOT NULL DEFAULT 0,"
    "  suspend_reason TEXT NOT NULL DEFAULT '',"
    "  timezone TEXT NOT NULL DEFAULT '',"
    "  password_hash TEXT NOT NULL DEFAULT '',"
    "  create_us INTEGER NOT NULL,"
    "  last_sign_in_us INTEGER,"
    "  version INTEGER NOT NULL DEFAULT 1,"
    "  local INTEGER NOT NULL DEFAULT 1);";

// E-mail addresses are unique among local accounts only: a federated account's address is
// whatever its provider reports and is never used to find or join an account.
constexpr absl::string_view kSchema =
    "CREATE UNIQUE INDEX IF NOT EXISTS users_local_email ON users(email) WHERE local = 1;"
    "CREATE TABLE IF NOT EXISTS identities ("
    "  provider_id TEXT NOT NULL,"
    "  subject TEXT NOT NULL,"
    "  user_id TEXT NOT NULL REFERENCES users(user_id),"
    "  kind TEXT NOT NULL,"
    "  email TEXT NOT NULL DEFAULT '',"
    "  link_us INTEGER NOT NULL,"
    "  last_sign_in_us INTEGER,"
    "  PRIMARY KEY (provider_id, subject));"
    "CREATE INDEX IF NOT EXISTS identities_user ON identities(user_id);"
    "CREATE TABLE IF NOT EXISTS setup_tokens ("
    "  token_hash TEXT PRIMARY KEY,"
    "  user_id TEXT NOT NULL,"
    "  expire_us INTEGER NOT NULL,"
    "  used INTEGER NOT NULL DEFAULT 0);";

// Databases created before federated sign-in had a UNIQUE e-mail over all users and no
// `local` column; that table is renamed, recreated from kUsersTable and copied back once,
// keeping every row as a local account.
constexpr absl::string_view kUpgradeUsersV1Copy =
    "INSERT INTO users (user_id, email, display_name, role, suspended, suspend_reason, timezone,"
    "  password_hash, create_us, last_sign_in_us, version, local)"
    "  SELECT user_id, email, display_name, role, suspended, suspend_reason, timezone,"
    "  password_hash, create_us, last_sign_in_us, version, 1 FROM users_v1 ORDER BY rowid;"
    "DROP TABLE users_v1;";

constexpr absl::string_view kColumns =
    "user_id, email, display_name, role, suspended, suspend_reason, timezone, password_hash, "
    "create_us, last_sign_in_us, version, local";

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;

UserRecord ReadUser(const Statement& row) {
  UserRecord user;
  user.user_id = row.ColumnText(0);
  user.email = row.ColumnText(1);
  user.display_name = row.ColumnText(2);
  user.role = row.ColumnInt(3) == static_cast<int64_t>(UserRole::kAdmin) ? UserRole::kAdmin
                                                                         : UserRole::kUser;
  user.suspended = row.ColumnInt(4) != 0;
  user.suspend_reason = row.ColumnText(5);
  user.timezone = row.ColumnText(6);
  user.password_hash = row.ColumnText(7);
  user.create_time = absl::FromUnixMicros(row.ColumnInt(8));
  if (!row.ColumnIsNull(9)) {
    user.last_sign_in_time = absl::FromUnixMicros(row.ColumnInt(9));
  }
  user.version = row.ColumnInt(10);
  user.local = row.ColumnInt(11) != 0;
  return user;
}

}  // namespace

absl::StatusOr<std::string> NormalizeEmail(absl::string_view email) {
  const std::string lower = absl::AsciiStrToLower(email);
  const size_t at = lower.find('@');
  const bool shaped = !lower.empty() && lower.size() <= 254 && at != std::string::npos && at > 0 &&
                      lower.find('@', at + 1) == std::string::npos &&
                      lower.find('.', at) != std::string::npos && lower.back() != '.' &&
                      lower[at + 1] != '.';
  bool clean = true;
  for (unsigned char c : lower) {
    clean = clean && c > 0x20 && c != 0x7f;
  }
  if (!shaped || !clean) {
    return absl::InvalidArgumentError("email must look like name@example.org");
  }
  return lower;
}

bool IsValidTimezone(absl::string_view name) {
  if (name.empty() || name.size() > 64) {
    return false;
  }
  for (char c : name) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '_' || c == '-' ||
          c == '+')) {
      return false;
    }
  }
  if (name.find("..") != absl::string_view::npos || name.front() == '/') {
    return false;
  }
  absl::TimeZone zone;
  return absl::LoadTimeZone(std::string(name), &zone);
}

absl::StatusOr<std::unique_ptr<UserStore>> UserStore::Open(SqliteDb& db, Clock& clock) {
  auto store = std::unique_ptr<UserStore>(new UserStore(db, clock));
  absl::MutexLock lock(&store->mu_);
  int64_t found = 0;
  {
    // Finalized before the schema changes below (an open statement locks the table).
    TP_ASSIGN_OR_RETURN(Statement columns,
                        db.Prepare("SELECT count(*) FROM pragma_table_info('users') WHERE name "
                                   "IN ('user_id', 'local')"));
    TP_RETURN_IF_ERROR(columns.Step().status());
    found = columns.ColumnInt(0);
  }
  TP_ASSIGN_OR_RETURN(Transaction txn, db.Begin());
  if (found == 1) {
    TP_RETURN_IF_ERROR(db.Exec("ALTER TABLE users RENAME TO users_v1;"));
    TP_RETURN_IF_ERROR(db.Exec(kUsersTable));
    TP_RETURN_IF_ERROR(db.Exec(kUpgradeUsersV1Copy));
  } else {
    TP_RETURN_IF_ERROR(db.Exec(kUsersTable));
  }
  TP_RETURN_IF_ERROR(db.Exec(kSchema));
  TP_RETURN_IF_ERROR(txn.Commit());
  return store;
}

absl::StatusOr<UserRecord> UserStore::CreateLocalUser(absl::string_view email,
                                                      absl::string_view display_name,
                                                      UserRole role) {
  TP_ASSIGN_OR_RETURN(std::string normalized, NormalizeEmail(email));
  UserRecord user;
  TP_ASSIGN_OR_RETURN(user.user_id, NewRandomId("u_"));
  user.email = normalized;
  user.display_name =
      display_name.empty() ? normalized.substr(0, normalized.find('@')) : std::string(display_name);
  user.role = role;
  user.create_time = clock_.Now();
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement insert,
                      db_.Prepare("INSERT INTO users (user_id, email, display_name, role, "
                                  "create_us) VALUES (?, ?, ?, ?, ?)"));
  TP_RETURN_IF_ERROR(insert.Bind(1, absl::string_view(user.user_id)));
  TP_RETURN_IF_ERROR(insert.Bind(2, absl::string_view(user.email)));
  TP_RETURN_IF_ERROR(insert.Bind(3, absl::string_view(user.display_name)));
  TP_RETURN_IF_ERROR(insert.Bind(4, static_cast<int64_t>(role)));
  TP_RETURN_IF_ERROR(insert.Bind(5, absl::ToUnixMicros(user.create_time)));
  absl::Status inserted = insert.Step().status();
  if (inserted.code() == absl::StatusCode::kAlreadyExists) {
    return absl::AlreadyExistsError("a user with that email already exists");
  }
  TP_RETURN_IF_ERROR(inserted);
  return user;
}

absl::StatusOr<UserRecord> UserStore::GetLocked(absl::string_view column, absl::string_view value) {
  TP_ASSIGN_OR_RETURN(
      Statement select,
      db_.Prepare(absl::StrCat("SELECT ", kColumns, " FROM users WHERE ", column, " = ?")));
  TP_RETURN_IF_ERROR(select.Bind(1, value));
  TP_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) {
    return absl::NotFoundError("no such user");
  }
  return ReadUser(select);
}

absl::StatusOr<UserRecord> UserStore::Get(absl::string_view user_id) {
  absl::MutexLock lock(&mu_);
  return GetLocked("user_id", user_id);
}

absl::StatusOr<UserRecord> UserStore::FindByEmail(absl::string_view email) {
  absl::StatusOr<std::string> normalized = NormalizeEmail(email);
  if (!normalized.ok()) {
    return absl::NotFoundError("no such user");
  }
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(
      Statement select,
      db_.Prepare(absl::StrCat("SELECT ", kColumns, " FROM users WHERE email = ? AND local = 1")));
  TP_RETURN_IF_ERROR(select.Bind(1, absl::string_view(*normalized)));
  TP_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) {
    return absl::NotFoundError("no such user");
  }
  return ReadUser(select);
}

absl::StatusOr<UserRecord> UserStore::FindByIdentity(absl::string_view provider_id,
                                                     absl::string_view subject) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement select,
                      db_.Prepare("SELECT user_id FROM identities WHERE provider_id = ? AND "
                                  "subject = ?"));
  TP_RETURN_IF_ERROR(select.Bind(1, provider_id));
  TP_RETURN_IF_ERROR(select.Bind(2, subject));
  TP_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) {
    return absl::NotFoundError("no account is linked to this identity");
  }
  const std::string user_id = select.ColumnText(0);
  return GetLocked("user_id", user_id);
}

absl::StatusOr<UserRecord> UserStore::CreateFederatedUser(const IdentityRecord& identity,
                                                          absl::string_view display_name) {
  if (identity.provider_id.empty() || identity.subject.empty() || identity.subject.size() > 512 ||
      identity.email.size() > 320) {
    return absl::InvalidArgumentError("the identity is incomplete or oversized");
  }
  UserRecord user;
  TP_ASSIGN_OR_RETURN(user.user_id, NewRandomId("u_"));
  user.email = absl::AsciiStrToLower(identity.email);
  user.display_name = std::string(display_name.substr(0, 128));
  if (user.display_name.empty()) {
    user.display_name = user.email.empty() ? std::string("New user")
                                           : user.email.substr(0, user.email.find('@'));
  }
  user.role = UserRole::kUser;
  user.create_time = clock_.Now();
  user.local = false;
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Transaction txn, db_.Begin());
  TP_ASSIGN_OR_RETURN(Statement insert,
                      db_.Prepare("INSERT INTO users (user_id, email, display_name, role, "
                                  "create_us, local) VALUES (?, ?, ?, ?, ?, 0)"));
  TP_RETURN_IF_ERROR(insert.Bind(1, absl::string_view(user.user_id)));
  TP_RETURN_IF_ERROR(insert.Bind(2, absl::string_view(user.email)));
  TP_RETURN_IF_ERROR(insert.Bind(3, absl::string_view(user.display_name)));
  TP_RETURN_IF_ERROR(insert.Bind(4, static_cast<int64_t>(user.role)));
  TP_RETURN_IF_ERROR(insert.Bind(5, absl::ToUnixMicros(user.create_time)));
  TP_RETURN_IF_ERROR(insert.Step().status());
  TP_ASSIGN_OR_RETURN(Statement link,
                      db_.Prepare("INSERT INTO identities (provider_id, subject, user_id, kind, "
                                  "email, link_us) VALUES (?, ?, ?, ?, ?, ?)"));
  TP_RETURN_IF_ERROR(link.Bind(1, absl::string_view(identity.provider_id)));
  TP_RETURN_IF_ERROR(link.Bind(2, absl::string_view(identity.subject)));
  TP_RETURN_IF_ERROR(link.Bind(3, absl::string_view(user.user_id)));
  TP_RETURN_IF_ERROR(link.Bind(4, absl::string_view(identity.kind)));
  TP_RETURN_IF_ERROR(link.Bind(5, absl::string_view(identity.email)));
  TP_RETURN_IF_ERROR(link.Bind(6, absl::ToUnixMicros(user.create_time)));
  absl::Status linked = link.Step().status();
  if (linked.code() == absl::StatusCode::kAlreadyExists) {
    return absl::AlreadyExistsError("this identity is already linked to an account");
  }
  TP_RETURN_IF_ERROR(linked);
  TP_RETURN_IF_ERROR(txn.Commit());
  return user;
}

absl::Status UserStore::RecordIdentitySignIn(absl::string_view provider_id,
                                             absl::string_view subject, absl::string_view email) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement update,
                      db_.Prepare("UPDATE identities SET email = ?, last_sign_in_us = ? WHERE "
                                  "provider_id = ? AND subject = ?"));
  TP_RETURN_IF_ERROR(update.Bind(1, email.substr(0, 320)));
  TP_RETURN_IF_ERROR(update.Bind(2, absl::ToUnixMicros(clock_.Now())));
  TP_RETURN_IF_ERROR(update.Bind(3, provider_id));
  TP_RETURN_IF_ERROR(update.Bind(4, subject));
  return update.Step().status();
}

absl::StatusOr<std::vector<IdentityRecord>> UserStore::ListIdentities(absl::string_view user_id) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement select,
                      db_.Prepare("SELECT provider_id, subject, kind, email, link_us, "
                                  "last_sign_in_us FROM identities WHERE user_id = ? ORDER BY "
                                  "link_us"));
  TP_RETURN_IF_ERROR(select.Bind(1, user_id));
  std::vector<IdentityRecord> out;
  for (;;) {
    TP_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    IdentityRecord identity;
    identity.provider_id = select.ColumnText(0);
    identity.subject = select.ColumnText(1);
    identity.kind = select.ColumnText(2);
    identity.email = select.ColumnText(3);
    identity.link_time = absl::FromUnixMicros(select.ColumnInt(4));
    if (!select.ColumnIsNull(5)) {
      identity.last_sign_in_time = absl::FromUnixMicros(select.ColumnInt(5));
    }
    out.push_back(std::move(identity));
  }
  return out;
}

absl::StatusOr<int64_t> UserStore::Count() {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement count, db_.Prepare("SELECT count(*) FROM users"));
  TP_ASSIGN_OR_RETURN(bool row, count.Step());
  return row ? count.ColumnInt(0) : 0;
}

absl::StatusOr<UserPage> UserStore::List(absl::string_view query, std::optional<UserRole> role,
                                         int page_size, absl::string_view page_token,
                                         std::optional<bool> suspended) {
  if (page_size < 0) {
    return absl::InvalidArgumentError("page_size must not be negative");
  }
  page_size = page_size == 0 ? kDefaultPageSize : std::min(page_size, kMaxPageSize);
  int64_t after = 0;
  if (!page_token.empty() && !absl::SimpleAtoi(page_token, &after)) {
    return absl::InvalidArgumentError("page_token is invalid");
  }
  if (query.size() > 256) {
    return absl::InvalidArgumentError("query is at most 256 bytes");
  }
  // instr() (not LIKE) so '%' and '_' in a query are plain characters.
  std::string sql =
      absl::StrCat("SELECT ", kColumns,
                   ", rowid FROM users WHERE rowid > ? AND "
                   "(instr(lower(email), ?) > 0 OR instr(lower(display_name), ?) > 0)");
  if (role.has_value()) {
    absl::StrAppend(&sql, " AND role = ", static_cast<int>(*role));
  }
  if (suspended.has_value()) {
    absl::StrAppend(&sql, " AND suspended = ", *suspended ? 1 : 0);
  }
  absl::StrAppend(&sql, " ORDER BY rowid LIMIT ?");
  const std::string needle = absl::AsciiStrToLower(query);
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement select, db_.Prepare(sql));
  TP_RETURN_IF_ERROR(select.Bind(1, after));
  TP_RETURN_IF_ERROR(select.Bind(2, absl::string_view(needle)));
  TP_RETURN_IF_ERROR(select.Bind(3, absl::string_view(needle)));
  TP_RETURN_IF_ERROR(select.Bind(4, page_size + 1));
  UserPage page;
  int64_t last_rowid = 0;
  for (;;) {
    TP_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) {
      break;
    }
    if (static_cast<int>(page.users.size()) == page_size) {
      page.next_page_token = absl::StrCat(last_rowid);
      break;
    }
    page.users.push_back(ReadUser(select));
    last_rowid = select.ColumnInt(12);
  }
  return page;
}

absl::StatusOr<UserRecord> UserStore::SetRole(absl::string_view user_id, UserRole role,
                                              int64_t expected_version) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(UserRecord user, GetLocked("user_id", user_id));
  if (expected_version != 0 && expected_version != user.version) {
    return absl::AbortedError("the user changed since it was read; read it again");
  }
  TP_ASSIGN_OR_RETURN(Statement update, db_.Prepare("UPDATE users SET role = ?, version = "
                                                    "version + 1 WHERE user_id = ?"));
  TP_RETURN_IF_ERROR(update.Bind(1, static_cast<int64_t>(role)));
  TP_RETURN_IF_ERROR(update.Bind(2, user_id));
  TP_RETURN_IF_ERROR(update.Step().status());
  return GetLocked("user_id", user_id);
}

absl::StatusOr<UserRecord> UserStore::SetSuspended(absl::string_view user_id, bool suspended,
                                                   absl::string_view reason) {
  absl::MutexLock lock(&mu_);
  TP_RETURN_IF_ERROR(GetLocked("user_id", user_id).status());
  TP_ASSIGN_OR_RETURN(Statement update,
                      db_.Prepare("UPDATE users SET suspended = ?, suspend_reason = ?, version = "
                                  "version + 1 WHERE user_id = ?"));
  TP_RETURN_IF_ERROR(update.Bind(1, suspended ? 1 : 0));
  TP_RETURN_IF_ERROR(update.Bind(2, suspended ? reason : absl::string_view()));
  TP_RETURN_IF_ERROR(update.Bind(3, user_id));
  TP_RETURN_IF_ERROR(update.Step().status());
  return GetLocked("user_id", user_id);
}

absl::StatusOr<UserRecord> UserStore::SetTimezone(absl::string_view user_id,
                                                  absl::string_view timezone) {
  if (!IsValidTimezone(timezone)) {
    return absl::InvalidArgumentError("timezone must be an IANA time zone such as Europe/Berlin");
  }
  absl::MutexLock lock(&mu_);
  TP_RETURN_IF_ERROR(GetLocked("user_id", user_id).status());
  TP_ASSIGN_OR_RETURN(Statement update, db_.Prepare("UPDATE users SET timezone = ?, version = "
                                                    "version + 1 WHERE user_id = ?"));
  TP_RETURN_IF_ERROR(update.Bind(1, timezone));
  TP_RETURN_IF_ERROR(update.Bind(2, user_id));
  TP_RETURN_IF_ERROR(update.Step().status());
  return GetLocked("user_id", user_id);
}

absl::Status UserStore::SetPasswordHash(absl::string_view user_id,
                                        absl::string_view password_hash) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement update, db_.Prepare("UPDATE users SET password_hash = ?, "
                                                    "version = version + 1 WHERE user_id = ?"));
  TP_RETURN_IF_ERROR(update.Bind(1, password_hash));
  TP_RETURN_IF_ERROR(update.Bind(2, user_id));
  TP_RETURN_IF_ERROR(update.Step().status());
  return db_.Changes() == 1 ? absl::OkStatus() : absl::NotFoundError("no such user");
}

absl::Status UserStore::RecordSignIn(absl::string_view user_id) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement update,
                      db_.Prepare("UPDATE users SET last_sign_in_us = ? WHERE user_id = ?"));
  TP_RETURN_IF_ERROR(update.Bind(1, absl::ToUnixMicros(clock_.Now())));
  TP_RETURN_IF_ERROR(update.Bind(2, user_id));
  return update.Step().status();
}

absl::StatusOr<std::string> UserStore::CreateSetupToken(absl::string_view user_id,
                                                        absl::Duration lifetime) {
  TP_ASSIGN_OR_RETURN(std::string random, crypto::RandomBytes(32));
  const std::string token = absl::StrCat("tps_", Base32Lower(random));
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement insert, db_.Prepare("INSERT INTO setup_tokens (token_hash, "
                                                    "user_id, expire_us) VALUES (?, ?, ?)"));
  TP_RETURN_IF_ERROR(insert.Bind(1, absl::string_view(crypto::HexEncode(crypto::Sha256(token)))));
  TP_RETURN_IF_ERROR(insert.Bind(2, user_id));
  TP_RETURN_IF_ERROR(insert.Bind(3, absl::ToUnixMicros(clock_.Now() + lifetime)));
  TP_RETURN_IF_ERROR(insert.Step().status());
  return token;
}

absl::StatusOr<UserRecord> UserStore::ConsumeSetupToken(absl::string_view token) {
  const absl::Status invalid = absl::UnauthenticatedError("the setup link is not valid");
  if (token.size() > 128) {
    return invalid;
  }
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Transaction txn, db_.Begin());
  TP_ASSIGN_OR_RETURN(Statement consume,
                      db_.Prepare("UPDATE setup_tokens SET used = 1 WHERE token_hash = ? AND "
                                  "used = 0 AND expire_us > ? RETURNING user_id"));
  TP_RETURN_IF_ERROR(consume.Bind(1, absl::string_view(crypto::HexEncode(crypto::Sha256(token)))));
  TP_RETURN_IF_ERROR(consume.Bind(2, absl::ToUnixMicros(clock_.Now())));
  TP_ASSIGN_OR_RETURN(bool found, consume.Step());
  if (!found) {
    return invalid;
  }
  const std::string user_id = consume.ColumnText(0);
  TP_ASSIGN_OR_RETURN(bool more, consume.Step());
  (void)more;
  TP_ASSIGN_OR_RETURN(UserRecord user, GetLocked("user_id", user_id));
  TP_RETURN_IF_ERROR(txn.Commit());
  return user;
}

}  // namespace tidepool::auth
