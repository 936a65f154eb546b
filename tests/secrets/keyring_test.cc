// The keyring on its own: terms, sealing under the master key, tamper and rollback checks,
// and the auto-rotation policy.
#include "services/secrets/keyring.h"

#include <sys/stat.h>

#include <string>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/crypto/crypto.h"
#include "lib/file_util.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::secrets {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

const absl::Time kStart = absl::FromUnixSeconds(1700000000);

std::string MasterKey(char fill) { return std::string(32, fill); }

Keyring TwoTerms() {
  absl::StatusOr<Keyring> first = Keyring::Create(kStart);
  EXPECT_THAT(first, IsOk());
  absl::StatusOr<Keyring> second = first->WithNewTerm(kStart + absl::Hours(1));
  EXPECT_THAT(second, IsOk());
  return *std::move(second);
}

TEST(KeyringTest, StartsAtTermOneAndRotationAddsTerms) {
  absl::StatusOr<Keyring> keyring = Keyring::Create(kStart);
  ASSERT_THAT(keyring, IsOk());
  EXPECT_EQ(keyring->active_term(), 1u);
  EXPECT_EQ(keyring->active_key().size(), 32u);
  EXPECT_EQ(keyring->fingerprint_key().size(), 32u);
  EXPECT_EQ(keyring->active_create_time(), kStart);
  absl::StatusOr<Keyring> next = keyring->WithNewTerm(kStart + absl::Hours(2));
  ASSERT_THAT(next, IsOk());
  EXPECT_THAT(next->terms(), ElementsAre(1, 2));
  EXPECT_EQ(next->active_term(), 2u);
  EXPECT_NE(next->active_key(), keyring->active_key());
  // Old terms still open what they wrapped; the fingerprint key survives rotation.
  EXPECT_EQ(*next->KeyOf(1), keyring->active_key());
  EXPECT_EQ(next->fingerprint_key(), keyring->fingerprint_key());
  EXPECT_THAT(next->KeyOf(3), StatusIs(absl::StatusCode::kFailedPrecondition,
                                       HasSubstr("term 3, which this keyring")));
}

TEST(KeyringTest, SealRoundTripsUnderTheMasterKeyOnly) {
  Keyring keyring = TwoTerms();
  absl::StatusOr<std::string> file = keyring.Seal(MasterKey('m'));
  ASSERT_THAT(file, IsOk());
  // Neither key appears in the file, raw or hex.
  for (absl::string_view key :
       {keyring.active_key(), *keyring.KeyOf(1), keyring.fingerprint_key()}) {
    EXPECT_THAT(*file, Not(HasSubstr(std::string(key))));
    EXPECT_THAT(*file, Not(HasSubstr(crypto::HexEncode(key))));
  }
  absl::StatusOr<Keyring> opened = Keyring::Unseal(MasterKey('m'), *file);
  ASSERT_THAT(opened, IsOk());
  EXPECT_THAT(opened->terms(), ElementsAre(1, 2));
  EXPECT_EQ(opened->active_key(), keyring.active_key());
  EXPECT_EQ(*opened->KeyOf(1), *keyring.KeyOf(1));
  EXPECT_EQ(opened->fingerprint_key(), keyring.fingerprint_key());
  EXPECT_EQ(opened->active_create_time(), kStart + absl::Hours(1));

  EXPECT_THAT(Keyring::Unseal(MasterKey('x'), *file),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("sealed: the keyring cannot be opened with this master key")));
  EXPECT_THAT(Keyring::Unseal("short", *file), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(KeyringTest, EveryAlteredByteOfTheSealFailsClosed) {
  Keyring keyring = TwoTerms();
  nlohmann::json doc = nlohmann::json::parse(*keyring.Seal(MasterKey('m')));
  std::string sealed;
  ASSERT_TRUE(absl::Base64Unescape(doc["sealed"].get<std::string>(), &sealed));
  for (size_t i = 0; i < sealed.size(); ++i) {
    std::string altered = sealed;
    altered[i] = static_cast<char>(altered[i] ^ 0x01);
    nlohmann::json copy = doc;
    copy["sealed"] = absl::Base64Escape(altered);
    EXPECT_THAT(Keyring::Unseal(MasterKey('m'), copy.dump()),
                StatusIs(absl::StatusCode::kFailedPrecondition))
        << "byte " << i;
  }
}

TEST(KeyringTest, TheClearTermIsAuthenticated) {
  Keyring keyring = TwoTerms();
  nlohmann::json doc = nlohmann::json::parse(*keyring.Seal(MasterKey('m')));
  for (uint64_t term : {1, 3, 100}) {
    doc["term"] = term;
    EXPECT_THAT(Keyring::Unseal(MasterKey('m'), doc.dump()),
                StatusIs(absl::StatusCode::kFailedPrecondition))
        << term;
  }
}

TEST(KeyringTest, MalformedFilesStaySealed) {
  for (const std::string& file :
       {std::string(""), std::string("{}"), std::string("not json"),
        std::string(R"({"format":"tidepool.secrets.keyring/v1","term":1,"sealed":"!!"})"),
        std::string(R"({"format":"other","term":1,"sealed":""})"),
        std::string(R"({"format":"tidepool.secrets.keyring/v1","term":0,"sealed":""})"),
        std::string(R"({"format":"tidepool.secrets.keyring/v1","term":1,"sealed":"","x":1})")}) {
    EXPECT_THAT(Keyring::Unseal(MasterKey('m'), file),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("sealed:")))
        << file;
  }
}

TEST(KeyringTest, FilesAreWrittenOwnerOnlyAndLoadedBack) {
  tidepool::testing::ScopedTempDir dir;
  const std::string path = dir.Join("keyring");
  EXPECT_THAT(LoadKeyringFile(path, MasterKey('m')), StatusIs(absl::StatusCode::kNotFound));
  Keyring keyring = TwoTerms();
  ASSERT_THAT(SaveKeyringFile(path, keyring, MasterKey('m')), IsOk());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  absl::StatusOr<Keyring> loaded = LoadKeyringFile(path, MasterKey('m'));
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ(loaded->active_term(), 2u);
  EXPECT_THAT(LoadKeyringFile(path, MasterKey('w')),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(path)));
}

TEST(KeyringTest, RollbackBelowTheRecordedTermIsRefused) {
  Keyring keyring = TwoTerms();
  EXPECT_THAT(CheckNotRolledBack(keyring, 0), IsOk());
  EXPECT_THAT(CheckNotRolledBack(keyring, 2), IsOk());
  EXPECT_THAT(CheckNotRolledBack(keyring, 3),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("keyring rollback detected: the keyring file's newest term is 2, "
                                 "but term 3 was already in use")));
}

TEST(KeyringTest, RotationIsDueBeforeTheOperationCeilingOrAfterTheAge) {
  RotationPolicy policy;
  EXPECT_EQ(policy.max_operations, 3865470566);
  EXPECT_EQ(policy.max_age, absl::Hours(24 * 90));
  EXPECT_EQ(RotationDue(policy, 0, kStart, kStart), "");
  EXPECT_EQ(RotationDue(policy, 3865470565, kStart, kStart), "");
  EXPECT_EQ(RotationDue(policy, 3865470566, kStart, kStart), "operations");
  EXPECT_EQ(RotationDue(policy, 0, kStart, kStart + absl::Hours(24 * 90) - absl::Seconds(1)), "");
  EXPECT_EQ(RotationDue(policy, 0, kStart, kStart + absl::Hours(24 * 90)), "age");
}

}  // namespace
}  // namespace tidepool::secrets
