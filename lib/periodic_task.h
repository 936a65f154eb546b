#pragma once

#include <functional>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace tidepool {

// Runs `fn` on its own thread every `period` (first run one period after construction) until
// Stop() or destruction. Stop() wakes the thread at once and joins it; `fn` is never running
// after Stop() returns. The logic stays in `fn` (testable with a FakeClock); this is only the
// timer. Thread-safe.
class PeriodicTask {
 public:
  PeriodicTask(absl::Duration period, std::function<void()> fn);
  ~PeriodicTask();
  PeriodicTask(const PeriodicTask&) = delete;
  PeriodicTask& operator=(const PeriodicTask&) = delete;

  void Stop();
  // Runs `fn` as soon as the thread is free (once, however often it is called meanwhile), then
  // keeps the period from there.
  void RunSoon();

 private:
  void Loop();

  const absl::Duration period_;
  const std::function<void()> fn_;
  absl::Mutex mu_;
  absl::CondVar wake_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool run_soon_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace tidepool
