#include "tests/testing/http_stub_server.h"

#include <utility>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/ascii.h"

namespace tidepool::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct HttpStubServer::Impl {
  asio::io_context io;
  tcp::acceptor acceptor{io};
  Handler handler;
  std::atomic<bool> stopping{false};
};

HttpStubServer::HttpStubServer(Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->handler = std::move(handler);
  tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
  impl_->acceptor.open(endpoint.protocol());
  impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
  impl_->acceptor.bind(endpoint);
  impl_->acceptor.listen();
  port_ = impl_->acceptor.local_endpoint().port();
  thread_ = std::thread([this] {
    for (;;) {
      boost::system::error_code ec;
      tcp::socket socket(impl_->io);
      impl_->acceptor.accept(socket, ec);
      if (ec || impl_->stopping.load()) return;
      beast::flat_buffer buffer;
      http::request<http::string_body> request;
      http::read(socket, buffer, request, ec);
      if (ec) continue;
      StubRequest stub;
      stub.method = std::string(request.method_string());
      stub.target = std::string(request.target());
      for (const auto& field : request) {
        stub.headers[absl::AsciiStrToLower(std::string(field.name_string()))] =
            std::string(field.value());
      }
      stub.body = request.body();
      ++requests_;
      StubResponse reply = impl_->handler(stub);
      http::response<http::string_body> response(static_cast<http::status>(reply.status),
                                                 request.version());
      response.set(http::field::content_type, reply.content_type);
      response.set(http::field::connection, "close");
      response.body() = reply.body;
      response.prepare_payload();
      http::write(socket, response, ec);
      socket.shutdown(tcp::socket::shutdown_both, ec);
    }
  });
}

HttpStubServer::~HttpStubServer() {
  // Wake the blocking accept() with a connection, then let the thread see `stopping`.
  impl_->stopping.store(true);
  boost::system::error_code ec;
  {
    asio::io_context io;
    tcp::socket poke(io);
    poke.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port_)),
                 ec);
    if (thread_.joinable()) thread_.join();
  }
  impl_->acceptor.close(ec);
}

}  // namespace tidepool::testing
