#pragma once

// Workspace activity seen at the edge (requests, bytes, WebSocket and terminal traffic),
// aggregated per workspace, person and source, and sent to the scaler in batches
// (ScalerService.RecordActivity), so that idle workspaces can sleep and busy ones stay awake.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "lib/clock.h"
#include "lib/periodic_task.h"

namespace tidepool::proxy {

class ActivityReporter {
 public:
  // `scaler` returns the channel to the scaler (nullptr while it cannot be found). Batches go
  // out every `interval` once Start() is called. Not owned: `clock`.
  ActivityReporter(std::function<std::shared_ptr<grpc::Channel>()> scaler, Clock& clock,
                   absl::Duration interval);
  ~ActivityReporter();

  // Adds activity: one event of `source` (a tidepool.scaler.v1.ActivitySource) carrying
  // `bytes`. Cheap and thread-safe (one map update under a lock).
  void Record(const std::string& workspace_id, const std::string& user_id, int source,
              int64_t bytes);

  // Sends what has accumulated as one RecordActivity call. What cannot be delivered is
  // dropped (activity is a hint, and the next batch carries newer activity anyway).
  void Flush();

  void Start();
  void Stop();  // flushes once more

  struct Stats {
    int64_t batches_sent = 0;
    int64_t records_sent = 0;
    int64_t batches_failed = 0;
  };
  Stats GetStats() const;

 private:
  struct Pending {
    int64_t events = 0;
    int64_t bytes = 0;
  };
  using Key = std::tuple<std::string, std::string, int>;  // workspace, user, source

  const std::function<std::shared_ptr<grpc::Channel>()> scaler_;
  Clock& clock_;
  const absl::Duration interval_;
  mutable absl::Mutex mu_;
  std::map<Key, Pending> pending_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<PeriodicTask> task_;
};

}  // namespace tidepool::proxy
