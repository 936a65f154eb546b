#pragma once

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

namespace tidepool::auth {

enum class UserRole { kUser = 1, kAdmin = 2 };

// A person known to the platform.
struct UserRecord {
  std::string user_id;  // "u_" + 26 base32
  std::string email;    // lower-cased; unique among local accounts
  std::string display_name;
  UserRole role = UserRole::kUser;
  bool suspended = false;
  std::string suspend_reason;
  std::string timezone;  // IANA name, empty until known
  absl::Time create_time;
  std::optional<absl::Time> last_sign_in_time;
  int64_t version = 1;        // bumped on every change, for optimistic concurrency
  std::string password_hash;  // local accounts only; never leaves the service
  // A local account (e-mail and password) rather than one created by a federated sign-in.
  bool local = true;
};

// An external identity linked to an account: (provider_id, subject) is its immutable key.
struct IdentityRecord {
  std::string provider_id;
  std::string kind;
  std::string subject;
  std::string email;  // as last reported; display only, never a key
  absl::Time link_time = absl::InfinitePast();
  std::optional<absl::Time> last_sign_in_time = std::nullopt;
};

// One page of users.
struct UserPage {
  std::vector<UserRecord> users;
  std::string next_page_token;
};

// Users, their local passwords and one-time setup tokens, in the auth database.
// Thread-safe: owns a mutex over the database handle it is given.
class UserStore {
 public:
  // Creates the tables if missing. `db` and `clock` must outlive the store.
  static absl::StatusOr<std::unique_ptr<UserStore>> Open(SqliteDb& db, Clock& clock);

  // Creates a user with a local account. ALREADY_EXISTS if the email is taken,
  // INVALID_ARGUMENT for a malformed email.
  absl::StatusOr<UserRecord> CreateLocalUser(absl::string_view email,
                                             absl::string_view display_name, UserRole role);

  // NOT_FOUND if absent.
  absl::StatusOr<UserRecord> Get(absl::string_view user_id);
  // Finds a local account by e-mail (federated accounts are never found by e-mail).
  absl::StatusOr<UserRecord> FindByEmail(absl::string_view email);

  // The account linked to a provider identity. NOT_FOUND if none.
  absl::StatusOr<UserRecord> FindByIdentity(absl::string_view provider_id,
                                            absl::string_view subject);
  // Creates an account (role user) linked to `identity`, in one transaction. ALREADY_EXISTS
  // if the identity is already linked (a concurrent first sign-in won the race).
  absl::StatusOr<UserRecord> CreateFederatedUser(const IdentityRecord& identity,
                                                 absl::string_view display_name);
  // Records a sign-in through an identity and the e-mail the provider reported.
  absl::Status RecordIdentitySignIn(absl::string_view provider_id, absl::string_view subject,
                                    absl::string_view email);
  absl::StatusOr<std::vector<IdentityRecord>> ListIdentities(absl::string_view user_id);
  // How many users exist.
  absl::StatusOr<int64_t> Count();

  // Users whose email or display name contains `query` (case-insensitive), optionally only
  // one role, ordered by creation. INVALID_ARGUMENT for a bad page token or size.
  // `suspended`, when set, keeps only suspended (true) or active (false) users; the filter is
  // part of the query, so a page is short only at the end.
  absl::StatusOr<UserPage> List(absl::string_view query, std::optional<UserRole> role,
                                int page_size, absl::string_view page_token,
                                std::optional<bool> suspended = std::nullopt);

  // Each change bumps `version`. ABORTED when `expected_version` (non-zero) differs;
  // NOT_FOUND if the user is absent.
  absl::StatusOr<UserRecord> SetRole(absl::string_view user_id, UserRole role,
                                     int64_t expected_version);
  absl::StatusOr<UserRecord> SetSuspended(absl::string_view user_id, bool suspended,
                                          absl::string_view reason);
  // INVALID_ARGUMENT unless `timezone` is a valid IANA name.
  absl::StatusOr<UserRecord> SetTimezone(absl::string_view user_id, absl::string_view timezone);
  absl::Status SetPasswordHash(absl::string_view user_id, absl::string_view password_hash);
  absl::Status RecordSignIn(absl::string_view user_id);

  // Issues a one-time setup token for `user_id`, valid for `lifetime`; the token is returned
  // once and stored only as SHA-256.
  absl::StatusOr<std::string> CreateSetupToken(absl::string_view user_id, absl::Duration lifetime);
  // Consumes a setup token and returns its user. UNAUTHENTICATED (one generic message) for an
  // unknown, used or expired token.
  absl::StatusOr<UserRecord> ConsumeSetupToken(absl::string_view token);

 private:
  UserStore(SqliteDb& db, Clock& clock) : db_(db), clock_(clock) {}
  absl::StatusOr<UserRecord> GetLocked(absl::string_view column, absl::string_view value)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  SqliteDb& db_ ABSL_GUARDED_BY(mu_);
  Clock& clock_;
};

// Lower-cases and checks an email address (one '@', non-empty local part and domain with a
// dot, no spaces or control characters, at most 254 bytes). INVALID_ARGUMENT otherwise.
absl::StatusOr<std::string> NormalizeEmail(absl::string_view email);

// True if `name` is a time zone the system's IANA database knows ("Europe/Berlin", "UTC").
bool IsValidTimezone(absl::string_view name);

}  // namespace tidepool::auth
