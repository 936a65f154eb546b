#include "services/audit/audit_log.h"

#include <filesystem>
#include <map>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/time_util.h"
#include "lib/crypto/crypto.h"
#include "lib/log.h"
#include "lib/status_macros.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "services/audit/event_validation.h"

namespace tidepool::audit {
namespace {

namespace commonpb = ::tidepool::common::v1;
using google::protobuf::util::TimeUtil;

constexpr absl::string_view kRecordDomain = "tidepool-audit-record/v1\n";
constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;
constexpr int kReadBatch = 1000;
constexpr size_t kHashSize = 32;

const std::vector<Migration>& Migrations() {
  static const std::vector<Migration>* migrations = new std::vector<Migration>{
      {1,
       "CREATE TABLE records ("
       "  seq INTEGER PRIMARY KEY,"
       "  event_id TEXT NOT NULL UNIQUE,"
       "  server_time_us INTEGER NOT NULL,"
       "  actor_id TEXT NOT NULL,"
       "  action TEXT NOT NULL,"
       "  subject_user_id TEXT NOT NULL,"
       "  workspace_id TEXT NOT NULL,"
       "  outcome INTEGER NOT NULL,"
       "  record BLOB NOT NULL,"
       "  hash BLOB NOT NULL);"
       "CREATE INDEX records_subject ON records(subject_user_id, seq);"
       "CREATE INDEX records_workspace ON records(workspace_id, seq);"
       "CREATE INDEX records_actor ON records(actor_id, seq);"
       // Defence in depth: the store itself refuses to rewrite history.
       "CREATE TRIGGER records_no_update BEFORE UPDATE ON records "
       "BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;"
       "CREATE TRIGGER records_no_delete BEFORE DELETE ON records "
       "BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;"},
  };
  return *migrations;
}

int64_t ToMicros(const google::protobuf::Timestamp& t) {
  return TimeUtil::TimestampToMicroseconds(t);
}

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

// Validates an action prefix: one or more dotted snake-case words.
bool IsValidActionPrefix(absl::string_view prefix) {
  return IsValidAction(prefix) || IsValidAction(absl::StrCat(prefix, ".x"));
}

absl::Status ValidateFilter(const v1::AuditFilter& filter) {
  if (!filter.action_prefix().empty() && !IsValidActionPrefix(filter.action_prefix())) {
    return absl::InvalidArgumentError("action_prefix must be dotted lower-case words");
  }
  if (filter.has_start_time() && filter.has_end_time() &&
      ToMicros(filter.start_time()) >= ToMicros(filter.end_time())) {
    return absl::InvalidArgumentError("start_time must be before end_time");
  }
  if (!commonpb::Outcome_IsValid(filter.outcome())) {
    return absl::InvalidArgumentError("outcome is not a known value");
  }
  for (const std::string* field :
       {&filter.actor_id(), &filter.subject_user_id(), &filter.workspace_id()}) {
    if (field->size() > 128) {
      return absl::InvalidArgumentError("filter ids are at most 128 bytes");
    }
  }
  return absl::OkStatus();
}

// One bound value of a filter condition: text, or an integer when `is_int`.
// (Not a std::variant: GCC 12 reports a false maybe-uninitialized on moving one.)
struct SqlArg {
  bool is_int = false;
  int64_t integer = 0;
  std::string text;
};

SqlArg Text(std::string value) { return SqlArg{false, 0, std::move(value)}; }
SqlArg Integer(int64_t value) { return SqlArg{true, value, ""}; }

// SQL conditions and their bindings for a filter.
struct FilterSql {
  std::string where;
  std::vector<SqlArg> args;
};

FilterSql BuildFilterSql(const v1::AuditFilter& filter) {
  FilterSql sql;
  auto add = [&](absl::string_view condition, SqlArg arg) {
    absl::StrAppend(&sql.where, " AND ", condition);
    sql.args.push_back(std::move(arg));
  };
  if (!filter.actor_id().empty()) {
    add("actor_id = ?", Text(filter.actor_id()));
  }
  if (!filter.subject_user_id().empty()) {
    add("subject_user_id = ?", Text(filter.subject_user_id()));
  }
  if (!filter.workspace_id().empty()) {
    add("workspace_id = ?", Text(filter.workspace_id()));
  }
  if (!filter.action_prefix().empty()) {
    // The action itself or anything below it, at a dot boundary (no LIKE: '_' is a wildcard).
    absl::StrAppend(&sql.where, " AND (action = ? OR substr(action, 1, ?) = ?)");
    sql.args.push_back(Text(filter.action_prefix()));
    sql.args.push_back(Integer(static_cast<int64_t>(filter.action_prefix().size() + 1)));
    sql.args.push_back(Text(absl::StrCat(filter.action_prefix(), ".")));
  }
  if (filter.outcome() != commonpb::OUTCOME_UNSPECIFIED) {
    add("outcome = ?", Integer(static_cast<int64_t>(filter.outcome())));
  }
  if (filter.has_start_time()) {
    add("server_time_us >= ?", Integer(ToMicros(filter.start_time())));
  }
  if (filter.has_end_time()) {
    add("server_time_us < ?", Integer(ToMicros(filter.end_time())));
  }
  return sql;
}

absl::Status BindAll(Statement& stmt, const FilterSql& sql, int first_index) {
  int index = first_index;
  for (const SqlArg& arg : sql.args) {
    TP_RETURN_IF_ERROR(arg.is_int ? stmt.Bind(index, arg.integer)
                                  : stmt.Bind(index, absl::string_view(arg.text)));
    ++index;
  }
  return absl::OkStatus();
}

// A page token names the last sequence returned and a digest of the filter it belongs to.
std::string FilterDigest(const v1::AuditFilter& filter) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    filter.SerializeToCodedStream(&coded);
  }
  return crypto::HexEncode(crypto::Sha256(bytes)).substr(0, 16);
}

std::string MakePageToken(uint64_t last_sequence, const v1::AuditFilter& filter) {
  return absl::WebSafeBase64Escape(absl::StrCat(last_sequence, ":", FilterDigest(filter)));
}

absl::StatusOr<uint64_t> ParsePageToken(absl::string_view token, const v1::AuditFilter& filter) {
  std::string raw;
  std::vector<std::string> parts;
  uint64_t sequence = 0;
  if (!absl::WebSafeBase64Unescape(token, &raw) || (parts = absl::StrSplit(raw, ':')).size() != 2 ||
      !absl::SimpleAtoi(parts[0], &sequence) || parts[1] != FilterDigest(filter)) {
    return absl::InvalidArgumentError("page_token is invalid or belongs to another filter");
  }
  return sequence;
}

v1::VerifyResponse Broken(uint64_t sequence, v1::VerifyFailure failure, std::string detail) {
  v1::VerifyResponse response;
  response.set_result(v1::VERIFY_RESULT_BROKEN);
  response.set_first_bad_sequence(sequence);
  response.set_failure(failure);
  response.set_detail(std::move(detail));
  return response;
}

}  // namespace

std::string CanonicalBytes(const commonpb::AuditEvent& event) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    event.SerializeToCodedStream(&coded);
  }
  return bytes;
}

std::string RecordHash(const commonpb::AuditEvent& event) {
  commonpb::AuditEvent copy = event;
  copy.clear_hash();
  return crypto::Sha256(absl::StrCat(kRecordDomain, CanonicalBytes(copy)));
}

struct AuditLog::Metrics {
  explicit Metrics(prometheus::Registry& registry)
      : appended(prometheus::BuildCounter()
                     .Name("tidepool_audit_appended_events_total")
                     .Help("Events durably appended to the audit log (duplicates not counted).")
                     .Register(registry)
                     .Add({})),
        duplicates(prometheus::BuildCounter()
                       .Name("tidepool_audit_duplicate_events_total")
                       .Help("Appended events whose event_id was already stored (replays).")
                       .Register(registry)
                       .Add({})),
        batch_size(prometheus::BuildHistogram()
                       .Name("tidepool_audit_append_batch_size")
                       .Help("Events per Append batch.")
                       .Register(registry)
                       .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 5, 10, 20, 50, 100,
                                                                        200, 500, 1000})),
        head(prometheus::BuildGauge()
                 .Name("tidepool_audit_head_sequence")
                 .Help("The sequence of the newest record.")
                 .Register(registry)
                 .Add({})),
        checkpoints(prometheus::BuildCounter()
                        .Name("tidepool_audit_checkpoints_total")
                        .Help("Signed checkpoints appended to the checkpoint file.")
                        .Register(registry)
                        .Add({})),
        verify_family(prometheus::BuildCounter()
                          .Name("tidepool_audit_verify_total")
                          .Help("Verify runs by result.")
                          .Register(registry)),
        tampered(prometheus::BuildGauge()
                     .Name("tidepool_audit_tampered")
                     .Help("1 if the store was found shorter than or forked from its last "
                           "signed checkpoint at start.")
                     .Register(registry)
                     .Add({})) {}
  prometheus::Counter& appended;
  prometheus::Counter& duplicates;
  prometheus::Histogram& batch_size;
  prometheus::Gauge& head;
  prometheus::Counter& checkpoints;
  prometheus::Family<prometheus::Counter>& verify_family;
  prometheus::Gauge& tampered;
};

AuditLog::AuditLog(AuditLogOptions options, Clock& clock, CheckpointSigner signer,
                   std::unique_ptr<CheckpointFile> checkpoints, std::unique_ptr<SqliteDb> writer,
                   std::unique_ptr<SqliteDb> reader, prometheus::Registry* registry)
    : options_(std::move(options)),
      clock_(clock),
      signer_(std::move(signer)),
      checkpoints_(std::move(checkpoints)),
      metrics_(registry != nullptr ? std::make_unique<Metrics>(*registry) : nullptr),
      writer_(std::move(writer)),
      reader_(std::move(reader)) {}

AuditLog::~AuditLog() = default;

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(const AuditLogOptions& options,
                                                         Clock& clock,
                                                         prometheus::Registry* registry) {
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot create ", options.dir, ": ", ec.message()));
  }
  TP_ASSIGN_OR_RETURN(CheckpointSigner signer,
                      CheckpointSigner::LoadOrCreate(options.dir + "/checkpoint_signing.key",
                                                     options.dir + "/checkpoint_keys.txt"));
  TP_ASSIGN_OR_RETURN(
      std::unique_ptr<CheckpointFile> checkpoints,
      CheckpointFile::Open(options.dir + "/checkpoints.log", options.append_only_checkpoints));
  SqliteOptions db_options;
  db_options.durability = Durability::kFull;
  TP_ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> writer,
                      SqliteDb::Open(options.dir + "/records.db", db_options));
  TP_RETURN_IF_ERROR(writer->Migrate(Migrations()));
  TP_ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> reader,
                      SqliteDb::Open(options.dir + "/records.db", db_options));
  auto log = std::unique_ptr<AuditLog>(new AuditLog(options, clock, std::move(signer),
                                                    std::move(checkpoints), std::move(writer),
                                                    std::move(reader), registry));
  {
    absl::MutexLock lock(&log->write_mu_);
    TP_RETURN_IF_ERROR(log->LoadHead());
    // Cover records an unclean stop left without a checkpoint.
    if (!log->tampered_ && log->head_sequence_ > log->checkpointed_size_) {
      TP_RETURN_IF_ERROR(log->CheckpointLocked(clock.Now()));
    }
  }
  return log;
}

absl::Status AuditLog::LoadHead() {
  TP_ASSIGN_OR_RETURN(Statement stmt,
                      writer_->Prepare("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1"));
  TP_ASSIGN_OR_RETURN(bool row, stmt.Step());
  head_sequence_ = row ? static_cast<uint64_t>(stmt.ColumnInt(0)) : 0;
  head_hash_ = row ? stmt.ColumnBlob(1) : std::string(kHashSize, '\0');
  TP_ASSIGN_OR_RETURN(std::vector<CheckpointLine> lines, checkpoints_->ReadAll());
  for (const CheckpointLine& line : lines) {
    if (line.well_formed && line.checkpoint.tree_size >= checkpointed_size_) {
      checkpointed_size_ = line.checkpoint.tree_size;
      last_checkpoint_time_ = absl::FromUnixSeconds(line.checkpoint.unix_seconds);
      const std::string expected = line.checkpoint.head_hash;
      if (checkpointed_size_ > head_sequence_) {
        tampered_ = true;
      } else if (checkpointed_size_ > 0) {
        absl::StatusOr<std::string> stored;
        {
          TP_ASSIGN_OR_RETURN(Statement at,
                              writer_->Prepare("SELECT hash FROM records WHERE seq = ?"));
          TP_RETURN_IF_ERROR(at.Bind(1, static_cast<int64_t>(checkpointed_size_)));
          TP_ASSIGN_OR_RETURN(bool found, at.Step());
          stored = found ? at.ColumnBlob(0) : std::string();
        }
        tampered_ = *stored != expected;
      }
    }
  }
  if (tampered_) {
    LogError(
        "audit log is shorter than or forked from its last signed checkpoint; appends are "
        "refused until it is examined (tidepoolctl audit verify)",
        {{"log_head", head_sequence_}, {"checkpoint_size", checkpointed_size_}});
  }
  if (metrics_ != nullptr) {
    metrics_->head.Set(static_cast<double>(head_sequence_));
    metrics_->tampered.Set(tampered_ ? 1 : 0);
  }
  return absl::OkStatus();
}

absl::StatusOr<AppendResult> AuditLog::Append(std::vector<commonpb::AuditEvent> events,
                                              absl::string_view source_service) {
  if (events.empty()) {
    return absl::InvalidArgumentError("the batch is empty");
  }
  for (size_t i = 0; i < events.size(); ++i) {
    absl::Status valid = ValidateEventForAppend(events[i]);
    if (!valid.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("event ", i, ": ", valid.message()));
    }
  }
  absl::MutexLock lock(&write_mu_);
  if (tampered_) {
    return absl::FailedPreconditionError(
        "the audit log is shorter than or forked from its last signed checkpoint; appends are "
        "refused until it is examined");
  }
  const absl::Time now = clock_.Now();
  AppendResult result;
  result.commit_time = now;
  uint64_t sequence = head_sequence_;
  std::string prev_hash = head_hash_;
  std::map<std::string, uint64_t> in_batch;
  uint64_t added = 0;
  {
    TP_ASSIGN_OR_RETURN(Transaction txn, writer_->Begin());
    TP_ASSIGN_OR_RETURN(Statement find,
                        writer_->Prepare("SELECT seq FROM records WHERE event_id = ?"));
    TP_ASSIGN_OR_RETURN(
        Statement insert,
        writer_->Prepare("INSERT INTO records (seq, event_id, server_time_us, actor_id, action, "
                         "subject_user_id, workspace_id, outcome, record, hash) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    for (commonpb::AuditEvent& event : events) {
      if (auto it = in_batch.find(event.event_id()); it != in_batch.end()) {
        result.sequences.push_back(it->second);
        continue;
      }
      TP_RETURN_IF_ERROR(find.Reset());
      TP_RETURN_IF_ERROR(find.Bind(1, absl::string_view(event.event_id())));
      TP_ASSIGN_OR_RETURN(bool exists, find.Step());
      if (exists) {
        result.sequences.push_back(static_cast<uint64_t>(find.ColumnInt(0)));
        continue;
      }
      ++sequence;
      event.set_sequence(sequence);
      *event.mutable_server_time() = ToTimestamp(now);
      event.set_source_service(std::string(source_service));
      event.set_prev_hash(prev_hash);
      event.set_hash(RecordHash(event));
      TP_RETURN_IF_ERROR(insert.Reset());
      TP_RETURN_IF_ERROR(insert.Bind(1, static_cast<int64_t>(sequence)));
      TP_RETURN_IF_ERROR(insert.Bind(2, absl::string_view(event.event_id())));
      TP_RETURN_IF_ERROR(insert.Bind(3, ToMicros(event.server_time())));
      TP_RETURN_IF_ERROR(insert.Bind(4, absl::string_view(event.actor().id())));
      TP_RETURN_IF_ERROR(insert.Bind(5, absl::string_view(event.action())));
      TP_RETURN_IF_ERROR(insert.Bind(6, absl::string_view(event.subject_user_id())));
      TP_RETURN_IF_ERROR(insert.Bind(7, absl::string_view(event.workspace_id())));
      TP_RETURN_IF_ERROR(insert.Bind(8, static_cast<int64_t>(event.outcome())));
      TP_RETURN_IF_ERROR(insert.BindBlob(9, CanonicalBytes(event)));
      TP_RETURN_IF_ERROR(insert.BindBlob(10, event.hash()));
      TP_RETURN_IF_ERROR(insert.Step().status());
      in_batch[event.event_id()] = sequence;
      result.sequences.push_back(sequence);
      prev_hash = event.hash();
      ++added;
    }
    absl::Status committed = txn.Commit();
    if (!committed.ok()) {
      return absl::UnavailableError(
          absl::StrCat("the audit store could not commit: ", committed.message()));
    }
  }
  head_sequence_ = sequence;
  head_hash_ = prev_hash;
  if (metrics_ != nullptr) {
    metrics_->appended.Increment(static_cast<double>(added));
    metrics_->duplicates.Increment(static_cast<double>(events.size() - added));
    metrics_->batch_size.Observe(static_cast<double>(events.size()));
    metrics_->head.Set(static_cast<double>(head_sequence_));
  }
  if (head_sequence_ - checkpointed_size_ >= options_.checkpoint_every_records) {
    // The batch is durable already; a failed checkpoint is retried by the next call.
    absl::Status checkpoint = CheckpointLocked(now);
    if (!checkpoint.ok()) {
      LogError("cannot write an audit checkpoint", {{"error", std::string(checkpoint.message())}});
    }
  }
  return result;
}

absl::Status AuditLog::CheckpointLocked(absl::Time now) {
  if (head_sequence_ == 0 || head_sequence_ == checkpointed_size_) {
    return absl::OkStatus();
  }
  TP_ASSIGN_OR_RETURN(SignedCheckpoint checkpoint, signer_.Sign(head_sequence_, head_hash_, now));
  TP_RETURN_IF_ERROR(checkpoints_->Append(checkpoint));
  checkpointed_size_ = head_sequence_;
  last_checkpoint_time_ = now;
  if (metrics_ != nullptr) {
    metrics_->checkpoints.Increment();
  }
  return absl::OkStatus();
}

absl::Status AuditLog::MaybeCheckpoint(bool force) {
  absl::MutexLock lock(&write_mu_);
  if (tampered_) {
    return absl::OkStatus();
  }
  const absl::Time now = clock_.Now();
  if (force || now - last_checkpoint_time_ >= options_.checkpoint_interval ||
      head_sequence_ - checkpointed_size_ >= options_.checkpoint_every_records) {
    return CheckpointLocked(now);
  }
  return absl::OkStatus();
}

uint64_t AuditLog::head_sequence() {
  absl::MutexLock lock(&write_mu_);
  return head_sequence_;
}

bool AuditLog::tampered() {
  absl::MutexLock lock(&write_mu_);
  return tampered_;
}

absl::StatusOr<QueryPage> AuditLog::Query(const v1::AuditFilter& filter, int page_size,
                                          absl::string_view page_token) {
  TP_RETURN_IF_ERROR(ValidateFilter(filter));
  if (page_size < 0) {
    return absl::InvalidArgumentError("page_size must not be negative");
  }
  page_size = page_size == 0 ? kDefaultPageSize : std::min(page_size, kMaxPageSize);
  int64_t before = INT64_MAX;
  if (!page_token.empty()) {
    TP_ASSIGN_OR_RETURN(uint64_t cursor, ParsePageToken(page_token, filter));
    before = static_cast<int64_t>(cursor);
  }
  const FilterSql sql = BuildFilterSql(filter);
  absl::MutexLock lock(&read_mu_);
  TP_ASSIGN_OR_RETURN(Statement stmt,
                      reader_->Prepare(absl::StrCat("SELECT seq, record FROM records WHERE seq < ?",
                                                    sql.where, " ORDER BY seq DESC LIMIT ?")));
  TP_RETURN_IF_ERROR(stmt.Bind(1, before));
  TP_RETURN_IF_ERROR(BindAll(stmt, sql, 2));
  TP_RETURN_IF_ERROR(stmt.Bind(static_cast<int>(sql.args.size()) + 2, page_size + 1));
  QueryPage page;
  for (;;) {
    TP_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) {
      break;
    }
    if (static_cast<int>(page.events.size()) == page_size) {
      page.next_page_token = MakePageToken(page.events.back().sequence(), filter);
      break;
    }
    commonpb::AuditEvent event;
    if (!event.ParseFromString(stmt.ColumnBlob(1))) {
      return absl::DataLossError(
          absl::StrCat("record ", stmt.ColumnInt(0), " cannot be decoded; run verify"));
    }
    page.events.push_back(std::move(event));
  }
  return page;
}

absl::Status AuditLog::Export(const v1::AuditFilter& filter,
                              const std::function<bool(const commonpb::AuditEvent&)>& sink) {
  TP_RETURN_IF_ERROR(ValidateFilter(filter));
  const int64_t head = static_cast<int64_t>(head_sequence());
  const FilterSql sql = BuildFilterSql(filter);
  int64_t after = 0;
  for (;;) {
    std::vector<commonpb::AuditEvent> batch;
    {
      absl::MutexLock lock(&read_mu_);
      TP_ASSIGN_OR_RETURN(Statement stmt,
                          reader_->Prepare(absl::StrCat(
                              "SELECT seq, record FROM records WHERE seq > ? AND seq <= ?",
                              sql.where, " ORDER BY seq ASC LIMIT ?")));
      TP_RETURN_IF_ERROR(stmt.Bind(1, after));
      TP_RETURN_IF_ERROR(stmt.Bind(2, head));
      TP_RETURN_IF_ERROR(BindAll(stmt, sql, 3));
      TP_RETURN_IF_ERROR(stmt.Bind(static_cast<int>(sql.args.size()) + 3, kReadBatch));
      for (;;) {
        TP_ASSIGN_OR_RETURN(bool row, stmt.Step());
        if (!row) {
          break;
        }
        after = stmt.ColumnInt(0);
        commonpb::AuditEvent event;
        if (!event.ParseFromString(stmt.ColumnBlob(1))) {
          return absl::DataLossError(
              absl::StrCat("record ", after, " cannot be decoded; run verify"));
        }
        batch.push_back(std::move(event));
      }
    }
    if (batch.empty()) {
      return absl::OkStatus();
    }
    for (const commonpb::AuditEvent& event : batch) {
      if (!sink(event)) {
        return absl::CancelledError("export stopped by the reader");
      }
    }
  }
}

absl::StatusOr<std::string> AuditLog::HashAt(uint64_t sequence) {
  absl::MutexLock lock(&read_mu_);
  TP_ASSIGN_OR_RETURN(Statement stmt, reader_->Prepare("SELECT hash FROM records WHERE seq = ?"));
  TP_RETURN_IF_ERROR(stmt.Bind(1, static_cast<int64_t>(sequence)));
  TP_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) {
    return absl::NotFoundError(absl::StrCat("record ", sequence, " is missing"));
  }
  return stmt.ColumnBlob(0);
}

absl::StatusOr<v1::VerifyResponse> AuditLog::Verify(uint64_t start_sequence,
                                                    uint64_t end_sequence) {
  if (start_sequence == 0) {
    return absl::InvalidArgumentError("start_sequence must be at least 1");
  }
  if (end_sequence != 0 && end_sequence < start_sequence) {
    return absl::InvalidArgumentError("end_sequence is before start_sequence");
  }
  // The head as the store has it now (not the in-memory head: the point is to check storage).
  uint64_t stored_head = 0;
  {
    absl::MutexLock lock(&read_mu_);
    TP_ASSIGN_OR_RETURN(Statement stmt, reader_->Prepare("SELECT max(seq) FROM records"));
    TP_ASSIGN_OR_RETURN(bool row, stmt.Step());
    stored_head = row && !stmt.ColumnIsNull(0) ? static_cast<uint64_t>(stmt.ColumnInt(0)) : 0;
  }
  const bool to_head = end_sequence == 0;
  const uint64_t end = to_head ? stored_head : end_sequence;
  TP_ASSIGN_OR_RETURN(std::vector<CheckpointLine> lines, checkpoints_->ReadAll());
  if (start_sequence > end && !(to_head && start_sequence == 1)) {
    return absl::NotFoundError(
        absl::StrCat("start_sequence ", start_sequence, " is beyond the head (", stored_head, ")"));
  }

  // Which record hashes the checkpoints in range need.
  std::map<uint64_t, std::string> needed;
  for (const CheckpointLine& line : lines) {
    if (line.well_formed && line.checkpoint.tree_size >= start_sequence &&
        line.checkpoint.tree_size <= end) {
      needed[line.checkpoint.tree_size];
    }
  }

  std::optional<v1::VerifyResponse> record_failure;
  uint64_t checked = 0;
  std::string prev_hash(kHashSize, '\0');
  if (start_sequence > 1) {
    absl::StatusOr<std::string> prev = HashAt(start_sequence - 1);
    if (prev.ok()) {
      prev_hash = *std::move(prev);
    } else {
      record_failure = Broken(start_sequence - 1, v1::VERIFY_FAILURE_SEQUENCE_GAP,
                              absl::StrCat("record ", start_sequence - 1, " is missing"));
    }
  }
  uint64_t expected = start_sequence;
  while (!record_failure.has_value() && expected <= end) {
    absl::MutexLock lock(&read_mu_);
    TP_ASSIGN_OR_RETURN(
        Statement stmt,
        reader_->Prepare("SELECT seq, event_id, server_time_us, actor_id, action, "
                         "subject_user_id, workspace_id, outcome, record, hash FROM records "
                         "WHERE seq >= ? AND seq <= ? ORDER BY seq ASC LIMIT ?"));
    TP_RETURN_IF_ERROR(stmt.Bind(1, static_cast<int64_t>(expected)));
    TP_RETURN_IF_ERROR(stmt.Bind(2, static_cast<int64_t>(end)));
    TP_RETURN_IF_ERROR(stmt.Bind(3, kReadBatch));
    int rows = 0;
    while (!record_failure.has_value()) {
      TP_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) {
        break;
      }
      ++rows;
      const auto seq = static_cast<uint64_t>(stmt.ColumnInt(0));
      if (seq != expected) {
        record_failure = Broken(expected, v1::VERIFY_FAILURE_SEQUENCE_GAP,
                                absl::StrCat("record ", expected, " is missing"));
        break;
      }
      const std::string blob = stmt.ColumnBlob(8);
      commonpb::AuditEvent event;
      if (!event.ParseFromString(blob)) {
        record_failure = Broken(seq, v1::VERIFY_FAILURE_MALFORMED_RECORD,
                                absl::StrCat("record ", seq, " cannot be decoded"));
        break;
      }
      if (event.sequence() != seq) {
        record_failure = Broken(seq, v1::VERIFY_FAILURE_SEQUENCE_ORDER,
                                absl::StrCat("the record stored at ", seq, " says it is record ",
                                             event.sequence(), " (records moved or swapped)"));
        break;
      }
      const std::string recomputed = RecordHash(event);
      if (CanonicalBytes(event) != blob || recomputed != event.hash() ||
          recomputed != stmt.ColumnBlob(9)) {
        record_failure = Broken(seq, v1::VERIFY_FAILURE_HASH_MISMATCH,
                                absl::StrCat("record ", seq, " does not match its hash (edited)"));
        break;
      }
      if (event.event_id() != stmt.ColumnText(1) ||
          ToMicros(event.server_time()) != stmt.ColumnInt(2) ||
          event.actor().id() != stmt.ColumnText(3) || event.action() != stmt.ColumnText(4) ||
          event.subject_user_id() != stmt.ColumnText(5) ||
          event.workspace_id() != stmt.ColumnText(6) ||
          static_cast<int64_t>(event.outcome()) != stmt.ColumnInt(7)) {
        record_failure = Broken(
            seq, v1::VERIFY_FAILURE_HASH_MISMATCH,
            absl::StrCat("record ", seq, "'s indexed columns differ from the hashed record"));
        break;
      }
      if (event.prev_hash() != prev_hash) {
        record_failure = Broken(seq, v1::VERIFY_FAILURE_PREV_HASH_MISMATCH,
                                absl::StrCat("record ", seq,
                                             " does not follow the record before it (a record "
                                             "was removed, inserted or replaced)"));
        break;
      }
      if (auto it = needed.find(seq); it != needed.end()) {
        it->second = recomputed;
      }
      prev_hash = recomputed;
      ++expected;
      ++checked;
    }
    if (rows == 0 && !record_failure.has_value()) {
      // Nothing at or after `expected` up to `end`.
      record_failure = Broken(expected, v1::VERIFY_FAILURE_SEQUENCE_GAP,
                              absl::StrCat("record ", expected, " is missing"));
    }
  }

  std::optional<v1::VerifyResponse> checkpoint_failure;
  auto note = [&](v1::VerifyResponse failure) {
    if (!checkpoint_failure.has_value() ||
        failure.first_bad_sequence() < checkpoint_failure->first_bad_sequence()) {
      checkpoint_failure = std::move(failure);
    }
  };
  uint64_t checkpoints_checked = 0;
  uint64_t largest = 0;
  for (const CheckpointLine& line : lines) {
    if (!line.well_formed) {
      note(Broken(start_sequence, v1::VERIFY_FAILURE_CHECKPOINT_SIGNATURE,
                  absl::StrCat("checkpoint file line ", line.line_number, " is malformed")));
      continue;
    }
    const SignedCheckpoint& cp = line.checkpoint;
    const bool in_range = cp.tree_size >= start_sequence && cp.tree_size <= end;
    if (to_head && cp.tree_size > stored_head) {
      note(Broken(stored_head + 1, v1::VERIFY_FAILURE_TRUNCATED,
                  absl::StrCat("a signed checkpoint covers ", cp.tree_size,
                               " records but the log holds ", stored_head)));
    }
    if (!in_range && !(to_head && cp.tree_size > stored_head)) {
      largest = std::max(largest, cp.tree_size);
      continue;
    }
    ++checkpoints_checked;
    absl::Status signature = VerifyCheckpoint(cp, signer_.trusted_keys());
    if (!signature.ok()) {
      note(Broken(cp.tree_size, v1::VERIFY_FAILURE_CHECKPOINT_SIGNATURE,
                  std::string(signature.message())));
    }
    if (cp.tree_size < largest) {
      note(Broken(cp.tree_size, v1::VERIFY_FAILURE_CHECKPOINT_ROLLBACK,
                  absl::StrCat("checkpoint at line ", line.line_number, " covers ", cp.tree_size,
                               " records, fewer than an earlier one (", largest, ")")));
    }
    largest = std::max(largest, cp.tree_size);
    if (in_range) {
      auto it = needed.find(cp.tree_size);
      if (it != needed.end() && !it->second.empty() && it->second != cp.head_hash) {
        note(Broken(cp.tree_size, v1::VERIFY_FAILURE_CHECKPOINT_MISMATCH,
                    absl::StrCat("the signed checkpoint at ", cp.tree_size,
                                 " names another head hash than the log (forked history)")));
      }
    }
  }

  v1::VerifyResponse response;
  if (record_failure.has_value() &&
      (!checkpoint_failure.has_value() ||
       record_failure->first_bad_sequence() <= checkpoint_failure->first_bad_sequence())) {
    response = *std::move(record_failure);
  } else if (checkpoint_failure.has_value()) {
    response = *std::move(checkpoint_failure);
  } else {
    response.set_result(v1::VERIFY_RESULT_OK);
  }
  response.set_start_sequence(start_sequence);
  response.set_end_sequence(end);
  response.set_verified_record_count(checked);
  response.set_verified_checkpoint_count(checkpoints_checked);
  if (metrics_ != nullptr) {
    metrics_->verify_family
        .Add({{"result", response.result() == v1::VERIFY_RESULT_OK ? "ok" : "broken"}})
        .Increment();
  }
  return response;
}

absl::StatusOr<v1::Checkpoint> AuditLog::LatestCheckpoint() {
  TP_ASSIGN_OR_RETURN(std::vector<CheckpointLine> lines, checkpoints_->ReadAll());
  const SignedCheckpoint* latest = nullptr;
  for (const CheckpointLine& line : lines) {
    if (line.well_formed && (latest == nullptr || line.checkpoint.tree_size >= latest->tree_size)) {
      latest = &line.checkpoint;
    }
  }
  if (latest == nullptr) {
    return absl::NotFoundError("no checkpoint has been signed yet");
  }
  v1::Checkpoint checkpoint;
  checkpoint.set_tree_size(latest->tree_size);
  checkpoint.set_head_hash(latest->head_hash);
  *checkpoint.mutable_time() = TimeUtil::SecondsToTimestamp(latest->unix_seconds);
  checkpoint.set_key_id(latest->key_id);
  checkpoint.set_signed_note(
      CheckpointNote(latest->tree_size, latest->head_hash, latest->unix_seconds));
  checkpoint.set_signature(latest->signature);
  return checkpoint;
}

}  // namespace tidepool::audit
