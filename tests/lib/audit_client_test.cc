#include "lib/audit_client.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "lib/metrics.h"
#include "prometheus/registry.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tidepool/audit/v1/audit_service.grpc.pb.h"

namespace tidepool {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;
using ::testing::SizeIs;
using ::tidepool::common::v1::AuditEvent;
using ::tidepool::testing::FakeClock;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::ScopedTempDir;
using ::tidepool::testing::StatusIs;

MATCHER_P(IsOkAndHolds, matcher, "is OK and holds a matching value") {
  if (!arg.ok()) {
    *result_listener << "status is " << arg.status().ToString();
    return false;
  }
  return ::testing::ExplainMatchResult(matcher, *arg, result_listener);
}

// An in-memory audit service behind the AuditTransport seam. Like the real one it appends
// whole batches or nothing, assigns sequences from 1 and ignores event ids it already holds.
// It can be switched down (UNAVAILABLE, nothing stored), told to lose acknowledgements (stores
// the batch, then returns UNAVAILABLE) and told to reject an action (INVALID_ARGUMENT for any
// batch carrying it, nothing stored). Records every call. Thread-safe.
class FakeAuditTransport final : public AuditTransport {
 public:
  absl::StatusOr<std::vector<uint64_t>> Append(const std::vector<AuditEvent>& events,
                                               absl::Time /*deadline*/) override {
    std::function<void()> hook;
    {
      absl::MutexLock lock(&mu_);
      hook = std::move(on_next_append_);
      on_next_append_ = nullptr;
    }
    if (hook) {
      hook();
    }
    absl::MutexLock lock(&mu_);
    std::vector<std::string> ids;
    for (const AuditEvent& event : events) {
      ids.push_back(event.event_id());
    }
    calls_.push_back(ids);
    if (!available_) {
      return absl::UnavailableError("fake audit service is down");
    }
    for (const AuditEvent& event : events) {
      if (rejected_actions_.count(event.action()) > 0) {
        return absl::InvalidArgumentError("action rejected");
      }
    }
    std::vector<uint64_t> sequences;
    for (const AuditEvent& event : events) {
      received_.push_back(event.event_id());
      auto [it, inserted] = sequence_by_id_.try_emplace(event.event_id(), stored_.size() + 1);
      if (inserted) {
        stored_.push_back(event);
        stored_.back().set_sequence(it->second);
      }
      sequences.push_back(it->second);
    }
    if (lose_acks_) {
      return absl::UnavailableError("fake audit service lost the acknowledgement");
    }
    return sequences;
  }

  void SetAvailable(bool available) {
    absl::MutexLock lock(&mu_);
    available_ = available;
  }
  void SetLoseAcks(bool lose) {
    absl::MutexLock lock(&mu_);
    lose_acks_ = lose;
  }
  void RejectAction(const std::string& action) {
    absl::MutexLock lock(&mu_);
    rejected_actions_.insert(action);
  }
  // Runs `hook` at the start of the next Append, outside the fake's lock.
  void OnNextAppend(std::function<void()> hook) {
    absl::MutexLock lock(&mu_);
    on_next_append_ = std::move(hook);
  }

  // The event ids of every Append call, in call order, whatever its outcome.
  std::vector<std::vector<std::string>> calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  // Every event id the service took (stored or deduplicated), in arrival order.
  std::vector<std::string> received() {
    absl::MutexLock lock(&mu_);
    return received_;
  }
  // The ids of the stored log, in sequence order.
  std::vector<std::string> stored_ids() {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> ids;
    for (const AuditEvent& event : stored_) {
      ids.push_back(event.event_id());
    }
    return ids;
  }
  std::vector<AuditEvent> stored() {
    absl::MutexLock lock(&mu_);
    return stored_;
  }
  // Waits (real time, bounded) until `n` events are stored; for background-thread tests.
  bool WaitForStored(size_t n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stored_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }
  // Waits (real time, bounded) until at least `n` Append calls were made.
  bool WaitForCalls(size_t n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return calls_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }

 private:
  absl::Mutex mu_;
  bool available_ ABSL_GUARDED_BY(mu_) = true;
  bool lose_acks_ ABSL_GUARDED_BY(mu_) = false;
  std::set<std::string> rejected_actions_ ABSL_GUARDED_BY(mu_);
  std::function<void()> on_next_append_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<std::string>> calls_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> received_ ABSL_GUARDED_BY(mu_);
  std::vector<AuditEvent> stored_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> sequence_by_id_ ABSL_GUARDED_BY(mu_);
};

// Hands a client a transport while the test keeps the FakeAuditTransport (the "server"), so
// its state outlives a client (restart tests).
class TransportRef final : public AuditTransport {
 public:
  explicit TransportRef(AuditTransport& target) : target_(target) {}
  absl::StatusOr<std::vector<uint64_t>> Append(const std::vector<AuditEvent>& events,
                                               absl::Time deadline) override {
    return target_.Append(events, deadline);
  }

 private:
  AuditTransport& target_;
};

AuditEvent MakeEvent(const std::string& event_id, const std::string& action = "test.action") {
  AuditEvent event;
  event.set_event_id(event_id);
  event.set_action(action);
  event.mutable_actor()->set_kind(common::v1::ACTOR_KIND_SERVICE);
  event.mutable_actor()->set_id("auth");
  event.set_outcome(common::v1::OUTCOME_SUCCESS);
  return event;
}

std::vector<std::string> Ids(const std::string& prefix, int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) {
    ids.push_back(absl::StrCat(prefix, i));
  }
  return ids;
}

bool SentInAnyCall(const std::vector<std::vector<std::string>>& calls, const std::string& id) {
  for (const auto& call : calls) {
    for (const std::string& sent : call) {
      if (sent == id) {
        return true;
      }
    }
  }
  return false;
}

class AuditClientTest : public ::testing::Test {
 protected:
  AuditClientOptions Options() {
    AuditClientOptions options;
    options.spool_path = dir_.Join("audit_spool.db");
    options.source_name = "test";
    return options;
  }

  std::unique_ptr<AuditClient> NewClient(AuditClientOptions options) {
    absl::StatusOr<std::unique_ptr<AuditClient>> client =
        AuditClient::Create(std::make_unique<TransportRef>(fake_), clock_, std::move(options));
    EXPECT_THAT(client, IsOk());
    return client.ok() ? std::move(*client) : nullptr;
  }
  std::unique_ptr<AuditClient> NewClient() { return NewClient(Options()); }

  void EmitAll(AuditClient& client, const std::vector<std::string>& ids) {
    for (const std::string& id : ids) {
      client.Emit(MakeEvent(id));
    }
  }

  ScopedTempDir dir_;
  FakeClock clock_{absl::FromUnixNanos(1700000000123456789)};
  FakeAuditTransport fake_;
};

TEST_F(AuditClientTest, DeliversEventsInEmitOrder) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  const std::vector<std::string> ids = Ids("ev_order_", 7);
  EmitAll(*client, ids);
  EXPECT_EQ(client->queued(), 7u);

  ASSERT_THAT(client->DrainOnce(), IsOk());

  EXPECT_THAT(fake_.stored_ids(), ElementsAreArray(ids));
  EXPECT_EQ(client->queued(), 0u);
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(0)));
}

// The workspace an event is about is filtered on as a field of its own: an emitter that names
// it only in the attributes gets the field filled; one that sets the field keeps it.
TEST_F(AuditClientTest, TheWorkspaceAttributeFillsTheWorkspaceField) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  AuditEvent named = MakeEvent("ev_ws_1");
  (*named.mutable_attributes())["workspace_id"] = "ws_aaaaaaaaaaaaaaaaaaaaaaaaaa";
  client->Emit(named);
  AuditEvent both = MakeEvent("ev_ws_2");
  both.set_workspace_id("ws_bbbbbbbbbbbbbbbbbbbbbbbbbb");
  (*both.mutable_attributes())["workspace_id"] = "ws_cccccccccccccccccccccccccc";
  client->Emit(both);
  client->Emit(MakeEvent("ev_ws_3"));
  ASSERT_THAT(client->DrainOnce(), IsOk());
  const std::vector<AuditEvent> stored = fake_.stored();
  ASSERT_EQ(stored.size(), 3u);
  EXPECT_EQ(stored[0].workspace_id(), "ws_aaaaaaaaaaaaaaaaaaaaaaaaaa");
  EXPECT_EQ(stored[1].workspace_id(), "ws_bbbbbbbbbbbbbbbbbbbbbbbbbb");
  EXPECT_EQ(stored[2].workspace_id(), "");
}

TEST_F(AuditClientTest, SendsInBatchesOfAtMostMaxBatch) {
  AuditClientOptions options = Options();
  options.max_batch = 2;
  std::unique_ptr<AuditClient> client = NewClient(options);
  ASSERT_NE(client, nullptr);
  EmitAll(*client, Ids("ev_batch_", 5));

  ASSERT_THAT(client->DrainOnce(), IsOk());

  EXPECT_THAT(fake_.calls(), ElementsAre(SizeIs(2), SizeIs(2), SizeIs(1)));
  EXPECT_THAT(fake_.stored_ids(), ElementsAreArray(Ids("ev_batch_", 5)));
}

TEST_F(AuditClientTest, SpoolsWhileDownAndReplaysInOrderExactlyOnce) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  fake_.SetAvailable(false);
  EmitAll(*client, {"ev_a", "ev_b", "ev_c"});

  EXPECT_THAT(client->DrainOnce(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(client->queued(), 0u);
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(3)));
  EXPECT_THAT(fake_.stored_ids(), IsEmpty());

  // Still down: the spool keeps them, later events queue behind them.
  EXPECT_THAT(client->DrainOnce(), StatusIs(absl::StatusCode::kUnavailable));
  EmitAll(*client, {"ev_d", "ev_e"});

  fake_.SetAvailable(true);
  ASSERT_THAT(client->DrainOnce(), IsOk());

  EXPECT_THAT(fake_.stored_ids(), ElementsAre("ev_a", "ev_b", "ev_c", "ev_d", "ev_e"));
  // None was delivered twice.
  EXPECT_THAT(fake_.received(), ElementsAre("ev_a", "ev_b", "ev_c", "ev_d", "ev_e"));
  EXPECT_EQ(client->queued(), 0u);
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(0)));
}

TEST_F(AuditClientTest, NewClientReplaysSpoolLeftByDestroyedClientFirst) {
  fake_.SetAvailable(false);
  {
    std::unique_ptr<AuditClient> first = NewClient();
    ASSERT_NE(first, nullptr);
    EmitAll(*first, {"ev_1", "ev_2", "ev_3"});
    EXPECT_THAT(first->DrainOnce(), StatusIs(absl::StatusCode::kUnavailable));
    EmitAll(*first, {"ev_4", "ev_5"});  // still in memory when the client goes away
  }
  const size_t calls_before_restart = fake_.calls().size();
  fake_.SetAvailable(true);

  std::unique_ptr<AuditClient> second = NewClient();
  ASSERT_NE(second, nullptr);
  EXPECT_THAT(second->spooled(), IsOkAndHolds(Eq(5)));
  EXPECT_EQ(fake_.calls().size(), calls_before_restart);  // opening sends nothing
  second->Emit(MakeEvent("ev_6"));

  ASSERT_THAT(second->DrainOnce(), IsOk());

  EXPECT_THAT(fake_.stored_ids(), ElementsAre("ev_1", "ev_2", "ev_3", "ev_4", "ev_5", "ev_6"));
  EXPECT_THAT(second->spooled(), IsOkAndHolds(Eq(0)));
}

TEST_F(AuditClientTest, LostAcknowledgementIsResentAndDeduplicated) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  EmitAll(*client, {"ev_x", "ev_y", "ev_z"});
  fake_.SetLoseAcks(true);

  EXPECT_THAT(client->DrainOnce(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(3)));  // unacknowledged: kept

  fake_.SetLoseAcks(false);
  ASSERT_THAT(client->DrainOnce(), IsOk());

  EXPECT_THAT(fake_.received(),
              ElementsAre("ev_x", "ev_y", "ev_z", "ev_x", "ev_y", "ev_z"));  // resent...
  EXPECT_THAT(fake_.stored_ids(), ElementsAre("ev_x", "ev_y", "ev_z"));      // ...held once
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(0)));
}

TEST_F(AuditClientTest, EventsSpilledWhileTheirBatchIsInFlightStayInOrder) {
  AuditClientOptions options = Options();
  options.max_queue = 2;
  std::unique_ptr<AuditClient> client = NewClient(options);
  ASSERT_NE(client, nullptr);
  EmitAll(*client, {"ev_1", "ev_2"});
  // While [ev_1, ev_2] is in flight the queue overflows and moves (batch included) to disk.
  fake_.OnNextAppend([&client] { client->Emit(MakeEvent("ev_3")); });

  ASSERT_THAT(client->DrainOnce(), IsOk());
  ASSERT_THAT(client->DrainOnce(), IsOk());

  EXPECT_THAT(fake_.stored_ids(), ElementsAre("ev_1", "ev_2", "ev_3"));
  EXPECT_EQ(client->queued(), 0u);
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(0)));
}

TEST_F(AuditClientTest, EmitDurableSucceedsWhenUp) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);

  ASSERT_THAT(client->EmitDurable(MakeEvent("ev_durable"), clock_.Now() + absl::Seconds(5)),
              IsOk());

  EXPECT_THAT(fake_.stored_ids(), ElementsAre("ev_durable"));
  EXPECT_EQ(client->queued(), 0u);
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(0)));
}

TEST_F(AuditClientTest, EmitDurableFailsClosedWhenDownAndSpoolsOnlyOlderEvents) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  EmitAll(*client, {"ev_old_1", "ev_old_2"});
  fake_.SetAvailable(false);

  EXPECT_THAT(client->EmitDurable(MakeEvent("ev_durable"), clock_.Now() + absl::Seconds(5)),
              StatusIs(absl::StatusCode::kUnavailable,
                       "audit service unavailable: the event could not be made durable"));

  EXPECT_EQ(client->queued(), 0u);
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(2)));
  fake_.SetAvailable(true);
  ASSERT_THAT(client->DrainOnce(), IsOk());
  EXPECT_THAT(fake_.stored_ids(), ElementsAre("ev_old_1", "ev_old_2"));
  EXPECT_FALSE(SentInAnyCall(fake_.calls(), "ev_durable"));
}

TEST_F(AuditClientTest, EmitDurableEventIsNotKeptWhenItsOwnAppendFails) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  fake_.SetAvailable(false);

  EXPECT_THAT(client->EmitDurable(MakeEvent("ev_durable"), clock_.Now() + absl::Seconds(5)),
              StatusIs(absl::StatusCode::kUnavailable));

  EXPECT_EQ(client->queued(), 0u);
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(0)));
  fake_.SetAvailable(true);
  ASSERT_THAT(client->DrainOnce(), IsOk());
  EXPECT_THAT(fake_.stored_ids(), IsEmpty());
}

TEST_F(AuditClientTest, EmitDurableFailsWhenTheDeadlineHasPassed) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  client->Emit(MakeEvent("ev_old"));

  EXPECT_THAT(client->EmitDurable(MakeEvent("ev_durable"), clock_.Now()),
              StatusIs(absl::StatusCode::kUnavailable));

  EXPECT_THAT(fake_.calls(), IsEmpty());
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(1)));
}

TEST_F(AuditClientTest, EmitDurableSendsOlderEventsFirst) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  fake_.SetAvailable(false);
  client->Emit(MakeEvent("ev_spooled"));
  ASSERT_THAT(client->DrainOnce(), StatusIs(absl::StatusCode::kUnavailable));
  fake_.SetAvailable(true);
  EmitAll(*client, {"ev_queued_1", "ev_queued_2"});

  ASSERT_THAT(client->EmitDurable(MakeEvent("ev_durable"), clock_.Now() + absl::Seconds(5)),
              IsOk());

  EXPECT_THAT(fake_.stored_ids(),
              ElementsAre("ev_spooled", "ev_queued_1", "ev_queued_2", "ev_durable"));
  EXPECT_THAT(fake_.calls().back(), ElementsAre("ev_durable"));
  EXPECT_EQ(client->queued(), 0u);
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(0)));
}

TEST_F(AuditClientTest, EmitDurableReturnsInvalidArgumentWhenRejected) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  fake_.RejectAction("test.bad");

  EXPECT_THAT(client->EmitDurable(MakeEvent("ev_bad", "test.bad"), clock_.Now() + absl::Seconds(5)),
              StatusIs(absl::StatusCode::kInvalidArgument));

  EXPECT_THAT(fake_.stored_ids(), IsEmpty());
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(0)));
}

TEST_F(AuditClientTest, DropsOnlyTheRejectedEvent) {
  prometheus::Registry registry;
  absl::StatusOr<std::unique_ptr<AuditClient>> created =
      AuditClient::Create(std::make_unique<TransportRef>(fake_), clock_, Options(), registry);
  ASSERT_THAT(created, IsOk());
  AuditClient& client = **created;
  fake_.RejectAction("test.bad");
  client.Emit(MakeEvent("ev_before"));
  client.Emit(MakeEvent("ev_bad", "test.bad"));
  client.Emit(MakeEvent("ev_after"));

  ASSERT_THAT(client.DrainOnce(), IsOk());

  EXPECT_THAT(fake_.stored_ids(), ElementsAre("ev_before", "ev_after"));
  EXPECT_EQ(client.queued(), 0u);
  EXPECT_THAT(client.spooled(), IsOkAndHolds(Eq(0)));
  const std::string metrics = SerializeMetrics(registry);
  EXPECT_THAT(metrics, HasSubstr("tidepool_audit_client_events_total{result=\"rejected\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("tidepool_audit_client_events_total{result=\"sent\"} 2"));
}

TEST_F(AuditClientTest, DropsARejectedEventReplayedFromTheSpool) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  fake_.SetAvailable(false);
  client->Emit(MakeEvent("ev_before"));
  client->Emit(MakeEvent("ev_bad", "test.bad"));
  client->Emit(MakeEvent("ev_after"));
  ASSERT_THAT(client->DrainOnce(), StatusIs(absl::StatusCode::kUnavailable));
  fake_.SetAvailable(true);
  fake_.RejectAction("test.bad");

  ASSERT_THAT(client->DrainOnce(), IsOk());

  EXPECT_THAT(fake_.stored_ids(), ElementsAre("ev_before", "ev_after"));
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(0)));
}

TEST_F(AuditClientTest, DropsAnOversizedEventWithoutSendingIt) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  AuditEvent huge = MakeEvent("ev_huge");
  (*huge.mutable_attributes())["blob"] = std::string(70 * 1024, 'x');
  client->Emit(MakeEvent("ev_before"));
  client->Emit(huge);
  client->Emit(MakeEvent("ev_after"));

  ASSERT_THAT(client->DrainOnce(), IsOk());

  EXPECT_THAT(fake_.stored_ids(), ElementsAre("ev_before", "ev_after"));
  EXPECT_FALSE(SentInAnyCall(fake_.calls(), "ev_huge"));
  EXPECT_THAT(client->EmitDurable(huge, clock_.Now() + absl::Seconds(5)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(AuditClientTest, EmitFillsEventIdAndClientTime) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  AuditEvent bare = MakeEvent("");
  client->Emit(bare);
  client->Emit(bare);
  AuditEvent preset = MakeEvent("ev_preset");
  preset.mutable_client_time()->set_seconds(42);
  client->Emit(preset);

  ASSERT_THAT(client->DrainOnce(), IsOk());

  std::vector<AuditEvent> stored = fake_.stored();
  ASSERT_THAT(stored, SizeIs(3));
  EXPECT_THAT(stored[0].event_id(), MatchesRegex("ev_[a-z2-7]{26}"));
  EXPECT_THAT(stored[1].event_id(), MatchesRegex("ev_[a-z2-7]{26}"));
  EXPECT_NE(stored[0].event_id(), stored[1].event_id());
  EXPECT_EQ(stored[0].client_time().seconds(), 1700000000);
  EXPECT_EQ(stored[0].client_time().nanos(), 123456789);
  EXPECT_EQ(stored[2].event_id(), "ev_preset");
  EXPECT_EQ(stored[2].client_time().seconds(), 42);
  EXPECT_EQ(stored[2].client_time().nanos(), 0);
}

TEST_F(AuditClientTest, EmitNeverCallsTheTransport) {
  AuditClientOptions options = Options();
  options.max_queue = 2;
  std::unique_ptr<AuditClient> client = NewClient(options);
  ASSERT_NE(client, nullptr);

  EmitAll(*client, Ids("ev_quiet_", 9));  // overflows the queue several times

  EXPECT_THAT(fake_.calls(), IsEmpty());
}

TEST_F(AuditClientTest, QueueOverflowSpillsToTheSpool) {
  AuditClientOptions options = Options();
  options.max_queue = 3;
  std::unique_ptr<AuditClient> client = NewClient(options);
  ASSERT_NE(client, nullptr);

  EmitAll(*client, {"ev_1", "ev_2", "ev_3", "ev_4"});
  EXPECT_EQ(client->queued(), 1u);
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(3)));
  client->Emit(MakeEvent("ev_5"));
  EXPECT_EQ(client->queued(), 2u);

  ASSERT_THAT(client->DrainOnce(), IsOk());
  EXPECT_THAT(fake_.stored_ids(), ElementsAre("ev_1", "ev_2", "ev_3", "ev_4", "ev_5"));
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(0)));
}

TEST_F(AuditClientTest, FullSpoolDropsTheNewestEvents) {
  AuditClientOptions options = Options();
  options.max_spool_events = 2;
  std::unique_ptr<AuditClient> client = NewClient(options);
  ASSERT_NE(client, nullptr);
  fake_.SetAvailable(false);
  EmitAll(*client, {"ev_1", "ev_2", "ev_3"});

  EXPECT_THAT(client->DrainOnce(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(2)));
  EXPECT_EQ(client->queued(), 0u);

  fake_.SetAvailable(true);
  ASSERT_THAT(client->DrainOnce(), IsOk());
  EXPECT_THAT(fake_.stored_ids(), ElementsAre("ev_1", "ev_2"));
}

TEST_F(AuditClientTest, CreateRejectsInvalidOptions) {
  AuditClientOptions no_path = Options();
  no_path.spool_path.clear();
  EXPECT_THAT(AuditClient::Create(std::make_unique<TransportRef>(fake_), clock_, no_path),
              StatusIs(absl::StatusCode::kInvalidArgument));
  AuditClientOptions big_batch = Options();
  big_batch.max_batch = 1001;
  EXPECT_THAT(AuditClient::Create(std::make_unique<TransportRef>(fake_), clock_, big_batch),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(AuditClient::Create(nullptr, clock_, Options()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(AuditClientTest, StartStopDeliversEverythingBeforeStopReturns) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  client->Start();
  const std::vector<std::string> ids = Ids("ev_bg_", 50);
  EmitAll(*client, ids);

  client->Stop(clock_.Now() + absl::Seconds(10));

  EXPECT_THAT(fake_.stored_ids(), ElementsAreArray(ids));
  EXPECT_EQ(client->queued(), 0u);
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(0)));
}

TEST_F(AuditClientTest, BackgroundSenderDeliversWithoutStop) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  client->Start();
  EmitAll(*client, {"ev_1", "ev_2", "ev_3"});

  EXPECT_TRUE(fake_.WaitForStored(3, absl::Seconds(30)));

  client->Stop(clock_.Now() + absl::Seconds(10));
  EXPECT_THAT(fake_.stored_ids(), ElementsAre("ev_1", "ev_2", "ev_3"));
}

TEST_F(AuditClientTest, BackgroundSenderRetriesAfterFailure) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  fake_.SetAvailable(false);
  client->Start();
  EmitAll(*client, {"ev_1", "ev_2"});
  ASSERT_TRUE(fake_.WaitForCalls(1, absl::Seconds(30)));

  fake_.SetAvailable(true);

  EXPECT_TRUE(fake_.WaitForStored(2, absl::Seconds(30)));
  client->Stop(clock_.Now() + absl::Seconds(10));
  EXPECT_THAT(fake_.stored_ids(), ElementsAre("ev_1", "ev_2"));
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(0)));
}

TEST_F(AuditClientTest, StopWhileDownSpoolsEverything) {
  std::unique_ptr<AuditClient> client = NewClient();
  ASSERT_NE(client, nullptr);
  fake_.SetAvailable(false);
  client->Start();
  EmitAll(*client, {"ev_1", "ev_2", "ev_3"});

  client->Stop(clock_.Now() + absl::Seconds(1));

  EXPECT_EQ(client->queued(), 0u);
  EXPECT_THAT(client->spooled(), IsOkAndHolds(Eq(3)));
  EXPECT_THAT(fake_.stored_ids(), IsEmpty());
}

// ---------------------------------------------------------------------------------------------
// GrpcAuditTransport through a real in-process server.

class RecordingAuditService final : public audit::v1::AuditService::Service {
 public:
  grpc::Status Append(grpc::ServerContext* /*context*/, const audit::v1::AppendRequest* request,
                      audit::v1::AppendResponse* response) override {
    for (const AuditEvent& event : request->events()) {
      if (event.action() == "test.bad") {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad action");
      }
    }
    for (int i = 0; i < request->events_size(); ++i) {
      response->add_sequences(++head_);
    }
    return grpc::Status::OK;
  }

 private:
  uint64_t head_ = 0;
};

class GrpcAuditTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override { server_->Shutdown(absl::ToChronoTime(absl::InfinitePast())); }

  RecordingAuditService service_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(GrpcAuditTransportTest, ReturnsSequencesInOrder) {
  GrpcAuditTransport transport(server_->InProcessChannel(grpc::ChannelArguments()));

  EXPECT_THAT(transport.Append({MakeEvent("ev_1"), MakeEvent("ev_2")}, absl::InfiniteFuture()),
              IsOkAndHolds(ElementsAre(1u, 2u)));
}

TEST_F(GrpcAuditTransportTest, MapsInvalidArgument) {
  GrpcAuditTransport transport(server_->InProcessChannel(grpc::ChannelArguments()));

  EXPECT_THAT(transport.Append({MakeEvent("ev_1", "test.bad")}, absl::InfiniteFuture()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(GrpcAuditTransportTest, SetsTheDeadline) {
  GrpcAuditTransport transport(server_->InProcessChannel(grpc::ChannelArguments()));

  EXPECT_THAT(transport.Append({MakeEvent("ev_1")}, absl::UnixEpoch()),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

}  // namespace
}  // namespace tidepool
