#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace tidepool::testing {

struct HttpResponse {
  int status = 0;
  std::string content_type;
  std::string body;
};

// A plain HTTP/1.1 request to `host_port` ("127.0.0.1:9401"); a 5 s deadline.
absl::StatusOr<HttpResponse> HttpRequest(const std::string& method, const std::string& host_port,
                                         const std::string& target);

inline absl::StatusOr<HttpResponse> HttpGet(const std::string& host_port,
                                            const std::string& target) {
  return HttpRequest("GET", host_port, target);
}

}  // namespace tidepool::testing
