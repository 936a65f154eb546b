#include "tests/testing/terminal_client.h"

#include <utility>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace tidepool::testing {

std::string RunInTerminal(const std::string& socket_path, const std::string& credential,
                          const std::string& session_id, const std::string& command,
                          const std::string& until) {
  namespace asio = boost::asio;
  namespace beast = boost::beast;
  asio::io_context io;
  beast::websocket::stream<asio::local::stream_protocol::socket> ws(io);
  boost::system::error_code ec;
  ws.next_layer().connect(asio::local::stream_protocol::endpoint(socket_path), ec);
  if (ec) return "";
  ws.set_option(beast::websocket::stream_base::decorator(
      [&](beast::websocket::request_type& request) {
        request.set("X-Tidepool-Credential", credential);
      }));
  ws.handshake("workspace", "/_tidepool/v1/terminal?session_id=" + session_id + "&cols=120&rows=24",
               ec);
  if (ec) return "";
  ws.binary(true);
  ws.write(asio::buffer(command), ec);
  std::string seen;
  beast::flat_buffer buffer;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!ec && absl::Now() < deadline && seen.find(until) == std::string::npos) {
    ws.read(buffer, ec);
    seen += beast::buffers_to_string(buffer.data());
    buffer.consume(buffer.size());
  }
  ws.close(beast::websocket::close_code::normal, ec);
  return seen;
}

}  // namespace tidepool::testing
