#include "services/auth/invite_store.h"

#include <atomic>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <latch>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/crypto/crypto.h"
#include "lib/sqlite_store.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::auth {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::tidepool::testing::FakeClock;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::ScopedTempDir;
using ::tidepool::testing::StatusIs;

constexpr char kFingerprintKey[] = "0123456789abcdef0123456789abcdef";
constexpr char kInvalid[] = "invite code is not valid";

// Throttle limits high enough that concurrency tests measure the database, not the throttle.
GuessThrottleOptions Unthrottled() {
  GuessThrottleOptions options;
  options.max_failures_per_address = 1 << 20;
  options.max_failures_per_target = 1 << 20;
  options.max_failures_global = 1 << 20;
  return options;
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class InviteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    db_ = OpenDb();
    ASSERT_NE(db_, nullptr);
    ASSERT_THAT(InviteStore::InitSchema(*db_), IsOk());
    store_ = std::make_unique<InviteStore>(*db_, clock_, throttle_, kFingerprintKey);
  }

  std::string DbPath() const { return dir_.Join("auth.db"); }

  std::unique_ptr<SqliteDb> OpenDb() {
    SqliteOptions options;
    options.busy_timeout = absl::Seconds(60);  // generous: 100 connections contend
    absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(DbPath(), options);
    EXPECT_THAT(db, IsOk());
    return db.ok() ? *std::move(db) : nullptr;
  }

  InviteSpec Spec(int max_uses = 1) {
    InviteSpec spec;
    spec.max_uses = max_uses;
    spec.expire_time = clock_.Now() + absl::Hours(24 * 7);
    spec.note = "for the design team";
    spec.created_by_user_id = "u_admin";
    return spec;
  }

  // Creates an invite; returns {record, code}.
  std::pair<InviteRecord, std::string> CreateOrDie(const InviteSpec& spec) {
    absl::StatusOr<std::pair<InviteRecord, std::string>> created = store_->Create(spec);
    EXPECT_THAT(created, IsOk());
    return created.ok() ? *std::move(created) : std::pair<InviteRecord, std::string>();
  }

  int64_t UseCount(const std::string& invite_id) {
    absl::StatusOr<Statement> select =
        db_->Prepare("SELECT use_count FROM invites WHERE invite_id = ?");
    EXPECT_THAT(select, IsOk());
    EXPECT_THAT(select->Bind(1, invite_id), IsOk());
    absl::StatusOr<bool> row = select->Step();
    EXPECT_THAT(row, IsOk());
    return row.ok() && *row ? select->ColumnInt(0) : -1;
  }

  // Runs `threads` concurrent redemptions of `code`, each through its own SqliteDb connection
  // and InviteStore, released together; returns the number of successes.
  int RedeemConcurrentlyOnSeparateConnections(const std::string& code, int threads) {
    GuessThrottle throttle(clock_, Unthrottled());
    std::latch start(threads);
    std::atomic<int> successes{0};
    std::atomic<int> not_found{0};
    std::vector<std::thread> workers;
    workers.reserve(threads);
    for (int i = 0; i < threads; ++i) {
      workers.emplace_back([&, i] {
        std::unique_ptr<SqliteDb> db = OpenDb();
        if (db == nullptr) {
          start.count_down();
          return;
        }
        InviteStore store(*db, clock_, throttle, kFingerprintKey);
        start.arrive_and_wait();
        RedeemDetails details;
        absl::StatusOr<InviteRecord> result = store.Redeem(
            code, absl::StrCat("user", i, "@example.com"), absl::StrCat("10.0.0.", i), &details);
        if (result.ok()) {
          successes.fetch_add(1);
        } else {
          EXPECT_THAT(result, StatusIs(absl::StatusCode::kNotFound, kInvalid));
          EXPECT_EQ(details.outcome, RedeemOutcome::kUsedUp);
          not_found.fetch_add(1);
        }
      });
    }
    for (std::thread& worker : workers) {
      worker.join();
    }
    EXPECT_EQ(successes.load() + not_found.load(), threads);
    return successes.load();
  }

  ScopedTempDir dir_;
  FakeClock clock_{absl::FromUnixSeconds(1'800'000'000)};
  GuessThrottle throttle_{clock_};
  std::unique_ptr<SqliteDb> db_;
  std::unique_ptr<InviteStore> store_;
};

TEST_F(InviteStoreTest, CreateReturnsWellFormedCodeAndRecord) {
  const InviteSpec spec = Spec(3);
  auto [record, code] = CreateOrDie(spec);
  EXPECT_THAT(code, MatchesRegex("tpi_[a-z2-7]{32}"));
  EXPECT_THAT(record.invite_id, MatchesRegex("inv_[a-z2-7]{26}"));
  EXPECT_THAT(record.code_fingerprint, MatchesRegex("[0-9a-f]{16}"));
  EXPECT_EQ(record.code_fingerprint, store_->Fingerprint(code));
  EXPECT_EQ(record.max_uses, 3);
  EXPECT_EQ(record.use_count, 0);
  EXPECT_EQ(record.create_time, clock_.Now());
  EXPECT_EQ(record.expire_time, spec.expire_time);
  EXPECT_EQ(record.note, "for the design team");
  EXPECT_EQ(record.created_by, "u_admin");
  EXPECT_FALSE(record.revoked);
  EXPECT_EQ(record.state, InviteState::kActive);

  auto [other_record, other_code] = CreateOrDie(spec);
  EXPECT_NE(code, other_code);
  EXPECT_NE(record.invite_id, other_record.invite_id);
  EXPECT_NE(record.code_fingerprint, other_record.code_fingerprint);
}

TEST_F(InviteStoreTest, FingerprintDependsOnKey) {
  auto [record, code] = CreateOrDie(Spec());
  InviteStore other_key(*db_, clock_, throttle_, "another key, another fingerprint");
  EXPECT_NE(other_key.Fingerprint(code), record.code_fingerprint);
  EXPECT_EQ(record.code_fingerprint,
            crypto::HexEncode(crypto::HmacSha256(kFingerprintKey, code)).substr(0, 16));
}

TEST_F(InviteStoreTest, StoresOnlyTheHashOfTheCode) {
  auto [record, code] = CreateOrDie(Spec());
  absl::StatusOr<Statement> select = db_->Prepare("SELECT * FROM invites");
  ASSERT_THAT(select, IsOk());
  absl::StatusOr<bool> row = select->Step();
  ASSERT_THAT(row, IsOk());
  ASSERT_TRUE(*row);
  bool saw_hash = false;
  for (int i = 0; i < select->ColumnCount(); ++i) {
    const std::string value = select->ColumnText(i);
    EXPECT_THAT(value, Not(HasSubstr(code.substr(4))));
    saw_hash = saw_hash || value == crypto::HexEncode(crypto::Sha256(code));
  }
  EXPECT_TRUE(saw_hash);

  // Nowhere in the database files either (main file, WAL and shared memory), in either case.
  const std::string bytes =
      ReadFileBytes(DbPath()) + ReadFileBytes(DbPath() + "-wal") + ReadFileBytes(DbPath() + "-shm");
  ASSERT_TRUE(absl::StrContains(bytes, record.invite_id));  // we are reading the right files
  EXPECT_FALSE(absl::StrContains(bytes, code));
  EXPECT_FALSE(absl::StrContains(bytes, code.substr(4)));
  EXPECT_FALSE(absl::StrContains(bytes, absl::AsciiStrToUpper(code.substr(4))));
}

TEST_F(InviteStoreTest, RedeemIncrementsUseCount) {
  auto [record, code] = CreateOrDie(Spec(2));
  RedeemDetails details;
  absl::StatusOr<InviteRecord> redeemed =
      store_->Redeem(code, "alice@example.com", "192.0.2.1", &details);
  ASSERT_THAT(redeemed, IsOk());
  EXPECT_EQ(redeemed->invite_id, record.invite_id);
  EXPECT_EQ(redeemed->use_count, 1);
  EXPECT_EQ(redeemed->state, InviteState::kActive);
  EXPECT_EQ(details.outcome, RedeemOutcome::kRedeemed);
  EXPECT_EQ(details.invite_id, record.invite_id);
  EXPECT_EQ(details.code_fingerprint, record.code_fingerprint);
  EXPECT_EQ(UseCount(record.invite_id), 1);

  // Codes are base32 and case-insensitive.
  redeemed = store_->Redeem(absl::AsciiStrToUpper(code), "bob@example.com", "192.0.2.1");
  ASSERT_THAT(redeemed, IsOk());
  EXPECT_EQ(redeemed->use_count, 2);
  EXPECT_EQ(redeemed->state, InviteState::kUsedUp);
  EXPECT_EQ(UseCount(record.invite_id), 2);
}

TEST_F(InviteStoreTest, EveryFailureGivesTheSameNotFoundMessage) {
  struct Case {
    std::string name;
    std::string code;
    std::string email;
    RedeemOutcome outcome;
    std::string invite_id;
  };
  std::vector<Case> cases;

  auto [used, used_code] = CreateOrDie(Spec(1));
  ASSERT_THAT(store_->Redeem(used_code, "first@example.com", "192.0.2.99"), IsOk());
  cases.push_back(
      {"used up", used_code, "second@example.com", RedeemOutcome::kUsedUp, used.invite_id});

  auto [revoked, revoked_code] = CreateOrDie(Spec(5));
  ASSERT_THAT(store_->Revoke(revoked.invite_id), IsOk());
  cases.push_back(
      {"revoked", revoked_code, "a@example.com", RedeemOutcome::kRevoked, revoked.invite_id});

  InviteSpec email_spec = Spec(5);
  email_spec.bound_email = "Carol@Example.com";
  auto [email_bound, email_code] = CreateOrDie(email_spec);
  cases.push_back({"email mismatch", email_code, "mallory@example.com",
                   RedeemOutcome::kEmailMismatch, email_bound.invite_id});
  cases.push_back({"email superstring", email_code, "carol@example.com.evil.org",
                   RedeemOutcome::kEmailMismatch, email_bound.invite_id});

  InviteSpec domain_spec = Spec(5);
  domain_spec.bound_domain = "example.com";
  auto [domain_bound, domain_code] = CreateOrDie(domain_spec);
  cases.push_back({"domain mismatch", domain_code, "dave@example.org",
                   RedeemOutcome::kDomainMismatch, domain_bound.invite_id});
  cases.push_back({"subdomain", domain_code, "dave@sub.example.com", RedeemOutcome::kDomainMismatch,
                   domain_bound.invite_id});
  cases.push_back({"domain before last at", domain_code, "example.com@evil.org",
                   RedeemOutcome::kDomainMismatch, domain_bound.invite_id});
  cases.push_back({"no at", domain_code, "example.com", RedeemOutcome::kDomainMismatch,
                   domain_bound.invite_id});

  cases.push_back(
      {"unknown", "tpi_" + std::string(32, 'a'), "e@example.com", RedeemOutcome::kUnknownCode, ""});
  cases.push_back({"malformed", "hello", "e@example.com", RedeemOutcome::kMalformedCode, ""});
  cases.push_back(
      {"too long", used_code + "a", "e@example.com", RedeemOutcome::kMalformedCode, ""});
  cases.push_back({"bad alphabet", "tpi_" + std::string(32, '1'), "e@example.com",
                   RedeemOutcome::kMalformedCode, ""});
  cases.push_back({"empty", "", "e@example.com", RedeemOutcome::kMalformedCode, ""});

  // Expired last: advancing the clock would expire the others too.
  auto [expiring, expiring_code] = CreateOrDie(Spec(5));
  int address = 0;
  for (const Case& c : cases) {
    RedeemDetails details;
    EXPECT_THAT(store_->Redeem(c.code, c.email, absl::StrCat("198.51.100.", ++address), &details),
                StatusIs(absl::StatusCode::kNotFound, kInvalid))
        << c.name;
    EXPECT_EQ(details.outcome, c.outcome) << c.name;
    EXPECT_EQ(details.invite_id, c.invite_id) << c.name;
  }
  clock_.Advance(absl::Hours(24 * 7));  // exactly at the expiry: no longer valid
  RedeemDetails details;
  EXPECT_THAT(store_->Redeem(expiring_code, "e@example.com", "198.51.100.200", &details),
              StatusIs(absl::StatusCode::kNotFound, kInvalid));
  EXPECT_EQ(details.outcome, RedeemOutcome::kExpired);
  EXPECT_EQ(details.invite_id, expiring.invite_id);
  EXPECT_EQ(UseCount(expiring.invite_id), 0);
  EXPECT_EQ(UseCount(email_bound.invite_id), 0);
  EXPECT_EQ(UseCount(domain_bound.invite_id), 0);
}

TEST_F(InviteStoreTest, BindingsMatchCaseInsensitively) {
  InviteSpec email_spec = Spec(2);
  email_spec.bound_email = "Carol@Example.COM";
  auto [email_bound, email_code] = CreateOrDie(email_spec);
  EXPECT_EQ(email_bound.bound_email, "carol@example.com");
  EXPECT_THAT(store_->Redeem(email_code, "cAROL@example.com", "192.0.2.1"), IsOk());

  InviteSpec domain_spec = Spec(3);
  domain_spec.bound_domain = "Example.com";
  auto [domain_bound, domain_code] = CreateOrDie(domain_spec);
  EXPECT_EQ(domain_bound.bound_domain, "example.com");
  EXPECT_THAT(store_->Redeem(domain_code, "dave@EXAMPLE.com", "192.0.2.1"), IsOk());
  EXPECT_THAT(store_->Redeem(domain_code, "\"odd@local\"@example.com", "192.0.2.1"), IsOk());
}

TEST_F(InviteStoreTest, CreateValidatesSpec) {
  std::vector<std::pair<std::string, InviteSpec>> bad;
  InviteSpec s = Spec();
  s.max_uses = 0;
  bad.emplace_back("max_uses 0", s);
  s = Spec();
  s.max_uses = 10001;
  bad.emplace_back("max_uses 10001", s);
  s = Spec();
  s.expire_time = clock_.Now();
  bad.emplace_back("expires now", s);
  s = Spec();
  s.expire_time = clock_.Now() - absl::Seconds(1);
  bad.emplace_back("expired", s);
  s = Spec();
  s.expire_time = InviteSpec().expire_time;
  bad.emplace_back("unset expiry", s);
  s = Spec();
  s.expire_time = clock_.Now() + absl::Hours(24 * 90) + absl::Seconds(1);
  bad.emplace_back("over 90 days", s);
  s = Spec();
  s.bound_email = "a@example.com";
  s.bound_domain = "example.com";
  bad.emplace_back("both bindings", s);
  for (const char* email : {"no-at-sign", "@example.com", "a@", "a@b", "a b@example.com",
                            "a@exa_mple.com", "a@-example.com", "a\n@example.com"}) {
    s = Spec();
    s.bound_email = email;
    bad.emplace_back(absl::StrCat("email ", email), s);
  }
  for (const char* domain : {"@example.com", "example", "example..com", ".example.com",
                             "example.com.", "ex ample.com", "exa$mple.com"}) {
    s = Spec();
    s.bound_domain = domain;
    bad.emplace_back(absl::StrCat("domain ", domain), s);
  }
  s = Spec();
  s.note = std::string(257, 'n');
  bad.emplace_back("long note", s);
  s = Spec();
  s.note = "line\nbreak";
  bad.emplace_back("control character in note", s);
  s = Spec();
  s.note = "bad \xff utf8";
  bad.emplace_back("invalid UTF-8 note", s);
  s = Spec();
  s.created_by_user_id = std::string(200, 'u');
  bad.emplace_back("long creator", s);

  for (const auto& [name, spec] : bad) {
    EXPECT_THAT(store_->Create(spec), StatusIs(absl::StatusCode::kInvalidArgument)) << name;
  }
  absl::StatusOr<InvitePage> page = store_->List(true, 0, "");
  ASSERT_THAT(page, IsOk());
  EXPECT_TRUE(page->invites.empty());

  // The limits themselves are fine.
  s = Spec(10000);
  s.expire_time = clock_.Now() + absl::Hours(24 * 90);
  s.note = std::string(256, 'n');
  EXPECT_THAT(store_->Create(s), IsOk());
  s = Spec();
  s.note = "caf\xc3\xa9 \xe2\x98\x95";  // printable non-ASCII
  EXPECT_THAT(store_->Create(s), IsOk());
}

TEST_F(InviteStoreTest, CreateFailsWhenTooManyInvitesAreActive) {
  InviteStoreOptions options;
  options.max_active_invites = 2;
  InviteStore store(*db_, clock_, throttle_, kFingerprintKey, options);
  ASSERT_THAT(store.Create(Spec()), IsOk());
  absl::StatusOr<std::pair<InviteRecord, std::string>> second = store.Create(Spec());
  ASSERT_THAT(second, IsOk());
  EXPECT_THAT(store.Create(Spec()), StatusIs(absl::StatusCode::kResourceExhausted));
  // Revoked invites do not count.
  ASSERT_THAT(store.Revoke(second->first.invite_id), IsOk());
  EXPECT_THAT(store.Create(Spec()), IsOk());
}

TEST_F(InviteStoreTest, CreateFailsWithoutFingerprintKey) {
  InviteStore store(*db_, clock_, throttle_, "");
  EXPECT_THAT(store.Create(Spec()), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(InviteStoreTest, SingleUseCodeRedeemedOnceByHundredConnections) {
  for (int run = 0; run < 10; ++run) {
    auto [record, code] = CreateOrDie(Spec(1));
    EXPECT_EQ(RedeemConcurrentlyOnSeparateConnections(code, 100), 1) << "run " << run;
    EXPECT_EQ(UseCount(record.invite_id), 1) << "run " << run;
  }
}

TEST_F(InviteStoreTest, ThreeUseCodeRedeemedThreeTimesByHundredConnections) {
  auto [record, code] = CreateOrDie(Spec(3));
  EXPECT_EQ(RedeemConcurrentlyOnSeparateConnections(code, 100), 3);
  EXPECT_EQ(UseCount(record.invite_id), 3);
}

TEST_F(InviteStoreTest, SingleUseCodeRedeemedOnceByHundredThreadsSharingAStore) {
  GuessThrottle throttle(clock_, Unthrottled());
  InviteStore store(*db_, clock_, throttle, kFingerprintKey);
  auto [record, code] = CreateOrDie(Spec(1));
  std::latch start(100);
  std::atomic<int> successes{0};
  std::vector<std::thread> workers;
  for (int i = 0; i < 100; ++i) {
    workers.emplace_back([&, i] {
      start.arrive_and_wait();
      if (store.Redeem(code, absl::StrCat("u", i, "@example.com"), "192.0.2.1").ok()) {
        successes.fetch_add(1);
      }
    });
  }
  for (std::thread& worker : workers) {
    worker.join();
  }
  EXPECT_EQ(successes.load(), 1);
  EXPECT_EQ(UseCount(record.invite_id), 1);
}

TEST_F(InviteStoreTest, ThrottlesEleventhFailureFromOneAddress) {
  auto [record, code] = CreateOrDie(Spec(5));
  const std::string unknown = "tpi_" + std::string(32, 'b');
  for (int i = 0; i < 10; ++i) {
    EXPECT_THAT(store_->Redeem(unknown, absl::StrCat("g", i, "@example.com"), "203.0.113.7"),
                StatusIs(absl::StatusCode::kNotFound, kInvalid))
        << i;
  }
  RedeemDetails details;
  EXPECT_THAT(store_->Redeem(unknown, "g10@example.com", "203.0.113.7", &details),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(details.outcome, RedeemOutcome::kThrottled);
  // Throttled before the code is looked at: even a valid code is refused.
  EXPECT_THAT(store_->Redeem(code, "g11@example.com", "203.0.113.7", &details),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(details.invite_id, "");
  EXPECT_EQ(UseCount(record.invite_id), 0);

  // Another address is unaffected.
  EXPECT_THAT(store_->Redeem(code, "h@example.com", "203.0.113.8"), IsOk());

  // Still blocked just inside the window; allowed again once it has passed.
  clock_.Advance(absl::Seconds(59));
  EXPECT_THAT(store_->Redeem(code, "g12@example.com", "203.0.113.7"),
              StatusIs(absl::StatusCode::kResourceExhausted));
  clock_.Advance(absl::Seconds(1));
  EXPECT_THAT(store_->Redeem(code, "g13@example.com", "203.0.113.7"), IsOk());
  EXPECT_EQ(UseCount(record.invite_id), 2);
}

TEST_F(InviteStoreTest, SuccessesDoNotCountAsFailures) {
  auto [record, code] = CreateOrDie(Spec(50));
  const std::string unknown = "tpi_" + std::string(32, 'c');
  for (int i = 0; i < 9; ++i) {
    EXPECT_THAT(store_->Redeem(unknown, absl::StrCat("f", i, "@x.org"), "203.0.113.9"),
                StatusIs(absl::StatusCode::kNotFound));
  }
  for (int i = 0; i < 30; ++i) {
    EXPECT_THAT(store_->Redeem(code, absl::StrCat("s", i, "@x.org"), "203.0.113.9"), IsOk()) << i;
  }
  EXPECT_THAT(store_->Redeem(unknown, "f9@x.org", "203.0.113.9"),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store_->Redeem(unknown, "f10@x.org", "203.0.113.9"),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(InviteStoreTest, ThrottlesFailuresPerTargetAcrossAddresses) {
  const std::string unknown = "tpi_" + std::string(32, 'd');
  for (int i = 0; i < 10; ++i) {
    EXPECT_THAT(store_->Redeem(unknown, "victim@example.com", absl::StrCat("10.1.0.", i)),
                StatusIs(absl::StatusCode::kNotFound));
  }
  EXPECT_THAT(store_->Redeem(unknown, "VICTIM@example.com", "10.1.0.200"),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(store_->Redeem(unknown, "someone-else@example.com", "10.1.0.201"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(InviteStoreTest, ThrottlesFailuresGlobally) {
  const std::string unknown = "tpi_" + std::string(32, 'e');
  for (int i = 0; i < 100; ++i) {
    EXPECT_THAT(store_->Redeem(unknown, absl::StrCat("u", i, "@example.com"),
                               absl::StrCat("10.2.", i / 256, ".", i % 256)),
                StatusIs(absl::StatusCode::kNotFound))
        << i;
  }
  EXPECT_THAT(store_->Redeem(unknown, "fresh@example.com", "10.3.0.1"),
              StatusIs(absl::StatusCode::kResourceExhausted));
  clock_.Advance(absl::Minutes(1));
  EXPECT_THAT(store_->Redeem(unknown, "fresh@example.com", "10.3.0.1"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(InviteStoreTest, BruteForceFromOneAddressEvaluatesAtMostTenPerMinute) {
  auto [record, code] = CreateOrDie(Spec(1));
  std::mt19937_64 rng(20240601);  // seeded: deterministic
  constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::vector<absl::Time> evaluated;
  int throttled = 0;
  for (int i = 0; i < 1000; ++i) {
    std::string guess = "tpi_";
    for (int k = 0; k < 32; ++k) {
      guess.push_back(kAlphabet[rng() % 32]);
    }
    RedeemDetails details;
    absl::StatusOr<InviteRecord> result = store_->Redeem(
        guess, absl::StrCat("attacker", i, "@example.com"), "203.0.113.66", &details);
    ASSERT_FALSE(result.ok());
    if (details.outcome == RedeemOutcome::kThrottled) {
      EXPECT_THAT(result, StatusIs(absl::StatusCode::kResourceExhausted));
      ++throttled;
    } else {
      EXPECT_THAT(result, StatusIs(absl::StatusCode::kNotFound, kInvalid));
      evaluated.push_back(clock_.Now());
    }
    clock_.Advance(absl::Milliseconds(500));  // 2 guesses per second: 500 s in all
  }
  // In every window of one minute, at most 10 guesses were evaluated.
  for (size_t i = 0; i < evaluated.size(); ++i) {
    int in_window = 0;
    for (size_t j = 0; j <= i; ++j) {
      if (evaluated[j] > evaluated[i] - absl::Minutes(1)) {
        ++in_window;
      }
    }
    EXPECT_LE(in_window, 10) << "at guess " << i;
  }
  // 500 s is 8 full windows and a partial one.
  EXPECT_LE(evaluated.size(), 90u);
  EXPECT_GE(evaluated.size(), 80u);
  EXPECT_EQ(throttled + static_cast<int>(evaluated.size()), 1000);
  EXPECT_EQ(UseCount(record.invite_id), 0);
}

TEST_F(InviteStoreTest, ThrottleMemoryIsBounded) {
  GuessThrottle throttle(clock_);
  for (int i = 0; i < 20000; ++i) {
    absl::StatusOr<GuessThrottle::Attempt> attempt =
        throttle.Admit(absl::StrCat("addr-", i), absl::StrCat("target-", i, "@example.com"));
    static_cast<void>(attempt);
    clock_.Advance(absl::Milliseconds(10));
  }
  // At most max_failures_global admissions per window, two keys each, kept for at most two
  // windows between sweeps.
  EXPECT_LE(throttle.TrackedKeys(), 400u);
  clock_.Advance(absl::Minutes(2));
  ASSERT_THAT(throttle.Admit("late", ""), IsOk());
  EXPECT_EQ(throttle.TrackedKeys(), 1u);
}

TEST_F(InviteStoreTest, ForgiveReleasesTheReservation) {
  GuessThrottleOptions options;
  options.max_failures_per_address = 1;
  GuessThrottle throttle(clock_, options);
  absl::StatusOr<GuessThrottle::Attempt> first = throttle.Admit("a", "t");
  ASSERT_THAT(first, IsOk());
  EXPECT_THAT(throttle.Admit("a", "t"), StatusIs(absl::StatusCode::kResourceExhausted));
  throttle.Forgive(*first);
  EXPECT_THAT(throttle.Admit("a", "t"), IsOk());
}

TEST_F(InviteStoreTest, ListNeverExposesCodes) {
  std::vector<std::string> codes;
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto [record, code] = CreateOrDie(Spec(2));
    codes.push_back(code);
    ids.push_back(record.invite_id);
    clock_.Advance(absl::Seconds(1));
  }
  absl::StatusOr<InvitePage> page = store_->List(true, 0, "");
  ASSERT_THAT(page, IsOk());
  ASSERT_EQ(page->invites.size(), 3u);
  EXPECT_EQ(page->next_page_token, "");
  // Newest first.
  EXPECT_EQ(page->invites[0].invite_id, ids[2]);
  EXPECT_EQ(page->invites[2].invite_id, ids[0]);
  for (const InviteRecord& r : page->invites) {
    for (const std::string& code : codes) {
      for (const std::string& field :
           {r.invite_id, r.bound_email, r.bound_domain, r.note, r.created_by, r.code_fingerprint}) {
        EXPECT_THAT(field, Not(HasSubstr(code.substr(4, 8))));
      }
    }
  }
}

TEST_F(InviteStoreTest, ListPaginatesNewestFirst) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(CreateOrDie(Spec()).first.invite_id);
    if (i != 2) {  // two invites share a create time: ties break by id
      clock_.Advance(absl::Seconds(1));
    }
  }
  std::vector<std::string> listed;
  std::string token;
  int pages = 0;
  do {
    absl::StatusOr<InvitePage> page = store_->List(false, 2, token);
    ASSERT_THAT(page, IsOk());
    EXPECT_LE(page->invites.size(), 2u);
    for (const InviteRecord& r : page->invites) {
      listed.push_back(r.invite_id);
    }
    token = page->next_page_token;
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(listed.size(), 5u);
  EXPECT_EQ(std::set<std::string>(listed.begin(), listed.end()).size(), 5u);
  EXPECT_EQ(listed[0], ids[4]);
  // ids[2] and ids[3] share a create time (ordered by id) and straddle pages 1 and 2.
  EXPECT_EQ((std::set<std::string>{listed[1], listed[2]}), (std::set<std::string>{ids[2], ids[3]}));
  EXPECT_EQ(listed[3], ids[1]);
  EXPECT_EQ(listed[4], ids[0]);

  absl::StatusOr<InvitePage> first = store_->List(false, 2, "");
  ASSERT_THAT(first, IsOk());
  ASSERT_FALSE(first->next_page_token.empty());
  // A token is bound to its filter.
  EXPECT_THAT(store_->List(true, 2, first->next_page_token),
              StatusIs(absl::StatusCode::kInvalidArgument));
  for (const char* forged :
       {"garbage", "l:1:inv_x", "l:-5:inv_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        "l:99999999999999999999:inv_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        "l:1:inv_aaaaaaaaaaaaaaaaaaaaaaaaaa:x", "x:1:inv_aaaaaaaaaaaaaaaaaaaaaaaaaa"}) {
    EXPECT_THAT(store_->List(false, 2, forged), StatusIs(absl::StatusCode::kInvalidArgument))
        << forged;
  }
  EXPECT_THAT(store_->List(false, -1, ""), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(InviteStoreTest, ListFiltersInactiveInvites) {
  auto [active, active_code] = CreateOrDie(Spec(2));
  auto [revoked, revoked_code] = CreateOrDie(Spec());
  ASSERT_THAT(store_->Revoke(revoked.invite_id), IsOk());
  auto [used, used_code] = CreateOrDie(Spec(1));
  ASSERT_THAT(store_->Redeem(used_code, "u@example.com", "192.0.2.1"), IsOk());
  InviteSpec short_spec = Spec();
  short_spec.expire_time = clock_.Now() + absl::Hours(1);
  auto [expired, expired_code] = CreateOrDie(short_spec);
  clock_.Advance(absl::Hours(2));

  absl::StatusOr<InvitePage> live = store_->List(false, 0, "");
  ASSERT_THAT(live, IsOk());
  ASSERT_EQ(live->invites.size(), 1u);
  EXPECT_EQ(live->invites[0].invite_id, active.invite_id);

  absl::StatusOr<InvitePage> all = store_->List(true, 0, "");
  ASSERT_THAT(all, IsOk());
  ASSERT_EQ(all->invites.size(), 4u);
  // Same create time for all (newest-first order is then by id): compare as a set.
  std::set<std::pair<std::string, InviteState>> got;
  for (const InviteRecord& r : all->invites) {
    got.emplace(r.invite_id, r.state);
  }
  EXPECT_EQ(got, (std::set<std::pair<std::string, InviteState>>{
                     {active.invite_id, InviteState::kActive},
                     {revoked.invite_id, InviteState::kRevoked},
                     {used.invite_id, InviteState::kUsedUp},
                     {expired.invite_id, InviteState::kExpired}}));
}

TEST_F(InviteStoreTest, RevokeThenRedeemFails) {
  auto [record, code] = CreateOrDie(Spec(5));
  clock_.Advance(absl::Minutes(5));
  absl::StatusOr<InviteRecord> revoked = store_->Revoke(record.invite_id);
  ASSERT_THAT(revoked, IsOk());
  EXPECT_TRUE(revoked->revoked);
  EXPECT_EQ(revoked->revoke_time, clock_.Now());
  EXPECT_EQ(revoked->state, InviteState::kRevoked);
  RedeemDetails details;
  EXPECT_THAT(store_->Redeem(code, "a@example.com", "192.0.2.1", &details),
              StatusIs(absl::StatusCode::kNotFound, kInvalid));
  EXPECT_EQ(details.outcome, RedeemOutcome::kRevoked);
  EXPECT_EQ(UseCount(record.invite_id), 0);
}

TEST_F(InviteStoreTest, RevokeIsIdempotentAndKeepsFirstRevokeTime) {
  auto [record, code] = CreateOrDie(Spec());
  absl::StatusOr<InviteRecord> first = store_->Revoke(record.invite_id);
  ASSERT_THAT(first, IsOk());
  clock_.Advance(absl::Hours(1));
  absl::StatusOr<InviteRecord> second = store_->Revoke(record.invite_id);
  ASSERT_THAT(second, IsOk());
  EXPECT_TRUE(second->revoked);
  EXPECT_EQ(second->revoke_time, first->revoke_time);
}

TEST_F(InviteStoreTest, RevokeRejectsUnknownAndMalformedIds) {
  EXPECT_THAT(store_->Revoke("inv_" + std::string(26, 'a')), StatusIs(absl::StatusCode::kNotFound));
  for (const char* bad :
       {"", "inv_", "inv_short", "INV_aaaaaaaaaaaaaaaaaaaaaaaaaa", "inv_aaaaaaaaaaaaaaaaaaaaaaaaa1",
        "inv_aaaaaaaaaaaaaaaaaaaaaaaaaa' OR 1"}) {
    EXPECT_THAT(store_->Revoke(bad), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
}

TEST_F(InviteStoreTest, SchemaIsIdempotentAndFitsAMigration) {
  EXPECT_THAT(InviteStore::InitSchema(*db_), IsOk());
  absl::StatusOr<std::unique_ptr<SqliteDb>> other =
      SqliteDb::Open(dir_.Join("migrated.db"), SqliteOptions());
  ASSERT_THAT(other, IsOk());
  ASSERT_THAT((*other)->Migrate({Migration{1, std::string(InviteStore::SchemaSql())}}), IsOk());
  GuessThrottle throttle(clock_);
  InviteStore store(**other, clock_, throttle, kFingerprintKey);
  absl::StatusOr<std::pair<InviteRecord, std::string>> created = store.Create(Spec());
  ASSERT_THAT(created, IsOk());
  EXPECT_THAT(store.Redeem(created->second, "a@example.com", "192.0.2.1"), IsOk());
}

TEST_F(InviteStoreTest, RedeemOutcomeNamesAreDistinct) {
  std::set<std::string> names;
  for (RedeemOutcome outcome :
       {RedeemOutcome::kRedeemed, RedeemOutcome::kThrottled, RedeemOutcome::kMalformedCode,
        RedeemOutcome::kUnknownCode, RedeemOutcome::kRevoked, RedeemOutcome::kExpired,
        RedeemOutcome::kUsedUp, RedeemOutcome::kEmailMismatch, RedeemOutcome::kDomainMismatch,
        RedeemOutcome::kStoreError}) {
    names.insert(std::string(RedeemOutcomeName(outcome)));
  }
  EXPECT_EQ(names.size(), 10u);
  EXPECT_THAT(std::vector<std::string>({std::string(RedeemOutcomeName(RedeemOutcome::kUsedUp))}),
              ElementsAre("used_up"));
}

}  // namespace
}  // namespace tidepool::auth
