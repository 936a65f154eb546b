#include "services/proxy/egress_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
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
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/log.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::proxy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::tidepool::testing::FakeClock;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::ScopedTempDir;
using ::tidepool::testing::StatusIs;

constexpr absl::string_view kTokenWs1 = "tpc1.ws-1.SECRET-TOKEN-ONE";
constexpr absl::string_view kTokenWs2 = "tpc1.ws-2.SECRET-TOKEN-TWO";
constexpr absl::string_view kConnectEstablished = "HTTP/1.1 200 Connection established\r\n\r\n";
const absl::Time kNow = absl::FromUnixSeconds(1700000000) + absl::Milliseconds(250);

// Polls `condition` (the proxy changes state on its own threads) for up to 10 s.
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

void SetTimeouts(int fd, int seconds) {
  timeval timeout{};
  timeout.tv_sec = seconds;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
}

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

// Reads one byte at a time until "\r\n\r\n" (or EOF).
std::string RecvHead(int fd) {
  std::string head;
  char c;
  while (!absl::EndsWith(head, "\r\n\r\n") && head.size() < 65536) {
    ssize_t n = ::recv(fd, &c, 1, 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    head.push_back(c);
  }
  return head;
}

// A deterministic, non-repeating-looking payload.
std::string Payload(size_t size) {
  std::string data(size, '\0');
  uint32_t x = 12345;
  for (char& c : data) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return data;
}

struct HttpAnswer {
  int status = 0;
  std::string head;
  std::string body;
};

// Splits a complete HTTP response (read to EOF).
HttpAnswer ParseAnswer(const std::string& raw) {
  HttpAnswer answer;
  size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos || raw.size() < 12) {
    return answer;
  }
  answer.head = raw.substr(0, end + 4);
  answer.body = raw.substr(end + 4);
  if (!absl::SimpleAtoi(raw.substr(9, 3), &answer.status)) {
    answer.status = -1;
  }
  return answer;
}

// A TCP server on 127.0.0.1:<ephemeral> playing a destination on the internet: echoes bytes
// (kEcho) or answers one HTTP request per connection with a canned response (kHttp), recording
// what each connection sent. One thread per connection.
class OriginServer {
 public:
  enum class Mode { kEcho, kHttp };

  explicit OriginServer(Mode mode, std::string response = "")
      : mode_(mode), response_(std::move(response)) {
    listener_ = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof(address);
    if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        ::listen(listener_.get(), 64) != 0 ||
        ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&address), &size) != 0) {
      ADD_FAILURE() << "origin listen: " << std::strerror(errno);
    }
    port_ = ntohs(address.sin_port);
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }

  ~OriginServer() {
    ::shutdown(listener_.get(), SHUT_RDWR);  // wakes accept()
    accept_thread_.join();
    std::vector<std::thread> threads;
    {
      absl::MutexLock lock(&mu_);
      for (Fd& fd : fds_) {
        ::shutdown(fd.get(), SHUT_RDWR);
      }
      threads.swap(threads_);
    }
    for (std::thread& thread : threads) {
      thread.join();
    }
  }

  int port() const { return port_; }

  int connections() {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(fds_.size());
  }

  // Everything connection `index` sent.
  std::string received(int index) {
    absl::MutexLock lock(&mu_);
    return received_[index];
  }

  // Whether connection `index` has seen EOF from the proxy.
  bool ended(int index) {
    absl::MutexLock lock(&mu_);
    return ended_[index];
  }

 private:
  void AcceptLoop() {
    for (int index = 0;; ++index) {
      int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        return;
      }
      SetTimeouts(fd, 10);
      absl::MutexLock lock(&mu_);
      fds_.emplace_back(fd);
      threads_.emplace_back([this, fd, index] { Serve(fd, index); });
    }
  }

  void Record(int index, absl::string_view data) {
    absl::MutexLock lock(&mu_);
    received_[index].append(data.data(), data.size());
  }

  void Serve(int fd, int index) {
    if (mode_ == Mode::kHttp) {
      ServeHttp(fd, index);
    }
    char buffer[65536];
    for (;;) {
      ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        break;
      }
      Record(index, absl::string_view(buffer, static_cast<size_t>(n)));
      if (mode_ == Mode::kEcho && !SendAll(fd, absl::string_view(buffer, static_cast<size_t>(n)))) {
        break;
      }
    }
    {
      absl::MutexLock lock(&mu_);
      ended_[index] = true;
    }
    ::shutdown(fd, SHUT_WR);
  }

  // Reads the head and the body (Content-Length or chunked), then sends the canned response.
  void ServeHttp(int fd, int index) {
    std::string head = RecvHead(fd);
    Record(index, head);
    const std::string lower = absl::AsciiStrToLower(head);
    size_t pos = lower.find("\r\ncontent-length:");
    if (pos != std::string::npos) {
      size_t length = 0;
      size_t eol = lower.find("\r\n", pos + 2);
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(lower.substr(pos + 17, eol - pos - 17)),
                           &length)) {
        Record(index, RecvExactly(fd, length));
      }
    } else if (lower.find("\r\ntransfer-encoding: chunked") != std::string::npos) {
      std::string body;
      char c;
      while (!absl::EndsWith(body, "\r\n0\r\n\r\n") && ::recv(fd, &c, 1, 0) == 1) {
        body.push_back(c);
      }
      Record(index, body);
    }
    SendAll(fd, response_);
    ::shutdown(fd, SHUT_WR);
  }

  const Mode mode_;
  const std::string response_;
  Fd listener_;
  int port_ = 0;
  std::thread accept_thread_;
  absl::Mutex mu_;
  std::vector<Fd> fds_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::map<int, std::string> received_ ABSL_GUARDED_BY(mu_);
  std::map<int, bool> ended_ ABSL_GUARDED_BY(mu_);
};

boost::asio::ip::address Ip(const std::string& text) { return boost::asio::ip::make_address(text); }

class EgressProxyTest : public ::testing::Test {
 protected:
  // Options with the test's verifier, resolver, audit hook and clock, and no rules.
  EgressProxyOptions Options() {
    EgressProxyOptions options;
    options.socket_path = socket_path_;
    options.clock = &clock_;
    options.verify = [this](const std::string& token) -> absl::StatusOr<EgressIdentity> {
      absl::MutexLock lock(&mu_);
      verified_.push_back(token);
      if (token == kTokenWs1) {
        return EgressIdentity{"ws-1", "user-1"};
      }
      if (token == kTokenWs2) {
        return EgressIdentity{"ws-2", "user-2"};
      }
      // A message that echoes the token: the proxy must not log it.
      return absl::UnauthenticatedError(absl::StrCat("unknown token ", token));
    };
    options.resolve =
        [this](const std::string& host) -> absl::StatusOr<std::vector<boost::asio::ip::address>> {
      absl::MutexLock lock(&mu_);
      resolved_.push_back(host);
      auto it = dns_.find(host);
      if (it == dns_.end()) {
        return absl::NotFoundError(absl::StrCat("no such host ", host));
      }
      return it->second;
    };
    options.on_denied = [this](const EgressDecision& decision) {
      absl::MutexLock lock(&mu_);
      denials_.push_back(decision);
    };
    return options;
  }

  std::unique_ptr<EgressProxy> StartProxy(EgressProxyOptions options) {
    absl::StatusOr<std::unique_ptr<EgressProxy>> proxy = EgressProxy::Start(std::move(options));
    EXPECT_THAT(proxy, IsOk());
    return proxy.ok() ? std::move(*proxy) : nullptr;
  }

  // A client of the proxy's Unix socket; reads give up after 10 s so a broken proxy fails
  // rather than hangs.
  Fd Connect() {
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    SetTimeouts(fd.get(), 10);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, socket_path_.c_str(), sizeof(address.sun_path) - 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      ADD_FAILURE() << "connect " << socket_path_ << ": " << std::strerror(errno);
      return Fd();
    }
    return fd;
  }

  // Connects, sends the preamble with `token` and `request`, and returns the connection.
  Fd Send(absl::string_view token, absl::string_view request) {
    Fd fd = Connect();
    EXPECT_TRUE(SendAll(fd.get(), absl::StrCat("TIDEPOOL-EGRESS/1 ", token, "\r\n", request)));
    return fd;
  }

  // Sends `request` as workspace ws-1 and returns the whole answer (read to EOF).
  HttpAnswer Ask(absl::string_view request, absl::string_view token = kTokenWs1) {
    Fd fd = Send(token, request);
    Received received = RecvUntilEof(fd.get());
    EXPECT_TRUE(received.eof) << "the proxy did not close the connection after answering";
    return ParseAnswer(received.data);
  }

  // Opens a CONNECT tunnel and checks the 200.
  Fd OpenTunnel(absl::string_view authority, absl::string_view token = kTokenWs1) {
    Fd fd = Send(token,
                 absl::StrCat("CONNECT ", authority, " HTTP/1.1\r\nHost: ", authority, "\r\n\r\n"));
    EXPECT_EQ(RecvExactly(fd.get(), kConnectEstablished.size()), kConnectEstablished);
    return fd;
  }

  std::vector<std::string> verified() {
    absl::MutexLock lock(&mu_);
    return verified_;
  }
  std::vector<std::string> resolved() {
    absl::MutexLock lock(&mu_);
    return resolved_;
  }
  std::vector<EgressDecision> denials() {
    absl::MutexLock lock(&mu_);
    return denials_;
  }
  void SetDns(const std::string& host, std::vector<boost::asio::ip::address> addresses) {
    absl::MutexLock lock(&mu_);
    dns_[host] = std::move(addresses);
  }

  static proxy::v1::WorkspaceEgress CountersOf(const EgressProxy& proxy,
                                               const std::string& workspace_id) {
    for (const proxy::v1::WorkspaceEgress& counters : proxy.Counters()) {
      if (counters.workspace_id() == workspace_id) {
        return counters;
      }
    }
    return proxy::v1::WorkspaceEgress();
  }

  ScopedTempDir dir_;
  const std::string socket_path_ = dir_.Join("egress.sock");
  FakeClock clock_{kNow};
  absl::Mutex mu_;
  std::vector<std::string> verified_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> resolved_ ABSL_GUARDED_BY(mu_);
  std::vector<EgressDecision> denials_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<boost::asio::ip::address>> dns_ ABSL_GUARDED_BY(mu_) = {
      {"api.example.test", {Ip("127.0.0.1")}}};
};

TEST_F(EgressProxyTest, TunnelsConnectToAllowedHostBothWays) {
  OriginServer origin(OriginServer::Mode::kEcho);
  EgressProxyOptions options = Options();
  options.rules = {{"api.example.test", origin.port(), "model_server"}};
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);
  struct stat st {};
  ASSERT_EQ(::stat(socket_path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0666u);

  const std::string authority = absl::StrCat("API.Example.Test.:", origin.port());
  Fd client = OpenTunnel(authority);
  const std::string payload = Payload(1 << 20);
  std::thread writer([&] {
    EXPECT_TRUE(SendAll(client.get(), payload));
    ::shutdown(client.get(), SHUT_WR);  // half-close: the echo answers with its own EOF
  });
  const std::string echoed = RecvExactly(client.get(), payload.size());
  writer.join();
  EXPECT_TRUE(echoed == payload) << "echoed " << echoed.size() << " bytes, not the payload";
  Received rest = RecvUntilEof(client.get());
  EXPECT_TRUE(rest.eof);
  EXPECT_THAT(rest.data, IsEmpty());
  EXPECT_EQ(origin.received(0).size(), payload.size());
  EXPECT_THAT(verified(), ElementsAre(std::string(kTokenWs1)));
  EXPECT_THAT(resolved(), ElementsAre("api.example.test"));

  ASSERT_TRUE(WaitFor([&] { return proxy->OpenConnections() == 0; }));
  proxy::v1::WorkspaceEgress counters = CountersOf(*proxy, "ws-1");
  EXPECT_EQ(counters.bytes_sent(), 1 << 20);
  EXPECT_EQ(counters.bytes_received(), 1 << 20);
  EXPECT_EQ(counters.allowed_connection_count(), 1);
  EXPECT_EQ(counters.denied_connection_count(), 0);
}

TEST_F(EgressProxyTest, ForwardsBytesSentRightAfterConnectHead) {
  OriginServer origin(OriginServer::Mode::kEcho);
  EgressProxyOptions options = Options();
  options.rules = {{"api.example.test", origin.port(), "model_server"}};
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);
  const std::string authority = absl::StrCat("api.example.test:", origin.port());
  // Like a TLS ClientHello sent without waiting for the 200.
  Fd client = Send(kTokenWs1, absl::StrCat("CONNECT ", authority, " HTTP/1.1\r\n\r\nhello"));
  EXPECT_EQ(RecvExactly(client.get(), kConnectEstablished.size() + 5),
            absl::StrCat(kConnectEstablished, "hello"));
}

TEST_F(EgressProxyTest, ForwardsAbsoluteFormInOriginFormAndStreamsResponse) {
  const std::string body = Payload(300 * 1024);  // several 64 KiB buffers
  OriginServer origin(
      OriginServer::Mode::kHttp,
      absl::StrCat("HTTP/1.1 201 Created\r\nContent-Length: ", body.size(),
                   "\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\nX-Origin: yes\r\n\r\n",
                   body));
  EgressProxyOptions options = Options();
  options.rules = {{"api.example.test", origin.port(), "model_server"}};
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);
  const std::string authority = absl::StrCat("api.example.test:", origin.port());

  HttpAnswer answer = Ask(absl::StrCat("POST http://", authority,
                                       "/v1/items?q=a%20b HTTP/1.1\r\n"
                                       "Host: ",
                                       authority,
                                       "\r\n"
                                       "Proxy-Connection: keep-alive\r\n"
                                       "Proxy-Authorization: Basic c2VjcmV0\r\n"
                                       "Connection: X-Drop-Me\r\n"
                                       "X-Drop-Me: 1\r\n"
                                       "Content-Length: 5\r\n"
                                       "\r\nhello"));
  EXPECT_EQ(answer.status, 201);
  EXPECT_TRUE(answer.body == body) << "body of " << answer.body.size() << " bytes";
  EXPECT_THAT(answer.head, HasSubstr("X-Origin: yes\r\n"));
  EXPECT_THAT(answer.head, HasSubstr("Connection: close\r\n"));
  EXPECT_THAT(answer.head, Not(HasSubstr("Keep-Alive")));
  EXPECT_THAT(answer.head, Not(HasSubstr("keep-alive")));

  const std::string seen = origin.received(0);
  EXPECT_TRUE(absl::StartsWith(seen, "POST /v1/items?q=a%20b HTTP/1.1\r\n")) << seen;
  EXPECT_THAT(seen, HasSubstr(absl::StrCat("\r\nHost: ", authority, "\r\n")));
  EXPECT_THAT(seen, HasSubstr("\r\nConnection: close\r\n"));
  EXPECT_THAT(seen, Not(HasSubstr("Proxy-")));
  EXPECT_THAT(seen, Not(HasSubstr("X-Drop-Me")));
  EXPECT_TRUE(absl::EndsWith(seen, "\r\n\r\nhello")) << seen;

  ASSERT_TRUE(WaitFor([&] { return proxy->OpenConnections() == 0; }));
  proxy::v1::WorkspaceEgress counters = CountersOf(*proxy, "ws-1");
  EXPECT_EQ(counters.allowed_connection_count(), 1);
  EXPECT_EQ(counters.bytes_sent(), static_cast<int64_t>(seen.size()));
  EXPECT_GT(counters.bytes_received(), static_cast<int64_t>(body.size()));
}

TEST_F(EgressProxyTest, RelaysChunkedBodiesBothWays) {
  OriginServer origin(OriginServer::Mode::kHttp,
                      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  EgressProxyOptions options = Options();
  options.rules = {{"api.example.test", origin.port(), "model_server"}};
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);
  const std::string authority = absl::StrCat("api.example.test:", origin.port());
  HttpAnswer answer = Ask(absl::StrCat("PUT http://", authority,
                                       "/upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                       "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"));
  EXPECT_EQ(answer.status, 200);
  EXPECT_THAT(answer.head, HasSubstr("Transfer-Encoding: chunked\r\n"));
  // Re-chunked by the proxy: the same data, framing may differ.
  EXPECT_THAT(answer.body, HasSubstr("hello"));
  EXPECT_THAT(answer.body, HasSubstr(" world"));
  EXPECT_TRUE(absl::EndsWith(answer.body, "0\r\n\r\n")) << answer.body;
  const std::string seen = origin.received(0);
  EXPECT_TRUE(absl::StartsWith(seen, "PUT /upload HTTP/1.1\r\n")) << seen;
  EXPECT_THAT(seen, HasSubstr("abc"));
  EXPECT_TRUE(absl::EndsWith(seen, "\r\n0\r\n\r\n")) << seen;
}

TEST_F(EgressProxyTest, RefusesMissingOrBadPreambleWith407) {
  OriginServer origin(OriginServer::Mode::kEcho);
  EgressProxyOptions options = Options();
  options.rules = {{"api.example.test", origin.port(), "model_server"}};
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);
  const std::string connect =
      absl::StrCat("CONNECT api.example.test:", origin.port(), " HTTP/1.1\r\n\r\n");

  // No preamble at all.
  {
    Fd fd = Connect();
    ASSERT_TRUE(SendAll(fd.get(), connect));
    HttpAnswer answer = ParseAnswer(RecvUntilEof(fd.get()).data);
    EXPECT_EQ(answer.status, 407);
    EXPECT_THAT(answer.head, HasSubstr("Connection: close\r\n"));
    EXPECT_THAT(answer.body, HasSubstr("tidepool:"));
  }
  // Wrong version, lower-case prefix, empty token, a space in the token, LF only.
  for (absl::string_view preamble :
       {"TIDEPOOL-EGRESS/2 tok\r\n", "tidepool-egress/1 tok\r\n", "TIDEPOOL-EGRESS/1 \r\n",
        "TIDEPOOL-EGRESS/1 a b\r\n", "TIDEPOOL-EGRESS/1 tok\n"}) {
    Fd fd = Connect();
    ASSERT_TRUE(SendAll(fd.get(), absl::StrCat(preamble, connect)));
    EXPECT_EQ(ParseAnswer(RecvUntilEof(fd.get()).data).status, 407) << preamble;
  }
  // Longer than 1 KiB without a line end.
  {
    Fd fd = Connect();
    ASSERT_TRUE(SendAll(fd.get(), absl::StrCat("TIDEPOOL-EGRESS/1 ", std::string(1100, 'a'))));
    EXPECT_EQ(ParseAnswer(RecvUntilEof(fd.get()).data).status, 407);
  }
  EXPECT_THAT(verified(), IsEmpty());

  // Well-formed but unknown: verify sees exactly the token, nothing of what follows the line.
  EXPECT_EQ(Ask(connect, "unknown-token").status, 407);
  EXPECT_THAT(verified(), ElementsAre("unknown-token"));
  EXPECT_EQ(origin.connections(), 0);
  EXPECT_THAT(resolved(), IsEmpty());
}

TEST_F(EgressProxyTest, DeniesDestinationNotOnListWith403AndAudits) {
  EgressProxyOptions options = Options();
  options.rules = {{"api.example.test", 443, "config"}};
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);

  HttpAnswer answer = Ask("CONNECT evil.example.test:443 HTTP/1.1\r\n\r\n");
  EXPECT_EQ(answer.status, 403);
  EXPECT_EQ(answer.body,
            "tidepool: evil.example.test:443 is not on this platform's egress allowlist\n");
  // Right host, wrong port.
  clock_.Advance(absl::Seconds(5));
  answer = Ask("CONNECT api.example.test:8443 HTTP/1.1\r\n\r\n");
  EXPECT_EQ(answer.status, 403);
  EXPECT_EQ(answer.body,
            "tidepool: api.example.test:8443 is not on this platform's egress allowlist\n");
  // Nothing is resolved for a destination that is not listed.
  EXPECT_THAT(resolved(), IsEmpty());

  std::vector<EgressDecision> decisions = denials();
  ASSERT_EQ(decisions.size(), 2u);
  EXPECT_EQ(decisions[0].workspace_id, "ws-1");
  EXPECT_EQ(decisions[0].owner_user_id, "user-1");
  EXPECT_EQ(decisions[0].destination, "evil.example.test:443");
  EXPECT_FALSE(decisions[0].allowed);
  EXPECT_EQ(decisions[0].reason, kEgressDeniedNotAllowlisted);
  EXPECT_EQ(decisions[0].time, kNow);
  EXPECT_EQ(decisions[1].destination, "api.example.test:8443");

  proxy::v1::WorkspaceEgress counters = CountersOf(*proxy, "ws-1");
  EXPECT_EQ(counters.denied_connection_count(), 2);
  EXPECT_EQ(counters.allowed_connection_count(), 0);
  EXPECT_EQ(counters.last_denied_destination(), "api.example.test:8443");
  EXPECT_EQ(counters.last_denied_time().seconds(), 1700000005);
  EXPECT_EQ(counters.last_denied_time().nanos(), 250000000);
}

TEST_F(EgressProxyTest, RefusesConfigRulesThatReachPrivateAddresses) {
  OriginServer origin(OriginServer::Mode::kEcho);  // what loopback would reach
  const int port = origin.port();
  SetDns("loop.example.test", {Ip("127.0.0.1")});
  SetDns("ten.example.test", {Ip("10.0.0.1")});
  SetDns("metadata.example.test", {Ip("169.254.169.254")});
  SetDns("mapped.example.test", {Ip("::ffff:127.0.0.1")});
  SetDns("ula.example.test", {Ip("fd00:ec2::254")});
  SetDns("cgnat.example.test", {Ip("100.64.0.1")});
  SetDns("mixed.example.test", {Ip("93.184.216.34"), Ip("127.0.0.1")});
  EgressProxyOptions options = Options();
  for (const char* host : {"loop.example.test", "ten.example.test", "metadata.example.test",
                           "mapped.example.test", "ula.example.test", "cgnat.example.test",
                           "mixed.example.test", "127.0.0.1", "169.254.169.254", "::1"}) {
    options.rules.push_back({host, port, "config"});
  }
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);

  for (const char* host : {"loop.example.test", "ten.example.test", "metadata.example.test",
                           "mapped.example.test", "ula.example.test", "cgnat.example.test",
                           "mixed.example.test", "127.0.0.1", "169.254.169.254", "[::1]"}) {
    SCOPED_TRACE(host);
    const std::string authority = absl::StrCat(host, ":", port);
    EXPECT_EQ(Ask(absl::StrCat("CONNECT ", authority, " HTTP/1.1\r\n\r\n")).status, 403);
    EXPECT_EQ(
        Ask(absl::StrCat("GET http://", authority, "/latest/meta-data/ HTTP/1.1\r\n\r\n")).status,
        403);
  }
  EXPECT_EQ(origin.connections(), 0);
  std::vector<EgressDecision> decisions = denials();
  ASSERT_EQ(decisions.size(), 20u);
  for (const EgressDecision& decision : decisions) {
    EXPECT_EQ(decision.reason, kEgressDeniedPrivateAddress) << decision.destination;
  }
  EXPECT_EQ(decisions[18].destination, absl::StrCat("[::1]:", port));
  EXPECT_EQ(CountersOf(*proxy, "ws-1").denied_connection_count(), 20);
}

TEST_F(EgressProxyTest, RefusesIpLiteralsInOddForms) {
  OriginServer origin(OriginServer::Mode::kEcho);
  const int port = origin.port();
  EgressProxyOptions options = Options();
  // Even the loopback literal is allowed here: odd spellings of it must still be refused.
  options.rules = {{"127.0.0.1", port, "model_server"}};
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);
  for (const char* host : {"2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "127.1",
                           "127.0.0.01", "017700000001"}) {
    SCOPED_TRACE(host);
    HttpAnswer answer = Ask(absl::StrCat("CONNECT ", host, ":", port, " HTTP/1.1\r\n\r\n"));
    EXPECT_EQ(answer.status, 403);
    EXPECT_THAT(answer.body, HasSubstr("is not on this platform's egress allowlist"));
  }
  EXPECT_EQ(origin.connections(), 0);
  EXPECT_THAT(resolved(), IsEmpty());
  std::vector<EgressDecision> decisions = denials();
  ASSERT_EQ(decisions.size(), 7u);
  EXPECT_EQ(decisions[0].reason, kEgressDeniedNonCanonicalIp);
  // The strict dotted quad itself works (positive control).
  OpenTunnel(absl::StrCat("127.0.0.1:", port));
  // Rules in odd forms are rejected outright.
  EXPECT_THAT(ValidateEgressRules({{"0177.0.0.1", 80, "config"}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ValidateEgressRules({{"2130706433", 80, "model_server"}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ValidateEgressRules({{"api.example.test", 0, "config"}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ValidateEgressRules({{"api.example.test", 443, "admin"}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ValidateEgressRules({{"api.example.test", 443, "config"}, {"::1", 1, "config"}}),
              IsOk());
}

TEST_F(EgressProxyTest, RejectsMalformedAndSmugglingRequestsWith400) {
  OriginServer origin(OriginServer::Mode::kHttp, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  EgressProxyOptions options = Options();
  options.rules = {{"api.example.test", origin.port(), "model_server"}};
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);
  const std::string a = absl::StrCat("api.example.test:", origin.port());
  const std::vector<std::string> requests = {
      // TLS must use CONNECT.
      absl::StrCat("GET https://", a, "/ HTTP/1.1\r\nHost: ", a, "\r\n\r\n"),
      // Origin-form and other schemes are not proxy requests.
      absl::StrCat("GET / HTTP/1.1\r\nHost: ", a, "\r\n\r\n"),
      absl::StrCat("GET ftp://", a, "/ HTTP/1.1\r\n\r\n"),
      // CL.TE and TE.CL.
      absl::StrCat("POST http://", a, "/ HTTP/1.1\r\nContent-Length: 5\r\n",
                   "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
      absl::StrCat("POST http://", a, "/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n",
                   "Content-Length: 5\r\n\r\n0\r\n\r\n"),
      // Obfuscated or doubled Transfer-Encoding, doubled Content-Length.
      absl::StrCat("POST http://", a, "/ HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n"),
      absl::StrCat("POST http://", a, "/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n",
                   "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
      absl::StrCat("POST http://", a, "/ HTTP/1.1\r\nContent-Length: 1\r\n",
                   "Content-Length: 1\r\n\r\nx"),
      // obs-fold, bare LF.
      absl::StrCat("GET http://", a, "/ HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n"),
      absl::StrCat("GET http://", a, "/ HTTP/1.1\nHost: ", a, "\r\n\r\n"),
      // Bad, doubled or mismatched Host.
      absl::StrCat("GET http://", a, "/ HTTP/1.1\r\nHost: evil.example.test\r\n\r\n"),
      absl::StrCat("GET http://", a, "/ HTTP/1.1\r\nHost: ", a, "\r\nHost: ", a, "\r\n\r\n"),
      absl::StrCat("GET http://", a, "/ HTTP/1.1\r\nHost: a b\r\n\r\n"),
      // User info, non-numeric CONNECT port, upgrade.
      absl::StrCat("GET http://user:pw@", a, "/ HTTP/1.1\r\n\r\n"),
      "CONNECT api.example.test:https HTTP/1.1\r\n\r\n",
      "CONNECT api.example.test HTTP/1.1\r\n\r\n",
      absl::StrCat("GET http://", a, "/ HTTP/1.1\r\nConnection: Upgrade\r\n",
                   "Upgrade: websocket\r\n\r\n"),
      absl::StrCat("GET http://", a, "/ HTTP/2.0\r\n\r\n"),
  };
  for (const std::string& request : requests) {
    SCOPED_TRACE(request);
    HttpAnswer answer = Ask(request);
    EXPECT_EQ(answer.status, 400);
    EXPECT_THAT(answer.body, HasSubstr("tidepool: bad request"));
  }
  EXPECT_EQ(origin.connections(), 0);
  EXPECT_THAT(denials(), IsEmpty());
  // Positive control: the same destination, well-formed.
  EXPECT_EQ(Ask(absl::StrCat("GET http://", a, "/ HTTP/1.1\r\nHost: ", a, "\r\n\r\n")).status, 200);
}

TEST_F(EgressProxyTest, RejectsOversizedHeadWith431) {
  EgressProxyOptions options = Options();
  options.rules = {{"api.example.test", 80, "model_server"}};
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);
  HttpAnswer answer = Ask(absl::StrCat(
      "GET http://api.example.test/ HTTP/1.1\r\nX-Big: ", std::string(17 * 1024, 'x'), "\r\n\r\n"));
  EXPECT_EQ(answer.status, 431);
}

TEST_F(EgressProxyTest, LimitsConcurrentConnectionsPerWorkspace) {
  OriginServer origin(OriginServer::Mode::kEcho);
  EgressProxyOptions options = Options();
  options.rules = {{"api.example.test", origin.port(), "model_server"}};
  options.max_connections_per_workspace = 2;
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);
  const std::string authority = absl::StrCat("api.example.test:", origin.port());

  Fd first = OpenTunnel(authority);
  Fd second = OpenTunnel(authority);
  HttpAnswer answer = Ask(absl::StrCat("CONNECT ", authority, " HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(answer.status, 429);
  // Another workspace is not affected.
  Fd other = OpenTunnel(authority, kTokenWs2);
  ASSERT_TRUE(SendAll(other.get(), "ping"));
  EXPECT_EQ(RecvExactly(other.get(), 4), "ping");

  std::vector<EgressDecision> decisions = denials();
  ASSERT_EQ(decisions.size(), 1u);
  EXPECT_EQ(decisions[0].reason, kEgressDeniedConnectionLimit);
  EXPECT_EQ(decisions[0].workspace_id, "ws-1");

  // A closed tunnel frees its slot.
  first.Reset();
  ASSERT_TRUE(WaitFor([&] { return proxy->OpenConnections() == 2; }));
  Fd third = OpenTunnel(authority);
  ASSERT_TRUE(SendAll(third.get(), "pong"));
  EXPECT_EQ(RecvExactly(third.get(), 4), "pong");
  proxy::v1::WorkspaceEgress counters = CountersOf(*proxy, "ws-1");
  EXPECT_EQ(counters.allowed_connection_count(), 3);
  EXPECT_EQ(counters.denied_connection_count(), 1);
}

TEST_F(EgressProxyTest, CountsPerWorkspace) {
  OriginServer origin(OriginServer::Mode::kEcho);
  EgressProxyOptions options = Options();
  options.rules = {{"api.example.test", origin.port(), "model_server"}};
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);
  const std::string authority = absl::StrCat("api.example.test:", origin.port());
  {
    Fd fd = OpenTunnel(authority, kTokenWs1);
    ASSERT_TRUE(SendAll(fd.get(), std::string(1000, 'a')));
    EXPECT_EQ(RecvExactly(fd.get(), 1000).size(), 1000u);
  }
  {
    Fd fd = OpenTunnel(authority, kTokenWs2);
    ASSERT_TRUE(SendAll(fd.get(), std::string(70, 'b')));
    EXPECT_EQ(RecvExactly(fd.get(), 70).size(), 70u);
  }
  EXPECT_EQ(Ask("CONNECT elsewhere.example.test:443 HTTP/1.1\r\n\r\n", kTokenWs2).status, 403);
  clock_.Advance(absl::Minutes(1));
  EXPECT_EQ(Ask("CONNECT other.example.test:80 HTTP/1.1\r\n\r\n", kTokenWs2).status, 403);
  ASSERT_TRUE(WaitFor([&] { return proxy->OpenConnections() == 0; }));

  std::vector<proxy::v1::WorkspaceEgress> all = proxy->Counters();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].workspace_id(), "ws-1");
  EXPECT_EQ(all[0].bytes_sent(), 1000);
  EXPECT_EQ(all[0].bytes_received(), 1000);
  EXPECT_EQ(all[0].allowed_connection_count(), 1);
  EXPECT_EQ(all[0].denied_connection_count(), 0);
  EXPECT_EQ(all[0].last_denied_destination(), "");
  EXPECT_FALSE(all[0].has_last_denied_time());
  EXPECT_EQ(all[1].workspace_id(), "ws-2");
  EXPECT_EQ(all[1].bytes_sent(), 70);
  EXPECT_EQ(all[1].bytes_received(), 70);
  EXPECT_EQ(all[1].allowed_connection_count(), 1);
  EXPECT_EQ(all[1].denied_connection_count(), 2);
  EXPECT_EQ(all[1].last_denied_destination(), "other.example.test:80");
  EXPECT_EQ(all[1].last_denied_time().seconds(), 1700000060);
}

TEST_F(EgressProxyTest, SetRulesAppliesToNewConnections) {
  OriginServer origin(OriginServer::Mode::kEcho);
  std::unique_ptr<EgressProxy> proxy = StartProxy(Options());
  ASSERT_NE(proxy, nullptr);
  const std::string authority = absl::StrCat("api.example.test:", origin.port());
  const std::string connect = absl::StrCat("CONNECT ", authority, " HTTP/1.1\r\n\r\n");
  EXPECT_EQ(Ask(connect).status, 403);

  proxy->SetRules({{"api.example.test", origin.port(), "model_server"}});
  Fd open = OpenTunnel(authority);
  ASSERT_EQ(proxy->Rules().size(), 1u);

  // Removing the rule refuses new connections; the open tunnel keeps working.
  proxy->SetRules({});
  EXPECT_EQ(Ask(connect).status, 403);
  ASSERT_TRUE(SendAll(open.get(), "still"));
  EXPECT_EQ(RecvExactly(open.get(), 5), "still");

  // An invalid rule is dropped, the valid ones apply.
  proxy->SetRules(
      {{"0x7f.1", origin.port(), "config"}, {"api.example.test", origin.port(), "model_server"}});
  EXPECT_EQ(proxy->Rules().size(), 1u);
  OpenTunnel(authority);
}

TEST_F(EgressProxyTest, AnswersBadGatewayWhenUpstreamRefuses) {
  int closed_port = 0;
  {
    OriginServer gone(OriginServer::Mode::kEcho);
    closed_port = gone.port();
  }
  EgressProxyOptions options = Options();
  options.rules = {{"api.example.test", closed_port, "model_server"}};
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);
  HttpAnswer answer =
      Ask(absl::StrCat("CONNECT api.example.test:", closed_port, " HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(answer.status, 502);
  EXPECT_EQ(answer.body,
            absl::StrCat("tidepool: cannot connect to api.example.test:", closed_port, "\n"));
}

TEST_F(EgressProxyTest, AnswersBadGatewayWhenResolutionOutlastsConnectTimeout) {
  absl::Notification release;
  EgressProxyOptions options = Options();
  options.rules = {{"slow.example.test", 443, "config"}};
  options.connect_timeout = absl::Milliseconds(200);
  options.resolve =
      [&release](
          const std::string& /*host*/) -> absl::StatusOr<std::vector<boost::asio::ip::address>> {
    release.WaitForNotificationWithTimeout(absl::Seconds(30));
    return std::vector<boost::asio::ip::address>{Ip("93.184.216.34")};
  };
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);
  HttpAnswer answer = Ask("CONNECT slow.example.test:443 HTTP/1.1\r\n\r\n");
  EXPECT_EQ(answer.status, 502);
  EXPECT_EQ(answer.body, "tidepool: cannot connect to slow.example.test:443\n");
  release.Notify();  // the late answer is ignored
}

TEST_F(EgressProxyTest, ClosesIdleTunnels) {
  OriginServer origin(OriginServer::Mode::kEcho);
  EgressProxyOptions options = Options();
  options.rules = {{"api.example.test", origin.port(), "model_server"}};
  options.idle_timeout = absl::Milliseconds(300);
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);
  Fd tunnel = OpenTunnel(absl::StrCat("api.example.test:", origin.port()));
  ASSERT_TRUE(SendAll(tunnel.get(), "abc"));
  ASSERT_EQ(RecvExactly(tunnel.get(), 3), "abc");
  Received received = RecvUntilEof(tunnel.get());  // gives up after 10 s
  EXPECT_FALSE(received.timed_out);
  EXPECT_TRUE(received.eof || received.reset);
  EXPECT_TRUE(WaitFor([&] { return proxy->OpenConnections() == 0; }));
}

TEST_F(EgressProxyTest, StopClosesOpenTunnelsPromptly) {
  OriginServer origin(OriginServer::Mode::kEcho);
  EgressProxyOptions options = Options();
  options.rules = {{"api.example.test", origin.port(), "model_server"}};
  std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
  ASSERT_NE(proxy, nullptr);
  const std::string authority = absl::StrCat("api.example.test:", origin.port());
  Fd tunnel = OpenTunnel(authority);
  ASSERT_TRUE(SendAll(tunnel.get(), "abc"));
  ASSERT_EQ(RecvExactly(tunnel.get(), 3), "abc");
  // A connection still waiting for its request head.
  Fd waiting = Send(kTokenWs2, "");
  ASSERT_TRUE(WaitFor([&] { return proxy->OpenConnections() == 2; }));

  SetTimeouts(tunnel.get(), 3);  // far below the 10 min idle timeout
  SetTimeouts(waiting.get(), 3);
  proxy->Stop();
  Received received = RecvUntilEof(tunnel.get());
  EXPECT_FALSE(received.timed_out);
  EXPECT_TRUE(received.eof || received.reset);
  received = RecvUntilEof(waiting.get());
  EXPECT_FALSE(received.timed_out);
  EXPECT_TRUE(WaitFor([&] { return origin.ended(0); }));
  EXPECT_EQ(proxy->OpenConnections(), 0);
  proxy->Stop();  // idempotent
}

TEST_F(EgressProxyTest, StartRejectsBadOptions) {
  EgressProxyOptions options = Options();
  options.verify = nullptr;
  EXPECT_THAT(EgressProxy::Start(options), StatusIs(absl::StatusCode::kInvalidArgument));
  options = Options();
  options.rules = {{"api.example.test", 70000, "config"}};
  EXPECT_THAT(EgressProxy::Start(options), StatusIs(absl::StatusCode::kInvalidArgument));
  options = Options();
  options.max_connections_per_workspace = 0;
  EXPECT_THAT(EgressProxy::Start(options), StatusIs(absl::StatusCode::kInvalidArgument));
  // Not a socket: never deleted.
  ASSERT_TRUE(tidepool::testing::WriteFile(socket_path_, "data"));
  EXPECT_THAT(EgressProxy::Start(Options()), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_EQ(::unlink(socket_path_.c_str()), 0);
  // A stale socket is replaced.
  {
    std::unique_ptr<EgressProxy> first = StartProxy(Options());
    ASSERT_NE(first, nullptr);
  }
  std::unique_ptr<EgressProxy> second = StartProxy(Options());
  ASSERT_NE(second, nullptr);
}

TEST_F(EgressProxyTest, NeverLogsToken) {
  const std::string log_path = dir_.Join("proxy.log");
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
    OriginServer origin(OriginServer::Mode::kEcho);
    EgressProxyOptions options = Options();
    options.rules = {{"api.example.test", origin.port(), "model_server"}};
    std::unique_ptr<EgressProxy> proxy = StartProxy(std::move(options));
    ASSERT_NE(proxy, nullptr);
    const std::string authority = absl::StrCat("api.example.test:", origin.port());
    {
      Fd fd = OpenTunnel(authority);  // allowed
      ASSERT_TRUE(SendAll(fd.get(), "x"));
      ASSERT_EQ(RecvExactly(fd.get(), 1), "x");
    }
    EXPECT_EQ(Ask("CONNECT evil.example.test:443 HTTP/1.1\r\n\r\n").status, 403);  // denied
    EXPECT_EQ(Ask("CONNECT evil.example.test:443 HTTP/1.1\r\n\r\n", "BAD-SECRET-TOKEN").status,
              407);  // unverified; verify's error message contains the token
    EXPECT_EQ(Ask("GET / HTTP/1.1\r\n\r\n", kTokenWs2).status, 400);
    ASSERT_TRUE(WaitFor([&] { return proxy->OpenConnections() == 0; }));
  }
  ConfigureLogging(LogOptions());
  std::ifstream in(log_path);
  std::stringstream log;
  log << in.rdbuf();
  EXPECT_THAT(log.str(), HasSubstr("egress proxy listening"));
  EXPECT_THAT(log.str(), HasSubstr("connection denied"));
  EXPECT_THAT(log.str(), HasSubstr("preamble token refused"));
  EXPECT_THAT(log.str(), Not(HasSubstr("SECRET")));
}

}  // namespace
}  // namespace tidepool::proxy
