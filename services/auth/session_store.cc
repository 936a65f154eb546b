#include "services/auth/session_store.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "lib/crypto/crypto.h"
#include "lib/status_macros.h"
#include "lib/text.h"

namespace tidepool::auth {
namespace {

constexpr absl::string_view kSchema =
    "CREATE TABLE IF NOT EXISTS sessions ("
    "  session_id TEXT PRIMARY KEY,"
    "  user_id TEXT NOT NULL,"
    "  refresh_hash TEXT NOT NULL UNIQUE,"
    "  previous_refresh_hash TEXT,"
    "  create_us INTEGER NOT NULL,"
    "  expire_us INTEGER NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_id);"
    "CREATE INDEX IF NOT EXISTS sessions_previous ON sessions(previous_refresh_hash);"
    "CREATE TABLE IF NOT EXISTS revocations ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  session_id TEXT NOT NULL,"
    "  user_id TEXT NOT NULL,"
    "  reason INTEGER NOT NULL,"
    "  revoke_us INTEGER NOT NULL,"
    "  forget_us INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS revocations_user ON revocations(user_id, revoke_us);";

constexpr absl::string_view kInvalidRefresh = "the refresh token is not valid";

std::string HashToken(absl::string_view token) { return crypto::HexEncode(crypto::Sha256(token)); }

}  // namespace

absl::StatusOr<std::unique_ptr<SessionStore>> SessionStore::Open(SqliteDb& db, Clock& clock,
                                                                 SessionStoreOptions options) {
  auto store = std::unique_ptr<SessionStore>(new SessionStore(db, clock, options));
  absl::MutexLock lock(&store->mu_);
  TP_RETURN_IF_ERROR(db.Exec(kSchema));
  TP_ASSIGN_OR_RETURN(Statement latest, db.Prepare("SELECT max(seq) FROM revocations"));
  TP_ASSIGN_OR_RETURN(bool row, latest.Step());
  store->latest_sequence_ =
      row && !latest.ColumnIsNull(0) ? static_cast<uint64_t>(latest.ColumnInt(0)) : 0;
  return store;
}

absl::StatusOr<SessionSecret> SessionStore::Create(absl::string_view user_id) {
  if (user_id.empty()) {
    return absl::InvalidArgumentError("user_id is required");
  }
  SessionSecret secret;
  TP_ASSIGN_OR_RETURN(secret.session.session_id, NewRandomId("s_"));
  TP_ASSIGN_OR_RETURN(secret.refresh_token, NewRandomId("tpr_", 32));
  const absl::Time now = clock_.Now();
  secret.session.user_id = std::string(user_id);
  secret.session.create_time = now;
  secret.session.refresh_expire_time = now + options_.session_lifetime;
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement insert,
                      db_.Prepare("INSERT INTO sessions (session_id, user_id, refresh_hash, "
                                  "create_us, expire_us) VALUES (?, ?, ?, ?, ?)"));
  TP_RETURN_IF_ERROR(insert.Bind(1, absl::string_view(secret.session.session_id)));
  TP_RETURN_IF_ERROR(insert.Bind(2, user_id));
  TP_RETURN_IF_ERROR(insert.Bind(3, absl::string_view(HashToken(secret.refresh_token))));
  TP_RETURN_IF_ERROR(insert.Bind(4, absl::ToUnixMicros(now)));
  TP_RETURN_IF_ERROR(insert.Bind(5, absl::ToUnixMicros(secret.session.refresh_expire_time)));
  TP_RETURN_IF_ERROR(insert.Step().status());
  return secret;
}

absl::StatusOr<SessionSecret> SessionStore::Refresh(absl::string_view refresh_token) {
  if (refresh_token.empty() || refresh_token.size() > 128) {
    return absl::UnauthenticatedError(kInvalidRefresh);
  }
  const std::string hash = HashToken(refresh_token);
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Transaction txn, db_.Begin());
  // A consumed token presented again: somebody holds a copy. Revoke the session.
  {
    TP_ASSIGN_OR_RETURN(
        Statement reused,
        db_.Prepare("SELECT session_id FROM sessions WHERE previous_refresh_hash = ?"));
    TP_RETURN_IF_ERROR(reused.Bind(1, absl::string_view(hash)));
    TP_ASSIGN_OR_RETURN(bool found, reused.Step());
    if (found) {
      const std::string session_id = reused.ColumnText(0);
      TP_RETURN_IF_ERROR(RevokeLocked(session_id, RevokeReason::kRefreshReuse, now));
      TP_RETURN_IF_ERROR(txn.Commit());
      return absl::UnauthenticatedError(kInvalidRefresh);
    }
  }
  TP_ASSIGN_OR_RETURN(Statement find,
                      db_.Prepare("SELECT session_id, user_id, create_us, expire_us, revoked "
                                  "FROM sessions WHERE refresh_hash = ?"));
  TP_RETURN_IF_ERROR(find.Bind(1, absl::string_view(hash)));
  TP_ASSIGN_OR_RETURN(bool found, find.Step());
  if (!found || find.ColumnInt(4) != 0 || absl::FromUnixMicros(find.ColumnInt(3)) <= now) {
    return absl::UnauthenticatedError(kInvalidRefresh);
  }
  SessionSecret secret;
  secret.session.session_id = find.ColumnText(0);
  secret.session.user_id = find.ColumnText(1);
  secret.session.create_time = absl::FromUnixMicros(find.ColumnInt(2));
  secret.session.refresh_expire_time = absl::FromUnixMicros(find.ColumnInt(3));
  TP_ASSIGN_OR_RETURN(secret.refresh_token, NewRandomId("tpr_", 32));
  TP_ASSIGN_OR_RETURN(Statement rotate,
                      db_.Prepare("UPDATE sessions SET previous_refresh_hash = refresh_hash, "
                                  "refresh_hash = ? WHERE session_id = ? AND refresh_hash = ?"));
  TP_RETURN_IF_ERROR(rotate.Bind(1, absl::string_view(HashToken(secret.refresh_token))));
  TP_RETURN_IF_ERROR(rotate.Bind(2, absl::string_view(secret.session.session_id)));
  TP_RETURN_IF_ERROR(rotate.Bind(3, absl::string_view(hash)));
  TP_RETURN_IF_ERROR(rotate.Step().status());
  if (db_.Changes() != 1) {
    return absl::UnauthenticatedError(kInvalidRefresh);
  }
  TP_RETURN_IF_ERROR(txn.Commit());
  return secret;
}

absl::StatusOr<uint64_t> SessionStore::PublishLocked(absl::string_view session_id,
                                                     absl::string_view user_id, RevokeReason reason,
                                                     absl::Time now) {
  // Session tokens issued up to now expire within token_lifetime; keep the entry that long
  // (plus a minute of slack for clock skew between services).
  const absl::Time forget = now + options_.token_lifetime + absl::Minutes(1);
  TP_ASSIGN_OR_RETURN(Statement insert,
                      db_.Prepare("INSERT INTO revocations (session_id, user_id, reason, "
                                  "revoke_us, forget_us) VALUES (?, ?, ?, ?, ?)"));
  TP_RETURN_IF_ERROR(insert.Bind(1, session_id));
  TP_RETURN_IF_ERROR(insert.Bind(2, user_id));
  TP_RETURN_IF_ERROR(insert.Bind(3, static_cast<int64_t>(reason)));
  TP_RETURN_IF_ERROR(insert.Bind(4, absl::ToUnixMicros(now)));
  TP_RETURN_IF_ERROR(insert.Bind(5, absl::ToUnixMicros(forget)));
  TP_RETURN_IF_ERROR(insert.Step().status());
  const auto sequence = static_cast<uint64_t>(db_.LastInsertRowId());
  // Watchers woken for a sequence whose transaction then fails find nothing newer and wait
  // again; publishing before commit never hides a revocation.
  latest_sequence_ = std::max(latest_sequence_, sequence);
  return sequence;
}

absl::Status SessionStore::RevokeLocked(absl::string_view session_id, RevokeReason reason,
                                        absl::Time now) {
  TP_ASSIGN_OR_RETURN(Statement revoke,
                      db_.Prepare("UPDATE sessions SET revoked = 1 WHERE session_id = ?"));
  TP_RETURN_IF_ERROR(revoke.Bind(1, session_id));
  TP_RETURN_IF_ERROR(revoke.Step().status());
  TP_RETURN_IF_ERROR(PublishLocked(session_id, "", reason, now).status());
  return absl::OkStatus();
}

absl::Status SessionStore::Revoke(absl::string_view session_id, RevokeReason reason) {
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Transaction txn, db_.Begin());
  TP_ASSIGN_OR_RETURN(Statement find,
                      db_.Prepare("SELECT revoked FROM sessions WHERE session_id = ?"));
  TP_RETURN_IF_ERROR(find.Bind(1, session_id));
  TP_ASSIGN_OR_RETURN(bool found, find.Step());
  if (!found) {
    return absl::NotFoundError("no such session");
  }
  if (find.ColumnInt(0) != 0) {
    return absl::OkStatus();
  }
  TP_RETURN_IF_ERROR(RevokeLocked(session_id, reason, now));
  return txn.Commit();
}

absl::StatusOr<int> SessionStore::RevokeAllForUser(absl::string_view user_id, RevokeReason reason) {
  if (user_id.empty()) {
    return absl::InvalidArgumentError("user_id is required");
  }
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Transaction txn, db_.Begin());
  TP_ASSIGN_OR_RETURN(Statement revoke, db_.Prepare("UPDATE sessions SET revoked = 1 "
                                                    "WHERE user_id = ? AND revoked = 0"));
  TP_RETURN_IF_ERROR(revoke.Bind(1, user_id));
  TP_RETURN_IF_ERROR(revoke.Step().status());
  const int revoked = db_.Changes();
  TP_RETURN_IF_ERROR(PublishLocked("", user_id, reason, now).status());
  TP_RETURN_IF_ERROR(txn.Commit());
  return revoked;
}

absl::StatusOr<bool> SessionStore::IsActive(absl::string_view session_id, absl::string_view user_id,
                                            absl::Time issued_at) {
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement find, db_.Prepare("SELECT user_id, expire_us, revoked FROM "
                                                  "sessions WHERE session_id = ?"));
  TP_RETURN_IF_ERROR(find.Bind(1, session_id));
  TP_ASSIGN_OR_RETURN(bool found, find.Step());
  if (!found || find.ColumnText(0) != user_id || find.ColumnInt(2) != 0 ||
      absl::FromUnixMicros(find.ColumnInt(1)) <= now) {
    return false;
  }
  TP_ASSIGN_OR_RETURN(Statement user_wide,
                      db_.Prepare("SELECT 1 FROM revocations WHERE user_id = ? AND revoke_us >= ? "
                                  "LIMIT 1"));
  TP_RETURN_IF_ERROR(user_wide.Bind(1, user_id));
  TP_RETURN_IF_ERROR(user_wide.Bind(2, absl::ToUnixMicros(issued_at)));
  TP_ASSIGN_OR_RETURN(bool revoked_since, user_wide.Step());
  return !revoked_since;
}

absl::StatusOr<std::vector<Revocation>> SessionStore::RevocationsAfter(uint64_t after_sequence) {
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement select,
                      db_.Prepare("SELECT seq, session_id, user_id, reason, revoke_us, forget_us "
                                  "FROM revocations WHERE seq > ? AND forget_us > ? ORDER BY seq"));
  TP_RETURN_IF_ERROR(select.Bind(1, static_cast<int64_t>(after_sequence)));
  TP_RETURN_IF_ERROR(select.Bind(2, absl::ToUnixMicros(now)));
  std::vector<Revocation> out;
  for (;;) {
    TP_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) {
      break;
    }
    Revocation revocation;
    revocation.sequence = static_cast<uint64_t>(select.ColumnInt(0));
    revocation.session_id = select.ColumnText(1);
    revocation.user_id = select.ColumnText(2);
    revocation.reason = static_cast<RevokeReason>(select.ColumnInt(3));
    revocation.revoke_time = absl::FromUnixMicros(select.ColumnInt(4));
    revocation.forget_after = absl::FromUnixMicros(select.ColumnInt(5));
    out.push_back(std::move(revocation));
  }
  return out;
}

uint64_t SessionStore::LatestSequence() {
  absl::MutexLock lock(&mu_);
  return latest_sequence_;
}

uint64_t SessionStore::WaitForNewer(uint64_t after_sequence, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto newer = [&]()
                   ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return latest_sequence_ > after_sequence; };
  mu_.AwaitWithDeadline(absl::Condition(&newer), deadline);
  return latest_sequence_;
}

}  // namespace tidepool::auth
