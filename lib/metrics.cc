#include "lib/metrics.h"

#include <sstream>

#include "prometheus/text_serializer.h"

namespace tidepool {

std::string SerializeMetrics(prometheus::Registry& registry) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry.Collect());
  return out.str();
}

GrpcServerMetrics::GrpcServerMetrics(prometheus::Registry& registry)
    : started_(prometheus::BuildCounter()
                   .Name("tidepool_grpc_server_started_total")
                   .Help("RPCs started on the server.")
                   .Register(registry)),
      handled_(prometheus::BuildCounter()
                   .Name("tidepool_grpc_server_handled_total")
                   .Help("RPCs completed on the server, by status code.")
                   .Register(registry)),
      errors_(prometheus::BuildCounter()
                  .Name("tidepool_grpc_server_errors_total")
                  .Help("RPCs completed with a non-OK status, by status code.")
                  .Register(registry)),
      latency_(prometheus::BuildHistogram()
                   .Name("tidepool_grpc_server_handling_seconds")
                   .Help("Time from receiving an RPC's headers to sending its status.")
                   .Register(registry)) {}

void GrpcServerMetrics::Started(absl::string_view service, absl::string_view method) {
  started_.Add({{"grpc_service", std::string(service)}, {"grpc_method", std::string(method)}})
      .Increment();
}

void GrpcServerMetrics::Handled(absl::string_view service, absl::string_view method,
                                absl::string_view code, absl::Duration latency) {
  const std::string svc(service);
  const std::string m(method);
  handled_.Add({{"grpc_service", svc}, {"grpc_method", m}, {"grpc_code", std::string(code)}})
      .Increment();
  if (code != "OK") {
    errors_.Add({{"grpc_service", svc}, {"grpc_method", m}, {"grpc_code", std::string(code)}})
        .Increment();
  }
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  latency_.Add({{"grpc_service", svc}, {"grpc_method", m}}, kBuckets)
      .Observe(absl::ToDoubleSeconds(latency));
}

}  // namespace tidepool
