#include "services/proxy/tunnel_loop.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <unordered_map>
#include <utility>

#include "lib/net/http_relay.h"

namespace tidepool::proxy {
namespace {

// One read's worth (the edge's relay piece); a message larger than this takes several.
constexpr size_t kPiece = net::kRelayPiece;

// How long a closed tunnel may take to hand the client what the workspace sent before it.
constexpr std::chrono::seconds kCloseGrace(2);

// The epoll tag of a tunnel's client side; the upstream side is the bare pointer.
constexpr uintptr_t kClientSide = 1;

bool SetNonBlocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

bool WouldBlock(int error) { return error == EAGAIN || error == EWOULDBLOCK; }

}  // namespace

bool WebSocketFrames::Feed(const char* data, size_t n) {
  while (n > 0) {
    if (remaining_ > 0) {
      const uint64_t take = std::min<uint64_t>(remaining_, n);
      remaining_ -= take;
      data += take;
      n -= take;
      continue;
    }
    header_[header_size_++] = static_cast<unsigned char>(*data++);
    --n;
    if (header_size_ < 2) continue;
    const unsigned length7 = header_[1] & 0x7f;
    const size_t extended = length7 == 126 ? 2 : length7 == 127 ? 8 : 0;
    const size_t needed = 2 + extended + ((header_[1] & 0x80) ? 4 : 0);
    if (header_size_ < needed) continue;
    uint64_t length = length7;
    if (extended > 0) {
      length = 0;
      for (size_t i = 0; i < extended; ++i) length = (length << 8) | header_[2 + i];
    }
    const unsigned opcode = header_[0] & 0x0f;
    const bool fin = (header_[0] & 0x80) != 0;
    header_size_ = 0;
    remaining_ = length;
    if (opcode < 0x8) {  // data and continuation frames make up messages
      message_ += length;
      if (message_ > max_message_) return false;
      if (fin) message_ = 0;
    } else if (length > 125) {
      return false;
    }
  }
  return true;
}

std::string WebSocketCloseFrame(uint16_t code, absl::string_view reason) {
  reason = reason.substr(0, 123);
  std::string frame;
  frame.push_back(static_cast<char>(0x88));
  frame.push_back(static_cast<char>(2 + reason.size()));
  frame.push_back(static_cast<char>(code >> 8));
  frame.push_back(static_cast<char>(code & 0xff));
  frame.append(reason.data(), reason.size());
  return frame;
}

// ---------------------------------------------------------------------------------------------
// Tunnel

Tunnel::Tunnel(int client_fd, int upstream_fd, uint64_t max_client_message)
    : client_fd_(client_fd),
      upstream_fd_(upstream_fd),
      up_(max_client_message),
      down_(UINT64_MAX) {
  up_.buffer = std::make_unique_for_overwrite<char[]>(kPiece);
  down_.buffer = std::make_unique_for_overwrite<char[]>(kPiece);
}

Tunnel::~Tunnel() = default;

void Tunnel::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (end_ != End::kRunning) return;  // the caller may be closing its descriptors by now
  close_requested_at_ = std::chrono::steady_clock::now().time_since_epoch().count();
  close_requested_ = true;
  // The loop sees the workspace's side end, passes on what it had sent, then says goodbye.
  ::shutdown(upstream_fd_, SHUT_RDWR);
  // And the loop starts timing the goodbye, even if it is waiting on nothing from upstream.
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t ignored = ::write(wake_fd_, &one, sizeof(one));
}

Tunnel::End Tunnel::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return end_ != End::kRunning; });
  return end_;
}

// ---------------------------------------------------------------------------------------------
// The loop

struct TunnelLoop::Worker {
  int epoll_fd = -1;
  int wake_fd = -1;
  std::thread thread;
  std::mutex mu;
  bool stopping = false;                                       // guarded by mu
  std::unordered_map<Tunnel*, std::shared_ptr<Tunnel>> live;  // guarded by mu
  // True while a closed tunnel may still be draining (checked once a second).
  bool closing_waits_ = false;
  // Tunnels ended during the current batch: kept alive until the batch's other events for
  // them have been skipped.
  std::vector<std::shared_ptr<Tunnel>> ended;

  Worker() {
    epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.ptr = nullptr;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &event);
    thread = std::thread([this] { Run(); });
  }

  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stopping = true;
    }
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t ignored = ::write(wake_fd, &one, sizeof(one));
    thread.join();
    ::close(wake_fd);
    ::close(epoll_fd);
  }

  void Run() {
    epoll_event events[64];
    for (;;) {
      // Wakes at least once a second while a closed tunnel waits on a client that takes
      // nothing more.
      const int n = ::epoll_wait(epoll_fd, events, 64, closing_waits_ ? 1000 : -1);
      if (n < 0 && errno != EINTR) break;
      bool stop = false;
      for (int i = 0; i < n; ++i) {
        const uintptr_t tag = reinterpret_cast<uintptr_t>(events[i].data.ptr);
        if (tag == 0) {  // Close() on one of ours, or the destructor
          uint64_t count = 0;
          [[maybe_unused]] ssize_t ignored = ::read(wake_fd, &count, sizeof(count));
          std::lock_guard<std::mutex> lock(mu);
          stop = stopping;
          closing_waits_ = true;
          continue;
        }
        auto* tunnel = reinterpret_cast<Tunnel*>(tag & ~kClientSide);
        if (tunnel->epoll_fd_ < 0) continue;  // ended earlier in this batch
        Handle(*tunnel, (tag & kClientSide) != 0, events[i].events);
      }
      ended.clear();
      if (stop) break;
      if (closing_waits_) EndStuckTunnels();
    }
    std::vector<std::shared_ptr<Tunnel>> remaining;
    {
      std::lock_guard<std::mutex> lock(mu);
      stopping = true;
      for (auto& [raw, tunnel] : live) remaining.push_back(tunnel);
    }
    for (const std::shared_ptr<Tunnel>& tunnel : remaining) {
      Finish(*tunnel, Tunnel::End::kClientClosed, {});
    }
    ended.clear();
  }

  // A closed tunnel gets kCloseGrace to hand the client what it was sent before it is cut.
  void EndStuckTunnels() {
    const int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
    const int64_t grace =
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(kCloseGrace).count();
    std::vector<std::shared_ptr<Tunnel>> stuck;
    bool waiting = false;
    {
      std::lock_guard<std::mutex> lock(mu);
      for (auto& [raw, tunnel] : live) {
        if (!tunnel->close_requested_) continue;
        if (now - tunnel->close_requested_at_ >= grace) {
          stuck.push_back(tunnel);
        } else {
          waiting = true;
        }
      }
    }
    for (const std::shared_ptr<Tunnel>& tunnel : stuck) {
      Finish(*tunnel, Tunnel::End::kClosed, {});
    }
    ended.clear();
    closing_waits_ = waiting;
  }

  // Writes what `d` holds to `to`; false if `to` failed.
  static bool Flush(Tunnel::Direction& d, int to) {
    while (d.pending() > 0) {
      const ssize_t n = ::send(to, d.buffer.get() + d.begin, d.pending(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return WouldBlock(errno);
      }
      d.begin += static_cast<size_t>(n);
    }
    d.begin = d.end = 0;
    return true;
  }

  // Reads once from `from` into an empty `d`; false if the frames went wrong.
  static bool Fill(Tunnel& t, Tunnel::Direction& d, int from, bool up) {
    ssize_t n;
    do {
      n = ::read(from, d.buffer.get(), kPiece);
    } while (n < 0 && errno == EINTR);
    if (n == 0 || (n < 0 && !WouldBlock(errno))) {
      d.eof = true;
      return true;
    }
    if (n < 0) return true;
    d.begin = 0;
    d.end = static_cast<size_t>(n);
    if (t.on_bytes_) t.on_bytes_(d.end, up);
    return d.frames.Feed(d.buffer.get(), d.end);
  }

  void Handle(Tunnel& t, bool client_side, uint32_t events) {
    const bool readable = (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0;
    const bool writable = (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0;
    // The side the event is on: readable means its direction has news, writable means the
    // opposite direction can drain.
    Tunnel::Direction& in = client_side ? t.up_ : t.down_;
    Tunnel::Direction& out = client_side ? t.down_ : t.up_;
    const int this_fd = client_side ? t.client_fd_ : t.upstream_fd_;
    const int other_fd = client_side ? t.upstream_fd_ : t.client_fd_;
    if (writable && out.pending() > 0 && !Flush(out, this_fd)) {
      // This side cannot take more: it is gone.
      return Finish(t, client_side ? Tunnel::End::kClientClosed : Tunnel::End::kUpstreamClosed,
                    {});
    }
    if (readable && in.pending() == 0 && !in.eof) {
      if (!Fill(t, in, this_fd, client_side)) {
        return Finish(t, Tunnel::End::kMessageTooBig,
                      WebSocketCloseFrame(1009, "message too big"));
      }
      if (in.pending() > 0 && !Flush(in, other_fd)) {
        return Finish(t, client_side ? Tunnel::End::kUpstreamClosed : Tunnel::End::kClientClosed,
                      {});
      }
    }
    if (t.up_.eof) return Finish(t, Tunnel::End::kClientClosed, {});
    if (t.down_.eof && t.down_.pending() == 0) {
      if (t.close_requested_) {
        return Finish(t, Tunnel::End::kClosed, WebSocketCloseFrame(1008, "session ended"));
      }
      return Finish(t, Tunnel::End::kUpstreamClosed, {});
    }
    Rearm(t);
  }

  // Watches each side for what it can do next: read while its direction is drained, write
  // while the other direction has bytes for it.
  void Rearm(Tunnel& t) {
    constexpr uint32_t kIn = EPOLLIN;
    constexpr uint32_t kOut = EPOLLOUT;
    const uint32_t client = (t.up_.pending() == 0 && !t.up_.eof ? kIn : 0u) |
                            (t.down_.pending() > 0 ? kOut : 0u);
    const uint32_t upstream = (t.down_.pending() == 0 && !t.down_.eof ? kIn : 0u) |
                              (t.up_.pending() > 0 ? kOut : 0u);
    if (client != t.client_events_) Modify(t, t.client_fd_, t.client_events_, client, kClientSide);
    t.client_events_ = client;
    if (upstream != t.upstream_events_) {
      Modify(t, t.upstream_fd_, t.upstream_events_, upstream, 0);
    }
    t.upstream_events_ = upstream;
  }

  // A side with nothing to wait for leaves the epoll set altogether: a hung-up socket reports
  // EPOLLHUP whatever it is asked, and would otherwise wake the loop until the other side
  // drains.
  void Modify(Tunnel& t, int fd, uint32_t old_events, uint32_t events, uintptr_t side) {
    epoll_event event{};
    event.events = events;
    event.data.ptr = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(&t) | side);
    const int op = events == 0       ? EPOLL_CTL_DEL
                   : old_events == 0 ? EPOLL_CTL_ADD
                                     : EPOLL_CTL_MOD;
    ::epoll_ctl(epoll_fd, op, fd, &event);
  }

  void Finish(Tunnel& t, Tunnel::End end, const std::string& close_frame) {
    if (t.epoll_fd_ < 0) return;
    // The goodbye only fits between frames, after everything already relayed.
    if (!close_frame.empty() && t.down_.pending() == 0 && t.down_.frames.AtBoundary()) {
      [[maybe_unused]] ssize_t ignored =
          ::send(t.client_fd_, close_frame.data(), close_frame.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    if (t.client_events_ != 0) ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, t.client_fd_, nullptr);
    if (t.upstream_events_ != 0) ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, t.upstream_fd_, nullptr);
    t.epoll_fd_ = -1;
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = live.find(&t);
      if (it != live.end()) {
        ended.push_back(std::move(it->second));
        live.erase(it);
      }
    }
    std::lock_guard<std::mutex> lock(t.mu_);
    ::shutdown(t.client_fd_, SHUT_RDWR);
    ::shutdown(t.upstream_fd_, SHUT_RDWR);
    t.end_ = end;
    t.cv_.notify_all();
  }
};

TunnelLoop::TunnelLoop(int threads) {
  for (int i = 0; i < std::max(threads, 1); ++i) workers_.push_back(std::make_unique<Worker>());
}

TunnelLoop::~TunnelLoop() = default;

std::shared_ptr<Tunnel> TunnelLoop::Start(int client_fd, int upstream_fd, Options options) {
  if (!SetNonBlocking(client_fd) || !SetNonBlocking(upstream_fd)) return nullptr;
  std::shared_ptr<Tunnel> tunnel(new Tunnel(client_fd, upstream_fd, options.max_client_message));
  tunnel->on_bytes_ = std::move(options.on_bytes);
  Worker& worker = *workers_[next_.fetch_add(1) % workers_.size()];
  tunnel->epoll_fd_ = worker.epoll_fd;
  tunnel->wake_fd_ = worker.wake_fd;
  tunnel->client_events_ = EPOLLIN;
  tunnel->upstream_events_ = EPOLLIN;
  {
    std::lock_guard<std::mutex> lock(worker.mu);
    if (worker.stopping) return nullptr;
    worker.live.emplace(tunnel.get(), tunnel);
  }
  epoll_event client{};
  client.events = EPOLLIN;
  client.data.ptr = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(tunnel.get()) | kClientSide);
  epoll_event upstream{};
  upstream.events = EPOLLIN;
  upstream.data.ptr = tunnel.get();
  if (::epoll_ctl(worker.epoll_fd, EPOLL_CTL_ADD, client_fd, &client) != 0 ||
      ::epoll_ctl(worker.epoll_fd, EPOLL_CTL_ADD, upstream_fd, &upstream) != 0) {
    ::epoll_ctl(worker.epoll_fd, EPOLL_CTL_DEL, client_fd, nullptr);
    std::lock_guard<std::mutex> lock(worker.mu);
    worker.live.erase(tunnel.get());
    return nullptr;
  }
  return tunnel;
}

}  // namespace tidepool::proxy
