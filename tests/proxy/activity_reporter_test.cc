#include "services/proxy/activity_reporter.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "tests/testing/loopback_grpc_server.h"
#include "tests/testing/fake_clock.h"
#include "tidepool/scaler/v1/scaler_service.grpc.pb.h"

namespace tidepool::proxy {
namespace {

namespace scalerpb = ::tidepool::scaler::v1;
using ::tidepool::testing::FakeClock;

// A whole second plus a fraction, so that the record time's nanos are checked too.
absl::Time T0() { return absl::FromUnixSeconds(1900000000) + absl::Microseconds(250000); }

// Polls `condition` every 2 ms for up to `timeout` (real time).
bool PollUntil(const std::function<bool()>& condition, absl::Duration timeout = absl::Seconds(5)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

// A hand-written ScalerService that records RecordActivity requests and answers OK or, when
// told to, UNAVAILABLE. Thread-safe.
class RecordingScaler final : public scalerpb::ScalerService::Service {
 public:
  grpc::Status RecordActivity(grpc::ServerContext* /*context*/,
                              const scalerpb::RecordActivityRequest* request,
                              scalerpb::RecordActivityResponse* response) override {
    absl::MutexLock lock(&mu_);
    requests_.push_back(*request);
    if (failing_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the store is down");
    response->set_accepted_count(request->records_size());
    return grpc::Status::OK;
  }

  void SetFailing(bool failing) {
    absl::MutexLock lock(&mu_);
    failing_ = failing;
  }
  std::vector<scalerpb::RecordActivityRequest> Requests() const {
    absl::MutexLock lock(&mu_);
    return requests_;
  }
  size_t RequestCount() const {
    absl::MutexLock lock(&mu_);
    return requests_.size();
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<scalerpb::RecordActivityRequest> requests_ ABSL_GUARDED_BY(mu_);
  bool failing_ ABSL_GUARDED_BY(mu_) = false;
};

class ActivityReporterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tidepool::testing::LoopbackGrpcServer started =
        tidepool::testing::LoopbackGrpcServer::Start({&scaler_});
    ASSERT_NE(started.server, nullptr);
    server_ = std::move(started.server);
    channel_ = started.channel;
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  }

  // The channel provider the reporter gets: the channel, or nullptr while `unavailable_`.
  std::function<std::shared_ptr<grpc::Channel>()> Provider() {
    return [this]() -> std::shared_ptr<grpc::Channel> {
      provider_calls_.fetch_add(1);
      return unavailable_.load() ? nullptr : channel_;
    };
  }

  // Every record the scaler received, over all requests.
  std::vector<scalerpb::ActivityRecord> AllRecords() const {
    std::vector<scalerpb::ActivityRecord> out;
    for (const auto& request : scaler_.Requests()) {
      for (const auto& record : request.records()) out.push_back(record);
    }
    return out;
  }

  RecordingScaler scaler_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::atomic<bool> unavailable_{false};
  std::atomic<int> provider_calls_{0};
  FakeClock clock_{T0()};
};

const scalerpb::ActivityRecord* FindRecord(const scalerpb::RecordActivityRequest& request,
                                           const std::string& workspace_id,
                                           const std::string& user_id,
                                           scalerpb::ActivitySource source) {
  for (const auto& record : request.records()) {
    if (record.workspace_id() == workspace_id && record.user_id() == user_id &&
        record.source() == source) {
      return &record;
    }
  }
  return nullptr;
}

TEST_F(ActivityReporterTest, FlushAggregatesPerWorkspaceUserAndSource) {
  ActivityReporter reporter(Provider(), clock_, absl::Hours(1));
  reporter.Record("ws_a", "u_1", scalerpb::ACTIVITY_SOURCE_HTTP, 100);
  reporter.Record("ws_a", "u_1", scalerpb::ACTIVITY_SOURCE_HTTP, 150);
  reporter.Record("ws_a", "u_1", scalerpb::ACTIVITY_SOURCE_HTTP, 0);
  reporter.Record("ws_a", "u_1", scalerpb::ACTIVITY_SOURCE_WEBSOCKET, 7);
  reporter.Record("ws_a", "u_2", scalerpb::ACTIVITY_SOURCE_HTTP, 11);
  reporter.Record("ws_b", "u_1", scalerpb::ACTIVITY_SOURCE_HTTP, 13);
  reporter.Record("ws_a", "", scalerpb::ACTIVITY_SOURCE_HTTP, 17);
  clock_.Advance(absl::Seconds(10));
  const absl::Time flushed_at = clock_.Now();

  reporter.Flush();

  const std::vector<scalerpb::RecordActivityRequest> requests = scaler_.Requests();
  ASSERT_EQ(requests.size(), 1u);
  const scalerpb::RecordActivityRequest& request = requests[0];
  ASSERT_EQ(request.records_size(), 5);
  struct Expected {
    std::string workspace, user;
    scalerpb::ActivitySource source;
    int64_t events, bytes;
  };
  for (const Expected& e : {Expected{"ws_a", "u_1", scalerpb::ACTIVITY_SOURCE_HTTP, 3, 250},
                            Expected{"ws_a", "u_1", scalerpb::ACTIVITY_SOURCE_WEBSOCKET, 1, 7},
                            Expected{"ws_a", "u_2", scalerpb::ACTIVITY_SOURCE_HTTP, 1, 11},
                            Expected{"ws_b", "u_1", scalerpb::ACTIVITY_SOURCE_HTTP, 1, 13},
                            Expected{"ws_a", "", scalerpb::ACTIVITY_SOURCE_HTTP, 1, 17}}) {
    const scalerpb::ActivityRecord* record = FindRecord(request, e.workspace, e.user, e.source);
    ASSERT_NE(record, nullptr) << e.workspace << " " << e.user << " " << e.source;
    EXPECT_EQ(record->event_count(), e.events) << e.workspace << " " << e.user;
    EXPECT_EQ(record->byte_count(), e.bytes) << e.workspace << " " << e.user;
    // The time is the clock's now at Flush, not at Record.
    EXPECT_EQ(record->time().seconds(), absl::ToUnixSeconds(flushed_at));
    EXPECT_EQ(record->time().nanos(), 250000000);
  }

  const ActivityReporter::Stats stats = reporter.GetStats();
  EXPECT_EQ(stats.batches_sent, 1);
  EXPECT_EQ(stats.records_sent, 5);
  EXPECT_EQ(stats.batches_failed, 0);
}

TEST_F(ActivityReporterTest, FlushWithNothingPendingSendsNothing) {
  ActivityReporter reporter(Provider(), clock_, absl::Hours(1));
  reporter.Flush();
  EXPECT_EQ(scaler_.RequestCount(), 0u);

  // Nor does a second Flush right after a successful one.
  reporter.Record("ws_a", "u_1", scalerpb::ACTIVITY_SOURCE_HTTP, 1);
  reporter.Flush();
  reporter.Flush();
  EXPECT_EQ(scaler_.RequestCount(), 1u);
  const ActivityReporter::Stats stats = reporter.GetStats();
  EXPECT_EQ(stats.batches_sent, 1);
  EXPECT_EQ(stats.records_sent, 1);
  EXPECT_EQ(stats.batches_failed, 0);
}

TEST_F(ActivityReporterTest, AFailedBatchIsCountedAndDropped) {
  ActivityReporter reporter(Provider(), clock_, absl::Hours(1));
  scaler_.SetFailing(true);
  reporter.Record("ws_a", "u_1", scalerpb::ACTIVITY_SOURCE_HTTP, 100);
  reporter.Flush();
  EXPECT_EQ(scaler_.RequestCount(), 1u);
  ActivityReporter::Stats stats = reporter.GetStats();
  EXPECT_EQ(stats.batches_failed, 1);
  EXPECT_EQ(stats.batches_sent, 0);
  EXPECT_EQ(stats.records_sent, 0);

  // The backend is back: the dropped batch is not resent.
  scaler_.SetFailing(false);
  reporter.Flush();
  EXPECT_EQ(scaler_.RequestCount(), 1u);

  // New activity goes out alone.
  reporter.Record("ws_a", "u_1", scalerpb::ACTIVITY_SOURCE_HTTP, 5);
  reporter.Flush();
  const std::vector<scalerpb::RecordActivityRequest> requests = scaler_.Requests();
  ASSERT_EQ(requests.size(), 2u);
  ASSERT_EQ(requests[1].records_size(), 1);
  EXPECT_EQ(requests[1].records(0).event_count(), 1);
  EXPECT_EQ(requests[1].records(0).byte_count(), 5);
  stats = reporter.GetStats();
  EXPECT_EQ(stats.batches_failed, 1);
  EXPECT_EQ(stats.batches_sent, 1);
  EXPECT_EQ(stats.records_sent, 1);
}

TEST_F(ActivityReporterTest, ANullChannelIsAFailedBatchAndDropsIt) {
  ActivityReporter reporter(Provider(), clock_, absl::Hours(1));
  unavailable_ = true;
  reporter.Record("ws_a", "u_1", scalerpb::ACTIVITY_SOURCE_TERMINAL_INPUT, 3);
  reporter.Record("ws_b", "u_1", scalerpb::ACTIVITY_SOURCE_HTTP, 4);
  reporter.Flush();
  EXPECT_EQ(scaler_.RequestCount(), 0u);
  ActivityReporter::Stats stats = reporter.GetStats();
  EXPECT_EQ(stats.batches_failed, 1);
  EXPECT_EQ(stats.batches_sent, 0);

  // The scaler is found again: nothing of the dropped batch is resent.
  unavailable_ = false;
  reporter.Flush();
  EXPECT_EQ(scaler_.RequestCount(), 0u);

  reporter.Record("ws_c", "u_2", scalerpb::ACTIVITY_SOURCE_WEBSOCKET, 9);
  reporter.Flush();
  const std::vector<scalerpb::RecordActivityRequest> requests = scaler_.Requests();
  ASSERT_EQ(requests.size(), 1u);
  ASSERT_EQ(requests[0].records_size(), 1);
  EXPECT_EQ(requests[0].records(0).workspace_id(), "ws_c");
  EXPECT_EQ(requests[0].records(0).user_id(), "u_2");
  EXPECT_EQ(requests[0].records(0).source(), scalerpb::ACTIVITY_SOURCE_WEBSOCKET);
  stats = reporter.GetStats();
  EXPECT_EQ(stats.batches_failed, 1);
  EXPECT_EQ(stats.batches_sent, 1);
  EXPECT_EQ(stats.records_sent, 1);
}

TEST_F(ActivityReporterTest, FailuresAreCountedPerBatch) {
  ActivityReporter reporter(Provider(), clock_, absl::Hours(1));
  unavailable_ = true;
  for (int i = 0; i < 3; ++i) {
    reporter.Record("ws_a", "u_1", scalerpb::ACTIVITY_SOURCE_HTTP, 1);
    reporter.Flush();
  }
  EXPECT_EQ(reporter.GetStats().batches_failed, 3);
  EXPECT_EQ(reporter.GetStats().batches_sent, 0);
}

TEST_F(ActivityReporterTest, StartDeliversWithoutAnExplicitFlush) {
  ActivityReporter reporter(Provider(), clock_, absl::Milliseconds(50));
  reporter.Start();
  reporter.Record("ws_a", "u_1", scalerpb::ACTIVITY_SOURCE_HTTP, 10);
  ASSERT_TRUE(PollUntil([&] { return scaler_.RequestCount() >= 1; }));

  // And keeps delivering.
  reporter.Record("ws_b", "u_1", scalerpb::ACTIVITY_SOURCE_HTTP, 20);
  ASSERT_TRUE(PollUntil([&] { return AllRecords().size() >= 2; }));
  reporter.Stop();

  const std::vector<scalerpb::ActivityRecord> records = AllRecords();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].workspace_id(), "ws_a");
  EXPECT_EQ(records[0].byte_count(), 10);
  EXPECT_EQ(records[1].workspace_id(), "ws_b");
  EXPECT_EQ(records[1].byte_count(), 20);
  EXPECT_EQ(reporter.GetStats().records_sent, 2);
}

TEST_F(ActivityReporterTest, StopFlushesWhatIsPending) {
  ActivityReporter reporter(Provider(), clock_, absl::Hours(1));
  reporter.Start();
  reporter.Record("ws_a", "u_1", scalerpb::ACTIVITY_SOURCE_HTTP, 42);
  reporter.Record("ws_a", "u_1", scalerpb::ACTIVITY_SOURCE_HTTP, 8);
  EXPECT_EQ(scaler_.RequestCount(), 0u);  // an hour before the first periodic flush
  reporter.Stop();

  // Delivered by the time Stop returns.
  const std::vector<scalerpb::RecordActivityRequest> requests = scaler_.Requests();
  ASSERT_EQ(requests.size(), 1u);
  ASSERT_EQ(requests[0].records_size(), 1);
  EXPECT_EQ(requests[0].records(0).event_count(), 2);
  EXPECT_EQ(requests[0].records(0).byte_count(), 50);

  // A second Stop (and the destructor) send nothing more.
  reporter.Stop();
  EXPECT_EQ(scaler_.RequestCount(), 1u);
}

TEST_F(ActivityReporterTest, ConcurrentRecordLosesNoEvent) {
  ActivityReporter reporter(Provider(), clock_, absl::Hours(1));
  constexpr int kThreads = 8;
  constexpr int kPerThread = 2000;
  std::atomic<bool> done{false};
  // Flushes race with the recording threads: every event lands in exactly one batch.
  std::thread flusher([&] {
    while (!done.load()) {
      reporter.Flush();
      absl::SleepFor(absl::Milliseconds(1));
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        reporter.Record(
            absl::StrCat("ws_", t % 2), "u_1",
            i % 2 == 0 ? scalerpb::ACTIVITY_SOURCE_HTTP : scalerpb::ACTIVITY_SOURCE_WEBSOCKET, 3);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  done = true;
  flusher.join();
  reporter.Flush();

  int64_t events = 0;
  int64_t bytes = 0;
  for (const scalerpb::ActivityRecord& record : AllRecords()) {
    events += record.event_count();
    bytes += record.byte_count();
  }
  EXPECT_EQ(events, int64_t{kThreads} * kPerThread);
  EXPECT_EQ(bytes, int64_t{kThreads} * kPerThread * 3);
  const ActivityReporter::Stats stats = reporter.GetStats();
  EXPECT_EQ(stats.batches_failed, 0);
  EXPECT_EQ(static_cast<size_t>(stats.batches_sent), scaler_.RequestCount());
}

}  // namespace
}  // namespace tidepool::proxy
