#pragma once

namespace tidepool {

// Sends gRPC core's own log output (gpr_log) through lib/log.h as JSON lines with
// component "grpc", at debug level: gRPC's messages are internal detail (a failed bind, a
// client's failed TLS handshake) that our own errors and metrics already report in plain
// words, so they only show with log.level: debug. Call once, early in main(). Thread-safe.
void RouteGrpcCoreLogs();

}  // namespace tidepool
