#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace tidepool {

// Converts a core absl::Status into the grpc::Status returned at a service's edge. The absl
// and gRPC codes share numbers 0-16, so the code is a cast. INTERNAL and UNKNOWN messages are
// replaced by a generic text carrying a fresh request id; the full status is written to the
// server log under that id, so nothing internal reaches a client. Thread-safe.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Converts a grpc::Status received from another service into an absl::Status (code cast,
// message kept). Thread-safe.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace tidepool
