#include "services/supervisor/terminal.h"

#include <csignal>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::supervisor {
namespace {

using ::testing::HasSubstr;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

constexpr absl::Duration kWait = absl::Seconds(20);

TerminalOptions ShOptions() {
  TerminalOptions options;
  options.shell = {"/bin/sh"};
  options.env = {{"PATH", "/usr/bin:/bin"}, {"HOME", "/tmp"}, {"PS1", "$ "}};
  options.reap_interval = absl::ZeroDuration();
  options.kill_grace = absl::Seconds(2);
  return options;
}

// Collects a session's output and exit code from its subscription callbacks.
class Collector {
 public:
  explicit Collector(TerminalSession& session) {
    TerminalSubscribeResult result = session.Subscribe(
        [this](absl::string_view data, uint64_t) {
          absl::MutexLock lock(&mu_);
          output_.append(data.data(), data.size());
        },
        [this](int code) {
          absl::MutexLock lock(&mu_);
          exit_code_ = code;
        });
    scrollback_ = result.scrollback.bytes;
    subscription_ = std::move(result.subscription);
  }

  // Waits until the output since subscribing contains `needle`.
  bool WaitFor(absl::string_view needle) {
    absl::MutexLock lock(&mu_);
    auto found = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return absl::StrContains(output_, needle);
    };
    return mu_.AwaitWithTimeout(absl::Condition(&found), kWait);
  }

  bool WaitForSize(size_t size) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return output_.size() >= size; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kWait);
  }

  std::optional<int> WaitForExit() {
    absl::MutexLock lock(&mu_);
    auto exited = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return exit_code_.has_value(); };
    mu_.AwaitWithTimeout(absl::Condition(&exited), kWait);
    return exit_code_;
  }

  std::string output() {
    absl::MutexLock lock(&mu_);
    return output_;
  }
  const std::string& scrollback() const { return scrollback_; }

 private:
  absl::Mutex mu_;
  std::string output_ ABSL_GUARDED_BY(mu_);
  std::optional<int> exit_code_ ABSL_GUARDED_BY(mu_);
  std::string scrollback_;
  std::unique_ptr<TerminalSubscription> subscription_;
};

TEST(TerminalManagerTest, RunsShellAndEchoesOutput) {
  TerminalManager manager(ShOptions());
  absl::StatusOr<std::shared_ptr<TerminalSession>> session = manager.Attach("one", 80, 24);
  ASSERT_THAT(session, IsOk());
  Collector collector(**session);
  ASSERT_THAT((*session)->Write("echo hello-$((6*7))\n"), IsOk());
  EXPECT_TRUE(collector.WaitFor("hello-42")) << collector.output();
}

TEST(TerminalManagerTest, SetsTermAndWorkingDirectory) {
  tidepool::testing::ScopedTempDir dir;
  TerminalOptions options = ShOptions();
  options.working_dir = dir.path();
  TerminalManager manager(options);
  absl::StatusOr<std::shared_ptr<TerminalSession>> session = manager.Attach("env", 80, 24);
  ASSERT_THAT(session, IsOk());
  Collector collector(**session);
  ASSERT_THAT((*session)->Write("echo \"term=$TERM\" \"pwd=$(pwd)|\"\n"), IsOk());
  EXPECT_TRUE(collector.WaitFor("term=xterm-256color")) << collector.output();
  EXPECT_TRUE(collector.WaitFor("pwd=" + dir.path() + "|")) << collector.output();
}

TEST(TerminalManagerTest, ResizeChangesSttySize) {
  TerminalManager manager(ShOptions());
  absl::StatusOr<std::shared_ptr<TerminalSession>> session = manager.Attach("resize", 80, 24);
  ASSERT_THAT(session, IsOk());
  Collector collector(**session);
  ASSERT_THAT((*session)->Write("stty size; echo done-$((1+1))\n"), IsOk());
  ASSERT_TRUE(collector.WaitFor("done-2")) << collector.output();
  EXPECT_THAT(collector.output(), HasSubstr("24 80"));
  ASSERT_THAT((*session)->Resize(132, 43), IsOk());
  ASSERT_THAT((*session)->Write("stty size; echo done-$((1+2))\n"), IsOk());
  ASSERT_TRUE(collector.WaitFor("done-3")) << collector.output();
  EXPECT_THAT(collector.output(), HasSubstr("43 132"));
  EXPECT_THAT((*session)->Resize(0, 10), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(TerminalManagerTest, ReattachReplaysScrollbackAndKeepsTheShell) {
  TerminalManager manager(ShOptions());
  absl::StatusOr<std::shared_ptr<TerminalSession>> first = manager.Attach("keep", 80, 24);
  ASSERT_THAT(first, IsOk());
  {
    Collector collector(**first);
    ASSERT_THAT((*first)->Write("KEPT=value-$((3*3)); echo marker-$((2+3))\n"), IsOk());
    ASSERT_TRUE(collector.WaitFor("marker-5")) << collector.output();
  }
  (*first)->Detach();

  absl::StatusOr<std::shared_ptr<TerminalSession>> again = manager.Attach("keep", 100, 30);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->get(), first->get());
  EXPECT_EQ(manager.SessionCount(), 1);
  Collector collector(**again);
  EXPECT_THAT(collector.scrollback(), HasSubstr("marker-5"));
  ASSERT_THAT((*again)->Write("echo \"kept=$KEPT\"\n"), IsOk());
  EXPECT_TRUE(collector.WaitFor("kept=value-9")) << collector.output();
}

TEST(TerminalManagerTest, ReportsExitCode) {
  TerminalManager manager(ShOptions());
  absl::StatusOr<std::shared_ptr<TerminalSession>> session = manager.Attach("exit", 80, 24);
  ASSERT_THAT(session, IsOk());
  Collector collector(**session);
  ASSERT_THAT((*session)->Write("exit 3\n"), IsOk());
  EXPECT_EQ(collector.WaitForExit(), 3);
  EXPECT_EQ((*session)->exit_code(), 3);
  EXPECT_THAT((*session)->Write("echo late\n"), StatusIs(absl::StatusCode::kFailedPrecondition));
  // A later subscriber learns the exit code from Subscribe itself.
  TerminalSubscribeResult late = (*session)->Subscribe(nullptr, nullptr);
  EXPECT_EQ(late.exit_code, 3);
}

TEST(TerminalManagerTest, ReportsDeathBySignalAs128PlusSignal) {
  TerminalManager manager(ShOptions());
  absl::StatusOr<std::shared_ptr<TerminalSession>> session = manager.Attach("killed", 80, 24);
  ASSERT_THAT(session, IsOk());
  ASSERT_THAT((*session)->Write("kill -9 $$\n"), IsOk());
  EXPECT_EQ((*session)->WaitForExit(kWait), 128 + SIGKILL);
}

TEST(TerminalManagerTest, ExitedSessionIdStartsANewShell) {
  TerminalManager manager(ShOptions());
  absl::StatusOr<std::shared_ptr<TerminalSession>> first = manager.Attach("again", 80, 24);
  ASSERT_THAT(first, IsOk());
  ASSERT_THAT((*first)->Write("exit 0\n"), IsOk());
  ASSERT_EQ((*first)->WaitForExit(kWait), 0);
  (*first)->Detach();
  absl::StatusOr<std::shared_ptr<TerminalSession>> second = manager.Attach("again", 80, 24);
  ASSERT_THAT(second, IsOk());
  EXPECT_NE(second->get(), first->get());
  EXPECT_FALSE((*second)->exit_code().has_value());
}

TEST(TerminalManagerTest, LimitsRunningSessions) {
  TerminalOptions options = ShOptions();
  options.max_sessions = 2;
  TerminalManager manager(options);
  absl::StatusOr<std::shared_ptr<TerminalSession>> a = manager.Attach("a", 80, 24);
  absl::StatusOr<std::shared_ptr<TerminalSession>> b = manager.Attach("b", 80, 24);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_THAT(manager.Attach("c", 80, 24), StatusIs(absl::StatusCode::kResourceExhausted));
  // Re-attaching to a running session is not a new session.
  EXPECT_THAT(manager.Attach("a", 80, 24), IsOk());
  // Once a shell exits its slot is free.
  ASSERT_THAT((*b)->Write("exit\n"), IsOk());
  ASSERT_TRUE((*b)->WaitForExit(kWait).has_value());
  EXPECT_THAT(manager.Attach("c", 80, 24), IsOk());
}

TEST(TerminalManagerTest, RejectsBadIdsAndSizes) {
  TerminalManager manager(ShOptions());
  for (const std::string& id :
       {std::string(""), std::string(65, 'a'), std::string("a b"), std::string("../x"),
        std::string("x/y"), std::string("caf\xc3\xa9"), std::string("a\nb")}) {
    EXPECT_THAT(manager.Attach(id, 80, 24), StatusIs(absl::StatusCode::kInvalidArgument)) << id;
  }
  EXPECT_THAT(manager.Attach("ok", 0, 24), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(manager.Attach("ok", 80, 1001), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(manager.Attach("ok", -1, 24), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(manager.SessionCount(), 0);
  EXPECT_TRUE(IsValidTerminalSessionId(std::string(64, 'Z')));
  EXPECT_TRUE(IsValidTerminalSessionId("tab_1-A"));
}

TEST(TerminalManagerTest, ReaperKillsSessionsDetachedPastRetention) {
  tidepool::testing::FakeClock clock(absl::FromUnixSeconds(1000));
  TerminalOptions options = ShOptions();
  options.retention = absl::Minutes(1);
  TerminalManager manager(options, clock);
  absl::StatusOr<std::shared_ptr<TerminalSession>> idle = manager.Attach("idle", 80, 24);
  absl::StatusOr<std::shared_ptr<TerminalSession>> busy = manager.Attach("busy", 80, 24);
  ASSERT_THAT(idle, IsOk());
  ASSERT_THAT(busy, IsOk());
  (*idle)->Detach();

  clock.Advance(absl::Seconds(59));
  EXPECT_EQ(manager.ReapIdle(), 0);
  EXPECT_FALSE((*idle)->exit_code().has_value());

  clock.Advance(absl::Seconds(2));
  EXPECT_EQ(manager.ReapIdle(), 1);
  EXPECT_EQ((*idle)->exit_code(), 128 + SIGHUP);
  EXPECT_FALSE((*busy)->exit_code().has_value());  // still attached
  EXPECT_EQ(manager.SessionCount(), 1);
}

TEST(TerminalManagerTest, ReattachWithinRetentionIsNotReaped) {
  tidepool::testing::FakeClock clock(absl::FromUnixSeconds(1000));
  TerminalOptions options = ShOptions();
  options.retention = absl::Minutes(1);
  TerminalManager manager(options, clock);
  absl::StatusOr<std::shared_ptr<TerminalSession>> session = manager.Attach("s", 80, 24);
  ASSERT_THAT(session, IsOk());
  (*session)->Detach();
  clock.Advance(absl::Seconds(50));
  ASSERT_THAT(manager.Attach("s", 80, 24), IsOk());
  clock.Advance(absl::Minutes(10));
  EXPECT_EQ(manager.ReapIdle(), 0);
  EXPECT_FALSE((*session)->exit_code().has_value());
}

TEST(TerminalManagerTest, ScrollbackKeepsOnlyTheNewestBytes) {
  TerminalOptions options = ShOptions();
  options.scrollback_bytes = 1000;
  TerminalManager manager(options);
  absl::StatusOr<std::shared_ptr<TerminalSession>> session = manager.Attach("ring", 80, 24);
  ASSERT_THAT(session, IsOk());
  Collector collector(**session);
  ASSERT_THAT((*session)->Write("i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done; "
                                "echo end-$((7*7))\n"),
              IsOk());
  ASSERT_TRUE(collector.WaitFor("end-49")) << collector.output();
  TerminalScrollback scrollback = (*session)->Snapshot();
  EXPECT_EQ(scrollback.bytes.size(), 1000u);
  EXPECT_THAT(scrollback.bytes, HasSubstr("line-299"));
  EXPECT_THAT(scrollback.bytes, ::testing::Not(HasSubstr("line-10\r")));
  // The ring holds exactly the newest bytes of the stream.
  ASSERT_TRUE(collector.WaitForSize(scrollback.end_offset));
  const std::string all = collector.output();
  EXPECT_EQ(all.substr(scrollback.end_offset - 1000, 1000), scrollback.bytes);
}

}  // namespace
}  // namespace tidepool::supervisor
