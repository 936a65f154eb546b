#include "services/provisioner/workspace_store.h"

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::provisioner {
namespace {

using ::tidepool::testing::FakeClock;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;
namespace commonpb = ::tidepool::common::v1;

constexpr char kAlice[] = "u_aaaaaaaaaaaaaaaaaaaaaaaaaa";
constexpr char kBob[] = "u_bbbbbbbbbbbbbbbbbbbbbbbbbb";

class WorkspaceStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<SqliteDb>> db =
        SqliteDb::Open(tmp_.Join("p.db"), SqliteOptions{});
    ASSERT_THAT(db, IsOk());
    db_ = *std::move(db);
    absl::StatusOr<std::unique_ptr<WorkspaceStore>> store = WorkspaceStore::Open(*db_, clock_);
    ASSERT_THAT(store, IsOk());
    store_ = *std::move(store);
  }

  tidepool::testing::ScopedTempDir tmp_;
  FakeClock clock_{absl::FromUnixSeconds(1'800'000'000)};
  std::unique_ptr<SqliteDb> db_;
  std::unique_ptr<WorkspaceStore> store_;
};

TEST_F(WorkspaceStoreTest, EnsureCreatesOncePerOwner) {
  absl::StatusOr<EnsureOutcome> first = store_->EnsureForOwner(kAlice, "shell", "Europe/Berlin");
  ASSERT_THAT(first, IsOk());
  EXPECT_TRUE(first->created);
  EXPECT_TRUE(IsValidWorkspaceId(first->workspace.workspace_id));
  EXPECT_EQ(first->workspace.state, commonpb::WORKSPACE_STATE_PROVISIONING);
  EXPECT_EQ(first->workspace.desired_state, commonpb::WORKSPACE_STATE_RUNNING);
  EXPECT_EQ(first->workspace.timezone, "Europe/Berlin");
  absl::StatusOr<EnsureOutcome> again = store_->EnsureForOwner(kAlice, "shell", "Asia/Tokyo");
  ASSERT_THAT(again, IsOk());
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->workspace.workspace_id, first->workspace.workspace_id);
  EXPECT_EQ(again->workspace.timezone, "Asia/Tokyo");
}

TEST_F(WorkspaceStoreTest, FiftyConcurrentEnsuresYieldOneWorkspace) {
  // Each racer uses its own connection, as separate requests would.
  std::vector<std::unique_ptr<SqliteDb>> dbs;
  std::vector<std::unique_ptr<WorkspaceStore>> stores;
  for (int i = 0; i < 50; ++i) {
    absl::StatusOr<std::unique_ptr<SqliteDb>> db =
        SqliteDb::Open(tmp_.Join("p.db"), SqliteOptions{});
    ASSERT_THAT(db, IsOk());
    absl::StatusOr<std::unique_ptr<WorkspaceStore>> store = WorkspaceStore::Open(**db, clock_);
    ASSERT_THAT(store, IsOk());
    dbs.push_back(*std::move(db));
    stores.push_back(*std::move(store));
  }
  absl::Mutex mu;
  std::set<std::string> ids;
  std::atomic<int> created{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 50; ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<EnsureOutcome> outcome = stores[i]->EnsureForOwner(kAlice, "shell", "");
      ASSERT_THAT(outcome, IsOk());
      if (outcome->created) ++created;
      absl::MutexLock lock(&mu);
      ids.insert(outcome->workspace.workspace_id);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(created.load(), 1);
  EXPECT_EQ(ids.size(), 1u);
}

TEST_F(WorkspaceStoreTest, SuspendedOwnersGetNoNewWorkspace) {
  ASSERT_THAT(store_->SetOwnerSuspended(kBob, true), IsOk());
  EXPECT_THAT(store_->EnsureForOwner(kBob, "shell", "").status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store_->IsOwnerSuspended(kBob), ::tidepool::testing::IsOkAndHolds(true));
  ASSERT_THAT(store_->SetOwnerSuspended(kBob, false), IsOk());
  EXPECT_THAT(store_->EnsureForOwner(kBob, "shell", ""), IsOk());
}

TEST_F(WorkspaceStoreTest, TransitionsBumpVersionsAndKeepTheTransitionTime) {
  absl::StatusOr<EnsureOutcome> created = store_->EnsureForOwner(kAlice, "shell", "");
  ASSERT_THAT(created, IsOk());
  const std::string id = created->workspace.workspace_id;
  clock_.Advance(absl::Seconds(5));
  absl::StatusOr<WorkspaceRecord> running =
      store_->SetObserved(id, commonpb::WORKSPACE_STATE_RUNNING, "ready");
  ASSERT_THAT(running, IsOk());
  EXPECT_EQ(running->last_transition_time, clock_.Now());
  clock_.Advance(absl::Seconds(5));
  absl::StatusOr<WorkspaceRecord> same =
      store_->SetObserved(id, commonpb::WORKSPACE_STATE_RUNNING, "ready");
  ASSERT_THAT(same, IsOk());
  EXPECT_EQ(same->last_transition_time, running->last_transition_time);
  EXPECT_GT(same->version, running->version);
  EXPECT_THAT(store_->SetDesired(id, commonpb::WORKSPACE_STATE_SLEEPING, "idle", 1).status(),
              StatusIs(absl::StatusCode::kAborted));
  EXPECT_THAT(store_->SetDesired(id, commonpb::WORKSPACE_STATE_SLEEPING, "idle", same->version),
              IsOk());
}

TEST_F(WorkspaceStoreTest, ListsFilterAndPage) {
  ASSERT_THAT(store_->EnsureForOwner(kAlice, "shell", ""), IsOk());
  ASSERT_THAT(store_->EnsureForOwner(kBob, "shell", ""), IsOk());
  absl::StatusOr<WorkspacePage> first = store_->List(std::nullopt, "", 1, "");
  ASSERT_THAT(first, IsOk());
  ASSERT_EQ(first->workspaces.size(), 1u);
  absl::StatusOr<WorkspacePage> second = store_->List(std::nullopt, "", 1, first->next_page_token);
  ASSERT_THAT(second, IsOk());
  ASSERT_EQ(second->workspaces.size(), 1u);
  EXPECT_TRUE(second->next_page_token.empty());
  absl::StatusOr<WorkspacePage> bobs = store_->List(std::nullopt, kBob, 10, "");
  ASSERT_THAT(bobs, IsOk());
  ASSERT_EQ(bobs->workspaces.size(), 1u);
  EXPECT_EQ(bobs->workspaces[0].owner_user_id, kBob);
  absl::StatusOr<WorkspacePage> running =
      store_->List(commonpb::WORKSPACE_STATE_RUNNING, "", 10, "");
  ASSERT_THAT(running, IsOk());
  EXPECT_TRUE(running->workspaces.empty());
  EXPECT_THAT(store_->List(std::nullopt, "", 10, "bogus").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace tidepool::provisioner
