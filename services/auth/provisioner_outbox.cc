#include "services/auth/provisioner_outbox.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/log.h"
#include "lib/status_macros.h"

namespace tidepool::auth {
namespace {

constexpr absl::string_view kSchema =
    "CREATE TABLE IF NOT EXISTS provisioner_outbox ("
    "  user_id TEXT NOT NULL,"
    "  action TEXT NOT NULL,"
    "  suspended INTEGER NOT NULL DEFAULT 0,"
    "  detail TEXT NOT NULL DEFAULT '',"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt_us INTEGER NOT NULL,"
    "  last_error TEXT NOT NULL DEFAULT '',"
    "  generation INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (user_id, action));";

constexpr absl::Duration kFirstRetry = absl::Seconds(5);
constexpr absl::Duration kMaxRetry = absl::Minutes(10);

}  // namespace

absl::StatusOr<std::unique_ptr<ProvisionerOutbox>> ProvisionerOutbox::Open(
    SqliteDb& db, Clock& clock, ProvisionerRequests* target) {
  auto outbox = std::unique_ptr<ProvisionerOutbox>(new ProvisionerOutbox(db, clock, target));
  absl::MutexLock lock(&outbox->mu_);
  TP_RETURN_IF_ERROR(db.Exec(kSchema));
  return outbox;
}

absl::Status ProvisionerOutbox::Upsert(absl::string_view user_id, absl::string_view action,
                                       bool suspended, absl::string_view detail) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(
      Statement upsert,
      db_.Prepare("INSERT INTO provisioner_outbox (user_id, action, suspended, detail, "
                  "next_attempt_us) VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, action) DO "
                  "UPDATE SET suspended = excluded.suspended, detail = excluded.detail, "
                  "attempts = 0, next_attempt_us = excluded.next_attempt_us, last_error = '', "
                  "generation = generation + 1"));
  TP_RETURN_IF_ERROR(upsert.Bind(1, user_id));
  TP_RETURN_IF_ERROR(upsert.Bind(2, action));
  TP_RETURN_IF_ERROR(upsert.Bind(3, suspended ? 1 : 0));
  TP_RETURN_IF_ERROR(upsert.Bind(4, detail.substr(0, 256)));
  TP_RETURN_IF_ERROR(upsert.Bind(5, absl::ToUnixMicros(clock_.Now())));
  return upsert.Step().status();
}

absl::Status ProvisionerOutbox::EnqueueEnsure(absl::string_view user_id,
                                              absl::string_view timezone) {
  return Upsert(user_id, "ensure", false, timezone);
}

absl::Status ProvisionerOutbox::EnqueueSuspension(absl::string_view user_id, bool suspended,
                                                  absl::string_view reason) {
  return Upsert(user_id, "suspension", suspended, reason);
}

absl::StatusOr<std::vector<OutboxItem>> ProvisionerOutbox::Pending() {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement select,
                      db_.Prepare("SELECT user_id, action, suspended, detail, attempts, "
                                  "next_attempt_us, last_error, generation FROM provisioner_outbox ORDER BY "
                                  "next_attempt_us"));
  std::vector<OutboxItem> items;
  for (;;) {
    TP_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    OutboxItem item;
    item.user_id = select.ColumnText(0);
    item.action = select.ColumnText(1);
    item.suspended = select.ColumnInt(2) != 0;
    item.detail = select.ColumnText(3);
    item.attempts = static_cast<int>(select.ColumnInt(4));
    item.next_attempt_time = absl::FromUnixMicros(select.ColumnInt(5));
    item.last_error = select.ColumnText(6);
    item.generation = select.ColumnInt(7);
    items.push_back(std::move(item));
  }
  return items;
}

int ProvisionerOutbox::DrainOnce() {
  absl::MutexLock drain(&drain_mu_);
  absl::StatusOr<std::vector<OutboxItem>> items = Pending();
  if (!items.ok() || target_ == nullptr) {
    return 0;
  }
  int done = 0;
  const absl::Time now = clock_.Now();
  for (const OutboxItem& item : *items) {
    if (item.next_attempt_time > now) {
      continue;
    }
    const absl::Status sent =
        item.action == "ensure" ? target_->EnsureWorkspace(item.user_id, item.detail)
                                : target_->SetOwnerSuspended(item.user_id, item.suspended, item.detail);
    absl::MutexLock lock(&mu_);
    if (sent.ok()) {
      // Delete only the request that was sent: one enqueued meanwhile has a newer
      // generation, and stays.
      absl::StatusOr<Statement> remove = db_.Prepare(
          "DELETE FROM provisioner_outbox WHERE user_id = ? AND action = ? AND generation = ?");
      if (remove.ok() && remove->Bind(1, absl::string_view(item.user_id)).ok() &&
          remove->Bind(2, absl::string_view(item.action)).ok() &&
          remove->Bind(3, item.generation).ok()) {
        (void)remove->Step();
      }
      ++done;
      continue;
    }
    const absl::Duration delay =
        std::min(kMaxRetry, kFirstRetry * (int64_t{1} << std::min(item.attempts, 10)));
    LogWarning("provisioner request failed; will retry",
               {{"action", item.action},
                {"user_id", item.user_id},
                {"code", absl::StatusCodeToString(sent.code())},
                {"attempts", absl::StrCat(item.attempts + 1)},
                {"retry_in", absl::FormatDuration(delay)}});
    absl::StatusOr<Statement> reschedule = db_.Prepare(
        "UPDATE provisioner_outbox SET attempts = attempts + 1, next_attempt_us = ?, "
        "last_error = ? WHERE user_id = ? AND action = ? AND generation = ?");
    if (reschedule.ok() && reschedule->Bind(1, absl::ToUnixMicros(now + delay)).ok() &&
        reschedule->Bind(2, absl::string_view(absl::StatusCodeToString(sent.code()))).ok() &&
        reschedule->Bind(3, absl::string_view(item.user_id)).ok() &&
        reschedule->Bind(4, absl::string_view(item.action)).ok() &&
        reschedule->Bind(5, item.generation).ok()) {
      (void)reschedule->Step();
    }
  }
  return done;
}

}  // namespace tidepool::auth
