#pragma once

namespace tidepool {

// Sends the log output of gRPC core (gpr_log) and of protobuf (GOOGLE_LOG) through
// lib/log.h as JSON lines with component "grpc" or "protobuf", at debug level: their
// messages are internal detail (a failed bind, a client's failed TLS handshake, a tampered
// record that does not parse) that our own errors and metrics already report in plain words,
// so they only show with log.level: debug. Call once, early in main(). Thread-safe.
void RouteLibraryLogs();

}  // namespace tidepool
