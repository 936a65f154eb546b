#include "services/auth/session_store.h"

#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::auth {
namespace {

using ::testing::MatchesRegex;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::IsOkAndHolds;
using ::tidepool::testing::StatusIs;

class SessionStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<SqliteDb>> db =
        SqliteDb::Open(tmp_.Join("auth.db"), SqliteOptions{});
    ASSERT_THAT(db, IsOk());
    db_ = *std::move(db);
    Reopen();
  }

  void Reopen() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<SessionStore>> store =
        SessionStore::Open(*db_, clock_, SessionStoreOptions{});
    ASSERT_THAT(store, IsOk());
    store_ = *std::move(store);
  }

  tidepool::testing::ScopedTempDir tmp_;
  tidepool::testing::FakeClock clock_{absl::FromUnixSeconds(1'800'000'000)};
  std::unique_ptr<SqliteDb> db_;
  std::unique_ptr<SessionStore> store_;
};

TEST_F(SessionStoreTest, CreatesSessionsWithUnguessableIdsAndStoresOnlyHashes) {
  absl::StatusOr<SessionSecret> a = store_->Create("u_alice");
  absl::StatusOr<SessionSecret> b = store_->Create("u_alice");
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_THAT(a->session.session_id, MatchesRegex("s_[a-z2-7]{26}"));
  EXPECT_THAT(a->refresh_token, MatchesRegex("tpr_[a-z2-7]{52}"));
  EXPECT_NE(a->session.session_id, b->session.session_id);
  EXPECT_NE(a->refresh_token, b->refresh_token);
  EXPECT_EQ(a->session.refresh_expire_time, clock_.Now() + absl::Hours(168));
  absl::StatusOr<Statement> stmt = db_->Prepare("SELECT refresh_hash FROM sessions");
  ASSERT_THAT(stmt, IsOk());
  while (*stmt->Step()) {
    EXPECT_NE(stmt->ColumnText(0), a->refresh_token);
    EXPECT_NE(stmt->ColumnText(0), b->refresh_token);
  }
  EXPECT_THAT(store_->Create(""), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(SessionStoreTest, RefreshRotatesAndAReusedTokenRevokesTheSession) {
  absl::StatusOr<SessionSecret> session = store_->Create("u_alice");
  ASSERT_THAT(session, IsOk());
  absl::StatusOr<SessionSecret> refreshed = store_->Refresh(session->refresh_token);
  ASSERT_THAT(refreshed, IsOk());
  EXPECT_EQ(refreshed->session.session_id, session->session.session_id);
  EXPECT_NE(refreshed->refresh_token, session->refresh_token);
  // The old token again: theft. The session is revoked and published.
  EXPECT_THAT(store_->Refresh(session->refresh_token),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(store_->Refresh(refreshed->refresh_token),
              StatusIs(absl::StatusCode::kUnauthenticated));
  absl::StatusOr<std::vector<Revocation>> revocations = store_->RevocationsAfter(0);
  ASSERT_THAT(revocations, IsOk());
  ASSERT_EQ(revocations->size(), 1u);
  EXPECT_EQ((*revocations)[0].session_id, session->session.session_id);
  EXPECT_EQ((*revocations)[0].reason, RevokeReason::kRefreshReuse);
  EXPECT_THAT(store_->IsActive(session->session.session_id, "u_alice", clock_.Now()),
              IsOkAndHolds(false));
}

TEST_F(SessionStoreTest, RefreshRejectsUnknownExpiredAndMalformedTokens) {
  absl::StatusOr<SessionSecret> session = store_->Create("u_alice");
  ASSERT_THAT(session, IsOk());
  EXPECT_THAT(store_->Refresh("tpr_nope"), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(store_->Refresh(""), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(store_->Refresh(std::string(10000, 'a')),
              StatusIs(absl::StatusCode::kUnauthenticated));
  clock_.Advance(absl::Hours(168));
  EXPECT_THAT(store_->Refresh(session->refresh_token),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST_F(SessionStoreTest, RevocationsArePublishedInOrderAndForgottenAfterTokensExpire) {
  absl::StatusOr<SessionSecret> a = store_->Create("u_alice");
  absl::StatusOr<SessionSecret> b = store_->Create("u_bob");
  absl::StatusOr<SessionSecret> c = store_->Create("u_bob");
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(store_->Revoke(a->session.session_id, RevokeReason::kSignOut), IsOk());
  ASSERT_THAT(store_->Revoke(a->session.session_id, RevokeReason::kSignOut), IsOk());  // idempotent
  EXPECT_THAT(store_->Revoke("s_missing", RevokeReason::kSignOut),
              StatusIs(absl::StatusCode::kNotFound));
  absl::StatusOr<int> count = store_->RevokeAllForUser("u_bob", RevokeReason::kUserSuspended);
  ASSERT_THAT(count, IsOk());
  EXPECT_EQ(*count, 2);
  EXPECT_EQ(store_->LatestSequence(), 2u);
  absl::StatusOr<std::vector<Revocation>> all = store_->RevocationsAfter(0);
  ASSERT_THAT(all, IsOk());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].sequence, 1u);
  EXPECT_EQ((*all)[1].user_id, "u_bob");
  EXPECT_EQ((*all)[1].reason, RevokeReason::kUserSuspended);
  absl::StatusOr<std::vector<Revocation>> after = store_->RevocationsAfter(1);
  ASSERT_THAT(after, IsOk());
  EXPECT_EQ(after->size(), 1u);
  // Survives a restart (the sequence continues).
  Reopen();
  EXPECT_EQ(store_->LatestSequence(), 2u);
  // Once every token they concern has expired, they are no longer replayed.
  clock_.Advance(absl::Minutes(17));
  all = store_->RevocationsAfter(0);
  ASSERT_THAT(all, IsOk());
  EXPECT_TRUE(all->empty());
}

TEST_F(SessionStoreTest, IsActiveHonoursUserWideRevocationsByIssueTime) {
  absl::StatusOr<SessionSecret> session = store_->Create("u_alice");
  ASSERT_THAT(session, IsOk());
  const absl::Time issued = clock_.Now();
  EXPECT_THAT(store_->IsActive(session->session.session_id, "u_alice", issued), IsOkAndHolds(true));
  EXPECT_THAT(store_->IsActive(session->session.session_id, "u_mallory", issued),
              IsOkAndHolds(false));
  clock_.Advance(absl::Seconds(5));
  ASSERT_THAT(store_->RevokeAllForUser("u_alice", RevokeReason::kRoleChanged), IsOk());
  EXPECT_THAT(store_->IsActive(session->session.session_id, "u_alice", issued),
              IsOkAndHolds(false));
  // A new session after the revocation is fine.
  clock_.Advance(absl::Seconds(5));
  absl::StatusOr<SessionSecret> fresh = store_->Create("u_alice");
  ASSERT_THAT(fresh, IsOk());
  EXPECT_THAT(store_->IsActive(fresh->session.session_id, "u_alice", clock_.Now()),
              IsOkAndHolds(true));
}

TEST_F(SessionStoreTest, WaitForNewerWakesOnPublication) {
  absl::StatusOr<SessionSecret> session = store_->Create("u_alice");
  ASSERT_THAT(session, IsOk());
  EXPECT_EQ(store_->WaitForNewer(0, absl::Now()), 0u);  // nothing yet: returns at the deadline
  std::thread revoker([&] {
    EXPECT_THAT(store_->Revoke(session->session.session_id, RevokeReason::kAdmin), IsOk());
  });
  EXPECT_EQ(store_->WaitForNewer(0, absl::Now() + absl::Seconds(30)), 1u);
  revoker.join();
}

}  // namespace
}  // namespace tidepool::auth
