#include "tests/testing/edge_browser.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <utility>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace tidepool::testing {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

void SetTimeouts(int fd, absl::Duration timeout) {
  timeval tv{};
  tv.tv_sec = absl::ToInt64Seconds(timeout);
  tv.tv_usec = absl::ToInt64Microseconds(timeout - absl::Seconds(tv.tv_sec));
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

class BeastWebSocket : public EdgeBrowser::WebSocket {
 public:
  BeastWebSocket(std::unique_ptr<asio::io_context> io,
                 std::unique_ptr<websocket::stream<tcp::socket>> ws)
      : io_(std::move(io)), ws_(std::move(ws)) {
    ws_->auto_fragment(false);  // one frame per message, as browsers send small ones
    ws_->read_message_max(64 << 20);
  }

  absl::Status Write(const std::string& text, bool binary) override {
    boost::system::error_code ec;
    ws_->binary(binary);
    ws_->write(asio::buffer(text), ec);
    if (ec) return absl::UnavailableError(ec.message());
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Read(absl::Duration timeout, int* close_code) override {
    SetTimeouts(ws_->next_layer().native_handle(), timeout);
    beast::flat_buffer buffer;
    boost::system::error_code ec;
    ws_->read(buffer, ec);
    if (ec) {
      if (close_code != nullptr) *close_code = ws_->reason().code;
      if (ec == websocket::error::closed) return absl::CancelledError("closed");
      return absl::UnavailableError(ec.message());
    }
    return beast::buffers_to_string(buffer.data());
  }

 private:
  std::unique_ptr<asio::io_context> io_;
  std::unique_ptr<websocket::stream<tcp::socket>> ws_;
};

}  // namespace

std::string EdgeBrowser::Origin() const { return absl::StrCat("http://127.0.0.1:", port_); }

std::string EdgeBrowser::CookieHeader() const {
  std::vector<std::string> parts;
  for (const auto& [name, value] : cookies_) parts.push_back(absl::StrCat(name, "=", value));
  return absl::StrJoin(parts, "; ");
}

void EdgeBrowser::Absorb(const std::vector<std::string>& set_cookies) {
  for (const std::string& line : set_cookies) {
    const std::string first = line.substr(0, line.find(';'));
    const size_t eq = first.find('=');
    if (eq == std::string::npos) continue;
    const std::string name = first.substr(0, eq);
    cookie_lines_[name] = line;
    if (absl::StrContains(line, "Max-Age=0")) {
      cookies_.erase(name);
    } else {
      cookies_[name] = first.substr(eq + 1);
    }
  }
}

EdgeResponse EdgeBrowser::Send(const EdgeRequest& request) {
  EdgeResponse out;
  asio::io_context io;
  tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect({asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port_)}, ec);
  if (ec) return out;
  SetTimeouts(socket.native_handle(), absl::Seconds(70));
  http::request<http::string_body> message(http::string_to_verb(request.method), request.target,
                                           11);
  message.set(http::field::host,
              request.host.empty() ? absl::StrCat("127.0.0.1:", port_) : request.host);
  if (request.cookies && !cookies_.empty()) message.set(http::field::cookie, CookieHeader());
  for (const auto& [name, value] : request.headers) message.set(name, value);
  message.body() = request.body;
  if (!request.body.empty() || request.method == "POST" || request.method == "PUT") {
    message.prepare_payload();
  }
  message.keep_alive(false);
  http::write(socket, message, ec);
  if (ec) return out;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(256 * 1024 * 1024);
  http::read(socket, buffer, parser, ec);
  if (ec && ec != http::error::end_of_stream) return out;
  const auto& response = parser.get();
  out.status = response.result_int();
  for (const auto& field : response) {
    const std::string name = absl::AsciiStrToLower(
        absl::string_view(field.name_string().data(), field.name_string().size()));
    const std::string value(field.value());
    if (name == "set-cookie") out.set_cookies.push_back(value);
    out.headers[name] = value;
  }
  out.body = response.body();
  Absorb(out.set_cookies);
  return out;
}

EdgeResponse EdgeBrowser::PostJson(const std::string& target, const std::string& body) {
  EdgeRequest request{.method = "POST", .target = target, .body = body};
  request.headers.push_back({"Origin", Origin()});
  request.headers.push_back({"Content-Type", "application/json"});
  for (const auto& [name, value] : cookies_) {
    if (absl::EndsWith(name, "tidepool_csrf")) request.headers.push_back({"X-Tidepool-CSRF", value});
  }
  return Send(request);
}

absl::StatusOr<std::unique_ptr<EdgeBrowser::WebSocket>> EdgeBrowser::OpenWebSocket(
    const std::string& target, const std::string& origin, const std::string& host,
    bool send_cookies, int* handshake_status) {
  auto io = std::make_unique<asio::io_context>();
  auto ws = std::make_unique<websocket::stream<tcp::socket>>(*io);
  boost::system::error_code ec;
  ws->next_layer().connect({asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port_)}, ec);
  if (ec) return absl::UnavailableError(ec.message());
  SetTimeouts(ws->next_layer().native_handle(), absl::Seconds(30));
  const std::string cookie = send_cookies ? CookieHeader() : "";
  ws->set_option(websocket::stream_base::decorator([origin, cookie](websocket::request_type& req) {
    if (!origin.empty()) req.set(http::field::origin, origin);
    if (!cookie.empty()) req.set(http::field::cookie, cookie);
  }));
  websocket::response_type response;
  ws->handshake(response, host.empty() ? absl::StrCat("127.0.0.1:", port_) : host, target, ec);
  if (ec) {
    // Boost 1.74 leaves `response` empty when the upgrade is declined: ask again as plain HTTP
    // to learn the answer's status.
    EdgeRequest again{.target = target, .host = host, .cookies = send_cookies};
    again.headers = {{"Connection", "Upgrade"},
                     {"Upgrade", "websocket"},
                     {"Sec-WebSocket-Version", "13"},
                     {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}};
    if (!origin.empty()) again.headers.push_back({"Origin", origin});
    const int status = Send(again).status;
    if (handshake_status != nullptr) *handshake_status = status;
    return absl::PermissionDeniedError(absl::StrCat(status));
  }
  if (handshake_status != nullptr) *handshake_status = 101;
  return std::unique_ptr<WebSocket>(new BeastWebSocket(std::move(io), std::move(ws)));
}

std::string RawExchange(int port, const std::string& bytes, absl::Duration timeout) {
  asio::io_context io;
  tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect({asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)}, ec);
  if (ec) return "";
  SetTimeouts(socket.native_handle(), timeout);
  asio::write(socket, asio::buffer(bytes), ec);
  std::string out;
  char chunk[4096];
  for (;;) {
    const size_t n = socket.read_some(asio::buffer(chunk), ec);
    out.append(chunk, n);
    if (ec) break;
  }
  return out;
}

}  // namespace tidepool::testing
