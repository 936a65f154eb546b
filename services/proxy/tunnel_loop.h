// Relays upgraded connections (WebSockets, terminals) between a browser and a workspace on a
// few epoll threads, the way nginx's workers do, instead of two blocking threads per socket:
// one wake-up serves every connection that is ready, which is what keeps a busy edge's CPU
// per message down.
//
// The relay never buffers a message: it watches frame boundaries (RFC 6455 section 5.2) only
// to bound the client's message size and to end a connection with a proper close frame.
//
// Thread-safety: TunnelLoop::Start and Tunnel's methods may be called from any thread. The
// callbacks run on a loop thread, one tunnel's always on the same one, never concurrently.
#ifndef TIDEPOOL_SERVICES_PROXY_TUNNEL_LOOP_H_
#define TIDEPOOL_SERVICES_PROXY_TUNNEL_LOOP_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/string_view.h"

namespace tidepool::proxy {

// Recognizes the frame boundaries of one direction of a WebSocket without buffering payloads.
class WebSocketFrames {
 public:
  explicit WebSocketFrames(uint64_t max_message) : max_message_(max_message) {}

  // Accounts for `n` more bytes; false once a message grows past the limit or a control frame
  // is over 125 bytes.
  bool Feed(const char* data, size_t n);

  // True between frames.
  bool AtBoundary() const { return remaining_ == 0 && header_size_ == 0; }

 private:
  const uint64_t max_message_;
  unsigned char header_[14] = {};
  size_t header_size_ = 0;
  uint64_t remaining_ = 0;
  uint64_t message_ = 0;
};

// A server-to-client close frame with a status code and a short reason (at most 123 bytes).
std::string WebSocketCloseFrame(uint16_t code, absl::string_view reason);

class TunnelLoop;

// One relayed connection. The descriptors stay owned by the caller, who must keep them open
// until Wait() returns.
class Tunnel {
 public:
  // How the tunnel ended.
  enum class End {
    kRunning,
    kClientClosed,     // the browser's side ended (or failed)
    kUpstreamClosed,   // the workspace's side ended (or failed)
    kClosed,           // Close() (revocation, deadline, shutdown): 1008 sent at a boundary
    kMessageTooBig,    // a client message over the limit: 1009 sent at a boundary
  };

  Tunnel(const Tunnel&) = delete;
  Tunnel& operator=(const Tunnel&) = delete;
  ~Tunnel();

  // Ends the tunnel: the workspace's side is shut at once; what it had already sent still
  // reaches the client, then a 1008 close frame if the client's stream is between frames.
  // Idempotent; a no-op once the tunnel has ended.
  void Close();

  // Blocks until the tunnel has ended and its callbacks will not run again.
  End Wait();

 private:
  friend class TunnelLoop;
  struct Direction {
    explicit Direction(uint64_t max_message) : frames(max_message) {}
    std::unique_ptr<char[]> buffer;
    size_t begin = 0;  // pending bytes are [begin, end)
    size_t end = 0;
    bool eof = false;
    WebSocketFrames frames;
    size_t pending() const { return end - begin; }
  };

  Tunnel(int client_fd, int upstream_fd, uint64_t max_client_message);

  const int client_fd_;
  const int upstream_fd_;
  Direction up_;    // client -> upstream
  Direction down_;  // upstream -> client
  std::function<void(size_t n, bool up)> on_bytes_;
  int epoll_fd_ = -1;  // -1 once ended
  int wake_fd_ = -1;
  uint32_t client_events_ = 0;
  uint32_t upstream_events_ = 0;
  std::atomic<bool> close_requested_{false};
  std::atomic<int64_t> close_requested_at_{0};  // steady_clock ticks

  std::mutex mu_;
  std::condition_variable cv_;
  End end_ = End::kRunning;  // guarded by mu_
};

class TunnelLoop {
 public:
  // `threads` epoll loops (at least 1); tunnels are spread across them.
  explicit TunnelLoop(int threads);
  // Ends every tunnel still running (as if its client closed) and joins the threads.
  ~TunnelLoop();

  TunnelLoop(const TunnelLoop&) = delete;
  TunnelLoop& operator=(const TunnelLoop&) = delete;

  struct Options {
    // Client messages (the sum of a message's fragments) larger than this end the tunnel with
    // 1009.
    uint64_t max_client_message = UINT64_MAX;
    // Called after bytes moved (`up`: client to upstream). Optional.
    std::function<void(size_t n, bool up)> on_bytes;
  };

  // Starts relaying between two connected stream sockets (switched to non-blocking). Fails
  // (nullptr) only if the descriptors cannot be watched.
  std::shared_ptr<Tunnel> Start(int client_fd, int upstream_fd, Options options);

 private:
  struct Worker;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<size_t> next_{0};
};

}  // namespace tidepool::proxy

#endif  // TIDEPOOL_SERVICES_PROXY_TUNNEL_LOOP_H_
