#include "services/proxy/tunnel_loop.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tidepool::proxy {
namespace {

// A frame as a browser sends it (masked with a zero key, so the payload reads as is) or as a
// server sends it (unmasked).
std::string Frame(absl::string_view payload, bool masked, bool fin = true, uint8_t opcode = 1) {
  std::string frame;
  frame.push_back(static_cast<char>((fin ? 0x80 : 0) | opcode));
  const uint8_t mask_bit = masked ? 0x80 : 0;
  if (payload.size() < 126) {
    frame.push_back(static_cast<char>(mask_bit | payload.size()));
  } else if (payload.size() < 65536) {
    frame.push_back(static_cast<char>(mask_bit | 126));
    frame.push_back(static_cast<char>(payload.size() >> 8));
    frame.push_back(static_cast<char>(payload.size() & 0xff));
  } else {
    frame.push_back(static_cast<char>(mask_bit | 127));
    for (int shift = 56; shift >= 0; shift -= 8) {
      frame.push_back(static_cast<char>((static_cast<uint64_t>(payload.size()) >> shift) & 0xff));
    }
  }
  if (masked) frame.append(4, '\0');
  frame.append(payload.data(), payload.size());
  return frame;
}

void WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    ASSERT_GT(n, 0) << "write failed";
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// Reads exactly `n` bytes, or what arrives before EOF or a 10 s silence.
std::string ReadN(int fd, size_t n) {
  std::string out;
  char buffer[65536];
  while (out.size() < n) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10000) <= 0) break;
    const ssize_t got = ::read(fd, buffer, std::min(sizeof(buffer), n - out.size()));
    if (got <= 0) break;
    out.append(buffer, static_cast<size_t>(got));
  }
  return out;
}

// True if the next read sees EOF (or a reset) within 10 s.
bool AtEof(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 10000) <= 0) return false;
  char c;
  return ::read(fd, &c, 1) <= 0;
}

// A browser connection and a workspace connection with the tunnel between them: the test plays
// the browser on `browser` and the workspace on `workspace`.
class TunnelLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int client[2];
    int upstream[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, client), 0);
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, upstream), 0);
    browser = client[0];
    client_fd_ = client[1];
    workspace = upstream[0];
    upstream_fd_ = upstream[1];
  }

  void TearDown() override {
    for (int fd : {browser, workspace, client_fd_, upstream_fd_}) ::close(fd);
  }

  std::shared_ptr<Tunnel> Start(TunnelLoop::Options options = {}) {
    return loop_.Start(client_fd_, upstream_fd_, std::move(options));
  }

  int browser = -1;
  int workspace = -1;
  TunnelLoop loop_{2};

 private:
  int client_fd_ = -1;
  int upstream_fd_ = -1;
};

TEST_F(TunnelLoopTest, RelaysBothWaysAndEndsWhenTheBrowserLeaves) {
  std::shared_ptr<Tunnel> tunnel = Start();
  ASSERT_NE(tunnel, nullptr);
  const std::string up = Frame("hello workspace", true);
  WriteAll(browser, up);
  EXPECT_EQ(ReadN(workspace, up.size()), up);
  const std::string down = Frame("hello browser", false);
  WriteAll(workspace, down);
  EXPECT_EQ(ReadN(browser, down.size()), down);

  ::shutdown(browser, SHUT_RDWR);
  EXPECT_EQ(tunnel->Wait(), Tunnel::End::kClientClosed);
  EXPECT_TRUE(AtEof(workspace));
}

TEST_F(TunnelLoopTest, AWorkspaceThatEndsHasEverythingItSentDeliveredFirst) {
  std::shared_ptr<Tunnel> tunnel = Start();
  ASSERT_NE(tunnel, nullptr);
  // Far more than the socket buffers hold, so the relay must wait for the browser to read.
  std::string payload(3 << 20, 'x');
  for (size_t i = 0; i < payload.size(); i += 4099) payload[i] = static_cast<char>('a' + i % 26);
  const std::string down = Frame(payload, false, true, 2);
  std::thread writer([&] {
    WriteAll(workspace, down);
    ::shutdown(workspace, SHUT_RDWR);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let the buffers fill
  EXPECT_EQ(ReadN(browser, down.size()), down);
  writer.join();
  EXPECT_TRUE(AtEof(browser));
  EXPECT_EQ(tunnel->Wait(), Tunnel::End::kUpstreamClosed);
}

TEST_F(TunnelLoopTest, CloseSaysGoodbyeWith1008BetweenFrames) {
  std::shared_ptr<Tunnel> tunnel = Start();
  ASSERT_NE(tunnel, nullptr);
  const std::string down = Frame("last words", false);
  WriteAll(workspace, down);
  EXPECT_EQ(ReadN(browser, down.size()), down);
  tunnel->Close();
  EXPECT_EQ(tunnel->Wait(), Tunnel::End::kClosed);
  EXPECT_EQ(ReadN(browser, 64), WebSocketCloseFrame(1008, "session ended"));
  EXPECT_TRUE(AtEof(browser));
  EXPECT_TRUE(AtEof(workspace));
}

TEST_F(TunnelLoopTest, CloseInTheMiddleOfAFrameCutsWithoutAGarbledGoodbye) {
  std::shared_ptr<Tunnel> tunnel = Start();
  ASSERT_NE(tunnel, nullptr);
  const std::string half = Frame(std::string(100, 'y'), false).substr(0, 40);
  WriteAll(workspace, half);
  EXPECT_EQ(ReadN(browser, half.size()), half);
  tunnel->Close();
  EXPECT_EQ(tunnel->Wait(), Tunnel::End::kClosed);
  EXPECT_EQ(ReadN(browser, 64), "");  // no close frame inside the unfinished one
}

TEST_F(TunnelLoopTest, ABrowserMessageOverTheLimitEndsWith1009) {
  std::shared_ptr<Tunnel> tunnel = Start({.max_client_message = 1000, .on_bytes = {}});
  ASSERT_NE(tunnel, nullptr);
  // Fragments count towards one message: 600 + 600 > 1000.
  const std::string first = Frame(std::string(600, 'a'), true, false, 1);
  WriteAll(browser, first);
  EXPECT_EQ(ReadN(workspace, first.size()), first);
  WriteAll(browser, Frame(std::string(600, 'b'), true, true, 0));
  EXPECT_EQ(tunnel->Wait(), Tunnel::End::kMessageTooBig);
  EXPECT_EQ(ReadN(browser, 64), WebSocketCloseFrame(1009, "message too big"));
  EXPECT_TRUE(AtEof(workspace));
}

TEST_F(TunnelLoopTest, MessagesUnderTheLimitPassHoweverTheyAreSplit) {
  std::shared_ptr<Tunnel> tunnel = Start({.max_client_message = 1000, .on_bytes = {}});
  ASSERT_NE(tunnel, nullptr);
  std::string stream;
  for (int i = 0; i < 20; ++i) stream += Frame(std::string(900, 'm'), true);
  stream += Frame(std::string(125, 'p'), true, true, 9);  // a ping between messages
  std::string received;
  std::thread reader([&] { received = ReadN(workspace, stream.size()); });
  for (size_t i = 0; i < stream.size(); i += 7) WriteAll(browser, stream.substr(i, 7));
  reader.join();
  EXPECT_EQ(received, stream);
  ::shutdown(browser, SHUT_RDWR);
  EXPECT_EQ(tunnel->Wait(), Tunnel::End::kClientClosed);
}

TEST_F(TunnelLoopTest, AClosedTunnelWhoseBrowserReadsNothingStillEnds) {
  std::shared_ptr<Tunnel> tunnel = Start();
  ASSERT_NE(tunnel, nullptr);
  // The workspace floods; the browser never reads, so the relay holds bytes it cannot pass on.
  std::atomic<bool> stop{false};
  std::thread flood([&] {
    const std::string chunk = Frame(std::string(60000, 'f'), false, true, 2);
    while (!stop) {
      if (::send(workspace, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto t0 = std::chrono::steady_clock::now();
  tunnel->Close();
  EXPECT_EQ(tunnel->Wait(), Tunnel::End::kClosed);
  const auto took = std::chrono::steady_clock::now() - t0;
  stop = true;
  flood.join();
  // The goodbye's grace is 2 s; the sweep runs once a second.
  EXPECT_LT(took, std::chrono::seconds(4));
}

TEST_F(TunnelLoopTest, CloseAfterTheEndDoesNothing) {
  std::shared_ptr<Tunnel> tunnel = Start();
  ASSERT_NE(tunnel, nullptr);
  ::shutdown(browser, SHUT_RDWR);
  EXPECT_EQ(tunnel->Wait(), Tunnel::End::kClientClosed);
  tunnel->Close();
  EXPECT_EQ(tunnel->Wait(), Tunnel::End::kClientClosed);
}

TEST_F(TunnelLoopTest, CountsTheBytesOfEachDirection) {
  std::atomic<size_t> up{0};
  std::atomic<size_t> down{0};
  std::shared_ptr<Tunnel> tunnel = Start({.on_bytes = [&](size_t n, bool is_up) {
    (is_up ? up : down) += n;
  }});
  ASSERT_NE(tunnel, nullptr);
  const std::string a = Frame(std::string(300, 'u'), true);
  const std::string b = Frame(std::string(5000, 'd'), false);
  WriteAll(browser, a);
  ASSERT_EQ(ReadN(workspace, a.size()), a);
  WriteAll(workspace, b);
  ASSERT_EQ(ReadN(browser, b.size()), b);
  ::shutdown(browser, SHUT_RDWR);
  tunnel->Wait();
  EXPECT_EQ(up.load(), a.size());
  EXPECT_EQ(down.load(), b.size());
}

TEST(TunnelLoopManyTest, ManyTunnelsShareTwoLoops) {
  TunnelLoop loop(2);
  constexpr int kTunnels = 64;
  struct Pair {
    int browser, client, upstream, workspace;
  };
  std::vector<Pair> pairs(kTunnels);
  std::vector<std::shared_ptr<Tunnel>> tunnels;
  for (Pair& p : pairs) {
    int c[2];
    int u[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, c), 0);
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, u), 0);
    p = {c[0], c[1], u[1], u[0]};
    tunnels.push_back(loop.Start(p.client, p.upstream, {}));
    ASSERT_NE(tunnels.back(), nullptr);
  }
  // Each workspace echoes; each browser sends 50 messages and checks every answer.
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (Pair& p : pairs) {
    threads.emplace_back([&wrong, p] {
      for (int i = 0; i < 50; ++i) {
        const std::string message = Frame("message " + std::to_string(i), true);
        WriteAll(p.browser, message);
        const std::string at_workspace = ReadN(p.workspace, message.size());
        WriteAll(p.workspace, at_workspace);
        if (ReadN(p.browser, message.size()) != message) ++wrong;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  for (size_t i = 0; i < pairs.size(); ++i) {
    ::shutdown(pairs[i].browser, SHUT_RDWR);
    EXPECT_EQ(tunnels[i]->Wait(), Tunnel::End::kClientClosed);
    for (int fd : {pairs[i].browser, pairs[i].client, pairs[i].upstream, pairs[i].workspace}) {
      ::close(fd);
    }
  }
}

TEST(TunnelLoopManyTest, DestroyingTheLoopEndsWhatStillRuns) {
  int c[2];
  int u[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, c), 0);
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, u), 0);
  std::shared_ptr<Tunnel> tunnel;
  {
    TunnelLoop loop(1);
    tunnel = loop.Start(c[1], u[1], {});
    ASSERT_NE(tunnel, nullptr);
  }
  EXPECT_EQ(tunnel->Wait(), Tunnel::End::kClientClosed);
  EXPECT_TRUE(AtEof(c[0]));
  EXPECT_TRUE(AtEof(u[0]));
  for (int fd : {c[0], c[1], u[0], u[1]}) ::close(fd);
}

TEST(WebSocketFramesTest, BoundsMessagesAndControlFrames) {
  WebSocketFrames frames(100);
  const std::string ok = Frame(std::string(100, 'a'), true);
  EXPECT_TRUE(frames.Feed(ok.data(), ok.size()));
  EXPECT_TRUE(frames.AtBoundary());
  const std::string partial = ok.substr(0, 50);
  EXPECT_TRUE(frames.Feed(partial.data(), partial.size()));
  EXPECT_FALSE(frames.AtBoundary());
  const std::string rest = ok.substr(50);
  EXPECT_TRUE(frames.Feed(rest.data(), rest.size()));
  EXPECT_TRUE(frames.AtBoundary());
  const std::string big = Frame(std::string(101, 'a'), true);
  EXPECT_FALSE(WebSocketFrames(100).Feed(big.data(), big.size()));
  // A control frame's payload is at most 125 bytes (RFC 6455 section 5.5).
  const std::string ping = Frame(std::string(126, 'p'), true, true, 9);
  EXPECT_FALSE(WebSocketFrames(UINT64_MAX).Feed(ping.data(), ping.size()));
  // 64-bit lengths are read whole.
  const std::string large = Frame(std::string(70000, 'l'), false, true, 2);
  WebSocketFrames unbounded(UINT64_MAX);
  EXPECT_TRUE(unbounded.Feed(large.data(), large.size()));
  EXPECT_TRUE(unbounded.AtBoundary());
}

}  // namespace
}  // namespace tidepool::proxy
