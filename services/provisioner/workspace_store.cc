#include "services/provisioner/workspace_store.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/status_macros.h"
#include "lib/text.h"

namespace tidepool::provisioner {
namespace {

constexpr absl::string_view kSchema =
    "CREATE TABLE IF NOT EXISTS workspaces ("
    "  workspace_id TEXT PRIMARY KEY,"
    "  owner_user_id TEXT NOT NULL,"
    "  profile TEXT NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  desired_state INTEGER NOT NULL,"
    "  state_reason TEXT NOT NULL DEFAULT '',"
    "  timezone TEXT NOT NULL DEFAULT '',"
    "  create_us INTEGER NOT NULL,"
    "  update_us INTEGER NOT NULL,"
    "  transition_us INTEGER NOT NULL,"
    "  version INTEGER NOT NULL DEFAULT 1);"
    // One live workspace per owner; deleted ones stay for history.
    "CREATE UNIQUE INDEX IF NOT EXISTS workspaces_one_per_owner ON workspaces(owner_user_id) "
    "  WHERE state != 6;"
    "CREATE TABLE IF NOT EXISTS owners ("
    "  owner_user_id TEXT PRIMARY KEY,"
    "  suspended INTEGER NOT NULL DEFAULT 0);";

constexpr absl::string_view kColumns =
    "workspace_id, owner_user_id, profile, state, desired_state, state_reason, timezone, "
    "create_us, update_us, transition_us, version";

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;

WorkspaceRecord ReadRecord(const Statement& row) {
  WorkspaceRecord record;
  record.workspace_id = row.ColumnText(0);
  record.owner_user_id = row.ColumnText(1);
  record.profile = row.ColumnText(2);
  record.state = static_cast<WorkspaceState>(row.ColumnInt(3));
  record.desired_state = static_cast<WorkspaceState>(row.ColumnInt(4));
  record.state_reason = row.ColumnText(5);
  record.timezone = row.ColumnText(6);
  record.create_time = absl::FromUnixMicros(row.ColumnInt(7));
  record.update_time = absl::FromUnixMicros(row.ColumnInt(8));
  record.last_transition_time = absl::FromUnixMicros(row.ColumnInt(9));
  record.version = row.ColumnInt(10);
  return record;
}

}  // namespace

bool IsValidWorkspaceId(absl::string_view id) { return IsRandomId(id, "ws_"); }

absl::StatusOr<std::unique_ptr<WorkspaceStore>> WorkspaceStore::Open(SqliteDb& db, Clock& clock) {
  auto store = std::unique_ptr<WorkspaceStore>(new WorkspaceStore(db, clock));
  absl::MutexLock lock(&store->mu_);
  TP_RETURN_IF_ERROR(db.Exec(kSchema));
  return store;
}

absl::StatusOr<WorkspaceRecord> WorkspaceStore::GetLocked(absl::string_view column,
                                                          absl::string_view value) {
  TP_ASSIGN_OR_RETURN(Statement select,
                      db_.Prepare(absl::StrCat("SELECT ", kColumns, " FROM workspaces WHERE ",
                                               column, " = ? ORDER BY state = 6, create_us DESC "
                                                       "LIMIT 1")));
  TP_RETURN_IF_ERROR(select.Bind(1, value));
  TP_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) {
    return absl::NotFoundError("no such workspace");
  }
  return ReadRecord(select);
}

absl::StatusOr<bool> WorkspaceStore::IsOwnerSuspendedLocked(absl::string_view owner_user_id) {
  TP_ASSIGN_OR_RETURN(Statement select,
                      db_.Prepare("SELECT suspended FROM owners WHERE owner_user_id = ?"));
  TP_RETURN_IF_ERROR(select.Bind(1, owner_user_id));
  TP_ASSIGN_OR_RETURN(bool found, select.Step());
  return found && select.ColumnInt(0) != 0;
}

absl::StatusOr<EnsureOutcome> WorkspaceStore::EnsureForOwner(absl::string_view owner_user_id,
                                                             absl::string_view profile,
                                                             absl::string_view timezone,
                                                             absl::string_view new_workspace_id) {
  EnsureOutcome outcome;
  TP_ASSIGN_OR_RETURN(std::string new_id, NewRandomId("ws_"));
  if (!new_workspace_id.empty()) new_id = std::string(new_workspace_id);
  const int64_t now = absl::ToUnixMicros(clock_.Now());
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Transaction txn, db_.Begin());
  absl::StatusOr<WorkspaceRecord> existing = GetLocked("owner_user_id", owner_user_id);
  if (existing.ok() && existing->state != common::v1::WORKSPACE_STATE_DELETED) {
    if (!timezone.empty() && timezone != existing->timezone) {
      TP_ASSIGN_OR_RETURN(Statement update,
                          db_.Prepare("UPDATE workspaces SET timezone = ?, update_us = ?, version "
                                      "= version + 1 WHERE workspace_id = ?"));
      TP_RETURN_IF_ERROR(update.Bind(1, timezone));
      TP_RETURN_IF_ERROR(update.Bind(2, now));
      TP_RETURN_IF_ERROR(update.Bind(3, absl::string_view(existing->workspace_id)));
      TP_RETURN_IF_ERROR(update.Step().status());
      TP_ASSIGN_OR_RETURN(*existing, GetLocked("workspace_id", existing->workspace_id));
    }
    TP_RETURN_IF_ERROR(txn.Commit());
    outcome.workspace = *std::move(existing);
    return outcome;
  }
  if (!existing.ok() && !absl::IsNotFound(existing.status())) {
    return existing.status();
  }
  TP_ASSIGN_OR_RETURN(bool suspended, IsOwnerSuspendedLocked(owner_user_id));
  if (suspended) {
    return absl::FailedPreconditionError("the owner is suspended");
  }
  TP_ASSIGN_OR_RETURN(
      Statement insert,
      db_.Prepare(absl::StrCat("INSERT INTO workspaces (", kColumns,
                               ") VALUES (?, ?, ?, ?, ?, 'new_workspace', ?, ?, ?, ?, 1)")));
  TP_RETURN_IF_ERROR(insert.Bind(1, absl::string_view(new_id)));
  TP_RETURN_IF_ERROR(insert.Bind(2, owner_user_id));
  TP_RETURN_IF_ERROR(insert.Bind(3, profile));
  TP_RETURN_IF_ERROR(insert.Bind(4, static_cast<int64_t>(common::v1::WORKSPACE_STATE_PROVISIONING)));
  TP_RETURN_IF_ERROR(insert.Bind(5, static_cast<int64_t>(common::v1::WORKSPACE_STATE_RUNNING)));
  TP_RETURN_IF_ERROR(insert.Bind(6, timezone));
  TP_RETURN_IF_ERROR(insert.Bind(7, now));
  TP_RETURN_IF_ERROR(insert.Bind(8, now));
  TP_RETURN_IF_ERROR(insert.Bind(9, now));
  TP_RETURN_IF_ERROR(insert.Step().status());
  TP_ASSIGN_OR_RETURN(outcome.workspace, GetLocked("workspace_id", new_id));
  TP_RETURN_IF_ERROR(txn.Commit());
  outcome.created = true;
  return outcome;
}

absl::StatusOr<WorkspaceRecord> WorkspaceStore::Get(absl::string_view workspace_id) {
  absl::MutexLock lock(&mu_);
  return GetLocked("workspace_id", workspace_id);
}

absl::StatusOr<std::optional<WorkspaceRecord>> WorkspaceStore::GetByOwner(
    absl::string_view owner_user_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<WorkspaceRecord> record = GetLocked("owner_user_id", owner_user_id);
  if (absl::IsNotFound(record.status())) {
    return std::optional<WorkspaceRecord>();
  }
  TP_RETURN_IF_ERROR(record.status());
  return std::optional<WorkspaceRecord>(*std::move(record));
}

absl::StatusOr<WorkspacePage> WorkspaceStore::List(std::optional<WorkspaceState> state,
                                                   absl::string_view owner_user_id,
                                                   int page_size, absl::string_view page_token) {
  if (page_size < 0) {
    return absl::InvalidArgumentError("page_size must not be negative");
  }
  page_size = page_size == 0 ? kDefaultPageSize : std::min(page_size, kMaxPageSize);
  if (!page_token.empty() && !IsValidWorkspaceId(page_token)) {
    return absl::InvalidArgumentError("page_token is invalid");
  }
  std::string sql = absl::StrCat("SELECT ", kColumns, " FROM workspaces WHERE workspace_id > ?");
  if (state.has_value()) absl::StrAppend(&sql, " AND state = ", static_cast<int>(*state));
  if (!owner_user_id.empty()) absl::StrAppend(&sql, " AND owner_user_id = ?3");
  absl::StrAppend(&sql, " ORDER BY workspace_id LIMIT ?2");
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement select, db_.Prepare(sql));
  TP_RETURN_IF_ERROR(select.Bind(1, page_token));
  TP_RETURN_IF_ERROR(select.Bind(2, page_size + 1));
  if (!owner_user_id.empty()) TP_RETURN_IF_ERROR(select.Bind(3, owner_user_id));
  WorkspacePage page;
  for (;;) {
    TP_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    if (static_cast<int>(page.workspaces.size()) == page_size) {
      page.next_page_token = page.workspaces.back().workspace_id;
      break;
    }
    page.workspaces.push_back(ReadRecord(select));
  }
  return page;
}

absl::StatusOr<std::vector<WorkspaceRecord>> WorkspaceStore::ListLive() {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement select,
                      db_.Prepare(absl::StrCat("SELECT ", kColumns,
                                               " FROM workspaces WHERE state != 6 OR "
                                               "desired_state != 6 ORDER BY workspace_id")));
  std::vector<WorkspaceRecord> out;
  for (;;) {
    TP_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    out.push_back(ReadRecord(select));
  }
  return out;
}

absl::StatusOr<WorkspaceRecord> WorkspaceStore::SetDesired(absl::string_view workspace_id,
                                                           WorkspaceState desired,
                                                           absl::string_view reason,
                                                           int64_t expected_version) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(WorkspaceRecord record, GetLocked("workspace_id", workspace_id));
  if (expected_version != 0 && expected_version != record.version) {
    return absl::AbortedError("the workspace changed meanwhile; read it again");
  }
  TP_ASSIGN_OR_RETURN(Statement update,
                      db_.Prepare("UPDATE workspaces SET desired_state = ?, state_reason = ?, "
                                  "update_us = ?, version = version + 1 WHERE workspace_id = ?"));
  TP_RETURN_IF_ERROR(update.Bind(1, static_cast<int64_t>(desired)));
  TP_RETURN_IF_ERROR(update.Bind(2, reason));
  TP_RETURN_IF_ERROR(update.Bind(3, absl::ToUnixMicros(clock_.Now())));
  TP_RETURN_IF_ERROR(update.Bind(4, workspace_id));
  TP_RETURN_IF_ERROR(update.Step().status());
  return GetLocked("workspace_id", workspace_id);
}

absl::StatusOr<WorkspaceRecord> WorkspaceStore::SetObserved(absl::string_view workspace_id,
                                                            WorkspaceState state,
                                                            absl::string_view reason) {
  const int64_t now = absl::ToUnixMicros(clock_.Now());
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(
      Statement update,
      db_.Prepare("UPDATE workspaces SET transition_us = CASE WHEN state = ?1 THEN "
                  "transition_us ELSE ?3 END, state = ?1, state_reason = ?2, update_us = ?3, "
                  "version = version + 1 WHERE workspace_id = ?4"));
  TP_RETURN_IF_ERROR(update.Bind(1, static_cast<int64_t>(state)));
  TP_RETURN_IF_ERROR(update.Bind(2, reason));
  TP_RETURN_IF_ERROR(update.Bind(3, now));
  TP_RETURN_IF_ERROR(update.Bind(4, workspace_id));
  TP_RETURN_IF_ERROR(update.Step().status());
  return GetLocked("workspace_id", workspace_id);
}

absl::Status WorkspaceStore::SetOwnerSuspended(absl::string_view owner_user_id, bool suspended) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement upsert,
                      db_.Prepare("INSERT INTO owners (owner_user_id, suspended) VALUES (?, ?) "
                                  "ON CONFLICT (owner_user_id) DO UPDATE SET suspended = "
                                  "excluded.suspended"));
  TP_RETURN_IF_ERROR(upsert.Bind(1, owner_user_id));
  TP_RETURN_IF_ERROR(upsert.Bind(2, suspended ? 1 : 0));
  return upsert.Step().status();
}

absl::StatusOr<bool> WorkspaceStore::IsOwnerSuspended(absl::string_view owner_user_id) {
  absl::MutexLock lock(&mu_);
  return IsOwnerSuspendedLocked(owner_user_id);
}

}  // namespace tidepool::provisioner
