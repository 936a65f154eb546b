#pragma once

// Invite codes for creating accounts (AuthService.CreateInvite / ListInvites / RevokeInvite
// and the redemption inside CompleteSignIn), over the auth service's SQLite database, plus
// the guessing throttle that guards redemption.
//
// Codes: "tpi_" + 32 lowercase base32 characters encoding 20 random bytes (160 bits, above
// the 128-bit minimum of SECURITY-TESTS G20). A code is returned once, by Create, and stored
// only as the hex SHA-256 of its lowercase form (a high-entropy code needs no slow hash);
// lookups go through an index on that hash and finish with a constant-time comparison.
// Admins tell invites apart by a fingerprint: the first 16 hex characters of
// HMAC-SHA256(fingerprint key, code), which matches audit records without revealing the code.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>
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

inline constexpr absl::string_view kInviteCodePrefix = "tpi_";
inline constexpr size_t kInviteCodeSize = 36;  // prefix + 32 base32 characters
inline constexpr absl::string_view kInviteIdPrefix = "inv_";
inline constexpr size_t kInviteIdSize = 30;  // prefix + 26 base32 characters
inline constexpr int kMaxInviteUses = 10000;
inline constexpr absl::Duration kMaxInviteLifetime = absl::Hours(24 * 90);
inline constexpr size_t kMaxInviteNoteBytes = 256;
inline constexpr size_t kInviteFingerprintSize = 16;  // hex characters

// What an admin asks for when creating an invite.
struct InviteSpec {
  // How many accounts may be created with the code: 1..kMaxInviteUses.
  int max_uses = 1;
  // When the code stops working: after now, and at most kMaxInviteLifetime ahead. (The RPC
  // layer turns an unset expiry into its default before calling Create.)
  absl::Time expire_time = absl::InfinitePast();
  // At most one binding may be set. bound_email: only a sign-in whose verified e-mail equals
  // it (case-insensitive). bound_domain: only a sign-in whose verified e-mail's domain (the
  // part after the last '@') equals it (case-insensitive), e.g. "example.com". Both are
  // stored lower case.
  std::string bound_email;
  std::string bound_domain;
  // Free text for admins: at most kMaxInviteNoteBytes of printable UTF-8 (no control
  // characters).
  std::string note;
  // The admin who created it; empty when created by tidepoolctl.
  std::string created_by_user_id;
};

// An invite's lifecycle state at the time the record was read (mirrors
// tidepool.auth.v1.InviteState). When several apply, the first of revoked, used up, expired
// wins.
enum class InviteState {
  kActive,
  kExpired,
  kUsedUp,
  kRevoked,
};

// An invite's metadata as stored. Never contains the code.
struct InviteRecord {
  std::string invite_id;  // "inv_" + 26 base32 characters; not derived from the code
  int max_uses = 0;
  int use_count = 0;
  absl::Time create_time;
  absl::Time expire_time;
  std::string bound_email;   // lower case, or empty
  std::string bound_domain;  // lower case, or empty
  std::string note;
  std::string created_by;
  bool revoked = false;
  absl::Time revoke_time;  // the Unix epoch unless revoked
  std::string code_fingerprint;
  InviteState state = InviteState::kActive;
};

// One page of List.
struct InvitePage {
  std::vector<InviteRecord> invites;  // newest first
  std::string next_page_token;        // empty on the last page
};

// Why a redemption ended as it did: for the caller's audit record and metrics, never for the
// client (every failure except kThrottled and kStoreError looks the same to the client).
enum class RedeemOutcome {
  kRedeemed,
  kThrottled,      // RESOURCE_EXHAUSTED; the code was not looked at
  kMalformedCode,  // not "tpi_" + 32 base32 characters
  kUnknownCode,    // no invite has this code
  kRevoked,
  kExpired,
  kUsedUp,          // use_count reached max_uses (including losing a race for the last use)
  kEmailMismatch,   // bound to another e-mail
  kDomainMismatch,  // bound to another domain
  kStoreError,      // the database failed; the status says how (UNAVAILABLE, INTERNAL, ...)
};

// A stable lower_snake_case name for `outcome` ("redeemed", "unknown_code", ...), for audit
// records and metric labels.
absl::string_view RedeemOutcomeName(RedeemOutcome outcome);

// The caller-side account of one Redeem call; see InviteStore::Redeem.
struct RedeemDetails {
  RedeemOutcome outcome = RedeemOutcome::kStoreError;
  // The invite the code belongs to, when it matched one (empty for unknown or malformed
  // codes and when throttled).
  std::string invite_id;
  // The fingerprint of the presented code when it was well-formed (whether or not it
  // exists), so audit can correlate attempts without storing the code.
  std::string code_fingerprint;
};

struct GuessThrottleOptions {
  // Failed redemptions allowed within any `window`, per source address, per target (the
  // e-mail trying to redeem) and across the whole process. Values below 1 block everything.
  int max_failures_per_address = 10;
  int max_failures_per_target = 10;
  int max_failures_global = 100;
  absl::Duration window = absl::Minutes(1);
};

// A sliding-window limiter of failed invite redemptions (guesses), driven by an injected
// Clock. Admit reserves a slot in every applicable window before the code is even looked at;
// a redemption that succeeds (or fails for a reason other than a bad guess) gives its slot
// back with Forgive, so only failures count. Reserving up front keeps the limit exact under
// concurrency: at most the configured number of failures are evaluated in any window.
//
// The limit is per process: replicas each keep their own windows (the global cap bounds
// what a distributed guesser gains from that).
//
// Memory is bounded: only admitted attempts create entries, each window holds at most its
// limit, and entries older than the window are swept at least once per window, so at most
// about 2 * 2 * max_failures_global keys are tracked.
//
// Thread-safe. `clock` must outlive the throttle.
class GuessThrottle {
 public:
  // One admitted attempt, to hand back to Forgive.
  struct Attempt {
    std::string address_key;
    std::string target_key;  // empty when there was no target
    absl::Time time;
  };

  explicit GuessThrottle(Clock& clock, GuessThrottleOptions options = GuessThrottleOptions());

  // Reserves one failure slot for `source_address` and `target` (case-insensitive; empty
  // means no per-target limit) in each window.
  // Errors: RESOURCE_EXHAUSTED if the address, the target or the process already has the
  // maximum number of failures within the window; nothing is reserved then.
  absl::StatusOr<Attempt> Admit(absl::string_view source_address, absl::string_view target);

  // Releases the slots `attempt` reserved (the attempt was not a failed guess). Call it at
  // most once per attempt; after the attempt's window has passed it has no effect.
  void Forgive(const Attempt& attempt);

  // The number of per-address and per-target windows currently held (for tests and metrics).
  size_t TrackedKeys();

 private:
  void PruneLocked(std::deque<absl::Time>& times, absl::Time cutoff)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SweepLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveOneLocked(const std::string& key, absl::Time time) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Clock& clock_;
  const GuessThrottleOptions options_;
  absl::Mutex mu_;
  // Times of reserved failures, oldest first; the key is "a:" + address or "t:" + target.
  std::unordered_map<std::string, std::deque<absl::Time>> windows_ ABSL_GUARDED_BY(mu_);
  std::deque<absl::Time> global_ ABSL_GUARDED_BY(mu_);
  absl::Time last_sweep_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

struct InviteStoreOptions {
  // Create fails RESOURCE_EXHAUSTED while this many invites are active. 0 means no limit.
  int max_active_invites = 1000;
};

// Invite codes in the table `invites` of the auth database.
//
// Schema: InitSchema creates the table and its indexes with CREATE TABLE/INDEX IF NOT
// EXISTS, so it is safe to run at every start and needs no migration version of its own;
// a caller that versions its schema can instead put SchemaSql() into one of its own
// Migrations. Either must run before the store is used.
//
// Durability: open the database with Durability::kFull; a redemption, once acknowledged, is
// a promise (SECURITY-TESTS G4/G5).
//
// Concurrency: every method is thread-safe. SqliteDb is not, so the store owns a mutex that
// serializes all its use of `db`; therefore nothing else may use that SqliteDb while the
// store lives (give other stores their own connection to the same file). Redemption is
// atomic across connections and processes as well: it runs in a BEGIN IMMEDIATE transaction
// and consumes a use with a conditional UPDATE, so N concurrent redemptions of a code with
// k uses left yield exactly min(N, k) successes, however many SqliteDb connections,
// processes or replicas share the file.
//
// `db`, `clock` and `throttle` are not owned and must outlive the store.
class InviteStore {
 public:
  // The SQL that creates the invites table and its indexes (idempotent).
  static absl::string_view SchemaSql();

  // Runs SchemaSql() on `db`. Errors: as SqliteDb::Exec.
  static absl::Status InitSchema(SqliteDb& db);

  // `fingerprint_key` is a secret of at least 32 random bytes, stable across restarts (a new
  // key changes every fingerprint).
  InviteStore(SqliteDb& db, Clock& clock, GuessThrottle& throttle, std::string fingerprint_key,
              InviteStoreOptions options = InviteStoreOptions());

  InviteStore(const InviteStore&) = delete;
  InviteStore& operator=(const InviteStore&) = delete;

  // Creates an invite and returns its record and its code. The code is returned only here:
  // it is stored hashed and cannot be retrieved again.
  // Errors: INVALID_ARGUMENT if max_uses is outside 1..10000, the expiry is not in the future
  // or more than 90 days ahead, both bindings are set, the bound e-mail or domain is
  // malformed, or the note or creator is too long or not printable UTF-8;
  // RESOURCE_EXHAUSTED if max_active_invites invites are active; FAILED_PRECONDITION if the
  // fingerprint key is empty; UNAVAILABLE if the database is busy; INTERNAL otherwise.
  absl::StatusOr<std::pair<InviteRecord, std::string /*code*/>> Create(const InviteSpec& spec);

  // Consumes one use of the invite with `code` for a sign-in whose verified e-mail is `email`,
  // coming from `source_address`, and returns the updated record.
  // The guessing throttle is consulted first (before the code is looked at); every failure
  // that could be a guess counts against `source_address`, `email` and the process.
  // Errors: NOT_FOUND "invite code is not valid" for a malformed, unknown, revoked, expired
  // or used-up code, or an e-mail the invite is not bound to (one message for all, so codes
  // cannot be probed); RESOURCE_EXHAUSTED if throttled; UNAVAILABLE if the database is busy;
  // INTERNAL otherwise. If `details` is not null it receives the precise outcome for the
  // caller's audit record (never to be shown to the client).
  absl::StatusOr<InviteRecord> Redeem(absl::string_view code, absl::string_view email,
                                      absl::string_view source_address,
                                      RedeemDetails* details = nullptr);

  // Lists invites newest first, without codes. Only active invites unless
  // `include_inactive`. `page_size` 0 means 50 and values above 1000 mean 1000; `page_token`
  // is empty or the opaque next_page_token of a previous call with the same
  // `include_inactive`.
  // Errors: INVALID_ARGUMENT for a negative page size or an invalid page token (including
  // one from a call with another `include_inactive`); INTERNAL or UNAVAILABLE from the
  // database.
  absl::StatusOr<InvitePage> List(bool include_inactive, int page_size,
                                  absl::string_view page_token);

  // Revokes the invite so it can no longer be redeemed, and returns its record. Idempotent:
  // revoking a revoked invite changes nothing (the first revoke time is kept).
  // Errors: INVALID_ARGUMENT if `invite_id` is malformed; NOT_FOUND if there is no such
  // invite; UNAVAILABLE if the database is busy; INTERNAL otherwise.
  absl::StatusOr<InviteRecord> Revoke(absl::string_view invite_id);

  // The fingerprint of `code` (kInviteFingerprintSize hex characters of an HMAC under the
  // fingerprint key), as stored in InviteRecord::code_fingerprint. Thread-safe.
  std::string Fingerprint(absl::string_view code) const;

 private:
  absl::StatusOr<InviteRecord> RedeemAdmitted(absl::string_view code, absl::string_view email,
                                              RedeemDetails& details);

  absl::Mutex mu_;
  SqliteDb* const db_ ABSL_PT_GUARDED_BY(mu_);
  Clock& clock_;
  GuessThrottle& throttle_;
  const std::string fingerprint_key_;
  const InviteStoreOptions options_;
};

}  // namespace tidepool::auth
