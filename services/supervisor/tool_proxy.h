#pragma once

// Forwarding to the tool's own web UI (supervisor_service.proto, ROUTES: every path outside
// /_tidepool/v1/ goes to the tool, HTTP and WebSocket).

#include <cstdint>
#include <limits>
#include <utility>

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "lib/net/http_relay.h"

namespace tidepool::supervisor {

using net::kNoBodyLimit;

// Forwards one request, whose header `header` has already been read from `client` (any bytes
// read past it are in `client_buffer`), to the tool on 127.0.0.1:`port`, and its answer back.
// Bodies are streamed both ways in 64 KiB pieces, never held whole. Every X-Tidepool-*
// header is removed first. A WebSocket upgrade the tool accepts (101) turns the connection
// into a byte tunnel until either side closes. One exchange per connection: both sides get
// Connection: close. When the tool does not answer, a browser navigation (GET or HEAD accepting
// text/html) gets 503 with a small page that says the agent is starting and reloads itself
// (Retry-After: 2); any other request gets 502 with a JSON error.
// The caller has checked the request's credential.
void ForwardToTool(int port, boost::beast::http::request_parser<boost::beast::http::empty_body>& header,
                   boost::asio::local::stream_protocol::socket& client,
                   boost::beast::flat_buffer& client_buffer);

}  // namespace tidepool::supervisor
