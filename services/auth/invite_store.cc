#include "services/auth/invite_store.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/crypto/crypto.h"
#include "lib/status_macros.h"
#include "lib/text.h"

namespace tidepool::auth {
namespace {

constexpr size_t kCodeRandomBytes = 20;  // 160 bits -> 32 base32 characters
constexpr size_t kIdRandomBytes = 16;    // 128 bits -> 26 base32 characters
constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;
constexpr size_t kMaxEmailBytes = 254;
constexpr size_t kMaxDomainBytes = 253;
constexpr size_t kMaxCreatorBytes = 128;
// Throttle keys longer than this are truncated (merging two such keys only throttles more).
constexpr size_t kMaxThrottleKeyBytes = 256;

constexpr absl::string_view kInvalidCodeMessage = "invite code is not valid";

constexpr absl::string_view kSchemaSql = R"sql(
CREATE TABLE IF NOT EXISTS invites (
  invite_id TEXT PRIMARY KEY NOT NULL,
  code_hash TEXT NOT NULL UNIQUE,
  code_fingerprint TEXT NOT NULL,
  max_uses INTEGER NOT NULL CHECK (max_uses BETWEEN 1 AND 10000),
  use_count INTEGER NOT NULL DEFAULT 0 CHECK (use_count BETWEEN 0 AND max_uses),
  create_us INTEGER NOT NULL,
  expire_us INTEGER NOT NULL,
  bound_email TEXT NOT NULL DEFAULT '',
  bound_domain TEXT NOT NULL DEFAULT '',
  note TEXT NOT NULL DEFAULT '',
  created_by TEXT NOT NULL DEFAULT '',
  revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
  revoke_us INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS invites_by_create ON invites (create_us, invite_id);
)sql";

// The columns RowToRecord reads, in order.
constexpr absl::string_view kColumns =
    "invite_id, max_uses, use_count, create_us, expire_us, bound_email, bound_domain, note, "
    "created_by, revoked, revoke_us, code_fingerprint";

// Encodes `bytes` as unpadded lowercase RFC 4648 base32; a final partial group is padded
// with zero bits.

bool HasPrefixAndBase32(absl::string_view text, absl::string_view prefix, size_t size) {
  if (text.size() != size || !absl::StartsWith(text, prefix)) {
    return false;
  }
  return IsBase32Lower(text.substr(prefix.size()));
}

bool IsWellFormedInviteId(absl::string_view id) {
  return HasPrefixAndBase32(id, kInviteIdPrefix, kInviteIdSize);
}

// Returns true if `s` is valid UTF-8 without control characters (C0, DEL, C1) or
// surrogates, overlong forms or code points above U+10FFFF.

// A DNS name in ASCII (IDNs as punycode): at least two labels of 1..63 characters from
// [a-z0-9-] (after lower-casing), neither starting nor ending with '-'.
bool IsValidDomain(absl::string_view domain) {
  if (domain.empty() || domain.size() > kMaxDomainBytes) {
    return false;
  }
  const std::vector<absl::string_view> labels = absl::StrSplit(domain, '.');
  if (labels.size() < 2) {
    return false;
  }
  for (absl::string_view label : labels) {
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') {
        return false;
      }
    }
  }
  return true;
}

// An e-mail address as an identity provider reports it: printable UTF-8 without spaces, a
// non-empty local part, and a valid domain after the last '@'.
bool IsValidEmail(absl::string_view email) {
  if (email.size() > kMaxEmailBytes || !IsCleanUtf8(email) || absl::StrContains(email, ' ')) {
    return false;
  }
  const size_t at = email.rfind('@');
  if (at == absl::string_view::npos || at == 0) {
    return false;
  }
  return IsValidDomain(email.substr(at + 1));
}

// The domain of `email` (after the last '@'), or "" if it has none.
absl::string_view EmailDomain(absl::string_view email) {
  const size_t at = email.rfind('@');
  return at == absl::string_view::npos ? absl::string_view() : email.substr(at + 1);
}

absl::Status InvalidCode() { return absl::NotFoundError(kInvalidCodeMessage); }

InviteState StateAt(const InviteRecord& record, absl::Time now) {
  if (record.revoked) {
    return InviteState::kRevoked;
  }
  if (record.use_count >= record.max_uses) {
    return InviteState::kUsedUp;
  }
  if (record.expire_time <= now) {
    return InviteState::kExpired;
  }
  return InviteState::kActive;
}

// Reads the kColumns of the current row.
InviteRecord RowToRecord(const Statement& row, absl::Time now) {
  InviteRecord record;
  record.invite_id = row.ColumnText(0);
  record.max_uses = static_cast<int>(row.ColumnInt(1));
  record.use_count = static_cast<int>(row.ColumnInt(2));
  record.create_time = absl::FromUnixMicros(row.ColumnInt(3));
  record.expire_time = absl::FromUnixMicros(row.ColumnInt(4));
  record.bound_email = row.ColumnText(5);
  record.bound_domain = row.ColumnText(6);
  record.note = row.ColumnText(7);
  record.created_by = row.ColumnText(8);
  record.revoked = row.ColumnInt(9) != 0;
  record.revoke_time = absl::FromUnixMicros(row.ColumnInt(10));
  record.code_fingerprint = row.ColumnText(11);
  record.state = StateAt(record, now);
  return record;
}

// Page tokens: "<filter>:<create_us>:<invite_id>" of the last invite returned, where filter
// is "a" (all) or "l" (live only). Opaque to clients; checked strictly when parsed.
std::string MakePageToken(bool include_inactive, const InviteRecord& last) {
  return absl::StrCat(include_inactive ? "a" : "l", ":", absl::ToUnixMicros(last.create_time), ":",
                      last.invite_id);
}

struct PagePosition {
  int64_t create_us = 0;
  std::string invite_id;
};

absl::StatusOr<PagePosition> ParsePageToken(bool include_inactive, absl::string_view token) {
  const absl::Status invalid = absl::InvalidArgumentError("invalid page token");
  const std::vector<absl::string_view> parts = absl::StrSplit(token, ':');
  if (parts.size() != 3 || parts[0] != (include_inactive ? "a" : "l") || parts[1].empty() ||
      parts[1].size() > 19 || !std::all_of(parts[1].begin(), parts[1].end(), absl::ascii_isdigit) ||
      !IsWellFormedInviteId(parts[2])) {
    return invalid;
  }
  PagePosition position;
  if (!absl::SimpleAtoi(parts[1], &position.create_us)) {
    return invalid;
  }
  position.invite_id = std::string(parts[2]);
  return position;
}

std::string ThrottleKey(absl::string_view prefix, absl::string_view value) {
  std::string key = absl::StrCat(prefix, value.substr(0, kMaxThrottleKeyBytes));
  absl::AsciiStrToLower(&key);
  return key;
}

}  // namespace

absl::string_view RedeemOutcomeName(RedeemOutcome outcome) {
  switch (outcome) {
    case RedeemOutcome::kRedeemed:
      return "redeemed";
    case RedeemOutcome::kThrottled:
      return "throttled";
    case RedeemOutcome::kMalformedCode:
      return "malformed_code";
    case RedeemOutcome::kUnknownCode:
      return "unknown_code";
    case RedeemOutcome::kRevoked:
      return "revoked";
    case RedeemOutcome::kExpired:
      return "expired";
    case RedeemOutcome::kUsedUp:
      return "used_up";
    case RedeemOutcome::kEmailMismatch:
      return "email_mismatch";
    case RedeemOutcome::kDomainMismatch:
      return "domain_mismatch";
    case RedeemOutcome::kStoreError:
      return "store_error";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------------
// GuessThrottle

GuessThrottle::GuessThrottle(Clock& clock, GuessThrottleOptions options)
    : clock_(clock), options_(options) {}

void GuessThrottle::PruneLocked(std::deque<absl::Time>& times, absl::Time cutoff) {
  while (!times.empty() && times.front() <= cutoff) {
    times.pop_front();
  }
}

void GuessThrottle::SweepLocked(absl::Time now) {
  const absl::Time cutoff = now - options_.window;
  for (auto it = windows_.begin(); it != windows_.end();) {
    PruneLocked(it->second, cutoff);
    if (it->second.empty()) {
      it = windows_.erase(it);
    } else {
      ++it;
    }
  }
  last_sweep_ = now;
}

absl::StatusOr<GuessThrottle::Attempt> GuessThrottle::Admit(absl::string_view source_address,
                                                            absl::string_view target) {
  Attempt attempt;
  attempt.address_key = ThrottleKey("a:", source_address);
  if (!target.empty()) {
    attempt.target_key = ThrottleKey("t:", target);
  }
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.Now();
  attempt.time = now;
  const absl::Time cutoff = now - options_.window;
  if (now - last_sweep_ >= options_.window) {
    SweepLocked(now);
  }
  PruneLocked(global_, cutoff);
  bool allowed = static_cast<int64_t>(global_.size()) < options_.max_failures_global;
  auto address_it = windows_.find(attempt.address_key);
  if (allowed && address_it != windows_.end()) {
    PruneLocked(address_it->second, cutoff);
    allowed = static_cast<int64_t>(address_it->second.size()) < options_.max_failures_per_address;
  }
  allowed = allowed && options_.max_failures_per_address > 0;
  auto target_it = windows_.end();
  if (allowed && !attempt.target_key.empty()) {
    target_it = windows_.find(attempt.target_key);
    if (target_it != windows_.end()) {
      PruneLocked(target_it->second, cutoff);
      allowed = static_cast<int64_t>(target_it->second.size()) < options_.max_failures_per_target;
    }
    allowed = allowed && options_.max_failures_per_target > 0;
  }
  if (!allowed) {
    return absl::ResourceExhaustedError("too many failed invite attempts; try again later");
  }
  global_.push_back(now);
  windows_[attempt.address_key].push_back(now);
  if (!attempt.target_key.empty()) {
    windows_[attempt.target_key].push_back(now);
  }
  return attempt;
}

void GuessThrottle::RemoveOneLocked(const std::string& key, absl::Time time) {
  auto it = windows_.find(key);
  if (it == windows_.end()) {
    return;
  }
  std::deque<absl::Time>& times = it->second;
  // Times are appended in clock order, so the entry is near the back.
  for (auto t = times.rbegin(); t != times.rend(); ++t) {
    if (*t == time) {
      times.erase(std::next(t).base());
      break;
    }
  }
  if (times.empty()) {
    windows_.erase(it);
  }
}

void GuessThrottle::Forgive(const Attempt& attempt) {
  absl::MutexLock lock(&mu_);
  // Remove from the global window only if the per-address entry was still there, so that a
  // repeated Forgive cannot release someone else's global slot.
  auto it = windows_.find(attempt.address_key);
  if (it == windows_.end() ||
      std::find(it->second.begin(), it->second.end(), attempt.time) == it->second.end()) {
    return;
  }
  RemoveOneLocked(attempt.address_key, attempt.time);
  if (!attempt.target_key.empty()) {
    RemoveOneLocked(attempt.target_key, attempt.time);
  }
  for (auto t = global_.rbegin(); t != global_.rend(); ++t) {
    if (*t == attempt.time) {
      global_.erase(std::next(t).base());
      break;
    }
  }
}

size_t GuessThrottle::TrackedKeys() {
  absl::MutexLock lock(&mu_);
  return windows_.size();
}

// ---------------------------------------------------------------------------------------------
// InviteStore

absl::string_view InviteStore::SchemaSql() { return kSchemaSql; }

absl::Status InviteStore::InitSchema(SqliteDb& db) { return db.Exec(kSchemaSql); }

InviteStore::InviteStore(SqliteDb& db, Clock& clock, GuessThrottle& throttle,
                         std::string fingerprint_key, InviteStoreOptions options)
    : db_(&db),
      clock_(clock),
      throttle_(throttle),
      fingerprint_key_(std::move(fingerprint_key)),
      options_(options) {}

std::string InviteStore::Fingerprint(absl::string_view code) const {
  return crypto::HexEncode(crypto::HmacSha256(fingerprint_key_, code))
      .substr(0, kInviteFingerprintSize);
}

absl::StatusOr<std::pair<InviteRecord, std::string>> InviteStore::Create(const InviteSpec& spec) {
  if (spec.max_uses < 1 || spec.max_uses > kMaxInviteUses) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_uses must be between 1 and ", kMaxInviteUses));
  }
  if (!spec.bound_email.empty() && !spec.bound_domain.empty()) {
    return absl::InvalidArgumentError("an invite may be bound to an e-mail or a domain, not both");
  }
  if (!spec.bound_email.empty() && !IsValidEmail(spec.bound_email)) {
    return absl::InvalidArgumentError("bound e-mail is not a valid address");
  }
  if (!spec.bound_domain.empty() && !IsValidDomain(spec.bound_domain)) {
    return absl::InvalidArgumentError("bound domain is not a valid domain name");
  }
  if (spec.note.size() > kMaxInviteNoteBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("note must be at most ", kMaxInviteNoteBytes, " bytes"));
  }
  if (!IsCleanUtf8(spec.note)) {
    return absl::InvalidArgumentError("note must be printable UTF-8");
  }
  if (spec.created_by_user_id.size() > kMaxCreatorBytes || !IsCleanUtf8(spec.created_by_user_id)) {
    return absl::InvalidArgumentError("created_by_user_id is malformed");
  }
  if (fingerprint_key_.empty()) {
    return absl::FailedPreconditionError("invite fingerprint key is not configured");
  }
  const absl::Time now = clock_.Now();
  if (spec.expire_time <= now) {
    return absl::InvalidArgumentError("expire_time must be in the future");
  }
  if (spec.expire_time > now + kMaxInviteLifetime) {
    return absl::InvalidArgumentError("expire_time must be at most 90 days ahead");
  }

  TP_ASSIGN_OR_RETURN(std::string code_random, crypto::RandomBytes(kCodeRandomBytes));
  TP_ASSIGN_OR_RETURN(std::string id_random, crypto::RandomBytes(kIdRandomBytes));
  std::string code = absl::StrCat(kInviteCodePrefix, Base32Lower(code_random));

  InviteRecord record;
  record.invite_id = absl::StrCat(kInviteIdPrefix, Base32Lower(id_random));
  record.max_uses = spec.max_uses;
  record.use_count = 0;
  // Stored at microsecond precision; report exactly what a later read returns.
  record.create_time = absl::FromUnixMicros(absl::ToUnixMicros(now));
  record.expire_time = absl::FromUnixMicros(absl::ToUnixMicros(spec.expire_time));
  record.bound_email = absl::AsciiStrToLower(spec.bound_email);
  record.bound_domain = absl::AsciiStrToLower(spec.bound_domain);
  record.note = spec.note;
  record.created_by = spec.created_by_user_id;
  record.revoked = false;
  record.revoke_time = absl::UnixEpoch();
  record.code_fingerprint = Fingerprint(code);
  record.state = InviteState::kActive;
  const std::string code_hash = crypto::HexEncode(crypto::Sha256(code));

  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  if (options_.max_active_invites > 0) {
    TP_ASSIGN_OR_RETURN(Statement count,
                        db_->Prepare("SELECT count(*) FROM invites WHERE revoked = 0 AND "
                                     "use_count < max_uses AND expire_us > ?"));
    TP_RETURN_IF_ERROR(count.Bind(1, absl::ToUnixMicros(now)));
    TP_ASSIGN_OR_RETURN(bool has_row, count.Step());
    if (has_row && count.ColumnInt(0) >= options_.max_active_invites) {
      return absl::ResourceExhaustedError("too many active invites");
    }
  }
  {
    TP_ASSIGN_OR_RETURN(Statement insert,
                        db_->Prepare("INSERT INTO invites (invite_id, code_hash, "
                                     "code_fingerprint, max_uses, use_count, create_us, "
                                     "expire_us, bound_email, bound_domain, note, created_by, "
                                     "revoked, revoke_us) "
                                     "VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, 0, 0)"));
    TP_RETURN_IF_ERROR(insert.Bind(1, record.invite_id));
    TP_RETURN_IF_ERROR(insert.Bind(2, code_hash));
    TP_RETURN_IF_ERROR(insert.Bind(3, record.code_fingerprint));
    TP_RETURN_IF_ERROR(insert.Bind(4, record.max_uses));
    TP_RETURN_IF_ERROR(insert.Bind(5, absl::ToUnixMicros(record.create_time)));
    TP_RETURN_IF_ERROR(insert.Bind(6, absl::ToUnixMicros(record.expire_time)));
    TP_RETURN_IF_ERROR(insert.Bind(7, record.bound_email));
    TP_RETURN_IF_ERROR(insert.Bind(8, record.bound_domain));
    TP_RETURN_IF_ERROR(insert.Bind(9, record.note));
    TP_RETURN_IF_ERROR(insert.Bind(10, record.created_by));
    TP_RETURN_IF_ERROR(insert.Step().status());
  }
  TP_RETURN_IF_ERROR(txn.Commit());
  return std::make_pair(std::move(record), std::move(code));
}

absl::StatusOr<InviteRecord> InviteStore::Redeem(absl::string_view code, absl::string_view email,
                                                 absl::string_view source_address,
                                                 RedeemDetails* details) {
  RedeemDetails local;
  RedeemDetails& out = details != nullptr ? *details : local;
  out = RedeemDetails();
  absl::StatusOr<GuessThrottle::Attempt> attempt = throttle_.Admit(source_address, email);
  if (!attempt.ok()) {
    out.outcome = RedeemOutcome::kThrottled;
    return attempt.status();
  }
  absl::StatusOr<InviteRecord> result = RedeemAdmitted(code, email, out);
  // Only failures that could be guesses count against the throttle.
  if (out.outcome == RedeemOutcome::kRedeemed || out.outcome == RedeemOutcome::kStoreError) {
    throttle_.Forgive(*attempt);
  }
  return result;
}

absl::StatusOr<InviteRecord> InviteStore::RedeemAdmitted(absl::string_view code,
                                                         absl::string_view email,
                                                         RedeemDetails& details) {
  // Codes are base32, which is case-insensitive; normalise before checking and hashing.
  std::string normalized(code.substr(0, kInviteCodeSize + 1));
  absl::AsciiStrToLower(&normalized);
  if (!HasPrefixAndBase32(normalized, kInviteCodePrefix, kInviteCodeSize)) {
    details.outcome = RedeemOutcome::kMalformedCode;
    return InvalidCode();
  }
  details.code_fingerprint = Fingerprint(normalized);
  const std::string code_hash = crypto::HexEncode(crypto::Sha256(normalized));
  const std::string lower_email = absl::AsciiStrToLower(email);

  details.outcome = RedeemOutcome::kStoreError;  // until a decision is reached
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.Now();
  const int64_t now_us = absl::ToUnixMicros(now);
  // BEGIN IMMEDIATE: the read and the update below happen under the database write lock, so
  // redemptions through other connections or processes are serialized with this one.
  TP_ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  InviteRecord record;
  {
    TP_ASSIGN_OR_RETURN(Statement select,
                        db_->Prepare(absl::StrCat("SELECT ", kColumns,
                                                  ", code_hash FROM invites WHERE code_hash = ?")));
    TP_RETURN_IF_ERROR(select.Bind(1, code_hash));
    TP_ASSIGN_OR_RETURN(bool found, select.Step());
    // The index lookup found the row by hash; compare in constant time anyway, so the
    // decision never rests on a variable-time comparison of secret-derived bytes.
    if (!found || !crypto::ConstantTimeEquals(select.ColumnText(12), code_hash)) {
      details.outcome = RedeemOutcome::kUnknownCode;
      return InvalidCode();
    }
    record = RowToRecord(select, now);
  }
  details.invite_id = record.invite_id;
  if (record.revoked) {
    details.outcome = RedeemOutcome::kRevoked;
    return InvalidCode();
  }
  if (record.expire_time <= now) {
    details.outcome = RedeemOutcome::kExpired;
    return InvalidCode();
  }
  if (record.use_count >= record.max_uses) {
    details.outcome = RedeemOutcome::kUsedUp;
    return InvalidCode();
  }
  if (!record.bound_email.empty() && lower_email != record.bound_email) {
    details.outcome = RedeemOutcome::kEmailMismatch;
    return InvalidCode();
  }
  if (!record.bound_domain.empty() && EmailDomain(lower_email) != record.bound_domain) {
    details.outcome = RedeemOutcome::kDomainMismatch;
    return InvalidCode();
  }
  {
    // The conditions repeat the checks above inside the statement itself, so the use is
    // consumed only if the invite is still redeemable at the moment of the write.
    TP_ASSIGN_OR_RETURN(Statement update,
                        db_->Prepare("UPDATE invites SET use_count = use_count + 1 "
                                     "WHERE invite_id = ? AND use_count < max_uses "
                                     "AND revoked = 0 AND expire_us > ?"));
    TP_RETURN_IF_ERROR(update.Bind(1, record.invite_id));
    TP_RETURN_IF_ERROR(update.Bind(2, now_us));
    TP_RETURN_IF_ERROR(update.Step().status());
    if (db_->Changes() != 1) {
      details.outcome = RedeemOutcome::kUsedUp;
      return InvalidCode();
    }
  }
  TP_RETURN_IF_ERROR(txn.Commit());
  record.use_count += 1;
  record.state = StateAt(record, now);
  details.outcome = RedeemOutcome::kRedeemed;
  return record;
}

absl::StatusOr<InvitePage> InviteStore::List(bool include_inactive, int page_size,
                                             absl::string_view page_token) {
  if (page_size < 0) {
    return absl::InvalidArgumentError("page_size must not be negative");
  }
  const int limit = page_size == 0 ? kDefaultPageSize : std::min(page_size, kMaxPageSize);
  PagePosition position;
  const bool has_position = !page_token.empty();
  if (has_position) {
    TP_ASSIGN_OR_RETURN(position, ParsePageToken(include_inactive, page_token));
  }
  std::string sql = absl::StrCat("SELECT ", kColumns, " FROM invites WHERE 1");
  if (!include_inactive) {
    absl::StrAppend(&sql, " AND revoked = 0 AND use_count < max_uses AND expire_us > ?1");
  }
  if (has_position) {
    absl::StrAppend(&sql, " AND (create_us, invite_id) < (?2, ?3)");
  }
  absl::StrAppend(&sql, " ORDER BY create_us DESC, invite_id DESC LIMIT ?4");

  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.Now();
  TP_ASSIGN_OR_RETURN(Statement select, db_->Prepare(sql));
  if (!include_inactive) {
    TP_RETURN_IF_ERROR(select.Bind(1, absl::ToUnixMicros(now)));
  }
  if (has_position) {
    TP_RETURN_IF_ERROR(select.Bind(2, position.create_us));
    TP_RETURN_IF_ERROR(select.Bind(3, position.invite_id));
  }
  TP_RETURN_IF_ERROR(select.Bind(4, limit + 1));
  InvitePage page;
  while (true) {
    TP_ASSIGN_OR_RETURN(bool has_row, select.Step());
    if (!has_row) {
      break;
    }
    if (static_cast<int>(page.invites.size()) == limit) {
      page.next_page_token = MakePageToken(include_inactive, page.invites.back());
      break;
    }
    page.invites.push_back(RowToRecord(select, now));
  }
  return page;
}

absl::StatusOr<InviteRecord> InviteStore::Revoke(absl::string_view invite_id) {
  if (!IsWellFormedInviteId(invite_id)) {
    return absl::InvalidArgumentError("invite_id is malformed");
  }
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.Now();
  TP_ASSIGN_OR_RETURN(Transaction txn, db_->Begin());
  InviteRecord record;
  {
    TP_ASSIGN_OR_RETURN(
        Statement select,
        db_->Prepare(absl::StrCat("SELECT ", kColumns, " FROM invites WHERE invite_id = ?")));
    TP_RETURN_IF_ERROR(select.Bind(1, invite_id));
    TP_ASSIGN_OR_RETURN(bool found, select.Step());
    if (!found) {
      return absl::NotFoundError("invite not found");
    }
    record = RowToRecord(select, now);
  }
  if (record.revoked) {
    return record;  // idempotent; the transaction rolls back having changed nothing
  }
  {
    TP_ASSIGN_OR_RETURN(Statement update,
                        db_->Prepare("UPDATE invites SET revoked = 1, revoke_us = ? "
                                     "WHERE invite_id = ? AND revoked = 0"));
    TP_RETURN_IF_ERROR(update.Bind(1, absl::ToUnixMicros(now)));
    TP_RETURN_IF_ERROR(update.Bind(2, invite_id));
    TP_RETURN_IF_ERROR(update.Step().status());
  }
  TP_RETURN_IF_ERROR(txn.Commit());
  record.revoked = true;
  record.revoke_time = absl::FromUnixMicros(absl::ToUnixMicros(now));
  record.state = InviteState::kRevoked;
  return record;
}

}  // namespace tidepool::auth
