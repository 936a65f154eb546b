#include "lib/supervisor_client.h"

#include <chrono>
#include <utility>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/str_cat.h"

namespace tidepool {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using local = asio::local::stream_protocol;

absl::StatusOr<SupervisorReply> PostToSupervisor(const std::string& socket_path,
                                                 const std::string& path,
                                                 const std::string& credential,
                                                 const std::string& body, absl::Duration timeout) {
  return SendToSupervisor(socket_path, "POST", path, credential, body, timeout);
}

absl::StatusOr<SupervisorReply> SendToSupervisor(
    const std::string& socket_path, const std::string& method, const std::string& path,
    const std::string& credential, const std::string& body, absl::Duration timeout,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  // Asynchronous operations bounded by one deadline: a blocking read with SO_RCVTIMEO would
  // not do, as Asio turns its EAGAIN into an unbounded wait (a stopped supervisor accepts the
  // connection into the backlog and then never answers).
  asio::io_context io;
  local::socket socket(io);
  http::request<http::string_body> request(http::string_to_verb(method), path, 11);
  request.set(http::field::host, "workspace");
  request.set(http::field::content_type, "application/json");
  request.set("X-Tidepool-Credential", credential);
  for (const auto& [name, value] : headers) request.set(name, value);
  request.keep_alive(false);
  request.body() = body;
  request.prepare_payload();
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(256 << 20);  // the provisioner's calls are small; tests download 100 MB
  boost::system::error_code ec = asio::error::timed_out;
  bool connected = false;
  socket.async_connect(local::endpoint(socket_path), [&](boost::system::error_code connect_ec) {
    if (connect_ec) {
      ec = connect_ec;
      return;
    }
    connected = true;
    http::async_write(socket, request, [&](boost::system::error_code write_ec, size_t) {
      if (write_ec) {
        ec = write_ec;
        return;
      }
      http::async_read(socket, buffer, parser,
                       [&](boost::system::error_code read_ec, size_t) { ec = read_ec; });
    });
  });
  io.run_for(std::chrono::microseconds(absl::ToInt64Microseconds(timeout)));
  if (!connected && ec != asio::error::timed_out) {
    return absl::UnavailableError(absl::StrCat("the supervisor is not listening: ", ec.message()));
  }
  if (ec) {
    return absl::UnavailableError(absl::StrCat("the supervisor did not answer: ", ec.message()));
  }
  SupervisorReply reply;
  reply.status = static_cast<int>(parser.get().result_int());
  reply.body = parser.get().body();
  return reply;
}

}  // namespace tidepool
