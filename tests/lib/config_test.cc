#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/config_loader.h"
#include "lib/platform_config.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

TEST(PlatformConfigTest, DefaultsAreValidAndComplete) {
  PlatformConfig config = DefaultPlatformConfig();
  for (const std::string& name : ServiceNames()) {
    EXPECT_GT(config.Service(name).grpc_port, 0) << name;
    EXPECT_GT(config.Service(name).metrics_port, 0) << name;
    EXPECT_EQ(config.Service(name).grpc_address, "127.0.0.1") << name;
  }
  // An empty document applies nothing and passes the cross-key checks.
  absl::StatusOr<PlatformConfig> loaded = LoadPlatformConfigFromString("", "empty.yaml");
  ASSERT_THAT(loaded, IsOk());
  EXPECT_EQ(loaded->Service("audit").grpc_port, config.Service("audit").grpc_port);
  EXPECT_EQ(loaded->log_level, "info");
  EXPECT_TRUE(loaded->tls_auto_generate);
}

TEST(PlatformConfigTest, AppliesEveryKindOfSetting) {
  absl::StatusOr<PlatformConfig> config = LoadPlatformConfigFromString(
      "platform:\n  data_dir: /tmp/x\n  shutdown_grace: 1500ms\n"
      "log:\n  level: debug\n"
      "tls:\n  auto_generate: false\n  dir: /etc/tidepool/pki\n"
      "auth:\n  grpc_port: 0\n  metrics_port: 0\n  grpc_address: ::1\n",
      "t.yaml");
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->data_dir, "/tmp/x");
  EXPECT_EQ(config->shutdown_grace, absl::Milliseconds(1500));
  EXPECT_EQ(config->log_level, "debug");
  EXPECT_FALSE(config->tls_auto_generate);
  EXPECT_EQ(config->tls_dir, "/etc/tidepool/pki");
  EXPECT_EQ(config->Service("auth").grpc_port, 0);
  EXPECT_EQ(config->Service("auth").grpc_address, "::1");
  EXPECT_EQ(config->source, "t.yaml");
}

TEST(PlatformConfigTest, ChecksTheEdgeAndModelServerSettings) {
  absl::StatusOr<PlatformConfig> config = LoadPlatformConfigFromString(
      "proxy:\n  http_port: 0\n  preview_domain: preview.example.net\n"
      "  websocket_idle_timeout: 90s\nmodel_server:\n  base_url: http://10.0.0.5:8000/v1\n",
      "t.yaml");
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->proxy.http_port, 0);
  EXPECT_EQ(config->proxy.preview_domain, "preview.example.net");
  EXPECT_EQ(config->proxy.websocket_idle_timeout, absl::Seconds(90));
  EXPECT_EQ(config->model_server.base_url, "http://10.0.0.5:8000/v1");
  for (const char* bad : {"proxy:\n  preview_domain: https://preview.example.net\n",
                          "proxy:\n  preview_domain: preview.example.net:8443\n",
                          "proxy:\n  http_port: 70000\n",
                          "proxy:\n  websocket_idle_timeout: 1s\n",
                          "model_server:\n  base_url: ftp://models.example\n",
                          "model_server:\n  base_url: http://models.example:80x/v1\n",
                          "model_server:\n  base_url: http://user@models.example/v1\n"}) {
    EXPECT_THAT(LoadPlatformConfigFromString(bad, "t.yaml"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("t.yaml:")))
        << bad;
  }
}

TEST(PlatformConfigTest, RejectsUnknownKeyNamingFileLineAndKey) {
  EXPECT_THAT(LoadPlatformConfigFromString("auth:\n  grpc_port: 1\n  grpc_prot: 2\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "t.yaml:3: 'auth.grpc_prot' is not a known setting"));
  EXPECT_THAT(LoadPlatformConfigFromString("nonsense: 1\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'nonsense'")));
}

TEST(PlatformConfigTest, RejectsWrongTypes) {
  EXPECT_THAT(LoadPlatformConfigFromString("auth:\n  grpc_port: abc\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("t.yaml:2: 'auth.grpc_port' must be an integer in [0, 65535]")));
  EXPECT_THAT(LoadPlatformConfigFromString("tls:\n  auto_generate: yes please\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be true or false")));
  EXPECT_THAT(LoadPlatformConfigFromString("log:\n  level: loud\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'log.level' must be one of debug, info, warning, error")));
  EXPECT_THAT(LoadPlatformConfigFromString("platform:\n  shutdown_grace: soon\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be a duration")));
  EXPECT_THAT(LoadPlatformConfigFromString("auth: 7\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'auth' must be a section (a mapping)")));
  EXPECT_THAT(LoadPlatformConfigFromString("auth:\n  grpc_port: [1, 2]\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got a list")));
  EXPECT_THAT(
      LoadPlatformConfigFromString("auth:\n  grpc_address: \"a b\"\n", "t.yaml"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be a host name or IP address")));
  for (const char* user : {"root", "0:0", "12:x", "Bad User", "1000:0"}) {
    EXPECT_THAT(LoadPlatformConfigFromString(
                    absl::StrCat("provisioner:\n  sandbox_user: \"", user, "\"\n"), "t.yaml"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("'provisioner.sandbox_user' must be a user name")))
        << user;
  }
  for (const char* user : {"", "tidepool-sandbox", "_svc", "4242:4343"}) {
    EXPECT_THAT(LoadPlatformConfigFromString(
                    absl::StrCat("provisioner:\n  sandbox_user: \"", user, "\"\n"), "t.yaml"),
                IsOk())
        << user;
  }
}

TEST(PlatformConfigTest, RejectsBadPorts) {
  EXPECT_THAT(LoadPlatformConfigFromString("audit:\n  grpc_port: 70000\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'audit.grpc_port' must be an integer in [0, 65535], got 70000")));
  EXPECT_THAT(LoadPlatformConfigFromString("audit:\n  grpc_port: -1\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got -1")));
  EXPECT_THAT(LoadPlatformConfigFromString(
                  "audit:\n  grpc_port: 9000\nauth:\n  metrics_port: 9000\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("both use port 9000")));
  // Port 0 (pick a free one) may repeat.
  EXPECT_THAT(
      LoadPlatformConfigFromString("audit:\n  grpc_port: 0\nauth:\n  grpc_port: 0\n", "t.yaml"),
      IsOk());
}

TEST(PlatformConfigTest, RejectsMalformedYamlWithPosition) {
  EXPECT_THAT(LoadPlatformConfigFromString("auth:\n  grpc_port: [1,\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("t.yaml:")));
  EXPECT_THAT(LoadPlatformConfigFromString("- 1\n- 2\n", "t.yaml"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be a mapping")));
}

TEST(PlatformConfigTest, MissingAndUnreadableFilesAreErrors) {
  tidepool::testing::ScopedTempDir dir;
  EXPECT_THAT(LoadPlatformConfig(dir.Join("nope.yaml")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope.yaml does not exist")));
  EXPECT_THAT(LoadPlatformConfig(dir.path()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is a directory")));
  ASSERT_TRUE(tidepool::testing::WriteFile(dir.Join("ok.yaml"), "log:\n  level: error\n"));
  absl::StatusOr<PlatformConfig> config = LoadPlatformConfig(dir.Join("ok.yaml"));
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->log_level, "error");
}

TEST(PlatformConfigTest, KeysListEverySetting) {
  std::vector<std::string> keys = PlatformConfigKeys();
  EXPECT_THAT(keys, ::testing::Contains("auth.grpc_port"));
  EXPECT_THAT(keys, ::testing::Contains("proxy.metrics_address"));
  EXPECT_THAT(keys, ::testing::Contains("log.level"));
  EXPECT_THAT(keys, Not(::testing::Contains("auth")));
}

TEST(ConfigSchemaTest, StringListAndCustomCheck) {
  std::vector<std::string> hosts;
  std::string name = "x";
  ConfigSchema schema;
  schema.StringList("egress.hosts", &hosts, [](const std::string& v) {
    return v.find('/') == std::string::npos ? "" : "must not contain '/'";
  });
  schema.String("name", &name, [](const std::string& v) {
    return v.size() <= 3 ? "" : "must be at most 3 characters";
  });
  EXPECT_THAT(LoadYamlString("egress:\n  hosts: [a, b]\nname: abc\n", "s.yaml", schema), IsOk());
  EXPECT_THAT(hosts, ::testing::ElementsAre("a", "b"));
  EXPECT_EQ(name, "abc");
  EXPECT_THAT(LoadYamlString("egress:\n  hosts: [a, b/c]\n", "s.yaml", schema),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'egress.hosts' item 2 must not contain '/'")));
  EXPECT_THAT(LoadYamlString("name: abcd\n", "s.yaml", schema),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'name' must be at most 3 characters")));
  EXPECT_THAT(LoadYamlString("name:\n", "s.yaml", schema),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'name' has no value")));
  // A failed load leaves the bound value untouched.
  EXPECT_EQ(name, "abc");
}

}  // namespace
}  // namespace tidepool
