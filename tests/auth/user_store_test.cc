#include "services/auth/user_store.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::auth {
namespace {

using ::testing::ElementsAre;
using ::testing::MatchesRegex;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

class UserStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<SqliteDb>> db =
        SqliteDb::Open(tmp_.Join("auth.db"), SqliteOptions{});
    ASSERT_THAT(db, IsOk());
    db_ = *std::move(db);
    absl::StatusOr<std::unique_ptr<UserStore>> store = UserStore::Open(*db_, clock_);
    ASSERT_THAT(store, IsOk());
    store_ = *std::move(store);
  }

  tidepool::testing::ScopedTempDir tmp_;
  tidepool::testing::FakeClock clock_{absl::FromUnixSeconds(1'800'000'000)};
  std::unique_ptr<SqliteDb> db_;
  std::unique_ptr<UserStore> store_;
};

TEST_F(UserStoreTest, CreatesUsersKeyedOnImmutableIdsWithUniqueEmails) {
  absl::StatusOr<UserRecord> alice =
      store_->CreateLocalUser("Alice@Example.org", "", UserRole::kAdmin);
  ASSERT_THAT(alice, IsOk());
  EXPECT_THAT(alice->user_id, MatchesRegex("u_[a-z2-7]{26}"));
  EXPECT_EQ(alice->email, "alice@example.org");
  EXPECT_EQ(alice->display_name, "alice");
  EXPECT_THAT(store_->CreateLocalUser("ALICE@example.org", "", UserRole::kUser),
              StatusIs(absl::StatusCode::kAlreadyExists));
  for (const char* bad : {"", "alice", "@example.org", "alice@", "a b@example.org",
                          "alice@@example.org", "alice@example", "alice@.org"}) {
    EXPECT_THAT(store_->CreateLocalUser(bad, "", UserRole::kUser),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << bad;
  }
  EXPECT_THAT(store_->FindByEmail("alice@EXAMPLE.org"), IsOk());
  EXPECT_THAT(store_->Get("u_nobody"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(*store_->Count(), 1);
}

TEST_F(UserStoreTest, ChangesBumpTheVersionAndStaleWritesAbort) {
  absl::StatusOr<UserRecord> bob =
      store_->CreateLocalUser("bob@example.org", "Bob", UserRole::kUser);
  ASSERT_THAT(bob, IsOk());
  absl::StatusOr<UserRecord> admin = store_->SetRole(bob->user_id, UserRole::kAdmin, bob->version);
  ASSERT_THAT(admin, IsOk());
  EXPECT_EQ(admin->role, UserRole::kAdmin);
  EXPECT_EQ(admin->version, bob->version + 1);
  EXPECT_THAT(store_->SetRole(bob->user_id, UserRole::kUser, bob->version),
              StatusIs(absl::StatusCode::kAborted));
  absl::StatusOr<UserRecord> suspended = store_->SetSuspended(bob->user_id, true, "left the team");
  ASSERT_THAT(suspended, IsOk());
  EXPECT_TRUE(suspended->suspended);
  EXPECT_EQ(suspended->suspend_reason, "left the team");
  absl::StatusOr<UserRecord> back = store_->SetSuspended(bob->user_id, false, "returned");
  ASSERT_THAT(back, IsOk());
  EXPECT_FALSE(back->suspended);
  EXPECT_EQ(back->suspend_reason, "");
  EXPECT_THAT(store_->SetSuspended("u_nobody", true, ""), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(UserStoreTest, TimezonesMustBeIanaNames) {
  absl::StatusOr<UserRecord> bob =
      store_->CreateLocalUser("bob@example.org", "Bob", UserRole::kUser);
  ASSERT_THAT(bob, IsOk());
  EXPECT_THAT(store_->SetTimezone(bob->user_id, "Europe/Berlin"), IsOk());
  EXPECT_EQ(store_->Get(bob->user_id)->timezone, "Europe/Berlin");
  for (const char* bad :
       {"", "Mars/Olympus", "../../etc/passwd", "/etc/localtime", "Europe/Berlin\n", "UTC+99"}) {
    EXPECT_THAT(store_->SetTimezone(bob->user_id, bad),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << bad;
  }
  EXPECT_TRUE(IsValidTimezone("UTC"));
  EXPECT_TRUE(IsValidTimezone("America/Argentina/Buenos_Aires"));
}

TEST_F(UserStoreTest, ListsSearchesAndPages) {
  for (const char* email :
       {"ann@example.org", "bea@example.org", "cid@other.org", "dan_x@example.org"}) {
    ASSERT_THAT(store_->CreateLocalUser(email, "", UserRole::kUser), IsOk());
  }
  absl::StatusOr<UserPage> page = store_->List("example", std::nullopt, 2, "");
  ASSERT_THAT(page, IsOk());
  ASSERT_EQ(page->users.size(), 2u);
  EXPECT_EQ(page->users[0].email, "ann@example.org");
  absl::StatusOr<UserPage> next = store_->List("example", std::nullopt, 2, page->next_page_token);
  ASSERT_THAT(next, IsOk());
  ASSERT_EQ(next->users.size(), 1u);
  EXPECT_EQ(next->users[0].email, "dan_x@example.org");
  EXPECT_TRUE(next->next_page_token.empty());
  // '_' and '%' are plain characters, not wildcards.
  absl::StatusOr<UserPage> underscore = store_->List("_", std::nullopt, 10, "");
  ASSERT_THAT(underscore, IsOk());
  ASSERT_EQ(underscore->users.size(), 1u);
  absl::StatusOr<UserPage> admins = store_->List("", UserRole::kAdmin, 10, "");
  ASSERT_THAT(admins, IsOk());
  EXPECT_TRUE(admins->users.empty());
  EXPECT_THAT(store_->List("", std::nullopt, 10, "garbage"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(UserStoreTest, StateFilterIsPartOfThePageQuery) {
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    absl::StatusOr<UserRecord> user =
        store_->CreateLocalUser(absl::StrCat("u", i, "@example.org"), "", UserRole::kUser);
    ASSERT_THAT(user, IsOk());
    ids.push_back(user->user_id);
  }
  ASSERT_THAT(store_->SetSuspended(ids[4], true, "x"), IsOk());
  ASSERT_THAT(store_->SetSuspended(ids[5], true, "y"), IsOk());
  // The first page of suspended users is full although they were created last.
  absl::StatusOr<UserPage> suspended = store_->List("", std::nullopt, 2, "", true);
  ASSERT_THAT(suspended, IsOk());
  ASSERT_EQ(suspended->users.size(), 2u);
  EXPECT_EQ(suspended->users[0].user_id, ids[4]);
  EXPECT_EQ(suspended->users[1].user_id, ids[5]);
  absl::StatusOr<UserPage> active = store_->List("", std::nullopt, 10, "", false);
  ASSERT_THAT(active, IsOk());
  EXPECT_EQ(active->users.size(), 4u);
}

TEST_F(UserStoreTest, FederatedAccountsAreKeyedOnTheIdentityNeverTheEmail) {
  ASSERT_THAT(store_->CreateLocalUser("ceo@contoso.example", "", UserRole::kAdmin), IsOk());
  IdentityRecord victim{.provider_id = "microsoft", .kind = "microsoft",
                        .subject = "tenant-a/oid-1", .email = "ceo@contoso.example"};
  IdentityRecord attacker = victim;
  attacker.subject = "tenant-b/oid-9";
  absl::StatusOr<UserRecord> first = store_->CreateFederatedUser(victim, "CEO");
  ASSERT_THAT(first, IsOk());
  absl::StatusOr<UserRecord> second = store_->CreateFederatedUser(attacker, "Not CEO");
  ASSERT_THAT(second, IsOk()) << "the same e-mail from another identity is another account";
  EXPECT_NE(first->user_id, second->user_id);
  EXPECT_FALSE(first->local);
  EXPECT_EQ(first->role, UserRole::kUser);
  EXPECT_THAT(store_->CreateFederatedUser(victim, "again").status(),
              StatusIs(absl::StatusCode::kAlreadyExists));
  absl::StatusOr<UserRecord> found = store_->FindByIdentity("microsoft", "tenant-a/oid-1");
  ASSERT_THAT(found, IsOk());
  EXPECT_EQ(found->user_id, first->user_id);
  // E-mail lookups (local sign-in) only ever see the local account.
  absl::StatusOr<UserRecord> local = store_->FindByEmail("ceo@contoso.example");
  ASSERT_THAT(local, IsOk());
  EXPECT_TRUE(local->local);
  EXPECT_EQ(local->role, UserRole::kAdmin);
  EXPECT_THAT(store_->FindByIdentity("microsoft", "tenant-c/oid-1").status(),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(UserStoreUpgradeTest, ADatabaseFromBeforeFederatedSignInIsUpgradedInPlace) {
  tidepool::testing::ScopedTempDir tmp;
  tidepool::testing::FakeClock clock{absl::FromUnixSeconds(1'800'000'000)};
  absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(tmp.Join("auth.db"), SqliteOptions{});
  ASSERT_THAT(db, IsOk());
  // The schema as the previous release created it.
  ASSERT_THAT((*db)->Exec("CREATE TABLE users (user_id TEXT PRIMARY KEY, email TEXT NOT NULL "
                          "UNIQUE, display_name TEXT NOT NULL, role INTEGER NOT NULL, suspended "
                          "INTEGER NOT NULL DEFAULT 0, suspend_reason TEXT NOT NULL DEFAULT '', "
                          "timezone TEXT NOT NULL DEFAULT '', password_hash TEXT NOT NULL DEFAULT "
                          "'', create_us INTEGER NOT NULL, last_sign_in_us INTEGER, version "
                          "INTEGER NOT NULL DEFAULT 1);"
                          "INSERT INTO users (user_id, email, display_name, role, create_us, "
                          "password_hash) VALUES ('u_old', 'old@example.org', 'Old', 2, 1, 'h');"),
              IsOk());
  absl::StatusOr<std::unique_ptr<UserStore>> store = UserStore::Open(**db, clock);
  ASSERT_THAT(store, IsOk());
  absl::StatusOr<UserRecord> old = (*store)->FindByEmail("old@example.org");
  ASSERT_THAT(old, IsOk());
  EXPECT_EQ(old->user_id, "u_old");
  EXPECT_EQ(old->role, UserRole::kAdmin);
  EXPECT_EQ(old->password_hash, "h");
  EXPECT_TRUE(old->local);
  // Local e-mails stay unique; a federated account may share one.
  EXPECT_THAT((*store)->CreateLocalUser("old@example.org", "", UserRole::kUser).status(),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT((*store)->CreateFederatedUser(
                  {.provider_id = "google", .kind = "google", .subject = "x#1",
                   .email = "old@example.org"},
                  "Other"),
              IsOk());
  // Opening again changes nothing.
  store->reset();
  ASSERT_THAT(UserStore::Open(**db, clock), IsOk());
}

TEST_F(UserStoreTest, SetupTokensAreSingleUseAndExpire) {
  absl::StatusOr<UserRecord> admin =
      store_->CreateLocalUser("admin@example.org", "", UserRole::kAdmin);
  ASSERT_THAT(admin, IsOk());
  absl::StatusOr<std::string> token = store_->CreateSetupToken(admin->user_id, absl::Hours(24));
  ASSERT_THAT(token, IsOk());
  EXPECT_THAT(*token, MatchesRegex("tps_[a-z2-7]{52}"));
  absl::StatusOr<UserRecord> consumed = store_->ConsumeSetupToken(*token);
  ASSERT_THAT(consumed, IsOk());
  EXPECT_EQ(consumed->user_id, admin->user_id);
  EXPECT_THAT(store_->ConsumeSetupToken(*token), StatusIs(absl::StatusCode::kUnauthenticated));
  absl::StatusOr<std::string> late = store_->CreateSetupToken(admin->user_id, absl::Hours(24));
  ASSERT_THAT(late, IsOk());
  clock_.Advance(absl::Hours(25));
  EXPECT_THAT(store_->ConsumeSetupToken(*late), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(store_->ConsumeSetupToken("tps_forged"),
              StatusIs(absl::StatusCode::kUnauthenticated));
}

}  // namespace
}  // namespace tidepool::auth
