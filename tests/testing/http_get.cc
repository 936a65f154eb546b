#include "tests/testing/http_get.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>

#include "absl/strings/str_cat.h"

namespace tidepool::testing {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;

absl::StatusOr<HttpResponse> HttpRequest(const std::string& method, const std::string& host_port,
                                         const std::string& target) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError("host:port expected");
  }
  const std::string host = host_port.substr(0, colon);
  const std::string port = host_port.substr(colon + 1);
  boost::asio::io_context io;
  beast::tcp_stream stream(io);
  beast::error_code ec;
  tcp::resolver resolver(io);
  auto results = resolver.resolve(host, port, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("resolve ", host_port, ": ", ec.message()));
  }
  stream.expires_after(std::chrono::seconds(5));
  stream.connect(results, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("connect ", host_port, ": ", ec.message()));
  }
  // Synchronous Beast calls ignore expires_after: bound them with socket timeouts instead.
  struct timeval tv {
    5, 0
  };
  ::setsockopt(stream.socket().native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(stream.socket().native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  http::request<http::empty_body> req(http::string_to_verb(method), target, 11);
  req.set(http::field::host, host_port);
  http::write(stream, req, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("write: ", ec.message()));
  }
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  if (method == "HEAD") {
    parser.skip(true);
  }
  http::read(stream, buffer, parser, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("read: ", ec.message()));
  }
  HttpResponse response;
  response.status = static_cast<int>(parser.get().result_int());
  response.content_type = std::string(parser.get()[http::field::content_type]);
  response.body = parser.get().body();
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  return response;
}

}  // namespace tidepool::testing
