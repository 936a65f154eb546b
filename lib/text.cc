#include "lib/text.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/crypto/crypto.h"

namespace tidepool {

std::string Base32Lower(absl::string_view bytes) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::string out;
  out.reserve((bytes.size() * 8 + 4) / 5);
  uint32_t buffer = 0;
  int bits = 0;
  for (unsigned char c : bytes) {
    buffer = (buffer << 8) | c;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out.push_back(kAlphabet[(buffer >> bits) & 0x1f]);
    }
  }
  if (bits > 0) {
    out.push_back(kAlphabet[(buffer << (5 - bits)) & 0x1f]);
  }
  return out;
}

bool IsBase32Lower(absl::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7'); });
}

absl::StatusOr<std::string> NewRandomId(absl::string_view prefix, size_t random_bytes) {
  absl::StatusOr<std::string> random = crypto::RandomBytes(random_bytes);
  if (!random.ok()) {
    return random.status();
  }
  return absl::StrCat(prefix, Base32Lower(*random));
}

bool IsRandomId(absl::string_view id, absl::string_view prefix) {
  return id.size() == prefix.size() + 26 && absl::StartsWith(id, prefix) &&
         IsBase32Lower(id.substr(prefix.size()));
}

bool DecodeUtf8(absl::string_view text, std::vector<char32_t>* code_points) {
  code_points->clear();
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    int extra = 0;
    char32_t cp = 0;
    char32_t min = 0;
    if (c < 0x80) {
      cp = c;
    } else if ((c & 0xE0) == 0xC0) {
      extra = 1;
      cp = c & 0x1F;
      min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2;
      cp = c & 0x0F;
      min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3;
      cp = c & 0x07;
      min = 0x10000;
    } else {
      return false;
    }
    if (text.size() - i - 1 < static_cast<size_t>(extra)) {
      return false;
    }
    for (int k = 1; k <= extra; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + static_cast<size_t>(k)]);
      if ((cc & 0xC0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    code_points->push_back(cp);
    i += 1 + static_cast<size_t>(extra);
  }
  return true;
}

bool IsCleanUtf8(absl::string_view text) {
  std::vector<char32_t> code_points;
  if (!DecodeUtf8(text, &code_points)) {
    return false;
  }
  return std::none_of(code_points.begin(), code_points.end(), [](char32_t cp) {
    return cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F);
  });
}

}  // namespace tidepool
