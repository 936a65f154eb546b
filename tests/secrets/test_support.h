#pragma once

// Helpers shared by the secrets tests: a recording audit emitter, a well-formed value for every
// catalogue field, and the encodings a leaked secret could hide in.

#include <cctype>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/synchronization/mutex.h"
#include "lib/audit_client.h"
#include "lib/crypto/crypto.h"
#include "tests/testing/recording_audit.h"
#include "nlohmann/json.hpp"

namespace tidepool::secrets::testing {

using ::tidepool::testing::RecordingAudit;

// A value every catalogue field accepts, keyed "provider.field".
inline std::map<std::string, std::string> SampleValues() {
  auto repeat = [](const std::string& unit, size_t n) {
    std::string out;
    while (out.size() < n) {
      out += unit;
    }
    return out.substr(0, n);
  };
  const std::string alnum = "aB3dE5gH7jK9mN1pQ2rS4tU6vW8xY0z";
  return {
      {"anthropic.api_key", "sk-ant-api03-" + repeat(alnum, 60)},
      {"openai.api_key", "sk-proj-" + repeat(alnum, 48)},
      {"gemini.api_key", "AIza" + repeat("Sy_" + alnum, 35)},
      {"mistral.api_key", repeat(alnum, 32)},
      {"xai.api_key", "xai-" + repeat(alnum, 40)},
      {"groq.api_key", "gsk_" + repeat(alnum, 52)},
      {"openrouter.api_key", "sk-or-v1-" + repeat("0123456789abcdef", 64)},
      {"deepseek.api_key", "sk-" + repeat("0123456789abcdef", 32)},
      {"together.api_key", "tgp_v1_" + repeat(alnum, 43)},
      {"fireworks.api_key", "fw_" + repeat(alnum, 24)},
      {"moonshot.api_key", "sk-" + repeat(alnum, 48)},
      {"github_copilot.api_key", "gho_" + repeat(alnum, 36)},
      {"model_server.api_key", "sk-litellm-" + repeat(alnum, 16)},
      {"brave.api_key", "BSA" + repeat(alnum, 28)},
      {"tavily.api_key", "tvly-dev-" + repeat(alnum, 32)},
      {"perplexity.api_key", "pplx-" + repeat(alnum, 48)},
      {"searxng.url", "https://searx.example.org:8443/search"},
      {"slack.bot_token", "xoxb-1234567890-1234567890123-" + repeat(alnum, 24)},
      {"slack.app_token", "xapp-1-A0123456789-1234567890123-" + repeat("0123456789abcdef", 64)},
      {"telegram.bot_token", "123456789:AA" + repeat(alnum, 33)},
      {"github.token", "github_pat_" + repeat(alnum + "_", 82)},
  };
}

// Percent-encodes every byte outside RFC 3986's unreserved set.
inline std::string UrlEncode(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      char buffer[4];
      std::snprintf(buffer, sizeof(buffer), "%%%02X", c);
      out += buffer;
    }
  }
  return out;
}

// The forms a leaked `secret` could take in logs, events and responses (G11): raw, Base64,
// Base64url (padded and not), hex (either case), URL-encoded and JSON-escaped.
inline std::vector<std::string> LeakForms(const std::string& secret) {
  std::string json = nlohmann::json(secret).dump();
  json = json.substr(1, json.size() - 2);
  std::string base64url_padded = absl::WebSafeBase64Escape(secret);
  while (base64url_padded.size() % 4 != 0) {
    base64url_padded += "=";
  }
  const std::string hex = crypto::HexEncode(secret);
  return {secret,
          absl::Base64Escape(secret),
          absl::WebSafeBase64Escape(secret),
          base64url_padded,
          hex,
          absl::AsciiStrToUpper(hex),
          UrlEncode(secret),
          json};
}

// The forms of `secret` found in `haystack` (empty when there is no leak).
inline std::vector<std::string> FindLeaks(const std::string& haystack, const std::string& secret) {
  std::vector<std::string> found;
  for (const std::string& form : LeakForms(secret)) {
    if (haystack.find(form) != std::string::npos) {
      found.push_back(form);
    }
  }
  return found;
}

}  // namespace tidepool::secrets::testing
