#pragma once

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace tidepool {

// The one seam for time. Inject a Clock& wherever code needs "now"; tests pass a FakeClock.
// Implementations must be thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() = 0;
};

// The wall clock. Stateless and thread-safe; build one in main.cc and pass it by reference.
class RealClock final : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
};

}  // namespace tidepool
