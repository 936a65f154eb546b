#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace tidepool {

// The plain-HTTP side port every service serves for Kubernetes probes and Prometheus, which
// cannot present client certificates:
//   GET /healthz  200 "ok" while the process runs (liveness)
//   GET /readyz   200 "ready" once `ready()` returns true, else 503 (readiness)
//   GET /metrics  the registry in Prometheus text format
// Anything else is 404; methods other than GET and HEAD are 405. It serves no tidepool data:
// bind it to loopback (the default) or a cluster-internal address. One I/O thread; each
// connection gets a 10 s deadline per request. Thread-safe.
class AdminHttpServer {
 public:
  // `registry` must outlive the server.
  AdminHttpServer(std::shared_ptr<prometheus::Registry> registry, std::function<bool()> ready);
  ~AdminHttpServer();
  AdminHttpServer(const AdminHttpServer&) = delete;
  AdminHttpServer& operator=(const AdminHttpServer&) = delete;

  // Binds `address:port` (port 0 picks a free one) and starts serving. Returns the bound port,
  // or UNAVAILABLE if the address cannot be bound. Call once.
  absl::StatusOr<int> Start(const std::string& address, int port);

  // Stops accepting, closes open connections and joins the I/O thread. Idempotent.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tidepool
