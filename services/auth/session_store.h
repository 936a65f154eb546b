#pragma once

#include <cstdint>
#include <memory>
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

namespace tidepool::auth {

// Why sessions were revoked (mirrors tidepool.auth.v1.RevocationReason).
enum class RevokeReason {
  kSignOut = 1,
  kSignOutEverywhere = 2,
  kUserSuspended = 3,
  kRoleChanged = 4,
  kRefreshReuse = 5,
  kAdmin = 6,
};

// One published revocation: either one session, or every session of a user issued before
// `revoke_time`.
struct Revocation {
  uint64_t sequence = 0;
  std::string session_id;  // set for a single session
  std::string user_id;     // set for all of a user's sessions
  RevokeReason reason = RevokeReason::kAdmin;
  absl::Time revoke_time;
  // Every token the revocation concerns has expired by then; watchers may forget it after.
  absl::Time forget_after;
};

// A session as stored.
struct SessionRecord {
  std::string session_id;
  std::string user_id;
  absl::Time create_time;
  absl::Time refresh_expire_time;
  bool revoked = false;
};

// A new or refreshed session: the refresh token is returned once and stored only hashed.
struct SessionSecret {
  SessionRecord session;
  std::string refresh_token;
};

struct SessionStoreOptions {
  // How long a session token (verified locally by proxies) lives; revocations are published
  // at least this long so every proxy hears of them before the tokens could still be used.
  absl::Duration token_lifetime = absl::Minutes(15);
  // How long a session lasts without re-authentication (G19: at most 168 h).
  absl::Duration session_lifetime = absl::Hours(168);
};

// Server-side sessions and the revocation feed behind AuthService.WatchRevocations, over the
// auth service's SQLite database (synchronous=FULL: a revocation, once acknowledged, survives
// a crash). Refresh tokens are single-use and stored as SHA-256 only; presenting a consumed
// refresh token again revokes its whole session (token theft detection).
//
// Thread-safe: owns a mutex over the database handle it is given.
class SessionStore {
 public:
  // Creates the tables if missing. `db` and `clock` must outlive the store.
  static absl::StatusOr<std::unique_ptr<SessionStore>> Open(SqliteDb& db, Clock& clock,
                                                            SessionStoreOptions options);

  // Starts a session for `user_id`. Errors: INVALID_ARGUMENT for an empty user id,
  // UNAVAILABLE if it cannot be stored.
  absl::StatusOr<SessionSecret> Create(absl::string_view user_id);

  // Exchanges a refresh token for a new one on the same session. UNAUTHENTICATED (one
  // generic message) for an unknown, expired or revoked session or a reused token; a reused
  // token also revokes the session (published with kRefreshReuse).
  absl::StatusOr<SessionSecret> Refresh(absl::string_view refresh_token);

  // Revokes one session (idempotent). NOT_FOUND if there is no such session.
  absl::Status Revoke(absl::string_view session_id, RevokeReason reason);

  // Revokes every session of a user and publishes one user-wide revocation. Returns how many
  // live sessions were revoked (0 is fine: the publication still covers tokens in flight).
  absl::StatusOr<int> RevokeAllForUser(absl::string_view user_id, RevokeReason reason);

  // Whether a token for `session_id` of `user_id` issued at `issued_at` is still good: the
  // session exists, is not revoked and has not expired, and no user-wide revocation
  // happened at or after `issued_at`. UNAVAILABLE if the store cannot be read.
  absl::StatusOr<bool> IsActive(absl::string_view session_id, absl::string_view user_id,
                                absl::Time issued_at);

  // The revocations after `after_sequence` that are still relevant (not yet forgettable),
  // oldest first.
  absl::StatusOr<std::vector<Revocation>> RevocationsAfter(uint64_t after_sequence);

  // The newest published sequence (0 if none).
  uint64_t LatestSequence();

  // Blocks until a revocation newer than `after_sequence` is published or `deadline` passes
  // (real time: this is the watch stream's wait). Returns the latest sequence.
  uint64_t WaitForNewer(uint64_t after_sequence, absl::Time deadline);

 private:
  SessionStore(SqliteDb& db, Clock& clock, SessionStoreOptions options)
      : db_(db), clock_(clock), options_(options) {}
  absl::StatusOr<uint64_t> PublishLocked(absl::string_view session_id, absl::string_view user_id,
                                         RevokeReason reason, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RevokeLocked(absl::string_view session_id, RevokeReason reason, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  SqliteDb& db_ ABSL_GUARDED_BY(mu_);
  Clock& clock_;
  const SessionStoreOptions options_;
  absl::Mutex mu_;
  uint64_t latest_sequence_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tidepool::auth
