#include "lib/audit_client.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "lib/crypto/crypto.h"
#include "lib/grpc_status.h"
#include "lib/log.h"
#include "lib/status_macros.h"
#include "lib/text.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"

namespace tidepool {
namespace {

using common::v1::AuditEvent;

// The audit service's per-event bound (AuditEvent comment) and batch limit (AppendRequest).
constexpr size_t kMaxEventBytes = 64 * 1024;
constexpr size_t kMaxServiceBatch = 1000;
// Serialised bytes per Append, below gRPC's default 4 MiB receive limit.
constexpr size_t kMaxBatchBytes = 3 * 1024 * 1024;

constexpr absl::Duration kInitialBackoff = absl::Milliseconds(100);
constexpr absl::Duration kMaxBackoff = absl::Seconds(5);

constexpr absl::string_view kDurableUnavailable =
    "audit service unavailable: the event could not be made durable";

const std::vector<Migration>& SpoolMigrations() {
  static const std::vector<Migration>* const kMigrations = new std::vector<Migration>{
      {1, "CREATE TABLE spool(id INTEGER PRIMARY KEY AUTOINCREMENT, event BLOB NOT NULL);"},
  };
  return *kMigrations;
}

// RFC 4648 base32, lower case, without padding: 16 bytes -> 26 characters.

void SetTimestamp(absl::Time time, google::protobuf::Timestamp* timestamp) {
  const int64_t seconds = absl::ToUnixSeconds(time);  // rounds down, also before 1970
  timestamp->set_seconds(seconds);
  timestamp->set_nanos(
      static_cast<int32_t>((time - absl::FromUnixSeconds(seconds)) / absl::Nanoseconds(1)));
}

// The size an event counts for in a batch: oversized events are never sent (SendBatch drops
// them), so they take no room.
size_t BatchBytes(const AuditEvent& event) {
  const size_t size = event.ByteSizeLong();
  return size > kMaxEventBytes ? 0 : size;
}

absl::StatusOr<int64_t> CountSpoolRows(SqliteDb& db) {
  TP_ASSIGN_OR_RETURN(Statement count, db.Prepare("SELECT COUNT(*) FROM spool"));
  TP_ASSIGN_OR_RETURN(bool has_row, count.Step());
  return has_row ? count.ColumnInt(0) : 0;
}

}  // namespace

struct AuditClient::Metrics {
  explicit Metrics(prometheus::Registry& registry)
      : events(prometheus::BuildCounter()
                   .Name("tidepool_audit_client_events_total")
                   .Help("Audit events by outcome in the client: sent (acknowledged by the audit "
                         "service), spooled (moved to the on-disk spool), rejected (refused by "
                         "the audit service and dropped), dropped (spool full or unwritable).")
                   .Register(registry)),
        sent(events.Add({{"result", "sent"}})),
        spooled(events.Add({{"result", "spooled"}})),
        rejected(events.Add({{"result", "rejected"}})),
        dropped(events.Add({{"result", "dropped"}})),
        spool_events(prometheus::BuildGauge()
                         .Name("tidepool_audit_client_spool_events")
                         .Help("Audit events waiting in the on-disk spool.")
                         .Register(registry)
                         .Add({})) {}

  prometheus::Family<prometheus::Counter>& events;
  prometheus::Counter& sent;
  prometheus::Counter& spooled;
  prometheus::Counter& rejected;
  prometheus::Counter& dropped;
  prometheus::Gauge& spool_events;
};

absl::StatusOr<std::unique_ptr<AuditClient>> AuditClient::Create(
    std::unique_ptr<AuditTransport> transport, Clock& clock, AuditClientOptions options) {
  return CreateImpl(std::move(transport), clock, std::move(options), nullptr);
}

absl::StatusOr<std::unique_ptr<AuditClient>> AuditClient::Create(
    std::unique_ptr<AuditTransport> transport, Clock& clock, AuditClientOptions options,
    prometheus::Registry& registry) {
  return CreateImpl(std::move(transport), clock, std::move(options), &registry);
}

absl::StatusOr<std::unique_ptr<AuditClient>> AuditClient::CreateImpl(
    std::unique_ptr<AuditTransport> transport, Clock& clock, AuditClientOptions options,
    prometheus::Registry* registry) {
  if (transport == nullptr) {
    return absl::InvalidArgumentError("audit client: transport is required");
  }
  if (options.spool_path.empty()) {
    return absl::InvalidArgumentError("audit client: spool_path is required");
  }
  if (options.max_queue < 1 || options.max_spool_events < 1) {
    return absl::InvalidArgumentError(
        "audit client: max_queue and max_spool_events must be at least 1");
  }
  if (options.max_batch < 1 || options.max_batch > kMaxServiceBatch) {
    return absl::InvalidArgumentError(
        absl::StrCat("audit client: max_batch must be 1 to ", kMaxServiceBatch));
  }
  if (options.rpc_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("audit client: rpc_timeout must be positive");
  }
  SqliteOptions sqlite_options;
  sqlite_options.durability = Durability::kFull;
  TP_ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db,
                      SqliteDb::Open(options.spool_path, sqlite_options));
  TP_RETURN_IF_ERROR(db->Migrate(SpoolMigrations()));
  TP_ASSIGN_OR_RETURN(const int64_t spool_rows, CountSpoolRows(*db));
  TP_ASSIGN_OR_RETURN(std::string fallback_id_key, crypto::RandomBytes(32));
  if (spool_rows > 0) {
    LogInfo("audit client: replaying events left in the spool",
            {{"source", options.source_name}, {"spooled", spool_rows}});
  }
  return std::unique_ptr<AuditClient>(new AuditClient(std::move(transport), clock,
                                                      std::move(options), std::move(db), spool_rows,
                                                      std::move(fallback_id_key), registry));
}

AuditClient::AuditClient(std::unique_ptr<AuditTransport> transport, Clock& clock,
                         AuditClientOptions options, std::unique_ptr<SqliteDb> db,
                         int64_t spool_rows, std::string fallback_id_key,
                         prometheus::Registry* registry)
    : transport_(std::move(transport)),
      clock_(clock),
      options_(std::move(options)),
      fallback_id_key_(std::move(fallback_id_key)),
      metrics_(registry == nullptr ? nullptr : std::make_unique<Metrics>(*registry)),
      db_(std::move(db)),
      spool_rows_(spool_rows) {
  absl::MutexLock lock(&db_mu_);
  UpdateSpoolGauge();
}

AuditClient::~AuditClient() { Stop(absl::InfinitePast()); }

// ---------------------------------------------------------------------------------------------
// Emitting

std::string AuditClient::NewEventId() {
  absl::StatusOr<std::string> bytes = crypto::RandomBytes(16);
  if (!bytes.ok()) {
    // Practically unreachable; keep ids unique and unpredictable rather than lose the event.
    LogError("audit client: random generator failed; using fallback event id",
             {{"source", options_.source_name}, {"error", bytes.status().ToString()}});
    const uint64_t n = fallback_id_counter_.fetch_add(1);
    char counter[sizeof(n)];
    std::memcpy(counter, &n, sizeof(n));
    bytes = crypto::HmacSha256(fallback_id_key_, absl::string_view(counter, sizeof(counter)))
                .substr(0, 16);
  }
  return absl::StrCat("ev_", Base32Lower(*bytes));
}

void AuditClient::FillIds(AuditEvent& event) {
  if (event.event_id().empty()) {
    event.set_event_id(NewEventId());
  }
  if (!event.has_client_time()) {
    SetTimestamp(clock_.Now(), event.mutable_client_time());
  }
  // The workspace an event is about is a field of its own (indexed, and what queries filter
  // on); emitters that only name it in the attributes get it there too.
  if (event.workspace_id().empty()) {
    auto it = event.attributes().find("workspace_id");
    if (it != event.attributes().end()) event.set_workspace_id(it->second);
  }
}

void AuditClient::Emit(AuditEvent event) {
  FillIds(event);
  absl::MutexLock lock(&queue_mu_);
  if (queue_.size() >= options_.max_queue) {
    absl::Status spilled = SpillQueueLocked();
    if (!spilled.ok()) {
      LogError("audit client: queue full and spool unwritable; event dropped",
               {{"source", options_.source_name},
                {"action", event.action()},
                {"event_id", event.event_id()},
                {"error", spilled.ToString()}});
      if (metrics_ != nullptr) {
        metrics_->dropped.Increment();
      }
      return;
    }
  }
  queue_.push_back(std::move(event));
  ++pushed_;
  wake_.Signal();
}

absl::Status AuditClient::EmitDurable(AuditEvent event, absl::Time deadline) {
  FillIds(event);
  if (event.ByteSizeLong() > kMaxEventBytes) {
    Reject(event, "larger than 64 KiB");
    return absl::InvalidArgumentError(
        absl::StrCat("audit event exceeds ", kMaxEventBytes, " bytes serialised"));
  }
  durable_waiters_.fetch_add(1);  // makes a background pass yield the send lock
  absl::MutexLock send(&send_mu_);
  durable_waiters_.fetch_sub(1);
  absl::Status older = DrainLocked(deadline, /*background=*/false);
  if (!older.ok()) {
    LogWarning("audit client: durable event not sent; older events could not be delivered",
               {{"source", options_.source_name},
                {"action", event.action()},
                {"event_id", event.event_id()},
                {"error", older.ToString()}});
    return absl::UnavailableError(kDurableUnavailable);
  }
  absl::Status status = Append({event}, deadline);
  if (status.ok()) {
    return absl::OkStatus();
  }
  if (status.code() == absl::StatusCode::kInvalidArgument) {
    Reject(event, "rejected by the audit service");
    return absl::InvalidArgumentError("the audit service rejected the event");
  }
  LogWarning("audit client: durable event not acknowledged", {{"source", options_.source_name},
                                                              {"action", event.action()},
                                                              {"event_id", event.event_id()},
                                                              {"error", status.ToString()}});
  return absl::UnavailableError(kDurableUnavailable);
}

// ---------------------------------------------------------------------------------------------
// Sending

absl::Status AuditClient::DrainOnce() {
  absl::MutexLock send(&send_mu_);
  return DrainLocked(absl::InfiniteFuture(), /*background=*/false);
}

absl::Status AuditClient::DrainLocked(absl::Time deadline, bool background) {
  absl::Status status = SendAllLocked(deadline, background);
  if (!status.ok()) {
    absl::MutexLock lock(&queue_mu_);
    absl::Status spilled = SpillQueueLocked();
    if (!spilled.ok()) {
      LogError("audit client: cannot move queued events to the spool; they stay in memory",
               {{"source", options_.source_name}, {"error", spilled.ToString()}});
    }
  }
  return status;
}

absl::Status AuditClient::SendAllLocked(absl::Time deadline, bool background) {
  uint64_t target;  // send queued events only up to those present now, so the pass ends
  {
    absl::MutexLock lock(&queue_mu_);
    target = pushed_;
  }
  while (true) {
    if (background && (stop_requested_.load() || durable_waiters_.load() > 0)) {
      return absl::OkStatus();  // Stop or EmitDurable takes over from here
    }
    // The spool first: its rows are older than anything queued.
    TP_ASSIGN_OR_RETURN(SpoolBatch batch, ReadSpoolBatch());
    if (batch.last_id > 0) {
      TP_RETURN_IF_ERROR(SendBatch(batch.events, deadline));
      TP_RETURN_IF_ERROR(DeleteSpoolThrough(batch.last_id));
      continue;
    }
    // Then the queue, copying a batch off its front and removing it only once acknowledged.
    std::vector<AuditEvent> events;
    uint64_t start;
    {
      absl::MutexLock lock(&queue_mu_);
      if (popped_ >= target) {
        return absl::OkStatus();
      }
      start = popped_;
      const size_t limit =
          static_cast<size_t>(std::min<uint64_t>(options_.max_batch, target - popped_));
      size_t bytes = 0;
      for (size_t i = 0; i < limit && i < queue_.size(); ++i) {
        const size_t size = BatchBytes(queue_[i]);
        if (!events.empty() && bytes + size > kMaxBatchBytes) {
          break;
        }
        bytes += size;
        events.push_back(queue_[i]);
      }
    }
    TP_RETURN_IF_ERROR(SendBatch(events, deadline));
    {
      absl::MutexLock lock(&queue_mu_);
      // A full queue may have moved to the spool meanwhile, batch included; those copies are
      // replayed and absorbed by the service's dedup.
      const uint64_t gone = popped_ - start;
      if (gone < events.size()) {
        const size_t n = events.size() - static_cast<size_t>(gone);
        queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
        popped_ += n;
      }
    }
  }
}

absl::Status AuditClient::SendBatch(const std::vector<AuditEvent>& events, absl::Time deadline) {
  std::vector<AuditEvent> sendable;
  sendable.reserve(events.size());
  for (const AuditEvent& event : events) {
    if (event.ByteSizeLong() > kMaxEventBytes) {
      Reject(event, "larger than 64 KiB");
    } else {
      sendable.push_back(event);
    }
  }
  if (sendable.empty()) {
    return absl::OkStatus();
  }
  absl::Status status = Append(sendable, deadline);
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    return status;
  }
  if (sendable.size() == 1) {
    Reject(sendable[0], "rejected by the audit service");
    return absl::OkStatus();
  }
  // Find the bad event(s): the service stored nothing of the batch.
  for (const AuditEvent& event : sendable) {
    absl::Status single = Append({event}, deadline);
    if (single.code() == absl::StatusCode::kInvalidArgument) {
      Reject(event, "rejected by the audit service");
    } else if (!single.ok()) {
      return single;
    }
  }
  return absl::OkStatus();
}

absl::Status AuditClient::Append(const std::vector<AuditEvent>& events, absl::Time deadline) {
  const absl::Time now = clock_.Now();
  if (now >= deadline) {
    return absl::UnavailableError("audit service unavailable: deadline passed before sending");
  }
  absl::StatusOr<std::vector<uint64_t>> sequences =
      transport_->Append(events, std::min(deadline, now + options_.rpc_timeout));
  if (sequences.ok()) {
    if (metrics_ != nullptr) {
      metrics_->sent.Increment(static_cast<double>(events.size()));
    }
    return absl::OkStatus();
  }
  const absl::Status& status = sequences.status();
  if (status.code() == absl::StatusCode::kInvalidArgument ||
      status.code() == absl::StatusCode::kUnavailable) {
    return status;
  }
  return absl::UnavailableError(absl::StrCat("audit service unavailable: ", status.ToString()));
}

void AuditClient::Reject(const AuditEvent& event, absl::string_view why) {
  // Only action and event_id: the rest of the event (and the service's message, which may
  // quote it) stays out of the log.
  LogError("audit client: event rejected and dropped", {{"source", options_.source_name},
                                                        {"action", event.action()},
                                                        {"event_id", event.event_id()},
                                                        {"reason", why}});
  if (metrics_ != nullptr) {
    metrics_->rejected.Increment();
  }
}

// ---------------------------------------------------------------------------------------------
// Spool

absl::Status AuditClient::SpillQueueLocked() {
  if (queue_.empty()) {
    return absl::OkStatus();
  }
  absl::MutexLock lock(&db_mu_);
  const int64_t room =
      std::max<int64_t>(0, static_cast<int64_t>(options_.max_spool_events) - spool_rows_);
  const size_t to_write = std::min(queue_.size(), static_cast<size_t>(room));
  if (to_write > 0) {
    TP_ASSIGN_OR_RETURN(Transaction tx, db_->Begin());
    TP_ASSIGN_OR_RETURN(Statement insert, db_->Prepare("INSERT INTO spool(event) VALUES (?)"));
    std::string bytes;
    for (size_t i = 0; i < to_write; ++i) {
      if (!queue_[i].SerializeToString(&bytes)) {
        return absl::InternalError("audit client: cannot serialise an event for the spool");
      }
      TP_RETURN_IF_ERROR(insert.BindBlob(1, bytes));
      TP_RETURN_IF_ERROR(insert.Step().status());
      TP_RETURN_IF_ERROR(insert.Reset());
    }
    TP_RETURN_IF_ERROR(tx.Commit());
    spool_rows_ += static_cast<int64_t>(to_write);
  }
  const size_t dropped = queue_.size() - to_write;
  if (dropped > 0) {
    LogError("audit client: spool full; newest events dropped",
             {{"source", options_.source_name},
              {"dropped", static_cast<int64_t>(dropped)},
              {"max_spool_events", static_cast<int64_t>(options_.max_spool_events)}});
  }
  if (metrics_ != nullptr) {
    metrics_->spooled.Increment(static_cast<double>(to_write));
    metrics_->dropped.Increment(static_cast<double>(dropped));
  }
  popped_ += queue_.size();
  queue_.clear();
  UpdateSpoolGauge();
  return absl::OkStatus();
}

absl::StatusOr<AuditClient::SpoolBatch> AuditClient::ReadSpoolBatch() {
  SpoolBatch batch;
  absl::MutexLock lock(&db_mu_);
  if (spool_rows_ == 0) {
    return batch;
  }
  TP_ASSIGN_OR_RETURN(Statement select,
                      db_->Prepare("SELECT id, event FROM spool ORDER BY id LIMIT ?"));
  TP_RETURN_IF_ERROR(select.Bind(1, static_cast<int64_t>(options_.max_batch)));
  size_t bytes = 0;
  bool any_row = false;
  while (true) {
    TP_ASSIGN_OR_RETURN(bool has_row, select.Step());
    if (!has_row) {
      break;
    }
    any_row = true;
    AuditEvent event;
    if (!event.ParseFromString(select.ColumnBlob(1))) {
      // Deleted with the batch: an unreadable row must not wedge the spool.
      LogError("audit client: unreadable spool row dropped",
               {{"source", options_.source_name}, {"spool_id", select.ColumnInt(0)}});
      if (metrics_ != nullptr) {
        metrics_->dropped.Increment();
      }
      batch.last_id = select.ColumnInt(0);
      continue;
    }
    const size_t size = BatchBytes(event);
    if (!batch.events.empty() && bytes + size > kMaxBatchBytes) {
      break;
    }
    bytes += size;
    batch.last_id = select.ColumnInt(0);
    batch.events.push_back(std::move(event));
  }
  if (!any_row) {
    spool_rows_ = 0;  // the cached count had drifted; never let it keep the sender spinning
    UpdateSpoolGauge();
  }
  return batch;
}

absl::Status AuditClient::DeleteSpoolThrough(int64_t last_id) {
  absl::MutexLock lock(&db_mu_);
  TP_ASSIGN_OR_RETURN(Statement del, db_->Prepare("DELETE FROM spool WHERE id <= ?"));
  TP_RETURN_IF_ERROR(del.Bind(1, last_id));
  TP_RETURN_IF_ERROR(del.Step().status());
  spool_rows_ = std::max<int64_t>(0, spool_rows_ - db_->Changes());
  UpdateSpoolGauge();
  return absl::OkStatus();
}

void AuditClient::UpdateSpoolGauge() {
  if (metrics_ != nullptr) {
    metrics_->spool_events.Set(static_cast<double>(spool_rows_));
  }
}

size_t AuditClient::queued() {
  absl::MutexLock lock(&queue_mu_);
  return queue_.size();
}

absl::StatusOr<int64_t> AuditClient::spooled() {
  absl::MutexLock lock(&db_mu_);
  return CountSpoolRows(*db_);
}

// ---------------------------------------------------------------------------------------------
// Background sender

bool AuditClient::HasWorkLocked() {
  if (!queue_.empty()) {
    return true;
  }
  absl::MutexLock lock(&db_mu_);
  return spool_rows_ > 0;
}

void AuditClient::Start() {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  if (thread_.joinable()) {
    return;
  }
  stop_requested_.store(false);
  {
    absl::MutexLock lock(&queue_mu_);
    stopping_ = false;
  }
  thread_ = std::thread([this] { Run(); });
}

void AuditClient::Stop(absl::Time deadline) {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  if (thread_.joinable()) {
    stop_requested_.store(true);
    {
      absl::MutexLock lock(&queue_mu_);
      stopping_ = true;
      wake_.SignalAll();
    }
    thread_.join();
  }
  absl::MutexLock send(&send_mu_);
  absl::Status status = DrainLocked(deadline, /*background=*/false);
  absl::MutexLock lock(&queue_mu_);
  absl::Status spilled = SpillQueueLocked();  // events emitted during the last drain
  if (!status.ok() || !spilled.ok()) {
    absl::MutexLock db(&db_mu_);
    LogWarning("audit client: stopped with events undelivered",
               {{"source", options_.source_name},
                {"queued", static_cast<int64_t>(queue_.size())},
                {"spooled", spool_rows_},
                {"error", (status.ok() ? spilled : status).ToString()}});
  }
}

void AuditClient::Run() {
  absl::Duration backoff = kInitialBackoff;
  bool failing = false;
  while (true) {
    {
      absl::MutexLock lock(&queue_mu_);
      if (failing) {
        // Emit's signals do not cut the backoff short.
        const absl::Time until = absl::Now() + backoff;
        while (!stopping_) {
          const absl::Duration left = until - absl::Now();
          if (left <= absl::ZeroDuration()) {
            break;
          }
          wake_.WaitWithTimeout(&queue_mu_, left);
        }
      } else {
        while (!stopping_ && !HasWorkLocked()) {
          wake_.Wait(&queue_mu_);
        }
      }
      if (stopping_) {
        return;
      }
    }
    absl::Status status;
    {
      absl::MutexLock send(&send_mu_);
      status = DrainLocked(absl::InfiniteFuture(), /*background=*/true);
    }
    if (status.ok()) {
      if (failing) {
        LogInfo("audit client: audit service reachable again; spool drained",
                {{"source", options_.source_name}});
      }
      failing = false;
      backoff = kInitialBackoff;
    } else {
      if (failing) {
        backoff = std::min(backoff * 2, kMaxBackoff);
      } else {
        LogWarning("audit client: cannot deliver events; spooling and retrying",
                   {{"source", options_.source_name}, {"error", status.ToString()}});
        failing = true;
        backoff = kInitialBackoff;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// GrpcAuditTransport

GrpcAuditTransport::GrpcAuditTransport(std::shared_ptr<grpc::Channel> channel)
    : stub_(audit::v1::AuditService::NewStub(std::move(channel))) {}

absl::StatusOr<std::vector<uint64_t>> GrpcAuditTransport::Append(
    const std::vector<AuditEvent>& events, absl::Time deadline) {
  audit::v1::AppendRequest request;
  request.mutable_events()->Reserve(static_cast<int>(events.size()));
  for (const AuditEvent& event : events) {
    *request.add_events() = event;
  }
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  audit::v1::AppendResponse response;
  grpc::Status status = stub_->Append(&context, request, &response);
  if (!status.ok()) {
    return FromGrpcStatus(status);
  }
  if (static_cast<size_t>(response.sequences_size()) != events.size()) {
    return absl::InternalError(absl::StrCat("audit service returned ", response.sequences_size(),
                                            " sequences for ", events.size(), " events"));
  }
  return std::vector<uint64_t>(response.sequences().begin(), response.sequences().end());
}

}  // namespace tidepool
