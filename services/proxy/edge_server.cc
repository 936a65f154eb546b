#include "services/proxy/edge_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/network_v4.hpp>
#include <boost/asio/ip/network_v6.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "lib/crypto/crypto.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/net/http_relay.h"
#include "lib/request_id.h"
#include "lib/return_path.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "services/proxy/edge_http.h"
#include "services/proxy/tunnel_loop.h"
#include "tidepool/auth/v1/auth_service.grpc.pb.h"
#include "tidepool/provisioner/v1/workspace_service.grpc.pb.h"
#include "tidepool/proxy/v1/proxy_admin_service.pb.h"
#include "tidepool/scaler/v1/scaler_service.pb.h"

namespace tidepool::proxy {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using local = asio::local::stream_protocol;
namespace authpb = auth::v1;
namespace provpb = provisioner::v1;
namespace proxypb = proxy::v1;
namespace scalerpb = scaler::v1;
using google::protobuf::util::TimeUtil;

using HeaderParser = http::request_parser<http::empty_body>;
using Response = http::response<http::string_body>;

constexpr absl::string_view kJson = "application/json";
constexpr absl::string_view kCsrfHeader = "X-Tidepool-CSRF";
constexpr absl::string_view kPreviewCallbackPath = "/__tidepool/preview-callback";
// Headers a client may send that only the proxy may set (identity, forwarding), removed from
// every request before it reaches a workspace, whatever the profile says.
constexpr absl::string_view kSpoofableHeaders[] = {
    "forwarded",          "x-forwarded-for",   "x-forwarded-host", "x-forwarded-proto",
    "x-forwarded-port",   "x-forwarded-prefix", "x-forwarded-user", "x-forwarded-email",
    "x-forwarded-groups", "x-real-ip",          "x-remote-user",    "x-remote-email",
    "remote-user",        "x-user",             "x-email",          "x-client-ip"};
constexpr absl::string_view kSpoofablePrefixes[] = {"x-auth-request-", "x-tidepool-",
                                                     "x-openclaw-"};

absl::Time Now() { return absl::Now(); }

std::string ContentTypeFor(const std::string& path) {
  static const std::map<std::string, std::string> kTypes = {
      {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
      {".json", "application/json"}, {".svg", "image/svg+xml"}, {".png", "image/png"},
      {".ico", "image/x-icon"}, {".woff2", "font/woff2"}, {".woff", "font/woff"},
      {".txt", "text/plain; charset=utf-8"}, {".map", "application/json"},
      {".webmanifest", "application/manifest+json"}, {".wasm", "application/wasm"}};
  const std::string extension = std::filesystem::path(path).extension().string();
  auto it = kTypes.find(absl::AsciiStrToLower(extension));
  return it == kTypes.end() ? "application/octet-stream" : it->second;
}

bool IsLoopbackHost(absl::string_view host) {
  return host == "127.0.0.1" || host == "localhost" || host == "[::1]" ||
         absl::StartsWith(host, "127.");
}

void SetSocketTimeout(int fd, absl::Duration timeout) {
  timeval tv{};
  tv.tv_sec = absl::ToInt64Seconds(timeout);
  tv.tv_usec = absl::ToInt64Microseconds(timeout - absl::Seconds(tv.tv_sec));
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// A resolved workspace endpoint (GetEndpoint), cached until shortly before the credential
// expires.
struct Endpoint {
  std::string socket_path;
  std::string credential;
  absl::Time expires;
  provpb::IdentityHeaderSettings identity;
};

// What a request is, as routed.
enum class Surface { kPlatform, kPreview };

}  // namespace

class EdgeServer::Impl {
 public:
  Impl(EdgeOptions options, EdgeBackends backends)
      : options_(std::move(options)),
        backends_(std::move(backends)),
        unreachable_(grpc::CreateChannel("unix:/nonexistent/tidepool-unreachable",
                                         grpc::InsecureChannelCredentials())) {}

  absl::Status Configure() {
    absl::StatusOr<UrlParts> url = ParseHttpUrl(options_.public_url);
    if (!url.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("public_url '", options_.public_url, "': ", url.status().message()));
    }
    public_ = *url;
    secure_ = public_.scheme == "https";
    if (!secure_) {
      if (!IsLoopbackHost(public_.host)) {
        return absl::InvalidArgumentError(
            "public_url is plain http on a host that is not loopback: make it https (TLS at "
            "an ingress in front of the edge)");
      }
      if (!options_.dev_mode) {
        return absl::InvalidArgumentError(
            "public_url is plain http: set proxy.dev_mode: true to allow the development mode "
            "(cookies without Secure), or use https");
      }
    }
    cookies_ = CookieNamesFor(secure_);
    for (const std::string& range : options_.trusted_forwarders) {
      boost::system::error_code ec;
      if (range.find(':') == std::string::npos) {
        forwarders_v4_.push_back(asio::ip::make_network_v4(range, ec));
      } else {
        forwarders_v6_.push_back(asio::ip::make_network_v6(range, ec));
      }
      if (ec) {
        return absl::InvalidArgumentError(
            absl::StrCat("proxy.trusted_forwarders: '", range, "' is not an address range"));
      }
    }
    if (!options_.preview_domain.empty()) {
      std::optional<std::string> domain = NormalizeHost(options_.preview_domain);
      if (!domain.has_value() || absl::StrContains(*domain, ':')) {
        return absl::InvalidArgumentError(
            "proxy.preview_domain must be a bare domain name (no scheme, port or path)");
      }
      preview_domain_ = *domain;
      // The preview domain must be neither the platform host nor a parent or child of it, so
      // that no cookie or same-site rule spans both.
      if (preview_domain_ == public_.host || absl::EndsWith(public_.host, "." + preview_domain_) ||
          absl::EndsWith(preview_domain_, "." + public_.host)) {
        return absl::InvalidArgumentError(
            "proxy.preview_domain must be separate from the platform's host (not the same, "
            "not a parent, not a subdomain)");
      }
      if (options_.preview_key.size() < 32) {
        return absl::InvalidArgumentError("the preview signing key must be 32 bytes");
      }
    }
    return absl::OkStatus();
  }

  absl::Status Bind() {
    boost::system::error_code ec;
    const asio::ip::address address = asio::ip::make_address(options_.listen_address, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("proxy.http_address '", options_.listen_address, "' is not an address"));
    }
    acceptor_.open(address.is_v6() ? tcp::v6() : tcp::v4(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind({address, static_cast<uint16_t>(options_.port)}, ec);
    if (!ec) acceptor_.listen(1024, ec);
    if (ec) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen_address,
                                                 ":", options_.port, ": ", ec.message()));
    }
    port_ = acceptor_.local_endpoint().port();
    // The origins and hosts the platform answers on: the public URL's, and in development the
    // bound loopback address too (tests and `tidepool up` may pick any free port).
    platform_hosts_.insert(public_.authority);
    if (public_.port == (secure_ ? 443 : 80)) platform_hosts_.insert(public_.host);
    origins_.insert(absl::StrCat(public_.scheme, "://", public_.authority));
    if (options_.dev_mode && !secure_) {
      for (const char* host : {"127.0.0.1", "localhost"}) {
        platform_hosts_.insert(absl::StrCat(host, ":", port_));
        origins_.insert(absl::StrCat("http://", host, ":", port_));
      }
    }
    preview_ports_ = {public_.port, port_};
    return absl::OkStatus();
  }

  void StartThreads() {
    accept_thread_ = std::thread([this] { AcceptLoop(); });
    watchdog_thread_ = std::thread([this] { Watchdog(); });
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(stop_mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    boost::system::error_code ec;
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    acceptor_.close(ec);
    stop_cv_.notify_all();
    if (accept_thread_.joinable()) accept_thread_.join();
    if (watchdog_thread_.joinable()) watchdog_thread_.join();
    registry_.CloseAll("shutdown");
    std::unique_lock<std::mutex> lock(stop_mu_);
    stop_cv_.wait_for(lock, std::chrono::seconds(2), [this] { return live_ == 0; });
  }

  int port() const { return port_; }
  ConnectionRegistry& registry() { return registry_; }

  std::vector<RouteInfo> Routes() const {
    const std::string preview =
        preview_domain_.empty() ? "" : absl::StrCat("<port>-<workspace>.", preview_domain_);
    std::vector<RouteInfo> routes = {
        {proxypb::ROUTE_KIND_OPERATIONS, "*", "/healthz", "edge", false, false},
        {proxypb::ROUTE_KIND_OPERATIONS, "*", "/metrics", "edge", false, false},
        {proxypb::ROUTE_KIND_SIGN_IN, "*", "/auth/", "auth", false, false},
        {proxypb::ROUTE_KIND_API, "*", "/api/v1/", "auth, provisioner, secrets, scaler, audit",
         true, false},
        {proxypb::ROUTE_KIND_PREVIEW, "*", "/preview-auth", "edge", true, false},
        {proxypb::ROUTE_KIND_WORKSPACE_TERMINAL, "*", "/w/{workspace_id}/_tidepool/v1/terminal",
         "supervisor", true, true},
        {proxypb::ROUTE_KIND_WORKSPACE_FILES, "*", "/w/{workspace_id}/_tidepool/v1/",
         "supervisor", true, false},
        {proxypb::ROUTE_KIND_WORKSPACE_TOOL, "*", "/w/{workspace_id}/", "supervisor (tool)",
         true, true},
    };
    if (!preview.empty()) {
      routes.push_back({proxypb::ROUTE_KIND_PREVIEW, preview, "/", "supervisor (port)", true,
                        true});
    }
    routes.push_back({proxypb::ROUTE_KIND_STATIC, "*", "/",
                      options_.web_root.empty() ? "built-in page"
                                                : absl::StrCat("static:", options_.web_root),
                      false, false});
    return routes;
  }

  void SetMetrics() {
    if (backends_.metrics == nullptr) return;
    prometheus::Family<prometheus::Counter>& requests =
        prometheus::BuildCounter()
            .Name("tidepool_edge_requests_total")
            .Help("Browser requests answered by the edge, by route and status class.")
            .Register(*backends_.metrics);
    // Made once: counting a request is then a lookup in a map nobody writes, and an increment.
    for (const char* route : {"healthz", "metrics", "auth", "api", "preview_auth", "workspace",
                              "static", "preview", "misdirected", "other"}) {
      std::array<prometheus::Counter*, 6>& by_class = request_counters_[route];
      for (int klass = 1; klass <= 5; ++klass) {
        by_class[klass] = &requests.Add({{"route", route}, {"code", absl::StrCat(klass, "xx")}});
      }
    }
    connections_family_ = &prometheus::BuildGauge()
                               .Name("tidepool_edge_open_connections")
                               .Help("Open browser connections, by kind.")
                               .Register(*backends_.metrics);
    closed_on_revocation_ = &prometheus::BuildCounter()
                                 .Name("tidepool_edge_revocation_closes_total")
                                 .Help("Connections closed because their session was revoked.")
                                 .Register(*backends_.metrics)
                                 .Add({});
  }

  void OnRevocation(const authpb::Revocation& revocation) {
    int closed = 0;
    if (!revocation.session_id().empty()) {
      closed = registry_.CloseSession(revocation.session_id(), "session_revoked");
    } else if (!revocation.user_id().empty()) {
      closed = registry_.CloseUser(
          revocation.user_id(),
          absl::FromUnixMicros(TimeUtil::TimestampToMicroseconds(revocation.revoke_time())),
          "session_revoked");
    }
    if (closed > 0 && closed_on_revocation_ != nullptr) closed_on_revocation_->Increment(closed);
  }

 private:
  // ---------------------------------------------------------------------------------------
  // One browser request, as it is being handled.
  struct Exchange {
    tcp::socket* socket = nullptr;
    beast::flat_buffer* buffer = nullptr;
    // Reads the body; moved from once the body has been read or forwarded (body_taken).
    HeaderParser* parser = nullptr;
    bool body_taken = false;
    // The request's header as received.
    http::request<http::empty_body> head;
    std::shared_ptr<ConnectionEntry> entry;
    std::string path;
    std::string query;
    std::string host;  // normalized Host
    std::string source_address;
    std::string request_id;
    std::map<std::string, std::string> cookies;
    std::vector<std::string> set_cookies;  // added to whatever answer is sent
    std::string route = "other";           // for metrics
    bool keep_alive = true;

    const http::request<http::empty_body>& request() const { return head; }
    std::string Header(http::field field) const {
      auto it = request().find(field);
      return it == request().end() ? "" : std::string(it->value());
    }
    std::string Header(absl::string_view name) const {
      auto it = request().find(beast::string_view(name.data(), name.size()));
      return it == request().end() ? "" : std::string(it->value());
    }
  };

  std::shared_ptr<grpc::Channel> ChannelTo(absl::string_view service) const {
    std::shared_ptr<grpc::Channel> channel = backends_.channel_for(service);
    return channel != nullptr ? channel : unreachable_;
  }
  std::unique_ptr<authpb::AuthService::Stub> Auth() const {
    return authpb::AuthService::NewStub(ChannelTo("auth"));
  }
  std::unique_ptr<provpb::WorkspaceService::Stub> Provisioner() const {
    return provpb::WorkspaceService::NewStub(ChannelTo("provisioner"));
  }

  // ---------------------------------------------------------------------------------------
  // Accepting and serving connections

  void AcceptLoop() {
    for (;;) {
      tcp::socket socket(io_);
      boost::system::error_code ec;
      acceptor_.accept(socket, ec);
      if (ec) {
        std::lock_guard<std::mutex> lock(stop_mu_);
        if (stopping_) return;
        if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(stop_mu_);
        if (stopping_) return;
        ++live_;
      }
      std::thread([this, s = std::move(socket)]() mutable {
        Serve(std::move(s));
        std::lock_guard<std::mutex> lock(stop_mu_);
        --live_;
        stop_cv_.notify_all();
      }).detach();
    }
  }

  void Watchdog() {
    std::unique_lock<std::mutex> lock(stop_mu_);
    while (!stopping_) {
      stop_cv_.wait_for(lock, std::chrono::milliseconds(250));
      if (stopping_) break;
      lock.unlock();
      registry_.CloseExpired(Now());
      UpdateConnectionGauges();
      lock.lock();
    }
  }

  void UpdateConnectionGauges() {
    if (connections_family_ == nullptr) return;
    std::map<int, int> counts;
    for (const ConnectionRegistry::Snapshot& s : registry_.List()) ++counts[static_cast<int>(s.kind)];
    for (const auto& [kind, name] : std::map<int, const char*>{
             {1, "http"}, {2, "websocket"}, {3, "terminal"}, {4, "preview"}}) {
      connections_family_->Add({{"kind", name}}).Set(counts[kind]);
    }
  }

  void Serve(tcp::socket socket) {
    boost::system::error_code ec;
    socket.set_option(tcp::no_delay(true), ec);
    auto entry = std::make_shared<ConnectionEntry>();
    entry->open_time = Now();
    entry->last_activity_unix_micros = absl::ToUnixMicros(entry->open_time);
    const tcp::endpoint remote = socket.remote_endpoint(ec);
    entry->source_address = ec ? "" : remote.address().to_string();
    const int fd = socket.native_handle();
    entry->close = [fd](const std::string&) { ::shutdown(fd, SHUT_RDWR); };
    entry->SetDeadline(Now() + options_.header_timeout);
    const uint64_t id = registry_.Add(entry);
    SetSocketTimeout(fd, options_.keep_alive_idle);

    beast::flat_buffer buffer;
    for (;;) {
      HeaderParser parser;
      parser.header_limit(static_cast<uint32_t>(options_.max_header_bytes));
      parser.body_limit(net::kNoBodyLimit);
      http::read_header(socket, buffer, parser, ec);
      if (ec) {
        if (ec == http::error::header_limit) {
          WriteSimple(socket, http::status::request_header_fields_too_large, "RESOURCE_EXHAUSTED",
                      "the request header is too large");
        } else if (ec != http::error::end_of_stream && ec != asio::error::eof &&
                   ec != asio::error::connection_reset && ec != asio::error::would_block &&
                   ec != asio::error::try_again && ec != asio::error::operation_aborted &&
                   ec != asio::error::bad_descriptor && buffer.size() > 0) {
          WriteSimple(socket, http::status::bad_request, "INVALID_ARGUMENT",
                      "malformed request");
        }
        break;
      }
      entry->SetDeadline(absl::InfiniteFuture());
      entry->last_activity_unix_micros = absl::ToUnixMicros(Now());
      Exchange exchange;
      exchange.socket = &socket;
      exchange.buffer = &buffer;
      exchange.parser = &parser;
      exchange.head = parser.get();
      exchange.entry = entry;
      exchange.source_address = entry->source_address;
      exchange.request_id = NewRequestId();
      const bool keep_alive = Handle(exchange);
      if (!keep_alive || entry->closing) break;
      entry->SetDeadline(Now() + options_.keep_alive_idle);
    }
    registry_.Remove(id);
    socket.shutdown(tcp::socket::shutdown_both, ec);
    socket.close(ec);
  }

  std::string NewRequestId() { return absl::StrCat("req_", next_request_.fetch_add(1)); }

  // ---------------------------------------------------------------------------------------
  // Answers

  void AddPlatformHeaders(Response& response) const {
    response.set("Content-Security-Policy",
                 "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                 "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
                 "base-uri 'none'; object-src 'none'; form-action 'self'");
    response.set("X-Content-Type-Options", "nosniff");
    response.set("X-Frame-Options", "DENY");
    response.set("Referrer-Policy", "same-origin");
    response.set("Cross-Origin-Opener-Policy", "same-origin");
    response.set("Cross-Origin-Resource-Policy", "same-origin");
    if (secure_) response.set("Strict-Transport-Security", "max-age=31536000");
  }

  // Sends `response` with the exchange's cookies and the platform headers; returns whether the
  // connection may carry another request.
  bool Send(Exchange& ex, Response response, bool platform_headers = true) {
    if (platform_headers) AddPlatformHeaders(response);
    for (const std::string& cookie : ex.set_cookies) response.insert(http::field::set_cookie, cookie);
    response.set("X-Request-Id", ex.request_id);
    const bool keep_alive = ex.keep_alive && ex.request().keep_alive();
    response.keep_alive(keep_alive);
    response.prepare_payload();
    boost::system::error_code ec;
    http::write(*ex.socket, response, ec);
    Count(ex, static_cast<int>(response.result_int()));
    return keep_alive && !ec;
  }

  void Count(const Exchange& ex, int status) {
    auto it = request_counters_.find(ex.route);
    const int klass = status / 100;
    if (it == request_counters_.end() || klass < 1 || klass > 5) return;
    it->second[klass]->Increment();
  }

  Response Make(const Exchange& ex, http::status status, absl::string_view content_type,
                std::string body) {
    Response response(status, ex.request().version());
    response.set(http::field::content_type, std::string(content_type));
    response.set(http::field::cache_control, "no-store");
    response.body() = std::move(body);
    return response;
  }

  bool SendJson(Exchange& ex, http::status status, std::string body) {
    return Send(ex, Make(ex, status, kJson, std::move(body)));
  }

  bool SendError(Exchange& ex, http::status status, absl::string_view code,
                 absl::string_view message) {
    if (status == http::status::not_found) return SendNotFound(ex);
    return SendJson(ex, status, ApiErrorBody(code, message));
  }

  // The one 404: byte-identical for "does not exist" and "is not yours", on every surface.
  bool SendNotFound(Exchange& ex) {
    return SendJson(ex, http::status::not_found, std::string(kNotFoundBody));
  }

  bool SendGrpcError(Exchange& ex, const grpc::Status& status) {
    ApiResponse answer = ApiErrorFromGrpc(status);
    if (answer.http_status == 404) return SendNotFound(ex);
    return SendJson(ex, static_cast<http::status>(answer.http_status), std::move(answer.body));
  }

  bool Redirect(Exchange& ex, const std::string& location, http::status status = http::status::found) {
    Response response = Make(ex, status, "text/plain; charset=utf-8", "");
    response.set(http::field::location, location);
    return Send(ex, std::move(response));
  }

  static void WriteSimple(tcp::socket& socket, http::status status, absl::string_view code,
                          absl::string_view message) {
    Response response(status, 11);
    response.set(http::field::content_type, std::string(kJson));
    response.set(http::field::cache_control, "no-store");
    response.body() = ApiErrorBody(code, message);
    response.keep_alive(false);
    response.prepare_payload();
    boost::system::error_code ec;
    http::write(socket, response, ec);
  }

  // Reads the whole (bounded) request body. False after answering 413 or on a read error.
  bool ReadBody(Exchange& ex, size_t limit, std::string* body) {
    if (ex.body_taken) return false;
    if (ex.parser->content_length().value_or(0) > limit) {
      ex.keep_alive = false;
      SendError(ex, http::status::payload_too_large, "RESOURCE_EXHAUSTED",
                absl::StrCat("the request body is over ", limit, " bytes"));
      return false;
    }
    http::request_parser<http::string_body> parser(std::move(*ex.parser));
    ex.body_taken = true;
    parser.body_limit(limit);
    boost::system::error_code ec;
    http::read(*ex.socket, *ex.buffer, parser, ec);
    if (ec == http::error::body_limit) {
      ex.keep_alive = false;
      SendError(ex, http::status::payload_too_large, "RESOURCE_EXHAUSTED",
                absl::StrCat("the request body is over ", limit, " bytes"));
      return false;
    }
    if (ec) return false;
    *body = std::move(parser.get().body());
    return true;
  }

  // Discards an unread body so that the connection can carry the next request; closes it
  // when the body is large or unbounded.
  void SkipBody(Exchange& ex) {
    if (ex.body_taken || ex.parser->is_done()) return;
    const boost::optional<uint64_t> length = ex.parser->content_length();
    if (!length || *length > 64 * 1024) {
      ex.keep_alive = false;
      return;
    }
    std::string ignored;
    if (!ReadBody(ex, 64 * 1024, &ignored)) ex.keep_alive = false;
  }

  // ---------------------------------------------------------------------------------------
  // Routing

  bool Handle(Exchange& ex) {
    const auto& request = ex.request();
    // Strict framing: one Host, and never both Content-Length and Transfer-Encoding (the
    // classic smuggling pair); chunked is the only transfer coding.
    const size_t hosts = std::distance(request.equal_range(http::field::host).first,
                                       request.equal_range(http::field::host).second);
    const bool has_te = request.find(http::field::transfer_encoding) != request.end();
    const bool has_cl = request.find(http::field::content_length) != request.end();
    if (hosts != 1 || (has_te && has_cl) ||
        (has_te && !absl::EqualsIgnoreCase(
                       absl::StripAsciiWhitespace(ex.Header(http::field::transfer_encoding)),
                       "chunked")) ||
        std::distance(request.equal_range(http::field::transfer_encoding).first,
                      request.equal_range(http::field::transfer_encoding).second) > 1) {
      ex.keep_alive = false;
      return SendError(ex, http::status::bad_request, "INVALID_ARGUMENT",
                       "ambiguous request framing or host");
    }
    absl::StatusOr<std::pair<std::string, std::string>> target =
        SplitTarget(absl::string_view(request.target().data(), request.target().size()));
    if (!target.ok() || !IsCanonicalPath(target->first)) {
      ex.keep_alive = false;
      return SendError(ex, http::status::bad_request, "INVALID_ARGUMENT",
                       "the request path is not in canonical form");
    }
    ex.path = target->first;
    ex.query = target->second;
    std::optional<std::string> host = NormalizeHost(ex.Header(http::field::host));
    if (!host.has_value()) {
      ex.keep_alive = false;
      return SendError(ex, http::status::bad_request, "INVALID_ARGUMENT", "malformed Host");
    }
    ex.host = *host;
    ex.cookies = ParseCookies(ex.Header(http::field::cookie));
    ex.source_address = SourceAddress(ex);

    if (platform_hosts_.count(ex.host) > 0) return HandlePlatform(ex);
    if (!preview_domain_.empty()) {
      auto [bare, port] = SplitHostPort(ex.host);
      std::optional<PreviewTarget> preview = ParsePreviewHost(bare, preview_domain_);
      const bool port_ok =
          port == 0 ? public_.port == (secure_ ? 443 : 80) : preview_ports_.count(port) > 0;
      if (preview.has_value() && port_ok) return HandlePreview(ex, *preview);
    }
    ex.route = "misdirected";
    SkipBody(ex);
    return SendError(ex, http::status::misdirected_request, "INVALID_ARGUMENT",
                     "this server does not serve that host");
  }

  // The person's address: the peer's, or, when the peer is a trusted forwarder, the last
  // address it put in X-Forwarded-For (the one it saw; earlier entries are the client's say).
  std::string SourceAddress(const Exchange& ex) const {
    const std::string& peer = ex.entry->source_address;
    if (forwarders_v4_.empty() && forwarders_v6_.empty()) return peer;
    boost::system::error_code ec;
    const asio::ip::address address = asio::ip::make_address(peer, ec);
    if (ec) return peer;
    bool trusted = false;
    if (address.is_v4()) {
      const asio::ip::network_v4 self(address.to_v4(), 32);
      for (const asio::ip::network_v4& range : forwarders_v4_) {
        trusted |= self == range || self.is_subnet_of(range);
      }
    } else {
      const asio::ip::network_v6 self(address.to_v6(), 128);
      for (const asio::ip::network_v6& range : forwarders_v6_) {
        trusted |= self == range || self.is_subnet_of(range);
      }
    }
    if (!trusted) return peer;
    std::string forwarded;
    for (const auto& field : ex.head) {
      if (absl::EqualsIgnoreCase(
              absl::string_view(field.name_string().data(), field.name_string().size()),
              "x-forwarded-for")) {
        forwarded = std::string(field.value());  // the last header line wins
      }
    }
    absl::string_view last = forwarded;
    if (const size_t comma = last.rfind(','); comma != absl::string_view::npos) {
      last = last.substr(comma + 1);
    }
    last = absl::StripAsciiWhitespace(last);
    const asio::ip::address client = asio::ip::make_address(std::string(last), ec);
    return ec ? peer : client.to_string();
  }

  bool HandlePlatform(Exchange& ex) {
    const absl::string_view path = ex.path;
    const http::verb method = ex.request().method();
    if (path == "/healthz") {
      ex.route = "healthz";
      SkipBody(ex);
      return Send(ex, Make(ex, http::status::ok, "text/plain; charset=utf-8", "ok\n"));
    }
    if (path == "/metrics") {
      ex.route = "metrics";
      SkipBody(ex);
      if (backends_.metrics == nullptr) return SendNotFound(ex);
      return Send(ex, Make(ex, http::status::ok, "text/plain; version=0.0.4",
                           SerializeMetrics(*backends_.metrics)));
    }
    if (absl::StartsWith(path, "/auth/")) {
      ex.route = "auth";
      return HandleAuth(ex);
    }
    if (absl::StartsWith(path, "/api/")) {
      ex.route = "api";
      return HandleApi(ex);
    }
    if (path == "/preview-auth") {
      ex.route = "preview_auth";
      SkipBody(ex);
      return HandlePreviewAuth(ex);
    }
    if (absl::StartsWith(path, "/w/")) {
      ex.route = "workspace";
      return HandleWorkspace(ex);
    }
    ex.route = "static";
    SkipBody(ex);
    if (method != http::verb::get && method != http::verb::head) {
      return SendError(ex, http::status::method_not_allowed, "INVALID_ARGUMENT",
                       "only GET is served here");
    }
    return ServeStatic(ex);
  }

  // ---------------------------------------------------------------------------------------
  // Sessions

  // The session behind the request, refreshing an expired session token once with the
  // refresh cookie (the new cookies go out with the answer). nullopt if there is none.
  std::optional<SessionIdentity> Session(Exchange& ex, grpc::StatusCode* failure = nullptr) {
    auto token = ex.cookies.find(cookies_.session);
    if (token != ex.cookies.end() && !token->second.empty()) {
      absl::StatusOr<SessionIdentity> identity = backends_.sessions->Verify(token->second);
      if (identity.ok()) return *identity;
      if (identity.status().code() == absl::StatusCode::kUnavailable) {
        if (failure != nullptr) *failure = grpc::StatusCode::UNAVAILABLE;
        return std::nullopt;
      }
    }
    auto refresh = ex.cookies.find(cookies_.refresh);
    if (refresh == ex.cookies.end() || refresh->second.empty()) return std::nullopt;
    std::optional<authpb::SessionGrant> grant = Refresh(refresh->second, ex.source_address);
    if (!grant.has_value()) {
      ClearSessionCookies(ex);
      return std::nullopt;
    }
    SetSessionCookies(ex, *grant);
    absl::StatusOr<SessionIdentity> identity = backends_.sessions->Verify(grant->session_token());
    if (!identity.ok()) return std::nullopt;
    return *identity;
  }

  // RefreshSession, once per refresh token: the browser's parallel requests after an expiry
  // all get the one new grant (presenting a used refresh token again would revoke the
  // session).
  std::optional<authpb::SessionGrant> Refresh(const std::string& refresh_token,
                                              const std::string& source) {
    const std::string key = crypto::Sha256(refresh_token);
    std::shared_ptr<RefreshFlight> flight;
    bool leader = false;
    {
      absl::MutexLock lock(&refresh_mu_);
      const absl::Time now = Now();
      for (auto it = refreshes_.begin(); it != refreshes_.end();) {
        it = it->second->started + absl::Seconds(30) < now ? refreshes_.erase(it) : std::next(it);
      }
      auto it = refreshes_.find(key);
      if (it == refreshes_.end()) {
        flight = std::make_shared<RefreshFlight>();
        flight->started = now;
        refreshes_[key] = flight;
        leader = true;
      } else {
        flight = it->second;
      }
    }
    if (leader) {
      authpb::RefreshSessionRequest request;
      request.set_refresh_token(refresh_token);
      request.set_source_address(source);
      authpb::RefreshSessionResponse response;
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      const grpc::Status status = Auth()->RefreshSession(&context, request, &response);
      absl::MutexLock lock(&refresh_mu_);
      if (status.ok()) flight->grant = response.grant();
      flight->done = true;
    }
    absl::MutexLock lock(&refresh_mu_);
    refresh_mu_.Await(absl::Condition(&flight->done));
    return flight->grant;
  }

  void SetSessionCookies(Exchange& ex, const authpb::SessionGrant& grant) {
    const absl::Time now = Now();
    const absl::Time refresh_expires =
        absl::FromUnixMicros(TimeUtil::TimestampToMicroseconds(grant.refresh_token_expire_time()));
    // The session cookie lives as long as the refresh token: an expired session token in it is
    // refreshed on the next request.
    ex.set_cookies.push_back(SetCookieValue(cookies_.session, grant.session_token(),
                                            refresh_expires - now, secure_, true));
    ex.set_cookies.push_back(SetCookieValue(cookies_.refresh, grant.refresh_token(),
                                            refresh_expires - now, secure_, true));
    absl::StatusOr<std::string> csrf = crypto::RandomToken(24);
    if (csrf.ok()) {
      ex.set_cookies.push_back(
          SetCookieValue(cookies_.csrf, *csrf, refresh_expires - now, secure_, false, "Strict"));
    }
  }

  void ClearSessionCookies(Exchange& ex) {
    for (const std::string& name : {cookies_.session, cookies_.refresh, cookies_.csrf}) {
      ex.set_cookies.push_back(SetCookieValue(name, "", absl::ZeroDuration(), secure_, true));
    }
  }

  // True if the request may change state on behalf of the session: its Origin, when present,
  // is exactly the platform's; with `token`, it also carries the CSRF cookie's value in the
  // X-Tidepool-CSRF header (double submit).
  bool CsrfOk(const Exchange& ex, bool token) const {
    const std::string origin = ex.Header(http::field::origin);
    if (!origin.empty() && origins_.count(origin) == 0) return false;
    if (origin.empty()) {
      const std::string site = ex.Header("Sec-Fetch-Site");
      if (!site.empty() && site != "same-origin" && site != "none") return false;
    }
    if (!token) return true;
    auto cookie = ex.cookies.find(cookies_.csrf);
    const std::string header = ex.Header(kCsrfHeader);
    return cookie != ex.cookies.end() && !cookie->second.empty() &&
           crypto::ConstantTimeEquals(cookie->second, header);
  }

  static bool IsStateChanging(http::verb method) {
    return method != http::verb::get && method != http::verb::head &&
           method != http::verb::options;
  }

  grpc::ClientContext* Prepare(grpc::ClientContext& context, const Exchange& ex,
                               const SessionIdentity* identity, int seconds = 10) const {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    context.AddMetadata("x-tidepool-request-id", ex.request_id);
    if (!ex.source_address.empty()) {
      context.AddMetadata("x-tidepool-source-address", ex.source_address);
    }
    if (identity != nullptr) {
      context.AddMetadata("x-tidepool-user-id", identity->user_id);
      context.AddMetadata("x-tidepool-role", identity->admin ? "admin" : "user");
    }
    return &context;
  }

  // ---------------------------------------------------------------------------------------
  // Sign-in routes (/auth/...)

  bool HandleAuth(Exchange& ex) {
    const std::string path = ex.path;
    const http::verb method = ex.request().method();
    if (path == "/auth/providers" && method == http::verb::get) {
      SkipBody(ex);
      authpb::ListProvidersRequest request;
      authpb::ListProvidersResponse response;
      grpc::ClientContext context;
      const grpc::Status status =
          Auth()->ListProviders(Prepare(context, ex, nullptr), request, &response);
      if (!status.ok()) return SendGrpcError(ex, status);
      return SendJson(ex, http::status::ok, ToJson(response));
    }
    if (path == "/auth/session" && method == http::verb::get) {
      SkipBody(ex);
      grpc::StatusCode failure = grpc::StatusCode::OK;
      std::optional<SessionIdentity> identity = Session(ex, &failure);
      if (!identity.has_value()) return SendSignInRequired(ex, failure);
      return SendJson(ex, http::status::ok,
                      absl::StrCat("{\"userId\":\"", identity->user_id, "\",\"sessionId\":\"",
                                   identity->session_id, "\",\"role\":\"",
                                   identity->admin ? "admin" : "user", "\",\"expireTime\":\"",
                                   absl::FormatTime(absl::RFC3339_sec, identity->expires_at,
                                                    absl::UTCTimeZone()),
                                   "\"",
                                   preview_domain_.empty()
                                       ? ""
                                       : absl::StrCat(",\"previewDomain\":\"", preview_domain_, "\""),
                                   "}"));
    }
    if ((path == "/auth/password" || path == "/auth/setup") && method == http::verb::post) {
      return HandlePasswordSignIn(ex, path == "/auth/setup");
    }
    if (absl::StartsWith(path, "/auth/start/") && method == http::verb::get) {
      SkipBody(ex);
      return HandleBeginSignIn(ex, path.substr(std::string("/auth/start/").size()));
    }
    if (absl::StartsWith(path, "/auth/callback/") &&
        (method == http::verb::get || method == http::verb::post)) {
      return HandleCallback(ex, path.substr(std::string("/auth/callback/").size()));
    }
    if ((path == "/auth/signout" || path == "/auth/signout-everywhere") &&
        method == http::verb::post) {
      SkipBody(ex);
      if (!CsrfOk(ex, false)) {
        return SendError(ex, http::status::forbidden, "PERMISSION_DENIED",
                         "cross-site request refused");
      }
      auto token = ex.cookies.find(cookies_.session);
      if (token != ex.cookies.end() && !token->second.empty()) {
        grpc::ClientContext context;
        Prepare(context, ex, nullptr);
        if (path == "/auth/signout") {
          authpb::SignOutRequest request;
          request.set_session_token(token->second);
          authpb::SignOutResponse response;
          (void)Auth()->SignOut(&context, request, &response);
        } else {
          authpb::SignOutEverywhereRequest request;
          request.set_session_token(token->second);
          authpb::SignOutEverywhereResponse response;
          (void)Auth()->SignOutEverywhere(&context, request, &response);
        }
      }
      ClearSessionCookies(ex);
      return SendJson(ex, http::status::ok, "{}");
    }
    SkipBody(ex);
    return SendNotFound(ex);
  }

  bool SendSignInRequired(Exchange& ex, grpc::StatusCode failure) {
    if (failure == grpc::StatusCode::UNAVAILABLE) {
      return SendError(ex, http::status::service_unavailable, "UNAVAILABLE",
                       "sessions cannot be checked right now; try again in a moment");
    }
    return SendError(ex, http::status::unauthorized, "UNAUTHENTICATED", "sign in first");
  }

  template <typename Message>
  static std::string ToJson(const Message& message) {
    std::string json;
    (void)google::protobuf::util::MessageToJsonString(message, &json);
    return json;
  }

  bool HandlePasswordSignIn(Exchange& ex, bool setup) {
    std::string body;
    if (!ReadBody(ex, 16 * 1024, &body)) return false;
    if (!CsrfOk(ex, false)) {
      return SendError(ex, http::status::forbidden, "PERMISSION_DENIED",
                       "cross-site request refused");
    }
    // The body is the request message in protobuf JSON, without the edge's own fields.
    grpc::ClientContext context;
    Prepare(context, ex, nullptr);
    google::protobuf::util::JsonParseOptions parse;
    authpb::SessionGrant grant;
    grpc::Status status;
    if (setup) {
      authpb::CompleteSetupRequest request;
      if (!google::protobuf::util::JsonStringToMessage(body, &request, parse).ok()) {
        return SendError(ex, http::status::bad_request, "INVALID_ARGUMENT",
                         "the body must be {\"setupToken\", \"password\", \"timezone\"}");
      }
      request.set_source_address(ex.source_address);
      request.set_user_agent(ex.Header(http::field::user_agent).substr(0, 256));
      authpb::CompleteSetupResponse response;
      status = Auth()->CompleteSetup(&context, request, &response);
      grant = response.grant();
    } else {
      authpb::SignInWithPasswordRequest request;
      if (!google::protobuf::util::JsonStringToMessage(body, &request, parse).ok()) {
        return SendError(ex, http::status::bad_request, "INVALID_ARGUMENT",
                         "the body must be {\"email\", \"password\", \"timezone\"}");
      }
      request.set_source_address(ex.source_address);
      request.set_user_agent(ex.Header(http::field::user_agent).substr(0, 256));
      authpb::SignInWithPasswordResponse response;
      status = Auth()->SignInWithPassword(&context, request, &response);
      grant = response.grant();
    }
    if (!status.ok()) return SendGrpcError(ex, status);
    SetSessionCookies(ex, grant);
    return SendJson(ex, http::status::ok,
                    absl::StrCat("{\"userId\":\"", grant.user().user_id(), "\",\"role\":\"",
                                 grant.role() == commonpb_role_admin() ? "admin" : "user",
                                 "\"}"));
  }

  static int commonpb_role_admin() { return 2; }  // tidepool.common.v1.ROLE_ADMIN

  bool HandleBeginSignIn(Exchange& ex, const std::string& provider) {
    authpb::BeginSignInRequest request;
    request.set_provider_id(provider);
    request.set_return_path(QueryParam(ex.query, "return_path").value_or("/"));
    request.set_timezone(QueryParam(ex.query, "timezone").value_or(""));
    request.set_invite_code(QueryParam(ex.query, "invite").value_or(""));
    request.set_source_address(ex.source_address);
    authpb::BeginSignInResponse response;
    grpc::ClientContext context;
    const grpc::Status status = Auth()->BeginSignIn(Prepare(context, ex, nullptr), request, &response);
    if (!status.ok()) return SendSignInError(ex, status);
    const absl::Time expires =
        absl::FromUnixMicros(TimeUtil::TimestampToMicroseconds(response.state_expire_time()));
    // The identity provider comes back with a top-level GET (OIDC) or a cross-site POST (SAML):
    // the binding cookie must survive the latter, so it is SameSite=None where it can be.
    ex.set_cookies.push_back(SetCookieValue(cookies_.signin, response.state_cookie_value(),
                                            expires - Now(), secure_, true,
                                            secure_ ? "None" : "Lax"));
    return Redirect(ex, response.authorization_url());
  }

  bool HandleCallback(Exchange& ex, const std::string& provider) {
    authpb::CompleteSignInRequest request;
    request.set_provider_id(provider);
    std::string params = ex.query;
    if (ex.request().method() == http::verb::post) {
      std::string body;
      if (!ReadBody(ex, options_.max_form_body_bytes, &body)) return false;
      params = body;
    } else {
      SkipBody(ex);
    }
    for (absl::string_view pair : absl::StrSplit(params, '&', absl::SkipEmpty())) {
      const std::string name(pair.substr(0, pair.find('=')));
      std::optional<std::string> value = QueryParam(params, name);
      if (!value.has_value() || name.empty() || name.size() > 64) {
        return SendSignInError(ex, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                                "malformed callback parameters"));
      }
      (*request.mutable_callback_params())[name] = *value;
    }
    auto state = ex.cookies.find(cookies_.signin);
    request.set_state_cookie_value(state == ex.cookies.end() ? "" : state->second);
    request.set_source_address(ex.source_address);
    request.set_user_agent(ex.Header(http::field::user_agent).substr(0, 256));
    authpb::CompleteSignInResponse response;
    grpc::ClientContext context;
    const grpc::Status status =
        Auth()->CompleteSignIn(Prepare(context, ex, nullptr, 20), request, &response);
    ex.set_cookies.push_back(
        SetCookieValue(cookies_.signin, "", absl::ZeroDuration(), secure_, true));
    if (!status.ok()) return SendSignInError(ex, status);
    SetSessionCookies(ex, response.grant());
    return Redirect(ex, SafeReturnPathOrRoot(response.return_path()), http::status::see_other);
  }

  // A plain page for a failed redirect sign-in (the person arrived by navigation).
  bool SendSignInError(Exchange& ex, const grpc::Status& status) {
    const http::status http_status =
        static_cast<http::status>(ApiErrorFromGrpc(status).http_status);
    std::string message = static_cast<int>(http_status) >= 500
                              ? "The sign-in service could not be reached. Try again shortly."
                              : status.error_message();
    return Send(ex, Make(ex, http_status, "text/html; charset=utf-8",
                         absl::StrCat("<!doctype html><html lang=\"en\"><head><meta "
                                      "charset=\"utf-8\"><title>Sign-in failed</title></head>"
                                      "<body><h1>Sign-in failed</h1><p>",
                                      HtmlEscape(message),
                                      "</p><p><a href=\"/\">Back to sign-in</a></p></body></html>")));
  }

  // ---------------------------------------------------------------------------------------
  // The JSON API (/api/v1/...)

  bool HandleApi(Exchange& ex) {
    if (!absl::StartsWith(ex.path, "/api/v1/")) {
      SkipBody(ex);
      return SendNotFound(ex);
    }
    if (ex.request().method() != http::verb::post) {
      SkipBody(ex);
      return SendError(ex, http::status::method_not_allowed, "INVALID_ARGUMENT",
                       "the API takes POST with a JSON body");
    }
    grpc::StatusCode failure = grpc::StatusCode::OK;
    std::optional<SessionIdentity> identity = Session(ex, &failure);
    if (!identity.has_value()) {
      SkipBody(ex);
      return SendSignInRequired(ex, failure);
    }
    if (!CsrfOk(ex, true)) {
      SkipBody(ex);
      return SendError(ex, http::status::forbidden, "PERMISSION_DENIED",
                       "cross-site request refused (send the X-Tidepool-CSRF header)");
    }
    std::string body;
    if (!ReadBody(ex, options_.max_api_body_bytes, &body)) return false;
    ApiRequest request{.path = ex.path.substr(std::string("/api/v1/").size()),
                       .body = std::move(body),
                       .user_id = identity->user_id,
                       .admin = identity->admin,
                       .request_id = ex.request_id,
                       .source_address = ex.source_address};
    std::promise<ApiResponse> answer;
    std::future<ApiResponse> future = answer.get_future();
    backends_.api->Handle(std::move(request),
                          [&answer](ApiResponse response) { answer.set_value(std::move(response)); });
    ApiResponse response = future.get();
    if (response.http_status == 404) return SendNotFound(ex);
    return SendJson(ex, static_cast<http::status>(response.http_status), std::move(response.body));
  }

  // ---------------------------------------------------------------------------------------
  // Workspaces

  // The owner of a workspace as the provisioner reports it to `identity` (NOT_FOUND when it
  // does not exist or is not theirs), cached briefly; owners never change.
  grpc::Status Owner(const Exchange& ex, const SessionIdentity& identity,
                     const std::string& workspace_id, std::string* owner) {
    {
      absl::ReaderMutexLock lock(&cache_mu_);
      auto it = owners_.find(workspace_id);
      if (it != owners_.end() && it->second.second > Now()) {
        *owner = it->second.first;
        return grpc::Status::OK;
      }
    }
    provpb::GetWorkspaceRequest request;
    request.set_workspace_id(workspace_id);
    provpb::GetWorkspaceResponse response;
    grpc::ClientContext context;
    const grpc::Status status =
        Provisioner()->GetWorkspace(Prepare(context, ex, &identity), request, &response);
    if (!status.ok()) return status;
    *owner = response.workspace().owner_user_id();
    absl::MutexLock lock(&cache_mu_);
    if (owners_.size() > 100000) owners_.clear();
    owners_[workspace_id] = {*owner, Now() + absl::Minutes(5)};
    return grpc::Status::OK;
  }

  grpc::Status FetchEndpoint(const Exchange& ex, const std::string& workspace_id,
                             Endpoint* endpoint, bool fresh) {
    if (!fresh) {
      absl::ReaderMutexLock lock(&cache_mu_);
      auto it = endpoints_.find(workspace_id);
      if (it != endpoints_.end() && it->second.expires > Now()) {
        *endpoint = it->second;
        return grpc::Status::OK;
      }
    }
    provpb::GetEndpointRequest request;
    request.set_workspace_id(workspace_id);
    provpb::GetEndpointResponse response;
    grpc::ClientContext context;
    const grpc::Status status =
        Provisioner()->GetEndpoint(Prepare(context, ex, nullptr), request, &response);
    if (!status.ok()) return status;
    if (response.unix_socket_path().empty()) {
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                          "workspaces reached over the network arrive with the Kubernetes runtime");
    }
    endpoint->socket_path = response.unix_socket_path();
    endpoint->credential = response.credential();
    endpoint->identity = response.identity_headers();
    const absl::Time expires = absl::FromUnixMicros(
        TimeUtil::TimestampToMicroseconds(response.credential_expire_time()));
    endpoint->expires = expires - std::min(absl::Seconds(30), (expires - Now()) / 2);
    absl::MutexLock lock(&cache_mu_);
    if (endpoints_.size() > 100000) endpoints_.clear();
    endpoints_[workspace_id] = *endpoint;
    return grpc::Status::OK;
  }

  void ForgetEndpoint(const std::string& workspace_id) {
    absl::MutexLock lock(&cache_mu_);
    endpoints_.erase(workspace_id);
  }

  static bool WantsPage(const Exchange& ex) {
    if (ex.request().method() != http::verb::get || beast::websocket::is_upgrade(ex.request())) {
      return false;
    }
    const std::string mode = ex.Header("Sec-Fetch-Mode");
    return absl::StrContains(ex.Header(http::field::accept), "text/html") &&
           (mode.empty() || mode == "navigate");
  }

  // Resolves the workspace's endpoint, waking it when it sleeps. Answers the request itself
  // (and returns nullopt) when it cannot be forwarded: the waiting page for a browser
  // navigation while the workspace wakes, or an error.
  std::optional<Endpoint> EndpointOrWake(Exchange& ex, const SessionIdentity& identity,
                                         const std::string& workspace_id, bool* answered_ok) {
    Endpoint endpoint;
    grpc::Status status = FetchEndpoint(ex, workspace_id, &endpoint, false);
    if (status.ok()) return endpoint;
    if (status.error_code() != grpc::StatusCode::FAILED_PRECONDITION) {
      *answered_ok = SendGrpcError(ex, status);
      return std::nullopt;
    }
    // Not running: wake it (as the person, so the provisioner applies its own rules), then
    // hold the request until it runs, or show the waiting page to a browser.
    provpb::WakeWorkspaceRequest wake;
    wake.set_workspace_id(workspace_id);
    provpb::WakeWorkspaceResponse woke;
    grpc::ClientContext context;
    const grpc::Status wake_status =
        Provisioner()->WakeWorkspace(Prepare(context, ex, &identity), wake, &woke);
    if (!wake_status.ok() && wake_status.error_code() != grpc::StatusCode::ABORTED) {
      *answered_ok = SendGrpcError(ex, wake_status);
      return std::nullopt;
    }
    if (WantsPage(ex)) {
      SkipBody(ex);
      Response page = Make(ex, http::status::service_unavailable, "text/html; charset=utf-8",
                           "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                           "<meta http-equiv=\"refresh\" content=\"1\"><title>Starting your "
                           "workspace</title></head><body><main><h1>Starting your "
                           "workspace…</h1><p>This page reloads by itself when it is ready."
                           "</p></main></body></html>");
      page.set(http::field::retry_after, "1");
      *answered_ok = Send(ex, std::move(page));
      return std::nullopt;
    }
    const absl::Time give_up = Now() + options_.wake_timeout;
    absl::Duration pause = absl::Milliseconds(50);
    while (Now() < give_up && !ex.entry->closing) {
      absl::SleepFor(pause);
      pause = std::min(pause * 2, absl::Milliseconds(250));
      status = FetchEndpoint(ex, workspace_id, &endpoint, true);
      if (status.ok()) return endpoint;
      if (status.error_code() != grpc::StatusCode::FAILED_PRECONDITION) break;
    }
    SkipBody(ex);
    *answered_ok = status.ok() || status.error_code() == grpc::StatusCode::FAILED_PRECONDITION
                       ? SendError(ex, http::status::gateway_timeout, "DEADLINE_EXCEEDED",
                                   "the workspace did not become ready in time")
                       : SendGrpcError(ex, status);
    return std::nullopt;
  }

  bool HandleWorkspace(Exchange& ex) {
    // /w/<workspace id>/<rest>
    absl::string_view rest = absl::string_view(ex.path).substr(3);
    const size_t slash = rest.find('/');
    const std::string workspace_id(rest.substr(0, slash));
    // Everything below answers the one 404 without contacting anything upstream unless the
    // person has a session and owns the workspace.
    grpc::StatusCode failure = grpc::StatusCode::OK;
    std::optional<SessionIdentity> identity;
    if (IsValidWorkspaceId(workspace_id)) identity = Session(ex, &failure);
    if (!identity.has_value()) {
      SkipBody(ex);
      if (failure == grpc::StatusCode::UNAVAILABLE) return SendSignInRequired(ex, failure);
      return SendNotFound(ex);
    }
    std::string owner;
    const grpc::Status owner_status = Owner(ex, *identity, workspace_id, &owner);
    if (!owner_status.ok() || owner != identity->user_id) {
      SkipBody(ex);
      if (!owner_status.ok() && owner_status.error_code() != grpc::StatusCode::NOT_FOUND &&
          owner_status.error_code() != grpc::StatusCode::PERMISSION_DENIED) {
        return SendGrpcError(ex, owner_status);
      }
      return SendNotFound(ex);
    }
    const bool upgrade = beast::websocket::is_upgrade(ex.request());
    // A page at /w/<id> moves to /w/<id>/; a WebSocket there (a tool's UI derives its socket
    // URL from its base path without the slash, as OpenClaw's does) is forwarded as is.
    if (slash == absl::string_view::npos && !upgrade) {
      SkipBody(ex);
      return Redirect(ex, absl::StrCat(ex.path, "/", ex.query.empty() ? "" : "?", ex.query),
                      http::status::permanent_redirect);
    }
    if (upgrade) {
      // Browsers always send Origin on a WebSocket handshake; only the platform's is accepted.
      if (origins_.count(ex.Header(http::field::origin)) == 0) {
        SkipBody(ex);
        return SendError(ex, http::status::forbidden, "PERMISSION_DENIED",
                         "WebSocket origin not allowed");
      }
    } else if (IsStateChanging(ex.request().method()) && !CsrfOk(ex, false)) {
      SkipBody(ex);
      return SendError(ex, http::status::forbidden, "PERMISSION_DENIED",
                       "cross-site request refused");
    }
    bool answered_ok = false;
    std::optional<Endpoint> endpoint = EndpointOrWake(ex, *identity, workspace_id, &answered_ok);
    if (!endpoint.has_value()) return answered_ok;
    // The supervisor's own routes keep their path; the tool gets its path below /w/<id>
    // unless its profile serves the tool under a base path of its own.
    std::string upstream_path(slash == absl::string_view::npos ? absl::string_view("/")
                                                               : rest.substr(slash));
    const std::string& base = endpoint->identity.tool_base_path();
    if (!absl::StartsWith(upstream_path, "/_tidepool/") && !base.empty() && base != "/") {
      upstream_path = ex.path;
    }
    const bool terminal = absl::StartsWith(upstream_path, "/_tidepool/v1/terminal");
    ForwardPlan plan{.workspace_id = workspace_id,
                     .target = ex.query.empty() ? upstream_path
                                                : absl::StrCat(upstream_path, "?", ex.query),
                     .identity = &*identity,
                     .surface = Surface::kPlatform,
                     .kind = terminal ? ConnectionKind::kTerminal : ConnectionKind::kWebSocket,
                     .preview_port = 0};
    return Forward(ex, *endpoint, plan);
  }

  // ---------------------------------------------------------------------------------------
  // Previews

  // On the platform: turns the person's session into a one-minute ticket for one preview
  // host, and sends the browser there.
  bool HandlePreviewAuth(Exchange& ex) {
    const std::string host = QueryParam(ex.query, "host").value_or("");
    const std::string back = SafeReturnPathOrRoot(QueryParam(ex.query, "path").value_or("/"));
    std::optional<std::string> normalized = NormalizeHost(host);
    std::optional<PreviewTarget> target;
    if (normalized.has_value() && !preview_domain_.empty()) {
      target = ParsePreviewHost(SplitHostPort(*normalized).first, preview_domain_);
    }
    if (!target.has_value()) return SendNotFound(ex);
    grpc::StatusCode failure = grpc::StatusCode::OK;
    std::optional<SessionIdentity> identity = Session(ex, &failure);
    if (!identity.has_value()) {
      if (failure == grpc::StatusCode::UNAVAILABLE) return SendSignInRequired(ex, failure);
      return Redirect(ex, absl::StrCat("/?return_path=",
                                       UrlEncode(absl::StrCat("/preview-auth?", ex.query))));
    }
    std::string owner;
    if (!Owner(ex, *identity, target->workspace_id, &owner).ok() || owner != identity->user_id) {
      return SendNotFound(ex);
    }
    absl::StatusOr<std::string> nonce = crypto::RandomToken(16);
    if (!nonce.ok()) return SendError(ex, http::status::internal_server_error, "INTERNAL", "");
    const std::string ticket = SignEdgeValue(
        options_.preview_key, "ticket",
        {*normalized, identity->user_id, identity->session_id,
         absl::StrCat(absl::ToUnixSeconds(identity->issued_at)),
         absl::StrCat(absl::ToUnixSeconds(identity->expires_at)), *nonce},
        Now() + absl::Seconds(60));
    return Redirect(ex, absl::StrCat(public_.scheme, "://", *normalized, kPreviewCallbackPath,
                                     "?ticket=", UrlEncode(ticket), "&path=", UrlEncode(back)));
  }

  bool HandlePreview(Exchange& ex, const PreviewTarget& target) {
    ex.route = "preview";
    if (ex.path == kPreviewCallbackPath) {
      SkipBody(ex);
      return HandlePreviewCallback(ex);
    }
    // The preview cookie: signed by this edge for this very host.
    std::optional<SessionIdentity> identity;
    auto cookie = ex.cookies.find(cookies_.preview);
    if (cookie != ex.cookies.end()) {
      absl::StatusOr<std::vector<std::string>> fields =
          VerifyEdgeValue(options_.preview_key, "preview", cookie->second, 5, Now());
      if (fields.ok() && (*fields)[0] == ex.host) {
        SessionIdentity candidate;
        candidate.user_id = (*fields)[1];
        candidate.session_id = (*fields)[2];
        int64_t issued = 0;
        int64_t expires = 0;
        if (absl::SimpleAtoi((*fields)[3], &issued) && absl::SimpleAtoi((*fields)[4], &expires)) {
          candidate.issued_at = absl::FromUnixSeconds(issued);
          candidate.expires_at = absl::FromUnixSeconds(expires);
          absl::Status live = backends_.sessions->CheckSession(candidate);
          if (live.ok()) {
            identity = candidate;
          } else if (live.code() == absl::StatusCode::kUnavailable) {
            SkipBody(ex);
            return SendError(ex, http::status::service_unavailable, "UNAVAILABLE",
                             "sessions cannot be checked right now; try again in a moment");
          }
        }
      }
    }
    if (!identity.has_value()) {
      SkipBody(ex);
      // A navigation goes through the platform for a ticket; anything else is the one 404.
      if (WantsPage(ex)) {
        return Redirect(ex, absl::StrCat(public_.scheme, "://", public_.authority,
                                         "/preview-auth?host=", UrlEncode(ex.host), "&path=",
                                         UrlEncode(ex.query.empty()
                                                       ? ex.path
                                                       : absl::StrCat(ex.path, "?", ex.query))));
      }
      return SendNotFound(ex);
    }
    std::string owner;
    const grpc::Status owner_status = Owner(ex, *identity, target.workspace_id, &owner);
    if (!owner_status.ok() || owner != identity->user_id) {
      SkipBody(ex);
      return SendNotFound(ex);
    }
    if (beast::websocket::is_upgrade(ex.request()) &&
        ex.Header(http::field::origin) != absl::StrCat(public_.scheme, "://", ex.host)) {
      SkipBody(ex);
      return SendError(ex, http::status::forbidden, "PERMISSION_DENIED",
                       "WebSocket origin not allowed");
    }
    bool answered_ok = false;
    std::optional<Endpoint> endpoint =
        EndpointOrWake(ex, *identity, target.workspace_id, &answered_ok);
    if (!endpoint.has_value()) return answered_ok;
    ForwardPlan plan{.workspace_id = target.workspace_id,
                     .target = std::string(ex.request().target()),
                     .identity = &*identity,
                     .surface = Surface::kPreview,
                     .kind = ConnectionKind::kPreview,
                     .preview_port = target.port};
    return Forward(ex, *endpoint, plan);
  }

  bool HandlePreviewCallback(Exchange& ex) {
    const std::string ticket = QueryParam(ex.query, "ticket").value_or("");
    const std::string back = SafeReturnPathOrRoot(QueryParam(ex.query, "path").value_or("/"));
    absl::StatusOr<std::vector<std::string>> fields =
        VerifyEdgeValue(options_.preview_key, "ticket", ticket, 6, Now());
    if (!fields.ok() || (*fields)[0] != ex.host || !ConsumeNonce((*fields)[5])) {
      return SendNotFound(ex);
    }
    int64_t expires = 0;
    (void)absl::SimpleAtoi((*fields)[4], &expires);
    const absl::Time cookie_expires =
        std::min(Now() + options_.preview_cookie_lifetime, absl::FromUnixSeconds(expires));
    const std::string value = SignEdgeValue(
        options_.preview_key, "preview",
        {ex.host, (*fields)[1], (*fields)[2], (*fields)[3], (*fields)[4]}, cookie_expires);
    ex.set_cookies.push_back(
        SetCookieValue(cookies_.preview, value, cookie_expires - Now(), secure_, true));
    return Redirect(ex, back, http::status::see_other);
  }

  // Tickets are single use.
  bool ConsumeNonce(const std::string& nonce) {
    absl::MutexLock lock(&cache_mu_);
    const absl::Time now = Now();
    for (auto it = nonces_.begin(); it != nonces_.end();) {
      it = it->second < now ? nonces_.erase(it) : std::next(it);
    }
    return nonces_.emplace(nonce, now + absl::Seconds(120)).second;
  }

  // ---------------------------------------------------------------------------------------
  // Forwarding to a workspace's supervisor

  struct ForwardPlan {
    std::string workspace_id;
    std::string target;  // the upstream request target
    const SessionIdentity* identity = nullptr;
    Surface surface = Surface::kPlatform;
    ConnectionKind kind = ConnectionKind::kWebSocket;  // if it upgrades
    int preview_port = 0;
  };

  // Rewrites the request's header for the workspace: removes what only the platform may say
  // and every platform credential, then adds the supervisor credential and the identity the
  // profile asks for.
  void PrepareUpstreamHeader(Exchange& ex, const Endpoint& endpoint, const ForwardPlan& plan,
                             const std::string& email) {
    http::request<http::empty_body>& request = ex.parser->get();
    std::vector<std::string> remove;
    const provpb::IdentityHeaderSettings& identity = endpoint.identity;
    for (const auto& field : request) {
      const std::string name = absl::AsciiStrToLower(
          absl::string_view(field.name_string().data(), field.name_string().size()));
      bool drop = std::find(std::begin(kSpoofableHeaders), std::end(kSpoofableHeaders), name) !=
                  std::end(kSpoofableHeaders);
      for (absl::string_view prefix : kSpoofablePrefixes) drop |= absl::StartsWith(name, prefix);
      if (plan.surface == Surface::kPlatform && name == "authorization") drop = true;
      if (!identity.user_header().empty() &&
          absl::EqualsIgnoreCase(name, identity.user_header())) {
        drop = true;
      }
      for (const std::string& extra : identity.strip_headers()) {
        drop |= absl::EqualsIgnoreCase(name, extra);
      }
      if (drop) remove.push_back(std::string(field.name_string()));
    }
    for (const std::string& name : remove) request.erase(name);
    const std::string cookie = StripPlatformCookies(ex.Header(http::field::cookie));
    request.erase(http::field::cookie);
    if (!cookie.empty()) request.set(http::field::cookie, cookie);
    request.target(plan.target);
    request.set("X-Tidepool-Credential", endpoint.credential);
    if (plan.preview_port > 0) request.set("X-Tidepool-Preview-Port", absl::StrCat(plan.preview_port));
    if (plan.surface == Surface::kPlatform && identity.enabled() && !identity.user_header().empty()) {
      request.set(identity.user_header(), identity.user_value() == provpb::IDENTITY_VALUE_EMAIL
                                              ? email
                                              : plan.identity->user_id);
    }
    if (identity.set_forwarded_headers()) {
      request.set("X-Forwarded-For", ForwardedFor(ex.source_address));
      request.set("X-Forwarded-Proto", public_.scheme);
      request.set("X-Forwarded-Host", ex.host);
    }
  }

  // The client address a tool is told. A browser on the edge's own host (development, tests)
  // is named by TEST-NET-1's 192.0.2.1 (RFC 5737) instead of loopback: tools behind a trusted
  // proxy refuse a loopback client as unattributed (OpenClaw answers 403
  // proxy_attribution_required), and loopback must never read as "local, trusted".
  static std::string ForwardedFor(const std::string& source_address) {
    boost::system::error_code ec;
    const boost::asio::ip::address address = boost::asio::ip::make_address(source_address, ec);
    if (!ec && (address.is_loopback() ||
                (address.is_v6() && address.to_v6().is_v4_mapped() &&
                 boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, address.to_v6())
                     .is_loopback()))) {
      return "192.0.2.1";
    }
    return source_address;
  }

  std::string EmailOf(const Exchange& ex, const SessionIdentity& identity) {
    {
      absl::MutexLock lock(&cache_mu_);
      auto it = emails_.find(identity.user_id);
      if (it != emails_.end() && it->second.second > Now()) return it->second.first;
    }
    authpb::GetUserRequest request;
    request.set_user_id(identity.user_id);
    authpb::GetUserResponse response;
    grpc::ClientContext context;
    if (!Auth()->GetUser(Prepare(context, ex, &identity), request, &response).ok()) return "";
    const std::string email = absl::AsciiStrToLower(response.user().email());
    absl::MutexLock lock(&cache_mu_);
    emails_[identity.user_id] = {email, Now() + absl::Minutes(5)};
    return email;
  }

  bool Forward(Exchange& ex, Endpoint endpoint, const ForwardPlan& plan) {
    const bool upgrade = beast::websocket::is_upgrade(ex.request());
    if (upgrade && registry_.CountWebSockets(plan.identity->user_id) >=
                       options_.max_websockets_per_user) {
      SkipBody(ex);
      return SendError(ex, http::status::too_many_requests, "RESOURCE_EXHAUSTED",
                       "too many open WebSockets for this person");
    }
    std::string email;
    if (plan.surface == Surface::kPlatform && endpoint.identity.enabled() &&
        endpoint.identity.user_value() == provpb::IDENTITY_VALUE_EMAIL) {
      email = EmailOf(ex, *plan.identity);
    }
    PrepareUpstreamHeader(ex, endpoint, plan, email);

    // Blocking I/O only: the client socket's io_context serves (no reactor of its own per
    // request).
    local::socket upstream(ex.socket->get_executor());
    boost::system::error_code ec;
    upstream.connect(local::endpoint(endpoint.socket_path), ec);
    if (ec) {
      // The endpoint was remembered from before the workspace slept or restarted: look it up
      // again (EndpointOrWake wakes a sleeping workspace and holds the request, or shows the
      // waiting page). One being put to sleep still reads as running for a moment, so this is
      // tried for a few seconds.
      const absl::Time give_up = Now() + absl::Seconds(5);
      absl::Duration pause = absl::Milliseconds(20);
      while (ec && Now() < give_up && !ex.entry->closing) {
        ForgetEndpoint(plan.workspace_id);
        bool answered_ok = false;
        std::optional<Endpoint> current =
            EndpointOrWake(ex, *plan.identity, plan.workspace_id, &answered_ok);
        if (!current.has_value()) return answered_ok;
        endpoint = *std::move(current);
        ex.parser->get().set("X-Tidepool-Credential", endpoint.credential);
        upstream = local::socket(ex.socket->get_executor());
        upstream.connect(local::endpoint(endpoint.socket_path), ec);
        if (ec) {
          absl::SleepFor(pause);
          pause = std::min(pause * 2, absl::Milliseconds(250));
        }
      }
      if (ec) {
        SkipBody(ex);
        return SendError(ex, http::status::bad_gateway, "UNAVAILABLE",
                         "the workspace is not answering");
      }
    }
    const int upstream_fd = upstream.native_handle();
    const int client_fd = ex.socket->native_handle();
    // While forwarding, closing the connection (revocation, shutdown) shuts both sockets.
    registry_.Update(ex.entry->id, [&](ConnectionEntry& e) {
      e.source_address = ex.source_address;
      e.user_id = plan.identity->user_id;
      e.session_id = plan.identity->session_id;
      e.session_issued_at = plan.identity->issued_at;
      e.workspace_id = plan.workspace_id;
      if (plan.surface == Surface::kPreview) e.kind = ConnectionKind::kPreview;
      e.close = [upstream_fd, client_fd](const std::string&) {
        ::shutdown(upstream_fd, SHUT_RDWR);
        ::shutdown(client_fd, SHUT_RDWR);
      };
    });
    // The client keeps its own idle timeout; an upgraded connection's idle limit is the
    // watchdog's (the tunnel loop does not block on reads).
    SetSocketTimeout(upstream_fd, absl::Minutes(10));
    // Whatever way this ends, the entry's close goes back to the client socket alone before the
    // upstream socket (declared above) is closed and its descriptor can be reused.
    struct RestoreClose {
      Impl* impl;
      Exchange& ex;
      int client_fd;
      ~RestoreClose() {
        const int fd = client_fd;
        impl->registry_.Update(ex.entry->id, [fd](ConnectionEntry& e) {
          e.close = [fd](const std::string&) { ::shutdown(fd, SHUT_RDWR); };
        });
      }
    } restore_close{this, ex, client_fd};

    const int64_t received_before = ex.entry->bytes_received.load();
    const int64_t sent_before = ex.entry->bytes_sent.load();
    if (!upgrade) ex.parser->get().keep_alive(false);
    http::request_parser<http::buffer_body> request_parser(std::move(*ex.parser));
    ex.body_taken = true;
    request_parser.body_limit(net::kNoBodyLimit);
    net::RelayMessage(upstream, *ex.socket, *ex.buffer, request_parser, ec,
                      [&ex](size_t n) { ex.entry->bytes_received += static_cast<int64_t>(n); });
    const bool client_keep_alive = ex.head.keep_alive();
    if (ec) {
      ex.keep_alive = false;
      return SendError(ex, http::status::bad_gateway, "UNAVAILABLE",
                       "the workspace is not answering");
    }
    beast::flat_buffer upstream_buffer;
    http::response_parser<http::buffer_body> response_parser;
    if (ex.head.method() == http::verb::head) response_parser.skip(true);  // no body follows
    response_parser.body_limit(net::kNoBodyLimit);
    response_parser.header_limit(64 * 1024);
    http::read_header(upstream, upstream_buffer, response_parser, ec);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      ex.keep_alive = false;
      return SendError(ex, http::status::bad_gateway, "UNAVAILABLE",
                       "the workspace is not answering");
    }
    auto& head = response_parser.get();
    if (head.result() == http::status::unauthorized &&
        head.find("X-Tidepool-Supervisor") != head.end()) {
      ForgetEndpoint(plan.workspace_id);
    }
    if (plan.surface == Surface::kPreview) StripCookieDomains(head);
    if (upgrade && head.result() == http::status::switching_protocols) {
      registry_.Update(ex.entry->id, [&](ConnectionEntry& e) {
        e.kind = plan.kind;
        e.upgraded = true;
        e.idle_limit = options_.websocket_idle;
        e.SetDeadline(plan.identity->expires_at);  // never outlives the session
      });
      http::response<http::empty_body> upgraded(head.base());
      http::response_serializer<http::empty_body> serializer(upgraded);
      http::write_header(*ex.socket, serializer, ec);
      if (!ec && upstream_buffer.size() > 0) asio::write(*ex.socket, upstream_buffer.data(), ec);
      if (!ec && ex.buffer->size() > 0) asio::write(upstream, ex.buffer->data(), ec);
      Count(ex, 101);
      if (!ec) Tunnel(ex, upstream, plan);
      ex.keep_alive = false;
      return false;
    }
    // The client's connection stays open only if the answer's end can be told without closing
    // it (a length or chunks; a body-less answer).
    const int code = head.result_int();
    const bool delimited = response_parser.chunked() ||
                           response_parser.content_length().has_value() ||
                           ex.head.method() == http::verb::head || code == 204 || code == 304 ||
                           code < 200;
    head.keep_alive(client_keep_alive && ex.keep_alive && delimited);
    net::RelayMessage(*ex.socket, upstream, upstream_buffer, response_parser, ec,
                      [&ex](size_t n) { ex.entry->bytes_sent += static_cast<int64_t>(n); });
    Count(ex, code);
    if (backends_.on_activity) {
      const int64_t bytes = ex.entry->bytes_received.load() - received_before +
                            ex.entry->bytes_sent.load() - sent_before;
      backends_.on_activity(plan.workspace_id, plan.identity->user_id,
                            scalerpb::ACTIVITY_SOURCE_HTTP, bytes);
    }
    return !ec && head.keep_alive() && response_parser.is_done();
  }

  // A preview's cookies stay on its own host: a Domain attribute (cookie tossing at sibling
  // previews) is removed.
  static void StripCookieDomains(http::response_parser<http::buffer_body>::value_type& head) {
    std::vector<std::string> cookies;
    for (auto it = head.find(http::field::set_cookie); it != head.end() &&
                                                        it->name() == http::field::set_cookie;
         ++it) {
      std::vector<std::string> kept;
      for (absl::string_view part : absl::StrSplit(
               absl::string_view(it->value().data(), it->value().size()), ';')) {
        if (absl::StartsWithIgnoreCase(absl::StripLeadingAsciiWhitespace(part), "domain=")) {
          continue;
        }
        kept.emplace_back(part);
      }
      cookies.push_back(absl::StrJoin(kept, ";"));
    }
    if (cookies.empty()) return;
    head.erase(http::field::set_cookie);
    for (const std::string& cookie : cookies) head.insert(http::field::set_cookie, cookie);
  }

  // Relays an upgraded connection both ways on the tunnel loop (this thread only waits),
  // watching frame boundaries so that a revocation or a deadline closes it with a proper close
  // frame (1008) instead of a cut.
  void Tunnel(Exchange& ex, local::socket& upstream, const ForwardPlan& plan) {
    std::shared_ptr<ConnectionEntry> entry = ex.entry;
    const scalerpb::ActivitySource up_source = plan.kind == ConnectionKind::kTerminal
                                                   ? scalerpb::ACTIVITY_SOURCE_TERMINAL_INPUT
                                                   : scalerpb::ACTIVITY_SOURCE_WEBSOCKET;
    // Activity is summed here and handed on at most once a second (and at the end), not per
    // read: a busy socket reads thousands of times a second.
    struct ActivityTally {
      const Impl* impl;
      const ForwardPlan& plan;
      int source;
      int64_t bytes = 0;
      int64_t reported_at = 0;  // Unix microseconds
      void Add(size_t n, int64_t now) {
        bytes += static_cast<int64_t>(n);
        if (now - reported_at >= 1000000) Report(now);
      }
      void Report(int64_t now) {
        if (bytes > 0 && impl->backends_.on_activity) {
          impl->backends_.on_activity(plan.workspace_id, plan.identity->user_id, source, bytes);
        }
        bytes = 0;
        reported_at = now;
      }
    };
    // Both are touched by the loop thread until Wait() returns, then by this one.
    ActivityTally up_tally{this, plan, up_source};
    ActivityTally down_tally{this, plan, scalerpb::ACTIVITY_SOURCE_WEBSOCKET};
    std::shared_ptr<proxy::Tunnel> tunnel = tunnels_.Start(
        ex.socket->native_handle(), upstream.native_handle(),
        {.max_client_message = options_.max_websocket_message_bytes,
         .on_bytes = [&, entry](size_t n, bool up) {
           const int64_t now = absl::ToUnixMicros(Now());
           (up ? entry->bytes_received : entry->bytes_sent) += static_cast<int64_t>(n);
           entry->last_activity_unix_micros = now;
           (up ? up_tally : down_tally).Add(n, now);
         }});
    if (tunnel == nullptr) return;
    // Closing (revocation, deadline, shutdown) goes through the tunnel until Forward restores
    // the client-only close.
    bool closed_already = false;
    registry_.Update(entry->id, [&](ConnectionEntry& e) {
      e.close = [tunnel](const std::string&) { tunnel->Close(); };
      closed_already = e.closing;
    });
    if (closed_already) tunnel->Close();
    tunnel->Wait();
    up_tally.Report(0);
    down_tally.Report(0);
  }

  // ---------------------------------------------------------------------------------------
  // Static files

  bool ServeStatic(Exchange& ex) {
    std::string relative = ex.path.substr(1);
    if (relative.empty()) relative = "index.html";
    for (absl::string_view segment : absl::StrSplit(relative, '/')) {
      if (!segment.empty() && segment.front() == '.') return SendNotFound(ex);
    }
    if (absl::StrContains(relative, '%')) return SendNotFound(ex);
    std::string body;
    std::string file;
    if (!options_.web_root.empty()) {
      const std::filesystem::path root(options_.web_root);
      for (const std::string& candidate : {relative, std::string("index.html")}) {
        // A path with an extension that is not there is a 404; any other is the app's route.
        if (candidate == "index.html" && candidate != relative &&
            std::filesystem::path(relative).has_extension()) {
          break;
        }
        const std::filesystem::path full = root / candidate;
        std::error_code error;
        const std::filesystem::path resolved = std::filesystem::canonical(full, error);
        const std::filesystem::path root_resolved = std::filesystem::canonical(root, error);
        if (error || !absl::StartsWith(resolved.string(), root_resolved.string() + "/") ||
            !std::filesystem::is_regular_file(resolved, error)) {
          continue;
        }
        std::ifstream in(resolved, std::ios::binary);
        std::ostringstream data;
        data << in.rdbuf();
        body = data.str();
        file = candidate;
        break;
      }
    }
    if (file.empty()) {
      if (!options_.web_root.empty() && std::filesystem::path(relative).has_extension()) {
        return SendNotFound(ex);
      }
      file = "index.html";
      body = BuiltInPage();
    }
    Response response = Make(ex, http::status::ok, ContentTypeFor(file), std::move(body));
    response.set(http::field::cache_control, file == "index.html" ? "no-cache" : "public, max-age=300");
    if (ex.request().method() == http::verb::head) {
      const size_t size = response.body().size();
      response.body().clear();
      response.prepare_payload();
      response.content_length(size);
    }
    return Send(ex, std::move(response));
  }

  static std::string BuiltInPage() {
    return "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta "
           "name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Tidepool"
           "</title></head><body><main><h1>Tidepool</h1><p>The platform is running. The web "
           "interface is not installed on this server (set proxy.web_root).</p><p>Sign-in "
           "providers: <a href=\"/auth/providers\">/auth/providers</a></p></main></body></html>";
  }

  // ---------------------------------------------------------------------------------------

  struct RefreshFlight {
    absl::Time started;
    bool done = false;
    std::optional<authpb::SessionGrant> grant;
  };

  const EdgeOptions options_;
  const EdgeBackends backends_;
  // Calls to a service that cannot be found go here and fail at once with UNAVAILABLE.
  const std::shared_ptr<grpc::Channel> unreachable_;

  UrlParts public_;
  bool secure_ = false;
  CookieNames cookies_;
  std::string preview_domain_;
  std::set<std::string> platform_hosts_;
  std::set<std::string> origins_;
  std::set<int> preview_ports_;
  std::vector<asio::ip::network_v4> forwarders_v4_;
  std::vector<asio::ip::network_v6> forwarders_v6_;

  asio::io_context io_;
  tcp::acceptor acceptor_{io_};
  int port_ = 0;
  std::thread accept_thread_;
  std::thread watchdog_thread_;
  // Relays upgraded connections, one epoll thread per core. Destroyed after Stop() has closed
  // every connection (any tunnel still running then ends as if its browser left).
  TunnelLoop tunnels_{static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  int live_ = 0;
  std::atomic<uint64_t> next_request_{1};

  ConnectionRegistry registry_;

  absl::Mutex cache_mu_;
  std::map<std::string, std::pair<std::string, absl::Time>> owners_ ABSL_GUARDED_BY(cache_mu_);
  std::map<std::string, Endpoint> endpoints_ ABSL_GUARDED_BY(cache_mu_);
  std::map<std::string, std::pair<std::string, absl::Time>> emails_ ABSL_GUARDED_BY(cache_mu_);
  std::map<std::string, absl::Time> nonces_ ABSL_GUARDED_BY(cache_mu_);

  absl::Mutex refresh_mu_;
  std::map<std::string, std::shared_ptr<RefreshFlight>> refreshes_ ABSL_GUARDED_BY(refresh_mu_);

  std::map<std::string, std::array<prometheus::Counter*, 6>, std::less<>> request_counters_;
  prometheus::Family<prometheus::Gauge>* connections_family_ = nullptr;
  prometheus::Counter* closed_on_revocation_ = nullptr;
};

EdgeServer::EdgeServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

EdgeServer::~EdgeServer() { Stop(); }

absl::StatusOr<std::unique_ptr<EdgeServer>> EdgeServer::Start(EdgeOptions options,
                                                              EdgeBackends backends) {
  if (backends.sessions == nullptr || backends.api == nullptr || !backends.channel_for) {
    return absl::InvalidArgumentError("the edge needs auth, provisioner, sessions and the API");
  }
  auto impl = std::make_unique<Impl>(std::move(options), std::move(backends));
  if (absl::Status configured = impl->Configure(); !configured.ok()) return configured;
  if (absl::Status bound = impl->Bind(); !bound.ok()) return bound;
  impl->SetMetrics();
  impl->StartThreads();
  return std::unique_ptr<EdgeServer>(new EdgeServer(std::move(impl)));
}

int EdgeServer::port() const { return impl_->port(); }
ConnectionRegistry& EdgeServer::connections() { return impl_->registry(); }
std::vector<RouteInfo> EdgeServer::Routes() const { return impl_->Routes(); }
void EdgeServer::Stop() { impl_->Stop(); }
void EdgeServer::OnRevocation(const auth::v1::Revocation& revocation) {
  impl_->OnRevocation(revocation);
}

}  // namespace tidepool::proxy
