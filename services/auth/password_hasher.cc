#include "services/auth/password_hasher.h"

#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "lib/crypto/crypto.h"
#include "lib/status_macros.h"
#include "lib/text.h"

namespace tidepool::auth {
namespace {

constexpr absl::string_view kAlgorithm = "scrypt";
// Longest encoding we parse: with 64-byte salt and key this is about 200 characters.
constexpr size_t kMaxEncodedSize = 256;
constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// scrypt parameters as parsed from an encoded hash.
struct ParsedHash {
  int log2_n = 0;
  uint32_t r = 0;
  uint32_t p = 0;
  std::string salt;
  std::string key;
};

std::string Base64EncodeNoPad(absl::string_view data) {
  std::string out;
  out.reserve((data.size() * 4 + 2) / 3);
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const uint32_t v = (static_cast<uint32_t>(static_cast<unsigned char>(data[i])) << 16) |
                       (static_cast<uint32_t>(static_cast<unsigned char>(data[i + 1])) << 8) |
                       static_cast<uint32_t>(static_cast<unsigned char>(data[i + 2]));
    out.push_back(kBase64Alphabet[(v >> 18) & 0x3F]);
    out.push_back(kBase64Alphabet[(v >> 12) & 0x3F]);
    out.push_back(kBase64Alphabet[(v >> 6) & 0x3F]);
    out.push_back(kBase64Alphabet[v & 0x3F]);
  }
  const size_t rest = data.size() - i;
  if (rest == 1) {
    const uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(data[i])) << 16;
    out.push_back(kBase64Alphabet[(v >> 18) & 0x3F]);
    out.push_back(kBase64Alphabet[(v >> 12) & 0x3F]);
  } else if (rest == 2) {
    const uint32_t v = (static_cast<uint32_t>(static_cast<unsigned char>(data[i])) << 16) |
                       (static_cast<uint32_t>(static_cast<unsigned char>(data[i + 1])) << 8);
    out.push_back(kBase64Alphabet[(v >> 18) & 0x3F]);
    out.push_back(kBase64Alphabet[(v >> 12) & 0x3F]);
    out.push_back(kBase64Alphabet[(v >> 6) & 0x3F]);
  }
  return out;
}

int Base64Value(char c) {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  if (c == '+') {
    return 62;
  }
  if (c == '/') {
    return 63;
  }
  return -1;
}

// Decodes unpadded standard base64, accepting only the canonical encoding (unused low bits of
// the last character must be zero), so each byte string has exactly one accepted text.
bool Base64DecodeNoPad(absl::string_view text, std::string* out) {
  out->clear();
  if (text.size() % 4 == 1) {
    return false;
  }
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = Base64Value(c);
    if (v < 0) {
      return false;
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  // Leftover bits (2 or 4) must be zero.
  return (acc & ((1u << bits) - 1)) == 0;
}

// Parses a decimal number of 1 to 9 digits without sign or leading zeros.
bool ParseSmallDecimal(absl::string_view text, uint32_t* value) {
  if (text.empty() || text.size() > 9 || (text.size() > 1 && text[0] == '0')) {
    return false;
  }
  uint32_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return false;
    }
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  *value = v;
  return true;
}

// Checks scrypt parameters against the kScrypt* limits. Messages name the parameter only.
absl::Status CheckParameters(int log2_n, uint64_t r, uint64_t p, size_t salt_bytes,
                             size_t key_bytes) {
  if (log2_n < 1 || log2_n > kScryptMaxLog2N) {
    return absl::InvalidArgumentError(
        absl::StrCat("scrypt log2_n must be in 1..", kScryptMaxLog2N));
  }
  if (r < 1 || r > kScryptMaxR) {
    return absl::InvalidArgumentError(absl::StrCat("scrypt r must be in 1..", kScryptMaxR));
  }
  if (p < 1 || p > kScryptMaxP) {
    return absl::InvalidArgumentError(absl::StrCat("scrypt p must be in 1..", kScryptMaxP));
  }
  if (r * p > kScryptMaxRTimesP) {
    return absl::InvalidArgumentError(
        absl::StrCat("scrypt r * p must be at most ", kScryptMaxRTimesP));
  }
  const uint64_t n = uint64_t{1} << log2_n;
  if (128 * r * n > kScryptMaxMemoryBytes) {
    return absl::InvalidArgumentError("scrypt memory (128 * r * N) exceeds the limit");
  }
  if (n * r * p > kScryptMaxWork) {
    return absl::InvalidArgumentError("scrypt work (N * r * p) exceeds the limit");
  }
  if (salt_bytes < kScryptMinSaltBytes || salt_bytes > kScryptMaxSaltBytes) {
    return absl::InvalidArgumentError(absl::StrCat("scrypt salt must be ", kScryptMinSaltBytes,
                                                   "..", kScryptMaxSaltBytes, " bytes"));
  }
  if (key_bytes < kScryptMinKeyBytes || key_bytes > kScryptMaxKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat("scrypt key must be ", kScryptMinKeyBytes, "..",
                                                   kScryptMaxKeyBytes, " bytes"));
  }
  return absl::OkStatus();
}

// Parses `encoded` and checks its parameters against the limits. Returns false for anything
// malformed or out of range.
bool ParseEncoded(absl::string_view encoded, ParsedHash* parsed) {
  if (encoded.size() > kMaxEncodedSize) {
    return false;
  }
  const std::vector<absl::string_view> parts = absl::StrSplit(encoded, '$');
  if (parts.size() != 5 || !parts[0].empty() || parts[1] != kAlgorithm) {
    return false;
  }
  const std::vector<absl::string_view> params = absl::StrSplit(parts[2], ',');
  if (params.size() != 3 || !absl::StartsWith(params[0], "ln=") ||
      !absl::StartsWith(params[1], "r=") || !absl::StartsWith(params[2], "p=")) {
    return false;
  }
  uint32_t log2_n = 0;
  if (!ParseSmallDecimal(params[0].substr(3), &log2_n) ||
      !ParseSmallDecimal(params[1].substr(2), &parsed->r) ||
      !ParseSmallDecimal(params[2].substr(2), &parsed->p)) {
    return false;
  }
  if (log2_n > static_cast<uint32_t>(kScryptMaxLog2N)) {
    return false;
  }
  parsed->log2_n = static_cast<int>(log2_n);
  if (!Base64DecodeNoPad(parts[3], &parsed->salt) || !Base64DecodeNoPad(parts[4], &parsed->key)) {
    return false;
  }
  return CheckParameters(parsed->log2_n, parsed->r, parsed->p, parsed->salt.size(),
                         parsed->key.size())
      .ok();
}

absl::StatusOr<std::string> RunScrypt(absl::string_view password, absl::string_view salt,
                                      uint64_t n, uint64_t r, uint64_t p, size_t key_bytes) {
  if (n < 2 || (n & (n - 1)) != 0) {
    return absl::InvalidArgumentError("scrypt N must be a power of two above 1");
  }
  if (r < 1 || p < 1 || key_bytes < 1 || key_bytes > 1024) {
    return absl::InvalidArgumentError("scrypt r, p and key length must be positive");
  }
  // The working array V is 128 * r * N bytes and B is 128 * r * p; bound both without
  // overflowing.
  const uint64_t max_units = kScryptMaxMemoryBytes / 128;
  if (r > max_units / n || p > max_units / r) {
    return absl::InvalidArgumentError("scrypt memory exceeds the limit");
  }
  const uint64_t max_mem = 128 * r * (n + 2) + 128 * r * p + (uint64_t{1} << 20);
  std::string key(key_bytes, '\0');
  // OpenSSL treats a null password or salt as empty; pass a real pointer regardless.
  const char* password_data = password.empty() ? "" : password.data();
  const unsigned char* salt_data = reinterpret_cast<const unsigned char*>(salt.data());
  static constexpr unsigned char kEmpty[1] = {0};
  if (salt.empty()) {
    salt_data = kEmpty;
  }
  if (EVP_PBE_scrypt(password_data, password.size(), salt_data, salt.size(), n, r, p, max_mem,
                     reinterpret_cast<unsigned char*>(key.data()), key.size()) != 1) {
    return absl::InternalError("scrypt failed");
  }
  return key;
}

}  // namespace

absl::Status CheckPasswordPolicy(absl::string_view password) {
  if (password.size() > kMaxPasswordBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("password must be at most ", kMaxPasswordBytes, " bytes"));
  }
  std::vector<char32_t> code_points;
  if (!DecodeUtf8(password, &code_points)) {
    return absl::InvalidArgumentError("password must be valid UTF-8");
  }
  if (absl::StrContains(password, '\0')) {
    return absl::InvalidArgumentError("password must not contain NUL characters");
  }
  if (code_points.size() < kMinPasswordCodePoints) {
    return absl::InvalidArgumentError(
        absl::StrCat("password must be at least ", kMinPasswordCodePoints, " characters"));
  }
  bool all_same = true;
  for (char32_t cp : code_points) {
    if (cp != code_points[0]) {
      all_same = false;
      break;
    }
  }
  if (all_same) {
    return absl::InvalidArgumentError("password must not be a single repeated character");
  }
  return absl::OkStatus();
}

absl::Status PasswordHasher::ValidateOptions(const Options& options) {
  return CheckParameters(options.log2_n, options.r, options.p, options.salt_bytes,
                         options.key_bytes);
}

absl::StatusOr<std::string> PasswordHasher::Hash(absl::string_view password) const {
  if (password.size() > kMaxPasswordBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("password must be at most ", kMaxPasswordBytes, " bytes"));
  }
  if (absl::StrContains(password, '\0')) {
    return absl::InvalidArgumentError("password must not contain NUL characters");
  }
  if (absl::Status valid = ValidateOptions(options_); !valid.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("password hasher misconfigured: ", valid.message()));
  }
  TP_ASSIGN_OR_RETURN(std::string salt, crypto::RandomBytes(options_.salt_bytes));
  TP_ASSIGN_OR_RETURN(std::string key, RunScrypt(password, salt, uint64_t{1} << options_.log2_n,
                                                 options_.r, options_.p, options_.key_bytes));
  return absl::StrCat("$", kAlgorithm, "$ln=", options_.log2_n, ",r=", options_.r,
                      ",p=", options_.p, "$", Base64EncodeNoPad(salt), "$", Base64EncodeNoPad(key));
}

bool PasswordHasher::Verify(absl::string_view password, absl::string_view encoded) const {
  // NUL never appears in an accepted password, and HMAC (inside scrypt) pads short keys with
  // zero bytes, which would make "pw" and "pw\0" equivalent.
  if (password.size() > kMaxPasswordBytes || absl::StrContains(password, '\0')) {
    return false;
  }
  ParsedHash parsed;
  if (!ParseEncoded(encoded, &parsed)) {
    return false;
  }
  // scrypt's output is a prefix-stable stream (PBKDF2), so a truncated key would otherwise
  // still verify: refuse keys shorter than the configured length.
  if (parsed.key.size() < options_.key_bytes) {
    return false;
  }
  absl::StatusOr<std::string> key = RunScrypt(password, parsed.salt, uint64_t{1} << parsed.log2_n,
                                              parsed.r, parsed.p, parsed.key.size());
  return key.ok() && crypto::ConstantTimeEquals(*key, parsed.key);
}

bool PasswordHasher::NeedsRehash(absl::string_view encoded) const {
  ParsedHash parsed;
  if (!ParseEncoded(encoded, &parsed)) {
    return true;
  }
  return parsed.log2_n < options_.log2_n || parsed.r < options_.r || parsed.p < options_.p ||
         parsed.salt.size() < options_.salt_bytes || parsed.key.size() < options_.key_bytes;
}

void PasswordHasher::VerifyDummy(absl::string_view password) const {
  // Mirrors Verify: over-long passwords are refused there before any work, so here too.
  if (password.size() > kMaxPasswordBytes || absl::StrContains(password, '\0') ||
      !ValidateOptions(options_).ok()) {
    return;
  }
  const std::string salt(options_.salt_bytes, '\x5a');
  absl::StatusOr<std::string> key = RunScrypt(password, salt, uint64_t{1} << options_.log2_n,
                                              options_.r, options_.p, options_.key_bytes);
  // Compare as Verify does, so the dummy path does the same work to the end.
  const std::string expected(options_.key_bytes, '\0');
  if (key.ok()) {
    static_cast<void>(crypto::ConstantTimeEquals(*key, expected));
  }
}

absl::StatusOr<std::string> ScryptForTest(absl::string_view password, absl::string_view salt,
                                          uint64_t n, uint64_t r, uint64_t p, size_t key_bytes) {
  return RunScrypt(password, salt, n, r, p, key_bytes);
}

}  // namespace tidepool::auth
