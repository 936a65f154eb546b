// The master key: every refusal keeps the service sealed with a clear message that never shows
// key bytes; only the very first start generates a key.
#include "services/secrets/master_key.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/ascii.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/crypto/crypto.h"
#include "lib/file_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::secrets {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

// A fixed key (tests are deterministic) whose bytes are neither printable nor hex digits.
const std::string& RandomKey() {
  static const std::string* key = [] {
    auto* bytes = new std::string();
    for (size_t i = 0; i < kMasterKeySize; ++i) {
      bytes->push_back(static_cast<char>(0x81 + (i * 37) % 0x7e));
    }
    return bytes;
  }();
  return *key;
}

std::string WriteKeyFile(const tidepool::testing::ScopedTempDir& dir, const std::string& name,
                         const std::string& content, mode_t mode) {
  const std::string path = dir.Join(name);
  EXPECT_TRUE(tidepool::testing::WriteFile(path, content));
  EXPECT_EQ(::chmod(path.c_str(), mode), 0);
  return path;
}

// No message may show the key, in any encoding tests can think of.
void ExpectNoKeyBytes(const absl::Status& status, const std::string& key) {
  const std::string message(status.message());
  EXPECT_THAT(message, Not(HasSubstr(key)));
  EXPECT_THAT(message, Not(HasSubstr(crypto::HexEncode(key))));
  EXPECT_THAT(message, Not(HasSubstr(crypto::HexEncode(key).substr(0, 16))));
}

TEST(MasterKeyTest, AcceptsRawBytesAndHexWithOptionalNewline) {
  const std::string hex = crypto::HexEncode(RandomKey());
  for (const std::string& material :
       {RandomKey(), hex, hex + "\n", hex + "\r\n", absl::AsciiStrToUpper(hex)}) {
    absl::StatusOr<SecretBytes> key = ParseMasterKey(material, "test key");
    ASSERT_THAT(key, IsOk());
    EXPECT_EQ(key->view(), RandomKey());
  }
}

TEST(MasterKeyTest, RefusesShortLongZeroAndPasswordKeys) {
  const std::string hex = crypto::HexEncode(RandomKey());
  struct Case {
    std::string material;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"", "is empty"},
      {RandomKey().substr(0, 3), "too short (3 bytes)"},
      {RandomKey().substr(0, 23), "too short (23 bytes)"},
      {RandomKey().substr(0, 31), "too short (31 bytes)"},
      {RandomKey() + "x", "too long (33 bytes)"},
      {hex.substr(0, 63), "too short (63 hexadecimal characters)"},
      {hex + "a", "too long (65 hexadecimal characters)"},
      {hex + "\n\n", "too long"},
      {std::string(32, '\0'), "all-zero key"},
      {std::string(64, '0'), "all-zero key"},
      {"correct horse battery staple!!!!", "looks like a password"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<SecretBytes> key = ParseMasterKey(c.material, "the test key");
    EXPECT_THAT(key, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(c.message)))
        << c.message;
    EXPECT_THAT(std::string(key.status().message()), HasSubstr("the test key"));
    EXPECT_THAT(std::string(key.status().message()), HasSubstr("openssl rand -hex 32"));
    ExpectNoKeyBytes(key.status(), RandomKey());
  }
}

TEST(MasterKeyTest, ReadsAnOwnerOnlyFile) {
  tidepool::testing::ScopedTempDir dir;
  for (mode_t mode : {0600, 0400}) {
    const std::string path = WriteKeyFile(dir, "key" + std::to_string(mode),
                                          crypto::HexEncode(RandomKey()) + "\n", mode);
    absl::StatusOr<SecretBytes> key = ReadMasterKeyFile(path);
    ASSERT_THAT(key, IsOk());
    EXPECT_EQ(key->view(), RandomKey());
  }
}

TEST(MasterKeyTest, RefusesFilesOpenToOthers) {
  tidepool::testing::ScopedTempDir dir;
  for (mode_t mode : {0644, 0640, 0604, 0620, 0602, 0660, 0666}) {
    const std::string path = WriteKeyFile(dir, "key", RandomKey(), mode);
    absl::StatusOr<SecretBytes> key = ReadMasterKeyFile(path);
    EXPECT_THAT(key, StatusIs(absl::StatusCode::kFailedPrecondition,
                              HasSubstr("open to group or other users")))
        << std::oct << mode;
    EXPECT_THAT(std::string(key.status().message()), HasSubstr("chmod 600"));
    ExpectNoKeyBytes(key.status(), RandomKey());
  }
}

TEST(MasterKeyTest, RefusesMissingDirectoryShortLongAndZeroFiles) {
  tidepool::testing::ScopedTempDir dir;
  EXPECT_THAT(ReadMasterKeyFile(dir.Join("absent")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("is missing")));
  EXPECT_THAT(ReadMasterKeyFile(dir.path()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not a regular file")));
  EXPECT_THAT(ReadMasterKeyFile(WriteKeyFile(dir, "short", RandomKey().substr(0, 16), 0600)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("too short")));
  EXPECT_THAT(ReadMasterKeyFile(WriteKeyFile(dir, "long", std::string(5000, 'k'), 0600)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("too long")));
  EXPECT_THAT(ReadMasterKeyFile(WriteKeyFile(dir, "zero", std::string(32, '\0'), 0600)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("all-zero")));
  EXPECT_THAT(ReadMasterKeyFile(WriteKeyFile(dir, "empty", "", 0600)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("is empty")));
}

TEST(MasterKeyTest, FollowsSymlinksButChecksTheTarget) {
  tidepool::testing::ScopedTempDir dir;
  const std::string target = WriteKeyFile(dir, "real", RandomKey(), 0600);
  ASSERT_EQ(::symlink(target.c_str(), dir.Join("link").c_str()), 0);
  EXPECT_THAT(ReadMasterKeyFile(dir.Join("link")), IsOk());
  ASSERT_EQ(::chmod(target.c_str(), 0644), 0);
  EXPECT_THAT(ReadMasterKeyFile(dir.Join("link")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("open to group")));
}

TEST(MasterKeyTest, RefusesAFileOfAnotherUser) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "changing a file's owner needs root";
  }
  tidepool::testing::ScopedTempDir dir;
  const std::string path = WriteKeyFile(dir, "key", RandomKey(), 0600);
  ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);
  EXPECT_THAT(ReadMasterKeyFile(path),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("belongs to uid 65534")));
}

TEST(MasterKeyTest, ReadsHexFromTheEnvironmentOnly) {
  const char* name = "TIDEPOOL_TEST_MASTER_KEY";
  ::unsetenv(name);
  EXPECT_THAT(ReadMasterKeyEnv(name),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("is not set")));
  ::setenv(name, "", 1);
  EXPECT_THAT(ReadMasterKeyEnv(name),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("is empty")));
  const std::string hex = crypto::HexEncode(RandomKey());
  ::setenv(name, hex.substr(0, 62).c_str(), 1);
  EXPECT_THAT(ReadMasterKeyEnv(name), StatusIs(absl::StatusCode::kFailedPrecondition,
                                               HasSubstr("exactly 64 hexadecimal characters")));
  ::setenv(name, ("zz" + hex.substr(2)).c_str(), 1);
  EXPECT_THAT(ReadMasterKeyEnv(name),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not all hexadecimal")));
  ::setenv(name, std::string(64, '0').c_str(), 1);
  EXPECT_THAT(ReadMasterKeyEnv(name),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("all-zero")));
  ::setenv(name, hex.c_str(), 1);
  absl::StatusOr<SecretBytes> key = ReadMasterKeyEnv(name);
  ASSERT_THAT(key, IsOk());
  EXPECT_EQ(key->view(), RandomKey());
  ::unsetenv(name);
}

TEST(MasterKeyTest, FirstStartGeneratesAnOwnerOnlyKeyFile) {
  tidepool::testing::ScopedTempDir dir;
  MasterKeySource source;
  source.file = dir.Join("master.key");
  absl::StatusOr<LoadedMasterKey> first = LoadMasterKeyAtStart(source, /*first_start=*/true);
  ASSERT_THAT(first, IsOk());
  EXPECT_TRUE(first->generated);
  EXPECT_EQ(first->key.size(), kMasterKeySize);
  struct stat st {};
  ASSERT_EQ(::stat(source.file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(*ReadFileToString(source.file), crypto::HexEncode(first->key.view()) + "\n");
  // Later starts read it back and never generate again.
  absl::StatusOr<LoadedMasterKey> again = LoadMasterKeyAtStart(source, /*first_start=*/false);
  ASSERT_THAT(again, IsOk());
  EXPECT_FALSE(again->generated);
  EXPECT_EQ(again->key.view(), first->key.view());
}

TEST(MasterKeyTest, MissingKeyAfterFirstStartStaysSealed) {
  tidepool::testing::ScopedTempDir dir;
  MasterKeySource source;
  source.file = dir.Join("master.key");
  absl::StatusOr<LoadedMasterKey> loaded = LoadMasterKeyAtStart(source, /*first_start=*/false);
  EXPECT_THAT(loaded, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("sealed:")));
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("restore the key file"));
  EXPECT_FALSE(std::ifstream(source.file).good());  // nothing was generated
}

TEST(MasterKeyTest, UnsafeKeyFileStaysSealedEvenOnFirstStart) {
  tidepool::testing::ScopedTempDir dir;
  MasterKeySource source;
  source.file = WriteKeyFile(dir, "master.key", RandomKey(), 0644);
  EXPECT_THAT(LoadMasterKeyAtStart(source, /*first_start=*/true),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("sealed:")));
  // The unsafe file was neither used nor replaced.
  EXPECT_EQ(*ReadFileToString(source.file), RandomKey());
}

TEST(MasterKeyTest, EnvironmentSourceIsNeverGenerated) {
  MasterKeySource source;
  source.env_var = "TIDEPOOL_TEST_MASTER_KEY_UNSET";
  ::unsetenv(source.env_var.c_str());
  EXPECT_THAT(LoadMasterKeyAtStart(source, /*first_start=*/true),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("sealed:")));
  MasterKeySource both;
  both.file = "/tmp/x";
  both.env_var = "X";
  EXPECT_THAT(LoadMasterKeyAtStart(both, true), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(LoadMasterKeyAtStart(MasterKeySource{}, true),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace tidepool::secrets
