// The `secrets` section of tidepool.yaml and how it becomes the vault's options.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/platform_config.h"
#include "services/secrets/secrets_service.h"
#include "tests/testing/status_matchers.h"

namespace tidepool::secrets {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

TEST(SecretsConfigTest, DefaultsPutTheKeyFileInTheDataDirectory) {
  PlatformConfig config = DefaultPlatformConfig();
  EXPECT_EQ(config.secrets.max_value_bytes, 16384);
  EXPECT_EQ(config.secrets.max_secrets_per_user, 200);
  EXPECT_EQ(config.secrets.auto_rotate_operations, 3865470566);
  EXPECT_EQ(config.secrets.auto_rotate_interval, absl::Hours(24 * 90));
  SecretsVaultOptions options = VaultOptionsFromConfig(config, "/var/lib/tp");
  EXPECT_EQ(options.dir, "/var/lib/tp/secrets");
  EXPECT_EQ(options.master_key.file, "/var/lib/tp/secrets/master.key");
  EXPECT_EQ(options.master_key.env_var, "");
  EXPECT_EQ(options.rotation.max_operations, 3865470566);
  for (const char* key : {"secrets.master_key_file", "secrets.master_key_env",
                          "secrets.max_value_bytes", "secrets.max_secrets_per_user",
                          "secrets.auto_rotate_operations", "secrets.auto_rotate_interval"}) {
    EXPECT_THAT(PlatformConfigKeys(), Contains(key));
  }
}

TEST(SecretsConfigTest, OverridesApply) {
  absl::StatusOr<PlatformConfig> config = LoadPlatformConfigFromString(
      "secrets:\n"
      "  master_key_env: TIDEPOOL_MASTER_KEY\n"
      "  max_value_bytes: 4096\n"
      "  max_secrets_per_user: 50\n"
      "  auto_rotate_operations: 1000000\n"
      "  auto_rotate_interval: 720h\n",
      "t.yaml");
  ASSERT_THAT(config, IsOk());
  SecretsVaultOptions options = VaultOptionsFromConfig(*config, "/d");
  EXPECT_EQ(options.master_key.env_var, "TIDEPOOL_MASTER_KEY");
  EXPECT_EQ(options.master_key.file, "");
  EXPECT_EQ(options.max_value_bytes, 4096);
  EXPECT_EQ(options.max_secrets_per_user, 50);
  EXPECT_EQ(options.rotation.max_operations, 1000000);
  EXPECT_EQ(options.rotation.max_age, absl::Hours(720));
  absl::StatusOr<PlatformConfig> file =
      LoadPlatformConfigFromString("secrets:\n  master_key_file: /etc/tidepool/master.key\n", "t");
  ASSERT_THAT(file, IsOk());
  EXPECT_EQ(VaultOptionsFromConfig(*file, "/d").master_key.file, "/etc/tidepool/master.key");
}

TEST(SecretsConfigTest, BadValuesNameTheKey) {
  struct Case {
    std::string yaml;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {"secrets:\n  master_key_file: relative/master.key\n", "must be an absolute path"},
           {"secrets:\n  master_key_env: lower-case\n", "must be an environment variable name"},
           {"secrets:\n  max_value_bytes: 100\n", "'secrets.max_value_bytes' must be an integer"},
           {"secrets:\n  max_secrets_per_user: 0\n", "'secrets.max_secrets_per_user'"},
           {"secrets:\n  auto_rotate_operations: 3865470567\n",
            "'secrets.auto_rotate_operations' must be an integer in [1000000, 3865470566]"},
           {"secrets:\n  auto_rotate_operations: lots\n", "got \"lots\""},
           {"secrets:\n  auto_rotate_interval: 1h\n", "'secrets.auto_rotate_interval'"},
           {"secrets:\n  master_key_file: /k\n  master_key_env: K\n", "set at most one of"},
           {"secrets:\n  master_key: x\n", "not a known setting"},
       }) {
    EXPECT_THAT(LoadPlatformConfigFromString(c.yaml, "t.yaml"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << c.yaml;
  }
}

}  // namespace
}  // namespace tidepool::secrets
