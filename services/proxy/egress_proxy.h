#pragma once

// The egress proxy: the only way out of workspace sandboxes. Each sandbox's supervisor relays
// the tool's HTTP_PROXY/HTTPS_PROXY connections to this proxy's Unix socket
// (services/supervisor/egress_relay.h is the other end of the wire). Only destinations on the
// admin's allowlist are reachable.
//
// Wire contract, per accepted connection:
//   1. Preamble. The first line must be `TIDEPOOL-EGRESS/1 <token>\r\n`: at most 1 KiB with its
//      CRLF, the exact prefix, and a non-empty token of bytes 0x21-0x7E. `verify` is called with
//      exactly that token (never with bytes beyond the line). A missing, malformed or
//      unverified preamble (any error status from `verify`, or an identity without a workspace
//      id) is answered `407 Proxy Authentication Required` and the connection is closed. The
//      token is never logged; only the status code of a failed verification is.
//   2. One HTTP/1.x forward-proxy request, parsed strictly (Beast's parser): the head (request
//      line and fields) is at most 16 KiB (else 431) and must arrive within 10 s of the accept
//      (else 408). Answered 400 and closed: a request that is neither `CONNECT host:port` (a
//      numeric port, 1-65535) nor an absolute-form `http://` request (an `https://` target is
//      refused: TLS must use CONNECT); user info or a fragment in the target; a version other
//      than 1.0/1.1; obs-fold, a bare CR or LF, or a control byte in the head; more than one
//      Content-Length, Transfer-Encoding or Host field; Content-Length together with
//      Transfer-Encoding; a Transfer-Encoding other than exactly "chunked"; a body on CONNECT;
//      any Upgrade field; a Host field that is malformed or names another host or port than
//      the target.
//   3. Destination policy, in this order. Every denial is answered with a plain-text 403 (429
//      for the limit), counted for the workspace, logged and reported to `on_denied`:
//      - Host names that inet_aton(3) would read as an IPv4 address but that are not a strict
//        dotted quad ("2130706433", "0177.0.0.1", "0x7f.1", "127.1"), and names whose last
//        label is numeric, are refused (reason kEgressDeniedNonCanonicalIp).
//      - The destination must match a rule: the same port, and the same host name
//        (ASCII-case-insensitive, one trailing dot ignored) or the same IP address (an IPv4
//        literal only as a strict dotted quad; IPv6 in brackets). Otherwise 403 with the body
//        "tidepool: <host>:<port> is not on this platform's egress allowlist\n"
//        (kEgressDeniedNotAllowlisted).
//      - At most max_connections_per_workspace connections of one workspace may be past this
//        point at once (resolving, connecting, tunnelling or forwarding); beyond it: 429
//        (kEgressDeniedConnectionLimit).
//      - The host is resolved once (`resolve`; IP literals are used as they are) and the
//        connection goes only to the resolved addresses, in order; nothing is re-resolved. If
//        ANY address is loopback, RFC 1918, 100.64/10, 0/8, link-local (169.254/16 with the
//        cloud metadata address, fe80::/10), fc00::/7, fec0::/10, multicast, unspecified,
//        240/4 (reserved, broadcast), IPv4-compatible (::/96), or an IPv4-mapped, NAT64
//        (64:ff9b::/96) or 6to4 (2002::/16) form of a refused IPv4 address, the connection is
//        refused (kEgressDeniedPrivateAddress) — unless a matching rule has origin
//        "model_server" (the admin's own model server, allowed exactly by host:port).
//      A connection that passes is counted as allowed for its workspace.
//   4. Upstream connect: resolution plus connect within connect_timeout, else `502 Bad Gateway`
//      with the body "tidepool: cannot connect to <host>:<port>\n" (no internal details).
//   5. CONNECT: `HTTP/1.1 200 Connection established\r\n\r\n`, then bytes are tunnelled both
//      ways (bytes the client sent after the CONNECT head go first). Half-close aware: an EOF
//      from one side shuts down the write side of the other; the connection closes when both
//      directions ended or at any error. One 64 KiB buffer per direction.
//   6. Absolute-form: the request is forwarded in origin-form (`GET /path?q HTTP/1.1`) with Host
//      set to the target authority, `Connection: close`, and the hop-by-hop fields (Connection
//      and the fields it names — except Host, Content-Length and Transfer-Encoding —,
//      Proxy-Connection, Proxy-Authorization, Proxy-Authenticate, Keep-Alive, TE, Trailer,
//      Upgrade) removed. The response gets the same treatment; 1xx interim responses are
//      passed on (not to HTTP/1.0 clients); bodies stream through 64 KiB buffers, never
//      buffered whole. One request per connection. A response that is malformed before its
//      head was forwarded (or a 101, or a Transfer-Encoding other than "chunked") is a 502.
//   7. A connection with no bytes in either direction for idle_timeout is closed. Every error
//      answer carries `Connection: close`; after it the proxy shuts down its sending side and
//      discards what the client still sends for at most 2 s before closing.
//
// Counters (per workspace, since Start): bytes_sent is what was written upstream for the
// workspace (tunnel bytes; for plain HTTP the forwarded head and body), bytes_received what
// was written back to it; allowed and denied connection counts; the last denied destination
// ("host:port") and its time (from `clock`). 400/407/408/431/502 answers are not denials.

// clang-format off
#include <utility>  // before any Boost header: Asio 1.74 headers use std::exchange (GCC 12)
// clang-format on

#include <boost/asio/ip/address.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/clock.h"
#include "tidepool/proxy/v1/proxy_admin_service.pb.h"

namespace tidepool::proxy {

// Who a preamble token belongs to.
struct EgressIdentity {
  std::string workspace_id;
  std::string owner_user_id;
};

// EgressRule::origin values.
inline constexpr absl::string_view kEgressOriginConfig = "config";
inline constexpr absl::string_view kEgressOriginModelServer = "model_server";

// One allowed destination: an exact host name or IP literal (IPv6 with or without brackets)
// and an exact port (1-65535). Only a "model_server" rule may reach loopback or private
// addresses.
struct EgressRule {
  std::string host;
  int port = 0;
  std::string origin;  // kEgressOriginConfig or kEgressOriginModelServer
};

// EgressDecision::reason values.
inline constexpr absl::string_view kEgressDeniedNotAllowlisted = "not on allowlist";
inline constexpr absl::string_view kEgressDeniedPrivateAddress = "private address";
inline constexpr absl::string_view kEgressDeniedNonCanonicalIp = "non-canonical IP literal";
inline constexpr absl::string_view kEgressDeniedConnectionLimit = "connection limit";

// A denied connection, for the audit hook.
struct EgressDecision {
  std::string workspace_id;
  std::string owner_user_id;
  std::string destination;  // "host:port" ("[v6]:port"), host lower-cased, no trailing dot
  bool allowed = false;
  std::string reason;  // one of the kEgressDenied* values
  absl::Time time = absl::UnixEpoch();
};

struct EgressProxyOptions {
  // The Unix socket to listen on (at most 107 bytes). It is created 0666; its directory must be
  // controlled by the platform. A stale socket file at the path is removed first.
  std::string socket_path;
  std::vector<EgressRule> rules;
  // Verifies a preamble token. Required. Called once per connection on one of the proxy's
  // worker threads (never an I/O thread, so it may block briefly, e.g. a cached gRPC call);
  // any error status refuses the connection with 407. Must not call Stop().
  std::function<absl::StatusOr<EgressIdentity>(const std::string& token)> verify;
  // The audit hook for denials (may be null). Called on an I/O thread: keep it fast; it must
  // not call Stop().
  std::function<void(const EgressDecision&)> on_denied;
  int max_connections_per_workspace = 64;
  absl::Duration idle_timeout = absl::Minutes(10);
  // Covers name resolution and the TCP connect.
  absl::Duration connect_timeout = absl::Seconds(10);
  // Returns the addresses of a host name; called on a worker thread. Null: the system resolver
  // (getaddrinfo).
  std::function<absl::StatusOr<std::vector<boost::asio::ip::address>>(const std::string& host)>
      resolve;
  int io_threads = 2;
  // Time of denials. Not owned; must outlive the proxy. Null: the wall clock.
  Clock* clock = nullptr;
};

// INVALID_ARGUMENT naming the first bad rule: an empty host, a host that is neither a host
// name ([A-Za-z0-9._-], no empty label) nor an IP literal, a non-canonical IPv4 form (see the
// file comment), a port outside 1-65535, or an unknown origin.
absl::Status ValidateEgressRules(const std::vector<EgressRule>& rules);

// Serves the egress proxy on its own threads (io_threads I/O threads on one Boost.Asio
// io_context, plus a few worker threads for `verify` and `resolve`). Thread-safe.
class EgressProxy {
 public:
  // Validates `options`, listens on socket_path and starts serving. INVALID_ARGUMENT for bad
  // options (no socket_path or an overlong one, no verify, bad rules, a limit or thread count
  // < 1, a non-positive timeout); FAILED_PRECONDITION if something other than a socket exists
  // at socket_path; UNAVAILABLE if the socket cannot be bound.
  static absl::StatusOr<std::unique_ptr<EgressProxy>> Start(EgressProxyOptions options);

  EgressProxy(const EgressProxy&) = delete;
  EgressProxy& operator=(const EgressProxy&) = delete;
  ~EgressProxy();  // Stop()s

  // Closes the listener and every open connection and joins the threads (after any `verify` or
  // `resolve` call in flight returns). Idempotent. Leaves the socket file in place.
  void Stop();

  // Replaces the allowlist for connections whose request head arrives from now on; open
  // connections keep their destination. Invalid rules (see ValidateEgressRules) are dropped
  // with a logged warning, never half-applied.
  void SetRules(std::vector<EgressRule> rules);

  // The rules in force (as given, invalid ones dropped).
  std::vector<EgressRule> Rules() const;

  // Per-workspace counters since Start, ordered by workspace id (see the file comment).
  std::vector<proxy::v1::WorkspaceEgress> Counters() const;

  // The number of connections open now (authenticated or not).
  int OpenConnections() const;

 private:
  class Impl;  // in egress_proxy.cc
  explicit EgressProxy(std::unique_ptr<Impl> impl);

  absl::Mutex stop_mu_;  // serialises Stop()
  const std::unique_ptr<Impl> impl_;
};

}  // namespace tidepool::proxy
