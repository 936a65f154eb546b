#pragma once

// Big-endian integers and length-prefixed strings for the secrets service's binary layouts
// (additional authenticated data and the sealed keyring). Length prefixes make every layout
// unambiguous: ("ab", "c") and ("a", "bc") never encode to the same bytes.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace tidepool::secrets {

// Appends `value` as 4 bytes, big-endian.
inline void AppendU32(std::string* out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((value >> shift) & 0xff));
  }
}

// Appends `value` as 8 bytes, big-endian.
inline void AppendU64(std::string* out, uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((value >> shift) & 0xff));
  }
}

// A 32-bit big-endian length, then the bytes.
inline void AppendField(std::string* out, absl::string_view bytes) {
  AppendU32(out, static_cast<uint32_t>(bytes.size()));
  out->append(bytes.data(), bytes.size());
}

// Reads from the front of a byte string; every read fails (returns false) once the input is
// too short, and the reader then stays failed.
class ByteReader {
 public:
  explicit ByteReader(absl::string_view input) : rest_(input) {}

  // Each Read* consumes bytes from the front and returns false (and reads nothing more) when
  // too few are left.
  bool ReadU32(uint32_t* value) {
    uint64_t wide = 0;
    if (!ReadBigEndian(4, &wide)) {
      return false;
    }
    *value = static_cast<uint32_t>(wide);
    return true;
  }
  bool ReadU64(uint64_t* value) { return ReadBigEndian(8, value); }
  bool ReadBytes(size_t n, absl::string_view* bytes) {
    if (failed_ || rest_.size() < n) {
      failed_ = true;
      return false;
    }
    *bytes = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return true;
  }
  // True when everything was read and nothing failed.
  bool AtEnd() const { return !failed_ && rest_.empty(); }

 private:
  bool ReadBigEndian(size_t n, uint64_t* value) {
    absl::string_view bytes;
    if (!ReadBytes(n, &bytes)) {
      return false;
    }
    uint64_t result = 0;
    for (char c : bytes) {
      result = (result << 8) | static_cast<uint8_t>(c);
    }
    *value = result;
    return true;
  }

  absl::string_view rest_;
  bool failed_ = false;
};

}  // namespace tidepool::secrets
