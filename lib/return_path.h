#pragma once

// Validation of post-sign-in and post-sign-out return paths (open-redirect defence,
// SECURITY-TESTS.md 2.1 #12 and #26).

#include <string>

#include "absl/strings/string_view.h"

namespace tidepool {

// True if `path` is safe to send a browser to after sign-in: a same-origin absolute path
// ("/workspaces?tab=files#top"). Accepted: printable ASCII only, at most 2048 bytes,
// starting with exactly one "/" that is not followed by "/" or "\" (also after decoding
// percent-escapes and after dropping characters browsers ignore), no backslash anywhere,
// no control characters, spaces or non-ASCII (so no tab/newline tricks and no U+3002
// "dots"), and well-formed percent-escapes that do not decode to control characters,
// "/" or "\" at the start. Everything else — absolute URLs, scheme-relative "//host",
// "javascript:", "user@host", numeric hosts — is refused.
bool IsSafeReturnPath(absl::string_view path);

// `path` if IsSafeReturnPath(path), "/" for an empty path, else "/" as well (for callers that
// must degrade instead of failing, such as the proxy's sign-out redirect).
std::string SafeReturnPathOrRoot(absl::string_view path);

}  // namespace tidepool
