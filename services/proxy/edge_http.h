#pragma once

// The browser edge's pure rules, kept apart from sockets so that each is tested on its own:
// cookies, canonical paths, hosts and origins, preview host names, and the signed values the
// preview flow hands around (tickets and preview cookies).

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace tidepool::proxy {

// The cookies the edge sets. With `secure` (an https public URL) every name carries the
// `__Host-` prefix, so browsers insist on Secure, Path=/ and no Domain: host-only cookies that
// a sibling host cannot toss. Without it (the development mode for plain-HTTP loopback) the
// same names without the prefix.
struct CookieNames {
  std::string session;  // the session token (HttpOnly)
  std::string refresh;  // the refresh token (HttpOnly)
  std::string csrf;     // the double-submit CSRF value (readable by the page's script)
  std::string signin;   // binds a redirect sign-in to this browser (HttpOnly, short-lived)
  std::string preview;  // on a preview host only: that host's preview session (HttpOnly)
};
CookieNames CookieNamesFor(bool secure);

// True for a cookie name the platform sets (with or without the prefix): such cookies are
// removed from every request before it reaches a workspace.
bool IsPlatformCookie(absl::string_view name);

// Parses a Cookie header value ("a=1; b=2"). A name that occurs more than once maps to
// nullopt-like absence: it is left out, so that a tossed duplicate can never win.
std::map<std::string, std::string> ParseCookies(absl::string_view header);

// The Cookie header value with every platform cookie removed ("" if none is left).
std::string StripPlatformCookies(absl::string_view header);

// A Set-Cookie value: Path=/, HttpOnly when `http_only`, Secure when `secure`, the given
// SameSite ("Lax", "Strict", "None"), Max-Age (0 deletes the cookie).
std::string SetCookieValue(absl::string_view name, absl::string_view value, absl::Duration max_age,
                           bool secure, bool http_only, absl::string_view same_site = "Lax");

// True if `path` (the request target's path, without the query) is in canonical form, the only
// form the edge routes: starts with "/", only printable ASCII, no "//", no "." or ".."
// segment, no backslash, no ";" , and no percent-encoded "/", "\", ".", NUL or control
// character, and every "%" starts a well-formed escape. Non-canonical paths get 400, so that
// authorization and routing always see the very string that is forwarded.
bool IsCanonicalPath(absl::string_view path);

// Splits a request target into path and query ("" when absent). INVALID_ARGUMENT for anything
// but origin form ("/..."): absolute form, authority form and "*" are refused at the edge.
absl::StatusOr<std::pair<std::string, std::string>> SplitTarget(absl::string_view target);

// The value of query parameter `name` (percent-decoded, "+" as space), or nullopt if absent.
// A parameter given twice is nullopt too.
std::optional<std::string> QueryParam(absl::string_view query, absl::string_view name);

// Percent-encodes everything but unreserved characters (RFC 3986), for query values.
std::string UrlEncode(absl::string_view value);

// Lower-cases a Host header value and checks it is a plausible "host[:port]" (letters, digits,
// "-", ".", "_", or a bracketed IPv6 literal). nullopt if not.
std::optional<std::string> NormalizeHost(absl::string_view host);

// Splits a normalized "host[:port]" (see NormalizeHost) into host and port (0 when absent); an
// IPv6 host keeps its brackets.
std::pair<std::string, int> SplitHostPort(const std::string& authority);

// The parts of an absolute http(s) URL that name its origin.
struct UrlParts {
  std::string scheme;     // "http" or "https"
  std::string host;       // lower case, without the port (an IPv6 literal keeps its brackets)
  std::string authority;  // host[:port] as written, lower case
  int port = 0;           // explicit, else the scheme's default
};
// INVALID_ARGUMENT naming the problem for anything but "http(s)://host[:port][/...]".
absl::StatusOr<UrlParts> ParseHttpUrl(absl::string_view url);

// A preview host: "<port>-<workspace suffix>.<preview domain>", where the suffix is the 26
// base32 characters after "ws_" and `preview_domain` may carry ":port" (development).
struct PreviewTarget {
  int port = 0;
  std::string workspace_id;  // "ws_" + suffix
};
std::optional<PreviewTarget> ParsePreviewHost(absl::string_view host,
                                              absl::string_view preview_domain);
std::string PreviewHostFor(int port, absl::string_view workspace_id,
                           absl::string_view preview_domain);

// True for "ws_" + 26 characters of [a-z2-7].
bool IsValidWorkspaceId(absl::string_view workspace_id);

// A value the edge signs for itself with an HMAC-SHA256 key: a purpose ("ticket",
// "preview"), the fields it binds and an expiry. Encoded as base64url(payload) "."
// base64url(mac); the payload is the purpose, the fields and the expiry joined by '\n' (fields
// must not contain '\n').
std::string SignEdgeValue(absl::string_view key, absl::string_view purpose,
                          const std::vector<std::string>& fields, absl::Time expires);
// The fields, if `value` was signed under `key` for `purpose`, has `field_count` fields and has
// not expired at `now`. UNAUTHENTICATED otherwise, with a generic message.
absl::StatusOr<std::vector<std::string>> VerifyEdgeValue(absl::string_view key,
                                                         absl::string_view purpose,
                                                         absl::string_view value,
                                                         size_t field_count, absl::Time now);

// Minimal HTML escaping for the few pages the edge renders itself.
std::string HtmlEscape(absl::string_view text);

}  // namespace tidepool::proxy
