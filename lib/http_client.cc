#include "lib/http_client.h"

#include <curl/curl.h>

#include <memory>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "lib/status_macros.h"

namespace tidepool {
namespace {

void GlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
struct CurlUrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};

struct ParsedUrl {
  std::string scheme;
  std::string host;
};

absl::StatusOr<ParsedUrl> ParseUrl(absl::string_view url, absl::string_view what) {
  std::unique_ptr<CURLU, CurlUrlDeleter> handle(curl_url());
  if (handle == nullptr) {
    return absl::ResourceExhaustedError("out of memory parsing a URL");
  }
  const std::string copy(url);
  if (copy.empty() || curl_url_set(handle.get(), CURLUPART_URL, copy.c_str(), 0) != CURLUE_OK) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not a valid absolute URL"));
  }
  ParsedUrl parsed;
  for (auto [part, out] : {std::pair{CURLUPART_SCHEME, &parsed.scheme},
                           std::pair{CURLUPART_HOST, &parsed.host}}) {
    char* value = nullptr;
    if (curl_url_get(handle.get(), part, &value, 0) != CURLUE_OK || value == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(what, " is not a valid absolute URL"));
    }
    *out = absl::AsciiStrToLower(value);
    curl_free(value);
  }
  return parsed;
}

bool IsLoopbackHost(absl::string_view host) {
  if (host == "localhost" || host == "[::1]" || host == "::1") {
    return true;
  }
  std::vector<absl::string_view> octets = absl::StrSplit(host, '.');
  if (octets.size() != 4 || octets[0] != "127") {
    return false;
  }
  for (absl::string_view octet : octets) {
    int value = 0;
    if (octet.empty() || octet.size() > 3 || !absl::SimpleAtoi(octet, &value) || value > 255) {
      return false;
    }
  }
  return true;
}

size_t WriteBody(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<std::pair<std::string*, size_t>*>(user);
  const size_t n = size * count;
  if (sink->first->size() + n > sink->second) {
    return 0;  // makes curl fail with CURLE_WRITE_ERROR
  }
  sink->first->append(data, n);
  return n;
}

absl::StatusOr<HttpResponse> Perform(const std::string& url, const std::string* form_body,
                                     const HttpRequestOptions& options) {
  TP_RETURN_IF_ERROR(CheckOutboundUrl(url, "the URL"));
  GlobalInitOnce();
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (curl == nullptr) {
    return absl::ResourceExhaustedError("cannot create an HTTP client handle");
  }
  HttpResponse response;
  std::pair<std::string*, size_t> sink{&response.body, options.max_response_bytes};
  std::unique_ptr<curl_slist, SlistDeleter> headers;
  auto add_header = [&headers](const std::string& line) {
    headers.reset(curl_slist_append(headers.release(), line.c_str()));
  };
  add_header("User-Agent: Tidepool");
  for (const auto& [name, value] : options.headers) {
    add_header(absl::StrCat(name, ": ", value));
  }
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(options.timeout)));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(options.timeout)));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &WriteBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  if (form_body != nullptr) {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, form_body->c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(form_body->size()));
  }
  const CURLcode code = curl_easy_perform(c);
  if (code == CURLE_WRITE_ERROR) {
    return absl::UnavailableError(absl::StrCat("the response from ", UrlForMessages(url),
                                               " is larger than ",
                                               options.max_response_bytes, " bytes"));
  }
  if (code != CURLE_OK) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach ", UrlForMessages(url), ": ", curl_easy_strerror(code)));
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  response.status = static_cast<int>(status);
  char* content_type = nullptr;
  if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &content_type) == CURLE_OK &&
      content_type != nullptr) {
    response.content_type = content_type;
  }
  return response;
}

}  // namespace

std::string UrlEncode(absl::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size() * 3);
  for (unsigned char c : text) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

std::string AppendQuery(std::string url,
                        const std::vector<std::pair<std::string, std::string>>& params) {
  char separator = url.find('?') == std::string::npos ? '?' : '&';
  for (const auto& [name, value] : params) {
    url.push_back(separator);
    absl::StrAppend(&url, UrlEncode(name), "=", UrlEncode(value));
    separator = '&';
  }
  return url;
}

std::string UrlForMessages(absl::string_view url) {
  return std::string(url.substr(0, url.find_first_of("?#")));
}

absl::Status CheckOutboundUrl(absl::string_view url, absl::string_view what) {
  TP_ASSIGN_OR_RETURN(ParsedUrl parsed, ParseUrl(url, what));
  if (parsed.scheme == "https") {
    return absl::OkStatus();
  }
  if (parsed.scheme == "http" && IsLoopbackHost(parsed.host)) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      what, " must use https (plain http is allowed only to a loopback address): ",
      UrlForMessages(url)));
}

absl::StatusOr<HttpResponse> HttpGet(const std::string& url, const HttpRequestOptions& options) {
  return Perform(url, nullptr, options);
}

absl::StatusOr<HttpResponse> HttpPostForm(
    const std::string& url, const std::vector<std::pair<std::string, std::string>>& form,
    const HttpRequestOptions& options) {
  std::string body;
  for (const auto& [name, value] : form) {
    if (!body.empty()) {
      body.push_back('&');
    }
    absl::StrAppend(&body, UrlEncode(name), "=", UrlEncode(value));
  }
  HttpRequestOptions with_type = options;
  with_type.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  return Perform(url, &body, with_type);
}

}  // namespace tidepool
