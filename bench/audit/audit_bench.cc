// bench/audit: durable audit appends per second (batched) through the real service over
// mutual-TLS gRPC and in process, against a peer — plain SQLite inserts of the same rows with
// the same durability (WAL, synchronous=FULL) and no hashing, chaining or validation — and
// Verify speed over a large log. Prints figures; exits non-zero if the 50,000 appends/s target
// is missed.
//
//   bench/audit/run [--events 200000] [--verify-records 1000000]
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "lib/audit_client.h"
#include "lib/authz.h"
#include "lib/platform_client.h"
#include "lib/server_runner.h"
#include "lib/sqlite_store.h"
#include "services/audit/audit_log.h"
#include "services/audit/audit_service.h"

namespace {

using tidepool::common::v1::AuditEvent;

constexpr int kBatch = 1000;
constexpr double kTargetPerSecond = 50000;

AuditEvent Event(const std::string& prefix, int64_t i) {
  AuditEvent event;
  event.set_event_id(absl::StrCat(prefix, i));
  event.mutable_actor()->set_kind(tidepool::common::v1::ACTOR_KIND_USER);
  event.mutable_actor()->set_id("u_7h3kq2m4x5c6v7b2n3m4k5j6h7");
  event.set_action("auth.sign_in");
  event.set_outcome(tidepool::common::v1::OUTCOME_SUCCESS);
  event.set_subject_user_id("u_7h3kq2m4x5c6v7b2n3m4k5j6h7");
  event.set_workspace_id("ws_7h3kq2m4x5c6v7b2n3m4k5j6h7");
  event.set_request_id("req_0123456789abcdef");
  event.set_source_address("203.0.113.9");
  (*event.mutable_attributes())["provider"] = "github";
  return event;
}

std::vector<AuditEvent> Batch(const std::string& prefix, int64_t first, int n) {
  std::vector<AuditEvent> batch;
  batch.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    batch.push_back(Event(prefix, first + i));
  }
  return batch;
}

double Rate(int64_t n, absl::Duration d) { return static_cast<double>(n) / absl::ToDoubleSeconds(d); }

std::string TempDir() {
  char pattern[] = "/tmp/tidepool_bench_XXXXXX";
  return ::mkdtemp(pattern);
}

int Fail(const absl::Status& status) {
  std::cerr << "bench failed: " << status << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t events = 200000;
  int64_t verify_records = 1000000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    int64_t* target = flag == "--events" ? &events : flag == "--verify-records" ? &verify_records : nullptr;
    if (target == nullptr || !absl::SimpleAtoi(argv[i + 1], target) || *target < kBatch) {
      std::cerr << "usage: audit_bench [--events N] [--verify-records N] (N >= 1000)\n";
      return 2;
    }
  }
  const std::string dir = TempDir();
  tidepool::RealClock clock;
  std::cout << "bench/audit on " << dir << " (batches of " << kBatch
            << ", SQLite WAL synchronous=FULL, fsync per batch)\n";

  // 1. Through the real service: mutual-TLS gRPC on loopback, the audit client's transport.
  double grpc_rate = 0;
  {
    if (absl::Status s = tidepool::EnsurePlatformPki(dir + "/pki", tidepool::PlatformIdentities());
        !s.ok()) {
      return Fail(s);
    }
    tidepool::PlatformConfig config = tidepool::DefaultPlatformConfig();
    config.audit.checkpoint_append_only = false;
    prometheus::Registry registry;
    const std::string data_dir = dir + "/grpc";
    absl::StatusOr<std::vector<tidepool::HostedService>> hosted =
        tidepool::audit::AuditServiceDefinition().create(
            tidepool::ServiceContext{config, data_dir, clock, registry, nullptr});
    if (!hosted.ok()) {
      return Fail(hosted.status());
    }
    tidepool::ServerRunnerOptions options;
    options.component = "audit";
    options.tls = *tidepool::LoadTlsIdentity(dir + "/pki", "audit");
    absl::StatusOr<std::unique_ptr<tidepool::ServerRunner>> runner =
        tidepool::ServerRunner::Start(std::move(options), *std::move(hosted));
    if (!runner.ok()) {
      return Fail(runner.status());
    }
    tidepool::GrpcAuditTransport transport(tidepool::DialPlatformService(
        *tidepool::LoadTlsIdentity(dir + "/pki", "auth"),
        absl::StrCat("127.0.0.1:", (*runner)->grpc_port())));
    std::vector<std::vector<AuditEvent>> batches;
    for (int64_t i = 0; i < events; i += kBatch) {
      batches.push_back(Batch("g_", i, kBatch));
    }
    const absl::Time start = absl::Now();
    for (const auto& batch : batches) {
      absl::StatusOr<std::vector<uint64_t>> acked = transport.Append(batch, absl::Now() + absl::Seconds(30));
      if (!acked.ok()) {
        return Fail(acked.status());
      }
    }
    const absl::Duration took = absl::Now() - start;
    grpc_rate = Rate(events, took);
    std::cout << absl::StrFormat("audit Append over mTLS gRPC: %d events in %.2f s = %.0f events/s\n",
                                 events, absl::ToDoubleSeconds(took), grpc_rate);
    (*runner)->Shutdown(absl::Now());
  }

  // 2. The core in process (no network), and 3. the peer on the same disk.
  double core_rate = 0;
  {
    tidepool::audit::AuditLogOptions options;
    options.dir = dir + "/core";
    options.append_only_checkpoints = false;
    absl::StatusOr<std::unique_ptr<tidepool::audit::AuditLog>> log =
        tidepool::audit::AuditLog::Open(options, clock);
    if (!log.ok()) {
      return Fail(log.status());
    }
    std::vector<std::vector<AuditEvent>> batches;
    for (int64_t i = 0; i < events; i += kBatch) {
      batches.push_back(Batch("c_", i, kBatch));
    }
    const absl::Time start = absl::Now();
    for (auto& batch : batches) {
      if (absl::StatusOr<tidepool::audit::AppendResult> r = (*log)->Append(std::move(batch), "auth");
          !r.ok()) {
        return Fail(r.status());
      }
    }
    const absl::Duration took = absl::Now() - start;
    core_rate = Rate(events, took);
    std::cout << absl::StrFormat("audit AuditLog::Append in process: %d events in %.2f s = %.0f events/s\n",
                                 events, absl::ToDoubleSeconds(took), core_rate);
  }
  double peer_rate = 0;
  {
    absl::StatusOr<std::unique_ptr<tidepool::SqliteDb>> db =
        tidepool::SqliteDb::Open(dir + "/peer.db", tidepool::SqliteOptions{});
    if (!db.ok()) {
      return Fail(db.status());
    }
    if (absl::Status s = (*db)->Exec("CREATE TABLE events (id INTEGER PRIMARY KEY, record BLOB NOT NULL)");
        !s.ok()) {
      return Fail(s);
    }
    std::vector<std::vector<std::string>> batches;
    for (int64_t i = 0; i < events; i += kBatch) {
      std::vector<std::string> rows;
      for (const AuditEvent& event : Batch("p_", i, kBatch)) {
        rows.push_back(event.SerializeAsString());
      }
      batches.push_back(std::move(rows));
    }
    const absl::Time start = absl::Now();
    for (const auto& rows : batches) {
      absl::StatusOr<tidepool::Transaction> txn = (*db)->Begin();
      absl::StatusOr<tidepool::Statement> insert = (*db)->Prepare("INSERT INTO events (record) VALUES (?)");
      if (!txn.ok() || !insert.ok()) {
        return Fail(absl::InternalError("peer prepare failed"));
      }
      for (const std::string& row : rows) {
        (void)insert->Reset();
        (void)insert->BindBlob(1, row);
        if (!insert->Step().ok()) {
          return Fail(absl::InternalError("peer insert failed"));
        }
      }
      if (absl::Status s = txn->Commit(); !s.ok()) {
        return Fail(s);
      }
    }
    const absl::Duration took = absl::Now() - start;
    peer_rate = Rate(events, took);
    std::cout << absl::StrFormat("peer: plain SQLite INSERT of the same rows, same durability: %.0f events/s\n",
                                 peer_rate);
  }

  // 4. Verify over a large log.
  {
    tidepool::audit::AuditLogOptions options;
    options.dir = dir + "/verify";
    options.append_only_checkpoints = false;
    absl::StatusOr<std::unique_ptr<tidepool::audit::AuditLog>> log =
        tidepool::audit::AuditLog::Open(options, clock);
    if (!log.ok()) {
      return Fail(log.status());
    }
    for (int64_t i = 0; i < verify_records; i += kBatch) {
      if (absl::StatusOr<tidepool::audit::AppendResult> r = (*log)->Append(Batch("v_", i, kBatch), "auth");
          !r.ok()) {
        return Fail(r.status());
      }
    }
    const absl::Time start = absl::Now();
    absl::StatusOr<tidepool::audit::v1::VerifyResponse> verdict = (*log)->Verify(1, 0);
    const absl::Duration took = absl::Now() - start;
    if (!verdict.ok()) {
      return Fail(verdict.status());
    }
    std::cout << absl::StrFormat(
        "Verify: %d records and %d checkpoints in %.2f s = %.0f records/s (result %s)\n",
        verdict->verified_record_count(), verdict->verified_checkpoint_count(),
        absl::ToDoubleSeconds(took), Rate(static_cast<int64_t>(verdict->verified_record_count()), took),
        tidepool::audit::v1::VerifyResult_Name(verdict->result()));
  }

  std::cout << absl::StrFormat(
      "summary: gRPC %.0f/s, in-process %.0f/s = %.2fx of the plain-SQLite peer (%.0f/s); "
      "target >= %.0f/s: %s\n",
      grpc_rate, core_rate, core_rate / peer_rate, peer_rate, kTargetPerSecond,
      grpc_rate >= kTargetPerSecond ? "met" : "MISSED");
  std::string cleanup = "rm -rf '" + dir + "'";
  (void)std::system(cleanup.c_str());
  return grpc_rate >= kTargetPerSecond ? 0 : 1;
}
