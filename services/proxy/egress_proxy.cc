#include "services/proxy/egress_proxy.h"

// clang-format off
#include <utility>  // before any Boost header: Asio 1.74 headers use std::exchange (GCC 12)
// clang-format on

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/buffer.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/memory/memory.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "lib/log.h"
#include "lib/net/byte_pump.h"
#include "lib/net/connection_timer.h"

namespace tidepool::proxy {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using ErrorCode = boost::system::error_code;
using Tcp = asio::ip::tcp;
using Local = asio::local::stream_protocol;
using SteadyClock = std::chrono::steady_clock;
using Strand = asio::strand<asio::io_context::executor_type>;
using ClientSocket = Local::socket::rebind_executor<Strand>::other;
using UpstreamSocket = Tcp::socket::rebind_executor<Strand>::other;
using Timer = asio::steady_timer::rebind_executor<Strand>::other;
using Acceptor = Local::acceptor::rebind_executor<Strand>::other;
using RequestParser = http::request_parser<http::buffer_body>;
using ResponseParser = http::response_parser<http::buffer_body>;
using RequestSerializer = http::request_serializer<http::buffer_body>;
using ResponseSerializer = http::response_serializer<http::buffer_body>;

constexpr size_t kMaxPreambleBytes = 1024;  // with the CRLF
constexpr size_t kMaxHeadBytes = 16 * 1024;
constexpr size_t kMaxResponseHeadBytes = 32 * 1024;
constexpr size_t kRelayBufferBytes = 64 * 1024;  // per direction
constexpr size_t kReadChunkBytes = 4 * 1024;     // while reading the preamble and the head
constexpr size_t kClientBufferLimit = 64 * 1024;
constexpr size_t kUpstreamBufferLimit = 64 * 1024;
constexpr size_t kMaxHostBytes = 253;
// Bodies stream through; Beast 1.74 mis-compares boost::none as a limit, so use the largest one.
constexpr std::uint64_t kNoBodyLimit = std::numeric_limits<std::uint64_t>::max();
constexpr absl::Duration kRequestHeadTimeout = absl::Seconds(10);
// How long an error answer may take to write, and then to drain the client before closing.
constexpr absl::Duration kLingerTimeout = absl::Seconds(2);
using net::TimerInterval;
constexpr auto kAcceptRetryDelay = std::chrono::milliseconds(100);
constexpr int kWorkerThreads = 4;  // for verify and resolve, which may block
constexpr int kMaxIoThreads = 64;
// sizeof(sockaddr_un::sun_path) less the terminating NUL.
constexpr size_t kMaxSocketPathBytes = 107;

constexpr absl::string_view kPreamblePrefix = "TIDEPOOL-EGRESS/1 ";
constexpr absl::string_view kConnectEstablished = "HTTP/1.1 200 Connection established\r\n\r\n";

// ---- text helpers ----

// A complete error answer with a plain-text body.
std::string PlainResponse(int status, absl::string_view phrase, absl::string_view body,
                          absl::string_view extra_headers = "") {
  return absl::StrCat("HTTP/1.1 ", status, " ", phrase,
                      "\r\n"
                      "Content-Type: text/plain; charset=utf-8\r\n",
                      extra_headers,
                      "Connection: close\r\n"
                      "Content-Length: ",
                      body.size(), "\r\n\r\n", body);
}

// A token fits the preamble line: non-empty, printable ASCII, no spaces.
bool IsTokenText(absl::string_view token) {
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

bool AllDigits(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// "1".."65535", digits only; 0 if not.
int ParsePort(absl::string_view s) {
  if (s.empty() || s.size() > 5 || !AllDigits(s)) {
    return 0;
  }
  int port = 0;
  for (char c : s) {
    port = port * 10 + (c - '0');
  }
  return port >= 1 && port <= 65535 ? port : 0;
}

// The IPv4 address written as a strict dotted quad: four decimal parts 0-255 without leading
// zeros. Anything else (decimal, octal, hex, short forms) is not an address here.
std::optional<asio::ip::address_v4> ParseStrictDottedQuad(absl::string_view s) {
  std::vector<absl::string_view> parts = absl::StrSplit(s, '.');
  if (parts.size() != 4) {
    return std::nullopt;
  }
  asio::ip::address_v4::bytes_type bytes{};
  for (size_t i = 0; i < 4; ++i) {
    absl::string_view part = parts[i];
    if (part.empty() || part.size() > 3 || !AllDigits(part) ||
        (part.size() > 1 && part[0] == '0')) {
      return std::nullopt;
    }
    int value = 0;
    for (char c : part) {
      value = value * 10 + (c - '0');
    }
    if (value > 255) {
      return std::nullopt;
    }
    bytes[i] = static_cast<unsigned char>(value);
  }
  return asio::ip::address_v4(bytes);
}

// An IPv6 literal (without brackets); no zone ids.
std::optional<asio::ip::address_v6> ParseIpv6(absl::string_view s) {
  if (s.empty() || s.find('%') != absl::string_view::npos || s.size() > 45) {
    return std::nullopt;
  }
  for (char c : s) {
    if (!(absl::ascii_isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.')) {
      return std::nullopt;
    }
  }
  ErrorCode ec;
  asio::ip::address_v6 address = asio::ip::make_address_v6(std::string(s), ec);
  if (ec) {
    return std::nullopt;
  }
  return address;
}

// A name some resolver would read as an IPv4 address although it is no strict dotted quad:
// what inet_aton(3) accepts ("2130706433", "0177.0.0.1", "0x7f.1", "127.1"), or a name whose
// last label is a number (no real top-level domain is).
bool IsNonCanonicalIpv4(const std::string& host) {
  in_addr ignored{};
  if (::inet_aton(host.c_str(), &ignored) != 0) {
    return true;
  }
  absl::string_view last = host;
  if (size_t dot = last.rfind('.'); dot != absl::string_view::npos) {
    last = last.substr(dot + 1);
  }
  if (AllDigits(last)) {
    return true;
  }
  if (last.size() > 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X')) {
    absl::string_view hex = last.substr(2);
    return std::all_of(hex.begin(), hex.end(),
                       [](char c) { return absl::ascii_isxdigit(static_cast<unsigned char>(c)); });
  }
  return false;
}

// A host as it appears in a request or a rule, normalised.
struct Host {
  std::string name;  // lower-case, no trailing dot; for IPs the canonical text (v6 unbracketed)
  std::optional<asio::ip::address> ip;
  bool non_canonical_ip = false;
};

// Parses a host name or an IPv4 literal (not bracketed IPv6). Host names are [A-Za-z0-9._-]
// with no empty label; one trailing dot is dropped.
std::optional<Host> ParseNameOrIpv4(absl::string_view text) {
  std::string name = absl::AsciiStrToLower(text);
  if (absl::EndsWith(name, ".")) {
    name.pop_back();
  }
  if (name.empty() || name.size() > kMaxHostBytes) {
    return std::nullopt;
  }
  for (char c : name) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_')) {
      return std::nullopt;
    }
  }
  for (absl::string_view label : absl::StrSplit(name, '.')) {
    if (label.empty() || label.size() > 63) {
      return std::nullopt;
    }
  }
  Host host;
  if (std::optional<asio::ip::address_v4> v4 = ParseStrictDottedQuad(name); v4.has_value()) {
    host.ip = asio::ip::address(*v4);
    host.name = v4->to_string();
    return host;
  }
  host.non_canonical_ip = IsNonCanonicalIpv4(name);
  host.name = std::move(name);
  return host;
}

struct Authority {
  Host host;
  int port = 0;  // 0: none given
};

// Parses `host[:port]` or `[v6][:port]`.
std::optional<Authority> ParseAuthority(absl::string_view text) {
  Authority authority;
  absl::string_view rest;
  if (absl::StartsWith(text, "[")) {
    size_t close = text.find(']');
    if (close == absl::string_view::npos) {
      return std::nullopt;
    }
    std::optional<asio::ip::address_v6> v6 = ParseIpv6(text.substr(1, close - 1));
    if (!v6.has_value()) {
      return std::nullopt;
    }
    authority.host.ip = asio::ip::address(*v6);
    authority.host.name = v6->to_string();
    rest = text.substr(close + 1);
  } else {
    size_t colon = text.find(':');
    std::optional<Host> host = ParseNameOrIpv4(text.substr(0, colon));
    if (!host.has_value()) {
      return std::nullopt;
    }
    authority.host = std::move(*host);
    rest = colon == absl::string_view::npos ? absl::string_view() : text.substr(colon);
  }
  if (!rest.empty()) {
    if (rest[0] != ':') {
      return std::nullopt;
    }
    authority.port = ParsePort(rest.substr(1));
    if (authority.port == 0) {
      return std::nullopt;
    }
  }
  return authority;
}

// "host:port", with IPv6 in brackets.
std::string HostPort(const Host& host, int port) {
  if (host.ip.has_value() && host.ip->is_v6()) {
    return absl::StrCat("[", host.name, "]:", port);
  }
  return absl::StrCat(host.name, ":", port);
}

// ---- addresses ----

bool IsRefusedIpv4(const asio::ip::address_v4& address) {
  const uint32_t v = address.to_uint();
  auto in = [v](uint32_t network, int bits) {
    return (v >> (32 - bits)) == (network >> (32 - bits));
  };
  return in(0x00000000, 8) ||   // 0.0.0.0/8 "this network", unspecified
         in(0x0A000000, 8) ||   // 10/8
         in(0x64400000, 10) ||  // 100.64/10 carrier-grade NAT
         in(0x7F000000, 8) ||   // 127/8 loopback
         in(0xA9FE0000, 16) ||  // 169.254/16 link-local, cloud metadata
         in(0xAC100000, 12) ||  // 172.16/12
         in(0xC0A80000, 16) ||  // 192.168/16
         in(0xE0000000, 4) ||   // 224/4 multicast
         in(0xF0000000, 4);     // 240/4 reserved, 255.255.255.255 broadcast
}

asio::ip::address_v4 EmbeddedIpv4(const asio::ip::address_v6::bytes_type& b, size_t offset) {
  return asio::ip::address_v4(
      asio::ip::address_v4::bytes_type{b[offset], b[offset + 1], b[offset + 2], b[offset + 3]});
}

bool IsRefusedIpv6(const asio::ip::address_v6& address) {
  const asio::ip::address_v6::bytes_type b = address.to_bytes();
  auto zero = [&b](size_t from, size_t to) {
    return std::all_of(b.begin() + from, b.begin() + to, [](unsigned char c) { return c == 0; });
  };
  if (zero(0, 10) && b[10] == 0xff && b[11] == 0xff) {  // ::ffff:0:0/96 IPv4-mapped
    return IsRefusedIpv4(EmbeddedIpv4(b, 12));
  }
  if (zero(0, 12)) {  // ::/96: unspecified, loopback, IPv4-compatible (deprecated)
    return true;
  }
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b) {
    if (zero(4, 12)) {  // 64:ff9b::/96 NAT64
      return IsRefusedIpv4(EmbeddedIpv4(b, 12));
    }
    return b[4] == 0x00 && b[5] == 0x01;  // 64:ff9b:1::/48 local-use NAT64
  }
  if (b[0] == 0x20 && b[1] == 0x02) {  // 2002::/16 6to4
    return IsRefusedIpv4(EmbeddedIpv4(b, 2));
  }
  return (b[0] & 0xfe) == 0xfc ||                    // fc00::/7 unique local
         (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) ||  // fe80::/10 link-local
         (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) ||  // fec0::/10 site-local (deprecated)
         b[0] == 0xff;                               // ff00::/8 multicast
}

bool IsRefusedAddress(const asio::ip::address& address) {
  return address.is_v4() ? IsRefusedIpv4(address.to_v4()) : IsRefusedIpv6(address.to_v6());
}

absl::StatusOr<std::vector<asio::ip::address>> SystemResolve(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* result = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &result);
  if (rc != 0) {
    const std::string message = absl::StrCat("cannot resolve ", host, ": ", ::gai_strerror(rc));
    return rc == EAI_NONAME ? absl::NotFoundError(message) : absl::UnavailableError(message);
  }
  std::vector<asio::ip::address> addresses;
  for (const addrinfo* ai = result; ai != nullptr; ai = ai->ai_next) {
    asio::ip::address address;
    if (ai->ai_family == AF_INET) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(ai->ai_addr);
      address = asio::ip::address_v4(ntohl(sin->sin_addr.s_addr));
    } else if (ai->ai_family == AF_INET6) {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(ai->ai_addr);
      asio::ip::address_v6::bytes_type bytes;
      std::memcpy(bytes.data(), &sin6->sin6_addr, bytes.size());
      address = asio::ip::address_v6(bytes);
    } else {
      continue;
    }
    if (std::find(addresses.begin(), addresses.end(), address) == addresses.end()) {
      addresses.push_back(address);
    }
  }
  ::freeaddrinfo(result);
  return addresses;
}

// ---- rules ----

struct CompiledRule {
  EgressRule rule;  // as given
  Host host;
  bool model_server = false;
};

absl::StatusOr<CompiledRule> CompileRule(const EgressRule& rule) {
  auto bad = [&rule](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("egress rule \"", rule.host, ":", rule.port, "\": ", why));
  };
  CompiledRule compiled;
  compiled.rule = rule;
  absl::string_view host = rule.host;
  if (host.empty()) {
    return bad("the host is empty");
  }
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  if (host.find(':') != absl::string_view::npos) {
    std::optional<asio::ip::address_v6> v6 = ParseIpv6(host);
    if (!v6.has_value()) {
      return bad("not an IPv6 address");
    }
    compiled.host.ip = asio::ip::address(*v6);
    compiled.host.name = v6->to_string();
  } else {
    std::optional<Host> parsed = ParseNameOrIpv4(host);
    if (!parsed.has_value()) {
      return bad("not a host name or IP address");
    }
    if (parsed->non_canonical_ip) {
      return bad("IPv4 addresses must be written as a dotted quad");
    }
    compiled.host = std::move(*parsed);
  }
  if (rule.port < 1 || rule.port > 65535) {
    return bad("the port is outside 1-65535");
  }
  if (rule.origin == kEgressOriginModelServer) {
    compiled.model_server = true;
  } else if (rule.origin != kEgressOriginConfig) {
    return bad("the origin must be \"config\" or \"model_server\"");
  }
  return compiled;
}

// ---- shared state ----

// Per-workspace counters; entries live as long as the proxy (connections keep raw pointers).
struct WorkspaceState {
  std::atomic<int64_t> bytes_sent{0};
  std::atomic<int64_t> bytes_received{0};
  // Guarded by ProxyState::mu.
  int active = 0;
  int64_t allowed = 0;
  int64_t denied = 0;
  std::string last_denied_destination;
  absl::Time last_denied_time = absl::UnixEpoch();
};

class Connection;


struct ProxyState {
  ProxyState(EgressProxyOptions o, std::vector<CompiledRule> compiled)
      : options(std::move(o)),
        clock(options.clock != nullptr ? *options.clock : real_clock),
        rules(std::move(compiled)),
        acceptor(asio::make_strand(io)),
        retry_timer(acceptor.get_executor()),
        work(asio::make_work_guard(io)),
        workers(kWorkerThreads) {}

  // Runs `task` on a worker thread unless the proxy is stopping (then returns false).
  template <typename F>
  bool RunOnWorker(F task) {
    absl::MutexLock lock(&mu);
    if (stopping) {
      return false;
    }
    asio::post(workers, std::move(task));
    return true;
  }

  // The counters of `workspace_id`, created on first use.
  WorkspaceState* Workspace(const std::string& workspace_id) {
    absl::MutexLock lock(&mu);
    std::unique_ptr<WorkspaceState>& entry = workspaces[workspace_id];
    if (entry == nullptr) {
      entry = std::make_unique<WorkspaceState>();
    }
    return entry.get();
  }

  const EgressProxyOptions options;
  RealClock real_clock;
  Clock& clock;

  mutable absl::Mutex mu;
  std::vector<CompiledRule> rules ABSL_GUARDED_BY(mu);
  std::map<std::string, std::unique_ptr<WorkspaceState>> workspaces ABSL_GUARDED_BY(mu);
  std::map<Connection*, std::weak_ptr<Connection>> connections ABSL_GUARDED_BY(mu);
  bool stopping ABSL_GUARDED_BY(mu) = false;

  // Declared after the state above: destroyed first, and pending handlers (which own
  // connections) still find that state alive when they are destroyed.
  asio::io_context io;
  Acceptor acceptor;
  Timer retry_timer;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::vector<std::thread> io_threads;
  asio::thread_pool workers;
};

// ---- one connection ----

// One accepted connection, from the preamble to the close. All of its handlers run on its
// strand; every pending handler holds a reference, the registry in ProxyState a weak one.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(ProxyState& state, ClientSocket client)
      : state_(state),
        client_(std::move(client)),
        upstream_(client_.get_executor()),
        timer_(client_.get_executor()),
        buffer_(kClientBufferLimit),
        upstream_buffer_(kUpstreamBufferLimit) {}

  Strand executor() { return client_.get_executor(); }

  void Start() {
    ArmTimer(kRequestHeadTimeout, [this] {
      Respond(408, "Request Timeout", "tidepool: the request did not arrive in time\n");
    });
    ReadPreamble();
  }

  // Closes both sockets, releases the workspace slot and drops this connection from the
  // registry. Idempotent.
  void Close() {
    if (phase_ == Phase::kClosed) {
      return;
    }
    phase_ = Phase::kClosed;
    DisarmTimer();
    ErrorCode ignored;
    client_.close(ignored);
    upstream_.close(ignored);
    absl::MutexLock lock(&state_.mu);
    if (holds_slot_) {
      holds_slot_ = false;
      --workspace_->active;
    }
    state_.connections.erase(this);
  }

  // For net::ConnectionTimer and net::PumpBytes.
  bool Closed() const { return phase_ == Phase::kClosed; }
  bool Pumping() const { return phase_ == Phase::kTunnel; }
  bool BothEof() const { return out_.eof && in_.eof; }
  void Touch() { last_activity_ = SteadyClock::now(); }

 private:
  enum class Phase {
    kPreamble,
    kVerifying,
    kHead,
    kResolving,
    kConnecting,
    kTunnel,
    kHttp,
    kResponding,
    kLingering,
    kClosed
  };


  // ---- preamble ----

  void ReadPreamble() {
    const size_t room = std::min(kReadChunkBytes, kMaxPreambleBytes - buffer_.size());
    client_.async_read_some(
        buffer_.prepare(room), [self = shared_from_this()](ErrorCode ec, size_t n) {
          if (self->phase_ != Phase::kPreamble) {
            return;
          }
          if (ec) {
            if (ec == asio::error::eof) {
              self->RefuseAuthentication("the connection ended before the preamble");
            } else {
              self->Close();
            }
            return;
          }
          self->OnPreambleBytes(n);
        });
  }

  void OnPreambleBytes(size_t n) {
    const size_t scan_from = buffer_.size() > 0 ? buffer_.size() - 1 : 0;
    buffer_.commit(n);
    const absl::string_view data(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    const size_t compare = std::min(data.size(), kPreamblePrefix.size());
    if (data.substr(0, compare) != kPreamblePrefix.substr(0, compare)) {
      RefuseAuthentication("no preamble");
      return;
    }
    const size_t eol = data.find("\r\n", scan_from);
    if (eol == absl::string_view::npos) {
      if (buffer_.size() >= kMaxPreambleBytes) {
        RefuseAuthentication("the preamble is too long");
      } else {
        ReadPreamble();
      }
      return;
    }
    const absl::string_view token_text =
        data.substr(kPreamblePrefix.size(), eol - kPreamblePrefix.size());
    if (!IsTokenText(token_text)) {
      RefuseAuthentication("the preamble is malformed");
      return;
    }
    std::string token(token_text);
    // The token is a secret: scrub it from the buffer before the buffer moves on.
    std::memset(static_cast<char*>(buffer_.data().data()), 0, eol + 2);
    buffer_.consume(eol + 2);
    phase_ = Phase::kVerifying;
    const bool queued =
        state_.RunOnWorker([self = shared_from_this(), token = std::move(token)]() mutable {
          absl::StatusOr<EgressIdentity> identity =
              absl::UnavailableError("the token verifier failed");
          try {
            identity = self->state_.options.verify(token);
          } catch (...) {
            // Keep the UNAVAILABLE above.
          }
          std::fill(token.begin(), token.end(), '\0');
          asio::post(self->executor(), [self, identity = std::move(identity)]() mutable {
            self->OnVerified(std::move(identity));
          });
        });
    if (!queued) {
      Close();
    }
  }

  void OnVerified(absl::StatusOr<EgressIdentity> identity) {
    if (phase_ != Phase::kVerifying) {
      return;
    }
    if (!identity.ok()) {
      // Only the code: a message might echo the token.
      LogInfo("egress proxy: preamble token refused",
              {{"code", absl::StatusCodeToString(identity.status().code())}});
      Respond(407, "Proxy Authentication Required", AuthenticationBody(),
              "Proxy-Authenticate: Tidepool realm=\"egress\"\r\n");
      return;
    }
    if (identity->workspace_id.empty()) {
      LogError("egress proxy: the token verifier returned an identity without a workspace");
      Respond(407, "Proxy Authentication Required", AuthenticationBody(),
              "Proxy-Authenticate: Tidepool realm=\"egress\"\r\n");
      return;
    }
    identity_ = std::move(*identity);
    workspace_ = state_.Workspace(identity_.workspace_id);
    phase_ = Phase::kHead;
    ContinueHead();
  }

  static absl::string_view AuthenticationBody() {
    return "tidepool: this connection did not authenticate as a workspace\n";
  }

  void RefuseAuthentication(absl::string_view why) {
    LogInfo("egress proxy: connection refused before authentication", {{"reason", why}});
    Respond(407, "Proxy Authentication Required", AuthenticationBody(),
            "Proxy-Authenticate: Tidepool realm=\"egress\"\r\n");
  }

  // ---- request head ----

  void ContinueHead() {
    const absl::string_view data(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    const size_t end = data.find("\r\n\r\n");
    if (end != absl::string_view::npos) {
      OnHead(end + 4);
      return;
    }
    if (buffer_.size() >= kMaxHeadBytes) {
      Respond(431, "Request Header Fields Too Large",
              "tidepool: the request head is larger than 16 KiB\n");
      return;
    }
    const size_t room = std::min(kReadChunkBytes, kMaxHeadBytes - buffer_.size());
    client_.async_read_some(buffer_.prepare(room),
                            [self = shared_from_this()](ErrorCode ec, size_t n) {
                              if (self->phase_ != Phase::kHead) {
                                return;
                              }
                              if (ec) {
                                if (ec == asio::error::eof && self->buffer_.size() > 0) {
                                  self->BadRequest("the request head is incomplete");
                                } else {
                                  self->Close();
                                }
                                return;
                              }
                              self->buffer_.commit(n);
                              self->ContinueHead();
                            });
  }

  // Rejects what Beast would accept but a strict proxy must not: obs-fold, bare CR or LF,
  // control bytes.
  static bool IsCleanHead(absl::string_view head) {
    for (size_t i = 0; i < head.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(head[i]);
      if (c == '\r') {
        if (i + 1 >= head.size() || head[i + 1] != '\n') {
          return false;
        }
      } else if (c == '\n') {
        if (i == 0 || head[i - 1] != '\r') {
          return false;
        }
        // obs-fold: a line that starts with white space continues the previous one.
        if (i + 1 < head.size() && (head[i + 1] == ' ' || head[i + 1] == '\t')) {
          return false;
        }
      } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
        return false;
      }
    }
    return !head.empty() && head[0] != ' ' && head[0] != '\t';
  }

  void OnHead(size_t head_size) {
    const absl::string_view head(static_cast<const char*>(buffer_.data().data()), head_size);
    if (!IsCleanHead(head)) {
      BadRequest("the request head is malformed");
      return;
    }
    request_parser_.emplace();
    request_parser_->header_limit(static_cast<std::uint32_t>(kMaxHeadBytes));
    request_parser_->body_limit(kNoBodyLimit);
    request_parser_->eager(false);
    ErrorCode ec;
    const size_t used = request_parser_->put(asio::buffer(head.data(), head.size()), ec);
    if (ec || !request_parser_->is_header_done()) {
      BadRequest("the request head is malformed");
      return;
    }
    buffer_.consume(used);
    if (std::optional<std::string> error = CheckRequest(); error.has_value()) {
      BadRequest(*error);
      return;
    }
    Decide();
  }

  // Validates the parsed head and fills connect_, target_, origin_form_. Returns the reason for
  // a 400.
  std::optional<std::string> CheckRequest() {
    const http::request<http::buffer_body>& request = request_parser_->get();
    client_version_ = request.version();
    if (client_version_ != 10 && client_version_ != 11) {
      return "only HTTP/1.0 and HTTP/1.1 are supported";
    }
    const absl::string_view target(request.target().data(), request.target().size());
    connect_ = request.method() == http::verb::connect;
    head_request_ = request.method() == http::verb::head;
    if (connect_) {
      std::optional<Authority> authority = ParseAuthority(target);
      if (!authority.has_value() || authority->port == 0) {
        return "CONNECT needs a host:port target with a numeric port";
      }
      target_ = std::move(authority->host);
      port_ = authority->port;
    } else {
      constexpr absl::string_view kHttp = "http://";
      if (absl::StartsWithIgnoreCase(target, "https://")) {
        return "https:// targets must use CONNECT";
      }
      if (!absl::StartsWithIgnoreCase(target, kHttp)) {
        return "the target must be CONNECT host:port or an absolute http:// URL";
      }
      absl::string_view rest = target.substr(kHttp.size());
      if (rest.find('#') != absl::string_view::npos) {
        return "the target has a fragment";
      }
      const size_t path_start = rest.find_first_of("/?");
      const absl::string_view authority_text = rest.substr(0, path_start);
      if (authority_text.find('@') != absl::string_view::npos) {
        return "the target has user info";
      }
      std::optional<Authority> authority = ParseAuthority(authority_text);
      if (!authority.has_value()) {
        return "the target's host is malformed";
      }
      target_ = std::move(authority->host);
      port_ = authority->port == 0 ? 80 : authority->port;
      const absl::string_view path =
          path_start == absl::string_view::npos ? absl::string_view() : rest.substr(path_start);
      origin_form_ = absl::StartsWith(path, "/") ? std::string(path) : absl::StrCat("/", path);
    }
    destination_ = HostPort(target_, port_);

    const size_t hosts = request.count(http::field::host);
    if (hosts > 1) {
      return "more than one Host field";
    }
    if (hosts == 1) {
      const beast::string_view value = request[http::field::host];
      std::optional<Authority> host = ParseAuthority(absl::string_view(value.data(), value.size()));
      if (!host.has_value()) {
        return "the Host field is malformed";
      }
      const int host_port = host->port != 0 ? host->port : (connect_ ? port_ : 80);
      if (host->host.name != target_.name || host_port != port_) {
        return "the Host field does not match the target";
      }
    }
    const size_t lengths = request.count(http::field::content_length);
    const size_t encodings = request.count(http::field::transfer_encoding);
    if (lengths > 1 || encodings > 1) {
      return "more than one Content-Length or Transfer-Encoding field";
    }
    if (lengths == 1 && encodings == 1) {
      return "both Content-Length and Transfer-Encoding";
    }
    if (encodings == 1) {
      const beast::string_view value = request[http::field::transfer_encoding];
      if (!absl::EqualsIgnoreCase(
              absl::StripAsciiWhitespace(absl::string_view(value.data(), value.size())),
              "chunked")) {
        return "the only Transfer-Encoding supported is chunked";
      }
    }
    if (request.count(http::field::upgrade) > 0) {
      return "protocol upgrades are not supported";
    }
    if (connect_ &&
        (encodings > 0 || (lengths > 0 && request[http::field::content_length] != "0"))) {
      return "CONNECT cannot have a body";
    }
    return std::nullopt;
  }

  // ---- policy ----

  void Decide() {
    if (target_.non_canonical_ip) {
      Deny(kEgressDeniedNonCanonicalIp, 403, "Forbidden", NotAllowlistedBody());
      return;
    }
    bool matched = false;
    bool at_limit = false;
    {
      absl::MutexLock lock(&state_.mu);
      for (const CompiledRule& rule : state_.rules) {
        if (rule.rule.port != port_) {
          continue;
        }
        const bool same = target_.ip.has_value()
                              ? rule.host.ip.has_value() && *rule.host.ip == *target_.ip
                              : !rule.host.ip.has_value() && rule.host.name == target_.name;
        if (same) {
          matched = true;
          model_server_ = model_server_ || rule.model_server;
        }
      }
      if (matched && workspace_->active >= state_.options.max_connections_per_workspace) {
        matched = false;
        at_limit = true;
      } else if (matched) {
        ++workspace_->active;
        holds_slot_ = true;
      }
    }
    if (at_limit) {
      Deny(kEgressDeniedConnectionLimit, 429, "Too Many Requests",
           "tidepool: this workspace has too many open egress connections\n");
      return;
    }
    if (!matched) {
      Deny(kEgressDeniedNotAllowlisted, 403, "Forbidden", NotAllowlistedBody());
      return;
    }
    phase_ = Phase::kResolving;
    ArmTimer(state_.options.connect_timeout, [this] {
      LogWarning("egress proxy: upstream connect timed out",
                 {{"workspace_id", identity_.workspace_id}, {"destination", destination_}});
      BadGateway();
    });
    if (target_.ip.has_value()) {
      OnResolved(std::vector<asio::ip::address>{*target_.ip});
      return;
    }
    const bool queued = state_.RunOnWorker([self = shared_from_this()] {
      absl::StatusOr<std::vector<asio::ip::address>> addresses =
          absl::UnavailableError("the resolver failed");
      try {
        addresses = self->state_.options.resolve(self->target_.name);
      } catch (...) {
        // Keep the UNAVAILABLE above.
      }
      asio::post(self->executor(), [self, addresses = std::move(addresses)]() mutable {
        if (self->phase_ != Phase::kResolving) {
          return;
        }
        if (!addresses.ok()) {
          LogWarning("egress proxy: cannot resolve the destination",
                     {{"workspace_id", self->identity_.workspace_id},
                      {"destination", self->destination_},
                      {"error", std::string(addresses.status().message())}});
          self->BadGateway();
          return;
        }
        self->OnResolved(std::move(*addresses));
      });
    });
    if (!queued) {
      Close();
    }
  }

  std::string NotAllowlistedBody() const {
    return absl::StrCat("tidepool: ", destination_,
                        " is not on this platform's egress allowlist\n");
  }

  void OnResolved(std::vector<asio::ip::address> addresses) {
    if (addresses.empty()) {
      LogWarning("egress proxy: the destination has no addresses",
                 {{"workspace_id", identity_.workspace_id}, {"destination", destination_}});
      BadGateway();
      return;
    }
    if (!model_server_) {
      for (const asio::ip::address& address : addresses) {
        if (IsRefusedAddress(address)) {
          Deny(kEgressDeniedPrivateAddress, 403, "Forbidden",
               absl::StrCat("tidepool: ", destination_,
                            " resolves to a private address; the egress proxy refuses it\n"));
          return;
        }
      }
    }
    {
      absl::MutexLock lock(&state_.mu);
      ++workspace_->allowed;
    }
    endpoints_.clear();
    for (const asio::ip::address& address : addresses) {
      endpoints_.emplace_back(address, static_cast<unsigned short>(port_));
    }
    phase_ = Phase::kConnecting;
    asio::async_connect(upstream_, endpoints_,
                        [self = shared_from_this()](ErrorCode ec, const Tcp::endpoint& /*e*/) {
                          if (self->phase_ != Phase::kConnecting) {
                            return;
                          }
                          if (ec) {
                            LogWarning("egress proxy: upstream connect failed",
                                       {{"workspace_id", self->identity_.workspace_id},
                                        {"destination", self->destination_},
                                        {"error", ec.message()}});
                            self->BadGateway();
                            return;
                          }
                          ErrorCode ignored;
                          self->upstream_.set_option(Tcp::no_delay(true), ignored);
                          if (self->connect_) {
                            self->StartTunnel();
                          } else {
                            self->StartHttp();
                          }
                        });
  }

  // Counts, logs and reports a denial, then answers it.
  void Deny(absl::string_view reason, int status, absl::string_view phrase,
            absl::string_view body) {
    EgressDecision decision;
    decision.workspace_id = identity_.workspace_id;
    decision.owner_user_id = identity_.owner_user_id;
    decision.destination = destination_;
    decision.allowed = false;
    decision.reason = std::string(reason);
    decision.time = state_.clock.Now();
    {
      absl::MutexLock lock(&state_.mu);
      ++workspace_->denied;
      workspace_->last_denied_destination = destination_;
      workspace_->last_denied_time = decision.time;
    }
    LogInfo("egress proxy: connection denied", {{"workspace_id", decision.workspace_id},
                                                {"destination", decision.destination},
                                                {"reason", decision.reason}});
    if (state_.options.on_denied) {
      try {
        state_.options.on_denied(decision);
      } catch (...) {
        LogError("egress proxy: the on_denied hook threw");
      }
    }
    Respond(status, phrase, body);
  }

  void BadGateway() {
    Respond(502, "Bad Gateway", absl::StrCat("tidepool: cannot connect to ", destination_, "\n"));
  }

  void BadRequest(absl::string_view why) {
    Respond(400, "Bad Request", absl::StrCat("tidepool: bad request: ", why, "\n"));
  }

  // ---- CONNECT tunnel ----

  void StartTunnel() {
    phase_ = Phase::kTunnel;
    last_activity_ = SteadyClock::now();
    WatchIdle();
    asio::async_write(client_, asio::buffer(kConnectEstablished.data(), kConnectEstablished.size()),
                      [self = shared_from_this()](ErrorCode ec, size_t /*n*/) {
                        if (self->phase_ != Phase::kTunnel) {
                          return;
                        }
                        if (ec) {
                          self->Close();
                          return;
                        }
                        if (self->buffer_.size() == 0) {
                          self->StartPumps();
                          return;
                        }
                        // Bytes the client sent right after the CONNECT head (e.g. a TLS
                        // ClientHello).
                        asio::async_write(self->upstream_, self->buffer_.data(),
                                          [self](ErrorCode ec, size_t n) {
                                            if (self->phase_ != Phase::kTunnel) {
                                              return;
                                            }
                                            if (ec) {
                                              self->Close();
                                              return;
                                            }
                                            self->workspace_->bytes_sent += static_cast<int64_t>(n);
                                            self->buffer_.consume(n);
                                            self->StartPumps();
                                          });
                      });
  }

  void StartPumps() {
    out_.buffer.resize(kRelayBufferBytes);
    out_.total = &workspace_->bytes_sent;
    in_.buffer.resize(kRelayBufferBytes);
    in_.total = &workspace_->bytes_received;
    net::PumpBytes(shared_from_this(), client_, upstream_, out_);
    net::PumpBytes(shared_from_this(), upstream_, client_, in_);
  }

  // ---- plain HTTP forwarding ----

  void StartHttp() {
    phase_ = Phase::kHttp;
    last_activity_ = SteadyClock::now();
    WatchIdle();
    http::request<http::buffer_body>& request = request_parser_->get();
    request.target(origin_form_);
    request.version(11);
    StripHopByHop(request);
    std::string host = target_.ip.has_value() && target_.ip->is_v6()
                           ? absl::StrCat("[", target_.name, "]")
                           : target_.name;
    if (port_ != 80) {
      absl::StrAppend(&host, ":", port_);
    }
    request.set(http::field::host, host);
    request.set(http::field::connection, "close");
    request_buffer_.resize(kRelayBufferBytes);
    response_buffer_.resize(kRelayBufferBytes);
    request_serializer_.emplace(request);
    http::async_write_header(upstream_, *request_serializer_,
                             [self = shared_from_this()](ErrorCode ec, size_t n) {
                               if (self->phase_ != Phase::kHttp) {
                                 return;
                               }
                               if (ec) {
                                 // The response side reports the failure.
                                 return;
                               }
                               self->workspace_->bytes_sent += static_cast<int64_t>(n);
                               self->last_activity_ = SteadyClock::now();
                               self->RequestBodyStep();
                             });
    ReadResponseHead();
  }

  // Removes hop-by-hop fields, including those the Connection field names (but never the
  // fields that frame the message or name the host).
  template <typename Fields>
  static void StripHopByHop(Fields& fields) {
    std::vector<std::string> named;
    for (auto range = fields.equal_range(http::field::connection); range.first != range.second;
         ++range.first) {
      const beast::string_view value = range.first->value();
      for (absl::string_view token :
           absl::StrSplit(absl::string_view(value.data(), value.size()), ',')) {
        std::string name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(token));
        if (!name.empty() && name != "host" && name != "content-length" &&
            name != "transfer-encoding") {
          named.push_back(std::move(name));
        }
      }
    }
    for (const std::string& name : named) {
      fields.erase(beast::string_view(name.data(), name.size()));
    }
    for (http::field field :
         {http::field::connection, http::field::proxy_connection, http::field::proxy_authorization,
          http::field::proxy_authenticate, http::field::keep_alive, http::field::te,
          http::field::trailer, http::field::upgrade}) {
      fields.erase(field);
    }
  }

  void RequestBodyStep() {
    RequestParser& parser = *request_parser_;
    http::buffer_body::value_type& body = parser.get().body();
    if (parser.is_done()) {
      body.data = nullptr;
      body.size = 0;
      body.more = false;
      WriteRequestBody();
      return;
    }
    body.data = request_buffer_.data();
    body.size = request_buffer_.size();
    client_reading_ = true;
    http::async_read_some(
        client_, buffer_, parser, [self = shared_from_this()](ErrorCode ec, size_t /*n*/) {
          self->client_reading_ = false;
          if (self->phase_ == Phase::kResponding || self->phase_ == Phase::kLingering) {
            self->Drain();
            return;
          }
          if (self->phase_ != Phase::kHttp) {
            return;
          }
          if (ec == http::error::need_buffer) {
            ec = {};
          }
          if (ec) {
            self->Close();  // the client went away mid-request
            return;
          }
          self->last_activity_ = SteadyClock::now();
          RequestParser& parser = *self->request_parser_;
          http::buffer_body::value_type& body = parser.get().body();
          body.size = self->request_buffer_.size() - body.size;
          body.data = self->request_buffer_.data();
          body.more = !parser.is_done();
          self->WriteRequestBody();
        });
  }

  void WriteRequestBody() {
    http::async_write(upstream_, *request_serializer_,
                      [self = shared_from_this()](ErrorCode ec, size_t n) {
                        if (self->phase_ != Phase::kHttp) {
                          return;
                        }
                        if (ec == http::error::need_buffer) {
                          ec = {};
                        }
                        self->workspace_->bytes_sent += static_cast<int64_t>(n);
                        if (ec) {
                          // The upstream stopped reading (it may have answered early): the
                          // response side decides.
                          return;
                        }
                        self->last_activity_ = SteadyClock::now();
                        if (self->request_serializer_->is_done()) {
                          return;
                        }
                        self->RequestBodyStep();
                      });
  }

  void ReadResponseHead() {
    response_serializer_.reset();
    response_parser_.emplace();
    response_parser_->header_limit(static_cast<std::uint32_t>(kMaxResponseHeadBytes));
    response_parser_->body_limit(kNoBodyLimit);
    if (head_request_) {
      response_parser_->skip(true);
    }
    http::async_read_header(upstream_, upstream_buffer_, *response_parser_,
                            [self = shared_from_this()](ErrorCode ec, size_t /*n*/) {
                              if (self->phase_ != Phase::kHttp) {
                                return;
                              }
                              self->OnResponseHead(ec);
                            });
  }

  void OnResponseHead(ErrorCode ec) {
    last_activity_ = SteadyClock::now();
    if (ec) {
      if (response_started_) {
        Close();
        return;
      }
      LogWarning("egress proxy: bad or no response from upstream",
                 {{"workspace_id", identity_.workspace_id},
                  {"destination", destination_},
                  {"error", ec.message()}});
      BadGateway();
      return;
    }
    http::response<http::buffer_body>& response = response_parser_->get();
    const unsigned status = response.result_int();
    const size_t encodings = response.count(http::field::transfer_encoding);
    bool bad = status == 101 || encodings > 1;
    if (encodings == 1) {
      const beast::string_view value = response[http::field::transfer_encoding];
      bad = bad || !absl::EqualsIgnoreCase(
                       absl::StripAsciiWhitespace(absl::string_view(value.data(), value.size())),
                       "chunked");
    }
    if (bad) {
      if (response_started_) {
        Close();
        return;
      }
      LogWarning("egress proxy: unsupported response from upstream",
                 {{"workspace_id", identity_.workspace_id},
                  {"destination", destination_},
                  {"status", static_cast<int>(status)}});
      BadGateway();
      return;
    }
    const bool interim = status / 100 == 1;
    if (interim && client_version_ == 10) {
      ReadResponseHead();  // HTTP/1.0 clients get no 1xx
      return;
    }
    StripHopByHop(response);
    response.version(11);
    if (!interim) {
      response.set(http::field::connection, "close");
    }
    if (client_version_ == 10 && encodings == 1) {
      // HTTP/1.0 has no chunked coding: send the decoded body, delimited by the close.
      response.erase(http::field::transfer_encoding);
    }
    response_started_ = true;
    response_serializer_.emplace(response);
    http::async_write_header(client_, *response_serializer_,
                             [self = shared_from_this(), interim](ErrorCode ec, size_t n) {
                               if (self->phase_ != Phase::kHttp) {
                                 return;
                               }
                               if (ec) {
                                 self->Close();
                                 return;
                               }
                               self->workspace_->bytes_received += static_cast<int64_t>(n);
                               self->last_activity_ = SteadyClock::now();
                               if (interim) {
                                 self->ReadResponseHead();
                               } else if (self->response_parser_->is_done()) {
                                 self->FinishHttp();  // no body (HEAD, 204, 304, empty)
                               } else {
                                 self->ResponseBodyStep();
                               }
                             });
  }

  void ResponseBodyStep() {
    ResponseParser& parser = *response_parser_;
    http::buffer_body::value_type& body = parser.get().body();
    if (parser.is_done()) {
      body.data = nullptr;
      body.size = 0;
      body.more = false;
      WriteResponseBody();
      return;
    }
    body.data = response_buffer_.data();
    body.size = response_buffer_.size();
    http::async_read_some(upstream_, upstream_buffer_, parser,
                          [self = shared_from_this()](ErrorCode ec, size_t /*n*/) {
                            if (self->phase_ != Phase::kHttp) {
                              return;
                            }
                            if (ec == http::error::need_buffer) {
                              ec = {};
                            }
                            if (ec) {
                              self->Close();  // truncated: the client sees the close
                              return;
                            }
                            self->last_activity_ = SteadyClock::now();
                            ResponseParser& parser = *self->response_parser_;
                            http::buffer_body::value_type& body = parser.get().body();
                            body.size = self->response_buffer_.size() - body.size;
                            body.data = self->response_buffer_.data();
                            body.more = !parser.is_done();
                            self->WriteResponseBody();
                          });
  }

  void WriteResponseBody() {
    http::async_write(client_, *response_serializer_,
                      [self = shared_from_this()](ErrorCode ec, size_t n) {
                        if (self->phase_ != Phase::kHttp) {
                          return;
                        }
                        if (ec == http::error::need_buffer) {
                          ec = {};
                        }
                        if (ec) {
                          self->Close();
                          return;
                        }
                        self->workspace_->bytes_received += static_cast<int64_t>(n);
                        self->last_activity_ = SteadyClock::now();
                        if (self->response_serializer_->is_done()) {
                          self->FinishHttp();
                          return;
                        }
                        self->ResponseBodyStep();
                      });
  }

  // The response is complete: close the upstream, then close the client gracefully.
  void FinishHttp() {
    ErrorCode ignored;
    upstream_.close(ignored);
    client_.shutdown(asio::socket_base::shutdown_send, ignored);
    phase_ = Phase::kLingering;
    ArmTimer(kLingerTimeout, [this] { Close(); });
    Drain();
  }

  // ---- error answers ----

  // Writes a complete answer, shuts down the sending side and drains the client (closing with
  // unread data would reset the connection and could destroy the answer in flight).
  void Respond(int status, absl::string_view phrase, absl::string_view body,
               absl::string_view extra_headers = "") {
    if (phase_ == Phase::kResponding || phase_ == Phase::kLingering || phase_ == Phase::kClosed) {
      return;
    }
    phase_ = Phase::kResponding;
    ErrorCode ignored;
    upstream_.close(ignored);
    answer_ = PlainResponse(status, phrase, body, extra_headers);
    ArmTimer(kLingerTimeout, [this] { Close(); });
    asio::async_write(client_, asio::buffer(answer_),
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

  // Reads and drops what the client still sends until its EOF (or the linger timer).
  void Drain() {
    if (client_reading_ || phase_ == Phase::kClosed) {
      return;  // the pending read's handler comes back here
    }
    if (drain_buffer_.empty()) {
      drain_buffer_.resize(kReadChunkBytes);
    }
    client_reading_ = true;
    client_.async_read_some(asio::buffer(drain_buffer_),
                            [self = shared_from_this()](ErrorCode ec, size_t /*n*/) {
                              self->client_reading_ = false;
                              if (self->phase_ == Phase::kResponding) {
                                if (!ec) {
                                  self->Drain();
                                }
                                return;  // the write's handler drains again
                              }
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

  // ---- the one timer (head, connect, idle or linger, by phase) ----

  // Closes the connection once nothing moved for idle_timeout.
  void WatchIdle() {
    std::optional<SteadyClock::duration> idle = TimerInterval(state_.options.idle_timeout);
    if (!idle.has_value()) {
      DisarmTimer();
      return;
    }
    const SteadyClock::time_point deadline = last_activity_ + *idle;
    if (SteadyClock::now() >= deadline) {
      LogDebug("egress proxy: closing an idle connection",
               {{"workspace_id", identity_.workspace_id}, {"destination", destination_}});
      Close();
      return;
    }
    ArmTimerAt(deadline, [this] { WatchIdle(); });
  }

  template <typename F>
  void ArmTimer(absl::Duration after, F on_expiry) {
    timer_.Arm(shared_from_this(), after, std::move(on_expiry));
  }

  template <typename F>
  void ArmTimerAt(SteadyClock::time_point deadline, F on_expiry) {
    timer_.ArmAt(shared_from_this(), deadline, std::move(on_expiry));
  }

  void DisarmTimer() { timer_.Disarm(); }


  ProxyState& state_;
  ClientSocket client_;
  UpstreamSocket upstream_;
  net::ConnectionTimer<Timer> timer_;
  Phase phase_ = Phase::kPreamble;
  beast::flat_buffer buffer_;           // client bytes: preamble, head, then body
  beast::flat_buffer upstream_buffer_;  // upstream bytes while parsing the response

  EgressIdentity identity_;
  WorkspaceState* workspace_ = nullptr;  // owned by state_.workspaces
  bool holds_slot_ = false;              // guarded by state_.mu

  // The request.
  std::optional<RequestParser> request_parser_;
  unsigned client_version_ = 11;
  bool connect_ = false;
  bool head_request_ = false;
  Host target_;
  int port_ = 0;
  std::string destination_;  // "host:port"
  std::string origin_form_;
  bool model_server_ = false;
  std::vector<Tcp::endpoint> endpoints_;

  // Forwarding.
  SteadyClock::time_point last_activity_;
  net::PumpDirection out_;  // client -> upstream
  net::PumpDirection in_;   // upstream -> client
  std::optional<RequestSerializer> request_serializer_;
  std::optional<ResponseParser> response_parser_;
  std::optional<ResponseSerializer> response_serializer_;
  std::vector<char> request_buffer_;
  std::vector<char> response_buffer_;
  bool response_started_ = false;
  bool client_reading_ = false;

  // Error answers.
  std::string answer_;
  std::vector<char> drain_buffer_;
};

void Accept(ProxyState& state) {
  state.acceptor.async_accept(
      asio::make_strand(state.io), [&state](ErrorCode ec, ClientSocket socket) {
        if (ec) {
          if (ec == asio::error::operation_aborted || !state.acceptor.is_open()) {
            return;
          }
          // E.g. out of file descriptors: retry shortly rather than spin.
          LogWarning("egress proxy: accept failed", {{"error", ec.message()}});
          state.retry_timer.expires_after(kAcceptRetryDelay);
          state.retry_timer.async_wait([&state](ErrorCode wait_ec) {
            if (!wait_ec && state.acceptor.is_open()) {
              Accept(state);
            }
          });
          return;
        }
        auto connection = std::make_shared<Connection>(state, std::move(socket));
        bool admitted = false;
        {
          absl::MutexLock lock(&state.mu);
          if (!state.stopping) {
            state.connections.emplace(connection.get(), connection);
            admitted = true;
          }
        }
        if (!admitted) {
          return;  // the connection's socket closes with it
        }
        asio::dispatch(connection->executor(), [connection] { connection->Start(); });
        Accept(state);
      });
}

absl::Status ValidateOptions(const EgressProxyOptions& options) {
  if (options.socket_path.empty() || options.socket_path.size() > kMaxSocketPathBytes ||
      options.socket_path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        "egress proxy: socket_path must be a Unix socket path of 1-107 bytes");
  }
  if (!options.verify) {
    return absl::InvalidArgumentError("egress proxy: verify is required");
  }
  if (options.max_connections_per_workspace < 1) {
    return absl::InvalidArgumentError(
        "egress proxy: max_connections_per_workspace must be at least 1");
  }
  if (options.io_threads < 1 || options.io_threads > kMaxIoThreads) {
    return absl::InvalidArgumentError(
        absl::StrCat("egress proxy: io_threads must be 1-", kMaxIoThreads));
  }
  if (options.idle_timeout <= absl::ZeroDuration() ||
      options.connect_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("egress proxy: timeouts must be positive");
  }
  return ValidateEgressRules(options.rules);
}

}  // namespace

absl::Status ValidateEgressRules(const std::vector<EgressRule>& rules) {
  for (const EgressRule& rule : rules) {
    if (absl::StatusOr<CompiledRule> compiled = CompileRule(rule); !compiled.ok()) {
      return compiled.status();
    }
  }
  return absl::OkStatus();
}

class EgressProxy::Impl {
 public:
  Impl(EgressProxyOptions options, std::vector<CompiledRule> rules)
      : state(std::move(options), std::move(rules)) {}

  ProxyState state;
  bool stopped = false;  // guarded by EgressProxy::stop_mu_
};

absl::StatusOr<std::unique_ptr<EgressProxy>> EgressProxy::Start(EgressProxyOptions options) {
  if (absl::Status status = ValidateOptions(options); !status.ok()) {
    return status;
  }
  if (!options.resolve) {
    options.resolve = SystemResolve;
  }
  std::vector<CompiledRule> rules;
  for (const EgressRule& rule : options.rules) {
    absl::StatusOr<CompiledRule> compiled = CompileRule(rule);
    if (!compiled.ok()) {
      return compiled.status();
    }
    rules.push_back(std::move(*compiled));
  }
  options.rules.clear();
  const int64_t rule_count = static_cast<int64_t>(rules.size());
  const std::string path = options.socket_path;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat("egress proxy: ", path, " exists and is not a socket"));
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return absl::UnavailableError(absl::StrCat("egress proxy: cannot remove the stale socket ",
                                                 path, ": ", std::strerror(errno)));
    }
  }
  auto impl = std::make_unique<Impl>(std::move(options), std::move(rules));
  ProxyState& state = impl->state;
  const Local::endpoint endpoint(path);
  ErrorCode ec;
  state.acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    state.acceptor.bind(endpoint, ec);
  }
  if (!ec && ::chmod(path.c_str(), 0666) != 0) {
    ec = ErrorCode(errno, boost::system::system_category());
  }
  if (!ec) {
    state.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("egress proxy: cannot listen on ", path, ": ", ec.message()));
  }
  Accept(state);
  for (int i = 0; i < state.options.io_threads; ++i) {
    state.io_threads.emplace_back([&state] {
      for (;;) {
        try {
          state.io.run();
          return;
        } catch (const std::exception& e) {
          LogError("egress proxy: an I/O handler threw", {{"error", e.what()}});
        }
      }
    });
  }
  LogInfo("egress proxy listening", {{"socket", path}, {"rules", rule_count}});
  return absl::WrapUnique(new EgressProxy(std::move(impl)));
}

EgressProxy::EgressProxy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

EgressProxy::~EgressProxy() { Stop(); }

void EgressProxy::Stop() {
  absl::MutexLock stop_lock(&stop_mu_);
  if (impl_->stopped) {
    return;
  }
  impl_->stopped = true;
  ProxyState& state = impl_->state;
  std::vector<std::shared_ptr<Connection>> connections;
  {
    absl::MutexLock lock(&state.mu);
    state.stopping = true;
    for (const auto& [key, weak] : state.connections) {
      if (std::shared_ptr<Connection> connection = weak.lock(); connection != nullptr) {
        connections.push_back(std::move(connection));
      }
    }
  }
  asio::post(state.acceptor.get_executor(), [&state] {
    ErrorCode ignored;
    state.acceptor.close(ignored);
    state.retry_timer.cancel();
  });
  for (std::shared_ptr<Connection>& connection : connections) {
    asio::post(connection->executor(), [connection] { connection->Close(); });
  }
  connections.clear();
  // verify/resolve calls in flight finish; their results find their connections closed.
  state.workers.join();
  state.work.reset();
  for (std::thread& thread : state.io_threads) {
    thread.join();
  }
  state.io_threads.clear();
  {
    absl::MutexLock lock(&state.mu);
    state.connections.clear();
  }
  LogInfo("egress proxy stopped", {{"socket", state.options.socket_path}});
}

void EgressProxy::SetRules(std::vector<EgressRule> rules) {
  std::vector<CompiledRule> compiled;
  for (const EgressRule& rule : rules) {
    absl::StatusOr<CompiledRule> one = CompileRule(rule);
    if (!one.ok()) {
      LogWarning("egress proxy: dropping an invalid rule",
                 {{"error", std::string(one.status().message())}});
      continue;
    }
    compiled.push_back(std::move(*one));
  }
  ProxyState& state = impl_->state;
  absl::MutexLock lock(&state.mu);
  state.rules.swap(compiled);
}

std::vector<EgressRule> EgressProxy::Rules() const {
  const ProxyState& state = impl_->state;
  absl::MutexLock lock(&state.mu);
  std::vector<EgressRule> rules;
  rules.reserve(state.rules.size());
  for (const CompiledRule& rule : state.rules) {
    rules.push_back(rule.rule);
  }
  return rules;
}

std::vector<proxy::v1::WorkspaceEgress> EgressProxy::Counters() const {
  const ProxyState& state = impl_->state;
  absl::MutexLock lock(&state.mu);
  std::vector<proxy::v1::WorkspaceEgress> counters;
  counters.reserve(state.workspaces.size());
  for (const auto& [workspace_id, workspace] : state.workspaces) {
    proxy::v1::WorkspaceEgress& out = counters.emplace_back();
    out.set_workspace_id(workspace_id);
    out.set_bytes_sent(workspace->bytes_sent.load());
    out.set_bytes_received(workspace->bytes_received.load());
    out.set_allowed_connection_count(workspace->allowed);
    out.set_denied_connection_count(workspace->denied);
    if (workspace->denied > 0) {
      out.set_last_denied_destination(workspace->last_denied_destination);
      const absl::Time t = workspace->last_denied_time;
      const int64_t seconds = absl::ToUnixSeconds(t);
      out.mutable_last_denied_time()->set_seconds(seconds);
      out.mutable_last_denied_time()->set_nanos(
          static_cast<int32_t>(absl::ToInt64Nanoseconds(t - absl::FromUnixSeconds(seconds))));
    }
  }
  return counters;
}

int EgressProxy::OpenConnections() const {
  const ProxyState& state = impl_->state;
  absl::MutexLock lock(&state.mu);
  return static_cast<int>(state.connections.size());
}

}  // namespace tidepool::proxy
