#pragma once

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/clock.h"
#include "lib/sqlite_store.h"

namespace tidepool::auth {

// What a redirect-based sign-in remembers between BeginSignIn and CompleteSignIn.
struct SignInState {
  std::string provider_id;
  // Secret parts, stored sealed (see SignInStateStore).
  std::string nonce;
  std::string code_verifier;
  std::string invite_code;
  // Plain parts.
  std::string return_path;
  std::string timezone;
  std::string source_address;
  absl::Time expire_time;
};

// The values BeginSignIn hands out: `state` goes to the provider in the authorization URL,
// `cookie_value` to the browser as a short-lived HttpOnly cookie.
struct NewSignIn {
  std::string state;
  std::string cookie_value;
  absl::Time expire_time;
};

struct SignInStateStoreOptions {
  // How long a started sign-in may take (SECURITY-TESTS 2.1 #2: at most 15 minutes).
  absl::Duration lifetime = absl::Minutes(10);
  // Unfinished sign-ins one source address may hold at once, and in total.
  int max_per_source = 20;
  int max_total = 10000;
};

// Sign-in states in the auth database, single use and bound to the browser that began them.
//
// Each row is keyed by SHA-256(state) and holds SHA-256(cookie value). The secret parts
// (nonce, PKCE verifier, invite code) are sealed with AES-256-GCM under a key derived from the
// browser's cookie value, with the row key as associated data: a copy of the database alone
// reveals none of them, and a row cannot be moved to another state. Take() deletes the row in
// the same statement that reads it (DELETE ... RETURNING), so a state is used at most once
// even under concurrent callbacks. Thread-safe.
class SignInStateStore {
 public:
  static absl::StatusOr<std::unique_ptr<SignInStateStore>> Open(SqliteDb& db, Clock& clock,
                                                                SignInStateStoreOptions options);

  // Stores a new state with 256-bit random state and cookie values. RESOURCE_EXHAUSTED when
  // the source address or the whole store holds too many unfinished sign-ins.
  absl::StatusOr<NewSignIn> Create(const SignInState& state);

  // Consumes the state: whatever the outcome, the row is gone afterwards. UNAUTHENTICATED,
  // with `*reason` set to "state_missing", "state_unknown" (altered, replayed or purged),
  // "state_expired" or "state_cookie_mismatch" (another browser's state: login CSRF).
  absl::StatusOr<SignInState> Take(absl::string_view state, absl::string_view cookie_value,
                                   std::string* reason);

  // Deletes expired rows; returns how many.
  absl::StatusOr<int> PurgeExpired();

 private:
  SignInStateStore(SqliteDb& db, Clock& clock, SignInStateStoreOptions options)
      : db_(db), clock_(clock), options_(options) {}

  absl::Mutex mu_;
  SqliteDb& db_ ABSL_GUARDED_BY(mu_);
  Clock& clock_;
  const SignInStateStoreOptions options_;
};

}  // namespace tidepool::auth
