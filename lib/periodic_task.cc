#include "lib/periodic_task.h"

#include <utility>

namespace tidepool {

PeriodicTask::PeriodicTask(absl::Duration period, std::function<void()> fn)
    : period_(period), fn_(std::move(fn)), thread_([this] { Loop(); }) {}

PeriodicTask::~PeriodicTask() { Stop(); }

void PeriodicTask::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    wake_.SignalAll();
  }
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) {
    thread_.join();
  }
}

void PeriodicTask::RunSoon() {
  absl::MutexLock lock(&mu_);
  run_soon_ = true;
  wake_.SignalAll();
}

void PeriodicTask::Loop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      const absl::Time deadline = absl::Now() + period_;
      while (!stopping_ && !run_soon_ && absl::Now() < deadline) {
        wake_.WaitWithDeadline(&mu_, deadline);
      }
      if (stopping_) {
        return;
      }
      run_soon_ = false;
    }
    fn_();
  }
}

}  // namespace tidepool
