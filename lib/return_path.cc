#include "lib/return_path.h"

#include <utility>

namespace tidepool {
namespace {

constexpr size_t kMaxReturnPathBytes = 2048;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool IsSafeReturnPath(absl::string_view path) {
  if (path.empty() || path.size() > kMaxReturnPathBytes) {
    return false;
  }
  // The path as received: printable ASCII, no backslash, every '%' a valid escape.
  for (size_t i = 0; i < path.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(path[i]);
    if (c <= 0x20 || c >= 0x7f || c == '\\') {
      return false;
    }
    if (c == '%' && (i + 2 >= path.size() || HexValue(path[i + 1]) < 0 ||
                     HexValue(path[i + 2]) < 0)) {
      return false;
    }
  }
  // Percent-decode repeatedly (as a chain of servers might) and check each layer, so that
  // "/%2F%2Fevil" or "/%252F/evil" can never turn into "//evil" or "/\evil" downstream, and
  // no layer smuggles a control character (header splitting). Decoded layers may hold
  // UTF-8 (an encoded file name), which is fine.
  std::string layer(path);
  for (int depth = 0; depth < 4; ++depth) {
    if (layer.empty() || layer.front() != '/' ||
        (layer.size() > 1 && (layer[1] == '/' || layer[1] == '\\'))) {
      return false;
    }
    std::string decoded;
    decoded.reserve(layer.size());
    bool changed = false;
    for (size_t i = 0; i < layer.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(layer[i]);
      if (c < 0x20 || c == 0x7f) {
        return false;
      }
      if (c == '%' && i + 2 < layer.size() && HexValue(layer[i + 1]) >= 0 &&
          HexValue(layer[i + 2]) >= 0) {
        decoded.push_back(static_cast<char>(HexValue(layer[i + 1]) * 16 + HexValue(layer[i + 2])));
        i += 2;
        changed = true;
        continue;
      }
      decoded.push_back(static_cast<char>(c));
    }
    if (!changed) {
      return true;
    }
    layer = std::move(decoded);
  }
  return false;  // more layers of encoding than any honest path has
}

std::string SafeReturnPathOrRoot(absl::string_view path) {
  return IsSafeReturnPath(path) ? std::string(path) : std::string("/");
}

}  // namespace tidepool
