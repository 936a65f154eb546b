#include "services/proxy/connection_registry.h"

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tidepool::proxy {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

absl::Time T0() { return absl::FromUnixSeconds(1900000000); }

// Records every call of the entries' `close` callbacks, by entry. Thread-safe.
class CloseLog {
 public:
  std::function<void(const std::string&)> For(const std::string& label) {
    return [this, label](const std::string& reason) {
      absl::MutexLock lock(&mu_);
      calls_[label].push_back(reason);
    };
  }
  int Count(const std::string& label) const {
    absl::MutexLock lock(&mu_);
    auto it = calls_.find(label);
    return it == calls_.end() ? 0 : static_cast<int>(it->second.size());
  }
  std::vector<std::string> Reasons(const std::string& label) const {
    absl::MutexLock lock(&mu_);
    auto it = calls_.find(label);
    return it == calls_.end() ? std::vector<std::string>() : it->second;
  }
  int Total() const {
    absl::MutexLock lock(&mu_);
    int total = 0;
    for (const auto& [label, reasons] : calls_) total += static_cast<int>(reasons.size());
    return total;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, std::vector<std::string>> calls_ ABSL_GUARDED_BY(mu_);
};

struct EntrySpec {
  std::string label = "";
  std::string user_id = "";
  std::string session_id = "";
  absl::Time issued_at = T0();
  bool upgraded = false;
};

std::shared_ptr<ConnectionEntry> MakeEntry(const EntrySpec& spec, CloseLog& log) {
  auto entry = std::make_shared<ConnectionEntry>();
  entry->kind = spec.upgraded ? ConnectionKind::kWebSocket : ConnectionKind::kHttp;
  entry->source_address = "127.0.0.1:5000";
  entry->open_time = T0();
  entry->user_id = spec.user_id;
  entry->session_id = spec.session_id;
  entry->session_issued_at = spec.issued_at;
  entry->upgraded = spec.upgraded;
  entry->last_activity_unix_micros = absl::ToUnixMicros(T0());
  entry->close = log.For(spec.label);
  return entry;
}

TEST(ConnectionRegistryTest, AddAssignsDistinctIdsAndListSnapshotsTheFields) {
  ConnectionRegistry registry;
  CloseLog log;
  auto first = std::make_shared<ConnectionEntry>();
  first->kind = ConnectionKind::kTerminal;
  first->source_address = "10.0.0.1:1234";
  first->open_time = T0();
  first->user_id = "u_alice";
  first->session_id = "s_alice";
  first->workspace_id = "ws_alice";
  first->bytes_received = 100;
  first->bytes_sent = 2000;
  first->last_activity_unix_micros = absl::ToUnixMicros(T0() + absl::Seconds(3));
  auto second = MakeEntry({.label = "b", .user_id = "u_bob"}, log);
  second->kind = ConnectionKind::kPreview;
  second->open_time = T0() + absl::Seconds(1);

  const uint64_t first_id = registry.Add(first);
  const uint64_t second_id = registry.Add(second);
  EXPECT_NE(first_id, 0u);
  EXPECT_NE(first_id, second_id);
  EXPECT_EQ(first->id, first_id);
  EXPECT_EQ(second->id, second_id);
  EXPECT_EQ(registry.size(), 2u);

  const std::vector<ConnectionRegistry::Snapshot> list = registry.List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].id, first_id);  // oldest first
  EXPECT_EQ(list[0].kind, ConnectionKind::kTerminal);
  EXPECT_EQ(list[0].source_address, "10.0.0.1:1234");
  EXPECT_EQ(list[0].open_time, T0());
  EXPECT_EQ(list[0].user_id, "u_alice");
  EXPECT_EQ(list[0].session_id, "s_alice");
  EXPECT_EQ(list[0].workspace_id, "ws_alice");
  EXPECT_EQ(list[0].bytes_received, 100);
  EXPECT_EQ(list[0].bytes_sent, 2000);
  EXPECT_EQ(list[0].last_activity, T0() + absl::Seconds(3));
  EXPECT_EQ(list[1].id, second_id);
  EXPECT_EQ(list[1].kind, ConnectionKind::kPreview);
  EXPECT_EQ(list[1].user_id, "u_bob");
  EXPECT_EQ(list[1].open_time, T0() + absl::Seconds(1));

  // A snapshot is a copy.
  first->bytes_received += 5;
  registry.Update(first_id, [](ConnectionEntry& e) { e.user_id = "u_changed"; });
  EXPECT_EQ(list[0].bytes_received, 100);
  EXPECT_EQ(list[0].user_id, "u_alice");
  const std::vector<ConnectionRegistry::Snapshot> later = registry.List();
  ASSERT_EQ(later.size(), 2u);
  EXPECT_EQ(later[0].bytes_received, 105);
  EXPECT_EQ(later[0].user_id, "u_changed");
}

TEST(ConnectionRegistryTest, IdsAreNotReusedAfterRemove) {
  ConnectionRegistry registry;
  CloseLog log;
  const uint64_t a = registry.Add(MakeEntry({.label = "a"}, log));
  registry.Remove(a);
  const uint64_t b = registry.Add(MakeEntry({.label = "b"}, log));
  EXPECT_NE(a, b);
}

TEST(ConnectionRegistryTest, RemoveDropsTheEntry) {
  ConnectionRegistry registry;
  CloseLog log;
  const uint64_t a = registry.Add(MakeEntry({.label = "a", .user_id = "u"}, log));
  const uint64_t b = registry.Add(MakeEntry({.label = "b", .user_id = "u"}, log));
  registry.Remove(a);
  registry.Remove(a);       // twice: no effect
  registry.Remove(999999);  // unknown: no effect
  EXPECT_EQ(registry.size(), 1u);
  const std::vector<ConnectionRegistry::Snapshot> list = registry.List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, b);
  // A removed entry is not closed.
  EXPECT_EQ(registry.CloseAll("shutdown"), 1);
  EXPECT_EQ(log.Count("a"), 0);
  EXPECT_EQ(log.Count("b"), 1);
  registry.Remove(b);
  EXPECT_EQ(registry.size(), 0u);
  EXPECT_THAT(registry.List(), IsEmpty());
}

TEST(ConnectionRegistryTest, UpdateRunsOnlyForAKnownId) {
  ConnectionRegistry registry;
  CloseLog log;
  const uint64_t a = registry.Add(MakeEntry({.label = "a"}, log));
  int calls = 0;
  registry.Update(a + 1000, [&](ConnectionEntry&) { ++calls; });
  EXPECT_EQ(calls, 0);
  registry.Update(a, [&](ConnectionEntry& e) {
    ++calls;
    e.workspace_id = "ws_x";
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(registry.List()[0].workspace_id, "ws_x");
}

TEST(ConnectionRegistryTest, CloseSessionClosesOnlyThatSessionOnce) {
  ConnectionRegistry registry;
  CloseLog log;
  registry.Add(MakeEntry({.label = "a1", .user_id = "u_a", .session_id = "s_a"}, log));
  registry.Add(MakeEntry({.label = "a2", .user_id = "u_a", .session_id = "s_a"}, log));
  registry.Add(MakeEntry({.label = "a3", .user_id = "u_a", .session_id = "s_a2"}, log));
  registry.Add(MakeEntry({.label = "b", .user_id = "u_b", .session_id = "s_b"}, log));

  EXPECT_EQ(registry.CloseSession("s_a", "revoked"), 2);
  EXPECT_EQ(log.Count("a1"), 1);
  EXPECT_EQ(log.Count("a2"), 1);
  EXPECT_EQ(log.Count("a3"), 0);
  EXPECT_EQ(log.Count("b"), 0);
  EXPECT_THAT(log.Reasons("a1"), ElementsAre("revoked"));

  // Again: nothing left to close; close is not called twice.
  EXPECT_EQ(registry.CloseSession("s_a", "revoked"), 0);
  EXPECT_EQ(log.Count("a1"), 1);
  EXPECT_EQ(log.Count("a2"), 1);
  // Closing does not remove: the owning thread does that.
  EXPECT_EQ(registry.size(), 4u);
  EXPECT_EQ(registry.CloseSession("s_unknown", "revoked"), 0);
}

TEST(ConnectionRegistryTest, CloseSessionWithAnEmptyIdClosesNothing) {
  ConnectionRegistry registry;
  CloseLog log;
  // Anonymous connections have no session: they must not match an empty id.
  registry.Add(MakeEntry({.label = "anon1"}, log));
  registry.Add(MakeEntry({.label = "anon2"}, log));
  EXPECT_EQ(registry.CloseSession("", "revoked"), 0);
  EXPECT_EQ(log.Total(), 0);
}

TEST(ConnectionRegistryTest, CloseUserHonoursTheIssuedAtBoundary) {
  ConnectionRegistry registry;
  CloseLog log;
  registry.Add(MakeEntry({.label = "early",
                          .user_id = "u_a",
                          .session_id = "s1",
                          .issued_at = T0() - absl::Seconds(1)},
                         log));
  registry.Add(
      MakeEntry({.label = "equal", .user_id = "u_a", .session_id = "s2", .issued_at = T0()}, log));
  registry.Add(MakeEntry({.label = "later",
                          .user_id = "u_a",
                          .session_id = "s3",
                          .issued_at = T0() + absl::Seconds(1)},
                         log));
  registry.Add(MakeEntry({.label = "just_later",
                          .user_id = "u_a",
                          .session_id = "s4",
                          .issued_at = T0() + absl::Nanoseconds(1)},
                         log));
  registry.Add(MakeEntry(
      {.label = "other", .user_id = "u_b", .session_id = "s5", .issued_at = T0() - absl::Hours(1)},
      log));

  EXPECT_EQ(registry.CloseUser("u_a", T0(), "disabled"), 2);
  EXPECT_EQ(log.Count("early"), 1);
  EXPECT_EQ(log.Count("equal"), 1);
  EXPECT_EQ(log.Count("later"), 0);
  EXPECT_EQ(log.Count("just_later"), 0);
  EXPECT_EQ(log.Count("other"), 0);
  EXPECT_THAT(log.Reasons("equal"), ElementsAre("disabled"));

  // Again with the same bound: nothing more.
  EXPECT_EQ(registry.CloseUser("u_a", T0(), "disabled"), 0);
  // InfiniteFuture: all the rest of the user's connections.
  EXPECT_EQ(registry.CloseUser("u_a", absl::InfiniteFuture(), "disabled"), 2);
  EXPECT_EQ(log.Count("early"), 1);
  EXPECT_EQ(log.Count("equal"), 1);
  EXPECT_EQ(log.Count("later"), 1);
  EXPECT_EQ(log.Count("just_later"), 1);
  EXPECT_EQ(log.Count("other"), 0);
  EXPECT_EQ(registry.CloseUser("u_a", absl::InfiniteFuture(), "disabled"), 0);
}

TEST(ConnectionRegistryTest, CloseUserWithAnEmptyIdClosesNothing) {
  ConnectionRegistry registry;
  CloseLog log;
  registry.Add(MakeEntry({.label = "anon"}, log));
  EXPECT_EQ(registry.CloseUser("", absl::InfiniteFuture(), "disabled"), 0);
  EXPECT_EQ(log.Total(), 0);
}

TEST(ConnectionRegistryTest, CloseAllClosesEachEntryExactlyOnce) {
  ConnectionRegistry registry;
  CloseLog log;
  registry.Add(MakeEntry({.label = "a", .user_id = "u_a", .session_id = "s_a"}, log));
  registry.Add(MakeEntry({.label = "b", .user_id = "u_b", .session_id = "s_b"}, log));
  registry.Add(MakeEntry({.label = "c"}, log));

  // One already closing: CloseAll closes only the others.
  EXPECT_EQ(registry.CloseSession("s_a", "revoked"), 1);
  EXPECT_EQ(registry.CloseAll("shutdown"), 2);
  EXPECT_EQ(registry.CloseAll("shutdown"), 0);
  EXPECT_EQ(log.Count("a"), 1);
  EXPECT_EQ(log.Count("b"), 1);
  EXPECT_EQ(log.Count("c"), 1);
  EXPECT_THAT(log.Reasons("a"), ElementsAre("revoked"));
  EXPECT_THAT(log.Reasons("b"), ElementsAre("shutdown"));
  // And later matches find nothing to close either.
  EXPECT_EQ(registry.CloseUser("u_b", absl::InfiniteFuture(), "x"), 0);
  EXPECT_EQ(registry.CloseExpired(absl::InfiniteFuture()), 0);
  EXPECT_EQ(log.Total(), 3);
}

TEST(ConnectionRegistryTest, AnEntryWithoutACloseCallbackIsCountedWithoutCrashing) {
  ConnectionRegistry registry;
  registry.Add(std::make_shared<ConnectionEntry>());
  EXPECT_EQ(registry.CloseAll("shutdown"), 1);
  EXPECT_EQ(registry.CloseAll("shutdown"), 0);
}

TEST(ConnectionRegistryTest, CloseExpiredByDeadline) {
  ConnectionRegistry registry;
  CloseLog log;
  const absl::Time now = T0() + absl::Minutes(10);
  auto past = MakeEntry({.label = "past"}, log);
  past->SetDeadline(now - absl::Seconds(1));
  auto at = MakeEntry({.label = "at"}, log);
  at->SetDeadline(now);
  auto future = MakeEntry({.label = "future"}, log);
  future->SetDeadline(now + absl::Seconds(1));
  auto never = MakeEntry({.label = "never"}, log);  // InfiniteFuture, infinite idle limit
  for (const auto& entry : {past, at, future, never}) {
    entry->last_activity_unix_micros = absl::ToUnixMicros(now);
    registry.Add(entry);
  }

  EXPECT_EQ(registry.CloseExpired(now), 2);
  EXPECT_EQ(log.Count("past"), 1);
  EXPECT_EQ(log.Count("at"), 1);
  EXPECT_EQ(log.Count("future"), 0);
  EXPECT_EQ(log.Count("never"), 0);
  EXPECT_EQ(registry.CloseExpired(now), 0);

  EXPECT_EQ(registry.CloseExpired(now + absl::Seconds(1)), 1);
  EXPECT_EQ(log.Count("future"), 1);
  EXPECT_EQ(registry.CloseExpired(now + absl::Hours(24 * 365)), 0);
  EXPECT_EQ(log.Count("never"), 0);
  EXPECT_EQ(log.Count("past"), 1);
  EXPECT_FALSE(log.Reasons("past").empty() || log.Reasons("past")[0].empty());
}

TEST(ConnectionRegistryTest, CloseExpiredByIdleLimit) {
  ConnectionRegistry registry;
  CloseLog log;
  const absl::Time now = T0() + absl::Minutes(10);
  const absl::Duration limit = absl::Seconds(30);
  struct Case {
    std::string label;
    absl::Duration idle;
  };
  for (const Case& c :
       {Case{"idle_long", absl::Minutes(5)}, Case{"idle_over", limit + absl::Microseconds(1)},
        Case{"idle_at", limit}, Case{"idle_under", limit - absl::Seconds(1)},
        Case{"active", absl::ZeroDuration()}}) {
    auto entry = MakeEntry({.label = c.label}, log);
    entry->idle_limit = limit;
    entry->last_activity_unix_micros = absl::ToUnixMicros(now - c.idle);
    registry.Add(entry);
  }
  // Infinite idle limit: never idle, however old the last activity.
  auto patient = MakeEntry({.label = "patient"}, log);
  patient->last_activity_unix_micros = 0;
  registry.Add(patient);

  EXPECT_EQ(registry.CloseExpired(now), 2);
  EXPECT_EQ(log.Count("idle_long"), 1);
  EXPECT_EQ(log.Count("idle_over"), 1);
  EXPECT_EQ(log.Count("idle_at"), 0);
  EXPECT_EQ(log.Count("idle_under"), 0);
  EXPECT_EQ(log.Count("active"), 0);
  EXPECT_EQ(log.Count("patient"), 0);

  // Activity resets the idle clock.
  const std::vector<ConnectionRegistry::Snapshot> list = registry.List();
  ASSERT_EQ(list.size(), 6u);
  registry.Update(list[3].id, [&](ConnectionEntry& e) {
    e.last_activity_unix_micros = absl::ToUnixMicros(now + absl::Seconds(20));
  });
  EXPECT_EQ(registry.CloseExpired(now + absl::Seconds(40)), 2);  // idle_at, active
  EXPECT_EQ(log.Count("idle_at"), 1);
  EXPECT_EQ(log.Count("idle_under"), 0);
  EXPECT_EQ(log.Count("active"), 1);
  EXPECT_EQ(registry.CloseExpired(now + absl::Seconds(51)), 1);  // idle_under
  EXPECT_EQ(log.Count("idle_under"), 1);
  EXPECT_EQ(log.Count("patient"), 0);
}

TEST(ConnectionRegistryTest, CountWebSocketsCountsOnlyUpgradedEntriesOfThatUser) {
  ConnectionRegistry registry;
  CloseLog log;
  const uint64_t ws1 =
      registry.Add(MakeEntry({.label = "1", .user_id = "u_a", .upgraded = true}, log));
  registry.Add(MakeEntry({.label = "2", .user_id = "u_a", .upgraded = true}, log));
  const uint64_t http = registry.Add(MakeEntry({.label = "3", .user_id = "u_a"}, log));
  registry.Add(MakeEntry({.label = "4", .user_id = "u_b", .upgraded = true}, log));
  registry.Add(MakeEntry({.label = "5", .upgraded = true}, log));

  EXPECT_EQ(registry.CountWebSockets("u_a"), 2);
  EXPECT_EQ(registry.CountWebSockets("u_b"), 1);
  EXPECT_EQ(registry.CountWebSockets("u_c"), 0);

  registry.Update(http, [](ConnectionEntry& e) { e.upgraded = true; });
  EXPECT_EQ(registry.CountWebSockets("u_a"), 3);
  registry.Remove(ws1);
  EXPECT_EQ(registry.CountWebSockets("u_a"), 2);
}

TEST(ConnectionRegistryTest, ConcurrentAddRemoveCloseClosesEachEntryAtMostOnce) {
  ConnectionRegistry registry;
  constexpr int kThreads = 8;
  constexpr int kPerThread = 300;
  std::vector<std::shared_ptr<std::atomic<int>>> close_counts;
  absl::Mutex counts_mu;
  std::atomic<bool> stop{false};

  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      const std::string user = absl::StrCat("u_", t % 3);
      std::vector<uint64_t> mine;
      for (int i = 0; i < kPerThread; ++i) {
        auto count = std::make_shared<std::atomic<int>>(0);
        {
          absl::MutexLock lock(&counts_mu);
          close_counts.push_back(count);
        }
        auto entry = std::make_shared<ConnectionEntry>();
        entry->user_id = user;
        entry->session_id = absl::StrCat("s_", t, "_", i % 5);
        entry->session_issued_at = T0() + absl::Seconds(i);
        entry->upgraded = i % 2 == 0;
        entry->idle_limit = absl::Seconds(10);
        entry->last_activity_unix_micros = absl::ToUnixMicros(T0() + absl::Seconds(i));
        entry->close = [count](const std::string&) { count->fetch_add(1); };
        mine.push_back(registry.Add(entry));
        switch (i % 6) {
          case 0:
            registry.CloseSession(absl::StrCat("s_", t, "_", i % 5), "revoked");
            break;
          case 1:
            registry.CloseUser(user, T0() + absl::Seconds(i / 2), "disabled");
            break;
          case 2:
            (void)registry.List();
            break;
          case 3:
            (void)registry.CountWebSockets(user);
            break;
          case 4:
            registry.CloseExpired(T0() + absl::Seconds(i));
            break;
          default:
            registry.Remove(mine[mine.size() / 2]);
            break;
        }
        if (i % 3 == 0) {
          registry.Remove(mine.front());
          mine.erase(mine.begin());
        }
      }
      for (const uint64_t id : mine) registry.Remove(id);
    });
  }
  std::thread closer([&] {
    while (!stop.load()) {
      registry.CloseAll("shutdown");
      std::this_thread::yield();
    }
  });
  for (std::thread& worker : workers) worker.join();
  stop = true;
  closer.join();

  EXPECT_EQ(registry.size(), 0u);
  absl::MutexLock lock(&counts_mu);
  ASSERT_EQ(close_counts.size(), static_cast<size_t>(kThreads * kPerThread));
  for (const auto& count : close_counts) {
    EXPECT_LE(count->load(), 1);
  }
}

}  // namespace
}  // namespace tidepool::proxy
