#include "services/supervisor/egress_relay.h"

// clang-format off
#include <utility>  // before any Boost header: Asio 1.74 headers use std::exchange (GCC 12)
// clang-format on

#include <algorithm>
#include <atomic>
#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "lib/log.h"
#include "lib/net/byte_pump.h"
#include "lib/net/connection_timer.h"

namespace tidepool::supervisor {
namespace {

namespace asio = boost::asio;
using ErrorCode = boost::system::error_code;
using Tcp = asio::ip::tcp;
using Local = asio::local::stream_protocol;
using SteadyClock = std::chrono::steady_clock;

constexpr size_t kRelayBufferBytes = 64 * 1024;  // per direction
constexpr size_t kMaxRequestHeadBytes = 16 * 1024;
constexpr size_t kHeadChunkBytes = 4 * 1024;
constexpr absl::Duration kRequestHeadTimeout = absl::Seconds(10);
// How long a 502 answer may take to write, and then to drain the client before closing.
constexpr absl::Duration kLingerTimeout = absl::Seconds(2);
using net::TimerInterval;
constexpr auto kAcceptRetryDelay = std::chrono::milliseconds(100);
// sizeof(sockaddr_un::sun_path) less the terminating NUL.
constexpr size_t kMaxSocketPathBytes = 107;

constexpr absl::string_view kPreamblePrefix = "TIDEPOOL-EGRESS/1 ";
constexpr absl::string_view kUnavailableBody =
    "Outbound network access is not available in this workspace: the platform's egress proxy "
    "cannot be reached.\n";

const std::string& UnavailableResponse() {
  static const std::string* const response =
      new std::string(absl::StrCat("HTTP/1.1 502 Bad Gateway\r\n"
                                   "Content-Type: text/plain; charset=utf-8\r\n"
                                   "Connection: close\r\n"
                                   "Content-Length: ",
                                   kUnavailableBody.size(), "\r\n\r\n", kUnavailableBody));
  return *response;
}

// A token fits the preamble line: non-empty, printable ASCII, no spaces.
bool IsUsableToken(absl::string_view token) {
  if (token.empty()) {
    return false;
  }
  for (char c : token) {
    if (c < 0x21 || c > 0x7e) {
      return false;
    }
  }
  return true;
}


class Connection;

// Everything the relay's thread works on. Fields below `open` are touched by that thread only.
struct RelayState {
  explicit RelayState(EgressRelayOptions o)
      : options(std::move(o)),
        upstream_endpoint(options.upstream_socket),
        acceptor(io),
        retry_timer(io) {}

  const EgressRelayOptions options;
  const Local::endpoint upstream_endpoint;
  asio::io_context io;  // declared before the objects bound to it, so destroyed after them
  Tcp::acceptor acceptor;
  asio::steady_timer retry_timer;
  int port = 0;

  std::atomic<int64_t> accepted{0};
  std::atomic<int64_t> refused{0};
  std::atomic<int64_t> upstream_failures{0};
  std::atomic<int64_t> bytes_out{0};
  std::atomic<int64_t> bytes_in{0};
  std::atomic<int> open{0};

  bool stopping = false;
  bool at_capacity = false;    // for logging the limit once per episode
  bool upstream_down = false;  // for logging the outage once per episode
  std::unordered_map<Connection*, std::shared_ptr<Connection>> connections;
};

// One accepted client connection, from the upstream connect to the close. Lives on the relay's
// thread only; every pending handler holds a reference, and so does state.connections until
// Close().
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(RelayState& state, Tcp::socket client)
      : state_(state), client_(std::move(client)), upstream_(state.io), timer_(state.io) {}

  void Start() {
    ArmTimer(state_.options.connect_timeout, [this] {
      connect_timed_out_ = true;
      ErrorCode ignored;
      upstream_.close(ignored);  // completes the connect with operation_aborted
    });
    upstream_.async_connect(state_.upstream_endpoint,
                            [self = shared_from_this()](ErrorCode ec) { self->OnConnected(ec); });
  }

  // Closes both sockets and drops this connection from the state. Idempotent.
  void Close() {
    if (phase_ == Phase::kClosed) {
      return;
    }
    phase_ = Phase::kClosed;
    DisarmTimer();
    ErrorCode ignored;
    client_.close(ignored);
    upstream_.close(ignored);
    --state_.open;
    LogDebug("egress relay connection closed",
             {{"bytes_out", out_.bytes}, {"bytes_in", in_.bytes}});
    state_.connections.erase(this);  // the caller still holds a reference
  }

  // For net::ConnectionTimer and net::PumpBytes.
  bool Closed() const { return phase_ == Phase::kClosed; }
  bool Pumping() const { return phase_ == Phase::kRelaying; }
  bool BothEof() const { return out_.eof && in_.eof; }
  void Touch() { last_activity_ = SteadyClock::now(); }

 private:
  enum class Phase { kConnecting, kRelaying, kReadingHead, kResponding, kLingering, kClosed };


  void OnConnected(ErrorCode ec) {
    if (phase_ != Phase::kConnecting) {
      return;
    }
    DisarmTimer();
    if (!ec && !connect_timed_out_) {
      // A non-blocking connect to a full backlog can report success without a connection.
      upstream_.remote_endpoint(ec);
    }
    if (ec || connect_timed_out_) {
      if (!state_.upstream_down) {
        state_.upstream_down = true;
        LogWarning(
            "egress relay: the egress proxy cannot be reached; answering 502",
            {{"upstream", state_.options.upstream_socket},
             {"error", connect_timed_out_ ? std::string("connect timed out") : ec.message()}});
      }
      Fail();
      return;
    }
    if (state_.upstream_down) {
      state_.upstream_down = false;
      LogInfo("egress relay: the egress proxy is reachable again");
    }
    std::string token;
    try {
      token = state_.options.preamble_token();
    } catch (...) {
      token.clear();
    }
    if (!IsUsableToken(token)) {
      // Never log the token itself.
      LogError("egress relay: preamble_token returned an unusable token; answering 502",
               {{"token_bytes", static_cast<int64_t>(token.size())}});
      ErrorCode ignored;
      upstream_.close(ignored);
      Fail();
      return;
    }
    preamble_ = absl::StrCat(kPreamblePrefix, token, "\r\n");
    if (!state_.options.tunnel_to.empty()) {
      absl::StrAppend(&preamble_, "CONNECT ", state_.options.tunnel_to, " HTTP/1.1\r\nHost: ",
                      state_.options.tunnel_to, "\r\n\r\n");
    }
    phase_ = Phase::kRelaying;
    last_activity_ = SteadyClock::now();
    WatchIdle();
    asio::async_write(upstream_, asio::buffer(preamble_),
                      [self = shared_from_this()](ErrorCode ec, size_t /*n*/) {
                        self->preamble_.assign(self->preamble_.size(), '\0');
                        if (self->phase_ != Phase::kRelaying) {
                          return;
                        }
                        if (ec) {
                          self->Close();
                          return;
                        }
                        if (self->state_.options.tunnel_to.empty()) {
                          self->StartRelay();
                        } else {
                          self->ReadTunnelAnswer();
                        }
                      });
  }

  // ---- forward mode: the egress proxy's answer to CONNECT ----

  void ReadTunnelAnswer() {
    if (chunk_.empty()) {
      chunk_.resize(kHeadChunkBytes);
      ArmTimer(state_.options.connect_timeout, [this] { Close(); });
    }
    const size_t room = std::min(chunk_.size(), kMaxRequestHeadBytes - head_.size());
    upstream_.async_read_some(
        asio::buffer(chunk_.data(), room), [self = shared_from_this()](ErrorCode ec, size_t n) {
          if (self->phase_ != Phase::kRelaying) {
            return;
          }
          if (ec) {
            self->Close();
            return;
          }
          self->head_.append(self->chunk_.data(), n);
          const size_t end = self->head_.find("\r\n\r\n");
          if (end == std::string::npos) {
            if (self->head_.size() >= kMaxRequestHeadBytes) {
              self->Close();
            } else {
              self->ReadTunnelAnswer();
            }
            return;
          }
          // "HTTP/1.x 2xx ..."
          const bool ok = self->head_.size() > 12 && absl::StartsWith(self->head_, "HTTP/1.") &&
                          self->head_[8] == ' ' && self->head_[9] == '2';
          if (!ok) {
            LogWarning("egress relay: the egress proxy refused the forward",
                       {{"destination", self->state_.options.tunnel_to},
                        {"answer", self->head_.substr(0, self->head_.find("\r\n"))}});
            self->Close();
            return;
          }
          self->early_ = self->head_.substr(end + 4);
          self->head_.clear();
          self->chunk_.clear();
          self->last_activity_ = SteadyClock::now();
          self->WatchIdle();
          if (self->early_.empty()) {
            self->StartRelay();
            return;
          }
          asio::async_write(self->client_, asio::buffer(self->early_),
                            [self](ErrorCode write_ec, size_t /*n*/) {
                              if (self->phase_ != Phase::kRelaying) return;
                              if (write_ec) {
                                self->Close();
                                return;
                              }
                              self->StartRelay();
                            });
        });
  }

  // ---- relaying ----

  void StartRelay() {
    out_.buffer.resize(kRelayBufferBytes);
    out_.total = &state_.bytes_out;
    in_.buffer.resize(kRelayBufferBytes);
    in_.total = &state_.bytes_in;
    net::PumpBytes(shared_from_this(), client_, upstream_, out_);
    net::PumpBytes(shared_from_this(), upstream_, client_, in_);
  }

  // Closes the connection once nothing moved for idle_timeout.
  void WatchIdle() {
    std::optional<SteadyClock::duration> idle = TimerInterval(state_.options.idle_timeout);
    if (!idle.has_value()) {
      DisarmTimer();
      return;
    }
    const SteadyClock::time_point deadline = last_activity_ + *idle;
    if (SteadyClock::now() >= deadline) {
      LogDebug("egress relay: closing an idle connection");
      Close();
      return;
    }
    ArmTimerAt(deadline, [this] { WatchIdle(); });
  }

  // ---- upstream unavailable: answer 502 ----

  void Fail() {
    ++state_.upstream_failures;
    phase_ = Phase::kReadingHead;
    chunk_.resize(kHeadChunkBytes);
    ArmTimer(kRequestHeadTimeout, [this] { Respond(); });
    ReadHead();
  }

  void ReadHead() {
    const size_t room = std::min(chunk_.size(), kMaxRequestHeadBytes - head_.size());
    client_.async_read_some(
        asio::buffer(chunk_.data(), room), [self = shared_from_this()](ErrorCode ec, size_t n) {
          if (self->phase_ != Phase::kReadingHead) {
            return;
          }
          if (ec) {
            if (ec == asio::error::eof) {
              self->Respond();
            } else {
              self->Close();
            }
            return;
          }
          const size_t from = self->head_.size() >= 3 ? self->head_.size() - 3 : 0;
          self->head_.append(self->chunk_.data(), n);
          if (self->head_.find("\r\n\r\n", from) != std::string::npos ||
              self->head_.size() >= kMaxRequestHeadBytes) {
            self->Respond();
            return;
          }
          self->ReadHead();
        });
  }

  void Respond() {
    phase_ = Phase::kResponding;
    head_.clear();
    head_.shrink_to_fit();
    ErrorCode ignored;
    client_.cancel(ignored);  // a head read may still be pending (timeout)
    ArmTimer(kLingerTimeout, [this] { Close(); });
    asio::async_write(client_, asio::buffer(UnavailableResponse()),
                      [self = shared_from_this()](ErrorCode ec, size_t /*n*/) {
                        if (self->phase_ != Phase::kResponding) {
                          return;
                        }
                        if (ec) {
                          self->Close();
                          return;
                        }
                        ErrorCode ignored;
                        self->client_.shutdown(asio::socket_base::shutdown_send, ignored);
                        self->phase_ = Phase::kLingering;
                        self->Drain();
                      });
  }

  // Reads and drops what the client still sends until its EOF (or the linger timer): closing
  // with unread data would reset the connection and could destroy the answer in flight.
  void Drain() {
    client_.async_read_some(asio::buffer(chunk_),
                            [self = shared_from_this()](ErrorCode ec, size_t /*n*/) {
                              if (self->phase_ != Phase::kLingering) {
                                return;
                              }
                              if (ec) {
                                self->Close();
                                return;
                              }
                              self->Drain();
                            });
  }

  // ---- the one timer (connect, idle, request head or linger, by phase) ----

  template <typename F>
  void ArmTimer(absl::Duration after, F on_expiry) {
    timer_.Arm(shared_from_this(), after, std::move(on_expiry));
  }

  template <typename F>
  void ArmTimerAt(SteadyClock::time_point deadline, F on_expiry) {
    timer_.ArmAt(shared_from_this(), deadline, std::move(on_expiry));
  }

  void DisarmTimer() { timer_.Disarm(); }


  RelayState& state_;
  Tcp::socket client_;
  Local::socket upstream_;
  net::ConnectionTimer<asio::steady_timer> timer_;
  Phase phase_ = Phase::kConnecting;
  bool connect_timed_out_ = false;
  std::string preamble_;
  SteadyClock::time_point last_activity_;
  net::PumpDirection out_;  // client -> upstream
  net::PumpDirection in_;   // upstream -> client
  std::string head_;
  std::vector<char> chunk_;
  std::string early_;  // forward mode: bytes that came with the CONNECT answer
};

void Accept(RelayState& state) {
  state.acceptor.async_accept([&state](ErrorCode ec, Tcp::socket socket) {
    if (state.stopping) {
      return;
    }
    if (ec) {
      if (ec == asio::error::operation_aborted) {
        return;
      }
      // E.g. out of file descriptors: retry shortly rather than spin.
      LogWarning("egress relay: accept failed", {{"error", ec.message()}});
      state.retry_timer.expires_after(kAcceptRetryDelay);
      state.retry_timer.async_wait([&state](ErrorCode wait_ec) {
        if (!wait_ec && !state.stopping) {
          Accept(state);
        }
      });
      return;
    }
    ErrorCode ignored;
    if (state.open.load() >= state.options.max_connections) {
      ++state.refused;
      if (!state.at_capacity) {
        state.at_capacity = true;
        LogWarning("egress relay: connection limit reached; refusing connections",
                   {{"max_connections", state.options.max_connections}});
      }
      socket.close(ignored);
    } else {
      state.at_capacity = false;
      ++state.accepted;
      ++state.open;
      socket.set_option(Tcp::no_delay(true), ignored);
      auto connection = std::make_shared<Connection>(state, std::move(socket));
      state.connections.emplace(connection.get(), connection);
      connection->Start();
    }
    Accept(state);
  });
}

void CloseAll(RelayState& state) {
  state.stopping = true;
  ErrorCode ignored;
  state.acceptor.close(ignored);
  state.retry_timer.cancel();
  std::vector<std::shared_ptr<Connection>> connections;
  connections.reserve(state.connections.size());
  for (const auto& [key, connection] : state.connections) {
    connections.push_back(connection);
  }
  for (const std::shared_ptr<Connection>& connection : connections) {
    connection->Close();
  }
}

absl::Status ValidateOptions(const EgressRelayOptions& options) {
  if (!options.preamble_token) {
    return absl::InvalidArgumentError("egress relay: preamble_token is required");
  }
  if (options.upstream_socket.empty()) {
    return absl::InvalidArgumentError("egress relay: upstream_socket is required");
  }
  if (options.upstream_socket.size() > kMaxSocketPathBytes ||
      options.upstream_socket.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        "egress relay: upstream_socket is not a usable Unix socket path (at most 107 bytes)");
  }
  if (options.listen_port < 0 || options.listen_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("egress relay: listen_port ", options.listen_port, " is out of range"));
  }
  if (options.max_connections < 1) {
    return absl::InvalidArgumentError("egress relay: max_connections must be at least 1");
  }
  if (options.idle_timeout <= absl::ZeroDuration() ||
      options.connect_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("egress relay: timeouts must be positive");
  }
  if (!options.tunnel_to.empty() &&
      (options.tunnel_to.size() > 261 || options.tunnel_to.find(':') == std::string::npos ||
       !std::all_of(options.tunnel_to.begin(), options.tunnel_to.end(),
                    [](char c) { return c > 0x20 && c < 0x7f; }))) {
    return absl::InvalidArgumentError("egress relay: tunnel_to must be host:port");
  }
  return absl::OkStatus();
}

}  // namespace

class EgressRelay::Impl {
 public:
  explicit Impl(EgressRelayOptions options) : state(std::move(options)) {}

  RelayState state;
  std::thread thread;
};

absl::StatusOr<std::unique_ptr<EgressRelay>> EgressRelay::Start(EgressRelayOptions options) {
  if (absl::Status status = ValidateOptions(options); !status.ok()) {
    return status;
  }
  auto impl = std::make_unique<Impl>(std::move(options));
  RelayState& state = impl->state;
  const Tcp::endpoint endpoint(asio::ip::address_v4::loopback(),
                               static_cast<unsigned short>(state.options.listen_port));
  ErrorCode ec;
  state.acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    state.acceptor.set_option(Tcp::acceptor::reuse_address(true), ec);
  }
  if (!ec) {
    state.acceptor.bind(endpoint, ec);
  }
  if (!ec) {
    state.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  }
  Tcp::endpoint bound;
  if (!ec) {
    bound = state.acceptor.local_endpoint(ec);
  }
  if (ec) {
    return absl::UnavailableError(absl::StrCat("egress relay: cannot listen on 127.0.0.1:",
                                               state.options.listen_port, ": ", ec.message()));
  }
  state.port = bound.port();
  Accept(state);
  impl->thread = std::thread([&state] { state.io.run(); });
  LogInfo("egress relay listening",
          {{"port", state.port}, {"upstream", state.options.upstream_socket}});
  return absl::WrapUnique(new EgressRelay(std::move(impl)));
}

EgressRelay::EgressRelay(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

EgressRelay::~EgressRelay() { Stop(); }

int EgressRelay::port() const { return impl_->state.port; }

EgressRelayStats EgressRelay::stats() const {
  const RelayState& state = impl_->state;
  EgressRelayStats stats;
  stats.accepted = state.accepted.load();
  stats.refused = state.refused.load();
  stats.upstream_failures = state.upstream_failures.load();
  stats.bytes_out = state.bytes_out.load();
  stats.bytes_in = state.bytes_in.load();
  stats.open = state.open.load();
  return stats;
}

void EgressRelay::Stop() {
  absl::MutexLock lock(&stop_mu_);
  if (!impl_->thread.joinable()) {
    return;
  }
  RelayState& state = impl_->state;
  asio::post(state.io, [&state] { CloseAll(state); });
  impl_->thread.join();
  LogInfo("egress relay stopped", {{"port", state.port}});
}

}  // namespace tidepool::supervisor
