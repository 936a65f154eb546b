// The vault core: start-up and sealing, audit before effect, master-key rotation (online, under
// load, interrupted), keyring auto-rotation with a persisted counter, rollback detection and
// fail-closed resolution.
#include "services/secrets/secrets_vault.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/crypto/crypto.h"
#include "lib/file_util.h"
#include "lib/metrics.h"
#include "lib/sqlite_store.h"
#include "services/secrets/secret_file.h"
#include "tests/secrets/test_support.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::secrets {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

std::string User(int n) { return "u_" + std::string(25, 'a') + static_cast<char>('a' + n); }
constexpr char kWorkspace[] = "ws_aaaaaaaaaaaaaaaaaaaaaaaaaa";

std::string AnthropicKey(int n) {
  return absl::StrCat("sk-ant-api03-vault-test-", n, "-abcdefghijklmnopqrst");
}

std::string NewKey(char fill) {
  std::string key(32, fill);
  key[0] = '\x01';  // not printable: a real key, not a password
  return key;
}

class SecretsVaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Catalogue> catalogue = Catalogue::LoadEmbedded();
    ASSERT_THAT(catalogue, IsOk());
    catalogue_ = std::make_unique<Catalogue>(*std::move(catalogue));
    options_.dir = tmp_.Join("secrets");
    options_.master_key.file = tmp_.Join("secrets/master.key");
    ASSERT_THAT(Reopen(), IsOk());
  }

  absl::Status Reopen() {
    vault_.reset();
    registry_ = std::make_unique<prometheus::Registry>();
    absl::StatusOr<std::unique_ptr<SecretsVault>> vault =
        SecretsVault::Open(options_, *catalogue_, clock_, &audit_, registry_.get());
    if (!vault.ok()) {
      return vault.status();
    }
    vault_ = *std::move(vault);
    return absl::OkStatus();
  }

  absl::StatusOr<PutOutcome> Put(int user, const std::string& value,
                                 const std::string& provider = "anthropic",
                                 const std::string& field = "api_key") {
    return vault_->Put(Actor{User(user), "proxy"}, User(user), provider, field, value, 0);
  }

  absl::StatusOr<Resolution> Resolve(int user) {
    return vault_->Resolve(Actor{"", "provisioner"}, kWorkspace, User(user), "openclaw");
  }

  std::string ResolvedValue(int user) {
    absl::StatusOr<Resolution> resolution = Resolve(user);
    EXPECT_THAT(resolution, IsOk());
    if (!resolution.ok() || resolution->secrets.empty()) {
      return "";
    }
    return std::string(resolution->secrets.front().value.view());
  }

  std::string KeyFile() const { return options_.master_key.file; }
  std::string KeyringFile() const { return options_.dir + "/keyring"; }

  tidepool::testing::ScopedTempDir tmp_;
  tidepool::testing::FakeClock clock_{absl::FromUnixSeconds(1700000000)};
  testing::RecordingAudit audit_;
  std::unique_ptr<Catalogue> catalogue_;
  SecretsVaultOptions options_;
  std::unique_ptr<prometheus::Registry> registry_;
  std::unique_ptr<SecretsVault> vault_;
};

TEST_F(SecretsVaultTest, FirstStartCreatesOwnerOnlyKeyKeyringAndDatabase) {
  EXPECT_TRUE(vault_->master_key_generated());
  EXPECT_EQ(vault_->active_term(), 1u);
  for (const std::string& file : {KeyFile(), KeyringFile(), options_.dir + "/secrets.db"}) {
    struct stat st {};
    ASSERT_EQ(::stat(file.c_str(), &st), 0) << file;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << file;
  }
  struct stat dir {};
  ASSERT_EQ(::stat(options_.dir.c_str(), &dir), 0);
  EXPECT_EQ(dir.st_mode & 0777, 0700u);
  ASSERT_THAT(Reopen(), IsOk());
  EXPECT_FALSE(vault_->master_key_generated());
}

TEST_F(SecretsVaultTest, PutIsAuditedWithAFingerprintNeverTheValue) {
  absl::StatusOr<PutOutcome> put = Put(1, AnthropicKey(1));
  ASSERT_THAT(put, IsOk());
  EXPECT_TRUE(put->applies_without_restart);  // a config entry OpenClaw hot-reloads
  std::vector<common::v1::AuditEvent> events = audit_.Events();
  ASSERT_FALSE(events.empty());
  const common::v1::AuditEvent& event = events.back();
  EXPECT_EQ(event.action(), "secrets.put");
  EXPECT_EQ(event.outcome(), common::v1::OUTCOME_SUCCESS);
  EXPECT_EQ(event.actor().id(), User(1));
  EXPECT_EQ(event.subject_user_id(), User(1));
  EXPECT_EQ(event.attributes().at("secret_fingerprint"), put->secret.fingerprint);
  EXPECT_EQ(event.attributes().at("provider"), "anthropic");
  EXPECT_EQ(event.attributes().at("version"), "1");
  EXPECT_THAT(testing::FindLeaks(audit_.AllText(), AnthropicKey(1)), IsEmpty());
}

TEST_F(SecretsVaultTest, RefusedPutsAreAuditedAsFailuresWithoutTheValue) {
  const std::string bad = "sk-wrong-format-but-secret-looking-0123456789";
  EXPECT_THAT(Put(1, bad), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(audit_.Actions(), Contains("secrets.put:invalid_value"));
  EXPECT_THAT(testing::FindLeaks(audit_.AllText(), bad), IsEmpty());
  ASSERT_THAT(Put(1, AnthropicKey(1)), IsOk());
  EXPECT_THAT(
      vault_->Put(Actor{User(1), "proxy"}, User(1), "anthropic", "api_key", AnthropicKey(2), -1),
      StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(
      vault_->Put(Actor{User(1), "proxy"}, User(1), "anthropic", "api_key", AnthropicKey(2), 7),
      StatusIs(absl::StatusCode::kAborted));
  EXPECT_THAT(
      vault_->Put(Actor{User(1), "proxy"}, User(1), "anthropic", "api_key", AnthropicKey(2), -2),
      StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(audit_.Actions(), ::testing::IsSupersetOf({"secrets.put:already_exists",
                                                         "secrets.put:version_conflict"}));
}

TEST_F(SecretsVaultTest, LimitsHaveClearErrors) {
  options_.max_secrets_per_user = 2;
  options_.max_value_bytes = 64;
  ASSERT_THAT(Reopen(), IsOk());
  EXPECT_THAT(Put(1, "sk-ant-" + std::string(100, 'a')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("the limit is 64")));
  ASSERT_THAT(Put(1, AnthropicKey(1)), IsOk());
  ASSERT_THAT(Put(1, testing::SampleValues().at("openai.api_key"), "openai"), IsOk());
  EXPECT_THAT(Put(1, testing::SampleValues().at("groq.api_key"), "groq"),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("the most allowed per user (2); delete some first")));
  EXPECT_THAT(audit_.Actions(), Contains("secrets.put:limit_reached"));
}

TEST_F(SecretsVaultTest, AuditDownRefusesEverySecurityOperation) {
  ASSERT_THAT(Put(1, AnthropicKey(1)), IsOk());
  audit_.SetDown(true);
  EXPECT_THAT(Put(1, AnthropicKey(2)), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(Put(2, AnthropicKey(3)), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(vault_->Delete(Actor{User(1), "proxy"}, User(1), "anthropic", "", 0),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(Resolve(1), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(
      vault_->RotateMasterKey(Actor{"", "tidepoolctl"}, SecretBytes(NewKey('n')), "", "request"),
      StatusIs(absl::StatusCode::kUnavailable));
  // Nothing happened, and listing (not a security operation) still works.
  absl::StatusOr<ListOutcome> listed = vault_->List(Actor{User(1), "proxy"}, User(1), "");
  ASSERT_THAT(listed, IsOk());
  ASSERT_EQ(listed->secrets.size(), 1u);
  EXPECT_EQ(listed->secrets[0].version, 1);
  EXPECT_EQ(vault_->active_term(), 1u);
  audit_.SetDown(false);
  EXPECT_EQ(ResolvedValue(1), AnthropicKey(1));
  EXPECT_THAT(*vault_->List(Actor{User(2), "proxy"}, User(2), ""),
              ::testing::Field(&ListOutcome::secrets, IsEmpty()));
}

TEST_F(SecretsVaultTest, ResolveReturnsTargetsAndCapabilitiesForTheProfile) {
  ASSERT_THAT(Put(1, AnthropicKey(1)), IsOk());
  ASSERT_THAT(Put(1, testing::SampleValues().at("slack.bot_token"), "slack", "bot_token"), IsOk());
  absl::StatusOr<Resolution> resolution = Resolve(1);
  ASSERT_THAT(resolution, IsOk());
  ASSERT_EQ(resolution->secrets.size(), 2u);
  EXPECT_EQ(resolution->secrets[0].meta.provider_id, "anthropic");
  ASSERT_EQ(resolution->secrets[0].targets.size(), 1u);
  EXPECT_EQ(resolution->secrets[0].targets[0].config_entry, "models.providers.anthropic.apiKey");
  EXPECT_TRUE(resolution->secrets[0].applies_without_restart);
  // Slack needs its app token too before the channel counts.
  EXPECT_THAT(resolution->capabilities, ::testing::ElementsAre("model.anthropic"));
  EXPECT_EQ(resolution->watch_sequence, 2u);
  EXPECT_THAT(audit_.Actions(), Contains("secrets.resolve"));
  const common::v1::AuditEvent resolved = audit_.Events().back();
  EXPECT_EQ(resolved.workspace_id(), kWorkspace);
  EXPECT_EQ(resolved.attributes().at("fields"), "anthropic.api_key,slack.bot_token");
  EXPECT_THAT(vault_->Resolve(Actor{"", "provisioner"}, kWorkspace, User(1), "vscode"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("openclaw, shell")));
  EXPECT_THAT(vault_->Resolve(Actor{"", "provisioner"}, "ws_x", User(1), "openclaw"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(vault_->Resolve(Actor{"", "provisioner"}, kWorkspace, "alice", "openclaw"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(SecretsVaultTest, TamperedCiphertextFailsResolutionClosedAndIsAudited) {
  ASSERT_THAT(Put(1, AnthropicKey(1)), IsOk());
  {
    absl::StatusOr<std::unique_ptr<SqliteDb>> db =
        SqliteDb::Open(options_.dir + "/secrets.db", SqliteOptions{});
    ASSERT_THAT(db, IsOk());
    ASSERT_THAT((*db)->Exec("UPDATE secrets SET ciphertext = zeroblob(80)"), IsOk());
  }
  absl::StatusOr<Resolution> resolution = Resolve(1);
  EXPECT_THAT(resolution, StatusIs(absl::StatusCode::kInternal));
  EXPECT_THAT(audit_.Actions(), Contains("secrets.integrity_failure:authentication_failed"));
  EXPECT_THAT(audit_.Actions(), Not(Contains("secrets.resolve")));
  EXPECT_THAT(SerializeMetrics(*registry_),
              HasSubstr("tidepool_secrets_integrity_failures_total 1"));
}

TEST_F(SecretsVaultTest, DeleteIsAuditedAndMissingSecretsAreNotFound) {
  ASSERT_THAT(Put(1, testing::SampleValues().at("slack.bot_token"), "slack", "bot_token"), IsOk());
  ASSERT_THAT(Put(1, testing::SampleValues().at("slack.app_token"), "slack", "app_token"), IsOk());
  EXPECT_THAT(vault_->Delete(Actor{User(1), "proxy"}, User(1), "github", "", 0),
              StatusIs(absl::StatusCode::kNotFound, kNoSuchSecret));
  EXPECT_THAT(vault_->Delete(Actor{User(1), "proxy"}, User(1), "slack", "", 3),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(vault_->Delete(Actor{User(1), "proxy"}, User(1), "Slack!", "", 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  absl::StatusOr<std::vector<SecretMeta>> deleted =
      vault_->Delete(Actor{User(1), "proxy"}, User(1), "slack", "", 0);
  ASSERT_THAT(deleted, IsOk());
  EXPECT_EQ(deleted->size(), 2u);
  const common::v1::AuditEvent event = audit_.Events().back();
  EXPECT_EQ(event.action(), "secrets.delete");
  EXPECT_EQ(event.attributes().at("fields"), "slack.app_token,slack.bot_token");
}

TEST_F(SecretsVaultTest, WrongMasterKeyKeepsTheServiceSealed) {
  ASSERT_THAT(Put(1, AnthropicKey(1)), IsOk());
  vault_.reset();
  ASSERT_THAT(WriteMasterKeyFile(KeyFile(), NewKey('w')), IsOk());
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                 HasSubstr("sealed: the keyring cannot be opened with this "
                                           "master key")));
}

TEST_F(SecretsVaultTest, MissingShortOrExposedMasterKeyKeepsTheServiceSealed) {
  ASSERT_THAT(Put(1, AnthropicKey(1)), IsOk());
  vault_.reset();
  const std::string original = *ReadFileToString(KeyFile());
  ASSERT_EQ(::unlink(KeyFile().c_str()), 0);
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                 HasSubstr("restore the key file from your backup")));
  EXPECT_FALSE(PathExists(KeyFile()));  // never regenerated once data exists
  ASSERT_THAT(WriteSecretFile(KeyFile(), original.substr(0, 40)), IsOk());
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("too short")));
  ASSERT_THAT(WriteSecretFile(KeyFile(), original), IsOk());
  ASSERT_EQ(::chmod(KeyFile().c_str(), 0644), 0);
  EXPECT_THAT(Reopen(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("run chmod 600")));
  ASSERT_EQ(::chmod(KeyFile().c_str(), 0600), 0);
  ASSERT_THAT(Reopen(), IsOk());
  EXPECT_EQ(ResolvedValue(1), AnthropicKey(1));
}

TEST_F(SecretsVaultTest, MissingKeyringWithStoredDataKeepsTheServiceSealed) {
  ASSERT_THAT(Put(1, AnthropicKey(1)), IsOk());
  vault_.reset();
  ASSERT_EQ(::unlink(KeyringFile().c_str()), 0);
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                 HasSubstr("the keyring file " + KeyringFile() + " is missing")));
}

TEST_F(SecretsVaultTest, EnvironmentMasterKeyIsUsedAndNeverGenerated) {
  vault_.reset();
  tidepool::testing::ScopedTempDir other;
  options_.dir = other.Join("secrets");
  options_.master_key = MasterKeySource{"", "TIDEPOOL_VAULT_TEST_KEY"};
  ::unsetenv("TIDEPOOL_VAULT_TEST_KEY");
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("is not set")));
  ::setenv("TIDEPOOL_VAULT_TEST_KEY", crypto::HexEncode(NewKey('e')).c_str(), 1);
  ASSERT_THAT(Reopen(), IsOk());
  EXPECT_FALSE(vault_->master_key_generated());
  ASSERT_THAT(Put(1, AnthropicKey(1)), IsOk());
  EXPECT_THAT(
      vault_->RotateMasterKey(Actor{"", "tidepoolctl"}, SecretBytes(NewKey('n')), "", "request"),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               HasSubstr("environment variable TIDEPOOL_VAULT_TEST_KEY")));
  ::unsetenv("TIDEPOOL_VAULT_TEST_KEY");
}

TEST_F(SecretsVaultTest, MasterKeyRotationAddsATermRewrapsAndRetiresTheOldKey) {
  for (int user = 1; user <= 3; ++user) {
    ASSERT_THAT(Put(user, AnthropicKey(user)), IsOk());
  }
  const std::string old_key = *ReadFileToString(KeyFile());
  absl::StatusOr<RotationOutcome> rotated = vault_->RotateMasterKey(
      Actor{"", "tidepoolctl"}, SecretBytes(NewKey('n')), "yearly rotation", "request");
  ASSERT_THAT(rotated, IsOk());
  EXPECT_EQ(rotated->term, 2u);
  EXPECT_EQ(rotated->rewrapped_data_keys, 3);
  EXPECT_EQ(vault_->active_term(), 2u);
  EXPECT_EQ(*vault_->store().HighestDataKeyTerm(), 2u);
  EXPECT_EQ(*vault_->store().HighestKeyringTerm(), 2u);
  // The key file holds the new key; the old one no longer opens the keyring.
  EXPECT_EQ(*ReadFileToString(KeyFile()), crypto::HexEncode(NewKey('n')) + "\n");
  absl::StatusOr<SecretBytes> old = ParseMasterKey(old_key, "old");
  ASSERT_THAT(old, IsOk());
  EXPECT_THAT(LoadKeyringFile(KeyringFile(), old->view()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_FALSE(PathExists(KeyFile() + ".next"));
  // Audited before it took effect, with the reason and never the key.
  const common::v1::AuditEvent event = audit_.Events().back();
  EXPECT_EQ(event.action(), "secrets.master_key_rotated");
  EXPECT_EQ(event.attributes().at("new_term"), "2");
  EXPECT_EQ(event.attributes().at("reason"), "yearly rotation");
  EXPECT_THAT(testing::FindLeaks(audit_.AllText(), NewKey('n')), IsEmpty());
  // Everything reads back, now and after a restart; new writes use the new term.
  for (int user = 1; user <= 3; ++user) {
    EXPECT_EQ(ResolvedValue(user), AnthropicKey(user));
  }
  ASSERT_THAT(Reopen(), IsOk());
  ASSERT_THAT(Put(4, AnthropicKey(4)), IsOk());
  EXPECT_EQ(*vault_->store().TermEncryptions(2), 4);
  for (int user = 1; user <= 4; ++user) {
    EXPECT_EQ(ResolvedValue(user), AnthropicKey(user));
  }
}

TEST_F(SecretsVaultTest, MasterKeyRotationRefusals) {
  const std::string current = *ReadFileToString(KeyFile());
  absl::StatusOr<SecretBytes> current_key = ParseMasterKey(current, "current");
  ASSERT_THAT(current_key, IsOk());
  const Actor cli{"", "tidepoolctl"};
  EXPECT_THAT(vault_->RotateMasterKey(cli, current_key->Clone(), "", "request"),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(vault_->RotateMasterKey(cli, SecretBytes("short"), "", "request"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exactly 32 bytes")));
  EXPECT_THAT(vault_->RotateMasterKey(cli, SecretBytes(std::string(32, '\0')), "", "request"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("all-zero")));
  EXPECT_EQ(vault_->active_term(), 1u);
  EXPECT_EQ(*ReadFileToString(KeyFile()), current);
}

TEST_F(SecretsVaultTest, AnInterruptedMasterKeyRotationIsCompletedAtStart) {
  ASSERT_THAT(Put(1, AnthropicKey(1)), IsOk());
  vault_.reset();
  // Crash after the keyring was sealed under the new key, before the key file was replaced.
  absl::StatusOr<SecretBytes> old_key = ReadMasterKeyFile(KeyFile());
  ASSERT_THAT(old_key, IsOk());
  absl::StatusOr<Keyring> keyring = LoadKeyringFile(KeyringFile(), old_key->view());
  ASSERT_THAT(keyring, IsOk());
  ASSERT_THAT(WriteMasterKeyFile(KeyFile() + ".next", NewKey('n')), IsOk());
  ASSERT_THAT(SaveKeyringFile(KeyringFile(), *keyring->WithNewTerm(clock_.Now()), NewKey('n')),
              IsOk());
  ASSERT_THAT(Reopen(), IsOk());
  EXPECT_EQ(vault_->active_term(), 2u);
  EXPECT_EQ(*ReadFileToString(KeyFile()), crypto::HexEncode(NewKey('n')) + "\n");
  EXPECT_FALSE(PathExists(KeyFile() + ".next"));
  EXPECT_EQ(ResolvedValue(1), AnthropicKey(1));
}

TEST_F(SecretsVaultTest, ARotationThatStoppedBeforeItsKeyringKeepsTheOldKey) {
  ASSERT_THAT(Put(1, AnthropicKey(1)), IsOk());
  vault_.reset();
  const std::string key_before = *ReadFileToString(KeyFile());
  ASSERT_THAT(WriteMasterKeyFile(KeyFile() + ".next", NewKey('n')), IsOk());
  ASSERT_THAT(Reopen(), IsOk());
  EXPECT_EQ(vault_->active_term(), 1u);
  EXPECT_EQ(*ReadFileToString(KeyFile()), key_before);
  EXPECT_FALSE(PathExists(KeyFile() + ".next"));
  EXPECT_EQ(ResolvedValue(1), AnthropicKey(1));
}

TEST_F(SecretsVaultTest, ARestoredOlderKeyringIsDetectedAsARollback) {
  options_.rotation.max_age = absl::Hours(24);
  ASSERT_THAT(Reopen(), IsOk());
  ASSERT_THAT(Put(1, AnthropicKey(1)), IsOk());
  const std::string old_keyring = *ReadFileToString(KeyringFile());
  clock_.Advance(absl::Hours(25));
  ASSERT_THAT(vault_->RotateKeyringIfDue(), ::tidepool::testing::IsOkAndHolds(2u));
  vault_.reset();
  ASSERT_THAT(WriteSecretFile(KeyringFile(), old_keyring), IsOk());
  EXPECT_THAT(Reopen(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                 HasSubstr("keyring rollback detected: the keyring file's newest "
                                           "term is 1, but term 2 was already in use")));
  EXPECT_THAT(audit_.Actions(), Contains("secrets.keyring_rollback_detected"));
}

TEST_F(SecretsVaultTest, AutoRotationHappensBeforeTheOperationCeilingWithAPersistedCounter) {
  options_.rotation.max_operations = 3;
  ASSERT_THAT(Reopen(), IsOk());
  // Each new user's data key is one encryption under the active term.
  ASSERT_THAT(Put(1, AnthropicKey(1)), IsOk());
  ASSERT_THAT(Put(2, AnthropicKey(2)), IsOk());
  ASSERT_THAT(Reopen(), IsOk());
  EXPECT_EQ(*vault_->store().TermEncryptions(1), 2);  // survived the restart
  ASSERT_THAT(Put(3, AnthropicKey(3)), IsOk());
  EXPECT_EQ(vault_->active_term(), 1u);
  EXPECT_EQ(*vault_->store().TermEncryptions(1), 3);
  // Term 1 is at its ceiling: the next write rotates first and never exceeds it.
  ASSERT_THAT(Put(4, AnthropicKey(4)), IsOk());
  EXPECT_EQ(vault_->active_term(), 2u);
  EXPECT_EQ(*vault_->store().TermEncryptions(1), 3);
  EXPECT_EQ(*vault_->store().TermEncryptions(2), 1);
  EXPECT_THAT(audit_.Actions(), Contains("secrets.keyring_rotated"));
  for (int user = 1; user <= 4; ++user) {
    EXPECT_EQ(ResolvedValue(user), AnthropicKey(user));
  }
  EXPECT_THAT(SerializeMetrics(*registry_),
              HasSubstr("tidepool_secrets_keyring_rotations_total{trigger=\"operations\"} 1"));
  EXPECT_THAT(SerializeMetrics(*registry_), HasSubstr("tidepool_secrets_keyring_term 2"));
}

TEST_F(SecretsVaultTest, AutoRotationHappensOnceTheTermIsOld) {
  options_.rotation.max_age = absl::Hours(24);
  ASSERT_THAT(Reopen(), IsOk());
  ASSERT_THAT(Put(1, AnthropicKey(1)), IsOk());
  clock_.Advance(absl::Hours(23));
  ASSERT_THAT(Put(1, AnthropicKey(2)), IsOk());
  EXPECT_EQ(vault_->active_term(), 1u);
  clock_.Advance(absl::Hours(2));
  ASSERT_THAT(Put(2, AnthropicKey(3)), IsOk());
  EXPECT_EQ(vault_->active_term(), 2u);
  const std::vector<common::v1::AuditEvent> events = audit_.Events();
  bool found = false;
  for (const common::v1::AuditEvent& event : events) {
    if (event.action() == "secrets.keyring_rotated") {
      found = true;
      EXPECT_EQ(event.attributes().at("trigger"), "age");
      EXPECT_EQ(event.actor().kind(), common::v1::ACTOR_KIND_SYSTEM);
    }
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(ResolvedValue(1), AnthropicKey(2));
  EXPECT_EQ(ResolvedValue(2), AnthropicKey(3));
}

TEST_F(SecretsVaultTest, RotationWhileReadsAndWritesRunLosesNoRead) {
  constexpr int kUsers = 6;
  for (int user = 0; user < kUsers; ++user) {
    ASSERT_THAT(Put(user, AnthropicKey(user)), IsOk());
  }
  std::atomic<int> failed_reads{0};
  std::atomic<int> failed_writes{0};
  std::atomic<int> reads{0};
  std::atomic<bool> rotating{true};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; rotating.load() || i < 20; ++i) {
        const int user = (t + i) % kUsers;
        absl::StatusOr<Resolution> resolution = Resolve(user);
        if (!resolution.ok() || resolution->secrets.size() != 1 ||
            std::string(resolution->secrets[0].value.view()).rfind("sk-ant-", 0) != 0) {
          ++failed_reads;
        }
        ++reads;
      }
    });
  }
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; rotating.load() || i < 20; ++i) {
        if (!Put((t * 3 + i) % kUsers, AnthropicKey(100 + i)).ok()) {
          ++failed_writes;
        }
      }
    });
  }
  for (char fill : {'p', 'q', 'r'}) {
    absl::StatusOr<RotationOutcome> rotated =
        vault_->RotateMasterKey(Actor{"", "tidepoolctl"}, SecretBytes(NewKey(fill)), "", "request");
    EXPECT_THAT(rotated, IsOk());
  }
  rotating = false;
  for (std::thread& thread : threads) {
    thread.join();
  }
  EXPECT_EQ(failed_reads.load(), 0);
  EXPECT_EQ(failed_writes.load(), 0);
  EXPECT_GE(reads.load(), 60);
  EXPECT_EQ(vault_->active_term(), 4u);
  ASSERT_THAT(Reopen(), IsOk());
  for (int user = 0; user < kUsers; ++user) {
    EXPECT_THAT(Resolve(user), IsOk());
  }
}

TEST_F(SecretsVaultTest, OperationsAreCountedByCode) {
  ASSERT_THAT(Put(1, AnthropicKey(1)), IsOk());
  EXPECT_THAT(Put(1, "nope"), StatusIs(absl::StatusCode::kInvalidArgument));
  const std::string metrics = SerializeMetrics(*registry_);
  EXPECT_THAT(metrics,
              HasSubstr("tidepool_secrets_operations_total{code=\"OK\",operation=\"put\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("code=\"INVALID_ARGUMENT\",operation=\"put\"} 1"));
  EXPECT_THAT(testing::FindLeaks(metrics, AnthropicKey(1)), IsEmpty());
}

}  // namespace
}  // namespace tidepool::secrets
