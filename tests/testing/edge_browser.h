#pragma once

// A small browser for tests against the proxy's edge: a cookie jar fed by Set-Cookie, plain
// HTTP/1.1 requests with any Host, Origin or extra header, WebSocket handshakes, and raw bytes
// for framing attacks. One TCP connection per request unless a KeepAlive is used.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tidepool::testing {

struct EdgeResponse {
  int status = 0;
  // Header names lower-cased; a repeated header keeps its last value (Set-Cookie: see below).
  std::map<std::string, std::string> headers;
  std::vector<std::string> set_cookies;
  std::string body;
  std::string Header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? "" : it->second;
  }
};

struct EdgeRequest {
  std::string method = "GET";
  std::string target = "/";
  std::string body = {};
  // Empty: "127.0.0.1:<port>".
  std::string host = {};
  std::vector<std::pair<std::string, std::string>> headers = {};
  // Send the jar's cookies.
  bool cookies = true;
};

class EdgeBrowser {
 public:
  explicit EdgeBrowser(int port) : port_(port) {}

  int port() const { return port_; }
  std::string Origin() const;  // "http://127.0.0.1:<port>"

  // Sends one request on a new connection and applies its Set-Cookie headers to the jar.
  EdgeResponse Send(const EdgeRequest& request);
  EdgeResponse Get(const std::string& target) { return Send({.method = "GET", .target = target}); }
  // A same-origin JSON POST as the web UI makes it: Origin and the CSRF header set.
  EdgeResponse PostJson(const std::string& target, const std::string& body);

  // The jar. Cookies with Max-Age=0 are removed; attributes are kept for inspection.
  std::map<std::string, std::string>& cookies() { return cookies_; }
  const std::map<std::string, std::string>& cookie_lines() const { return cookie_lines_; }
  std::string CookieHeader() const;

  // A WebSocket. Handshake failures return the HTTP status as the error message ("403").
  class WebSocket {
   public:
    virtual ~WebSocket() = default;
    virtual absl::Status Write(const std::string& text, bool binary = false) = 0;
    // Reads one message; `close_code` (if not null) gets the peer's close code when it closes.
    virtual absl::StatusOr<std::string> Read(absl::Duration timeout, int* close_code = nullptr) = 0;
  };
  absl::StatusOr<std::unique_ptr<WebSocket>> OpenWebSocket(
      const std::string& target, const std::string& origin, const std::string& host = "",
      bool send_cookies = true, int* handshake_status = nullptr);

 private:
  void Absorb(const std::vector<std::string>& set_cookies);

  int port_;
  std::map<std::string, std::string> cookies_;
  std::map<std::string, std::string> cookie_lines_;
};

// Writes `bytes` to 127.0.0.1:`port` and returns everything read until the server closes or
// `timeout` passes.
std::string RawExchange(int port, const std::string& bytes, absl::Duration timeout = absl::Seconds(5));

}  // namespace tidepool::testing
