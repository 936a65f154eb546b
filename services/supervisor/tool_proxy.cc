#include "services/supervisor/tool_proxy.h"

#include <sys/socket.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"

namespace tidepool::supervisor {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr size_t kPiece = 64 * 1024;

// Relays a message whose header `parser` has read from `input` to `output`, streaming the body
// (Beast's buffer_body relay pattern).
template <bool kIsRequest, class Output, class Input>
void Relay(Output& output, Input& input, beast::flat_buffer& buffer,
           http::parser<kIsRequest, http::buffer_body>& parser, boost::system::error_code& ec) {
  std::vector<char> piece(kPiece);
  http::serializer<kIsRequest, http::buffer_body> serializer(parser.get());
  do {
    if (!parser.is_done()) {
      parser.get().body().data = piece.data();
      parser.get().body().size = piece.size();
      http::read(input, buffer, parser, ec);
      if (ec == http::error::need_buffer) ec = {};
      if (ec) return;
      parser.get().body().size = piece.size() - parser.get().body().size;
      parser.get().body().data = piece.data();
      parser.get().body().more = !parser.is_done();
    } else {
      parser.get().body().data = nullptr;
      parser.get().body().size = 0;
      parser.get().body().more = false;
    }
    http::write(output, serializer, ec);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) return;
  } while (!parser.is_done() || !serializer.is_done());
}

// Copies bytes from `from` to `to` until EOF or an error, then half-closes `to`.
template <class From, class To>
void Pump(From& from, To& to) {
  std::vector<char> piece(kPiece);
  boost::system::error_code ec;
  for (;;) {
    const size_t n = from.read_some(asio::buffer(piece), ec);
    if (n > 0) asio::write(to, asio::buffer(piece.data(), n), ec);
    if (ec) break;
  }
  boost::system::error_code ignored;
  to.shutdown(asio::socket_base::shutdown_send, ignored);
}

void BadGateway(asio::local::stream_protocol::socket& client, unsigned version) {
  http::response<http::string_body> response(http::status::bad_gateway, version);
  response.set(http::field::content_type, "application/json");
  response.set(http::field::cache_control, "no-store");
  response.body() =
      "{\"code\":\"UNAVAILABLE\",\"message\":\"the tool's web UI is not answering\"}";
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

  asio::io_context io;
  tcp::socket tool(io);
  boost::system::error_code ec;
  tool.connect({asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)}, ec);
  if (ec) {
    BadGateway(client, version);
    return;
  }
  if (!upgrade) request.keep_alive(false);
  http::request_parser<http::buffer_body> request_parser(std::move(header));
  request_parser.body_limit(kNoBodyLimit);  // the tool decides
  Relay(tool, client, client_buffer, request_parser, ec);
  if (ec) {
    BadGateway(client, version);
    return;
  }
  beast::flat_buffer tool_buffer;
  http::response_parser<http::buffer_body> response_parser;
  response_parser.body_limit(kNoBodyLimit);
  response_parser.header_limit(64 * 1024);
  http::read_header(tool, tool_buffer, response_parser, ec);
  if (ec == http::error::need_buffer) ec = {};  // the header is complete; the body follows
  if (ec) {
    BadGateway(client, version);
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
    std::thread upstream([&] { Pump(client, tool); });
    Pump(tool, client);
    upstream.join();
    return;
  }
  response_parser.get().keep_alive(false);
  Relay(client, tool, tool_buffer, response_parser, ec);
}

}  // namespace tidepool::supervisor
