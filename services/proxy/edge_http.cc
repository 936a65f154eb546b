#include "services/proxy/edge_http.h"

#include <algorithm>
#include <cctype>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "lib/crypto/crypto.h"
#include "lib/text.h"
#include "services/auth/jose.h"

namespace tidepool::proxy {
namespace {

constexpr absl::string_view kHostPrefix = "__Host-";
constexpr absl::string_view kCookieStem = "tidepool_";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

CookieNames CookieNamesFor(bool secure) {
  const std::string prefix = secure ? std::string(kHostPrefix) : "";
  return CookieNames{.session = prefix + "tidepool_session",
                     .refresh = prefix + "tidepool_refresh",
                     .csrf = prefix + "tidepool_csrf",
                     .signin = prefix + "tidepool_signin",
                     .preview = prefix + "tidepool_preview"};
}

bool IsPlatformCookie(absl::string_view name) {
  absl::ConsumePrefix(&name, kHostPrefix);
  return absl::StartsWith(name, kCookieStem);
}

std::map<std::string, std::string> ParseCookies(absl::string_view header) {
  std::map<std::string, std::string> cookies;
  std::map<std::string, int> seen;
  for (absl::string_view part : absl::StrSplit(header, ';')) {
    part = absl::StripAsciiWhitespace(part);
    const size_t eq = part.find('=');
    if (eq == absl::string_view::npos || eq == 0) continue;
    std::string name(absl::StripAsciiWhitespace(part.substr(0, eq)));
    absl::string_view value = absl::StripAsciiWhitespace(part.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    if (++seen[name] == 1) cookies[name] = std::string(value);
  }
  for (const auto& [name, count] : seen) {
    if (count > 1) cookies.erase(name);
  }
  return cookies;
}

std::string StripPlatformCookies(absl::string_view header) {
  std::vector<absl::string_view> kept;
  for (absl::string_view part : absl::StrSplit(header, ';')) {
    absl::string_view trimmed = absl::StripAsciiWhitespace(part);
    if (trimmed.empty()) continue;
    const size_t eq = trimmed.find('=');
    absl::string_view name =
        absl::StripAsciiWhitespace(trimmed.substr(0, eq == absl::string_view::npos ? 0 : eq));
    if (eq == absl::string_view::npos || IsPlatformCookie(name)) continue;
    kept.push_back(trimmed);
  }
  return absl::StrJoin(kept, "; ");
}

std::string SetCookieValue(absl::string_view name, absl::string_view value, absl::Duration max_age,
                           bool secure, bool http_only, absl::string_view same_site) {
  std::string cookie = absl::StrCat(name, "=", value, "; Path=/; Max-Age=",
                                    std::max<int64_t>(0, absl::ToInt64Seconds(max_age)));
  if (secure) absl::StrAppend(&cookie, "; Secure");
  if (http_only) absl::StrAppend(&cookie, "; HttpOnly");
  absl::StrAppend(&cookie, "; SameSite=", same_site);
  return cookie;
}

bool IsCanonicalPath(absl::string_view path) {
  if (path.empty() || path.front() != '/' || path.size() > 8192) return false;
  for (size_t i = 0; i < path.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(path[i]);
    if (c <= 0x20 || c >= 0x7f || c == '\\' || c == ';') return false;
    if (c == '%') {
      if (i + 2 >= path.size()) return false;
      const int hi = HexValue(path[i + 1]);
      const int lo = HexValue(path[i + 2]);
      if (hi < 0 || lo < 0) return false;
      const int decoded = hi * 16 + lo;
      // Encoded separators, dots, NUL and controls would mean something else after a decode.
      if (decoded == '/' || decoded == '\\' || decoded == '.' || decoded == '%' ||
          decoded < 0x20 || decoded == 0x7f || decoded >= 0x80) {
        return false;
      }
    }
  }
  for (absl::string_view segment : absl::StrSplit(path.substr(1), '/')) {
    if (segment == "." || segment == "..") return false;
  }
  // An empty segment anywhere but at the very end is a "//".
  return !absl::StrContains(path, "//");
}

absl::StatusOr<std::pair<std::string, std::string>> SplitTarget(absl::string_view target) {
  if (target.empty() || target.front() != '/') {
    return absl::InvalidArgumentError("the request target must be a path");
  }
  const size_t mark = target.find('?');
  if (mark == absl::string_view::npos) return std::make_pair(std::string(target), std::string());
  return std::make_pair(std::string(target.substr(0, mark)), std::string(target.substr(mark + 1)));
}

std::optional<std::string> QueryParam(absl::string_view query, absl::string_view name) {
  std::optional<std::string> found;
  for (absl::string_view pair : absl::StrSplit(query, '&')) {
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) != name) continue;
    if (found.has_value()) return std::nullopt;  // given twice
    std::string value;
    absl::string_view raw = eq == absl::string_view::npos ? "" : pair.substr(eq + 1);
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '+') {
        value.push_back(' ');
      } else if (raw[i] == '%' && i + 2 < raw.size() &&
                 HexValue(raw[i + 1]) >= 0 && HexValue(raw[i + 2]) >= 0) {
        value.push_back(static_cast<char>(HexValue(raw[i + 1]) * 16 + HexValue(raw[i + 2])));
        i += 2;
      } else {
        value.push_back(raw[i]);
      }
    }
    found = std::move(value);
  }
  return found;
}

std::string UrlEncode(absl::string_view value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : value) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::optional<std::string> NormalizeHost(absl::string_view host) {
  if (host.empty() || host.size() > 255) return std::nullopt;
  std::string lower = absl::AsciiStrToLower(host);
  size_t i = 0;
  if (lower.front() == '[') {
    const size_t close = lower.find(']');
    if (close == std::string::npos) return std::nullopt;
    for (size_t j = 1; j < close; ++j) {
      if (!std::isxdigit(static_cast<unsigned char>(lower[j])) && lower[j] != ':' &&
          lower[j] != '.') {
        return std::nullopt;
      }
    }
    i = close + 1;
  } else {
    for (; i < lower.size() && lower[i] != ':'; ++i) {
      const char c = lower[i];
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') {
        return std::nullopt;
      }
    }
    if (i == 0) return std::nullopt;
  }
  if (i < lower.size()) {
    // ":" and one to five digits, nothing else (no sign, no space).
    const std::string digits = lower.substr(i + 1);
    int port = 0;
    if (lower[i] != ':' || digits.empty() || digits.size() > 5 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        !absl::SimpleAtoi(digits, &port) || port < 1 || port > 65535) {
      return std::nullopt;
    }
  }
  return lower;
}

std::pair<std::string, int> SplitHostPort(const std::string& authority) {
  const size_t close = authority.rfind(']');
  const size_t colon = authority.rfind(':');
  if (colon != std::string::npos && (close == std::string::npos || colon > close)) {
    int port = 0;
    (void)absl::SimpleAtoi(authority.substr(colon + 1), &port);
    return {authority.substr(0, colon), port};
  }
  return {authority, 0};
}

absl::StatusOr<UrlParts> ParseHttpUrl(absl::string_view url) {
  UrlParts parts;
  const size_t sep = url.find("://");
  if (sep == absl::string_view::npos) return absl::InvalidArgumentError("not an absolute URL");
  parts.scheme = absl::AsciiStrToLower(url.substr(0, sep));
  if (parts.scheme != "http" && parts.scheme != "https") {
    return absl::InvalidArgumentError("the scheme must be http or https");
  }
  absl::string_view rest = url.substr(sep + 3);
  std::optional<std::string> authority = NormalizeHost(rest.substr(0, rest.find('/')));
  if (!authority.has_value()) return absl::InvalidArgumentError("the host is malformed");
  parts.authority = *authority;
  std::tie(parts.host, parts.port) = SplitHostPort(parts.authority);
  if (parts.port == 0) parts.port = parts.scheme == "https" ? 443 : 80;
  return parts;
}

bool IsValidWorkspaceId(absl::string_view workspace_id) {
  return IsRandomId(workspace_id, "ws_");
}

std::optional<PreviewTarget> ParsePreviewHost(absl::string_view host,
                                              absl::string_view preview_domain) {
  if (preview_domain.empty() || host.size() <= preview_domain.size() + 1) return std::nullopt;
  if (!absl::EndsWith(host, preview_domain)) return std::nullopt;
  absl::string_view label = host.substr(0, host.size() - preview_domain.size());
  if (!absl::ConsumeSuffix(&label, ".") || absl::StrContains(label, '.')) return std::nullopt;
  const size_t dash = label.find('-');
  if (dash == absl::string_view::npos || dash == 0 || dash > 5) return std::nullopt;
  PreviewTarget target;
  absl::string_view port = label.substr(0, dash);
  if (port.front() == '0' ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      !absl::SimpleAtoi(port, &target.port) || target.port < 1 || target.port > 65535) {
    return std::nullopt;
  }
  target.workspace_id = absl::StrCat("ws_", label.substr(dash + 1));
  if (!IsValidWorkspaceId(target.workspace_id)) return std::nullopt;
  return target;
}

std::string PreviewHostFor(int port, absl::string_view workspace_id,
                           absl::string_view preview_domain) {
  absl::ConsumePrefix(&workspace_id, "ws_");
  return absl::StrCat(port, "-", workspace_id, ".", preview_domain);
}

std::string SignEdgeValue(absl::string_view key, absl::string_view purpose,
                          const std::vector<std::string>& fields, absl::Time expires) {
  // purpose, then "\n" before each field and before the expiry: no fields and one empty field
  // are different values.
  std::string payload(purpose);
  for (const std::string& field : fields) absl::StrAppend(&payload, "\n", field);
  absl::StrAppend(&payload, "\n", absl::ToUnixSeconds(expires));
  return absl::StrCat(auth::jose::Base64UrlEncode(payload), ".",
                      auth::jose::Base64UrlEncode(crypto::HmacSha256(key, payload)));
}

absl::StatusOr<std::vector<std::string>> VerifyEdgeValue(absl::string_view key,
                                                         absl::string_view purpose,
                                                         absl::string_view value,
                                                         size_t field_count, absl::Time now) {
  const absl::Status refused = absl::UnauthenticatedError("invalid or expired");
  if (value.size() > 2048) return refused;
  const size_t dot = value.find('.');
  if (dot == absl::string_view::npos) return refused;
  absl::StatusOr<std::string> payload = auth::jose::Base64UrlDecode(value.substr(0, dot));
  absl::StatusOr<std::string> mac = auth::jose::Base64UrlDecode(value.substr(dot + 1));
  if (!payload.ok() || !mac.ok() ||
      !crypto::ConstantTimeEquals(*mac, crypto::HmacSha256(key, *payload))) {
    return refused;
  }
  std::vector<std::string> parts = absl::StrSplit(*payload, '\n');
  int64_t expires = 0;
  if (parts.size() != field_count + 2 || parts.front() != purpose ||
      !absl::SimpleAtoi(parts.back(), &expires) || absl::FromUnixSeconds(expires) <= now) {
    return refused;
  }
  return std::vector<std::string>(parts.begin() + 1, parts.end() - 1);
}

std::string HtmlEscape(absl::string_view text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

}  // namespace tidepool::proxy
