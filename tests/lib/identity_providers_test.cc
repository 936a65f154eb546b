#include "lib/identity_providers.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/platform_config.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

absl::StatusOr<PlatformConfig> Load(const std::string& providers, const std::string& extra = "") {
  return LoadPlatformConfigFromString("auth:\n" + extra + "  providers:\n" + providers, "t.yaml");
}

TEST(IdentityProvidersTest, ParsesEveryKindWithDefaults) {
  absl::StatusOr<PlatformConfig> config = Load(
      "    - id: google\n      kind: google\n      client_id: g\n      client_secret_env: G\n"
      "      allowed_email_domains: [example.com]\n"
      "    - id: entra\n      kind: microsoft\n      client_id: m\n      client_secret_env: M\n"
      "      allowed_tenants: [9188040d-6c67-4c5b-b112-36a304b66dad]\n"
      "    - id: corp\n      kind: oidc\n      issuer: https://sso.example.com\n"
      "      client_id: c\n      client_secret_file: /etc/tidepool/corp.secret\n"
      "      allowed_groups: [eng]\n      id_token_algorithms: [ES256, RS256]\n"
      "    - id: github\n      kind: github\n      client_id: gh\n      client_secret_env: GH\n"
      "      allowed_github_orgs: [acme]\n",
      "  invite_required: true\n");
  ASSERT_THAT(config, IsOk());
  ASSERT_EQ(config->auth.providers.size(), 4u);
  EXPECT_TRUE(config->auth.invite_required);
  EXPECT_EQ(config->auth.providers[0].issuer, "https://accounts.google.com");
  EXPECT_EQ(config->auth.providers[0].display_name, "Sign in with Google");
  EXPECT_EQ(config->auth.providers[1].issuer,
            "https://login.microsoftonline.com/organizations/v2.0");
  EXPECT_EQ(config->auth.providers[2].id_token_algorithms,
            (std::vector<std::string>{"ES256", "RS256"}));
  EXPECT_EQ(config->auth.providers[3].github_api_url, "https://api.github.com");
}

TEST(IdentityProvidersTest, RejectsBadEntriesWithAClearMessage) {
  const std::string base = "      client_id: x\n      client_secret_env: X\n";
  struct Case {
    std::string yaml;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {"    - id: a\n      kind: saml\n" + base, "must be one of"},
           {"    - id: Bad_Id\n      kind: google\n" + base, "a-z, 0-9"},
           {"    - id: local\n      kind: google\n" + base, "reserved"},
           {"    - id: a\n      kind: oidc\n" + base, "needs issuer"},
           {"    - id: a\n      kind: oidc\n      issuer: http://sso.example.com\n" + base,
            "must use https"},
           {"    - id: a\n      kind: google\n      client_id: x\n", "exactly one of"},
           {"    - id: a\n      kind: google\n      client_id: x\n      client_secret_env: X\n"
            "      client_secret_file: /x\n",
            "exactly one of"},
           {"    - id: a\n      kind: google\n" + base + "      allowed_github_orgs: [x]\n",
            "only to kind github"},
           {"    - id: a\n      kind: google\n" + base + "      id_token_algorithms: [HS256]\n",
            "must be one of RS256"},
           {"    - id: a\n      kind: google\n" + base + "      typo: 1\n", "'typo'"},
           {"    - id: a\n      kind: google\n" + base + "    - id: a\n      kind: github\n" + base,
            "repeats the id"},
           {"    - just-a-string\n", "must be a map"},
       }) {
    EXPECT_THAT(Load(c.yaml), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << c.yaml;
  }
  EXPECT_THAT(LoadPlatformConfigFromString("auth:\n  providers: 3\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be a list")));
  EXPECT_THAT(LoadPlatformConfigFromString("auth:\n  local_accounts: false\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no way to sign in")));
}

TEST(IdentityProvidersTest, ClientSecretFileMustBeOwnerOnly) {
  tidepool::testing::ScopedTempDir tmp;
  IdentityProviderConfig provider;
  provider.id = "corp";
  provider.client_secret_file = tmp.Join("secret");
  EXPECT_THAT(ResolveClientSecret(provider),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("does not exist")));
  {
    std::ofstream out(provider.client_secret_file);
    out << "the-client-secret\n";
  }
  ASSERT_EQ(::chmod(provider.client_secret_file.c_str(), 0644), 0);
  absl::StatusOr<std::string> secret = ResolveClientSecret(provider);
  EXPECT_THAT(secret, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("chmod 600")));
  EXPECT_THAT(secret.status().message(), Not(HasSubstr("the-client-secret")));
  ASSERT_EQ(::chmod(provider.client_secret_file.c_str(), 0600), 0);
  EXPECT_THAT(ResolveClientSecret(provider),
              ::tidepool::testing::IsOkAndHolds(std::string("the-client-secret")));

  provider.client_secret_file.clear();
  provider.client_secret_env = "TIDEPOOL_TEST_UNSET_SECRET";
  ::unsetenv("TIDEPOOL_TEST_UNSET_SECRET");
  EXPECT_THAT(ResolveClientSecret(provider),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("is not set")));
  ::setenv("TIDEPOOL_TEST_UNSET_SECRET", "from-env", 1);
  EXPECT_THAT(ResolveClientSecret(provider), ::tidepool::testing::IsOkAndHolds(std::string("from-env")));
  ::unsetenv("TIDEPOOL_TEST_UNSET_SECRET");
}

}  // namespace
}  // namespace tidepool
