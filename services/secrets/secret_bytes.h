#pragma once

#include <string.h>

#include <string>
#include <utility>

#include "absl/strings/string_view.h"

namespace tidepool::secrets {

// Key material or a secret value that is wiped from memory when it is destroyed or replaced
// (explicit_bzero, which the compiler may not optimise away). Move-only, so copies are always
// deliberate (Clone()). Wiping is best effort: it covers this buffer, not copies made by code
// that reads view() (protobuf messages, OpenSSL contexts, gRPC buffers).
// Not thread-safe; const methods may be called concurrently.
class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(std::string bytes) : bytes_(std::move(bytes)) {}
  SecretBytes(SecretBytes&& other) noexcept : bytes_(std::move(other.bytes_)) { other.Wipe(); }
  SecretBytes& operator=(SecretBytes&& other) noexcept {
    if (this != &other) {
      Wipe();
      bytes_ = std::move(other.bytes_);
      other.Wipe();
    }
    return *this;
  }
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  ~SecretBytes() { Wipe(); }

  // A deliberate copy.
  SecretBytes Clone() const { return SecretBytes(bytes_); }

  absl::string_view view() const { return bytes_; }
  size_t size() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }

 private:
  // Overwrites the whole buffer (up to its capacity, which also covers a moved-from short
  // string's inline buffer), then empties it.
  void Wipe() {
    bytes_.resize(bytes_.capacity());
    ::explicit_bzero(bytes_.data(), bytes_.size());
    bytes_.clear();
  }

  std::string bytes_;
};

}  // namespace tidepool::secrets
