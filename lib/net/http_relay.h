#pragma once

// Relaying HTTP/1.1 messages and upgraded connections between two blocking Asio streams, one
// exchange at a time, never holding a body whole: the supervisor's forwarding to the tool and
// the proxy's edge forwarding to a workspace use the same pieces.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

namespace tidepool::net {

// "No limit" for Beast's body_limit. Not boost::none: Boost 1.74 compares a Content-Length
// with an empty optional limit as "over the limit" and refuses every such body.
inline constexpr std::uint64_t kNoBodyLimit = std::numeric_limits<std::uint64_t>::max();

// How much of a body is held at once.
inline constexpr size_t kRelayPiece = 64 * 1024;

// Relays a message whose header `parser` has already read from `input` (bytes read past it are
// in `buffer`) to `output`, streaming the body in kRelayPiece pieces (Beast's buffer_body relay
// pattern). `on_bytes(n)`, if given, is called with the size of each body piece written.
template <bool kIsRequest, class Output, class Input, class OnBytes>
void RelayMessage(Output& output, Input& input, boost::beast::flat_buffer& buffer,
                  boost::beast::http::parser<kIsRequest, boost::beast::http::buffer_body>& parser,
                  boost::system::error_code& ec, OnBytes&& on_bytes) {
  namespace http = boost::beast::http;
  // Not zeroed: every byte is written by a read before it is sent.
  const std::unique_ptr<char[]> piece = std::make_unique_for_overwrite<char[]>(kRelayPiece);
  http::serializer<kIsRequest, http::buffer_body> serializer(parser.get());
  do {
    size_t got = 0;
    if (!parser.is_done()) {
      parser.get().body().data = piece.get();
      parser.get().body().size = kRelayPiece;
      http::read(input, buffer, parser, ec);
      if (ec == http::error::need_buffer) ec = {};
      if (ec) return;
      got = kRelayPiece - parser.get().body().size;
      parser.get().body().size = got;
      parser.get().body().data = piece.get();
      parser.get().body().more = !parser.is_done();
    } else {
      parser.get().body().data = nullptr;
      parser.get().body().size = 0;
      parser.get().body().more = false;
    }
    http::write(output, serializer, ec);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) return;
    if (got > 0) on_bytes(got);
  } while (!parser.is_done() || !serializer.is_done());
}

template <bool kIsRequest, class Output, class Input>
void RelayMessage(Output& output, Input& input, boost::beast::flat_buffer& buffer,
                  boost::beast::http::parser<kIsRequest, boost::beast::http::buffer_body>& parser,
                  boost::system::error_code& ec) {
  RelayMessage(output, input, buffer, parser, ec, [](size_t) {});
}

// Copies bytes from `from` to `to` until EOF or an error, then half-closes `to`.
template <class From, class To>
void PumpUntilEof(From& from, To& to) {
  std::vector<char> piece(kRelayPiece);
  boost::system::error_code ec;
  for (;;) {
    const size_t n = from.read_some(boost::asio::buffer(piece), ec);
    if (n > 0) boost::asio::write(to, boost::asio::buffer(piece.data(), n), ec);
    if (ec) break;
  }
  boost::system::error_code ignored;
  to.shutdown(boost::asio::socket_base::shutdown_send, ignored);
}

}  // namespace tidepool::net
