#include "services/provisioner/profile.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace tidepool::provisioner {
namespace {

using ::testing::HasSubstr;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

TEST(ProfileTest, TheShippedProfilesLoad) {
  absl::StatusOr<std::map<std::string, ToolProfile>> profiles =
      LoadProfiles(std::string(TIDEPOOL_SOURCE_DIR) + "/profiles");
  ASSERT_THAT(profiles, IsOk());
  ASSERT_TRUE(profiles->count("shell"));
  EXPECT_EQ(profiles->at("shell").command.front(), "/bin/sh");
  EXPECT_EQ(profiles->at("shell").health.http_port, 0);
  // The OpenClaw profile: its gateway behind the platform's identity header, its stamp with
  // the owner's keys merged in.
  ASSERT_TRUE(profiles->count("openclaw"));
  const ToolProfile& openclaw = profiles->at("openclaw");
  EXPECT_THAT(openclaw.command.front(), HasSubstr("/opt/tidepool/tools/node/"));
  EXPECT_EQ(openclaw.health.http_port, 18789);
  EXPECT_EQ(openclaw.health.http_path, "/readyz");
  EXPECT_THAT(openclaw.ports, ::testing::ElementsAre(18789));
  EXPECT_EQ(openclaw.identity.user_value, "user_id");
  EXPECT_TRUE(openclaw.identity.set_forwarded_headers);
  EXPECT_EQ(openclaw.identity.tool_base_path, "/w/{{workspace_id}}");
  EXPECT_GE(openclaw.min_memory_mib, 1536);
  EXPECT_EQ(openclaw.min_cpu_millicores, 2000);
  EXPECT_EQ(openclaw.owner_ready_path, "/w/{{workspace_id}}/control-ui-config.json");
  EXPECT_EQ(openclaw.env.at("OPENCLAW_CONFIG_READONLY"), "1");
  EXPECT_EQ(openclaw.env.at("OPENCLAW_CONFIG_PATH"), "/etc/tidepool/openclaw.json");
  ASSERT_EQ(openclaw.files.size(), 1u);
  EXPECT_EQ(openclaw.files[0].path, "openclaw.json");
  EXPECT_TRUE(openclaw.files[0].merge_keys);
  EXPECT_EQ(openclaw.schedule_format, "openclaw-sqlite");
}

TEST(ProfileTest, EnvValuesBasePathsAndMemoryFloorsAreRead) {
  absl::StatusOr<ToolProfile> profile = ParseProfile(
      "name: x\ncommand: [/bin/true]\nenv: {TZ_COPY: '{{timezone}}'}\nmin_memory_mib: 2048\n"
      "identity_headers: {user_header: x-user, tool_base_path: '/w/{{workspace_id}}'}\n"
      "files:\n  - path: c.json\n    template: '{}'\n    merge_keys: true\n",
      "p.yaml");
  ASSERT_THAT(profile, IsOk());
  EXPECT_EQ(profile->env.at("TZ_COPY"), "{{timezone}}");
  EXPECT_EQ(profile->min_memory_mib, 2048);
  EXPECT_EQ(profile->identity.tool_base_path, "/w/{{workspace_id}}");
  EXPECT_TRUE(profile->files.at(0).merge_keys);
}

TEST(ProfileTest, ReadsHealthPortsSchedulesAndIdentityHeaders) {
  absl::StatusOr<std::map<std::string, ToolProfile>> profiles =
      LoadProfiles(std::string(TIDEPOOL_SOURCE_DIR) + "/tests/provisioner/profiles");
  ASSERT_THAT(profiles, IsOk());
  const ToolProfile& web = profiles->at("webtool");
  EXPECT_EQ(web.health.http_port, 8765);
  EXPECT_EQ(web.health.http_path, "/");
  EXPECT_THAT(web.ports, ::testing::ElementsAre(8765));
  EXPECT_EQ(web.schedule_store, ".webtool/jobs.json");
  EXPECT_THAT(web.work_processes, ::testing::ElementsAre("python3"));
  EXPECT_TRUE(web.identity.enabled);
  EXPECT_EQ(web.identity.user_header, "x-forwarded-user");
  EXPECT_THAT(web.identity.strip_headers, ::testing::ElementsAre("x-forwarded-email"));
  const ToolProfile& guarded = profiles->at("guarded");
  ASSERT_EQ(guarded.files.size(), 1u);
  EXPECT_EQ(guarded.files[0].install_to, ".config/guarded/config.json");
  EXPECT_EQ(guarded.files[0].mode, 0600u);
}

TEST(ProfileTest, RejectsBadProfilesWithAClearMessage) {
  const std::string base = "name: x\ncommand: [/bin/true]\n";
  struct Case {
    std::string yaml;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {"command: [/bin/true]\n", "needs a name"},
           {"name: x\n", "needs a command"},
           {"name: x\ncommand: [sh]\n", "absolute path"},
           {base + "typo: 1\n", "unknown key 'typo'"},
           {base + "files:\n  - path: ../escape\n    template: x\n", "without '..'"},
           {base + "files:\n  - path: a\n    template: '{{secret}}'\n", "unknown template placeholder"},
           {base + "health:\n  http: {port: 0}\n", "health.http.port"},
           {base + "health:\n  http: {port: 80, path: nope}\n", "health.http.path"},
           {base + "files:\n  - path: a\n    template: x\n    install_to: ../a\n", "install_to"},
           {base + "files:\n  - path: a\n    template: x\n    install_to: /etc/a\n", "install_to"},
           {base + "files:\n  - path: a\n    template: x\n    install_to: d/\n", "install_to"},
           {base + "files:\n  - path: a\n    template: x\n    mode: \"4755\"\n", "setuid"},
           {base + "files:\n  - path: a\n    template: x\n    mode: \"0200\"\n", "owner-readable"},
           {base + "files:\n  - path: a\n    template: x\n    mode: \"9\"\n", "octal"},
           {base + "files:\n  - path: a\n    template: x\n    owner: root\n", "unknown key 'owner'"},
           {base + "files:\n  - path: stamp-manifest.json\n    template: x\n", "reserved"},
           {base + "ports: [70000]\n", "ports must be port numbers"},
           {base + "schedule_store: /etc/x\n", "schedule_store"},
           {base + "work_processes: make\n", "work_processes must be a list"},
           {base + "work_processes: [a-name-longer-than-15]\n", "at most 15 characters"},
           {base + "work_processes: [\"bin/make\"]\n", "work_processes"},
           {base + "identity_headers: {user_value: email}\n", "user_header"},
           {base + "identity_headers: {user_header: x-user, user_value: name}\n", "user_value"},
           {base + "identity_headers: {user_header: x-user, nope: 1}\n", "unknown key"},
           {base + "identity_headers: {user_header: x-user, tool_base_path: w}\n", "tool_base_path"},
           {base + "identity_headers: {user_header: x-user, tool_base_path: '/{{nope}}'}\n",
            "tool_base_path"},
           {base + "env: {A: '{{nope}}'}\n", "env A: unknown template placeholder"},
           {base + "min_memory_mib: lots\n", "min_memory_mib"},
           {base + "schedule_format: yaml\n", "schedule_format"},
           {base + "min_memory_mib: -1\n", "min_memory_mib"},
           {base + "min_cpu_millicores: 1e9\n", "min_cpu_millicores"},
           {base + "owner_ready_path: relative\n", "owner_ready_path must be a path"},
           {base + "owner_ready_path: /w/{{nope}}\n", "owner_ready_path must be a path"},
           {base + "owner_ready_path: /ready\n", "owner_ready_path needs identity_headers"},
           {base + "files:\n  - path: a\n    template: x\n    merge_keys: maybe\n", "merge_keys"},
           {"[1, 2]\n", "must be a map"},
       }) {
    EXPECT_THAT(ParseProfile(c.yaml, "p.yaml"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << c.yaml;
  }
}

TEST(ProfileTest, TemplatesRenderKnownPlaceholdersOnly) {
  EXPECT_THAT(RenderTemplate("tz={{timezone}} ws={{workspace_id}}",
                             {{"timezone", "UTC"}, {"workspace_id", "ws_x"}}),
              ::tidepool::testing::IsOkAndHolds(std::string("tz=UTC ws=ws_x")));
  EXPECT_THAT(RenderTemplate("{{nope}}", {}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(RenderTemplate("{{open", {}), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace tidepool::provisioner
