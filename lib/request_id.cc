#include "lib/request_id.h"

#include <openssl/rand.h>

#include <array>
#include <cstdint>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace tidepool {

std::string NewRequestId() {
  std::array<unsigned char, 8> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    return "req_unavailable";
  }
  return absl::StrCat("req_", absl::BytesToHexString(absl::string_view(
                                  reinterpret_cast<const char*>(bytes.data()), bytes.size())));
}

}  // namespace tidepool
