#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/clock.h"
#include "lib/sqlite_store.h"
#include "prometheus/registry.h"
#include "services/audit/checkpoint_log.h"
#include "tidepool/audit/v1/audit_service.pb.h"
#include "tidepool/common/v1/audit_event.pb.h"

namespace tidepool::audit {

struct AuditLogOptions {
  // Holds records.db, checkpoints.log, checkpoint_signing.key and checkpoint_keys.txt.
  std::string dir;
  // A checkpoint is signed when this much time has passed since the last one and there are
  // new records...
  absl::Duration checkpoint_interval = absl::Seconds(60);
  // ...or as soon as this many records are not yet covered by one.
  uint64_t checkpoint_every_records = 1000;
  // Set the file system's append-only attribute on the checkpoint file where possible.
  bool append_only_checkpoints = true;
};

// The result of one Append: the sequence of each event, in request order.
struct AppendResult {
  std::vector<uint64_t> sequences;
  absl::Time commit_time;
};

// One page of Query.
struct QueryPage {
  std::vector<common::v1::AuditEvent> events;  // newest first
  std::string next_page_token;
};

// The hash of a record: SHA-256 over "tidepool-audit-record/v1\n" followed by the
// deterministic protobuf serialisation of the event with `hash` cleared. It covers the
// sequence, server time, every field and prev_hash, so each record commits to all before it.
std::string RecordHash(const common::v1::AuditEvent& event);

// The deterministic serialisation the store keeps for a record.
std::string CanonicalBytes(const common::v1::AuditEvent& event);

// The tamper-evident audit log: an append-only hash chain of AuditEvents in SQLite
// (WAL, synchronous=FULL; UPDATE and DELETE are refused by triggers), ordered by
// server-assigned sequence, with Ed25519-signed checkpoints appended to a separate
// checkpoint file at least every `checkpoint_interval` or `checkpoint_every_records`.
// Append acknowledges only after the commit is durable. Nothing updates or deletes a record.
//
// If the store is found shorter than, or forked from, its last signed checkpoint when it
// opens, the log is marked tampered: Append fails FAILED_PRECONDITION (new records would
// hide the damage) while Query, Export and Verify keep working so the damage can be
// examined.
//
// Thread-safe: appends are serialised; reads use their own connection.
class AuditLog {
 public:
  // Opens or creates the log under options.dir. `clock` must outlive the log. `registry`
  // (optional) receives the log's metrics. Errors: UNAVAILABLE (files), FAILED_PRECONDITION
  // (a key readable by others, a newer schema).
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(const AuditLogOptions& options,
                                                        Clock& clock,
                                                        prometheus::Registry* registry = nullptr);
  ~AuditLog();

  // Validates every event (INVALID_ARGUMENT naming the event index and field; nothing of the
  // batch is stored), then assigns sequences, server time, source_service, prev_hash and hash,
  // and commits the batch in one transaction. Events whose event_id is already stored are
  // not added again: their stored sequence is returned. Returns UNAVAILABLE if the commit
  // fails, FAILED_PRECONDITION if the log is marked tampered.
  absl::StatusOr<AppendResult> Append(std::vector<common::v1::AuditEvent> events,
                                      absl::string_view source_service);

  // Newest first; at most `page_size` (0: 50; max 1000). Errors: INVALID_ARGUMENT (bad
  // filter or page token), UNAVAILABLE.
  absl::StatusOr<QueryPage> Query(const v1::AuditFilter& filter, int page_size,
                                  absl::string_view page_token);

  // Calls `sink` for every matching event, oldest first, up to the head at the time of the
  // call; stops early (returning CANCELLED) when `sink` returns false. Errors as Query.
  absl::Status Export(const v1::AuditFilter& filter,
                      const std::function<bool(const common::v1::AuditEvent&)>& sink);

  // Verifies records start..end (end 0: the head) and the checkpoints in that range; with
  // end 0 also that no checkpoint covers more records than the log holds. A broken chain is
  // an OK status whose response says VERIFY_RESULT_BROKEN. Errors: INVALID_ARGUMENT (start 0
  // or an inverted range), NOT_FOUND (start beyond the head), UNAVAILABLE.
  absl::StatusOr<v1::VerifyResponse> Verify(uint64_t start_sequence, uint64_t end_sequence);

  // The latest checkpoint in the file, or NOT_FOUND when none has been signed.
  absl::StatusOr<v1::Checkpoint> LatestCheckpoint();

  // Signs a checkpoint when one is due (see AuditLogOptions) or, with `force`, whenever
  // records are not yet covered. The loop that calls it lives in the service wiring.
  // Errors: UNAVAILABLE if the checkpoint file cannot be written.
  absl::Status MaybeCheckpoint(bool force);

  uint64_t head_sequence();
  bool tampered();
  const std::string& signing_key_id() const { return signer_.key_id(); }
  bool checkpoint_append_only_enforced() const { return checkpoints_->append_only_enforced(); }

 private:
  struct Metrics;
  AuditLog(AuditLogOptions options, Clock& clock, CheckpointSigner signer,
           std::unique_ptr<CheckpointFile> checkpoints, std::unique_ptr<SqliteDb> writer,
           std::unique_ptr<SqliteDb> reader, prometheus::Registry* registry);
  absl::Status LoadHead() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status CheckpointLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::StatusOr<std::string> HashAt(uint64_t sequence);

  const AuditLogOptions options_;
  Clock& clock_;
  const CheckpointSigner signer_;
  std::unique_ptr<CheckpointFile> checkpoints_;
  std::unique_ptr<Metrics> metrics_;

  absl::Mutex write_mu_;
  std::unique_ptr<SqliteDb> writer_ ABSL_GUARDED_BY(write_mu_);
  uint64_t head_sequence_ ABSL_GUARDED_BY(write_mu_) = 0;
  std::string head_hash_ ABSL_GUARDED_BY(write_mu_);
  uint64_t checkpointed_size_ ABSL_GUARDED_BY(write_mu_) = 0;
  absl::Time last_checkpoint_time_ ABSL_GUARDED_BY(write_mu_) = absl::InfinitePast();
  bool tampered_ ABSL_GUARDED_BY(write_mu_) = false;

  absl::Mutex read_mu_;
  std::unique_ptr<SqliteDb> reader_ ABSL_GUARDED_BY(read_mu_);
};

}  // namespace tidepool::audit
