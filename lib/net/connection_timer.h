#pragma once

// The one timer of a relayed connection (connect, request head, idle or linger, by phase), for
// the egress relay and the egress proxy: arming it again replaces the previous expiry, and a
// stale expiry never fires.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include <boost/asio/steady_timer.hpp>

#include "absl/time/time.h"

namespace tidepool::net {

// Durations at or above this never fire (the options' "no timeout").
inline constexpr absl::Duration kNeverTimeout = absl::Hours(24 * 365 * 10);

// The steady-clock interval for `d`; nullopt when it never fires.
inline std::optional<std::chrono::steady_clock::duration> TimerInterval(absl::Duration d) {
  if (d >= kNeverTimeout) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      absl::ToChronoNanoseconds(d));
}

// `Timer` is a boost::asio::steady_timer, possibly rebound to a strand. Not thread-safe: use
// it from the connection's executor only. `Owner` (held by the pending wait) provides
// bool Closed() const; an expiry after it closed is dropped.
template <typename Timer>
class ConnectionTimer {
 public:
  // Constructs the timer (from an io_context or an executor).
  template <typename... Args>
  explicit ConnectionTimer(Args&&... args) : timer_(std::forward<Args>(args)...) {}

  // Calls `on_expiry` after `after`; a "never" duration disarms instead.
  template <typename Owner, typename F>
  void Arm(std::shared_ptr<Owner> owner, absl::Duration after, F on_expiry) {
    std::optional<std::chrono::steady_clock::duration> interval = TimerInterval(after);
    if (!interval.has_value()) {
      Disarm();
      return;
    }
    ArmAt(std::move(owner), std::chrono::steady_clock::now() + *interval, std::move(on_expiry));
  }

  template <typename Owner, typename F>
  void ArmAt(std::shared_ptr<Owner> owner, std::chrono::steady_clock::time_point deadline,
             F on_expiry) {
    const uint64_t generation = ++generation_;
    timer_.expires_at(deadline);
    timer_.async_wait([this, owner = std::move(owner), generation,
                       on_expiry = std::move(on_expiry)](boost::system::error_code ec) mutable {
      // A wait that had already completed when the timer was re-armed carries no error, so
      // the generation tells a stale expiry apart.
      if (ec || generation != generation_ || owner->Closed()) return;
      on_expiry();
    });
  }

  void Disarm() {
    ++generation_;
    timer_.cancel();
  }

 private:
  Timer timer_;
  uint64_t generation_ = 0;
};

}  // namespace tidepool::net
