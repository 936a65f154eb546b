#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tidepool {

// Unpadded lower-case RFC 4648 base32 ("a-z2-7"); a final partial group is padded with zero
// bits. Used for every random id and code the platform shows ("u_…", "s_…", "tpi_…").
std::string Base32Lower(absl::string_view bytes);

// True if every character of `text` is in the lower-case base32 alphabet (a-z, 2-7).
bool IsBase32Lower(absl::string_view text);

// `prefix` followed by the base32 of `random_bytes` fresh CSPRNG bytes (16 bytes: 26
// characters, 128 bits). INTERNAL if the random generator fails.
absl::StatusOr<std::string> NewRandomId(absl::string_view prefix, size_t random_bytes = 16);

// True if `id` is `prefix` followed by 26 base32 characters, the shape NewRandomId makes
// ("ws_…", "u_…", "dec_…").
bool IsRandomId(absl::string_view id, absl::string_view prefix);

// Decodes strict UTF-8 (no overlong forms, surrogates or code points above U+10FFFF) into
// code points. Returns false on invalid input.
bool DecodeUtf8(absl::string_view text, std::vector<char32_t>* code_points);

// True if `text` is strict UTF-8 without control characters (C0, DEL or C1), so it can be
// shown in a terminal or log viewer as it is.
bool IsCleanUtf8(absl::string_view text);

}  // namespace tidepool
