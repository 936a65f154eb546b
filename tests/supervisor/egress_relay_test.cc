#include "services/supervisor/egress_relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/log.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::supervisor {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::ScopedTempDir;
using ::tidepool::testing::StatusIs;

constexpr absl::string_view kBody =
    "Outbound network access is not available in this workspace: the platform's egress proxy "
    "cannot be reached.\n";
constexpr absl::string_view kConnectEstablished = "HTTP/1.1 200 Connection established\r\n\r\n";

std::string BadGatewayResponse() {
  return absl::StrCat(
      "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "Connection: close\r\nContent-Length: ",
      kBody.size(), "\r\n\r\n", kBody);
}

// Polls `condition` (the relay's counters change on its own thread) for up to 10 s.
bool WaitFor(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    Reset();
    fd_ = std::exchange(other.fd_, -1);
    return *this;
  }
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

 private:
  int fd_;
};

bool SendAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

struct Received {
  std::string data;
  bool eof = false;        // orderly EOF
  bool reset = false;      // ECONNRESET
  bool timed_out = false;  // SO_RCVTIMEO elapsed
};

// Reads until EOF, an error, or `limit` bytes.
Received RecvUntilEof(int fd, size_t limit = 16 << 20) {
  Received result;
  char buffer[16384];
  while (result.data.size() < limit) {
    ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n == 0) {
      result.eof = true;
      break;
    }
    if (n < 0) {
      result.reset = errno == ECONNRESET;
      result.timed_out = errno == EAGAIN || errno == EWOULDBLOCK;
      break;
    }
    result.data.append(buffer, static_cast<size_t>(n));
  }
  return result;
}

std::string RecvExactly(int fd, size_t size) {
  std::string data;
  char buffer[16384];
  while (data.size() < size) {
    ssize_t n = ::recv(fd, buffer, std::min(sizeof(buffer), size - data.size()), 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    data.append(buffer, static_cast<size_t>(n));
  }
  return data;
}

// A TCP client of the relay; reads give up after 10 s so a broken relay fails, not hangs.
Fd ConnectTcp(int port) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval timeout{};
  timeout.tv_sec = 10;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ADD_FAILURE() << "connect to 127.0.0.1:" << port << ": " << std::strerror(errno);
    return Fd();
  }
  return fd;
}

// Binds a Unix socket at `path` (and listens when `listen` is set).
Fd BindUnix(const std::string& path, bool listen) {
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      (listen && ::listen(fd.get(), 64) != 0)) {
    ADD_FAILURE() << "bind " << path << ": " << std::strerror(errno);
  }
  return fd;
}

enum class UpstreamMode {
  kEcho,           // echoes bytes; EOF is answered with EOF
  kHttpProxy,      // answers a CONNECT head with 200, then echoes
  kReplyAfterEof,  // reads to EOF, then answers "got N bytes: <data>" and closes
};

// The egress proxy's stand-in: a Unix-socket server on its own thread (one more per
// connection) that records each connection's preamble line and the bytes that follow it.
class TestUpstream {
 public:
  TestUpstream(const std::string& path, UpstreamMode mode)
      : mode_(mode), listener_(BindUnix(path, /*listen=*/true)) {
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }

  ~TestUpstream() {
    ::shutdown(listener_.get(), SHUT_RDWR);  // wakes accept()
    accept_thread_.join();
    std::vector<std::thread> threads;
    {
      absl::MutexLock lock(&mu_);
      for (Fd& fd : fds_) {
        ::shutdown(fd.get(), SHUT_RDWR);  // wakes the connections' reads
      }
      threads.swap(threads_);
    }
    for (std::thread& thread : threads) {
      thread.join();
    }
  }

  // Each connection's preamble line (with its CRLF), in accept order.
  std::vector<std::string> preambles() {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> result;
    for (const auto& [index, line] : preambles_) {
      result.push_back(line);
    }
    return result;
  }

  // The bytes connection `index` sent after its preamble (and, for kHttpProxy, its head).
  std::string received(int index) {
    absl::MutexLock lock(&mu_);
    return received_[index];
  }

 private:
  void AcceptLoop() {
    for (int index = 0;; ++index) {
      int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        return;
      }
      absl::MutexLock lock(&mu_);
      fds_.emplace_back(fd);
      threads_.emplace_back([this, fd, index] { Serve(fd, index); });
    }
  }

  void Serve(int fd, int index) {
    std::string preamble;
    char c;
    while (preamble.size() < 4096 && ::recv(fd, &c, 1, 0) == 1) {
      preamble.push_back(c);
      if (c == '\n') {
        break;
      }
    }
    {
      absl::MutexLock lock(&mu_);
      preambles_[index] = preamble;
    }
    if (mode_ == UpstreamMode::kHttpProxy) {
      std::string head;
      while (!absl::EndsWith(head, "\r\n\r\n") && ::recv(fd, &c, 1, 0) == 1) {
        head.push_back(c);
      }
      if (!absl::StartsWith(head, "CONNECT ") || !SendAll(fd, kConnectEstablished)) {
        return;
      }
    }
    std::string all;
    char buffer[65536];
    for (;;) {
      ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        break;
      }
      {
        absl::MutexLock lock(&mu_);
        received_[index].append(buffer, static_cast<size_t>(n));
      }
      if (mode_ == UpstreamMode::kReplyAfterEof) {
        all.append(buffer, static_cast<size_t>(n));
      } else if (!SendAll(fd, absl::string_view(buffer, static_cast<size_t>(n)))) {
        break;
      }
    }
    if (mode_ == UpstreamMode::kReplyAfterEof) {
      SendAll(fd, absl::StrCat("got ", all.size(), " bytes: ", all));
    }
    ::shutdown(fd, SHUT_WR);
  }

  const UpstreamMode mode_;
  Fd listener_;
  std::thread accept_thread_;
  absl::Mutex mu_;
  std::vector<Fd> fds_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::map<int, std::string> preambles_ ABSL_GUARDED_BY(mu_);
  std::map<int, std::string> received_ ABSL_GUARDED_BY(mu_);
};

class EgressRelayTest : public ::testing::Test {
 protected:
  EgressRelayOptions Options() {
    EgressRelayOptions options;
    options.upstream_socket = socket_path_;
    options.preamble_token = [this] {
      return absl::StrCat("tpc1.ws-1.proxy.1700000000.", ++tokens_);
    };
    return options;
  }

  std::unique_ptr<EgressRelay> StartRelay(EgressRelayOptions options) {
    absl::StatusOr<std::unique_ptr<EgressRelay>> relay = EgressRelay::Start(std::move(options));
    EXPECT_THAT(relay, IsOk());
    return relay.ok() ? std::move(*relay) : nullptr;
  }

  std::string Preamble(int n) {
    return absl::StrCat("TIDEPOOL-EGRESS/1 tpc1.ws-1.proxy.1700000000.", n, "\r\n");
  }

  ScopedTempDir dir_;
  const std::string socket_path_ = dir_.Join("egress.sock");
  std::atomic<int> tokens_{0};
};

TEST_F(EgressRelayTest, SendsPreambleFirstWithFreshTokenPerConnection) {
  TestUpstream upstream(socket_path_, UpstreamMode::kEcho);
  std::unique_ptr<EgressRelay> relay = StartRelay(Options());
  ASSERT_NE(relay, nullptr);
  for (int i = 1; i <= 2; ++i) {
    Fd client = ConnectTcp(relay->port());
    const std::string hello = absl::StrCat("hello-", i);
    ASSERT_TRUE(SendAll(client.get(), hello));  // sent before the relay reached the upstream
    EXPECT_EQ(RecvExactly(client.get(), hello.size()), hello);
    EXPECT_EQ(upstream.received(i - 1), hello);
  }
  EXPECT_THAT(upstream.preambles(), ElementsAre(Preamble(1), Preamble(2)));
  EXPECT_EQ(tokens_.load(), 2);
}

TEST_F(EgressRelayTest, RoundTripsOneMebibyteBothWays) {
  TestUpstream upstream(socket_path_, UpstreamMode::kEcho);
  std::unique_ptr<EgressRelay> relay = StartRelay(Options());
  ASSERT_NE(relay, nullptr);
  std::mt19937 random(20240601);
  std::string data(1 << 20, '\0');
  for (char& c : data) {
    c = static_cast<char>(random() & 0xff);
  }
  Fd client = ConnectTcp(relay->port());
  std::thread writer([&] {
    EXPECT_TRUE(SendAll(client.get(), data));
    ::shutdown(client.get(), SHUT_WR);
  });
  Received echoed = RecvUntilEof(client.get());
  writer.join();
  EXPECT_TRUE(echoed.eof);
  EXPECT_EQ(echoed.data.size(), data.size());
  EXPECT_TRUE(echoed.data == data) << "the echoed bytes differ";
  EXPECT_TRUE(upstream.received(0) == data) << "the upstream received other bytes";
  ASSERT_TRUE(WaitFor([&] { return relay->stats().open == 0; }));
  EgressRelayStats stats = relay->stats();
  EXPECT_EQ(stats.accepted, 1);
  EXPECT_EQ(stats.bytes_out, 1 << 20);
  EXPECT_EQ(stats.bytes_in, 1 << 20);
  EXPECT_EQ(stats.upstream_failures, 0);
}

TEST_F(EgressRelayTest, HonoursHalfClose) {
  TestUpstream upstream(socket_path_, UpstreamMode::kReplyAfterEof);
  std::unique_ptr<EgressRelay> relay = StartRelay(Options());
  ASSERT_NE(relay, nullptr);
  Fd client = ConnectTcp(relay->port());
  ASSERT_TRUE(SendAll(client.get(), "question"));
  ASSERT_EQ(::shutdown(client.get(), SHUT_WR), 0);
  // The upstream answers only after it saw the EOF, so the reply crosses a half-closed relay.
  Received reply = RecvUntilEof(client.get());
  EXPECT_EQ(reply.data, "got 8 bytes: question");
  EXPECT_TRUE(reply.eof);
}

TEST_F(EgressRelayTest, TunnelsConnectThroughHttpProxyUpstream) {
  TestUpstream upstream(socket_path_, UpstreamMode::kHttpProxy);
  std::unique_ptr<EgressRelay> relay = StartRelay(Options());
  ASSERT_NE(relay, nullptr);
  Fd client = ConnectTcp(relay->port());
  ASSERT_TRUE(SendAll(client.get(),
                      "CONNECT example.com:443 HTTP/1.1\r\n"
                      "Host: example.com:443\r\n\r\n"));
  EXPECT_EQ(RecvExactly(client.get(), kConnectEstablished.size()), kConnectEstablished);
  ASSERT_TRUE(SendAll(client.get(), "\x16\x03\x01 tls bytes"));
  EXPECT_EQ(RecvExactly(client.get(), 13), "\x16\x03\x01 tls bytes");
  EXPECT_THAT(upstream.preambles(), ElementsAre(Preamble(1)));
}

// Forward mode: the relay asks for the tunnel itself; the client speaks its own protocol at
// once and never sees the proxy's answer.
TEST_F(EgressRelayTest, ForwardModeTunnelsToItsDestination) {
  TestUpstream upstream(socket_path_, UpstreamMode::kHttpProxy);
  EgressRelayOptions options = Options();
  options.tunnel_to = "127.0.0.1:11434";
  std::unique_ptr<EgressRelay> relay = StartRelay(std::move(options));
  ASSERT_NE(relay, nullptr);
  Fd client = ConnectTcp(relay->port());
  ASSERT_TRUE(SendAll(client.get(), "GET /v1/models HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(RecvExactly(client.get(), 27), "GET /v1/models HTTP/1.1\r\n\r\n");
  EXPECT_EQ(upstream.received(0), "GET /v1/models HTTP/1.1\r\n\r\n");
  EXPECT_THAT(upstream.preambles(), ElementsAre(Preamble(1)));
}

TEST_F(EgressRelayTest, ForwardModeClosesWhenTheProxyRefuses) {
  // An echo upstream answers the CONNECT with the CONNECT itself: not a 2xx.
  TestUpstream upstream(socket_path_, UpstreamMode::kEcho);
  EgressRelayOptions options = Options();
  options.tunnel_to = "127.0.0.1:11434";
  std::unique_ptr<EgressRelay> relay = StartRelay(std::move(options));
  ASSERT_NE(relay, nullptr);
  Fd client = ConnectTcp(relay->port());
  ASSERT_TRUE(SendAll(client.get(), "GET / HTTP/1.1\r\n\r\n"));
  Received got = RecvUntilEof(client.get(), 4096);
  EXPECT_TRUE(got.eof || got.reset) << "the connection must end";
  EXPECT_EQ(got.data, "") << "the client must not see the proxy's answer";
}

TEST_F(EgressRelayTest, Answers502WhenUpstreamSocketIsMissing) {
  std::unique_ptr<EgressRelay> relay = StartRelay(Options());
  ASSERT_NE(relay, nullptr);
  Fd client = ConnectTcp(relay->port());
  ASSERT_TRUE(SendAll(client.get(),
                      "GET http://example.com/ HTTP/1.1\r\n"
                      "Host: example.com\r\n\r\n"));
  Received response = RecvUntilEof(client.get());
  EXPECT_EQ(response.data, BadGatewayResponse());
  EXPECT_TRUE(response.eof);
  EXPECT_EQ(relay->stats().upstream_failures, 1);
  EXPECT_EQ(tokens_.load(), 0);
}

TEST_F(EgressRelayTest, Answers502ToConnectWhenUpstreamSocketIsMissing) {
  std::unique_ptr<EgressRelay> relay = StartRelay(Options());
  ASSERT_NE(relay, nullptr);
  Fd client = ConnectTcp(relay->port());
  // Sent in two pieces: the head ends only with the second.
  ASSERT_TRUE(
      SendAll(client.get(), "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"));
  ASSERT_TRUE(SendAll(client.get(), "\r\n"));
  Received response = RecvUntilEof(client.get());
  EXPECT_EQ(response.data, BadGatewayResponse());
  EXPECT_TRUE(response.eof);
}

TEST_F(EgressRelayTest, Answers502WithRequestBodyWhenUpstreamRefuses) {
  Fd dead = BindUnix(socket_path_, /*listen=*/false);  // exists, but connect is refused
  std::unique_ptr<EgressRelay> relay = StartRelay(Options());
  ASSERT_NE(relay, nullptr);
  Fd client = ConnectTcp(relay->port());
  // More than the socket buffers hold: the relay must read (and drop) the body while it
  // answers, or the client's sending fails with a reset.
  const std::string body(8 << 20, 'b');
  EXPECT_TRUE(SendAll(client.get(), absl::StrCat("POST http://example.com/upload HTTP/1.1\r\n"
                                                 "Host: example.com\r\nContent-Length: ",
                                                 body.size(), "\r\n\r\n", body)))
      << std::strerror(errno);
  ::shutdown(client.get(), SHUT_WR);
  Received response = RecvUntilEof(client.get());
  EXPECT_EQ(response.data, BadGatewayResponse());
  EXPECT_TRUE(response.eof);
  EXPECT_EQ(relay->stats().upstream_failures, 1);
}

TEST_F(EgressRelayTest, Answers502WithoutPreambleForUnusableToken) {
  TestUpstream upstream(socket_path_, UpstreamMode::kEcho);
  EgressRelayOptions options = Options();
  options.preamble_token = [] { return std::string("abc\r\nX-Injected: 1"); };
  std::unique_ptr<EgressRelay> relay = StartRelay(std::move(options));
  ASSERT_NE(relay, nullptr);
  Fd client = ConnectTcp(relay->port());
  ASSERT_TRUE(SendAll(client.get(), "GET http://example.com/ HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(RecvUntilEof(client.get()).data, BadGatewayResponse());
  ASSERT_TRUE(WaitFor([&] { return upstream.preambles().size() == 1; }));
  EXPECT_THAT(upstream.preambles(), ElementsAre(""));
  EXPECT_EQ(relay->stats().upstream_failures, 1);
}

TEST_F(EgressRelayTest, RefusesConnectionsBeyondMax) {
  TestUpstream upstream(socket_path_, UpstreamMode::kEcho);
  EgressRelayOptions options = Options();
  options.max_connections = 2;
  std::unique_ptr<EgressRelay> relay = StartRelay(std::move(options));
  ASSERT_NE(relay, nullptr);
  Fd first = ConnectTcp(relay->port());
  Fd second = ConnectTcp(relay->port());
  for (Fd* client : {&first, &second}) {
    ASSERT_TRUE(SendAll(client->get(), "a"));
    ASSERT_EQ(RecvExactly(client->get(), 1), "a");
  }
  Fd third = ConnectTcp(relay->port());
  Received refused = RecvUntilEof(third.get());
  EXPECT_THAT(refused.data, IsEmpty());
  EXPECT_FALSE(refused.timed_out);
  EXPECT_EQ(relay->stats().refused, 1);
  EXPECT_EQ(relay->stats().accepted, 2);

  first.Reset();
  ASSERT_TRUE(WaitFor([&] { return relay->stats().open == 1; }));
  Fd fourth = ConnectTcp(relay->port());
  ASSERT_TRUE(SendAll(fourth.get(), "b"));
  EXPECT_EQ(RecvExactly(fourth.get(), 1), "b");
  EXPECT_EQ(relay->stats().accepted, 3);
}

TEST_F(EgressRelayTest, ClosesIdleConnection) {
  TestUpstream upstream(socket_path_, UpstreamMode::kEcho);
  EgressRelayOptions options = Options();
  options.idle_timeout = absl::Milliseconds(200);
  options.connect_timeout = absl::Seconds(30);  // no other timer may close it
  std::unique_ptr<EgressRelay> relay = StartRelay(std::move(options));
  ASSERT_NE(relay, nullptr);
  Fd client = ConnectTcp(relay->port());
  ASSERT_TRUE(SendAll(client.get(), "x"));
  ASSERT_EQ(RecvExactly(client.get(), 1), "x");
  const auto start = std::chrono::steady_clock::now();
  Received rest = RecvUntilEof(client.get());
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(rest.eof);
  EXPECT_THAT(rest.data, IsEmpty());
  EXPECT_GE(waited, std::chrono::milliseconds(100));
  EXPECT_LT(waited, std::chrono::seconds(8));
  EXPECT_TRUE(WaitFor([&] { return relay->stats().open == 0; }));
}

TEST_F(EgressRelayTest, StopClosesOpenConnectionsPromptly) {
  TestUpstream upstream(socket_path_, UpstreamMode::kEcho);
  std::unique_ptr<EgressRelay> relay = StartRelay(Options());
  ASSERT_NE(relay, nullptr);
  const int port = relay->port();
  Fd first = ConnectTcp(port);
  Fd second = ConnectTcp(port);
  for (Fd* client : {&first, &second}) {
    ASSERT_TRUE(SendAll(client->get(), "ping"));
    ASSERT_EQ(RecvExactly(client->get(), 4), "ping");
  }
  EXPECT_EQ(relay->stats().open, 2);
  const auto start = std::chrono::steady_clock::now();
  relay->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  for (Fd* client : {&first, &second}) {
    Received rest = RecvUntilEof(client->get());
    EXPECT_TRUE(rest.eof);
    EXPECT_THAT(rest.data, IsEmpty());
  }
  EXPECT_EQ(relay->stats().open, 0);
  relay->Stop();  // idempotent

  Fd late(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_NE(::connect(late.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
}

TEST_F(EgressRelayTest, ListensOnLoopbackOnly) {
  std::unique_ptr<EgressRelay> relay = StartRelay(Options());
  ASSERT_NE(relay, nullptr);
  ASSERT_GT(relay->port(), 0);
  // The listening socket's own address, from the kernel's table: local_address is
  // "<hex IPv4, little endian>:<hex port>", st 0A is LISTEN.
  std::ifstream table("/proc/net/tcp");
  ASSERT_TRUE(table.is_open());
  std::string line;
  std::getline(table, line);  // header
  std::vector<std::string> listeners;
  const std::string port_suffix = absl::StrFormat(":%04X", relay->port());
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    fields >> slot >> local >> remote >> state;
    if (state == "0A" && absl::EndsWith(local, port_suffix)) {
      listeners.push_back(local);
    }
  }
  EXPECT_THAT(listeners, ElementsAre(absl::StrCat("0100007F", port_suffix)));
  // And a connection to it reaches 127.0.0.1.
  Fd client = ConnectTcp(relay->port());
  sockaddr_in peer{};
  socklen_t size = sizeof(peer);
  ASSERT_EQ(::getpeername(client.get(), reinterpret_cast<sockaddr*>(&peer), &size), 0);
  EXPECT_EQ(ntohl(peer.sin_addr.s_addr), INADDR_LOOPBACK);
}

TEST_F(EgressRelayTest, RejectsInvalidOptions) {
  {
    EgressRelayOptions options = Options();
    options.tunnel_to = "no port";
    EXPECT_THAT(EgressRelay::Start(options), StatusIs(absl::StatusCode::kInvalidArgument));
  }
  EgressRelayOptions no_token = Options();
  no_token.preamble_token = nullptr;
  EXPECT_THAT(EgressRelay::Start(no_token), StatusIs(absl::StatusCode::kInvalidArgument));
  EgressRelayOptions no_upstream = Options();
  no_upstream.upstream_socket.clear();
  EXPECT_THAT(EgressRelay::Start(no_upstream), StatusIs(absl::StatusCode::kInvalidArgument));
  EgressRelayOptions long_upstream = Options();
  long_upstream.upstream_socket = "/" + std::string(200, 's');
  EXPECT_THAT(EgressRelay::Start(long_upstream), StatusIs(absl::StatusCode::kInvalidArgument));
  EgressRelayOptions bad_port = Options();
  bad_port.listen_port = 70000;
  EXPECT_THAT(EgressRelay::Start(bad_port), StatusIs(absl::StatusCode::kInvalidArgument));
  EgressRelayOptions no_connections = Options();
  no_connections.max_connections = 0;
  EXPECT_THAT(EgressRelay::Start(no_connections), StatusIs(absl::StatusCode::kInvalidArgument));
  EgressRelayOptions no_idle = Options();
  no_idle.idle_timeout = absl::ZeroDuration();
  EXPECT_THAT(EgressRelay::Start(no_idle), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(EgressRelayTest, ReportsUnavailableWhenPortIsTaken) {
  Fd taken(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(taken.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(taken.get(), 1), 0);
  socklen_t size = sizeof(address);
  ASSERT_EQ(::getsockname(taken.get(), reinterpret_cast<sockaddr*>(&address), &size), 0);
  EgressRelayOptions options = Options();
  options.listen_port = ntohs(address.sin_port);
  EXPECT_THAT(EgressRelay::Start(options), StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(EgressRelayTest, NeverLogsToken) {
  const std::string log_path = dir_.Join("relay.log");
  Fd log_fd(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  ASSERT_GE(log_fd.get(), 0);
  LogOptions log_options;
  log_options.level = LogLevel::kDebug;
  log_options.fd = log_fd.get();
  ConfigureLogging(log_options);
  struct RestoreLogging {
    ~RestoreLogging() { ConfigureLogging(LogOptions()); }
  } restore_logging;
  {
    TestUpstream upstream(socket_path_, UpstreamMode::kEcho);
    EgressRelayOptions options = Options();
    options.max_connections = 1;
    std::unique_ptr<EgressRelay> relay = StartRelay(std::move(options));
    ASSERT_NE(relay, nullptr);
    Fd client = ConnectTcp(relay->port());
    ASSERT_TRUE(SendAll(client.get(), "data"));
    ASSERT_EQ(RecvExactly(client.get(), 4), "data");
    Fd refused = ConnectTcp(relay->port());  // logs the connection limit
    EXPECT_TRUE(RecvUntilEof(refused.get()).data.empty());
    client.Reset();
    ASSERT_TRUE(WaitFor([&] { return relay->stats().open == 0; }));  // logs the close
  }
  {
    // The upstream is gone now: logs the outage. (The token is minted only after a connect.)
    std::unique_ptr<EgressRelay> relay = StartRelay(Options());
    ASSERT_NE(relay, nullptr);
    Fd client = ConnectTcp(relay->port());
    ASSERT_TRUE(SendAll(client.get(), "GET http://example.com/ HTTP/1.1\r\n\r\n"));
    EXPECT_EQ(RecvUntilEof(client.get()).data, BadGatewayResponse());
  }
  ConfigureLogging(LogOptions());
  std::ifstream in(log_path);
  std::stringstream log;
  log << in.rdbuf();
  EXPECT_THAT(log.str(), ::testing::HasSubstr("egress relay listening"));
  EXPECT_THAT(log.str(), ::testing::HasSubstr("connection limit"));
  EXPECT_THAT(log.str(), ::testing::HasSubstr("cannot be reached"));
  EXPECT_EQ(tokens_.load(), 1);
  EXPECT_FALSE(absl::StrContains(log.str(), "tpc1.ws-1.proxy")) << log.str();
  EXPECT_FALSE(absl::StrContains(log.str(), "1700000000")) << log.str();
}

}  // namespace
}  // namespace tidepool::supervisor
