#pragma once

// The terminal's WebSocket route (GET /_tidepool/v1/terminal, see supervisor_service.proto):
// binary frames are raw PTY bytes, text frames are TerminalControl messages as JSON.

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <string>
#include <utility>  // before Boost: Asio 1.74 headers use std::exchange

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "services/supervisor/terminal.h"

namespace tidepool::supervisor {

using TerminalWebSocket =
    boost::beast::websocket::stream<boost::asio::local::stream_protocol::socket>;

// Checks the route's query parameters as TerminalManager::Attach does, so the caller can answer
// HTTP 400 before upgrading. Returns INVALID_ARGUMENT for a bad session_id or size.
absl::Status CheckTerminalRequest(absl::string_view session_id, int cols, int rows);

// Serves one terminal connection on an accepted WebSocket `ws` and returns when the connection
// ends: the client closed it, it failed, or the shell exited (then an exit TerminalControl
// {"exit":{"exitCode":N}} is sent, followed by a close frame).
//
// Attaches to (or starts) the session `session_id` of `manager`, sends the scrollback, then
// pumps PTY output as binary frames; client binary frames are input and client text frames
// are TerminalControl JSON ({"resize":{"cols":C,"rows":R}}). Output waiting for a slow client
// is bounded: past 256 KiB it is dropped and the client is resynchronised from the scrollback.
// Pings are answered and sent (Beast's suggested server timeouts: a silent client is dropped
// after 5 minutes). When Attach fails the socket is closed with code 1008 (invalid request),
// 1013 (too many sessions) or 1011. The session is detached (not killed) on return.
//
// Blocking. The stream must be bound to an io_context (else it is closed with 1011). All of
// this call's asynchronous work runs on a private strand of that io_context, and the call
// drives the io_context itself (run_one_for, holding a work guard; restarting it if it was
// stopped) while it waits, so nobody else needs to run it, though other threads may. Do not
// call it from a handler running on that io_context. `ws` and `manager` must outlive the call;
// `ws` is not touched afterwards.
void ServeTerminal(TerminalWebSocket& ws, TerminalManager& manager, const std::string& session_id,
                   int cols, int rows);

}  // namespace tidepool::supervisor
