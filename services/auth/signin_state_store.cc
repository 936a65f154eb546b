#include "services/auth/signin_state_store.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/crypto/crypto.h"
#include "lib/status_macros.h"
#include "nlohmann/json.hpp"

namespace tidepool::auth {
namespace {

constexpr absl::string_view kSchema =
    "CREATE TABLE IF NOT EXISTS signin_states ("
    "  state_hash TEXT PRIMARY KEY,"
    "  cookie_hash TEXT NOT NULL,"
    "  provider_id TEXT NOT NULL,"
    "  sealed BLOB NOT NULL,"
    "  return_path TEXT NOT NULL,"
    "  timezone TEXT NOT NULL,"
    "  source_address TEXT NOT NULL,"
    "  expire_us INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS signin_states_source ON signin_states(source_address);";

constexpr size_t kRandomBytes = 32;
constexpr size_t kMaxValueBytes = 256;

std::string Hash(absl::string_view value) { return crypto::HexEncode(crypto::Sha256(value)); }

std::string SealKey(absl::string_view cookie_value) {
  return crypto::HmacSha256(cookie_value, "tidepool sign-in state seal v1");
}

absl::Status Fail(std::string* reason, absl::string_view code) {
  if (reason != nullptr) {
    *reason = std::string(code);
  }
  return absl::UnauthenticatedError(
      "this sign-in link is not valid any more (it was already used, has expired, or was "
      "started in another browser); start signing in again");
}

}  // namespace

absl::StatusOr<std::unique_ptr<SignInStateStore>> SignInStateStore::Open(
    SqliteDb& db, Clock& clock, SignInStateStoreOptions options) {
  auto store = std::unique_ptr<SignInStateStore>(new SignInStateStore(db, clock, options));
  absl::MutexLock lock(&store->mu_);
  TP_RETURN_IF_ERROR(db.Exec(kSchema));
  return store;
}

absl::StatusOr<NewSignIn> SignInStateStore::Create(const SignInState& state) {
  TP_ASSIGN_OR_RETURN(std::string state_value, crypto::RandomToken(kRandomBytes));
  TP_ASSIGN_OR_RETURN(std::string cookie_value, crypto::RandomToken(kRandomBytes));
  const std::string state_hash = Hash(state_value);
  const nlohmann::json secret = {
      {"n", state.nonce}, {"v", state.code_verifier}, {"i", state.invite_code}};
  TP_ASSIGN_OR_RETURN(std::string sealed,
                      crypto::AesGcmSeal(SealKey(cookie_value), secret.dump(), state_hash));
  const absl::Time now = clock_.Now();
  NewSignIn created{std::move(state_value), std::move(cookie_value), now + options_.lifetime};
  const std::string source = state.source_address.substr(0, kMaxValueBytes);

  absl::MutexLock lock(&mu_);
  // One write transaction for the check and the insert: the count's statement would otherwise
  // hold a read snapshot into the insert, and a write another connection (the outbox, a user
  // update) committed meanwhile made SQLite refuse it at once ("database is locked", without
  // waiting), failing a sign-in.
  TP_ASSIGN_OR_RETURN(Transaction txn, db_.Begin());
  TP_ASSIGN_OR_RETURN(Statement purge, db_.Prepare("DELETE FROM signin_states WHERE expire_us <= ?"));
  TP_RETURN_IF_ERROR(purge.Bind(1, absl::ToUnixMicros(now)));
  TP_RETURN_IF_ERROR(purge.Step().status());
  {
    TP_ASSIGN_OR_RETURN(
        Statement count,
        db_.Prepare("SELECT COUNT(*), SUM(source_address = ?) FROM signin_states"));
    TP_RETURN_IF_ERROR(count.Bind(1, absl::string_view(source)));
    TP_RETURN_IF_ERROR(count.Step().status());
    if (count.ColumnInt(0) >= options_.max_total || count.ColumnInt(1) >= options_.max_per_source) {
      return absl::ResourceExhaustedError(
          "too many sign-ins were started and not finished; wait a few minutes and try again");
    }
  }
  TP_ASSIGN_OR_RETURN(
      Statement insert,
      db_.Prepare("INSERT INTO signin_states (state_hash, cookie_hash, provider_id, sealed, "
                  "return_path, timezone, source_address, expire_us) VALUES (?,?,?,?,?,?,?,?)"));
  TP_RETURN_IF_ERROR(insert.Bind(1, absl::string_view(state_hash)));
  TP_RETURN_IF_ERROR(insert.Bind(2, absl::string_view(Hash(created.cookie_value))));
  TP_RETURN_IF_ERROR(insert.Bind(3, absl::string_view(state.provider_id)));
  TP_RETURN_IF_ERROR(insert.BindBlob(4, sealed));
  TP_RETURN_IF_ERROR(insert.Bind(5, absl::string_view(state.return_path)));
  TP_RETURN_IF_ERROR(insert.Bind(6, absl::string_view(state.timezone)));
  TP_RETURN_IF_ERROR(insert.Bind(7, absl::string_view(source)));
  TP_RETURN_IF_ERROR(insert.Bind(8, absl::ToUnixMicros(created.expire_time)));
  TP_RETURN_IF_ERROR(insert.Step().status());
  TP_RETURN_IF_ERROR(txn.Commit());
  return created;
}

absl::StatusOr<SignInState> SignInStateStore::Take(absl::string_view state,
                                                   absl::string_view cookie_value,
                                                   std::string* reason) {
  if (state.empty()) {
    return Fail(reason, "state_missing");
  }
  if (state.size() > kMaxValueBytes) {
    return Fail(reason, "state_unknown");
  }
  const std::string state_hash = Hash(state);
  std::string cookie_hash;
  SignInState out;
  std::string sealed;
  {
    absl::MutexLock lock(&mu_);
    TP_ASSIGN_OR_RETURN(
        Statement take,
        db_.Prepare("DELETE FROM signin_states WHERE state_hash = ? RETURNING cookie_hash, "
                    "provider_id, sealed, return_path, timezone, source_address, expire_us"));
    TP_RETURN_IF_ERROR(take.Bind(1, absl::string_view(state_hash)));
    TP_ASSIGN_OR_RETURN(bool found, take.Step());
    if (!found) {
      return Fail(reason, "state_unknown");
    }
    cookie_hash = take.ColumnText(0);
    out.provider_id = take.ColumnText(1);
    sealed = take.ColumnBlob(2);
    out.return_path = take.ColumnText(3);
    out.timezone = take.ColumnText(4);
    out.source_address = take.ColumnText(5);
    out.expire_time = absl::FromUnixMicros(take.ColumnInt(6));
    // Finish the statement so that the delete commits now.
    while (true) {
      TP_ASSIGN_OR_RETURN(bool more, take.Step());
      if (!more) break;
    }
  }
  if (!crypto::ConstantTimeEquals(Hash(cookie_value), cookie_hash) || cookie_value.empty()) {
    return Fail(reason, "state_cookie_mismatch");
  }
  if (clock_.Now() >= out.expire_time) {
    return Fail(reason, "state_expired");
  }
  absl::StatusOr<std::string> opened = crypto::AesGcmOpen(SealKey(cookie_value), sealed, state_hash);
  if (!opened.ok()) {
    return Fail(reason, "state_unknown");
  }
  nlohmann::json secret = nlohmann::json::parse(*opened, nullptr, /*allow_exceptions=*/false);
  if (!secret.is_object() || !secret["n"].is_string() || !secret["v"].is_string() ||
      !secret["i"].is_string()) {
    return Fail(reason, "state_unknown");
  }
  out.nonce = secret["n"].get<std::string>();
  out.code_verifier = secret["v"].get<std::string>();
  out.invite_code = secret["i"].get<std::string>();
  return out;
}

absl::StatusOr<int> SignInStateStore::PurgeExpired() {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement purge, db_.Prepare("DELETE FROM signin_states WHERE expire_us <= ?"));
  TP_RETURN_IF_ERROR(purge.Bind(1, absl::ToUnixMicros(clock_.Now())));
  TP_RETURN_IF_ERROR(purge.Step().status());
  return db_.Changes();
}

}  // namespace tidepool::auth
