#pragma once

// Identity providers for integration tests: the node servers in tests/idp (a real
// `oidc-provider`, a GitHub stand-in) as child processes, and a tiny cookie-keeping "browser"
// (libcurl) that follows redirects through a provider.

#include <curl/curl.h>
#include <sys/stat.h>

#include <csignal>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"

namespace tidepool::testing {

using ::nlohmann::json;

inline std::string IdpDir() { return std::string(TIDEPOOL_SOURCE_DIR) + "/tests/idp"; }

inline bool WriteTestFile(const std::string& path, const std::string& text, mode_t mode = 0600) {
  std::ofstream out(path);
  out << text;
  out.close();
  return out.good() && ::chmod(path.c_str(), mode) == 0;
}

// A node server from tests/idp, started with a JSON config; its first stdout line says where
// it listens.
class NodeServer {
 public:
  static std::unique_ptr<NodeServer> Start(const std::string& script, const json& config,
                                           const std::string& dir) {
    auto server = std::unique_ptr<NodeServer>(new NodeServer());
    const std::string config_path = absl::StrCat(dir, "/", script, ".", config.value("name", "x"),
                                                 ".json");
    EXPECT_TRUE(WriteTestFile(config_path, config.dump()));
    absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(
        {"/usr/bin/env", "node", IdpDir() + "/" + script, "--config", config_path}, dir);
    EXPECT_THAT(process, IsOk());
    if (!process.ok()) return nullptr;
    server->process_ = *std::move(process);
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      const std::string out = server->process_->Stdout();
      if (size_t nl = out.find('\n'); nl != std::string::npos) {
        server->info_ = json::parse(out.substr(0, nl), nullptr, false);
        return server;
      }
      if (server->process_->Wait(absl::Milliseconds(50)).ok()) break;
    }
    ADD_FAILURE() << script << " did not start (did scripts/setup run npm ci in tests/idp?): "
                  << server->process_->Stderr();
    return nullptr;
  }

  const json& info() const { return info_; }
  std::string base() const { return absl::StrCat("http://127.0.0.1:", info_["port"].get<int>()); }
  ~NodeServer() {
    if (process_) {
      process_->Signal(SIGTERM);
      (void)process_->Wait(absl::Seconds(5));
    }
  }

 private:
  NodeServer() = default;
  std::unique_ptr<Subprocess> process_;
  json info_;
};

inline size_t Collect(char* data, size_t size, size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

// A tiny browser: keeps cookies, follows redirects by hand until one points at `stop_prefix`.
struct BrowserResult {
  std::string final_url;  // the Location that starts with stop_prefix, or ""
  std::string trace;
};

inline BrowserResult FollowUntil(const std::string& start_url, const std::string& stop_prefix) {
  BrowserResult result;
  CURL* curl = curl_easy_init();
  curl_easy_setopt(curl, CURLOPT_COOKIEFILE, "");  // in-memory cookie engine
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 15L);
  std::string url = start_url;
  for (int hop = 0; hop < 10; ++hop) {
    std::string body;
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &Collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    const CURLcode code = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    char* location = nullptr;
    curl_easy_getinfo(curl, CURLINFO_REDIRECT_URL, &location);
    absl::StrAppend(&result.trace, status, " ", url.substr(0, 80), "\n");
    if (code != CURLE_OK || location == nullptr) {
      absl::StrAppend(&result.trace, "stopped: ", curl_easy_strerror(code), " ", body.substr(0, 200));
      break;
    }
    url = location;
    if (absl::StartsWith(url, stop_prefix)) {
      result.final_url = url;
      break;
    }
  }
  curl_easy_cleanup(curl);
  return result;
}

inline std::map<std::string, std::string> QueryOf(const std::string& url) {
  std::map<std::string, std::string> params;
  const size_t q = url.find('?');
  if (q == std::string::npos) return params;
  for (absl::string_view pair : absl::StrSplit(url.substr(q + 1), '&', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
    int length = 0;
    char* value = curl_easy_unescape(nullptr, kv.second.c_str(), static_cast<int>(kv.second.size()),
                                     &length);
    params[kv.first] = std::string(value, static_cast<size_t>(length));
    curl_free(value);
  }
  return params;
}


}  // namespace tidepool::testing
