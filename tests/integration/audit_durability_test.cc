// The real tidepool-audit binary under kill -9, and the audit client's spool across an audit
// outage, checked from this separate client process.
#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/audit_client.h"
#include "lib/platform_client.h"
#include "nlohmann/json.hpp"
#include "tests/integration/platform_fixture.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tidepool/audit/v1/audit_service.grpc.pb.h"

namespace tidepool {
namespace {

using ::testing::HasSubstr;
using ::tidepool::testing::BinaryPath;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;
using ::tidepool::testing::Subprocess;

// One tidepool-audit process at a time on a fixed port, restartable, in one data directory.
class AuditServer {
 public:
  AuditServer() {
    data_dir_ = tmp_.Join("data");
    config_ = tmp_.Join("tidepool.yaml");
  }

  // Starts the binary on `port` (0 the first time) and waits until this very process has
  // written its run file.
  void Start(int port) {
    ASSERT_TRUE(tidepool::testing::WriteFile(
        config_, absl::StrCat("audit:\n  grpc_port: ", port,
                              "\n  metrics_port: 0\n  checkpoint_append_only: false\n")));
    absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(
        {BinaryPath("tidepool-audit"), "--config", config_, "--data-dir", data_dir_}, tmp_.path());
    ASSERT_THAT(process, IsOk());
    process_ = *std::move(process);
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    for (;;) {
      absl::StatusOr<RunInfo> info = ReadRunInfo(data_dir_, "audit");
      if (info.ok() && info->pid == process_->pid()) {
        target_ = info->grpc;
        port_ = std::stoi(target_.substr(target_.rfind(':') + 1));
        return;
      }
      ASSERT_FALSE(process_->Wait(absl::ZeroDuration()).ok()) << process_->Stderr();
      ASSERT_LT(absl::Now(), deadline) << "audit did not start";
      absl::SleepFor(absl::Milliseconds(10));
    }
  }

  void Kill(int signal_number) {
    ASSERT_TRUE(process_->Signal(signal_number));
    ASSERT_THAT(process_->Wait(absl::Seconds(10)), IsOk());
  }

  TlsIdentity Identity(const std::string& name) {
    absl::StatusOr<TlsIdentity> id = LoadTlsIdentity(data_dir_ + "/pki", name);
    EXPECT_THAT(id, IsOk());
    return id.ok() ? *id : TlsIdentity{};
  }

  // Stored events with server time at or after `since`: sequence -> event id. Sequences must
  // be contiguous.
  std::map<uint64_t, std::string> ExportSince(absl::Time since) {
    auto stub =
        audit::v1::AuditService::NewStub(DialPlatformService(Identity("tidepoolctl"), target_));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    audit::v1::ExportRequest request;
    request.mutable_filter()->mutable_start_time()->set_seconds(absl::ToUnixSeconds(since));
    auto reader = stub->Export(&context, request);
    std::map<uint64_t, std::string> events;
    audit::v1::ExportResponse chunk;
    while (reader->Read(&chunk)) {
      std::istringstream lines(chunk.json_lines());
      std::string line;
      while (std::getline(lines, line)) {
        nlohmann::json doc = nlohmann::json::parse(line);
        const uint64_t sequence = std::stoull(doc["sequence"].get<std::string>());
        EXPECT_TRUE(events.empty() || sequence == events.rbegin()->first + 1) << sequence;
        events[sequence] = doc["eventId"].get<std::string>();
      }
    }
    grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    return events;
  }

  // Every stored event id, in sequence order.
  std::vector<std::string> ExportIds() {
    std::vector<std::string> ids;
    for (auto& [sequence, id] : ExportSince(absl::UnixEpoch())) {
      EXPECT_EQ(sequence, ids.size() + 1);
      ids.push_back(std::move(id));
    }
    return ids;
  }

  audit::v1::VerifyResponse Verify(uint64_t start_sequence = 1) {
    auto stub =
        audit::v1::AuditService::NewStub(DialPlatformService(Identity("tidepoolctl"), target_));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    audit::v1::VerifyRequest request;
    request.set_start_sequence(start_sequence);
    audit::v1::VerifyResponse response;
    grpc::Status status = stub->Verify(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  const std::string& target() const { return target_; }
  int port() const { return port_; }
  const std::string& dir() const { return tmp_.path(); }
  const std::string& data_dir() const { return data_dir_; }

 private:
  tidepool::testing::ScopedTempDir tmp_;
  std::string data_dir_;
  std::string config_;
  std::unique_ptr<Subprocess> process_;
  std::string target_;
  int port_ = 0;
};

common::v1::AuditEvent Event(const std::string& id) {
  common::v1::AuditEvent event;
  event.set_event_id(id);
  event.mutable_actor()->set_kind(common::v1::ACTOR_KIND_SERVICE);
  event.mutable_actor()->set_id("auth");
  event.set_action("auth.sign_in");
  event.set_outcome(common::v1::OUTCOME_SUCCESS);
  return event;
}

TEST(AuditDurabilityTest, KillNineMidAppendLosesNoAcknowledgedEvent) {
  AuditServer server;
  server.Start(0);
  const int port = server.port();
  std::mt19937 random(1204);           // seeded: the same kill points every run
  std::set<std::string> acknowledged;  // every acknowledged event id, all rounds
  std::map<std::string, int> stored;   // event id -> how many records carry it
  uint64_t checked_head = 0;           // records up to here were checked in earlier rounds
  std::vector<common::v1::AuditEvent> unacknowledged;  // resent next round, as a spool would
  int batch_number = 0;
  // 20 rounds in the suite; bench/audit/kill9 runs as many as TIDEPOOL_KILL_ROUNDS says.
  int rounds = 20;
  if (const char* env = std::getenv("TIDEPOOL_KILL_ROUNDS"); env != nullptr) {
    rounds = std::max(1, std::atoi(env));
  }
  for (int round = 0; round < rounds; ++round) {
    if (round > 0) {
      server.Start(port);
    }
    GrpcAuditTransport transport(DialPlatformService(server.Identity("auth"), server.target()));
    const absl::Time round_start = absl::Now() - absl::Seconds(2);
    std::set<std::string> acknowledged_now;
    absl::Mutex mu;
    bool stop = false;
    std::thread appender([&] {
      for (;;) {
        {
          absl::MutexLock lock(&mu);
          if (stop) {
            return;
          }
        }
        std::vector<common::v1::AuditEvent> batch = unacknowledged;
        if (batch.empty()) {
          for (int i = 0; i < 25; ++i) {
            batch.push_back(Event(absl::StrCat("ev_", batch_number, "_", i)));
          }
          ++batch_number;
        }
        absl::StatusOr<std::vector<uint64_t>> sequences =
            transport.Append(batch, absl::Now() + absl::Seconds(2));
        absl::MutexLock lock(&mu);
        if (!sequences.ok()) {
          unacknowledged = batch;
          return;  // the server is gone
        }
        unacknowledged.clear();
        for (const auto& event : batch) {
          acknowledged.insert(event.event_id());
          acknowledged_now.insert(event.event_id());
        }
      }
    });
    absl::SleepFor(absl::Milliseconds(20 + static_cast<int>(random() % 100)));
    server.Kill(SIGKILL);
    {
      absl::MutexLock lock(&mu);
      stop = true;
    }
    appender.join();

    // Restart and check: every event acknowledged this round is stored exactly once, no
    // record repeats an event id, and the chain is intact from the last checked record on.
    // (Incremental, so a 1,000-round run stays linear.)
    server.Start(port);
    const uint64_t first_new = checked_head + 1;
    for (const auto& [sequence, id] : server.ExportSince(round_start)) {
      if (sequence > checked_head) {
        ASSERT_EQ(++stored[id], 1) << "round " << round << ": " << id << " stored twice";
        checked_head = sequence;
      }
    }
    for (const std::string& id : acknowledged_now) {
      ASSERT_EQ(stored[id], 1) << "round " << round << ": acknowledged event " << id;
    }
    // From the first record of this round (or the last one checked, if none was added); the
    // link to the record before it is part of the check.
    audit::v1::VerifyResponse verdict =
        server.Verify(std::max<uint64_t>(1, std::min(first_new, checked_head)));
    ASSERT_EQ(verdict.result(), audit::v1::VERIFY_RESULT_OK)
        << "round " << round << ": " << verdict.DebugString();
    server.Kill(SIGTERM);
  }
  EXPECT_GT(acknowledged.size(), 100u);
}

TEST(AuditSpoolTest, EventsWaitInTheSpoolWhileAuditIsDownAndArriveOnceInOrder) {
  AuditServer server;
  server.Start(0);
  const int port = server.port();
  const std::string target = server.target();
  server.Kill(SIGTERM);  // audit is down from here on
  RealClock clock;
  AuditClientOptions options;
  options.spool_path = server.dir() + "/auth_spool.db";
  options.rpc_timeout = absl::Seconds(1);
  {
    absl::StatusOr<std::unique_ptr<AuditClient>> client = AuditClient::Create(
        std::make_unique<GrpcAuditTransport>(DialPlatformService(server.Identity("auth"), target)),
        clock, options);
    ASSERT_THAT(client, IsOk());
    for (int i = 0; i < 100; ++i) {
      (*client)->Emit(Event(absl::StrCat("ev_spooled_", i)));
    }
    EXPECT_THAT((*client)->DrainOnce(), StatusIs(absl::StatusCode::kUnavailable));
    EXPECT_EQ(*(*client)->spooled(), 100);
    // A security event cannot be made durable: it fails closed.
    EXPECT_THAT((*client)->EmitDurable(Event("ev_durable"), absl::Now() + absl::Seconds(1)),
                StatusIs(absl::StatusCode::kUnavailable));
    EXPECT_EQ(*(*client)->spooled(), 100);
  }  // the emitting process exits with a full spool

  server.Start(port);
  absl::StatusOr<std::unique_ptr<AuditClient>> client = AuditClient::Create(
      std::make_unique<GrpcAuditTransport>(DialPlatformService(server.Identity("auth"), target)),
      clock, options);
  ASSERT_THAT(client, IsOk());
  ASSERT_THAT((*client)->DrainOnce(), IsOk());
  EXPECT_EQ(*(*client)->spooled(), 0);
  std::vector<std::string> ids = server.ExportIds();
  ASSERT_EQ(ids.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(ids[i], absl::StrCat("ev_spooled_", i));
  }
  // Once audit is back, a security event is durable before EmitDurable returns.
  ASSERT_THAT((*client)->EmitDurable(Event("ev_durable_2"), absl::Now() + absl::Seconds(5)),
              IsOk());
  ids = server.ExportIds();
  ASSERT_EQ(ids.size(), 101u);
  EXPECT_EQ(ids.back(), "ev_durable_2");
  EXPECT_EQ(server.Verify().result(), audit::v1::VERIFY_RESULT_OK);
  server.Kill(SIGTERM);
}

TEST(AuditCliTest, VerifyReportsATamperedStoreAndQueryShowsTheTrail) {
  AuditServer server;
  server.Start(0);
  const int port = server.port();
  GrpcAuditTransport transport(DialPlatformService(server.Identity("auth"), server.target()));
  std::vector<common::v1::AuditEvent> batch;
  for (int i = 0; i < 30; ++i) {
    batch.push_back(Event(absl::StrCat("ev_cli_", i)));
  }
  ASSERT_THAT(transport.Append(batch, absl::Now() + absl::Seconds(5)), IsOk());
  auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), BinaryPath("tidepoolctl"));
    args.push_back("--data-dir");
    args.push_back(server.data_dir());
    absl::StatusOr<tidepool::testing::CommandResult> result =
        tidepool::testing::RunCommand(args, server.dir());
    EXPECT_THAT(result, IsOk());
    return result.ok() ? *result : tidepool::testing::CommandResult{};
  };
  tidepool::testing::CommandResult query = ctl({"audit", "query", "--limit", "5"});
  EXPECT_EQ(query.exit_code, 0) << query.err;
  EXPECT_THAT(query.out, ::testing::ContainsRegex("30 +[0-9-]+ [0-9:]+ +auth +auth.sign_in"));
  tidepool::testing::CommandResult verify = ctl({"audit", "verify"});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  EXPECT_THAT(verify.out, HasSubstr("OK: records 1..30 intact"));
  tidepool::testing::CommandResult exported =
      ctl({"audit", "export", "--output", server.dir() + "/trail.jsonl"});
  EXPECT_EQ(exported.exit_code, 0) << exported.err;
  const std::string trail = tidepool::testing::ReadFileOrEmpty(server.dir() + "/trail.jsonl");
  EXPECT_EQ(std::count(trail.begin(), trail.end(), '\n'), 30);
  EXPECT_EQ(ctl({"audit", "query", "--outcome", "maybe"}).exit_code, 2);

  // Stop audit, edit a record straight in the SQLite file, start again: verify names it.
  server.Kill(SIGTERM);
  absl::StatusOr<tidepool::testing::CommandResult> edit =
      tidepool::testing::RunCommand({"/usr/bin/sqlite3", server.data_dir() + "/audit/records.db",
                                     "DROP TRIGGER records_no_update; UPDATE records SET record = "
                                     "CAST(replace(CAST(record AS TEXT), 'auth.sign_in', "
                                     "'auth.sign_up') AS BLOB) WHERE seq = 12;"},
                                    server.dir());
  ASSERT_THAT(edit, IsOk());
  ASSERT_EQ(edit->exit_code, 0) << edit->err;
  server.Start(port);
  verify = ctl({"audit", "verify"});
  EXPECT_EQ(verify.exit_code, 1);
  EXPECT_THAT(verify.out, HasSubstr("BROKEN at sequence 12: VERIFY_FAILURE_HASH_MISMATCH"));
  server.Kill(SIGTERM);
}

}  // namespace
}  // namespace tidepool
