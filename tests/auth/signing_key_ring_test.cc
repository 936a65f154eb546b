#include "services/auth/signing_key_ring.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/crypto/crypto.h"
#include "lib/file_util.h"
#include "lib/sqlite_store.h"
#include "services/auth/session_token.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::auth {
namespace {

using ::tidepool::testing::FakeClock;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::ScopedTempDir;
using ::tidepool::testing::StatusIs;

const absl::Time kStart = absl::FromUnixSeconds(1'700'000'000);
constexpr absl::Duration kTokenLifetime = absl::Minutes(15);

SessionClaims Claims(absl::Time now, absl::Duration lifetime = kTokenLifetime) {
  return SessionClaims{"u_7h3kq2m4x5c6v7b2n3m4k5j6h7",
                       "s_abcdefghijklmnopqrstuvwxyz",
                       "user",
                       now,
                       now + lifetime,
                       ""};
}

SessionTokenVerifierOptions Uncached() {
  SessionTokenVerifierOptions options;
  options.cache_capacity = 0;
  return options;
}

class SigningKeyRingTest : public ::testing::Test {
 protected:
  SigningKeyRingTest() : clock_(kStart), path_(dir_.Join("auth.db")) {}

  void SetUp() override { ASSERT_TRUE(OpenDb()); }

  bool OpenDb() {
    absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(path_, SqliteOptions{});
    EXPECT_THAT(db, IsOk());
    if (!db.ok()) {
      return false;
    }
    db_ = *std::move(db);
    return true;
  }

  std::unique_ptr<SigningKeyRing> OpenRing(const SigningKeyRingOptions& options = {}) {
    absl::StatusOr<std::unique_ptr<SigningKeyRing>> ring =
        SigningKeyRing::Open(*db_, clock_, options);
    EXPECT_THAT(ring, IsOk());
    return ring.ok() ? *std::move(ring) : nullptr;
  }

  std::string Sign(const SigningKeyRing& ring) {
    absl::StatusOr<std::string> token = SignSessionToken(Claims(clock_.Now()), ring.Current());
    EXPECT_THAT(token, IsOk());
    return token.ok() ? *token : std::string();
  }

  int64_t RowCount() {
    absl::StatusOr<Statement> count = db_->Prepare("SELECT COUNT(*) FROM signing_keys");
    EXPECT_THAT(count, IsOk());
    EXPECT_THAT(count->Step(), IsOk());
    return count->ColumnInt(0);
  }

  ScopedTempDir dir_;
  FakeClock clock_;
  const std::string path_;
  std::unique_ptr<SqliteDb> db_;
};

TEST_F(SigningKeyRingTest, CreatesOneCurrentKeyOnFirstOpen) {
  std::unique_ptr<SigningKeyRing> ring = OpenRing();
  ASSERT_NE(ring, nullptr);
  const std::vector<VerificationKey> keys = ring->PublicKeys();
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_TRUE(keys[0].current);
  EXPECT_EQ(keys[0].public_key.size(), crypto::kEd25519PublicKeySize);
  EXPECT_EQ(keys[0].key_id, crypto::HexEncode(crypto::Sha256(keys[0].public_key)).substr(0, 16));
  EXPECT_EQ(keys[0].not_before, kStart);
  EXPECT_EQ(keys[0].not_after, absl::InfiniteFuture());

  const SigningKey current = ring->Current();
  EXPECT_EQ(current.key_id, keys[0].key_id);
  ASSERT_NE(current.private_key, nullptr);
  EXPECT_EQ(current.private_key->PublicKey(), keys[0].public_key);
  EXPECT_EQ(current.not_before, kStart);
  EXPECT_EQ(current.not_after, absl::InfiniteFuture());

  EXPECT_EQ(RowCount(), 1);
  EXPECT_THAT(CheckOwnerOnly(path_), IsOk());
}

TEST_F(SigningKeyRingTest, LeavesSchemaVersionToTheService) {
  ASSERT_NE(OpenRing(), nullptr);
  absl::StatusOr<int> version = db_->UserVersion();
  ASSERT_THAT(version, IsOk());
  EXPECT_EQ(*version, 0);
  ASSERT_THAT(db_->Migrate({{1, "CREATE TABLE users (user_id TEXT PRIMARY KEY)"}}), IsOk());
  ASSERT_NE(OpenRing(), nullptr);
  EXPECT_EQ(RowCount(), 1);
}

TEST_F(SigningKeyRingTest, CurrentKeySignsVerifiableTokens) {
  std::unique_ptr<SigningKeyRing> ring = OpenRing();
  ASSERT_NE(ring, nullptr);
  SessionTokenVerifier verifier(*ring, clock_);
  absl::StatusOr<SessionClaims> claims = verifier.Verify(Sign(*ring));
  ASSERT_THAT(claims, IsOk());
  EXPECT_EQ(claims->key_id, ring->Current().key_id);
}

TEST_F(SigningKeyRingTest, RotateMakesNewKeyCurrent) {
  std::unique_ptr<SigningKeyRing> ring = OpenRing();
  ASSERT_NE(ring, nullptr);
  const std::string old_kid = ring->Current().key_id;
  clock_.Advance(absl::Hours(1));
  absl::StatusOr<KeyRotation> rotation = ring->Rotate("scheduled");
  ASSERT_THAT(rotation, IsOk());
  EXPECT_NE(rotation->new_key.key_id, old_kid);
  EXPECT_TRUE(rotation->new_key.current);
  EXPECT_EQ(rotation->new_key.not_before, clock_.Now());
  EXPECT_EQ(rotation->new_key.not_after, absl::InfiniteFuture());
  EXPECT_EQ(rotation->previous_key.key_id, old_kid);
  EXPECT_FALSE(rotation->previous_key.current);
  EXPECT_EQ(rotation->previous_key.not_before, kStart);
  EXPECT_EQ(rotation->previous_key.not_after, clock_.Now() + absl::Minutes(15));
  EXPECT_EQ(ring->Current().key_id, rotation->new_key.key_id);
  EXPECT_EQ(RowCount(), 2);
}

TEST_F(SigningKeyRingTest, OldKeyTokensVerifyDuringGraceAndFailAfter) {
  SigningKeyRingOptions options;
  options.grace = absl::Minutes(5);  // shorter than the token lifetime: the key decides
  std::unique_ptr<SigningKeyRing> ring = OpenRing(options);
  ASSERT_NE(ring, nullptr);
  SessionTokenVerifier uncached(*ring, clock_, Uncached());
  SessionTokenVerifier cached(*ring, clock_);

  clock_.Advance(absl::Minutes(2));
  const std::string old_token = Sign(*ring);
  ASSERT_THAT(cached.Verify(old_token), IsOk());  // now in the cache
  ASSERT_THAT(ring->Rotate("test"), IsOk());
  const absl::Time rotated = clock_.Now();
  const std::string new_token = Sign(*ring);

  for (SessionTokenVerifier* verifier : {&uncached, &cached}) {
    EXPECT_THAT(verifier->Verify(old_token), IsOk());
    EXPECT_THAT(verifier->Verify(new_token), IsOk());
  }
  clock_.Set(rotated + absl::Minutes(5) - absl::Seconds(1));
  for (SessionTokenVerifier* verifier : {&uncached, &cached}) {
    EXPECT_THAT(verifier->Verify(old_token), IsOk());
  }
  clock_.Set(rotated + absl::Minutes(5));
  for (SessionTokenVerifier* verifier : {&uncached, &cached}) {
    EXPECT_THAT(verifier->Verify(old_token), StatusIs(absl::StatusCode::kUnauthenticated));
    EXPECT_THAT(verifier->Verify(new_token), IsOk());
  }
  EXPECT_GE(cached.GetCacheStats().hits, 3u);
}

TEST_F(SigningKeyRingTest, PublicKeysListOldAndNewDuringGraceOnlyNewAfter) {
  std::unique_ptr<SigningKeyRing> ring = OpenRing();
  ASSERT_NE(ring, nullptr);
  const std::string old_kid = ring->Current().key_id;
  clock_.Advance(absl::Minutes(10));
  ASSERT_THAT(ring->Rotate("test"), IsOk());
  const std::string new_kid = ring->Current().key_id;

  std::vector<VerificationKey> keys = ring->PublicKeys();
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys[0].key_id, new_kid);
  EXPECT_TRUE(keys[0].current);
  EXPECT_EQ(keys[1].key_id, old_kid);
  EXPECT_FALSE(keys[1].current);

  clock_.Advance(absl::Minutes(15) - absl::Nanoseconds(1));
  EXPECT_EQ(ring->PublicKeys().size(), 2u);
  clock_.Advance(absl::Nanoseconds(1));
  keys = ring->PublicKeys();
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].key_id, new_kid);
}

TEST_F(SigningKeyRingTest, FindHonoursVerificationWindow) {
  std::unique_ptr<SigningKeyRing> ring = OpenRing();
  ASSERT_NE(ring, nullptr);
  const std::string old_kid = ring->Current().key_id;
  clock_.Advance(absl::Minutes(1));
  ASSERT_THAT(ring->Rotate("test"), IsOk());
  const absl::Time end = clock_.Now() + absl::Minutes(15);
  EXPECT_TRUE(ring->Find(old_kid, end - absl::Nanoseconds(1)).has_value());
  EXPECT_FALSE(ring->Find(old_kid, end).has_value());
  EXPECT_TRUE(ring->Find(ring->Current().key_id, kStart + absl::Hours(24 * 365)).has_value());
  EXPECT_FALSE(ring->Find("0123456789abcdef", clock_.Now()).has_value());
  EXPECT_FALSE(ring->Find("", clock_.Now()).has_value());
}

TEST_F(SigningKeyRingTest, SurvivesReopeningTheDatabase) {
  std::unique_ptr<SigningKeyRing> ring = OpenRing();
  ASSERT_NE(ring, nullptr);
  const std::string token_before = Sign(*ring);
  clock_.Advance(absl::Minutes(3));
  ASSERT_THAT(ring->Rotate("test"), IsOk());
  const std::vector<VerificationKey> keys_before = ring->PublicKeys();
  const std::string current_token = Sign(*ring);
  ring.reset();
  db_.reset();

  ASSERT_TRUE(OpenDb());
  ring = OpenRing();
  ASSERT_NE(ring, nullptr);
  const std::vector<VerificationKey> keys_after = ring->PublicKeys();
  ASSERT_EQ(keys_after.size(), keys_before.size());
  for (size_t i = 0; i < keys_after.size(); ++i) {
    EXPECT_EQ(keys_after[i].key_id, keys_before[i].key_id);
    EXPECT_EQ(keys_after[i].public_key, keys_before[i].public_key);
    EXPECT_EQ(keys_after[i].not_before, keys_before[i].not_before);
    EXPECT_EQ(keys_after[i].not_after, keys_before[i].not_after);
    EXPECT_EQ(keys_after[i].current, keys_before[i].current);
  }
  // The same private key: Ed25519 is deterministic, so the same claims give the same token.
  EXPECT_EQ(Sign(*ring), current_token);
  SessionTokenVerifier verifier(*ring, clock_, Uncached());
  EXPECT_THAT(verifier.Verify(token_before), IsOk());
}

TEST_F(SigningKeyRingTest, ForgetsRetiredKeysAfterGrace) {
  std::unique_ptr<SigningKeyRing> ring = OpenRing();
  ASSERT_NE(ring, nullptr);
  clock_.Advance(absl::Minutes(1));
  ASSERT_THAT(ring->Rotate("first"), IsOk());
  const std::string kid = ring->Current().key_id;
  clock_.Advance(absl::Minutes(15));
  ring.reset();
  ring = OpenRing();  // deletes the first key's row
  ASSERT_NE(ring, nullptr);
  EXPECT_EQ(RowCount(), 1);
  ASSERT_EQ(ring->PublicKeys().size(), 1u);
  EXPECT_EQ(ring->Current().key_id, kid);

  ASSERT_THAT(ring->Rotate("second"), IsOk());
  EXPECT_EQ(RowCount(), 2);
  clock_.Advance(absl::Minutes(16));
  ASSERT_THAT(ring->Rotate("third"), IsOk());  // deletes the second key's row
  EXPECT_EQ(RowCount(), 2);
  EXPECT_EQ(ring->PublicKeys().size(), 2u);
  EXPECT_FALSE(ring->Find(kid, clock_.Now()).has_value());
}

TEST_F(SigningKeyRingTest, RotateRespectsMinimumInterval) {
  std::unique_ptr<SigningKeyRing> ring = OpenRing();
  ASSERT_NE(ring, nullptr);
  const std::string kid = ring->Current().key_id;
  EXPECT_THAT(ring->Rotate("too soon"), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(ring->Current().key_id, kid);
  clock_.Advance(absl::Minutes(1));
  ASSERT_THAT(ring->Rotate("ok"), IsOk());
  EXPECT_THAT(ring->Rotate("too soon"), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(RowCount(), 2);
}

TEST_F(SigningKeyRingTest, RotateRejectsOversizeReason) {
  std::unique_ptr<SigningKeyRing> ring = OpenRing();
  ASSERT_NE(ring, nullptr);
  clock_.Advance(absl::Hours(1));
  EXPECT_THAT(ring->Rotate(std::string(kMaxRotationReasonBytes + 1, 'x')),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(RowCount(), 1);
  EXPECT_THAT(ring->Rotate(std::string(kMaxRotationReasonBytes, 'x')), IsOk());
}

TEST_F(SigningKeyRingTest, RejectsNegativeOptions) {
  SigningKeyRingOptions options;
  options.grace = -absl::Seconds(1);
  EXPECT_THAT(SigningKeyRing::Open(*db_, clock_, options),
              StatusIs(absl::StatusCode::kInvalidArgument));
  options = SigningKeyRingOptions();
  options.min_rotation_interval = -absl::Seconds(1);
  EXPECT_THAT(SigningKeyRing::Open(*db_, clock_, options),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(SigningKeyRingTest, RefusesTamperedKeyTable) {
  ASSERT_NE(OpenRing(), nullptr);
  ASSERT_THAT(db_->Exec("UPDATE signing_keys SET key_id = '0123456789abcdef'"), IsOk());
  EXPECT_THAT(SigningKeyRing::Open(*db_, clock_), StatusIs(absl::StatusCode::kInternal));

  ASSERT_THAT(db_->Exec("UPDATE signing_keys SET private_pem = 'not a key'"), IsOk());
  EXPECT_THAT(SigningKeyRing::Open(*db_, clock_), StatusIs(absl::StatusCode::kInternal));
}

TEST_F(SigningKeyRingTest, RefusesTwoCurrentKeys) {
  ASSERT_NE(OpenRing(), nullptr);
  absl::StatusOr<crypto::Ed25519PrivateKey> extra = crypto::Ed25519PrivateKey::Generate();
  ASSERT_THAT(extra, IsOk());
  absl::StatusOr<std::string> pem = extra->ToPem();
  ASSERT_THAT(pem, IsOk());
  absl::StatusOr<Statement> insert = db_->Prepare(
      "INSERT INTO signing_keys (key_id, private_pem, created_us, retired_us) "
      "VALUES (?, ?, 0, NULL)");
  ASSERT_THAT(insert, IsOk());
  ASSERT_THAT(insert->Bind(1, KeyIdForPublicKey(extra->PublicKey())), IsOk());
  ASSERT_THAT(insert->Bind(2, *pem), IsOk());
  ASSERT_THAT(insert->Step(), IsOk());
  EXPECT_THAT(SigningKeyRing::Open(*db_, clock_), StatusIs(absl::StatusCode::kInternal));
}

TEST_F(SigningKeyRingTest, RotateFailsWhenAnotherRingRotatedFirst) {
  std::unique_ptr<SigningKeyRing> first = OpenRing();
  ASSERT_NE(first, nullptr);
  absl::StatusOr<std::unique_ptr<SqliteDb>> other_db = SqliteDb::Open(path_, SqliteOptions{});
  ASSERT_THAT(other_db, IsOk());
  absl::StatusOr<std::unique_ptr<SigningKeyRing>> second = SigningKeyRing::Open(**other_db, clock_);
  ASSERT_THAT(second, IsOk());
  EXPECT_EQ((*second)->Current().key_id, first->Current().key_id);

  clock_.Advance(absl::Minutes(1));
  ASSERT_THAT((*second)->Rotate("second"), IsOk());
  const std::string kid = first->Current().key_id;
  EXPECT_THAT(first->Rotate("first"), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(first->Current().key_id, kid);
  EXPECT_EQ(RowCount(), 2);
}

TEST_F(SigningKeyRingTest, ConcurrentSigningVerifyingAndRotation) {
  SigningKeyRingOptions options;
  options.grace = absl::Hours(24);
  std::unique_ptr<SigningKeyRing> ring = OpenRing(options);
  ASSERT_NE(ring, nullptr);
  SessionTokenVerifier verifier(*ring, clock_);
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::atomic<int> verified{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      // At least a few rounds even if the rotations finish first.
      for (int round = 0; round < 20 || !done.load(); ++round) {
        // The key first: a token must not predate the key that signs it.
        const SigningKey key = ring->Current();
        absl::StatusOr<std::string> token =
            SignSessionToken(Claims(clock_.Now(), absl::Hours(24)), key);
        if (!token.ok() || !verifier.Verify(*token).ok() || ring->PublicKeys().empty()) {
          failures.fetch_add(1);
        }
        verified.fetch_add(1);
      }
    });
  }
  for (int i = 0; i < 20; ++i) {
    clock_.Advance(absl::Minutes(1));
    EXPECT_THAT(ring->Rotate("load"), IsOk());
  }
  done.store(true);
  for (std::thread& reader : readers) {
    reader.join();
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GE(verified.load(), 60);
  EXPECT_EQ(ring->PublicKeys().size(), 21u);
}

}  // namespace
}  // namespace tidepool::auth
