#include "services/supervisor/tool_proxy.h"

#include <sys/socket.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "lib/net/http_relay.h"

namespace tidepool::supervisor {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// The page a browser gets while the tool is not answering yet (a gateway still starting): it
// says so and reloads itself, instead of an error.
constexpr char kStartingPage[] =
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    "<meta http-equiv=\"refresh\" content=\"2\"><title>Your agent is starting</title></head>"
    "<body style=\"font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;"
    "color:#1b2733\"><h1>Your agent is starting</h1>"
    "<p role=\"status\">This takes a few seconds. The page opens by itself when it is ready.</p>"
    "</body></html>";

// A browser navigation (GET or HEAD asking for HTML) gets kStartingPage; anything else JSON.
void BadGateway(asio::local::stream_protocol::socket& client, unsigned version, bool navigation) {
  http::response<http::string_body> response(
      navigation ? http::status::service_unavailable : http::status::bad_gateway, version);
  response.set(http::field::cache_control, "no-store");
  if (navigation) {
    response.set(http::field::content_type, "text/html; charset=utf-8");
    response.set(http::field::retry_after, "2");
    response.body() = kStartingPage;
  } else {
    response.set(http::field::content_type, "application/json");
    response.body() =
        "{\"code\":\"UNAVAILABLE\",\"message\":\"the tool's web UI is not answering\"}";
  }
  response.keep_alive(false);
  response.prepare_payload();
  boost::system::error_code ec;
  http::write(client, response, ec);
}

}  // namespace

void ForwardToTool(int port, http::request_parser<http::empty_body>& header,
                   asio::local::stream_protocol::socket& client, beast::flat_buffer& client_buffer) {
  http::request<http::empty_body>& request = header.get();
  const unsigned version = request.version();
  std::vector<std::string> platform_headers;
  for (const auto& field : request) {
    if (absl::StartsWithIgnoreCase(std::string(field.name_string()), "x-tidepool-")) {
      platform_headers.emplace_back(field.name_string());
    }
  }
  for (const std::string& name : platform_headers) request.erase(name);
  const bool upgrade = beast::websocket::is_upgrade(request);
  const bool navigation =
      !upgrade && (request.method() == http::verb::get || request.method() == http::verb::head) &&
      absl::StrContains(std::string(request[http::field::accept]), "text/html");

  tcp::socket tool(client.get_executor());  // blocking I/O: no io_context of its own
  boost::system::error_code ec;
  tool.connect({asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)}, ec);
  if (ec) {
    BadGateway(client, version, navigation);
    return;
  }
  if (!upgrade) request.keep_alive(false);
  http::request_parser<http::buffer_body> request_parser(std::move(header));
  request_parser.body_limit(net::kNoBodyLimit);  // the tool decides
  net::RelayMessage(tool, client, client_buffer, request_parser, ec);
  if (ec) {
    BadGateway(client, version, navigation);
    return;
  }
  beast::flat_buffer tool_buffer;
  http::response_parser<http::buffer_body> response_parser;
  if (request_parser.get().method() == http::verb::head) response_parser.skip(true);
  response_parser.body_limit(net::kNoBodyLimit);
  response_parser.header_limit(64 * 1024);
  http::read_header(tool, tool_buffer, response_parser, ec);
  if (ec == http::error::need_buffer) ec = {};  // the header is complete; the body follows
  if (ec) {
    BadGateway(client, version, navigation);
    return;
  }
  if (upgrade && response_parser.get().result() == http::status::switching_protocols) {
    // The header goes as is; then whatever either side already sent past its header, then
    // raw bytes both ways.
    http::response<http::empty_body> head(response_parser.get().base());
    http::response_serializer<http::empty_body> serializer(head);
    http::write_header(client, serializer, ec);
    if (!ec && tool_buffer.size() > 0) asio::write(client, tool_buffer.data(), ec);
    if (!ec && client_buffer.size() > 0) asio::write(tool, client_buffer.data(), ec);
    if (ec) return;
    std::thread upstream([&] { net::PumpUntilEof(client, tool); });
    net::PumpUntilEof(tool, client);
    upstream.join();
    return;
  }
  response_parser.get().keep_alive(false);
  net::RelayMessage(client, tool, tool_buffer, response_parser, ec);
}

}  // namespace tidepool::supervisor
