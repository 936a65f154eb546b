#pragma once

#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace tidepool {

// Renders a registry in the Prometheus text exposition format (what /metrics serves).
std::string SerializeMetrics(prometheus::Registry& registry);

// Per-RPC server metrics, labelled by grpc_service and grpc_method (and grpc_code once
// handled), named like the go-grpc-prometheus conventions so standard dashboards work:
//   tidepool_grpc_server_started_total, tidepool_grpc_server_handled_total,
//   tidepool_grpc_server_errors_total (non-OK codes only),
//   tidepool_grpc_server_handling_seconds (histogram).
// The registry must outlive this object. Thread-safe.
class GrpcServerMetrics {
 public:
  explicit GrpcServerMetrics(prometheus::Registry& registry);

  void Started(absl::string_view service, absl::string_view method);
  void Handled(absl::string_view service, absl::string_view method, absl::string_view code,
               absl::Duration latency);

 private:
  prometheus::Family<prometheus::Counter>& started_;
  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Counter>& errors_;
  prometheus::Family<prometheus::Histogram>& latency_;
};

}  // namespace tidepool
