// The SQLite store: atomic puts, versions, limits, the change feed, tampering at rest (every
// altered or moved row fails closed), and kill -9 during writes losing no acknowledged put.
#include "services/secrets/secret_store.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/file_util.h"
#include "lib/sqlite_store.h"
#include "services/secrets/envelope.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::secrets {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

constexpr char kUserA[] = "u_aaaaaaaaaaaaaaaaaaaaaaaaaa";
constexpr char kUserB[] = "u_bbbbbbbbbbbbbbbbbbbbbbbbbb";

std::string Value(int n) { return absl::StrCat("sk-ant-api03-value-", n, "-abcdefghijklmnop"); }

class SecretStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Keyring> keyring = Keyring::Create(clock_.Now());
    ASSERT_THAT(keyring, IsOk());
    keyring_ = std::make_unique<Keyring>(*std::move(keyring));
    Reopen();
  }

  void Reopen(int max_per_user = 5, int64_t data_key_budget = kMaxEncryptionsPerKey,
              int64_t retention = 1000) {
    store_.reset();
    SecretStoreOptions options;
    options.path = path();
    options.max_secrets_per_user = max_per_user;
    options.max_encryptions_per_data_key = data_key_budget;
    options.change_retention = retention;
    absl::StatusOr<std::unique_ptr<SecretStore>> store = SecretStore::Open(options, clock_);
    ASSERT_THAT(store, IsOk());
    store_ = *std::move(store);
  }

  std::string path() const { return tmp_.Join("secrets.db"); }

  absl::StatusOr<StoredPut> Put(const std::string& user, const std::string& provider,
                                const std::string& field, const std::string& value,
                                int64_t expected = 0) {
    return store_->Put(*keyring_, user, provider, field, value,
                       Fingerprint(keyring_->fingerprint_key(), value), expected);
  }

  // The decrypted values of a user, "provider.field" -> value.
  std::map<std::string, std::string> Values(const std::string& user) {
    absl::StatusOr<std::vector<PlainSecret>> plain = store_->DecryptAll(*keyring_, user);
    EXPECT_THAT(plain, IsOk());
    std::map<std::string, std::string> out;
    if (plain.ok()) {
      for (const PlainSecret& secret : *plain) {
        out[secret.meta.provider_id + "." + secret.meta.field_id] =
            std::string(secret.value.view());
      }
    }
    return out;
  }

  // Runs `sql` on a second connection, as an attacker with write access to the file would.
  void Tamper(const std::string& sql, const std::string& blob = "") {
    absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(path(), SqliteOptions{});
    ASSERT_THAT(db, IsOk());
    absl::StatusOr<Statement> statement = (*db)->Prepare(sql);
    ASSERT_THAT(statement, IsOk());
    if (!blob.empty()) {
      ASSERT_THAT(statement->BindBlob(1, blob), IsOk());
    }
    ASSERT_THAT(statement->Step(), IsOk());
  }

  std::string ReadBlob(const std::string& sql) {
    absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(path(), SqliteOptions{});
    EXPECT_THAT(db, IsOk());
    absl::StatusOr<Statement> statement = (*db)->Prepare(sql);
    EXPECT_THAT(statement, IsOk());
    absl::StatusOr<bool> row = statement->Step();
    EXPECT_TRUE(row.ok() && *row);
    return statement->ColumnBlob(0);
  }

  tidepool::testing::ScopedTempDir tmp_;
  tidepool::testing::FakeClock clock_{absl::FromUnixSeconds(1700000000)};
  std::unique_ptr<Keyring> keyring_;
  std::unique_ptr<SecretStore> store_;
};

TEST_F(SecretStoreTest, PutStoresCiphertextAndMetadataOnly) {
  absl::StatusOr<StoredPut> put = Put(kUserA, "anthropic", "api_key", Value(1));
  ASSERT_THAT(put, IsOk());
  EXPECT_EQ(put->secret.version, 1);
  EXPECT_EQ(put->secret.create_time, clock_.Now());
  EXPECT_EQ(put->secret.fingerprint, Fingerprint(keyring_->fingerprint_key(), Value(1)));
  EXPECT_EQ(put->sequence, 1u);
  EXPECT_THAT(Values(kUserA), ElementsAre(std::pair{"anthropic.api_key", Value(1)}));
  absl::StatusOr<std::optional<SecretMeta>> meta = store_->Get(kUserA, "anthropic", "api_key");
  ASSERT_THAT(meta, IsOk());
  ASSERT_TRUE(meta->has_value());
  EXPECT_EQ((*meta)->version, 1);
  // The value never reaches the database file (or its WAL) in the clear.
  store_.reset();
  for (const std::string& file : {path(), path() + "-wal"}) {
    absl::StatusOr<std::string> bytes = ReadFileToString(file);
    if (bytes.ok()) {
      EXPECT_EQ(bytes->find(Value(1)), std::string::npos) << file;
    }
  }
}

TEST_F(SecretStoreTest, VersionsIncreaseAndAreNeverReusedAfterADelete) {
  ASSERT_THAT(Put(kUserA, "anthropic", "api_key", Value(1)), IsOk());
  clock_.Advance(absl::Minutes(1));
  absl::StatusOr<StoredPut> second = Put(kUserA, "anthropic", "api_key", Value(2));
  ASSERT_THAT(second, IsOk());
  EXPECT_EQ(second->secret.version, 2);
  EXPECT_EQ(second->secret.create_time, clock_.Now() - absl::Minutes(1));
  EXPECT_EQ(second->secret.update_time, clock_.Now());
  ASSERT_THAT(store_->Delete(kUserA, "anthropic", "api_key", 0), IsOk());
  absl::StatusOr<StoredPut> third = Put(kUserA, "anthropic", "api_key", Value(3));
  ASSERT_THAT(third, IsOk());
  EXPECT_EQ(third->secret.version, 3);
  EXPECT_EQ(*store_->LastVersion(kUserA, "anthropic", "api_key"), 3);
}

TEST_F(SecretStoreTest, ConditionalPutsAndDeletes) {
  EXPECT_THAT(Put(kUserA, "anthropic", "api_key", Value(1), 4),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("not stored")));
  ASSERT_THAT(Put(kUserA, "anthropic", "api_key", Value(1), -1), IsOk());
  EXPECT_THAT(Put(kUserA, "anthropic", "api_key", Value(2), -1),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(Put(kUserA, "anthropic", "api_key", Value(2), 2),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("at version 1")));
  ASSERT_THAT(Put(kUserA, "anthropic", "api_key", Value(2), 1), IsOk());
  EXPECT_THAT(store_->Delete(kUserA, "anthropic", "api_key", 1),
              StatusIs(absl::StatusCode::kAborted));
  EXPECT_THAT(store_->Delete(kUserA, "anthropic", "api_key", 2), IsOk());
  EXPECT_THAT(store_->Delete(kUserA, "anthropic", "api_key", 0),
              StatusIs(absl::StatusCode::kNotFound, kNoSuchSecret));
  // A failed condition changed nothing: one value, two puts and one delete in the feed.
  EXPECT_THAT(Values(kUserA), IsEmpty());
  EXPECT_EQ(store_->LatestSequence(), 3u);
}

TEST_F(SecretStoreTest, DeletingAProviderRemovesAllItsFields) {
  ASSERT_THAT(Put(kUserA, "slack", "bot_token", Value(1)), IsOk());
  ASSERT_THAT(Put(kUserA, "slack", "app_token", Value(2)), IsOk());
  ASSERT_THAT(Put(kUserA, "github", "token", Value(3)), IsOk());
  absl::StatusOr<StoredDelete> deleted = store_->Delete(kUserA, "slack", "", 0);
  ASSERT_THAT(deleted, IsOk());
  EXPECT_EQ(deleted->deleted.size(), 2u);
  EXPECT_THAT(Values(kUserA), ElementsAre(std::pair{"github.token", Value(3)}));
}

TEST_F(SecretStoreTest, PerUserLimitIsEnforcedPerUser) {
  Reopen(/*max_per_user=*/2);
  ASSERT_THAT(Put(kUserA, "anthropic", "api_key", Value(1)), IsOk());
  ASSERT_THAT(Put(kUserA, "openai", "api_key", Value(2)), IsOk());
  EXPECT_THAT(
      Put(kUserA, "groq", "api_key", Value(3)),
      StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("the most allowed per user (2)")));
  // Replacing a stored field is not a new secret; other users are unaffected.
  EXPECT_THAT(Put(kUserA, "openai", "api_key", Value(4)), IsOk());
  EXPECT_THAT(Put(kUserB, "groq", "api_key", Value(5)), IsOk());
  EXPECT_EQ(*store_->Count(kUserA), 2);
}

TEST_F(SecretStoreTest, ListIsOrderedAndScopedToTheUser) {
  ASSERT_THAT(Put(kUserA, "openai", "api_key", Value(1)), IsOk());
  ASSERT_THAT(Put(kUserA, "anthropic", "api_key", Value(2)), IsOk());
  ASSERT_THAT(Put(kUserB, "brave", "api_key", Value(3)), IsOk());
  absl::StatusOr<std::vector<SecretMeta>> listed = store_->List(kUserA, "");
  ASSERT_THAT(listed, IsOk());
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].provider_id, "anthropic");
  EXPECT_EQ((*listed)[1].provider_id, "openai");
  EXPECT_THAT(*store_->List(kUserA, "brave"), IsEmpty());
  EXPECT_EQ(store_->List(kUserA, "openai")->size(), 1u);
}

TEST_F(SecretStoreTest, ChangeFeedIsOrderedFilteredAndBounded) {
  Reopen(5, kMaxEncryptionsPerKey, /*retention=*/3);
  ASSERT_THAT(Put(kUserA, "anthropic", "api_key", Value(1)), IsOk());
  ASSERT_THAT(Put(kUserB, "openai", "api_key", Value(2)), IsOk());
  ASSERT_THAT(store_->Delete(kUserA, "anthropic", "api_key", 0), IsOk());
  absl::StatusOr<std::vector<SecretChange>> a = store_->ChangesAfter(0, kUserA, 10);
  ASSERT_THAT(a, IsOk());
  ASSERT_EQ(a->size(), 2u);
  EXPECT_EQ((*a)[0].kind, ChangeKind::kPut);
  EXPECT_EQ((*a)[1].kind, ChangeKind::kDelete);
  EXPECT_EQ((*a)[1].sequence, 3u);
  EXPECT_EQ(*store_->OldestRetainedSequence(), 1u);
  ASSERT_THAT(Put(kUserB, "openai", "api_key", Value(3)), IsOk());
  EXPECT_EQ(*store_->OldestRetainedSequence(), 2u);
  EXPECT_EQ(store_->ChangesAfter(0, "", 10)->size(), 3u);
  // Sequences survive a restart and keep increasing.
  Reopen(5, kMaxEncryptionsPerKey, 3);
  EXPECT_EQ(store_->LatestSequence(), 4u);
  EXPECT_EQ(store_->WaitForNewer(3, absl::InfinitePast()), 4u);
}

TEST_F(SecretStoreTest, DataKeyIsReplacedBeforeItsBudgetIsSpent) {
  Reopen(/*max_per_user=*/3, /*data_key_budget=*/4);
  ASSERT_THAT(Put(kUserA, "anthropic", "api_key", Value(1)), IsOk());
  ASSERT_THAT(Put(kUserA, "openai", "api_key", Value(2)), IsOk());
  ASSERT_THAT(Put(kUserA, "groq", "api_key", Value(3)), IsOk());
  absl::StatusOr<StoredPut> fourth = Put(kUserA, "groq", "api_key", Value(4));
  ASSERT_THAT(fourth, IsOk());
  EXPECT_FALSE(fourth->data_key_replaced);
  absl::StatusOr<StoredPut> fifth = Put(kUserA, "anthropic", "api_key", Value(5));
  ASSERT_THAT(fifth, IsOk());
  EXPECT_TRUE(fifth->data_key_replaced);
  EXPECT_THAT(Values(kUserA), ElementsAre(std::pair{"anthropic.api_key", Value(5)},
                                          std::pair{"groq.api_key", Value(4)},
                                          std::pair{"openai.api_key", Value(2)}));
  // Two wraps under term 1: the first data key and its replacement.
  EXPECT_EQ(*store_->TermEncryptions(1), 2);
}

TEST_F(SecretStoreTest, KeyringTermBookkeepingOnlyGoesUp) {
  EXPECT_EQ(*store_->HighestKeyringTerm(), 0u);
  ASSERT_THAT(store_->RecordKeyringTerm(3), IsOk());
  ASSERT_THAT(store_->RecordKeyringTerm(2), IsOk());
  EXPECT_EQ(*store_->HighestKeyringTerm(), 3u);
  ASSERT_THAT(Put(kUserA, "anthropic", "api_key", Value(1)), IsOk());
  EXPECT_EQ(*store_->HighestDataKeyTerm(), 1u);
  EXPECT_EQ(*store_->TermEncryptions(1), 1);
  Reopen();
  EXPECT_EQ(*store_->TermEncryptions(1), 1);
}

TEST_F(SecretStoreTest, RewrapMovesEveryDataKeyToTheActiveTerm) {
  ASSERT_THAT(Put(kUserA, "anthropic", "api_key", Value(1)), IsOk());
  ASSERT_THAT(Put(kUserB, "openai", "api_key", Value(2)), IsOk());
  keyring_ = std::make_unique<Keyring>(*keyring_->WithNewTerm(clock_.Now()));
  EXPECT_EQ(*store_->RewrapDataKeys(*keyring_, 1), 1);
  EXPECT_EQ(*store_->RewrapDataKeys(*keyring_, 1), 1);
  EXPECT_EQ(*store_->RewrapDataKeys(*keyring_, 1), 0);
  EXPECT_EQ(*store_->TermEncryptions(2), 2);
  EXPECT_EQ(*store_->HighestDataKeyTerm(), 2u);
  EXPECT_EQ(Values(kUserA).at("anthropic.api_key"), Value(1));
  EXPECT_EQ(Values(kUserB).at("openai.api_key"), Value(2));
}

TEST_F(SecretStoreTest, AFailedPutChangesNothing) {
  ASSERT_THAT(Put(kUserA, "anthropic", "api_key", Value(1)), IsOk());
  // A keyring that lacks the user's data-key term: the put fails inside its transaction.
  absl::StatusOr<Keyring> stranger = Keyring::Create(clock_.Now());
  absl::StatusOr<Keyring> newer = stranger->WithNewTerm(clock_.Now());
  ASSERT_THAT(newer, IsOk());
  EXPECT_THAT(store_->Put(*newer, kUserA, "openai", "api_key", Value(2), "fp", 0),
              StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(Values(kUserA), ElementsAre(std::pair{"anthropic.api_key", Value(1)}));
  EXPECT_EQ(*store_->LastVersion(kUserA, "openai", "api_key"), 0);
  EXPECT_EQ(store_->LatestSequence(), 1u);
  EXPECT_EQ(store_->ChangesAfter(0, "", 10)->size(), 1u);
}

TEST_F(SecretStoreTest, AlteredCiphertextNonceOrTagFailsClosed) {
  ASSERT_THAT(Put(kUserA, "anthropic", "api_key", Value(1)), IsOk());
  const std::string original = ReadBlob("SELECT ciphertext FROM secrets");
  for (size_t i : {size_t{0}, size_t{1}, size_t{12}, size_t{13}, original.size() / 2,
                   original.size() - 16, original.size() - 1}) {
    std::string altered = original;
    altered[i] = static_cast<char>(altered[i] ^ 0x01);
    Tamper("UPDATE secrets SET ciphertext = ?1", altered);
    EXPECT_THAT(store_->DecryptAll(*keyring_, kUserA),
                StatusIs(absl::StatusCode::kInternal, "a stored secret failed authentication"))
        << "byte " << i;
  }
  Tamper("UPDATE secrets SET ciphertext = ?1", original);
  EXPECT_EQ(Values(kUserA).at("anthropic.api_key"), Value(1));
}

TEST_F(SecretStoreTest, AlteredWrappedKeyOrTermHeaderFailsClosed) {
  ASSERT_THAT(Put(kUserA, "anthropic", "api_key", Value(1)), IsOk());
  keyring_ = std::make_unique<Keyring>(*keyring_->WithNewTerm(clock_.Now()));
  const std::string wrapped = ReadBlob("SELECT wrapped_key FROM data_keys");
  for (size_t i = 0; i < wrapped.size(); ++i) {
    std::string altered = wrapped;
    altered[i] = static_cast<char>(altered[i] ^ 0x80);
    Tamper("UPDATE data_keys SET wrapped_key = ?1", altered);
    EXPECT_THAT(store_->DecryptAll(*keyring_, kUserA), StatusIs(absl::StatusCode::kInternal))
        << "byte " << i;
  }
  Tamper("UPDATE data_keys SET wrapped_key = ?1", wrapped);
  // The term the key is wrapped under is bound too: claiming term 2 does not open it.
  Tamper("UPDATE data_keys SET term = 2");
  EXPECT_THAT(store_->DecryptAll(*keyring_, kUserA), StatusIs(absl::StatusCode::kInternal));
  Tamper("UPDATE data_keys SET generation = 2, term = 1");
  EXPECT_THAT(store_->DecryptAll(*keyring_, kUserA), StatusIs(absl::StatusCode::kInternal));
  Tamper("UPDATE data_keys SET generation = 1");
  EXPECT_EQ(Values(kUserA).at("anthropic.api_key"), Value(1));
  Tamper("UPDATE data_keys SET term = 7");
  EXPECT_THAT(store_->DecryptAll(*keyring_, kUserA),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("term 7")));
}

TEST_F(SecretStoreTest, RowsMovedToAnotherUserProviderFieldOrVersionDoNotOpen) {
  ASSERT_THAT(Put(kUserA, "anthropic", "api_key", Value(1)), IsOk());
  ASSERT_THAT(Put(kUserB, "anthropic", "api_key", Value(2)), IsOk());
  const std::string a_row =
      ReadBlob(absl::StrCat("SELECT ciphertext FROM secrets WHERE user_id = '", kUserA, "'"));
  // A's ciphertext into B's row.
  Tamper(absl::StrCat("UPDATE secrets SET ciphertext = ?1 WHERE user_id = '", kUserB, "'"), a_row);
  EXPECT_THAT(store_->DecryptAll(*keyring_, kUserB), StatusIs(absl::StatusCode::kInternal));
  // A's data key moved along with it does not help: it is bound to A.
  const std::string a_key =
      ReadBlob(absl::StrCat("SELECT wrapped_key FROM data_keys WHERE user_id = '", kUserA, "'"));
  Tamper(absl::StrCat("UPDATE data_keys SET wrapped_key = ?1 WHERE user_id = '", kUserB, "'"),
         a_key);
  EXPECT_THAT(store_->DecryptAll(*keyring_, kUserB), StatusIs(absl::StatusCode::kInternal));
  // Within A: under another provider, field or version.
  Tamper(absl::StrCat("UPDATE secrets SET provider_id = 'openai' WHERE user_id = '", kUserA, "'"));
  EXPECT_THAT(store_->DecryptAll(*keyring_, kUserA), StatusIs(absl::StatusCode::kInternal));
  Tamper(
      absl::StrCat("UPDATE secrets SET provider_id = 'anthropic', field_id = 'token' "
                   "WHERE user_id = '",
                   kUserA, "'"));
  EXPECT_THAT(store_->DecryptAll(*keyring_, kUserA), StatusIs(absl::StatusCode::kInternal));
  Tamper(absl::StrCat("UPDATE secrets SET field_id = 'api_key', version = 2 WHERE user_id = '",
                      kUserA, "'"));
  EXPECT_THAT(store_->DecryptAll(*keyring_, kUserA), StatusIs(absl::StatusCode::kInternal));
  Tamper(absl::StrCat("UPDATE secrets SET version = 1 WHERE user_id = '", kUserA, "'"));
  EXPECT_EQ(Values(kUserA).at("anthropic.api_key"), Value(1));
}

TEST_F(SecretStoreTest, DatabaseIsOwnerOnlyWalWithFullSync) {
  ASSERT_THAT(Put(kUserA, "anthropic", "api_key", Value(1)), IsOk());
  struct stat st {};
  ASSERT_EQ(::stat(path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  absl::StatusOr<std::unique_ptr<SqliteDb>> db = SqliteDb::Open(path(), SqliteOptions{});
  ASSERT_THAT(db, IsOk());
  EXPECT_EQ(*(*db)->JournalMode(), "wal");
}

// --- kill -9 during writes -------------------------------------------------------------------

constexpr char kCrashChildEnv[] = "TIDEPOOL_SECRETS_CRASH_CHILD";
constexpr int kCrashUsers = 4;

std::string CrashMasterKey() { return std::string(32, '\x5a'); }
std::string CrashUser(int n) { return absl::StrCat("u_", std::string(25, 'c'), n); }
std::string CrashValue(int iteration) {
  return absl::StrCat("sk-ant-crash-", iteration, "-abcdefghijklmnopqrstuvwxyz");
}

// Not a test of its own: the writer that KillNineLosesNoAcknowledgedPut starts as a separate
// process (this binary, filtered to this test). It puts values in a loop, prints "ack ..." for
// every acknowledged put, and after `kill_after` acknowledgements SIGKILLs itself from another
// thread while the next put is in flight.
TEST(SecretStoreCrashTest, ChildWriter) {
  const char* spec = std::getenv(kCrashChildEnv);
  if (spec == nullptr) {
    GTEST_SKIP() << "runs only as the child process of KillNineLosesNoAcknowledgedPut";
  }
  std::vector<std::string> parts = absl::StrSplit(spec, '|');
  ASSERT_EQ(parts.size(), 3u);
  const std::string dir = parts[0];
  int kill_after = 0;
  int first_iteration = 0;
  ASSERT_TRUE(absl::SimpleAtoi(parts[1], &kill_after));
  ASSERT_TRUE(absl::SimpleAtoi(parts[2], &first_iteration));
  absl::StatusOr<Keyring> keyring = LoadKeyringFile(dir + "/keyring", CrashMasterKey());
  ASSERT_THAT(keyring, IsOk());
  RealClock clock;
  SecretStoreOptions options;
  options.path = dir + "/secrets.db";
  absl::StatusOr<std::unique_ptr<SecretStore>> store = SecretStore::Open(options, clock);
  ASSERT_THAT(store, IsOk());
  std::fflush(stdout);
  for (int i = first_iteration;; ++i) {
    const std::string user = CrashUser(i % kCrashUsers);
    const std::string field = (i / kCrashUsers) % 2 == 0 ? "api_key" : "token";
    const std::string provider = field == "api_key" ? "anthropic" : "github";
    absl::StatusOr<StoredPut> put =
        (*store)->Put(*keyring, user, provider, field, CrashValue(i), "fingerprint", 0);
    ASSERT_THAT(put, IsOk());
    const std::string line = absl::StrCat("ack ", i, " ", put->secret.version, "\n");
    ASSERT_EQ(::write(1, line.data(), line.size()), static_cast<ssize_t>(line.size()));
    if (i - first_iteration + 1 == kill_after) {
      std::thread([] { ::kill(::getpid(), SIGKILL); }).detach();
    }
  }
}

TEST(SecretStoreCrashTest, KillNineLosesNoAcknowledgedPut) {
  tidepool::testing::ScopedTempDir tmp;
  {
    absl::StatusOr<Keyring> keyring = Keyring::Create(absl::FromUnixSeconds(1700000000));
    ASSERT_THAT(keyring, IsOk());
    ASSERT_THAT(SaveKeyringFile(tmp.Join("keyring"), *keyring, CrashMasterKey()), IsOk());
  }
  char self[PATH_MAX] = {};
  ASSERT_GT(::readlink("/proc/self/exe", self, sizeof(self) - 1), 0);
  // The last acknowledged iteration per (user, field), and the version it got.
  std::map<std::pair<int, std::string>, std::pair<int, int64_t>> acked;
  int next_iteration = 0;
  for (int kill_after : {7, 23, 61}) {
    ::setenv(kCrashChildEnv, absl::StrCat(tmp.path(), "|", kill_after, "|", next_iteration).c_str(),
             1);
    absl::StatusOr<std::unique_ptr<tidepool::testing::Subprocess>> child =
        tidepool::testing::Subprocess::Start(
            {self, "--gtest_filter=SecretStoreCrashTest.ChildWriter"}, tmp.path());
    ::unsetenv(kCrashChildEnv);
    ASSERT_THAT(child, IsOk());
    absl::StatusOr<int> exit_code = (*child)->Wait(absl::Seconds(60));
    ASSERT_THAT(exit_code, IsOk());
    ASSERT_EQ(*exit_code, 128 + SIGKILL) << (*child)->Stdout() << (*child)->Stderr();
    int acks = 0;
    for (absl::string_view line : absl::StrSplit((*child)->Stdout(), '\n')) {
      std::vector<std::string> words = absl::StrSplit(line, ' ');
      int iteration = 0;
      int64_t version = 0;
      if (words.size() != 3 || words[0] != "ack" || !absl::SimpleAtoi(words[1], &iteration) ||
          !absl::SimpleAtoi(words[2], &version)) {
        continue;
      }
      const std::string field = (iteration / kCrashUsers) % 2 == 0 ? "api_key" : "token";
      acked[{iteration % kCrashUsers, field}] = {iteration, version};
      next_iteration = std::max(next_iteration, iteration + 1);
      ++acks;
    }
    EXPECT_GE(acks, kill_after) << "round " << kill_after;

    // Every acknowledged put is there, whole: the stored value is the acknowledged one or one
    // written after it (a put in flight that committed before the kill).
    absl::StatusOr<Keyring> keyring = LoadKeyringFile(tmp.Join("keyring"), CrashMasterKey());
    ASSERT_THAT(keyring, IsOk());
    RealClock clock;
    SecretStoreOptions options;
    options.path = tmp.Join("secrets.db");
    absl::StatusOr<std::unique_ptr<SecretStore>> store = SecretStore::Open(options, clock);
    ASSERT_THAT(store, IsOk());
    for (const auto& [key, last] : acked) {
      const auto& [user, field] = key;
      absl::StatusOr<std::vector<PlainSecret>> plain =
          (*store)->DecryptAll(*keyring, CrashUser(user));
      ASSERT_THAT(plain, IsOk());
      const PlainSecret* found = nullptr;
      for (const PlainSecret& secret : *plain) {
        if (secret.meta.field_id == field) {
          found = &secret;
        }
      }
      ASSERT_NE(found, nullptr) << "user " << user << " " << field << " lost";
      const std::string value(found->value.view());
      if (found->meta.version == last.second) {
        EXPECT_EQ(value, CrashValue(last.first));
      } else {
        EXPECT_EQ(found->meta.version, last.second + 1);
        // The next iteration for the same user and field.
        EXPECT_EQ(value, CrashValue(last.first + 2 * kCrashUsers));
        next_iteration = std::max(next_iteration, last.first + 2 * kCrashUsers + 1);
      }
    }
    // The change feed has one entry per stored version, without gaps.
    EXPECT_EQ((*store)->ChangesAfter(0, "", 100000)->size(), (*store)->LatestSequence());
  }
}

}  // namespace
}  // namespace tidepool::secrets
