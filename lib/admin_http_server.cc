#include "lib/admin_http_server.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/metrics.h"

namespace tidepool {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct AdminHttpServer::Impl {
  Impl(std::shared_ptr<prometheus::Registry> r, std::function<bool()> ready_fn)
      : registry(std::move(r)), ready(std::move(ready_fn)), acceptor(io) {}

  http::response<http::string_body> Handle(const http::request<http::string_body>& req) {
    http::response<http::string_body> res;
    res.version(req.version());
    res.keep_alive(req.keep_alive());
    res.set(http::field::server, "tidepool");
    res.set(http::field::cache_control, "no-store");
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      res.result(http::status::method_not_allowed);
      res.set(http::field::allow, "GET, HEAD");
      res.body() = "method not allowed\n";
    } else if (req.target() == "/healthz") {
      res.result(http::status::ok);
      res.body() = "ok\n";
    } else if (req.target() == "/readyz") {
      const bool is_ready = ready ? ready() : true;
      res.result(is_ready ? http::status::ok : http::status::service_unavailable);
      res.body() = is_ready ? "ready\n" : "not ready\n";
    } else if (req.target() == "/metrics") {
      res.result(http::status::ok);
      res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      res.body() = SerializeMetrics(*registry);
    } else {
      res.result(http::status::not_found);
      res.body() = "not found\n";
    }
    res.prepare_payload();
    if (req.method() == http::verb::head) {
      res.body().clear();
    }
    return res;
  }

  asio::awaitable<void> Session(beast::tcp_stream stream) {
    beast::flat_buffer buffer;
    beast::error_code ec;
    for (;;) {
      stream.expires_after(std::chrono::seconds(10));
      http::request_parser<http::string_body> parser;
      parser.header_limit(8 * 1024);
      parser.body_limit(0);
      co_await http::async_read(stream, buffer, parser,
                                asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        break;
      }
      http::response<http::string_body> res = Handle(parser.get());
      const bool keep_alive = res.keep_alive();
      co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
      if (ec || !keep_alive) {
        break;
      }
    }
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  asio::awaitable<void> Accept() {
    for (;;) {
      beast::error_code ec;
      tcp::socket socket =
          co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (!acceptor.is_open()) {
          co_return;
        }
        continue;
      }
      asio::co_spawn(io, Session(beast::tcp_stream(std::move(socket))), asio::detached);
    }
  }

  std::shared_ptr<prometheus::Registry> registry;
  std::function<bool()> ready;
  asio::io_context io{1};
  tcp::acceptor acceptor;
  std::thread thread;
  bool stopped = false;
};

AdminHttpServer::AdminHttpServer(std::shared_ptr<prometheus::Registry> registry,
                                 std::function<bool()> ready)
    : impl_(std::make_unique<Impl>(std::move(registry), std::move(ready))) {}

AdminHttpServer::~AdminHttpServer() { Stop(); }

absl::StatusOr<int> AdminHttpServer::Start(const std::string& address, int port) {
  beast::error_code ec;
  const asio::ip::address ip = asio::ip::make_address(address, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address \"", address, "\" is not an IP address"));
  }
  const tcp::endpoint endpoint(ip, static_cast<unsigned short>(port));
  impl_->acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    impl_->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    impl_->acceptor.bind(endpoint, ec);
  }
  if (!ec) {
    impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", address, ":", port, ": ", ec.message()));
  }
  const int bound = impl_->acceptor.local_endpoint().port();
  asio::co_spawn(impl_->io, impl_->Accept(), asio::detached);
  impl_->thread = std::thread([this] { impl_->io.run(); });
  return bound;
}

void AdminHttpServer::Stop() {
  if (impl_->stopped) {
    return;
  }
  impl_->stopped = true;
  impl_->io.stop();
  if (impl_->thread.joinable()) {
    impl_->thread.join();
  }
  // The I/O thread is gone: close the listening socket here so new connections are refused.
  beast::error_code ec;
  impl_->acceptor.close(ec);
}

}  // namespace tidepool
