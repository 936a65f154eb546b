// The browser edge end to end, with real binaries: every platform service as its own process,
// a real OpenID Connect provider (the `oidc-provider` npm package) for two people, real
// bubblewrap workspaces running the headerecho test profile (a web UI that answers with what
// it received), and a test "browser" speaking HTTP and WebSocket to the edge.
// SECURITY-TESTS.md 2.5: the cross-tenant matrix, Origin checks, cookie flags, spoofed headers,
// path tricks, framing, previews, revocation closing open sockets, and waking on request.
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <netinet/in.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/idp_fixture.h"
#include "tests/integration/platform_fixture.h"
#include "tests/testing/edge_browser.h"
#include "tests/testing/http_get.h"
#include "tests/testing/status_matchers.h"
#include "tidepool/provisioner/v1/workspace_service.grpc.pb.h"
#include "tidepool/proxy/v1/proxy_admin_service.grpc.pb.h"
#include "tidepool/scaler/v1/scaler_service.grpc.pb.h"

namespace tidepool {
namespace {

using ::nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;
using ::tidepool::testing::BinaryPath;
using ::tidepool::testing::BrowserResult;
using ::tidepool::testing::EdgeBrowser;
using ::tidepool::testing::EdgeRequest;
using ::tidepool::testing::EdgeResponse;
using ::tidepool::testing::FollowUntil;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::NodeServer;
using ::tidepool::testing::RawExchange;
using ::tidepool::testing::RunningPlatform;
using ::tidepool::testing::ScopedTempDir;
namespace provisionerpb = ::tidepool::provisioner::v1;
namespace commonpb = ::tidepool::common::v1;
namespace proxypb = ::tidepool::proxy::v1;
namespace scalerpb = ::tidepool::scaler::v1;
using google::protobuf::util::TimeUtil;

// The edge's one 404 body (services/proxy/api_gateway.h).
constexpr char kNotFound[] = R"({"code":"NOT_FOUND","message":"not found"})";

// A loopback port nothing listens on, below the kernel's ephemeral range: a port the kernel
// hands out itself could be taken by any outgoing connection before the edge binds it.
int FreePort() {
  int low = 32768;
  if (std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range"); range) range >> low;
  std::mt19937 random(std::random_device{}());
  const int first = std::min(20000, low / 2);
  std::uniform_int_distribution<int> pick(first, std::max(first, low - 1));
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int port = pick(random);
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<uint16_t>(port));
    const bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
    ::close(fd);
    if (free) return port;
  }
  return 0;
}

class BrowserEdgeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { curl_global_init(CURL_GLOBAL_DEFAULT); }

  void SetUp() override {
    port_ = FreePort();
    origin_ = absl::StrCat("http://127.0.0.1:", port_);
    idp_ = NodeServer::Start(
        "oidc_idp.mjs",
        {{"name", "corp"},
         {"clients",
          {{{"client_id", "tidepool-corp"},
            {"client_secret", "secret-for-corp"},
            {"redirect_uris", {absl::StrCat(origin_, "/auth/callback/corp")}}}}},
         {"accounts",
          {{"alice", {{"sub", "alice-0001"}, {"email", "alice@corp.example"},
                      {"email_verified", true}, {"name", "Alice"}}},
           {"bob", {{"sub", "bob-0002"}, {"email", "bob@corp.example"},
                    {"email_verified", true}, {"name", "Bob"}}}}}},
        tmp_.path());
    ASSERT_NE(idp_, nullptr);
    ASSERT_TRUE(tidepool::testing::WriteTestFile(tmp_.Join("corp.secret"), "secret-for-corp\n"));
    const std::string providers = absl::StrCat(
        "  providers:\n    - id: corp\n      kind: oidc\n      display_name: Corp SSO\n"
        "      issuer: ", idp_->info()["issuer"].get<std::string>(),
        "\n      client_id: tidepool-corp\n      client_secret_file: ", tmp_.Join("corp.secret"),
        "\n");
    const std::string config = tidepool::testing::AllPortsZeroConfig(
        providers, absl::StrCat("platform:\n  public_url: ", origin_, "\n"),
        {{"proxy", absl::StrCat("  http_port: ", port_,
                                "\n  max_websockets_per_user: 4\n  activity_flush_interval: 1s\n")},
         {"scaler", "  check_interval: 5s\n"},
         {"provisioner", absl::StrCat("  profiles_dir: ", TIDEPOOL_SOURCE_DIR,
                                      "/tests/provisioner/profiles\n  default_profile: headerecho\n"
                                      "  hard_disk_quota: false\n")}});
    std::vector<std::vector<std::string>> commands;
    for (const char* name : {"audit", "auth", "secrets", "provisioner", "scaler", "proxy"}) {
      commands.push_back({BinaryPath(absl::StrCat("tidepool-", name))});
    }
    absl::StatusOr<std::unique_ptr<RunningPlatform>> platform = RunningPlatform::Start(
        commands, {"audit", "auth", "secrets", "provisioner", "scaler", "proxy"},
        absl::Seconds(60), config);
    ASSERT_THAT(platform, IsOk());
    platform_ = *std::move(platform);
    absl::StatusOr<TlsIdentity> cli = platform_->CliIdentity();
    ASSERT_THAT(cli, IsOk());
    absl::StatusOr<RunInfo> provisioner = platform_->Info("provisioner");
    ASSERT_THAT(provisioner, IsOk());
    provisioner_metrics_ = provisioner->metrics;
    workspaces_ =
        provisionerpb::WorkspaceService::NewStub(DialPlatformService(*cli, provisioner->grpc));
    absl::StatusOr<RunInfo> proxy = platform_->Info("proxy");
    ASSERT_THAT(proxy, IsOk());
    proxy_admin_ = proxypb::ProxyAdminService::NewStub(DialPlatformService(*cli, proxy->grpc));

    alice_ = SignIn("alice");
    bob_ = SignIn("bob");
    ASSERT_NE(alice_, nullptr);
    ASSERT_NE(bob_, nullptr);
    alice_ws_ = RunningWorkspace(*alice_);
    bob_ws_ = RunningWorkspace(*bob_);
    ASSERT_FALSE(alice_ws_.empty());
    ASSERT_FALSE(bob_ws_.empty());
  }

  void TearDown() override {
    if (workspaces_ != nullptr) tidepool::testing::DeleteAllWorkspaces(*workspaces_);
  }

  // Signs `login` in through the edge and the provider, as a browser does.
  std::unique_ptr<EdgeBrowser> SignIn(const std::string& login) {
    auto browser = std::make_unique<EdgeBrowser>(port_);
    EdgeResponse start = browser->Get("/auth/start/corp?return_path=%2F&timezone=Europe%2FBerlin");
    EXPECT_EQ(start.status, 302) << start.body;
    if (start.status != 302) return nullptr;
    BrowserResult idp = FollowUntil(absl::StrCat(start.Header("location"), "&login_hint=", login),
                                    absl::StrCat(origin_, "/auth/callback/corp"));
    EXPECT_FALSE(idp.final_url.empty()) << idp.trace;
    if (idp.final_url.empty()) return nullptr;
    EdgeResponse back = browser->Get(idp.final_url.substr(origin_.size()));
    EXPECT_EQ(back.status, 303) << back.body;
    EXPECT_EQ(back.Header("location"), "/");
    return browser;
  }

  // The person's workspace, once RUNNING (ensured through the API as the web UI does).
  std::string RunningWorkspace(EdgeBrowser& browser) {
    EdgeResponse ensured = browser.PostJson("/api/v1/provisioner/EnsureWorkspace", "{}");
    EXPECT_EQ(ensured.status, 200) << ensured.body;
    const json workspace = json::parse(ensured.body, nullptr, false);
    if (!workspace.contains("workspace")) return "";
    const std::string id = workspace["workspace"]["workspaceId"];
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      EdgeResponse got = browser.PostJson("/api/v1/provisioner/GetWorkspace",
                                          json{{"workspaceId", id}}.dump());
      if (absl::StrContains(got.body, "WORKSPACE_STATE_RUNNING")) return id;
      absl::SleepFor(absl::Milliseconds(50));
    }
    ADD_FAILURE() << "workspace " << id << " did not start";
    return "";
  }

  // Waits until the workspace's tool answers (a workspace is RUNNING once its supervisor is;
  // the tool may take a moment longer).
  void WaitForTool(EdgeBrowser& browser, const std::string& workspace) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      EdgeResponse status =
          browser.PostJson(absl::StrCat("/w/", workspace, "/_tidepool/v1/GetStatus"), "{}");
      if (absl::StrContains(status.body, "TOOL_HEALTH_HEALTHY")) return;
      absl::SleepFor(absl::Milliseconds(50));
    }
    ADD_FAILURE() << "the tool of " << workspace << " did not become healthy";
  }

  // How many GetEndpoint calls the provisioner has served: the edge's only way to a
  // workspace, so an unchanged count means no upstream contact.
  double GetEndpointCalls() {
    absl::StatusOr<testing::HttpResponse> metrics =
        testing::HttpGet(provisioner_metrics_, "/metrics");
    if (!metrics.ok()) return -1;
    double total = 0;
    for (absl::string_view line : absl::StrSplit(metrics->body, '\n')) {
      if (!absl::StartsWith(line, "tidepool_grpc_server_started_total") ||
          !absl::StrContains(line, "grpc_method=\"GetEndpoint\"")) {
        continue;
      }
      double value = 0;
      if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) total += value;
    }
    return total;
  }

  std::string TerminalTarget(const std::string& workspace, const std::string& session) {
    return absl::StrCat("/w/", workspace, "/_tidepool/v1/terminal?session_id=", session,
                        "&cols=120&rows=40");
  }

  // Types `command` into a terminal of `workspace` and reads until `until` shows up.
  std::string RunInTerminal(EdgeBrowser& browser, const std::string& workspace,
                            const std::string& command, const std::string& until) {
    absl::StatusOr<std::unique_ptr<EdgeBrowser::WebSocket>> terminal =
        browser.OpenWebSocket(TerminalTarget(workspace, "t-run"), origin_);
    if (!terminal.ok()) return absl::StrCat("no terminal: ", terminal.status().message());
    (void)(*terminal)->Write(command + "\n", /*binary=*/true);
    std::string output;
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline && !absl::StrContains(output, until)) {
      absl::StatusOr<std::string> chunk = (*terminal)->Read(absl::Seconds(2));
      if (chunk.ok()) output += *chunk;
    }
    return output;
  }

  std::string PreviewHost(int port, const std::string& workspace) {
    return absl::StrCat(port, "-", workspace.substr(3), ".preview.localhost:", port_);
  }

  ScopedTempDir tmp_;
  int port_ = 0;
  std::string origin_;
  std::unique_ptr<NodeServer> idp_;
  std::unique_ptr<RunningPlatform> platform_;
  std::string provisioner_metrics_;
  std::unique_ptr<provisionerpb::WorkspaceService::Stub> workspaces_;
  std::unique_ptr<proxypb::ProxyAdminService::Stub> proxy_admin_;
  std::unique_ptr<EdgeBrowser> alice_;
  std::unique_ptr<EdgeBrowser> bob_;
  std::string alice_ws_;
  std::string bob_ws_;
};

TEST_F(BrowserEdgeTest, SignInSetsHostOnlyHttpOnlyCookiesAndPlatformPagesAreLockedDown) {
  const std::string session = alice_->cookie_lines().at("tidepool_session");
  EXPECT_THAT(session, HasSubstr("; Path=/"));
  EXPECT_THAT(session, HasSubstr("; HttpOnly"));
  EXPECT_THAT(session, HasSubstr("; SameSite=Lax"));
  EXPECT_THAT(session, Not(HasSubstr("Domain=")));
  EXPECT_THAT(alice_->cookie_lines().at("tidepool_refresh"), HasSubstr("; HttpOnly"));
  // The CSRF value is for the page's script to echo back; it is not a credential.
  EXPECT_THAT(alice_->cookie_lines().at("tidepool_csrf"), Not(HasSubstr("HttpOnly")));
  EXPECT_EQ(alice_->cookies().count("tidepool_signin"), 0u) << "the sign-in binding is cleared";

  EdgeResponse me = alice_->Get("/auth/session");
  ASSERT_EQ(me.status, 200);
  EXPECT_THAT(me.body, HasSubstr("\"role\":\"user\""));
  EdgeResponse page = alice_->Get("/");
  EXPECT_EQ(page.status, 200);
  EXPECT_THAT(page.Header("content-security-policy"), HasSubstr("frame-ancestors 'none'"));
  EXPECT_EQ(page.Header("x-frame-options"), "DENY");
  EXPECT_EQ(page.Header("x-content-type-options"), "nosniff");
  EXPECT_EQ(page.Header("cross-origin-resource-policy"), "same-origin");
  EdgeResponse anonymous = EdgeBrowser(port_).Get("/auth/session");
  EXPECT_EQ(anonymous.status, 401);
}

TEST_F(BrowserEdgeTest, CrossTenantMatrixAnswersOneByteIdentical404WithoutUpstreamContact) {
  const std::string nowhere = "ws_" + std::string(26, 'q');
  EdgeBrowser anonymous(port_);
  EdgeBrowser forged(port_);
  forged.cookies()["tidepool_session"] = "eyJhbGciOiJFZERTQSJ9.e30.AAAA";
  forged.cookies()["tidepool_csrf"] = "x";
  const double endpoint_calls = GetEndpointCalls();
  ASSERT_GE(endpoint_calls, 0);

  struct Probe {
    std::string name;
    std::string method;
    std::string suffix;  // after /w/<id>
    std::string body;
  };
  const std::vector<Probe> probes = {
      {"tool page", "GET", "/", ""},
      {"tool path", "GET", "/anything?x=1", ""},
      {"file list", "POST", "/_tidepool/v1/ListFiles", "{}"},
      {"status", "POST", "/_tidepool/v1/GetStatus", "{}"},
      {"download", "GET", "/_tidepool/v1/download?path=notes.txt", ""},
      {"upload", "PUT",
       "/_tidepool/v1/upload?upload_id=abcdefghijklmnopqrstuvwxyz234567&path=x&offset=0&total_size=3",
       "abc"},
      {"delete", "POST", "/_tidepool/v1/DeletePath", "{\"path\":\"x\"}"},
  };
  for (EdgeBrowser* who : {bob_.get(), &anonymous, &forged}) {
    for (const Probe& probe : probes) {
      std::string bodies[2];
      int index = 0;
      for (const std::string& workspace : {alice_ws_, nowhere}) {
        EdgeRequest request{.method = probe.method,
                            .target = absl::StrCat("/w/", workspace, probe.suffix),
                            .body = probe.body};
        request.headers.push_back({"Origin", origin_});
        EdgeResponse response = who->Send(request);
        EXPECT_EQ(response.status, 404) << probe.name << " " << workspace;
        bodies[index++] = response.body;
      }
      EXPECT_EQ(bodies[0], kNotFound) << probe.name;
      EXPECT_EQ(bodies[0], bodies[1]) << probe.name << ": exists-but-not-yours must look absent";
    }
    for (const std::string& workspace : {alice_ws_, nowhere}) {
      for (const std::string& target :
           {TerminalTarget(workspace, "probe"), absl::StrCat("/w/", workspace, "/ws")}) {
        int status = 0;
        absl::StatusOr<std::unique_ptr<EdgeBrowser::WebSocket>> socket =
            who->OpenWebSocket(target, origin_, "", true, &status);
        EXPECT_FALSE(socket.ok()) << target;
        EXPECT_EQ(status, 404) << target;
      }
      // A preview of the workspace, asked for without a navigation (fetch, XHR).
      EdgeRequest preview{.target = "/"};
      preview.host = PreviewHost(8000, workspace);
      EdgeResponse answered = who->Send(preview);
      EXPECT_EQ(answered.status, 404);
      EXPECT_EQ(answered.body, kNotFound);
    }
  }
  // The API: another person's workspace is the same 404 as none at all.
  EdgeResponse theirs = bob_->PostJson("/api/v1/provisioner/GetWorkspace",
                                       json{{"workspaceId", alice_ws_}}.dump());
  EdgeResponse none = bob_->PostJson("/api/v1/provisioner/GetWorkspace",
                                     json{{"workspaceId", nowhere}}.dump());
  EXPECT_EQ(theirs.status, 404);
  EXPECT_EQ(theirs.body, kNotFound);
  EXPECT_EQ(theirs.body, none.body);
  // Bob asking the platform for a ticket to Alice's preview host.
  EdgeResponse ticket = bob_->Get(absl::StrCat(
      "/preview-auth?host=", PreviewHost(8000, alice_ws_), "&path=%2F"));
  EXPECT_EQ(ticket.status, 404);
  EXPECT_EQ(ticket.body, kNotFound);

  EXPECT_EQ(GetEndpointCalls(), endpoint_calls) << "a probe reached a workspace";
  // The counter does move when the owner asks (so the check above can fail).
  EdgeRequest own{.method = "POST", .target = absl::StrCat("/w/", alice_ws_, "/_tidepool/v1/ListFiles"),
                  .body = "{}"};
  own.headers.push_back({"Origin", origin_});
  EXPECT_EQ(alice_->Send(own).status, 200);
  EXPECT_GT(GetEndpointCalls(), endpoint_calls);
}

TEST_F(BrowserEdgeTest, WebSocketsNeedExactlyThePlatformOrigin) {
  for (const std::string& origin :
       {std::string("https://evil.example"), std::string("null"), std::string(),
        absl::StrCat(origin_, ".evil.example"), absl::StrCat("http://127.0.0.1:", port_ + 1),
        absl::StrCat("https://127.0.0.1:", port_), absl::StrCat("http://localhost.evil:", port_),
        absl::StrCat("http://", PreviewHost(8000, alice_ws_))}) {
    int status = 0;
    absl::StatusOr<std::unique_ptr<EdgeBrowser::WebSocket>> socket =
        alice_->OpenWebSocket(TerminalTarget(alice_ws_, "origin"), origin, "", true, &status);
    EXPECT_FALSE(socket.ok()) << "origin '" << origin << "'";
    EXPECT_EQ(status, 403) << "origin '" << origin << "'";
  }
  const std::string output = RunInTerminal(*alice_, alice_ws_, "echo edge-$((6*7))", "edge-42");
  EXPECT_THAT(output, HasSubstr("edge-42"));
}

TEST_F(BrowserEdgeTest, TheWorkspaceSeesNoPlatformCredentialAndOnlyTheProxysIdentity) {
  WaitForTool(*alice_, alice_ws_);
  EdgeRequest request{.target = absl::StrCat("/w/", alice_ws_, "/echo?q=1")};
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"X-Forwarded-User", "bob"},
           {"X-Forwarded-For", "203.0.113.66"},
           {"X-Forwarded-Host", "evil.example"},
           {"X-Forwarded-Proto", "https"},
           {"Forwarded", "for=203.0.113.66;host=evil.example"},
           {"X-Real-IP", "203.0.113.66"},
           {"X-Remote-User", "bob"},
           {"X-Auth-Request-User", "bob"},
           {"X-Auth-Request-Email", "bob@corp.example"},
           {"X-Tidepool-Credential", "forged"},
           {"X-Tidepool-Preview-Port", "22"},
           {"X-Openclaw-Token", "stolen"},
           {"Authorization", "Bearer platform-token"}}) {
    request.headers.push_back({name, value});
  }
  alice_->cookies()["app"] = "1";
  EdgeResponse response = alice_->Send(request);
  alice_->cookies().erase("app");
  ASSERT_EQ(response.status, 200) << response.body;
  const json seen = json::parse(response.body, nullptr, false);
  ASSERT_TRUE(seen.contains("headers")) << response.body;
  const json& headers = seen["headers"];
  EXPECT_EQ(seen["target"], "/echo?q=1");
  const std::string me = json::parse(alice_->Get("/auth/session").body)["userId"];
  EXPECT_EQ(headers.value("x-forwarded-user", ""), me) << "set by the proxy, never the client's";
  // The browser here is on the edge's own host: named by TEST-NET-1, never as loopback (a tool
  // must not read it as "local, trusted"; OpenClaw refuses it as unattributed).
  EXPECT_EQ(headers.value("x-forwarded-for", ""), "192.0.2.1");
  EXPECT_EQ(headers.value("x-forwarded-host", ""), absl::StrCat("127.0.0.1:", port_));
  EXPECT_EQ(headers.value("x-forwarded-proto", ""), "http");
  EXPECT_EQ(headers.value("cookie", ""), "app=1") << "platform cookies are stripped";
  // A HEAD through the workspace, then another request on the same connection: the answer's
  // end is found without waiting for a body.
  const std::string two = RawExchange(
      port_, absl::StrCat("HEAD /w/", alice_ws_, "/echo HTTP/1.1\r\nHost: 127.0.0.1:", port_,
                          "\r\nCookie: ", alice_->CookieHeader(), "\r\n\r\nGET /healthz HTTP/1.1\r\n",
                          "Host: 127.0.0.1:", port_, "\r\nConnection: close\r\n\r\n"),
      absl::Seconds(10));
  EXPECT_TRUE(absl::StartsWith(two, "HTTP/1.1 200")) << two.substr(0, 80);
  EXPECT_THAT(two, HasSubstr("\r\n\r\nHTTP/1.1 200 OK")) << "the second request was not answered";
  EXPECT_TRUE(absl::EndsWith(two, "ok\n")) << two;
  for (const char* gone : {"forwarded", "x-real-ip", "x-remote-user", "x-auth-request-user",
                           "x-auth-request-email", "x-tidepool-credential",
                           "x-tidepool-preview-port", "x-openclaw-token", "authorization"}) {
    EXPECT_FALSE(headers.contains(gone)) << gone << " reached the workspace";
  }
}

TEST_F(BrowserEdgeTest, NonCanonicalPathsAndAmbiguousFramingAreRefused) {
  const std::string cookie = alice_->CookieHeader();
  const std::string host = absl::StrCat("127.0.0.1:", port_);
  auto exchange = [&](const std::string& target) {
    return RawExchange(port_, absl::StrCat("GET ", target, " HTTP/1.1\r\nHost: ", host,
                                           "\r\nCookie: ", cookie, "\r\nConnection: close\r\n\r\n"));
  };
  const std::string a = alice_ws_;
  const std::string b = bob_ws_;
  for (const std::string& target :
       {absl::StrCat("/w/", a, "/../", b, "/"), absl::StrCat("/w/", a, "/%2e%2e/", b, "/"),
        absl::StrCat("/w/", a, "/%2E%2E/", b, "/"), absl::StrCat("/w/", a, "%2f..%2f", b, "/"),
        absl::StrCat("/w/", a, "/%252e%252e/", b, "/"), absl::StrCat("/w/", a, ";x=1/"),
        absl::StrCat("/w/", a, "\\..\\", b, "/"), absl::StrCat("/w/", a, "/%c0%ae%c0%ae/", b, "/"),
        absl::StrCat("/w//", a, "/"), absl::StrCat("/w/", a, "/./x"), absl::StrCat("/w/", a, "/%00"),
        absl::StrCat("http://", host, "/w/", a, "/")}) {
    const std::string answer = exchange(target);
    EXPECT_TRUE(absl::StartsWith(answer, "HTTP/1.1 400")) << target << " -> " << answer.substr(0, 60);
  }
  const std::vector<std::string> framings = {
      // Content-Length and Transfer-Encoding together (CL.TE / TE.CL).
      absl::StrCat("POST /healthz HTTP/1.1\r\nHost: ", host,
                   "\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
      // Obfuscated transfer codings.
      absl::StrCat("POST /healthz HTTP/1.1\r\nHost: ", host,
                   "\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
      absl::StrCat("POST /healthz HTTP/1.1\r\nHost: ", host,
                   "\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
      absl::StrCat("POST /healthz HTTP/1.1\r\nHost: ", host,
                   "\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
      // Two Hosts; two differing lengths.
      absl::StrCat("GET /healthz HTTP/1.1\r\nHost: ", host, "\r\nHost: evil.example\r\n\r\n"),
      absl::StrCat("POST /healthz HTTP/1.1\r\nHost: ", host,
                   "\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
  };
  for (const std::string& bytes : framings) {
    const std::string answer = RawExchange(port_, bytes);
    EXPECT_TRUE(absl::StartsWith(answer, "HTTP/1.1 400")) << bytes << " -> " << answer.substr(0, 60);
    // One answer, then the connection is closed: nothing smuggled behind it is served.
    EXPECT_EQ(answer.find("HTTP/1.1", 1), std::string::npos) << bytes;
  }
  // An unknown host is not the platform's and not a preview.
  const std::string misdirected = RawExchange(
      port_, "GET /healthz HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(misdirected, "HTTP/1.1 421")) << misdirected.substr(0, 60);
}

TEST_F(BrowserEdgeTest, TheApiNeedsTheCsrfTokenAndTheExactOrigin) {
  EdgeRequest request{.method = "POST", .target = "/api/v1/provisioner/ListWorkspaces", .body = "{}"};
  request.headers.push_back({"Origin", origin_});
  EXPECT_EQ(alice_->Send(request).status, 403) << "no CSRF header";
  request.headers.push_back({"X-Tidepool-CSRF", "wrong"});
  EXPECT_EQ(alice_->Send(request).status, 403) << "wrong CSRF value";
  request.headers.back().second = alice_->cookies().at("tidepool_csrf");
  EXPECT_EQ(alice_->Send(request).status, 200);
  request.headers.front().second = absl::StrCat("http://", PreviewHost(8000, alice_ws_));
  EdgeResponse from_preview = alice_->Send(request);
  EXPECT_EQ(from_preview.status, 403) << "a preview page calling the API with credentials";
  EXPECT_EQ(from_preview.Header("access-control-allow-origin"), "");
  EXPECT_EQ(alice_->Get("/api/v1/provisioner/ListWorkspaces").status, 405);
}

TEST_F(BrowserEdgeTest, PreviewsLiveOnTheirOwnHostWithAOneHostCookieMintedThroughThePlatform) {
  // A dev server in Alice's workspace, and one that tries to toss a cookie to sibling hosts.
  const std::string started = RunInTerminal(
      *alice_, alice_ws_,
      "cd ~ && printf '%s\\n' 'import http.server as h' 'class H(h.BaseHTTPRequestHandler):' "
      "' def do_GET(s):' "
      "'  s.send_response(200); s.send_header(\"Set-Cookie\", \"t=1; Domain=preview.localhost; "
      "Path=/\"); s.send_header(\"Content-Length\", \"2\"); s.end_headers(); s.wfile.write(b\"ok\")' "
      "'h.ThreadingHTTPServer((\"127.0.0.1\", 8001), H).serve_forever()' > toss.py && "
      "(python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &) && "
      "(python3 toss.py >/dev/null 2>&1 &) && echo servers-$((2+3))",
      "servers-5");
  ASSERT_THAT(started, HasSubstr("servers-5"));
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  bool listening = false;
  while (absl::Now() < deadline && !listening) {
    EdgeResponse ports =
        alice_->PostJson(absl::StrCat("/w/", alice_ws_, "/_tidepool/v1/ListPorts"), "{}");
    listening = absl::StrContains(ports.body, "\"port\":8000") &&
                absl::StrContains(ports.body, "\"port\":8001");
    if (!listening) absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(listening);

  const std::string host = PreviewHost(8000, alice_ws_);
  EdgeBrowser tab(port_);  // the preview origin's own cookie jar
  EdgeRequest navigate{.target = "/?a=b", .host = host};
  navigate.headers.push_back({"Accept", "text/html"});
  EdgeResponse first = tab.Send(navigate);
  ASSERT_EQ(first.status, 302);
  const std::string platform_hop = first.Header("location");
  ASSERT_TRUE(absl::StartsWith(platform_hop, origin_ + "/preview-auth?")) << platform_hop;
  // The platform, with Alice's session, mints a one-minute ticket for that one host.
  EdgeResponse minted = alice_->Get(platform_hop.substr(origin_.size()));
  ASSERT_EQ(minted.status, 302) << minted.body;
  const std::string callback = minted.Header("location");
  const std::string callback_prefix = absl::StrCat("http://", host, "/__tidepool/preview-callback?");
  ASSERT_TRUE(absl::StartsWith(callback, callback_prefix)) << callback;
  const std::string callback_target = callback.substr(std::string("http://").size() + host.size());
  EdgeResponse landed = tab.Send({.target = callback_target, .host = host});
  ASSERT_EQ(landed.status, 303);
  EXPECT_EQ(landed.Header("location"), "/?a=b");
  const std::string cookie = tab.cookie_lines().at("tidepool_preview");
  EXPECT_THAT(cookie, HasSubstr("HttpOnly"));
  EXPECT_THAT(cookie, Not(HasSubstr("Domain=")));
  EdgeResponse page = tab.Send({.target = "/", .host = host});
  EXPECT_EQ(page.status, 200);
  EXPECT_THAT(page.body, HasSubstr("Directory listing"));
  // The way back must stay on the preview host: "/\\evil.example" would leave it.
  EdgeResponse off_site = alice_->Get(absl::StrCat("/preview-auth?host=", host, "&path=%2F%5Cevil.example"));
  ASSERT_EQ(off_site.status, 302);
  EXPECT_TRUE(absl::EndsWith(off_site.Header("location"), "&path=%2F")) << off_site.Header("location");
  // The ticket is single use.
  EdgeBrowser thief(port_);
  EXPECT_EQ(thief.Send({.target = callback_target, .host = host}).status, 404);
  // The cookie is good for its own host only, not a sibling port of the same workspace.
  EdgeRequest sibling{.target = "/", .host = PreviewHost(8001, alice_ws_)};
  EXPECT_EQ(tab.Send(sibling).status, 404);
  // A preview's attempt to set a cookie for the whole preview domain is made host-only.
  EdgeBrowser toss_tab(port_);
  EdgeResponse toss_hop = toss_tab.Send({.target = "/", .host = PreviewHost(8001, alice_ws_),
                                         .headers = {{"Accept", "text/html"}}});
  ASSERT_EQ(toss_hop.status, 302);
  EdgeResponse toss_minted = alice_->Get(toss_hop.Header("location").substr(origin_.size()));
  const std::string toss_callback = toss_minted.Header("location");
  ASSERT_EQ(toss_tab
                .Send({.target = toss_callback.substr(toss_callback.find("/__tidepool")),
                       .host = PreviewHost(8001, alice_ws_)})
                .status,
            303);
  EdgeResponse tossed = toss_tab.Send({.target = "/", .host = PreviewHost(8001, alice_ws_)});
  EXPECT_EQ(tossed.body, "ok");
  ASSERT_EQ(tossed.set_cookies.size(), 1u);
  EXPECT_THAT(tossed.set_cookies[0], Not(HasSubstr("Domain")));
  // A dev server's hot-reload WebSocket works on the preview host, from its own origin only.
  const std::string hot_reload =
      "const http = require('http'), crypto = require('crypto');\n"
      "const server = http.createServer((q, r) => r.end('ok'));\n"
      "server.on('upgrade', (q, socket) => {\n"
      "  const key = crypto.createHash('sha1').update(q.headers['sec-websocket-key'] +\n"
      "      '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');\n"
      "  socket.write('HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\n' +\n"
      "      'Connection: Upgrade\\r\\nSec-WebSocket-Accept: ' + key + '\\r\\n\\r\\n');\n"
      "  socket.on('data', (d) => {\n"
      "    const n = d[1] & 127, mask = d.subarray(2, 6);\n"
      "    const text = Buffer.from(d.subarray(6, 6 + n).map((b, i) => b ^ mask[i % 4]));\n"
      "    socket.write(Buffer.concat([Buffer.from([0x81, text.length]), text]));\n"
      "  });\n"
      "});\n"
      "server.listen(8002, '127.0.0.1');\n";
  EdgeRequest upload{.method = "PUT",
                     .target = absl::StrCat("/w/", alice_ws_,
                                            "/_tidepool/v1/upload?upload_id=hotreloadhotreloadhotreload2345"
                                            "&path=hot.js&offset=0&total_size=",
                                            hot_reload.size()),
                     .body = hot_reload};
  upload.headers.push_back({"Origin", origin_});
  ASSERT_EQ(alice_->Send(upload).status, 200);
  ASSERT_THAT(RunInTerminal(*alice_, alice_ws_, "(node ~/hot.js >/dev/null 2>&1 &) ; echo hot-$((3*3))",
                            "hot-9"),
              HasSubstr("hot-9"));
  const std::string hot_host = PreviewHost(8002, alice_ws_);
  EdgeBrowser hot_tab(port_);
  EdgeResponse hot_hop = hot_tab.Send({.target = "/", .host = hot_host, .headers = {{"Accept", "text/html"}}});
  ASSERT_EQ(hot_hop.status, 302);
  const std::string hot_callback =
      alice_->Get(hot_hop.Header("location").substr(origin_.size())).Header("location");
  ASSERT_EQ(hot_tab.Send({.target = hot_callback.substr(hot_callback.find("/__tidepool")),
                          .host = hot_host})
                .status,
            303);
  absl::StatusOr<std::unique_ptr<EdgeBrowser::WebSocket>> hot;
  const absl::Time hot_deadline = absl::Now() + absl::Seconds(15);
  do {
    hot = hot_tab.OpenWebSocket("/ws", absl::StrCat("http://", hot_host), hot_host);
    if (!hot.ok()) absl::SleepFor(absl::Milliseconds(100));
  } while (!hot.ok() && absl::Now() < hot_deadline);
  ASSERT_THAT(hot, IsOk());
  ASSERT_THAT((*hot)->Write("reload"), IsOk());
  absl::StatusOr<std::string> reloaded = (*hot)->Read(absl::Seconds(5));
  ASSERT_THAT(reloaded, IsOk());
  EXPECT_EQ(*reloaded, "reload");
  int hot_status = 0;
  EXPECT_FALSE(hot_tab.OpenWebSocket("/ws", origin_, hot_host, true, &hot_status).ok())
      << "the platform's origin is not the preview's";
  EXPECT_EQ(hot_status, 403);
  // Reserved ports are never previews: the tool's own, the egress relay, privileged ones.
  for (int reserved : {8767, 3128, 22}) {
    EdgeBrowser reserved_tab(port_);
    EdgeResponse hop = reserved_tab.Send(
        {.target = "/", .host = PreviewHost(reserved, alice_ws_), .headers = {{"Accept", "text/html"}}});
    ASSERT_EQ(hop.status, 302);
    EdgeResponse ok = alice_->Get(hop.Header("location").substr(origin_.size()));
    const std::string location = ok.Header("location");
    ASSERT_EQ(reserved_tab
                  .Send({.target = location.substr(location.find("/__tidepool")),
                         .host = PreviewHost(reserved, alice_ws_)})
                  .status,
              303);
    EXPECT_EQ(reserved_tab.Send({.target = "/", .host = PreviewHost(reserved, alice_ws_)}).status,
              404)
        << reserved;
  }
}

TEST_F(BrowserEdgeTest, SigningOutClosesOpenSocketsWithinFiveSeconds) {
  WaitForTool(*alice_, alice_ws_);
  absl::StatusOr<std::unique_ptr<EdgeBrowser::WebSocket>> terminal =
      alice_->OpenWebSocket(TerminalTarget(alice_ws_, "revoke"), origin_);
  ASSERT_THAT(terminal, IsOk());
  absl::StatusOr<std::unique_ptr<EdgeBrowser::WebSocket>> tool =
      alice_->OpenWebSocket(absl::StrCat("/w/", alice_ws_, "/ws"), origin_);
  ASSERT_THAT(tool, IsOk());
  ASSERT_THAT((*tool)->Write("ping"), IsOk());
  absl::StatusOr<std::string> echoed = (*tool)->Read(absl::Seconds(5));
  ASSERT_THAT(echoed, IsOk());
  EXPECT_EQ(*echoed, "ping");
  // The admin surface lists them.
  proxypb::ListConnectionsRequest list;
  list.set_workspace_id(alice_ws_);
  proxypb::ListConnectionsResponse listed;
  grpc::ClientContext context;
  ASSERT_TRUE(proxy_admin_->ListConnections(&context, list, &listed).ok());
  int terminals = 0;
  for (const auto& c : listed.connections()) terminals += c.kind() == proxypb::CONNECTION_KIND_TERMINAL;
  EXPECT_EQ(terminals, 1) << listed.ShortDebugString();

  EdgeBrowser stale = *alice_;  // the cookies as they were before signing out
  const absl::Time signed_out = absl::Now();
  EdgeRequest signout{.method = "POST", .target = "/auth/signout"};
  signout.headers.push_back({"Origin", origin_});
  ASSERT_EQ(alice_->Send(signout).status, 200);
  for (EdgeBrowser::WebSocket* socket : {terminal->get(), tool->get()}) {
    int code = 0;
    absl::StatusOr<std::string> message;
    do {
      message = socket->Read(absl::Seconds(6), &code);
    } while (message.ok());
    const absl::Duration took = absl::Now() - signed_out;
    EXPECT_LT(took, absl::Seconds(5));
    EXPECT_EQ(code, 1008);
    std::cerr << "socket closed " << absl::FormatDuration(took) << " after sign-out\n";
  }
  EXPECT_EQ(stale.Get("/auth/session").status, 401);
  EXPECT_EQ(stale.PostJson("/api/v1/provisioner/ListWorkspaces", "{}").status, 401);
}

TEST_F(BrowserEdgeTest, AnOperatorCanCloseAPersonsConnections) {
  absl::StatusOr<std::unique_ptr<EdgeBrowser::WebSocket>> terminal =
      alice_->OpenWebSocket(TerminalTarget(alice_ws_, "operator"), origin_);
  ASSERT_THAT(terminal, IsOk());
  const std::string me = json::parse(alice_->Get("/auth/session").body)["userId"];
  proxypb::CloseConnectionsRequest request;
  request.set_user_id(me);
  request.set_reason("admin");
  proxypb::CloseConnectionsResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(proxy_admin_->CloseConnections(&context, request, &response).ok());
  EXPECT_GE(response.closed_count(), 1);
  int code = 0;
  absl::StatusOr<std::string> message;
  do {
    message = (*terminal)->Read(absl::Seconds(5), &code);
  } while (message.ok());
  EXPECT_EQ(code, 1008);
  // Closing is not signing out: the session still works for the next request.
  EXPECT_EQ(alice_->Get("/auth/session").status, 200);
  proxypb::CloseConnectionsRequest malformed;
  malformed.set_user_id("alice");
  grpc::ClientContext bad_context;
  EXPECT_EQ(proxy_admin_->CloseConnections(&bad_context, malformed, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(BrowserEdgeTest, EachPersonHasACapOnOpenWebSockets) {
  WaitForTool(*alice_, alice_ws_);
  const std::string target = absl::StrCat("/w/", alice_ws_, "/ws");
  std::vector<std::unique_ptr<EdgeBrowser::WebSocket>> open;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<std::unique_ptr<EdgeBrowser::WebSocket>> socket =
        alice_->OpenWebSocket(target, origin_);
    ASSERT_THAT(socket, IsOk()) << i;
    open.push_back(*std::move(socket));
  }
  int status = 0;
  EXPECT_FALSE(alice_->OpenWebSocket(target, origin_, "", true, &status).ok());
  EXPECT_EQ(status, 429);
  // Someone else is not held back by Alice's sockets.
  WaitForTool(*bob_, bob_ws_);
  EXPECT_THAT(bob_->OpenWebSocket(absl::StrCat("/w/", bob_ws_, "/ws"), origin_), IsOk());
  // A closed socket frees its place.
  open.pop_back();
  bool reopened = false;
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (!reopened && absl::Now() < deadline) {
    reopened = alice_->OpenWebSocket(target, origin_).ok();
    if (!reopened) absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(reopened);
}

TEST_F(BrowserEdgeTest, AWebSocketMessageOverSixteenMebibytesEndsTheConnection) {
  WaitForTool(*alice_, alice_ws_);
  absl::StatusOr<std::unique_ptr<EdgeBrowser::WebSocket>> socket =
      alice_->OpenWebSocket(absl::StrCat("/w/", alice_ws_, "/ws"), origin_);
  ASSERT_THAT(socket, IsOk());
  const std::string fine(60000, 'f');
  ASSERT_THAT((*socket)->Write(fine, /*binary=*/true), IsOk());
  absl::StatusOr<std::string> echoed = (*socket)->Read(absl::Seconds(10));
  ASSERT_THAT(echoed, IsOk());
  EXPECT_EQ(echoed->size(), fine.size());
  // The edge refuses at the frame's header: the rest of the 17 MiB cannot even be sent.
  EXPECT_FALSE((*socket)->Write(std::string(17 << 20, 'x'), /*binary=*/true).ok())
      << "the edge took a message over 16 MiB";
  absl::StatusOr<std::string> after = (*socket)->Read(absl::Seconds(10));
  EXPECT_FALSE(after.ok()) << "the connection outlived an oversized message";
}

TEST_F(BrowserEdgeTest, ARequestForASleepingWorkspaceWakesItAndWaits) {
  auto stop = [&] {
    EdgeResponse stopped = alice_->PostJson("/api/v1/provisioner/StopWorkspace",
                                            json{{"workspaceId", alice_ws_}}.dump());
    ASSERT_EQ(stopped.status, 200) << stopped.body;
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      EdgeResponse got = alice_->PostJson("/api/v1/provisioner/GetWorkspace",
                                          json{{"workspaceId", alice_ws_}}.dump());
      if (absl::StrContains(got.body, "\"state\":\"WORKSPACE_STATE_SLEEPING\"")) return;
      absl::SleepFor(absl::Milliseconds(50));
    }
    FAIL() << "did not fall asleep";
  };
  stop();
  // A browser navigating there gets a page that waits with it.
  EdgeRequest navigate{.target = absl::StrCat("/w/", alice_ws_, "/")};
  navigate.headers.push_back({"Accept", "text/html"});
  EdgeResponse waiting = alice_->Send(navigate);
  EXPECT_EQ(waiting.status, 503);
  EXPECT_THAT(waiting.body, HasSubstr("Starting your workspace"));
  EXPECT_EQ(waiting.Header("retry-after"), "1");
  stop();
  // An API call is held until the workspace runs, then answered.
  const absl::Time asked = absl::Now();
  EdgeResponse held =
      alice_->PostJson(absl::StrCat("/w/", alice_ws_, "/_tidepool/v1/ListFiles"), "{}");
  EXPECT_EQ(held.status, 200) << held.body;
  std::cerr << "held request answered after waking: " << absl::FormatDuration(absl::Now() - asked)
            << "\n";
}

// The edge reports a person's traffic to the scaler, which shows each person their own
// workspace's idle status and no one else's.
TEST_F(BrowserEdgeTest, TrafficThroughTheEdgeIsActivityTheScalerShowsItsOwner) {
  WaitForTool(*alice_, alice_ws_);  // the tool's UI answers once it has started
  EdgeResponse visit = alice_->Get(absl::StrCat("/w/", alice_ws_, "/"));
  ASSERT_EQ(visit.status, 200) << visit.body;
  json status;
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (absl::Now() < deadline) {
    EdgeResponse idle = alice_->PostJson("/api/v1/scaler/GetIdleStatus", "{}");
    ASSERT_EQ(idle.status, 200) << idle.body;
    json body = json::parse(idle.body);
    ASSERT_EQ(body["statuses"].size(), 1u) << idle.body;  // hers only
    status = body["statuses"][0];
    if (status.value("lastActivitySource", "") == "ACTIVITY_SOURCE_HTTP") break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_EQ(status.value("workspaceId", ""), alice_ws_);
  EXPECT_EQ(status.value("lastActivitySource", ""), "ACTIVITY_SOURCE_HTTP") << status.dump();
  EXPECT_THAT(status["keepAwakeReasons"].dump(), HasSubstr("KEEP_AWAKE_REASON_RECENT_ACTIVITY"));
  // Traffic on an open WebSocket counts too (reported while the socket carries any).
  absl::StatusOr<std::unique_ptr<EdgeBrowser::WebSocket>> socket =
      alice_->OpenWebSocket(absl::StrCat("/w/", alice_ws_, "/ws"), origin_);
  ASSERT_THAT(socket, IsOk());
  const absl::Time ws_deadline = absl::Now() + absl::Seconds(15);
  while (absl::Now() < ws_deadline) {
    ASSERT_THAT((*socket)->Write("ping"), IsOk());
    ASSERT_THAT((*socket)->Read(absl::Seconds(5)), IsOk());
    EdgeResponse idle = alice_->PostJson("/api/v1/scaler/GetIdleStatus", "{}");
    ASSERT_EQ(idle.status, 200) << idle.body;
    status = json::parse(idle.body)["statuses"][0];
    if (status.value("lastActivitySource", "") == "ACTIVITY_SOURCE_WEBSOCKET") break;
    absl::SleepFor(absl::Milliseconds(300));
  }
  EXPECT_EQ(status.value("lastActivitySource", ""), "ACTIVITY_SOURCE_WEBSOCKET") << status.dump();
  // Bob's workspace is as absent to her as one that does not exist.
  EdgeResponse bobs = alice_->PostJson("/api/v1/scaler/GetIdleStatus",
                                       json{{"workspaceIds", {bob_ws_}}}.dump());
  EdgeResponse missing = alice_->PostJson(
      "/api/v1/scaler/GetIdleStatus",
      json{{"workspaceIds", {"ws_zzzzzzzzzzzzzzzzzzzzzzzzzz"}}}.dump());
  EXPECT_EQ(bobs.status, 404);
  EXPECT_EQ(bobs.body, missing.body);
  // Bob's own status shows none of Alice's traffic; the policy is for admins.
  EdgeResponse bob_idle = bob_->PostJson("/api/v1/scaler/GetIdleStatus", "{}");
  ASSERT_EQ(bob_idle.status, 200) << bob_idle.body;
  EXPECT_THAT(bob_idle.body, Not(HasSubstr("ACTIVITY_SOURCE_HTTP")));
  EXPECT_EQ(alice_->PostJson("/api/v1/scaler/GetPolicy", "{}").status, 403);
}

// Sleep (the scaler's StopWorkspace) and wake (a request through the edge) a hundred times:
// every file written between them is still there.
TEST_F(BrowserEdgeTest, AHundredSleepWakeCyclesLoseNoFile) {
  const std::string files = absl::StrCat("/w/", alice_ws_, "/_tidepool/v1/");
  for (int cycle = 0; cycle < 100; ++cycle) {
    // The request wakes the workspace if it sleeps, and is answered once it runs.
    EdgeResponse made = alice_->PostJson(
        files + "MakeDirectory", json{{"path", absl::StrCat("cycle-", cycle)}}.dump());
    ASSERT_EQ(made.status, 200) << "cycle " << cycle << ": " << made.body;
    provisionerpb::StopWorkspaceRequest request;
    request.set_workspace_id(alice_ws_);
    request.set_reason("idle");
    provisionerpb::StopWorkspaceResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    ASSERT_TRUE(workspaces_->StopWorkspace(&context, request, &response).ok()) << "cycle " << cycle;
    // Asleep for real before the next request wakes it.
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    bool asleep = false;
    while (!asleep && absl::Now() < deadline) {
      provisionerpb::GetWorkspaceRequest get;
      get.set_workspace_id(alice_ws_);
      provisionerpb::GetWorkspaceResponse got;
      grpc::ClientContext get_context;
      asleep = workspaces_->GetWorkspace(&get_context, get, &got).ok() &&
               got.workspace().state() == commonpb::WORKSPACE_STATE_SLEEPING;
      if (!asleep) absl::SleepFor(absl::Milliseconds(10));
    }
    ASSERT_TRUE(asleep) << "cycle " << cycle << ": did not fall asleep";
  }
  EdgeResponse listed =
      alice_->PostJson(files + "ListFiles", json{{"page", {{"pageSize", 1000}}}}.dump());
  // A refusal is readable JSON even when its message quotes a name.
  EdgeResponse again = alice_->PostJson(files + "MakeDirectory", json{{"path", "cycle-0"}}.dump());
  EXPECT_EQ(again.status, 409);
  json refusal = json::parse(again.body, nullptr, false);
  ASSERT_FALSE(refusal.is_discarded()) << again.body;
  EXPECT_EQ(refusal.value("code", ""), "ALREADY_EXISTS") << again.body;
  ASSERT_EQ(listed.status, 200) << listed.body;
  for (int cycle = 0; cycle < 100; ++cycle) {
    EXPECT_THAT(listed.body, HasSubstr(absl::StrCat("\"cycle-", cycle, "\""))) << cycle;
  }
}

// The scaler reads a running workspace's jobs from its supervisor, remembers them while it
// sleeps, and wakes it shortly before the next run.
TEST_F(BrowserEdgeTest, TheScalerWakesASleepingWorkspaceForItsNextJob) {
  // A tool that keeps its jobs where its profile says (webtool: .webtool/jobs.json).
  provisionerpb::EnsureWorkspaceRequest ensure;
  ensure.set_owner_user_id("u_cccccccccccccccccccccccccc");
  ensure.set_profile("webtool");
  provisionerpb::EnsureWorkspaceResponse ensured;
  grpc::ClientContext ensure_context;
  ASSERT_TRUE(workspaces_->EnsureWorkspace(&ensure_context, ensure, &ensured).ok());
  const std::string ws = ensured.workspace().workspace_id();
  auto state = [&] {
    provisionerpb::GetWorkspaceRequest get;
    get.set_workspace_id(ws);
    provisionerpb::GetWorkspaceResponse got;
    grpc::ClientContext context;
    return workspaces_->GetWorkspace(&context, get, &got).ok() ? got.workspace().state()
                                                                : commonpb::WORKSPACE_STATE_UNSPECIFIED;
  };
  auto wait_for = [&](commonpb::WorkspaceState wanted, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (state() != wanted && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(100));
    return state() == wanted;
  };
  ASSERT_TRUE(wait_for(commonpb::WORKSPACE_STATE_RUNNING, absl::Seconds(20)));
  // A one-shot job 80 s from now (the scaler wakes it wake_before_job, 2 min by default,
  // before: that is, at its next check).
  const absl::Time run_at = absl::Now() + absl::Seconds(80);
  const std::string store = platform_->data_dir() + "/provisioner/volumes/" + ws + "/.webtool";
  std::filesystem::create_directories(store);
  ASSERT_TRUE(tidepool::testing::WriteTestFile(
      store + "/jobs.json",
      json{{"jobs",
            {{{"jobId", "digest"},
              {"name", "Daily digest"},
              {"schedule", absl::StrCat("at ", absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", run_at,
                                                                absl::UTCTimeZone()))},
              {"timezone", "UTC"},
              {"enabled", true}}}}}
          .dump()));
  // Written here, as root: handed to the volume's owner, as if the tool had written it.
  struct stat volume {};
  ASSERT_EQ(::stat((store + "/..").c_str(), &volume), 0);
  for (const std::string& path : {store, store + "/jobs.json"}) {
    ASSERT_EQ(::chown(path.c_str(), volume.st_uid, volume.st_gid), 0) << path;
  }
  // The scaler's next check reads it from the supervisor (its own credential, status only).
  absl::StatusOr<RunInfo> scaler = platform_->Info("scaler");
  ASSERT_THAT(scaler, IsOk());
  absl::StatusOr<TlsIdentity> cli = platform_->CliIdentity();
  ASSERT_THAT(cli, IsOk());
  auto scaler_stub = scalerpb::ScalerService::NewStub(DialPlatformService(*cli, scaler->grpc));
  scalerpb::IdleStatus status;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    scalerpb::GetIdleStatusRequest request;
    request.add_workspace_ids(ws);
    scalerpb::GetIdleStatusResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(scaler_stub->GetIdleStatus(&context, request, &response).ok());
    status = response.statuses(0);
    if (status.has_next_scheduled_wake_time()) break;
    absl::SleepFor(absl::Milliseconds(250));
  }
  ASSERT_TRUE(status.has_next_scheduled_wake_time()) << status.DebugString();
  // Its profile counts the tool's own process as work, and the supervisor reports it running.
  EXPECT_THAT(status.keep_awake_reasons(), ::testing::Contains(scalerpb::KEEP_AWAKE_REASON_WORK_PROCESS))
      << status.DebugString();
  EXPECT_EQ(TimeUtil::TimestampToMicroseconds(status.next_scheduled_wake_time()),
            absl::ToUnixMicros(absl::FromUnixSeconds(absl::ToUnixSeconds(run_at)) - absl::Minutes(2)));
  // Put to sleep, it is woken for the job by the scaler, and says why.
  provisionerpb::StopWorkspaceRequest stop;
  stop.set_workspace_id(ws);
  stop.set_reason("idle");
  provisionerpb::StopWorkspaceResponse stopped;
  grpc::ClientContext stop_context;
  ASSERT_TRUE(workspaces_->StopWorkspace(&stop_context, stop, &stopped).ok());
  ASSERT_TRUE(wait_for(commonpb::WORKSPACE_STATE_SLEEPING, absl::Seconds(20)));
  EXPECT_TRUE(wait_for(commonpb::WORKSPACE_STATE_RUNNING, absl::Seconds(20)))
      << "the scaler did not wake it for its job";
  EXPECT_LT(absl::Now(), run_at);
  scalerpb::ListDecisionsRequest decisions_request;
  decisions_request.set_workspace_id(ws);
  decisions_request.set_action(scalerpb::DECISION_ACTION_WAKE);
  scalerpb::ListDecisionsResponse decisions;
  grpc::ClientContext decisions_context;
  ASSERT_TRUE(scaler_stub->ListDecisions(&decisions_context, decisions_request, &decisions).ok());
  ASSERT_EQ(decisions.decisions_size(), 1);
  EXPECT_EQ(decisions.decisions(0).reason(), scalerpb::DECISION_REASON_SCHEDULED_JOB);
  EXPECT_TRUE(decisions.decisions(0).succeeded());
}

}  // namespace
}  // namespace tidepool
