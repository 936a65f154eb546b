#pragma once

// The egress relay: the sandbox's only way out. A workspace's network namespace has only
// loopback; the tool's HTTP_PROXY/HTTPS_PROXY point at this relay's TCP listener on
// 127.0.0.1:<port>, and every connection accepted there is forwarded, byte for byte, to the
// platform's egress proxy (an ordinary HTTP forward proxy: CONNECT for TLS, absolute-form
// requests for plain HTTP) through the Unix socket bind-mounted into the sandbox.
//
// Wire contract, per accepted TCP connection:
//   - Connect to the upstream Unix socket (timeout: connect_timeout); write the one preamble
//     line `TIDEPOOL-EGRESS/1 <token>\r\n`, where <token> is what `preamble_token` returns
//     (called once per connection; a secret, never logged); then relay both directions until
//     both are closed. Half-close is honoured: when one side sends EOF, the write side of the
//     other is shut down and the other direction keeps flowing. Each direction uses one buffer
//     of 64 KiB; nothing else is queued.
//   - If the upstream cannot be connected (socket file missing, connection refused, connect
//     timeout), or the token is empty or holds a byte outside 0x21-0x7E: read the client's
//     request head (until "\r\n\r\n", at most 16 KiB, at most 10 s) and answer
//       HTTP/1.1 502 Bad Gateway
//       Content-Type: text/plain; charset=utf-8
//       Connection: close
//       Content-Length: <length of the body>
//     with the body "Outbound network access is not available in this workspace: the
//     platform's egress proxy cannot be reached.\n", then close (after draining what the
//     client still sends, for at most 2 s, so the answer is not lost to a TCP reset). This
//     works for CONNECT and plain proxied requests alike; nothing else of HTTP is parsed.
//   - Limits: at most max_connections at once (one beyond it is closed right after accept and
//     counted as refused); a connection with no bytes in either direction for idle_timeout is
//     closed.
//   - The listener binds 127.0.0.1 only, never a wildcard address.
//   - Forward mode (`tunnel_to` set, "host:port"): the relay is a port forward instead of a
//     proxy. After the preamble it asks the egress proxy for `CONNECT <tunnel_to> HTTP/1.1`,
//     reads the answer's head (at most 16 KiB, within connect_timeout) and, on a 2xx, relays
//     bytes as above (anything after the head goes to the client first); any other answer
//     closes the client's connection. Used for a model server on the host's loopback, which
//     the tool must reach at the same address inside the sandbox.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace tidepool::supervisor {

struct EgressRelayOptions {
  // The TCP port on 127.0.0.1; 0 picks an ephemeral one (see EgressRelay::port()).
  int listen_port = 0;
  // The path of the egress proxy's Unix socket. Required.
  std::string upstream_socket;
  // Returns the preamble token, called once per connection on the relay's thread (keep it
  // fast; it must not call Stop()). Required.
  std::function<std::string()> preamble_token;
  int max_connections = 256;
  // absl::InfiniteDuration() disables the timeout.
  absl::Duration idle_timeout = absl::Minutes(10);
  absl::Duration connect_timeout = absl::Seconds(5);
  // Forward mode: "host:port" to CONNECT to through the egress proxy (see above). Empty: the
  // relay is the tool's HTTP proxy.
  std::string tunnel_to;
};

struct EgressRelayStats {
  int64_t accepted = 0;           // connections admitted (refused ones are not counted here)
  int64_t refused = 0;            // closed at once: max_connections were open
  int64_t upstream_failures = 0;  // answered 502: upstream unreachable or token unusable
  int64_t bytes_out = 0;          // client -> upstream, without the preamble
  int64_t bytes_in = 0;           // upstream -> client
  int open = 0;                   // connections open now
};

// Serves the relay on its own thread (one Boost.Asio io_context). Thread-safe.
class EgressRelay {
 public:
  // Validates `options`, binds 127.0.0.1:listen_port and starts serving. INVALID_ARGUMENT for
  // bad options (no preamble_token, an empty or overlong upstream_socket, a port outside
  // 0-65535, max_connections < 1, a non-positive timeout); UNAVAILABLE if the port cannot be
  // bound. The upstream need not exist yet: it is connected per connection.
  static absl::StatusOr<std::unique_ptr<EgressRelay>> Start(EgressRelayOptions options);

  EgressRelay(const EgressRelay&) = delete;
  EgressRelay& operator=(const EgressRelay&) = delete;
  ~EgressRelay();  // Stop()s

  // The bound TCP port.
  int port() const;

  // A snapshot of the counters (each read atomically, not all at one instant).
  EgressRelayStats stats() const;

  // Closes the listener and every open connection and joins the thread. Idempotent; must not
  // be called from the preamble_token callback.
  void Stop();

 private:
  class Impl;  // in egress_relay.cc
  explicit EgressRelay(std::unique_ptr<Impl> impl);

  absl::Mutex stop_mu_;  // serialises Stop()
  const std::unique_ptr<Impl> impl_;
};

}  // namespace tidepool::supervisor
