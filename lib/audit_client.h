#pragma once

// The audit client every service uses to record security-relevant acts in the audit service
// (tidepool.audit.v1.AuditService). Two ways to emit:
//
//   Emit(event)         ordinary events: never blocks the caller. Events wait in a bounded
//                       in-memory queue; while the audit service is unreachable they move to
//                       an on-disk spool (SQLite, synchronous=FULL) and are replayed in order
//                       once it returns. Replays are exactly-once: each event carries a
//                       client-assigned event_id and the audit service ignores ids it has.
//   EmitDurable(event)  security operations: blocks until the event (and every event emitted
//                       before it) is durably stored by the audit service, and fails closed
//                       with UNAVAILABLE when that cannot happen before the deadline. The
//                       caller must then refuse the operation.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "lib/clock.h"
#include "lib/sqlite_store.h"
#include "prometheus/registry.h"
#include "tidepool/audit/v1/audit_service.grpc.pb.h"
#include "tidepool/common/v1/audit_event.pb.h"

namespace tidepool {

// Where events go. Implemented over gRPC by GrpcAuditTransport; tests use a fake.
class AuditTransport {
 public:
  virtual ~AuditTransport() = default;
  // Appends `events` in order; returns their sequences, or UNAVAILABLE (and similar) when the
  // audit service cannot take them. Must be thread-safe.
  virtual absl::StatusOr<std::vector<uint64_t>> Append(
      const std::vector<common::v1::AuditEvent>& events, absl::Time deadline) = 0;
};

// The interface services depend on (inject it; tests pass a recording fake).
class AuditEmitter {
 public:
  virtual ~AuditEmitter() = default;
  // Records an ordinary event; never blocks on the network. Fills event_id and client_time
  // when empty.
  virtual void Emit(common::v1::AuditEvent event) = 0;
  // Records a security event and returns once it is durable in the audit service.
  // Returns UNAVAILABLE if it is not durable by `deadline` (the event is then not recorded
  // and the caller must fail the operation it describes), INVALID_ARGUMENT if the audit
  // service rejects the event.
  virtual absl::Status EmitDurable(common::v1::AuditEvent event, absl::Time deadline) = 0;
};

// Options of AuditClient. Sizes count events.
struct AuditClientOptions {
  // The SQLite file of the on-disk spool (created if missing; its folder must exist). One
  // spool file belongs to one AuditClient at a time. Required.
  std::string spool_path;
  // Events held in memory before Emit moves them to the spool. At least 1.
  size_t max_queue = 10000;
  // Events per Append call, 1 to 1,000 (the audit service's limit). Batches are also kept
  // under 3 MiB of serialised events, below gRPC's default 4 MiB message limit.
  size_t max_batch = 500;
  // Deadline of each Append call. Positive.
  absl::Duration rpc_timeout = absl::Seconds(5);
  // The most events the spool holds. When a move to the spool would exceed it, the newest
  // events that do not fit are dropped (logged, counted as result="dropped"). At least 1.
  size_t max_spool_events = 1000000;
  // The emitting service's name ("auth", ...), used in log lines only.
  std::string source_name;
};

// The AuditEmitter of every service: a bounded in-memory queue, an on-disk spool (SQLite,
// synchronous=FULL) for events the audit service could not take, and a sender that delivers
// both in emit order through an AuditTransport.
//
// Delivery: events reach the audit service in the order they were emitted (spool rows are
// always older than queued events). An event leaves the spool only after an acknowledged
// Append, so a process killed at any point replays its spool after restart; a replay after a
// lost acknowledgement is absorbed by the service's dedup on event_id (exactly-once).
// A batch the service rejects with INVALID_ARGUMENT is retried event by event and only the
// events rejected on their own are dropped (logged by action and event_id, counted as
// result="rejected"), so one bad event cannot wedge the pipeline. Events larger than 64 KiB
// serialised are rejected locally the same way.
//
// Time: every deadline (EmitDurable, Stop) is on the injected Clock's timeline, and so are
// the per-call Append deadlines (Clock::Now() + rpc_timeout); production passes a RealClock.
// The background thread's wake-ups and retry backoff use real time.
//
// Thread safety: every public method is thread-safe. Emit takes only a small queue lock (and
// touches the disk only when the queue is full); DrainOnce, EmitDurable and Stop serialise on
// a send lock. Lock order: lifecycle_mu_ < send_mu_ < queue_mu_ < db_mu_.
//
// Metrics (when created with a registry, which must outlive the client):
//   tidepool_audit_client_events_total{result="sent|spooled|rejected|dropped"}
//   tidepool_audit_client_spool_events   (gauge: rows in the spool)
class AuditClient final : public AuditEmitter {
 public:
  // Opens (creating if needed) the spool at options.spool_path and returns a client that
  // owns `transport`. Events left in the spool by an earlier process are sent first. The
  // background sender is not started: call Start(), or drive the client with DrainOnce().
  // `clock` (and `registry`, if given) are not owned and must outlive the client.
  // Errors: INVALID_ARGUMENT for a null transport or out-of-range options; UNAVAILABLE if the
  // spool file cannot be opened; FAILED_PRECONDITION or INTERNAL if it is not a usable spool
  // (see SqliteDb::Open and Migrate); INTERNAL if the random generator fails.
  static absl::StatusOr<std::unique_ptr<AuditClient>> Create(
      std::unique_ptr<AuditTransport> transport, Clock& clock, AuditClientOptions options);
  static absl::StatusOr<std::unique_ptr<AuditClient>> Create(
      std::unique_ptr<AuditTransport> transport, Clock& clock, AuditClientOptions options,
      prometheus::Registry& registry);

  AuditClient(const AuditClient&) = delete;
  AuditClient& operator=(const AuditClient&) = delete;
  // Stops the background sender if running and moves every queued event to the spool; makes
  // no network call (Stop(absl::InfinitePast())). Call Stop(deadline) first to flush.
  ~AuditClient() override;

  // Fills event_id (when empty: "ev_" + 26 lower-case base32 characters of 128 random bits),
  // client_time (when unset: the Clock's now) and workspace_id (when empty: the attribute
  // "workspace_id", if any), then queues the event and wakes the
  // sender. Never calls the transport. When the queue holds max_queue events, moves them all
  // to the spool first; if that fails, the new event is dropped (logged, counted).
  void Emit(common::v1::AuditEvent event) override ABSL_LOCKS_EXCLUDED(queue_mu_);

  // Fills ids as Emit does, then, under the send lock, sends everything older (the spool,
  // then the queue) and then `event`, all before `deadline`. Returns OK once `event` is
  // acknowledged. On any failure the older events are kept (queued ones move to the spool),
  // `event` itself is NOT kept, and the result is UNAVAILABLE; the caller must refuse the
  // operation the event describes. (After a lost acknowledgement the service may hold an
  // event reported UNAVAILABLE here.) Returns INVALID_ARGUMENT if the service rejects `event`
  // or it exceeds 64 KiB serialised.
  absl::Status EmitDurable(common::v1::AuditEvent event, absl::Time deadline) override
      ABSL_LOCKS_EXCLUDED(send_mu_, queue_mu_, db_mu_);

  // One synchronous pass of the sender: sends the spool's rows oldest first (deleting them
  // only after an acknowledged Append), then the events queued when the pass began, in
  // batches of at most max_batch. Returns OK when all of them were delivered (or dropped as
  // rejected). Returns UNAVAILABLE if the audit service did not take a batch: every event
  // still queued has then moved to the spool, behind the older spool rows. Returns INTERNAL
  // if the spool cannot be read or written (queued events then stay in memory).
  absl::Status DrainOnce() ABSL_LOCKS_EXCLUDED(send_mu_, queue_mu_, db_mu_);

  // Starts the background sender: a thread that runs DrainOnce whenever there is work, and
  // after a failure retries with backoff (100 ms, doubling up to 5 s). No-op if running.
  void Start() ABSL_LOCKS_EXCLUDED(lifecycle_mu_, queue_mu_);

  // Stops the background sender (waiting for at most the Append in flight), makes one last
  // attempt to send everything before `deadline`, and moves whatever is still queued to the
  // spool. Also flushes when the sender was never started. The client stays usable.
  void Stop(absl::Time deadline) ABSL_LOCKS_EXCLUDED(lifecycle_mu_, send_mu_, queue_mu_, db_mu_);

  // Events waiting in memory.
  size_t queued() ABSL_LOCKS_EXCLUDED(queue_mu_);
  // Rows in the spool. Errors: as SqliteDb (UNAVAILABLE, INTERNAL).
  absl::StatusOr<int64_t> spooled() ABSL_LOCKS_EXCLUDED(db_mu_);

 private:
  struct Metrics;
  struct SpoolBatch {
    std::vector<common::v1::AuditEvent> events;
    int64_t last_id = 0;  // the highest spool id read; 0 when the spool is empty
  };

  AuditClient(std::unique_ptr<AuditTransport> transport, Clock& clock, AuditClientOptions options,
              std::unique_ptr<SqliteDb> db, int64_t spool_rows, std::string fallback_id_key,
              prometheus::Registry* registry);
  static absl::StatusOr<std::unique_ptr<AuditClient>> CreateImpl(
      std::unique_ptr<AuditTransport> transport, Clock& clock, AuditClientOptions options,
      prometheus::Registry* registry);

  void FillIds(common::v1::AuditEvent& event);
  std::string NewEventId();

  // Sends the spool, then the queue up to the events present at the start, before
  // `deadline`; on failure moves the queue to the spool. A `background` pass returns OK early
  // (leaving events where they are) once Stop is requested or an EmitDurable call waits for
  // the send lock.
  absl::Status DrainLocked(absl::Time deadline, bool background)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_) ABSL_LOCKS_EXCLUDED(queue_mu_, db_mu_);
  absl::Status SendAllLocked(absl::Time deadline, bool background)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_) ABSL_LOCKS_EXCLUDED(queue_mu_, db_mu_);
  // Appends `events` in order; returns OK when each was acknowledged or dropped as rejected,
  // else UNAVAILABLE (nothing may be forgotten: some events may have been stored).
  absl::Status SendBatch(const std::vector<common::v1::AuditEvent>& events, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_);
  // One Append with the per-call deadline; a passed deadline and every failure other than
  // INVALID_ARGUMENT become UNAVAILABLE.
  absl::Status Append(const std::vector<common::v1::AuditEvent>& events, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(send_mu_);
  void Reject(const common::v1::AuditEvent& event, absl::string_view why);

  // Moves every queued event to the spool (in one transaction), dropping the newest ones
  // that exceed max_spool_events. On error the queue is left as it was.
  absl::Status SpillQueueLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_)
      ABSL_LOCKS_EXCLUDED(db_mu_);
  absl::StatusOr<SpoolBatch> ReadSpoolBatch() ABSL_LOCKS_EXCLUDED(db_mu_);
  absl::Status DeleteSpoolThrough(int64_t last_id) ABSL_LOCKS_EXCLUDED(db_mu_);
  void UpdateSpoolGauge() ABSL_EXCLUSIVE_LOCKS_REQUIRED(db_mu_);
  bool HasWorkLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) ABSL_LOCKS_EXCLUDED(db_mu_);

  // The background sender's loop.
  void Run() ABSL_LOCKS_EXCLUDED(send_mu_, queue_mu_, db_mu_);

  const std::unique_ptr<AuditTransport> transport_;
  Clock& clock_;
  const AuditClientOptions options_;
  // Key of the event ids used only if the random generator fails (HMAC of a counter).
  const std::string fallback_id_key_;
  std::atomic<uint64_t> fallback_id_counter_{0};
  const std::unique_ptr<Metrics> metrics_;  // null without a registry

  absl::Mutex lifecycle_mu_ ABSL_ACQUIRED_BEFORE(send_mu_);
  std::thread thread_ ABSL_GUARDED_BY(lifecycle_mu_);
  std::atomic<bool> stop_requested_{false};
  std::atomic<int> durable_waiters_{0};  // EmitDurable calls waiting for send_mu_

  absl::Mutex send_mu_ ABSL_ACQUIRED_BEFORE(queue_mu_);

  absl::Mutex queue_mu_ ABSL_ACQUIRED_BEFORE(db_mu_);
  absl::CondVar wake_;  // signalled (with queue_mu_) on Emit and Stop
  std::deque<common::v1::AuditEvent> queue_ ABSL_GUARDED_BY(queue_mu_);
  uint64_t pushed_ ABSL_GUARDED_BY(queue_mu_) = 0;  // events ever queued
  uint64_t popped_ ABSL_GUARDED_BY(queue_mu_) = 0;  // events ever removed from the front
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;

  absl::Mutex db_mu_;
  const std::unique_ptr<SqliteDb> db_ ABSL_PT_GUARDED_BY(db_mu_);
  int64_t spool_rows_ ABSL_GUARDED_BY(db_mu_);
};

// AuditTransport over the audit service's gRPC stub (AuditService.Append). Sets the deadline
// on every call and maps gRPC errors with FromGrpcStatus (so UNAVAILABLE, DEADLINE_EXCEEDED,
// INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ... pass through); INTERNAL if the response does not
// carry one sequence per event. Thread-safe.
class GrpcAuditTransport final : public AuditTransport {
 public:
  // `channel` is typically DialPlatformService(identity, audit_target).
  explicit GrpcAuditTransport(std::shared_ptr<grpc::Channel> channel);

  absl::StatusOr<std::vector<uint64_t>> Append(const std::vector<common::v1::AuditEvent>& events,
                                               absl::Time deadline) override;

 private:
  std::unique_ptr<audit::v1::AuditService::Stub> stub_;
};

}  // namespace tidepool
