#include "services/audit/audit_log.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "lib/crypto/crypto.h"
#include "lib/sqlite_store.h"
#include "services/audit/checkpoint_log.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::audit {
namespace {

using google::protobuf::util::TimeUtil;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

common::v1::AuditEvent MakeEvent(int i, const std::string& action = "auth.sign_in",
                                 const std::string& actor = "u_alice",
                                 common::v1::Outcome outcome = common::v1::OUTCOME_SUCCESS) {
  common::v1::AuditEvent event;
  event.set_event_id(absl::StrCat("ev_", i));
  event.mutable_actor()->set_kind(common::v1::ACTOR_KIND_USER);
  event.mutable_actor()->set_id(actor);
  event.set_action(action);
  event.set_outcome(outcome);
  event.set_subject_user_id(actor);
  event.set_workspace_id(absl::StrCat("ws_", i % 3));
  (*event.mutable_attributes())["n"] = std::to_string(i);
  return event;
}

class AuditLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.dir = tmp_.Join("audit");
    options_.append_only_checkpoints = false;  // so the temp dir can be removed
    options_.checkpoint_every_records = 1000;
    Reopen();
  }

  void Reopen() {
    log_.reset();
    absl::StatusOr<std::unique_ptr<AuditLog>> log = AuditLog::Open(options_, clock_);
    ASSERT_THAT(log, IsOk());
    log_ = *std::move(log);
  }

  // Appends `n` events numbered from `first`, in batches of `batch`.
  void AppendMany(int first, int n, int batch = 100) {
    for (int i = first; i < first + n; i += batch) {
      std::vector<common::v1::AuditEvent> events;
      for (int k = i; k < std::min(first + n, i + batch); ++k) {
        events.push_back(MakeEvent(k));
      }
      ASSERT_THAT(log_->Append(std::move(events), "auth"), IsOk());
    }
  }

  // A raw connection to the store, as an attacker with file access would have, with the
  // append-only triggers dropped.
  std::unique_ptr<SqliteDb> Tamper() {
    absl::StatusOr<std::unique_ptr<SqliteDb>> db =
        SqliteDb::Open(options_.dir + "/records.db", SqliteOptions{});
    EXPECT_THAT(db, IsOk());
    EXPECT_THAT((*db)->Exec("DROP TRIGGER IF EXISTS records_no_update;"
                            "DROP TRIGGER IF EXISTS records_no_delete;"),
                IsOk());
    return *std::move(db);
  }

  static std::string Blob(SqliteDb& db, int64_t seq, const char* column = "record") {
    absl::StatusOr<Statement> stmt =
        db.Prepare(absl::StrCat("SELECT ", column, " FROM records WHERE seq = ?"));
    EXPECT_THAT(stmt, IsOk());
    EXPECT_THAT(stmt->Bind(1, seq), IsOk());
    EXPECT_THAT(stmt->Step(), IsOk());
    return stmt->ColumnBlob(0);
  }

  static void SetBlob(SqliteDb& db, int64_t seq, const std::string& value,
                      const char* column = "record") {
    absl::StatusOr<Statement> stmt =
        db.Prepare(absl::StrCat("UPDATE records SET ", column, " = ? WHERE seq = ?"));
    ASSERT_THAT(stmt, IsOk());
    ASSERT_THAT(stmt->BindBlob(1, value), IsOk());
    ASSERT_THAT(stmt->Bind(2, seq), IsOk());
    ASSERT_THAT(stmt->Step(), IsOk());
  }

  // Appends a line to the checkpoint file, as someone with file access could.
  void AppendCheckpointLine(const SignedCheckpoint& checkpoint) {
    absl::StatusOr<std::unique_ptr<CheckpointFile>> file =
        CheckpointFile::Open(options_.dir + "/checkpoints.log", false);
    ASSERT_THAT(file, IsOk());
    ASSERT_THAT((*file)->Append(checkpoint), IsOk());
  }

  // A checkpoint over the current head signed by a fresh key, claiming `key_id` (its own when
  // empty).
  SignedCheckpoint ForeignCheckpoint(const std::string& key_id) {
    absl::StatusOr<crypto::Ed25519PrivateKey> other = crypto::Ed25519PrivateKey::Generate();
    EXPECT_THAT(other, IsOk());
    absl::StatusOr<v1::Checkpoint> real = log_->LatestCheckpoint();
    EXPECT_THAT(real, IsOk());
    SignedCheckpoint forged;
    forged.tree_size = real->tree_size();
    forged.head_hash = real->head_hash();
    forged.unix_seconds = 1'800'000'000;
    forged.key_id = key_id.empty() ? KeyIdOf(other->PublicKey()) : key_id;
    forged.signature =
        *other->Sign(CheckpointNote(forged.tree_size, forged.head_hash, forged.unix_seconds));
    return forged;
  }

  v1::VerifyResponse VerifyAll() {
    absl::StatusOr<v1::VerifyResponse> response = log_->Verify(1, 0);
    EXPECT_THAT(response, IsOk());
    return response.ok() ? *response : v1::VerifyResponse{};
  }

  void ExpectBroken(uint64_t sequence, v1::VerifyFailure failure) {
    v1::VerifyResponse response = VerifyAll();
    EXPECT_EQ(response.result(), v1::VERIFY_RESULT_BROKEN) << response.DebugString();
    EXPECT_EQ(response.first_bad_sequence(), sequence) << response.DebugString();
    EXPECT_EQ(response.failure(), failure) << response.DebugString();
  }

  tidepool::testing::ScopedTempDir tmp_;
  tidepool::testing::FakeClock clock_{absl::FromUnixSeconds(1'800'000'000)};
  AuditLogOptions options_;
  std::unique_ptr<AuditLog> log_;
};

TEST_F(AuditLogTest, AppendAssignsSequencesServerFieldsAndAChain) {
  common::v1::AuditEvent backdated = MakeEvent(1);
  *backdated.mutable_client_time() = TimeUtil::SecondsToTimestamp(1);  // 1970: kept as data
  absl::StatusOr<AppendResult> result = log_->Append({backdated, MakeEvent(2)}, "auth");
  ASSERT_THAT(result, IsOk());
  EXPECT_THAT(result->sequences, ElementsAre(1, 2));
  absl::StatusOr<QueryPage> page = log_->Query({}, 10, "");
  ASSERT_THAT(page, IsOk());
  ASSERT_EQ(page->events.size(), 2u);
  const common::v1::AuditEvent& second = page->events[0];  // newest first
  const common::v1::AuditEvent& first = page->events[1];
  EXPECT_EQ(first.sequence(), 1u);
  EXPECT_EQ(first.source_service(), "auth");
  EXPECT_EQ(TimeUtil::TimestampToSeconds(first.server_time()), 1'800'000'000);
  EXPECT_EQ(TimeUtil::TimestampToSeconds(first.client_time()), 1);
  EXPECT_EQ(first.prev_hash(), std::string(32, '\0'));
  EXPECT_EQ(first.hash(), RecordHash(first));
  EXPECT_EQ(second.prev_hash(), first.hash());
  EXPECT_EQ(log_->head_sequence(), 2u);
}

TEST_F(AuditLogTest, ReplayedEventIdsAreStoredOnce) {
  ASSERT_THAT(log_->Append({MakeEvent(1), MakeEvent(2)}, "auth"), IsOk());
  absl::StatusOr<AppendResult> replay =
      log_->Append({MakeEvent(2), MakeEvent(3), MakeEvent(3), MakeEvent(1)}, "auth");
  ASSERT_THAT(replay, IsOk());
  EXPECT_THAT(replay->sequences, ElementsAre(2, 3, 3, 1));
  EXPECT_EQ(log_->head_sequence(), 3u);
  EXPECT_EQ(VerifyAll().result(), v1::VERIFY_RESULT_OK);
}

TEST_F(AuditLogTest, ARejectedBatchStoresNothing) {
  common::v1::AuditEvent bad = MakeEvent(2);
  bad.set_action("Not An Action");
  EXPECT_THAT(log_->Append({MakeEvent(1), bad, MakeEvent(3)}, "auth"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("event 1: action")));
  EXPECT_THAT(log_->Append({}, "auth"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(log_->head_sequence(), 0u);
  absl::StatusOr<QueryPage> page = log_->Query({}, 10, "");
  ASSERT_THAT(page, IsOk());
  EXPECT_TRUE(page->events.empty());
}

TEST_F(AuditLogTest, QueryFiltersNewestFirstAndPaginates) {
  ASSERT_THAT(
      log_->Append(
          {MakeEvent(1, "auth.sign_in", "u_alice"),
           MakeEvent(2, "auth.sign_in_failed", "u_bob", common::v1::OUTCOME_FAILURE),
           MakeEvent(3, "secrets.put", "u_alice"), MakeEvent(4, "auth.signature", "u_carol")},
          "auth"),
      IsOk());
  clock_.Advance(absl::Hours(1));
  ASSERT_THAT(log_->Append({MakeEvent(5, "auth.sign_in", "u_bob")}, "auth"), IsOk());

  auto sequences = [&](const v1::AuditFilter& filter) {
    std::vector<uint64_t> out;
    absl::StatusOr<QueryPage> page = log_->Query(filter, 100, "");
    EXPECT_THAT(page, IsOk());
    for (const auto& event : page->events) {
      out.push_back(event.sequence());
    }
    return out;
  };
  v1::AuditFilter filter;
  filter.set_actor_id("u_alice");
  EXPECT_THAT(sequences(filter), ElementsAre(3, 1));
  filter.Clear();
  filter.set_action_prefix("auth");
  EXPECT_THAT(sequences(filter), ElementsAre(5, 4, 2, 1));
  filter.set_action_prefix("auth.sign_in");  // itself, not auth.sign_in_failed
  EXPECT_THAT(sequences(filter), ElementsAre(5, 1));
  filter.set_action_prefix("auth.sign");  // prefixes end at a dot boundary
  EXPECT_THAT(sequences(filter), ElementsAre());
  filter.Clear();
  filter.set_outcome(common::v1::OUTCOME_FAILURE);
  EXPECT_THAT(sequences(filter), ElementsAre(2));
  filter.Clear();
  filter.set_subject_user_id("u_bob");
  filter.set_workspace_id("ws_2");
  EXPECT_THAT(sequences(filter), ElementsAre(5, 2));
  filter.Clear();
  *filter.mutable_start_time() = TimeUtil::SecondsToTimestamp(1'800'000'000 + 60);
  EXPECT_THAT(sequences(filter), ElementsAre(5));
  filter.Clear();
  *filter.mutable_end_time() = TimeUtil::SecondsToTimestamp(1'800'000'000 + 60);
  EXPECT_THAT(sequences(filter), ElementsAre(4, 3, 2, 1));

  // Pages of two, with tokens bound to their filter.
  filter.Clear();
  absl::StatusOr<QueryPage> page = log_->Query(filter, 2, "");
  ASSERT_THAT(page, IsOk());
  ASSERT_EQ(page->events.size(), 2u);
  EXPECT_EQ(page->events[0].sequence(), 5u);
  absl::StatusOr<QueryPage> next = log_->Query(filter, 2, page->next_page_token);
  ASSERT_THAT(next, IsOk());
  EXPECT_EQ(next->events[0].sequence(), 3u);
  absl::StatusOr<QueryPage> last = log_->Query(filter, 2, next->next_page_token);
  ASSERT_THAT(last, IsOk());
  ASSERT_EQ(last->events.size(), 1u);
  EXPECT_TRUE(last->next_page_token.empty());
  v1::AuditFilter other;
  other.set_actor_id("u_alice");
  EXPECT_THAT(log_->Query(other, 2, page->next_page_token),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(log_->Query(filter, 2, "forged!"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(log_->Query(filter, -1, ""), StatusIs(absl::StatusCode::kInvalidArgument));
  filter.set_action_prefix("Auth");
  EXPECT_THAT(log_->Query(filter, 10, ""), StatusIs(absl::StatusCode::kInvalidArgument));
  filter.Clear();
  *filter.mutable_start_time() = TimeUtil::SecondsToTimestamp(10);
  *filter.mutable_end_time() = TimeUtil::SecondsToTimestamp(5);
  EXPECT_THAT(log_->Query(filter, 10, ""), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(AuditLogTest, ExportIsOldestFirstUpToTheHead) {
  AppendMany(1, 2500);
  std::vector<uint64_t> seen;
  ASSERT_THAT(log_->Export({},
                           [&](const common::v1::AuditEvent& e) {
                             seen.push_back(e.sequence());
                             return true;
                           }),
              IsOk());
  ASSERT_EQ(seen.size(), 2500u);
  for (size_t i = 0; i < seen.size(); ++i) {
    ASSERT_EQ(seen[i], i + 1);
  }
  int count = 0;
  EXPECT_THAT(log_->Export({}, [&](const common::v1::AuditEvent&) { return ++count < 10; }),
              StatusIs(absl::StatusCode::kCancelled));
}

TEST_F(AuditLogTest, CheckpointsEveryThousandRecordsAndEveryInterval) {
  EXPECT_THAT(log_->LatestCheckpoint(), StatusIs(absl::StatusCode::kNotFound));
  AppendMany(1, 999);
  EXPECT_THAT(log_->LatestCheckpoint(), StatusIs(absl::StatusCode::kNotFound));
  AppendMany(1000, 1);
  absl::StatusOr<v1::Checkpoint> checkpoint = log_->LatestCheckpoint();
  ASSERT_THAT(checkpoint, IsOk());
  EXPECT_EQ(checkpoint->tree_size(), 1000u);

  AppendMany(1001, 5);
  ASSERT_THAT(log_->MaybeCheckpoint(false), IsOk());
  EXPECT_EQ(log_->LatestCheckpoint()->tree_size(), 1000u);  // not due yet
  clock_.Advance(absl::Seconds(60));
  ASSERT_THAT(log_->MaybeCheckpoint(false), IsOk());
  checkpoint = log_->LatestCheckpoint();
  ASSERT_THAT(checkpoint, IsOk());
  EXPECT_EQ(checkpoint->tree_size(), 1005u);
  // The checkpoint is a signed note an outsider can check with the public key.
  const std::string note = checkpoint->signed_note();
  EXPECT_THAT(note, HasSubstr("tidepool-audit-checkpoint/v1\n1005\n"));
  const std::string keys =
      tidepool::testing::ReadFileOrEmpty(options_.dir + "/checkpoint_keys.txt");
  EXPECT_THAT(keys, HasSubstr(checkpoint->key_id()));
  EXPECT_EQ(VerifyAll().verified_checkpoint_count(), 2u);
}

TEST_F(AuditLogTest, IntactLogVerifiesAndRangesWork) {
  AppendMany(1, 2100);
  v1::VerifyResponse all = VerifyAll();
  EXPECT_EQ(all.result(), v1::VERIFY_RESULT_OK) << all.DebugString();
  EXPECT_EQ(all.verified_record_count(), 2100u);
  EXPECT_EQ(all.end_sequence(), 2100u);
  absl::StatusOr<v1::VerifyResponse> range = log_->Verify(1500, 1600);
  ASSERT_THAT(range, IsOk());
  EXPECT_EQ(range->result(), v1::VERIFY_RESULT_OK);
  EXPECT_EQ(range->verified_record_count(), 101u);
  EXPECT_THAT(log_->Verify(0, 0), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(log_->Verify(10, 5), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(log_->Verify(5000, 0), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(AuditLogTest, TheStoreRefusesUpdatesAndDeletes) {
  AppendMany(1, 3);
  absl::StatusOr<std::unique_ptr<SqliteDb>> db =
      SqliteDb::Open(options_.dir + "/records.db", SqliteOptions{});
  ASSERT_THAT(db, IsOk());
  EXPECT_THAT((*db)->Exec("UPDATE records SET action = 'x.y' WHERE seq = 2"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT((*db)->Exec("DELETE FROM records WHERE seq = 2"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(AuditLogTest, EveryByteEditOfARecordIsDetectedAndLocated) {
  AppendMany(1, 50);
  std::unique_ptr<SqliteDb> db = Tamper();
  const std::string original = Blob(*db, 17);
  for (size_t i = 0; i < original.size(); ++i) {
    std::string edited = original;
    edited[i] = static_cast<char>(edited[i] ^ 0x01);
    SetBlob(*db, 17, edited);
    v1::VerifyResponse response = VerifyAll();
    ASSERT_EQ(response.result(), v1::VERIFY_RESULT_BROKEN) << "byte " << i;
    ASSERT_EQ(response.first_bad_sequence(), 17u) << "byte " << i << response.DebugString();
  }
  SetBlob(*db, 17, original);
  EXPECT_EQ(VerifyAll().result(), v1::VERIFY_RESULT_OK);
}

TEST_F(AuditLogTest, RandomEditsAcrossTheLogAreDetectedAndLocated) {
  AppendMany(1, 300);
  std::unique_ptr<SqliteDb> db = Tamper();
  std::mt19937 random(20261204);  // seeded: the same trials every run
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t seq = 1 + static_cast<int64_t>(random() % 300);
    const char* column = (trial % 5 == 0) ? "hash" : "record";
    const std::string original = Blob(*db, seq, column);
    std::string edited = original;
    edited[random() % edited.size()] ^= static_cast<char>(1 + random() % 255);
    SetBlob(*db, seq, edited, column);
    v1::VerifyResponse response = VerifyAll();
    ASSERT_EQ(response.result(), v1::VERIFY_RESULT_BROKEN) << "trial " << trial;
    ASSERT_EQ(response.first_bad_sequence(), static_cast<uint64_t>(seq)) << "trial " << trial;
    SetBlob(*db, seq, original, column);
  }
  EXPECT_EQ(VerifyAll().result(), v1::VERIFY_RESULT_OK);
}

TEST_F(AuditLogTest, EditingAnIndexedColumnIsDetected) {
  AppendMany(1, 10);
  std::unique_ptr<SqliteDb> db = Tamper();
  // Hide an event from filtered queries by rewriting its indexed actor.
  ASSERT_THAT(db->Exec("UPDATE records SET actor_id = 'u_someone_else' WHERE seq = 4"), IsOk());
  ExpectBroken(4, v1::VERIFY_FAILURE_HASH_MISMATCH);
}

TEST_F(AuditLogTest, DeletedRecordsAreDetected) {
  AppendMany(1, 20);
  std::unique_ptr<SqliteDb> db = Tamper();
  ASSERT_THAT(db->Exec("DELETE FROM records WHERE seq = 7"), IsOk());
  ExpectBroken(7, v1::VERIFY_FAILURE_SEQUENCE_GAP);
  ASSERT_THAT(db->Exec("DELETE FROM records WHERE seq = 1"), IsOk());
  ExpectBroken(1, v1::VERIFY_FAILURE_SEQUENCE_GAP);
}

TEST_F(AuditLogTest, RenumberedRecordsAreDetected) {
  AppendMany(1, 20);
  std::unique_ptr<SqliteDb> db = Tamper();
  // Delete record 7 and close the gap by renumbering everything after it.
  ASSERT_THAT(db->Exec("DELETE FROM records WHERE seq = 7;"
                       "UPDATE records SET seq = seq - 1 WHERE seq > 7;"),
              IsOk());
  ExpectBroken(7, v1::VERIFY_FAILURE_SEQUENCE_ORDER);
}

TEST_F(AuditLogTest, SwappedRecordsAreDetected) {
  AppendMany(1, 20);
  std::unique_ptr<SqliteDb> db = Tamper();
  const std::string a = Blob(*db, 5);
  const std::string b = Blob(*db, 9);
  SetBlob(*db, 5, b);
  SetBlob(*db, 9, a);
  ExpectBroken(5, v1::VERIFY_FAILURE_SEQUENCE_ORDER);
}

TEST_F(AuditLogTest, TruncationBelowASignedCheckpointIsDetectedAndStopsAppends) {
  AppendMany(1, 1200);                                         // checkpoint at 1000
  ASSERT_THAT(log_->MaybeCheckpoint(/*force=*/true), IsOk());  // and at 1200
  std::unique_ptr<SqliteDb> db = Tamper();
  ASSERT_THAT(db->Exec("DELETE FROM records WHERE seq > 1150"), IsOk());
  ExpectBroken(1151, v1::VERIFY_FAILURE_TRUNCATED);
  db.reset();
  Reopen();
  EXPECT_TRUE(log_->tampered());
  EXPECT_THAT(log_->Append({MakeEvent(5000)}, "auth"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("checkpoint")));
  ExpectBroken(1151, v1::VERIFY_FAILURE_TRUNCATED);
}

TEST_F(AuditLogTest, CheckpointsSignedByAnotherKeyAreRejected) {
  AppendMany(1, 10);
  ASSERT_THAT(log_->MaybeCheckpoint(true), IsOk());
  AppendCheckpointLine(ForeignCheckpoint(/*key_id=*/""));  // an unknown key
  ExpectBroken(10, v1::VERIFY_FAILURE_CHECKPOINT_SIGNATURE);
}

TEST_F(AuditLogTest, ACheckpointClaimingTheRealKeyWithABadSignatureIsRejected) {
  AppendMany(1, 10);
  ASSERT_THAT(log_->MaybeCheckpoint(true), IsOk());
  AppendCheckpointLine(ForeignCheckpoint(log_->signing_key_id()));
  ExpectBroken(10, v1::VERIFY_FAILURE_CHECKPOINT_SIGNATURE);
}

TEST_F(AuditLogTest, ForkedAndShrinkingCheckpointsAreRejected) {
  AppendMany(1, 10);
  ASSERT_THAT(log_->MaybeCheckpoint(true), IsOk());
  // Someone holding the real signing key signs another history at size 6.
  absl::StatusOr<CheckpointSigner> signer = CheckpointSigner::LoadOrCreate(
      options_.dir + "/checkpoint_signing.key", options_.dir + "/checkpoint_keys.txt");
  ASSERT_THAT(signer, IsOk());
  absl::StatusOr<SignedCheckpoint> fork =
      signer->Sign(6, crypto::Sha256("another history"), clock_.Now());
  ASSERT_THAT(fork, IsOk());
  AppendCheckpointLine(*fork);
  v1::VerifyResponse response = VerifyAll();
  EXPECT_EQ(response.result(), v1::VERIFY_RESULT_BROKEN);
  EXPECT_EQ(response.first_bad_sequence(), 6u);
  EXPECT_THAT(response.failure(), ::testing::AnyOf(v1::VERIFY_FAILURE_CHECKPOINT_MISMATCH,
                                                   v1::VERIFY_FAILURE_CHECKPOINT_ROLLBACK));
}

// A correctly hashed and signed checkpoint that is smaller than an earlier one is a rollback.
TEST_F(AuditLogTest, RollbackOfCheckpointsIsRejected) {
  AppendMany(1, 10);
  ASSERT_THAT(log_->MaybeCheckpoint(true), IsOk());
  absl::StatusOr<CheckpointSigner> signer = CheckpointSigner::LoadOrCreate(
      options_.dir + "/checkpoint_signing.key", options_.dir + "/checkpoint_keys.txt");
  ASSERT_THAT(signer, IsOk());
  std::unique_ptr<SqliteDb> db = Tamper();
  const std::string hash5 = Blob(*db, 5, "hash");
  absl::StatusOr<SignedCheckpoint> older = signer->Sign(5, hash5, clock_.Now());
  ASSERT_THAT(older, IsOk());
  AppendCheckpointLine(*older);
  ExpectBroken(5, v1::VERIFY_FAILURE_CHECKPOINT_ROLLBACK);
}

TEST_F(AuditLogTest, ReopeningKeepsTheChainAndCoversUncheckpointedRecords) {
  AppendMany(1, 5);
  Reopen();  // an unclean stop: the open signs a checkpoint for the uncovered records
  absl::StatusOr<v1::Checkpoint> checkpoint = log_->LatestCheckpoint();
  ASSERT_THAT(checkpoint, IsOk());
  EXPECT_EQ(checkpoint->tree_size(), 5u);
  AppendMany(6, 5);
  EXPECT_EQ(log_->head_sequence(), 10u);
  EXPECT_EQ(VerifyAll().result(), v1::VERIFY_RESULT_OK);
}

TEST_F(AuditLogTest, CheckpointFileCarriesTheAppendOnlyAttribute) {
  const std::string path = tmp_.Join("attr_checkpoints.log");
  absl::StatusOr<std::unique_ptr<CheckpointFile>> file = CheckpointFile::Open(path, true);
  ASSERT_THAT(file, IsOk());
  if (!(*file)->append_only_enforced()) {
    GTEST_SKIP() << "this file system or user cannot set the append-only attribute";
  }
  // Rewriting or truncating fails even for the owner; appending still works.
  EXPECT_LT(::open(path.c_str(), O_WRONLY | O_TRUNC), 0);
  EXPECT_NE(::truncate(path.c_str(), 0), 0);
  SignedCheckpoint checkpoint;
  checkpoint.tree_size = 1;
  EXPECT_THAT((*file)->Append(checkpoint), IsOk());
  // Clear the attribute so the temporary directory can be removed.
  int fd = ::open(path.c_str(), O_RDONLY);
  int flags = 0;
  ASSERT_EQ(::ioctl(fd, FS_IOC_GETFLAGS, &flags), 0);
  flags &= ~FS_APPEND_FL;
  ASSERT_EQ(::ioctl(fd, FS_IOC_SETFLAGS, &flags), 0);
  ::close(fd);
}

}  // namespace
}  // namespace tidepool::audit
