#pragma once

// A small outbound HTTP(S) client for calling identity providers (discovery documents,
// JWKS, token endpoints, GitHub's REST API), built on libcurl.
//
// Safety rules it enforces for every request:
//   - Only http and https; plain http only to a loopback host (127.0.0.0/8, ::1, localhost),
//     so that a misconfiguration cannot send a client secret in clear over a network.
//   - TLS peers are verified against the system's CA store (never switched off).
//   - Redirects are never followed (an IdP endpoint that redirects is an error).
//   - A hard timeout and a cap on the response body; a larger body is an error, not a
//     truncated success.
// Request bodies and headers are never logged; error messages name the URL's scheme, host
// and path only (never its query, which may hold a code or token).
//
// Thread-safe: every call uses its own curl handle.

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace tidepool {

struct HttpRequestOptions {
  absl::Duration timeout = absl::Seconds(10);
  size_t max_response_bytes = 1 << 20;
  // Extra request headers ("Name", "value").
  std::vector<std::pair<std::string, std::string>> headers;
};

struct HttpResponse {
  int status = 0;
  std::string content_type;
  std::string body;
};

// GETs `url`. Any HTTP status is a successful result (callers interpret it); errors are
// INVALID_ARGUMENT for a refused URL (bad scheme, clear-text to a non-loopback host) and
// UNAVAILABLE for connection, TLS, timeout and oversized-body failures.
absl::StatusOr<HttpResponse> HttpGet(const std::string& url, const HttpRequestOptions& options = {});

// POSTs an application/x-www-form-urlencoded body built from `form` (each name and value
// percent-encoded). Errors as HttpGet.
absl::StatusOr<HttpResponse> HttpPostForm(
    const std::string& url, const std::vector<std::pair<std::string, std::string>>& form,
    const HttpRequestOptions& options = {});

// Percent-encodes `text` for a URL query or form value (RFC 3986 unreserved characters are
// kept, everything else is %XX).
std::string UrlEncode(absl::string_view text);

// Appends `params` to `url` as a query string (after '?' or '&' as needed).
std::string AppendQuery(std::string url,
                        const std::vector<std::pair<std::string, std::string>>& params);

// The URL without query or fragment, for messages.
std::string UrlForMessages(absl::string_view url);

// Checks that `url` is an absolute http(s) URL with a host, and that a plain-http URL points
// at a loopback host. INVALID_ARGUMENT naming `what` otherwise.
absl::Status CheckOutboundUrl(absl::string_view url, absl::string_view what);

}  // namespace tidepool
