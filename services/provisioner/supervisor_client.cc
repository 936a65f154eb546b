#include "services/provisioner/supervisor_client.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/str_cat.h"

namespace tidepool::provisioner {

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

absl::StatusOr<SupervisorReply> SendToSupervisor(const std::string& socket_path,
                                                 const std::string& method,
                                                 const std::string& path,
                                                 const std::string& credential,
                                                 const std::string& body, absl::Duration timeout) {
  asio::io_context io;
  local::socket socket(io);
  boost::system::error_code ec;
  socket.connect(local::endpoint(socket_path), ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("the supervisor is not listening: ", ec.message()));
  }
  // Bound every read and write by the timeout.
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(absl::ToInt64Seconds(timeout));
  tv.tv_usec = static_cast<suseconds_t>(absl::ToInt64Microseconds(timeout) % 1000000);
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  http::request<http::string_body> request(http::string_to_verb(method), path, 11);
  request.set(http::field::host, "workspace");
  request.set(http::field::content_type, "application/json");
  request.set("X-Tidepool-Credential", credential);
  request.keep_alive(false);
  request.body() = body;
  request.prepare_payload();
  http::write(socket, request, ec);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  if (!ec) http::read(socket, buffer, parser, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("the supervisor did not answer: ", ec.message()));
  }
  SupervisorReply reply;
  reply.status = static_cast<int>(parser.get().result_int());
  reply.body = parser.get().body();
  return reply;
}

}  // namespace tidepool::provisioner
