// The browser edge as deployed behind a TLS ingress (public_url https://...): cookies carry the
// __Host- prefix and Secure; the web UI's static files come from proxy.web_root; /healthz and
// /metrics answer on the edge. Real `tidepool up`, real local sign-in of the first admin.
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/platform_fixture.h"
#include "tests/testing/edge_browser.h"
#include "tests/testing/status_matchers.h"
#include "tidepool/audit/v1/audit_service.grpc.pb.h"
#include "tidepool/proxy/v1/proxy_admin_service.grpc.pb.h"

namespace tidepool {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::tidepool::testing::BinaryPath;
using ::tidepool::testing::EdgeBrowser;
using ::tidepool::testing::EdgeRequest;
using ::tidepool::testing::EdgeResponse;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::RawExchange;
using ::tidepool::testing::RunningPlatform;
using ::tidepool::testing::ScopedTempDir;
namespace proxypb = ::tidepool::proxy::v1;

constexpr char kHost[] = "tidepool.test";

class EdgeDeploymentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string web = tmp_.Join("web");
    std::filesystem::create_directories(web + "/assets");
    std::ofstream(web + "/index.html") << "<!doctype html><title>Tidepool UI</title>";
    std::ofstream(web + "/assets/app.js") << "console.log('tidepool');";
    std::ofstream(web + "/.env") << "SECRET=1";
    absl::StatusOr<std::unique_ptr<RunningPlatform>> platform = RunningPlatform::Start(
        {{BinaryPath("tidepool"), "up"}}, {"proxy"}, absl::Seconds(60),
        tidepool::testing::AllPortsZeroConfig(
            "", absl::StrCat("platform:\n  public_url: https://", kHost, "\n"),
            {{"proxy", absl::StrCat("  web_root: ", web, "\n  preview_domain: preview.example\n"
                                    "  trusted_forwarders: [\"127.0.0.0/8\"]\n")}}));
    ASSERT_THAT(platform, IsOk());
    platform_ = *std::move(platform);
    std::ifstream run(platform_->data_dir() + "/run/edge.json");
    const nlohmann::json edge = nlohmann::json::parse(run, nullptr, false);
    ASSERT_TRUE(edge.contains("http"));
    const std::string address = edge["http"];
    port_ = std::stoi(address.substr(address.rfind(':') + 1));
  }

  EdgeResponse Get(EdgeBrowser& browser, const std::string& target) {
    return browser.Send({.target = target, .host = kHost});
  }

  ScopedTempDir tmp_;
  std::unique_ptr<RunningPlatform> platform_;
  int port_ = 0;
};

TEST_F(EdgeDeploymentTest, BehindTlsTheCookiesAreHostPrefixedAndSecure) {
  std::smatch match;
  std::string out;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    out = platform_->processes().front()->Stdout();
    if (std::regex_search(out, match, std::regex("setup#(tps_[a-z2-7]{52})"))) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(match.size(), 2u) << out;
  EdgeBrowser browser(port_);
  EdgeRequest setup{.method = "POST",
                    .target = "/auth/setup",
                    .body = nlohmann::json{{"setupToken", match[1].str()},
                                           {"password", "a long enough passphrase 7"},
                                           {"timezone", "Europe/Berlin"}}
                                .dump(),
                    .host = kHost};
  setup.headers.push_back({"Origin", absl::StrCat("https://", kHost)});
  // The ingress (a trusted forwarder here) says who it saw; earlier entries are the client's.
  setup.headers.push_back({"X-Forwarded-For", "198.51.100.1, 203.0.113.9"});
  EdgeResponse signed_in = browser.Send(setup);
  ASSERT_EQ(signed_in.status, 200) << signed_in.body;
  ASSERT_EQ(signed_in.set_cookies.size(), 3u);
  for (const std::string& cookie : signed_in.set_cookies) {
    EXPECT_TRUE(absl::StartsWith(cookie, "__Host-tidepool_")) << cookie;
    EXPECT_THAT(cookie, HasSubstr("; Secure"));
    EXPECT_THAT(cookie, HasSubstr("; Path=/"));
    EXPECT_THAT(cookie, Not(HasSubstr("Domain")));
  }
  EXPECT_EQ(signed_in.Header("strict-transport-security"), "max-age=31536000");
  // The sign-in is audited with the person's address, as the ingress saw it.
  absl::StatusOr<TlsIdentity> cli = platform_->CliIdentity();
  ASSERT_THAT(cli, IsOk());
  absl::StatusOr<RunInfo> audit = platform_->Info("audit");
  ASSERT_THAT(audit, IsOk());
  auto audit_stub = audit::v1::AuditService::NewStub(DialPlatformService(*cli, audit->grpc));
  bool recorded = false;
  std::string seen;
  const absl::Time audit_deadline = absl::Now() + absl::Seconds(10);
  while (!recorded && absl::Now() < audit_deadline) {
    audit::v1::QueryResponse events;
    grpc::ClientContext context;
    if (audit_stub->Query(&context, {}, &events).ok()) {
      for (const auto& event : events.events()) {
        if (!event.source_address().empty()) absl::StrAppend(&seen, event.source_address(), " ");
        recorded |= event.source_address() == "203.0.113.9";
      }
    }
    if (!recorded) absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(recorded) << "addresses audited: " << seen;
  EdgeResponse me = Get(browser, "/auth/session");
  EXPECT_EQ(me.status, 200);
  EXPECT_THAT(me.body, HasSubstr("\"role\":\"admin\""));
  // The password sign-in refuses a cross-site form post (login CSRF).
  EdgeRequest cross = setup;
  cross.headers = {{"Origin", "https://evil.example"}};
  EXPECT_EQ(EdgeBrowser(port_).Send(cross).status, 403);
  // Platform cookies are sent only on the platform host: the development-mode names are not
  // accepted in their place.
  EdgeBrowser unprefixed(port_);
  unprefixed.cookies()["tidepool_session"] = browser.cookies().at("__Host-tidepool_session");
  EXPECT_EQ(Get(unprefixed, "/auth/session").status, 401);
}

TEST_F(EdgeDeploymentTest, ServesTheWebUiFilesAndOperationsEndpoints) {
  EdgeBrowser browser(port_);
  EdgeResponse index = Get(browser, "/");
  EXPECT_EQ(index.status, 200);
  EXPECT_THAT(index.body, HasSubstr("Tidepool UI"));
  EXPECT_THAT(index.Header("content-type"), HasSubstr("text/html"));
  EdgeResponse script = Get(browser, "/assets/app.js");
  EXPECT_EQ(script.status, 200);
  EXPECT_THAT(script.Header("content-type"), HasSubstr("text/javascript"));
  // The single-page app's own routes get index.html; missing files and dotfiles do not.
  EXPECT_THAT(Get(browser, "/workspaces/settings").body, HasSubstr("Tidepool UI"));
  EXPECT_EQ(Get(browser, "/assets/missing.css").status, 404);
  EXPECT_EQ(Get(browser, "/.env").status, 404);
  EXPECT_EQ(Get(browser, "/assets/../.env").status, 400);
  EXPECT_EQ(Get(browser, "/healthz").status, 200);
  EdgeResponse metrics = Get(browser, "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.body, HasSubstr("tidepool_edge_requests_total"));
  // Another host is neither the platform nor a preview.
  EXPECT_EQ(browser.Send({.target = "/", .host = "other.test"}).status, 421);
  // A preview host of the configured domain is recognized (and needs its own cookie).
  EdgeResponse preview = browser.Send(
      {.target = "/", .host = "8000-abcdefghijklmnopqrstuvwxyz.preview.example"});
  EXPECT_EQ(preview.status, 404);
  // The routes, as the admin surface lists them.
  absl::StatusOr<TlsIdentity> cli = platform_->CliIdentity();
  ASSERT_THAT(cli, IsOk());
  absl::StatusOr<RunInfo> proxy = platform_->Info("proxy");
  ASSERT_THAT(proxy, IsOk());
  auto admin = proxypb::ProxyAdminService::NewStub(DialPlatformService(*cli, proxy->grpc));
  proxypb::ListRoutesResponse routes;
  grpc::ClientContext context;
  ASSERT_TRUE(admin->ListRoutes(&context, {}, &routes).ok());
  std::string listed;
  for (const auto& route : routes.routes()) absl::StrAppend(&listed, route.host(), route.path_prefix(), " ", route.upstream(), " ");
  EXPECT_THAT(listed, HasSubstr("*/api/v1/"));
  EXPECT_THAT(listed, HasSubstr("<port>-<workspace>.preview.example/"));
  EXPECT_THAT(listed, HasSubstr(absl::StrCat("static:", tmp_.Join("web"))));
}

}  // namespace
}  // namespace tidepool
