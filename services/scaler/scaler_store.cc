#include "services/scaler/scaler_store.h"

#include <cstddef>
#include <limits>
#include <set>
#include <type_traits>
#include <utility>
#include <variant>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "lib/status_macros.h"

namespace tidepool::scaler {
namespace {

constexpr int kMaxPageSize = 1000;

// Version 1 creates every table and the indexes behind the list queries. Times are int64
// Unix microseconds (see TimeToMicros), durations int64 microseconds, enums their numbers.
const std::vector<Migration>& Migrations() {
  static const std::vector<Migration>* migrations = new std::vector<Migration>{
      {1,
       "CREATE TABLE activity ("
       "  workspace_id TEXT PRIMARY KEY,"
       "  user_id TEXT NOT NULL,"
       "  last_us INTEGER NOT NULL,"
       "  last_source INTEGER NOT NULL,"
       "  byte_count INTEGER NOT NULL,"
       "  event_count INTEGER NOT NULL);"
       // A single row: the serialized tidepool.scaler.v1.IdlePolicy and its version.
       "CREATE TABLE policy ("
       "  singleton INTEGER PRIMARY KEY CHECK (singleton = 1),"
       "  policy BLOB NOT NULL,"
       "  version INTEGER NOT NULL);"
       "CREATE TABLE pins ("
       "  workspace_id TEXT PRIMARY KEY,"
       "  pin_us INTEGER NOT NULL,"
       "  expire_us INTEGER NOT NULL,"
       "  reason TEXT NOT NULL,"
       "  pinned_by TEXT NOT NULL);"
       // keep_awake_reasons: comma-separated KeepAwakeReason numbers ("1,5"; "" for none).
       "CREATE TABLE decisions ("
       "  decision_id TEXT PRIMARY KEY,"
       "  workspace_id TEXT NOT NULL,"
       "  decide_us INTEGER NOT NULL,"
       "  action INTEGER NOT NULL,"
       "  reason INTEGER NOT NULL,"
       "  keep_awake_reasons TEXT NOT NULL,"
       "  idle_us INTEGER NOT NULL,"
       "  succeeded INTEGER NOT NULL,"
       "  error_code TEXT NOT NULL,"
       "  detail TEXT NOT NULL);"
       "CREATE INDEX decisions_newest ON decisions(decide_us DESC, decision_id DESC);"
       "CREATE INDEX decisions_workspace_newest "
       "  ON decisions(workspace_id, decide_us DESC, decision_id DESC);"
       "CREATE TABLE jobs ("
       "  workspace_id TEXT NOT NULL,"
       "  job_id TEXT NOT NULL,"
       "  name TEXT NOT NULL,"
       "  schedule TEXT NOT NULL,"
       "  timezone TEXT NOT NULL,"
       "  enabled INTEGER NOT NULL,"
       "  missed_run_policy INTEGER NOT NULL,"
       "  anchor_us INTEGER NOT NULL,"
       "  accounted_until_us INTEGER NOT NULL,"
       "  PRIMARY KEY (workspace_id, job_id));"
       "CREATE TABLE job_runs ("
       "  workspace_id TEXT NOT NULL,"
       "  job_id TEXT NOT NULL,"
       "  scheduled_us INTEGER NOT NULL,"
       "  job_name TEXT NOT NULL,"
       "  timezone TEXT NOT NULL,"
       "  start_us INTEGER NOT NULL,"
       "  outcome INTEGER NOT NULL,"
       "  miss_reason INTEGER NOT NULL,"
       "  missed_run_policy INTEGER NOT NULL,"
       "  PRIMARY KEY (workspace_id, job_id, scheduled_us));"
       "CREATE INDEX job_runs_newest ON job_runs(scheduled_us DESC, job_id, workspace_id);"
       "CREATE INDEX job_runs_workspace_newest "
       "  ON job_runs(workspace_id, scheduled_us DESC, job_id);"
       "CREATE TABLE marks ("
       "  workspace_id TEXT PRIMARY KEY,"
       "  last_wake_us INTEGER NOT NULL,"
       "  last_sleep_us INTEGER NOT NULL,"
       "  keep_awake_signature TEXT NOT NULL);"
       "CREATE TABLE heartbeat ("
       "  singleton INTEGER PRIMARY KEY CHECK (singleton = 1),"
       "  heartbeat_us INTEGER NOT NULL);"},
  };
  return *migrations;
}

// ---------------------------------------------------------------------------------------
// Encoding of times, durations and enum lists.

constexpr int64_t kMinInt64 = std::numeric_limits<int64_t>::min();
constexpr int64_t kMaxInt64 = std::numeric_limits<int64_t>::max();

// absl::InfinitePast() and InfiniteFuture() map to INT64_MIN and INT64_MAX; finite times to
// Unix microseconds (rounded down; times beyond the int64 range saturate to the infinities).
int64_t TimeToMicros(absl::Time time) {
  if (time == absl::InfinitePast()) {
    return kMinInt64;
  }
  if (time == absl::InfiniteFuture()) {
    return kMaxInt64;
  }
  return absl::ToUnixMicros(time);
}

// The inverse of TimeToMicros.
absl::Time MicrosToTime(int64_t micros) {
  if (micros == kMinInt64) {
    return absl::InfinitePast();
  }
  if (micros == kMaxInt64) {
    return absl::InfiniteFuture();
  }
  return absl::FromUnixMicros(micros);
}

// As TimeToMicros, for durations: +/-absl::InfiniteDuration() map to INT64_MAX / INT64_MIN.
int64_t DurationToMicros(absl::Duration duration) {
  if (duration == absl::InfiniteDuration()) {
    return kMaxInt64;
  }
  if (duration == -absl::InfiniteDuration()) {
    return kMinInt64;
  }
  return absl::ToInt64Microseconds(duration);
}

absl::Duration MicrosToDuration(int64_t micros) {
  if (micros == kMaxInt64) {
    return absl::InfiniteDuration();
  }
  if (micros == kMinInt64) {
    return -absl::InfiniteDuration();
  }
  return absl::Microseconds(micros);
}

std::string EncodeKeepAwakeReasons(const std::vector<v1::KeepAwakeReason>& reasons) {
  return absl::StrJoin(reasons, ",", [](std::string* out, v1::KeepAwakeReason reason) {
    absl::StrAppend(out, static_cast<int>(reason));
  });
}

absl::StatusOr<std::vector<v1::KeepAwakeReason>> DecodeKeepAwakeReasons(absl::string_view text) {
  std::vector<v1::KeepAwakeReason> reasons;
  if (text.empty()) {
    return reasons;
  }
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int number = 0;
    if (!absl::SimpleAtoi(part, &number)) {
      return absl::InternalError(
          absl::StrCat("scaler store: corrupt keep_awake_reasons \"", text, "\""));
    }
    reasons.push_back(static_cast<v1::KeepAwakeReason>(number));
  }
  return reasons;
}

// ---------------------------------------------------------------------------------------
// Dynamic queries: SQL text built from fixed fragments only, every value bound in order to
// the `?` placeholders.

using SqlParam = std::variant<int64_t, std::string>;

struct Query {
  std::string sql;
  std::vector<SqlParam> params;

  void Add(absl::string_view fragment) { absl::StrAppend(&sql, fragment); }
  void Add(absl::string_view fragment, SqlParam param) {
    absl::StrAppend(&sql, fragment);
    params.push_back(std::move(param));
  }
  // " AND column IN (?, ?, ...)" over `values`; nothing when `values` is empty (no filter).
  void AddIn(absl::string_view column, const std::vector<std::string>& values) {
    if (values.empty()) {
      return;
    }
    absl::StrAppend(&sql, " AND ", column, " IN (");
    for (size_t i = 0; i < values.size(); ++i) {
      absl::StrAppend(&sql, i == 0 ? "?" : ", ?");
      params.emplace_back(values[i]);
    }
    absl::StrAppend(&sql, ")");
  }
  // " AND column >= ?" / " AND column < ?" for a time range; infinite ends add nothing.
  void AddTimeRange(absl::string_view column, absl::Time start, absl::Time end) {
    if (start != absl::InfinitePast()) {
      Add(absl::StrCat(" AND ", column, " >= ?"), TimeToMicros(start));
    }
    if (end != absl::InfiniteFuture()) {
      Add(absl::StrCat(" AND ", column, " < ?"), TimeToMicros(end));
    }
  }

  absl::StatusOr<Statement> Prepare(SqliteDb& db) const {
    TP_ASSIGN_OR_RETURN(Statement statement, db.Prepare(sql));
    for (size_t i = 0; i < params.size(); ++i) {
      const int index = static_cast<int>(i) + 1;
      TP_RETURN_IF_ERROR(std::visit(
          [&statement, index](const auto& value) -> absl::Status {
            if constexpr (std::is_same_v<std::decay_t<decltype(value)>, std::string>) {
              return statement.Bind(index, absl::string_view(value));
            } else {
              return statement.Bind(index, value);
            }
          },
          params[i]));
    }
    return statement;
  }
};

// ---------------------------------------------------------------------------------------
// Page tokens: web-safe base64 of a kind letter ('d' decisions, 'r' job runs) followed by
// the last returned row's sort key, each field as "<length>:<bytes>". Decoding re-encodes
// and compares, so only tokens in exactly the form this code writes are accepted.

constexpr char kDecisionToken = 'd';
constexpr char kJobRunToken = 'r';

std::string EncodePageToken(char kind, const std::vector<std::string>& fields) {
  std::string payload(1, kind);
  for (const std::string& field : fields) {
    absl::StrAppend(&payload, field.size(), ":", field);
  }
  return absl::WebSafeBase64Escape(payload);
}

absl::Status MalformedPageToken() { return absl::InvalidArgumentError("page_token is malformed"); }

absl::StatusOr<std::vector<std::string>> DecodePageToken(char kind, size_t field_count,
                                                         absl::string_view token) {
  std::string payload;
  if (!absl::WebSafeBase64Unescape(token, &payload) || payload.empty() || payload[0] != kind) {
    return MalformedPageToken();
  }
  std::vector<std::string> fields;
  absl::string_view rest = absl::string_view(payload).substr(1);
  while (!rest.empty()) {
    const size_t colon = rest.find(':');
    size_t length = 0;
    if (colon == absl::string_view::npos || !absl::SimpleAtoi(rest.substr(0, colon), &length) ||
        length > rest.size() - colon - 1) {
      return MalformedPageToken();
    }
    fields.emplace_back(rest.substr(colon + 1, length));
    rest.remove_prefix(colon + 1 + length);
  }
  if (fields.size() != field_count || EncodePageToken(kind, fields) != token) {
    return MalformedPageToken();
  }
  return fields;
}

// An integer field of a decoded page token, in its canonical decimal form only.
absl::StatusOr<int64_t> ParseTokenInt(const std::string& field) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(field, &value) || absl::StrCat(value) != field) {
    return MalformedPageToken();
  }
  return value;
}

absl::Status CheckPageSize(int page_size) {
  if (page_size < 1 || page_size > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size must be between 1 and ", kMaxPageSize, ", not ", page_size));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// Rows.

constexpr absl::string_view kActivityColumns =
    "workspace_id, user_id, last_us, last_source, byte_count, event_count";
constexpr absl::string_view kPinColumns = "workspace_id, pin_us, expire_us, reason, pinned_by";
constexpr absl::string_view kDecisionColumns =
    "decision_id, workspace_id, decide_us, action, reason, keep_awake_reasons, idle_us, "
    "succeeded, error_code, detail";
constexpr absl::string_view kJobColumns =
    "workspace_id, job_id, name, schedule, timezone, enabled, missed_run_policy, anchor_us, "
    "accounted_until_us";
constexpr absl::string_view kJobRunColumns =
    "workspace_id, job_id, job_name, scheduled_us, timezone, start_us, outcome, miss_reason, "
    "missed_run_policy";
constexpr absl::string_view kMarksColumns =
    "workspace_id, last_wake_us, last_sleep_us, keep_awake_signature";

template <typename Enum>
Enum ColumnEnum(const Statement& row, int index) {
  return static_cast<Enum>(static_cast<int>(row.ColumnInt(index)));
}

ActivityRow ReadActivity(const Statement& row) {
  ActivityRow activity;
  activity.workspace_id = row.ColumnText(0);
  activity.user_id = row.ColumnText(1);
  activity.last_time = MicrosToTime(row.ColumnInt(2));
  activity.last_source = ColumnEnum<v1::ActivitySource>(row, 3);
  activity.byte_count = row.ColumnInt(4);
  activity.event_count = row.ColumnInt(5);
  return activity;
}

PinRow ReadPin(const Statement& row) {
  PinRow pin;
  pin.workspace_id = row.ColumnText(0);
  pin.pin_time = MicrosToTime(row.ColumnInt(1));
  pin.expire_time = MicrosToTime(row.ColumnInt(2));
  pin.reason = row.ColumnText(3);
  pin.pinned_by = row.ColumnText(4);
  return pin;
}

absl::StatusOr<DecisionRow> ReadDecision(const Statement& row) {
  DecisionRow decision;
  decision.decision_id = row.ColumnText(0);
  decision.workspace_id = row.ColumnText(1);
  decision.decide_time = MicrosToTime(row.ColumnInt(2));
  decision.action = ColumnEnum<v1::DecisionAction>(row, 3);
  decision.reason = ColumnEnum<v1::DecisionReason>(row, 4);
  TP_ASSIGN_OR_RETURN(decision.keep_awake_reasons, DecodeKeepAwakeReasons(row.ColumnText(5)));
  decision.idle_duration = MicrosToDuration(row.ColumnInt(6));
  decision.succeeded = row.ColumnInt(7) != 0;
  decision.error_code = row.ColumnText(8);
  decision.detail = row.ColumnText(9);
  return decision;
}

JobRow ReadJob(const Statement& row) {
  JobRow job;
  job.workspace_id = row.ColumnText(0);
  job.job_id = row.ColumnText(1);
  job.name = row.ColumnText(2);
  job.schedule = row.ColumnText(3);
  job.timezone = row.ColumnText(4);
  job.enabled = row.ColumnInt(5) != 0;
  job.missed_run_policy = ColumnEnum<common::v1::MissedRunPolicy>(row, 6);
  job.anchor_time = MicrosToTime(row.ColumnInt(7));
  job.accounted_until = MicrosToTime(row.ColumnInt(8));
  return job;
}

JobRunRow ReadJobRun(const Statement& row) {
  JobRunRow run;
  run.workspace_id = row.ColumnText(0);
  run.job_id = row.ColumnText(1);
  run.job_name = row.ColumnText(2);
  run.scheduled_time = MicrosToTime(row.ColumnInt(3));
  run.timezone = row.ColumnText(4);
  run.start_time = MicrosToTime(row.ColumnInt(5));
  run.outcome = ColumnEnum<v1::JobRunOutcome>(row, 6);
  run.miss_reason = ColumnEnum<v1::MissReason>(row, 7);
  run.missed_run_policy = ColumnEnum<common::v1::MissedRunPolicy>(row, 8);
  return run;
}

WorkspaceMarks ReadMarks(const Statement& row) {
  WorkspaceMarks marks;
  marks.workspace_id = row.ColumnText(0);
  marks.last_wake_time = MicrosToTime(row.ColumnInt(1));
  marks.last_sleep_time = MicrosToTime(row.ColumnInt(2));
  marks.keep_awake_signature = row.ColumnText(3);
  return marks;
}

absl::Status RequireWorkspaceId(absl::string_view workspace_id) {
  if (workspace_id.empty()) {
    return absl::InvalidArgumentError("workspace_id is required");
  }
  return absl::OkStatus();
}

// Runs a statement that returns no rows (INSERT, UPDATE, DELETE).
absl::Status Run(Statement& statement) { return statement.Step().status(); }

// Deletes the rows of `table` that belong to `workspace_id`. `table` is one of the fixed
// table names below, never input.
absl::Status DeleteWorkspaceRows(SqliteDb& db, absl::string_view table,
                                 const std::string& workspace_id) {
  TP_ASSIGN_OR_RETURN(Statement del,
                      db.Prepare(absl::StrCat("DELETE FROM ", table, " WHERE workspace_id = ?")));
  TP_RETURN_IF_ERROR(del.Bind(1, workspace_id));
  return Run(del);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ScalerStore>> ScalerStore::Open(SqliteDb& db) {
  auto store = std::unique_ptr<ScalerStore>(new ScalerStore(db));
  absl::MutexLock lock(&store->mu_);
  TP_RETURN_IF_ERROR(store->db_.Migrate(Migrations()));
  return store;
}

// ---------------------------------------------------------------------------------------
// Activity

absl::Status ScalerStore::RecordActivity(const std::vector<ActivityRow>& batch) {
  for (const ActivityRow& activity : batch) {
    TP_RETURN_IF_ERROR(RequireWorkspaceId(activity.workspace_id));
    if (activity.byte_count < 0 || activity.event_count < 0) {
      return absl::InvalidArgumentError("byte_count and event_count must not be negative");
    }
  }
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Transaction txn, db_.Begin());
  // Expressions in DO UPDATE SET read the row as it was before the update. A time equal to
  // the stored one also takes over source and user (ties go to the later record). Counts
  // saturate at INT64_MAX instead of overflowing into SQLite's REAL.
  TP_ASSIGN_OR_RETURN(
      Statement upsert,
      db_.Prepare(absl::StrCat(
          "INSERT INTO activity (", kActivityColumns,
          ") VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
          "ON CONFLICT (workspace_id) DO UPDATE SET "
          "  user_id = CASE WHEN excluded.last_us >= last_us THEN excluded.user_id "
          "    ELSE user_id END,"
          "  last_source = CASE WHEN excluded.last_us >= last_us THEN excluded.last_source "
          "    ELSE last_source END,"
          "  last_us = max(last_us, excluded.last_us),"
          "  byte_count = CASE WHEN byte_count > ?7 - excluded.byte_count THEN ?7 "
          "    ELSE byte_count + excluded.byte_count END,"
          "  event_count = CASE WHEN event_count > ?7 - excluded.event_count THEN ?7 "
          "    ELSE event_count + excluded.event_count END")));
  for (const ActivityRow& activity : batch) {
    TP_RETURN_IF_ERROR(upsert.Reset());
    TP_RETURN_IF_ERROR(upsert.Bind(1, activity.workspace_id));
    TP_RETURN_IF_ERROR(upsert.Bind(2, activity.user_id));
    TP_RETURN_IF_ERROR(upsert.Bind(3, TimeToMicros(activity.last_time)));
    TP_RETURN_IF_ERROR(upsert.Bind(4, static_cast<int64_t>(activity.last_source)));
    TP_RETURN_IF_ERROR(upsert.Bind(5, activity.byte_count));
    TP_RETURN_IF_ERROR(
        upsert.Bind(6, activity.event_count == 0 ? int64_t{1} : activity.event_count));
    TP_RETURN_IF_ERROR(upsert.Bind(7, kMaxInt64));
    TP_RETURN_IF_ERROR(Run(upsert));
  }
  return txn.Commit();
}

absl::StatusOr<std::optional<ActivityRow>> ScalerStore::GetActivity(
    const std::string& workspace_id) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement select,
                      db_.Prepare(absl::StrCat("SELECT ", kActivityColumns,
                                               " FROM activity WHERE workspace_id = ?")));
  TP_RETURN_IF_ERROR(select.Bind(1, workspace_id));
  TP_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) {
    return std::optional<ActivityRow>();
  }
  return std::optional<ActivityRow>(ReadActivity(select));
}

// ---------------------------------------------------------------------------------------
// Policy

absl::StatusOr<ScalerStore::StoredPolicy> ScalerStore::GetPolicy() {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement select,
                      db_.Prepare("SELECT policy, version FROM policy WHERE singleton = 1"));
  TP_ASSIGN_OR_RETURN(bool found, select.Step());
  StoredPolicy stored;
  if (!found) {
    return stored;
  }
  if (!stored.policy.ParseFromString(select.ColumnBlob(0))) {
    return absl::InternalError("scaler store: the stored idle policy does not parse");
  }
  stored.version = select.ColumnInt(1);
  return stored;
}

absl::StatusOr<int64_t> ScalerStore::SetPolicy(const v1::IdlePolicy& policy,
                                               int64_t expected_version) {
  std::string bytes;
  if (!policy.SerializeToString(&bytes)) {
    return absl::InternalError("scaler store: the idle policy does not serialize");
  }
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Transaction txn, db_.Begin());
  int64_t version = 0;
  {
    TP_ASSIGN_OR_RETURN(Statement select,
                        db_.Prepare("SELECT version FROM policy WHERE singleton = 1"));
    TP_ASSIGN_OR_RETURN(bool found, select.Step());
    if (found) {
      version = select.ColumnInt(0);
    }
  }
  if (expected_version != 0 && expected_version != version) {
    return absl::AbortedError(absl::StrCat("the idle policy changed meanwhile (now version ",
                                           version, ", expected ", expected_version,
                                           "); read it again"));
  }
  TP_ASSIGN_OR_RETURN(Statement upsert,
                      db_.Prepare("INSERT INTO policy (singleton, policy, version) "
                                  "VALUES (1, ?1, ?2) ON CONFLICT (singleton) DO UPDATE SET "
                                  "policy = excluded.policy, version = excluded.version"));
  TP_RETURN_IF_ERROR(upsert.BindBlob(1, bytes));
  TP_RETURN_IF_ERROR(upsert.Bind(2, version + 1));
  TP_RETURN_IF_ERROR(Run(upsert));
  TP_RETURN_IF_ERROR(txn.Commit());
  return version + 1;
}

// ---------------------------------------------------------------------------------------
// Pins

absl::Status ScalerStore::PutPin(const PinRow& pin) {
  TP_RETURN_IF_ERROR(RequireWorkspaceId(pin.workspace_id));
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(
      Statement upsert,
      db_.Prepare(absl::StrCat("INSERT INTO pins (", kPinColumns,
                               ") VALUES (?, ?, ?, ?, ?) ON CONFLICT (workspace_id) DO UPDATE "
                               "SET pin_us = excluded.pin_us, expire_us = excluded.expire_us, "
                               "reason = excluded.reason, pinned_by = excluded.pinned_by")));
  TP_RETURN_IF_ERROR(upsert.Bind(1, pin.workspace_id));
  TP_RETURN_IF_ERROR(upsert.Bind(2, TimeToMicros(pin.pin_time)));
  TP_RETURN_IF_ERROR(upsert.Bind(3, TimeToMicros(pin.expire_time)));
  TP_RETURN_IF_ERROR(upsert.Bind(4, pin.reason));
  TP_RETURN_IF_ERROR(upsert.Bind(5, pin.pinned_by));
  return Run(upsert);
}

absl::Status ScalerStore::DeletePin(const std::string& workspace_id) {
  absl::MutexLock lock(&mu_);
  return DeleteWorkspaceRows(db_, "pins", workspace_id);
}

absl::StatusOr<std::optional<PinRow>> ScalerStore::GetPin(const std::string& workspace_id) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(
      Statement select,
      db_.Prepare(absl::StrCat("SELECT ", kPinColumns, " FROM pins WHERE workspace_id = ?")));
  TP_RETURN_IF_ERROR(select.Bind(1, workspace_id));
  TP_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) {
    return std::optional<PinRow>();
  }
  return std::optional<PinRow>(ReadPin(select));
}

// ---------------------------------------------------------------------------------------
// Decisions

absl::Status ScalerStore::AppendDecision(const DecisionRow& decision) {
  if (decision.decision_id.empty()) {
    return absl::InvalidArgumentError("decision_id is required");
  }
  TP_RETURN_IF_ERROR(RequireWorkspaceId(decision.workspace_id));
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement insert,
                      db_.Prepare(absl::StrCat("INSERT INTO decisions (", kDecisionColumns,
                                               ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")));
  TP_RETURN_IF_ERROR(insert.Bind(1, decision.decision_id));
  TP_RETURN_IF_ERROR(insert.Bind(2, decision.workspace_id));
  TP_RETURN_IF_ERROR(insert.Bind(3, TimeToMicros(decision.decide_time)));
  TP_RETURN_IF_ERROR(insert.Bind(4, static_cast<int64_t>(decision.action)));
  TP_RETURN_IF_ERROR(insert.Bind(5, static_cast<int64_t>(decision.reason)));
  TP_RETURN_IF_ERROR(insert.Bind(6, EncodeKeepAwakeReasons(decision.keep_awake_reasons)));
  TP_RETURN_IF_ERROR(insert.Bind(7, DurationToMicros(decision.idle_duration)));
  TP_RETURN_IF_ERROR(insert.Bind(8, int64_t{decision.succeeded ? 1 : 0}));
  TP_RETURN_IF_ERROR(insert.Bind(9, decision.error_code));
  TP_RETURN_IF_ERROR(insert.Bind(10, decision.detail));
  return Run(insert);
}

absl::StatusOr<Page<DecisionRow>> ScalerStore::ListDecisions(const DecisionFilter& filter,
                                                             int page_size,
                                                             const std::string& page_token) {
  TP_RETURN_IF_ERROR(CheckPageSize(page_size));
  Query query;
  query.Add(absl::StrCat("SELECT ", kDecisionColumns, " FROM decisions WHERE 1"));
  query.AddIn("workspace_id", filter.workspace_ids);
  if (filter.action != v1::DECISION_ACTION_UNSPECIFIED) {
    query.Add(" AND action = ?", static_cast<int64_t>(filter.action));
  }
  query.AddTimeRange("decide_us", filter.start_time, filter.end_time);
  if (!page_token.empty()) {
    // The key of the last row returned: (decide_us, decision_id).
    TP_ASSIGN_OR_RETURN(std::vector<std::string> key,
                        DecodePageToken(kDecisionToken, 2, page_token));
    TP_ASSIGN_OR_RETURN(int64_t decide_us, ParseTokenInt(key[0]));
    query.Add(" AND (decide_us, decision_id) < (?", decide_us);
    query.Add(", ?)", std::move(key[1]));
  }
  query.Add(" ORDER BY decide_us DESC, decision_id DESC LIMIT ?", int64_t{page_size} + 1);

  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement select, query.Prepare(db_));
  Page<DecisionRow> page;
  for (;;) {
    TP_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) {
      break;
    }
    if (static_cast<int>(page.items.size()) == page_size) {
      const DecisionRow& last = page.items.back();
      page.next_page_token = EncodePageToken(
          kDecisionToken, {absl::StrCat(TimeToMicros(last.decide_time)), last.decision_id});
      break;
    }
    TP_ASSIGN_OR_RETURN(DecisionRow decision, ReadDecision(select));
    page.items.push_back(std::move(decision));
  }
  return page;
}

// ---------------------------------------------------------------------------------------
// Jobs

absl::Status ScalerStore::ReplaceJobs(const std::string& workspace_id,
                                      const std::vector<JobRow>& jobs) {
  TP_RETURN_IF_ERROR(RequireWorkspaceId(workspace_id));
  std::set<std::string> job_ids;
  for (const JobRow& job : jobs) {
    if (!job.workspace_id.empty() && job.workspace_id != workspace_id) {
      return absl::InvalidArgumentError(absl::StrCat("job ", job.job_id, " belongs to workspace ",
                                                     job.workspace_id, ", not ", workspace_id));
    }
    if (job.job_id.empty()) {
      return absl::InvalidArgumentError("every job needs a job_id");
    }
    if (!job_ids.insert(job.job_id).second) {
      return absl::InvalidArgumentError(absl::StrCat("job_id ", job.job_id, " is repeated"));
    }
  }

  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Transaction txn, db_.Begin());
  {
    Query remove;
    remove.Add("DELETE FROM jobs WHERE workspace_id = ?", workspace_id);
    if (!job_ids.empty()) {
      remove.Add(" AND job_id NOT IN (");
      bool first = true;
      for (const std::string& job_id : job_ids) {
        remove.Add(first ? "?" : ", ?", job_id);
        first = false;
      }
      remove.Add(")");
    }
    TP_ASSIGN_OR_RETURN(Statement del, remove.Prepare(db_));
    TP_RETURN_IF_ERROR(Run(del));
  }
  // accounted_until is written for new jobs only; a job whose id stays keeps its own.
  TP_ASSIGN_OR_RETURN(
      Statement upsert,
      db_.Prepare(absl::StrCat(
          "INSERT INTO jobs (", kJobColumns,
          ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workspace_id, job_id) DO UPDATE SET "
          "name = excluded.name, schedule = excluded.schedule, timezone = excluded.timezone, "
          "enabled = excluded.enabled, missed_run_policy = excluded.missed_run_policy, "
          "anchor_us = excluded.anchor_us")));
  for (const JobRow& job : jobs) {
    TP_RETURN_IF_ERROR(upsert.Reset());
    TP_RETURN_IF_ERROR(upsert.Bind(1, workspace_id));
    TP_RETURN_IF_ERROR(upsert.Bind(2, job.job_id));
    TP_RETURN_IF_ERROR(upsert.Bind(3, job.name));
    TP_RETURN_IF_ERROR(upsert.Bind(4, job.schedule));
    TP_RETURN_IF_ERROR(upsert.Bind(5, job.timezone));
    TP_RETURN_IF_ERROR(upsert.Bind(6, int64_t{job.enabled ? 1 : 0}));
    TP_RETURN_IF_ERROR(upsert.Bind(7, static_cast<int64_t>(job.missed_run_policy)));
    TP_RETURN_IF_ERROR(upsert.Bind(8, TimeToMicros(job.anchor_time)));
    TP_RETURN_IF_ERROR(upsert.Bind(9, TimeToMicros(job.accounted_until)));
    TP_RETURN_IF_ERROR(Run(upsert));
  }
  return txn.Commit();
}

absl::StatusOr<std::vector<JobRow>> ScalerStore::ListJobs(const std::string& workspace_id) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement select, db_.Prepare(absl::StrCat(
                                            "SELECT ", kJobColumns,
                                            " FROM jobs WHERE workspace_id = ? ORDER BY job_id")));
  TP_RETURN_IF_ERROR(select.Bind(1, workspace_id));
  std::vector<JobRow> jobs;
  for (;;) {
    TP_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) {
      break;
    }
    jobs.push_back(ReadJob(select));
  }
  return jobs;
}

absl::Status ScalerStore::SetJobAccountedUntil(const std::string& workspace_id,
                                               const std::string& job_id,
                                               absl::Time accounted_until) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement update, db_.Prepare("UPDATE jobs SET accounted_until_us = ? "
                                                    "WHERE workspace_id = ? AND job_id = ?"));
  TP_RETURN_IF_ERROR(update.Bind(1, TimeToMicros(accounted_until)));
  TP_RETURN_IF_ERROR(update.Bind(2, workspace_id));
  TP_RETURN_IF_ERROR(update.Bind(3, job_id));
  TP_RETURN_IF_ERROR(Run(update));
  if (db_.Changes() == 0) {
    return absl::NotFoundError("no such job in the workspace");
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// Job runs

absl::Status ScalerStore::PutJobRun(const JobRunRow& run) {
  TP_RETURN_IF_ERROR(RequireWorkspaceId(run.workspace_id));
  if (run.job_id.empty()) {
    return absl::InvalidArgumentError("job_id is required");
  }
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(
      Statement upsert,
      db_.Prepare(absl::StrCat(
          "INSERT INTO job_runs (", kJobRunColumns,
          ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
          "ON CONFLICT (workspace_id, job_id, scheduled_us) DO UPDATE SET "
          "job_name = excluded.job_name, timezone = excluded.timezone, "
          "start_us = excluded.start_us, outcome = excluded.outcome, "
          "miss_reason = excluded.miss_reason, missed_run_policy = excluded.missed_run_policy")));
  TP_RETURN_IF_ERROR(upsert.Bind(1, run.workspace_id));
  TP_RETURN_IF_ERROR(upsert.Bind(2, run.job_id));
  TP_RETURN_IF_ERROR(upsert.Bind(3, run.job_name));
  TP_RETURN_IF_ERROR(upsert.Bind(4, TimeToMicros(run.scheduled_time)));
  TP_RETURN_IF_ERROR(upsert.Bind(5, run.timezone));
  TP_RETURN_IF_ERROR(upsert.Bind(6, TimeToMicros(run.start_time)));
  TP_RETURN_IF_ERROR(upsert.Bind(7, static_cast<int64_t>(run.outcome)));
  TP_RETURN_IF_ERROR(upsert.Bind(8, static_cast<int64_t>(run.miss_reason)));
  TP_RETURN_IF_ERROR(upsert.Bind(9, static_cast<int64_t>(run.missed_run_policy)));
  return Run(upsert);
}

absl::StatusOr<std::optional<JobRunRow>> ScalerStore::GetJobRun(const std::string& workspace_id,
                                                                const std::string& job_id,
                                                                absl::Time scheduled_time) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(
      Statement select,
      db_.Prepare(absl::StrCat("SELECT ", kJobRunColumns,
                               " FROM job_runs WHERE workspace_id = ? AND job_id = ? AND "
                               "scheduled_us = ?")));
  TP_RETURN_IF_ERROR(select.Bind(1, workspace_id));
  TP_RETURN_IF_ERROR(select.Bind(2, job_id));
  TP_RETURN_IF_ERROR(select.Bind(3, TimeToMicros(scheduled_time)));
  TP_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) {
    return std::optional<JobRunRow>();
  }
  return std::optional<JobRunRow>(ReadJobRun(select));
}

absl::StatusOr<Page<JobRunRow>> ScalerStore::ListJobRuns(const JobRunFilter& filter, int page_size,
                                                         const std::string& page_token) {
  TP_RETURN_IF_ERROR(CheckPageSize(page_size));
  Query query;
  query.Add(absl::StrCat("SELECT ", kJobRunColumns, " FROM job_runs WHERE 1"));
  query.AddIn("workspace_id", filter.workspace_ids);
  if (!filter.job_id.empty()) {
    query.Add(" AND job_id = ?", filter.job_id);
  }
  if (filter.outcome != v1::JOB_RUN_OUTCOME_UNSPECIFIED) {
    query.Add(" AND outcome = ?", static_cast<int64_t>(filter.outcome));
  }
  query.AddTimeRange("scheduled_us", filter.start_time, filter.end_time);
  if (!page_token.empty()) {
    // The key of the last row returned: (scheduled_us, job_id, workspace_id), ordered
    // scheduled_us descending, then job_id and workspace_id ascending.
    TP_ASSIGN_OR_RETURN(std::vector<std::string> key, DecodePageToken(kJobRunToken, 3, page_token));
    TP_ASSIGN_OR_RETURN(int64_t scheduled_us, ParseTokenInt(key[0]));
    query.Add(" AND scheduled_us <= ?", scheduled_us);
    query.Add(" AND (scheduled_us < ?", scheduled_us);
    query.Add(" OR (job_id, workspace_id) > (?", std::move(key[1]));
    query.Add(", ?))", std::move(key[2]));
  }
  query.Add(" ORDER BY scheduled_us DESC, job_id, workspace_id LIMIT ?", int64_t{page_size} + 1);

  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement select, query.Prepare(db_));
  Page<JobRunRow> page;
  for (;;) {
    TP_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) {
      break;
    }
    if (static_cast<int>(page.items.size()) == page_size) {
      const JobRunRow& last = page.items.back();
      page.next_page_token = EncodePageToken(
          kJobRunToken,
          {absl::StrCat(TimeToMicros(last.scheduled_time)), last.job_id, last.workspace_id});
      break;
    }
    page.items.push_back(ReadJobRun(select));
  }
  return page;
}

// ---------------------------------------------------------------------------------------
// Marks

absl::StatusOr<WorkspaceMarks> ScalerStore::GetMarks(const std::string& workspace_id) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(
      Statement select,
      db_.Prepare(absl::StrCat("SELECT ", kMarksColumns, " FROM marks WHERE workspace_id = ?")));
  TP_RETURN_IF_ERROR(select.Bind(1, workspace_id));
  TP_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) {
    WorkspaceMarks marks;
    marks.workspace_id = workspace_id;
    return marks;
  }
  return ReadMarks(select);
}

absl::Status ScalerStore::PutMarks(const WorkspaceMarks& marks) {
  TP_RETURN_IF_ERROR(RequireWorkspaceId(marks.workspace_id));
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(
      Statement upsert,
      db_.Prepare(absl::StrCat("INSERT INTO marks (", kMarksColumns,
                               ") VALUES (?, ?, ?, ?) ON CONFLICT (workspace_id) DO UPDATE SET "
                               "last_wake_us = excluded.last_wake_us, "
                               "last_sleep_us = excluded.last_sleep_us, "
                               "keep_awake_signature = excluded.keep_awake_signature")));
  TP_RETURN_IF_ERROR(upsert.Bind(1, marks.workspace_id));
  TP_RETURN_IF_ERROR(upsert.Bind(2, TimeToMicros(marks.last_wake_time)));
  TP_RETURN_IF_ERROR(upsert.Bind(3, TimeToMicros(marks.last_sleep_time)));
  TP_RETURN_IF_ERROR(upsert.Bind(4, marks.keep_awake_signature));
  return Run(upsert);
}

// ---------------------------------------------------------------------------------------
// Heartbeat

absl::StatusOr<absl::Time> ScalerStore::GetHeartbeat() {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement select,
                      db_.Prepare("SELECT heartbeat_us FROM heartbeat WHERE singleton = 1"));
  TP_ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) {
    return absl::InfinitePast();
  }
  return MicrosToTime(select.ColumnInt(0));
}

absl::Status ScalerStore::SetHeartbeat(absl::Time at) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Statement upsert,
                      db_.Prepare("INSERT INTO heartbeat (singleton, heartbeat_us) VALUES (1, ?) "
                                  "ON CONFLICT (singleton) DO UPDATE SET "
                                  "heartbeat_us = excluded.heartbeat_us"));
  TP_RETURN_IF_ERROR(upsert.Bind(1, TimeToMicros(at)));
  return Run(upsert);
}

// ---------------------------------------------------------------------------------------
// Forgetting

absl::Status ScalerStore::ForgetWorkspace(const std::string& workspace_id) {
  absl::MutexLock lock(&mu_);
  TP_ASSIGN_OR_RETURN(Transaction txn, db_.Begin());
  for (absl::string_view table : {"activity", "pins", "jobs", "marks"}) {
    TP_RETURN_IF_ERROR(DeleteWorkspaceRows(db_, table, workspace_id));
  }
  return txn.Commit();
}

}  // namespace tidepool::scaler
