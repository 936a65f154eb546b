#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/impl/service_type.h"
#include "grpcpp/server.h"
#include "lib/admin_http_server.h"
#include "lib/metrics.h"
#include "lib/pki.h"
#include "prometheus/registry.h"

namespace tidepool {

// One gRPC service to host.
struct HostedService {
  // Full proto name, e.g. "tidepool.auth.v1.AuthService": the health-check key.
  std::string full_name = {};
  // Appended to UNIMPLEMENTED replies from methods not built yet, saying what is missing.
  std::string pending_note = {};
  std::unique_ptr<grpc::Service> service = nullptr;
  // Called once after the server has stopped serving (e.g. to sign a final checkpoint and
  // stop background work). Optional.
  std::function<void()> on_stopped = nullptr;
  // Whatever the service needs alive while it is hosted (its store, its timers). Released
  // when the runner is destroyed, after the server has stopped.
  std::shared_ptr<void> state = nullptr;
};

// How and where to serve.
struct ServerRunnerOptions {
  // The platform component name ("auth"): label and log field.
  std::string component;
  std::string grpc_address = "127.0.0.1";
  int grpc_port = 0;
  std::string metrics_address = "127.0.0.1";
  int metrics_port = 0;
  // The registry served on /metrics; one is created when null. Shared so the services built
  // before the runner can register their own metrics in it.
  std::shared_ptr<prometheus::Registry> registry;
  // This server's certificate, key and the platform CA. Every RPC requires a client
  // certificate from the same CA; the method allowlists (lib/authz.h) decide who may call.
  TlsIdentity tls;
};

// Serves a set of gRPC services the Tidepool way: mutual TLS with per-method caller
// allowlists, grpc.health.v1 (per full service name and "" for the process), server
// reflection, per-RPC Prometheus metrics, clear UNIMPLEMENTED messages, and the plain-HTTP
// /healthz, /readyz and /metrics port. Thread-safe after Start().
class ServerRunner {
 public:
  // Starts serving. Errors: UNAVAILABLE (with address) if a port cannot be bound,
  // NOT_FOUND if a service's descriptor is not linked in, INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<ServerRunner>> Start(ServerRunnerOptions options,
                                                             std::vector<HostedService> services);
  ~ServerRunner();

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  const ServerRunnerOptions& options() const { return options_; }
  const std::vector<std::string>& service_names() const { return service_names_; }
  // The registry served on /metrics; services add their own metrics to it.
  prometheus::Registry& registry() { return *registry_; }

  // Marks every hosted service NOT_SERVING (health and /readyz), then stops accepting RPCs,
  // lets in-flight ones finish until `deadline` and cancels the rest, then stops the HTTP
  // port. An absolute deadline lets several runners share one grace period. Idempotent.
  void Shutdown(absl::Time deadline);

 private:
  ServerRunner() = default;

  ServerRunnerOptions options_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<GrpcServerMetrics> metrics_;
  std::vector<HostedService> services_;
  std::vector<std::string> service_names_;
  std::map<std::string, std::string> pending_notes_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<AdminHttpServer> http_;
  std::atomic<bool> ready_{false};
  bool shut_down_ = false;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
};

}  // namespace tidepool
