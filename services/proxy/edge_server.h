#pragma once

// The browser edge: the one HTTP/1.1 and WebSocket door every browser request passes through.
// It signs people in (driving auth's flows and setting the session cookies), verifies the
// session on every request, maps /api/v1 to gRPC, forwards workspace routes and previews to the
// workspace's supervisor (waking a sleeping workspace first), serves the web UI's static
// files, and reports activity to the scaler. docs/browser-edge.md describes the routes.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "services/proxy/api_gateway.h"
#include "services/proxy/connection_registry.h"
#include "services/proxy/session_authority.h"

namespace prometheus {
class Registry;
}

namespace tidepool::proxy {

// One route as ListRoutes shows it (tidepool.proxy.v1.Route).
struct RouteInfo {
  int kind = 0;  // tidepool.proxy.v1.RouteKind
  std::string host;
  std::string path_prefix;
  std::string upstream;
  bool requires_session = false;
  bool websocket = false;
};

struct EdgeOptions {
  std::string listen_address = "127.0.0.1";
  int port = 8080;  // 0: any free port (see EdgeServer::port())
  // Where browsers reach the platform ("https://tidepool.example.com"): its origin is the one
  // accepted Origin, and its scheme decides the cookie mode.
  std::string public_url = "http://127.0.0.1:8080";
  // The plain-HTTP development mode: cookies without Secure and without the __Host- prefix.
  // Only allowed when public_url is http:// on a loopback host.
  bool dev_mode = false;
  // Previews live at <port>-<workspace suffix>.<preview_domain> ("preview.example.net"; in
  // development it may carry the port, "preview.localhost:8080"). Empty: no previews.
  std::string preview_domain;
  // The web UI's built files; empty or missing: a small built-in page.
  std::string web_root;
  // Address ranges of the ingresses in front ("10.0.0.0/8"): a connection from one of them
  // gets the last X-Forwarded-For address as the person's address.
  std::vector<std::string> trusted_forwarders;
  // The key that signs preview tickets and preview cookies (32 bytes).
  std::string preview_key;
  size_t max_header_bytes = 16 * 1024;
  size_t max_api_body_bytes = 1024 * 1024;
  size_t max_form_body_bytes = 256 * 1024;
  int max_websockets_per_user = 64;
  uint64_t max_websocket_message_bytes = 16 * 1024 * 1024;
  absl::Duration header_timeout = absl::Seconds(30);
  absl::Duration keep_alive_idle = absl::Seconds(60);
  absl::Duration websocket_idle = absl::Minutes(5);
  // How long a request for a sleeping workspace is held while it wakes.
  absl::Duration wake_timeout = absl::Seconds(60);
  absl::Duration preview_cookie_lifetime = absl::Hours(1);
};

// The services the edge calls. Channels carry the proxy's mTLS identity.
struct EdgeBackends {
  // The channel to a platform service ("auth", "provisioner"); nullptr while it cannot be
  // found. Called per call: must be cheap and thread-safe.
  std::function<std::shared_ptr<grpc::Channel>(absl::string_view service)> channel_for;
  SessionAuthority* sessions = nullptr;  // not owned
  ApiGateway* api = nullptr;             // not owned
  // Where workspace activity goes (batched by the caller); may be empty.
  std::function<void(const std::string& workspace_id, const std::string& user_id, int source,
                     int64_t bytes)>
      on_activity;
  prometheus::Registry* metrics = nullptr;  // served on /metrics when set
};

class EdgeServer {
 public:
  // Validates the options, binds and starts serving. INVALID_ARGUMENT for bad options (the
  // message names the setting), UNAVAILABLE if the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<EdgeServer>> Start(EdgeOptions options,
                                                           EdgeBackends backends);
  ~EdgeServer();

  // The bound port.
  int port() const;
  ConnectionRegistry& connections();
  // The routes, in match order, for ListRoutes.
  std::vector<RouteInfo> Routes() const;
  // Stops accepting, closes every connection and waits (up to 2 s) for them to finish.
  void Stop();
  // Closes the open connections a revocation ends (WebSockets get close code 1008). The
  // service wires SessionAuthority's revocation listener here.
  void OnRevocation(const auth::v1::Revocation& revocation);

  class Impl;

 private:
  explicit EdgeServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tidepool::proxy
