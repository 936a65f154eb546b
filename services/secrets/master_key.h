#pragma once

// The master key: the one secret the secrets service cannot store itself. It seals the
// keyring (keyring.h), which holds the key-encryption keys that wrap every user's data key.
//
// Sources, exactly one per deployment:
//   - a key file (default <data_dir>/secrets/master.key): a regular file owned by the
//     service's user with no group or other permission bits (0600 or 0400), holding either the
//     32 key bytes themselves or 64 hexadecimal characters (optionally followed by a newline);
//   - an environment variable holding 64 hexadecimal characters.
// Refused with a clear message, and never replaced by a default: a missing source, a key of
// the wrong length, an all-zero key, 32 printable characters (a password, not a random key),
// and a file that is not a regular file, belongs to another user or is open to group/others.
// No message ever contains key bytes.

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/secrets/secret_bytes.h"

namespace tidepool::secrets {

inline constexpr size_t kMasterKeySize = 32;

// Where the master key comes from: exactly one of the two is set.
struct MasterKeySource {
  // Path of the key file.
  std::string file;
  // Name of the environment variable.
  std::string env_var;

  // "the master key file /x/master.key" or "the environment variable NAME".
  std::string Describe() const;
};

// Parses key material read from `source_name` (used in messages only): exactly 32 bytes, or
// 64 hexadecimal characters optionally followed by "\n" or "\r\n".
// Errors: FAILED_PRECONDITION saying what is wrong (too short, too long, all zeros, looks like
// a password), never showing the material.
absl::StatusOr<SecretBytes> ParseMasterKey(absl::string_view material,
                                           absl::string_view source_name);

// Reads and checks a key file (see the top of this file). Symlinks are followed (Kubernetes
// mounts secrets through them); the checks apply to the file they lead to.
// Errors: NOT_FOUND if it does not exist; FAILED_PRECONDITION for every other refusal
// (permissions, owner, not a regular file, unreadable, bad content).
absl::StatusOr<SecretBytes> ReadMasterKeyFile(const std::string& path);

// Reads the key from environment variable `name`: 64 hexadecimal characters.
// Errors: FAILED_PRECONDITION if it is unset, empty or malformed.
absl::StatusOr<SecretBytes> ReadMasterKeyEnv(const std::string& name);

// Writes `key` (32 bytes) to `path` as 64 hexadecimal characters and a newline, mode 0600,
// durably (see secret_file.h). Errors: INVALID_ARGUMENT for a key of the wrong size;
// UNAVAILABLE if it cannot be written.
absl::Status WriteMasterKeyFile(const std::string& path, absl::string_view key);

// The outcome of LoadMasterKeyAtStart.
struct LoadedMasterKey {
  SecretBytes key;
  // True if the key file did not exist and was generated now.
  bool generated = false;
};

// The start-up policy. `first_start` is true only when the service has never stored anything
// (neither its database nor its keyring exists). With a key file that is missing on the first
// start, a random key is generated into it (0600); on any later start a missing key file keeps
// the service sealed, because a new key could not open what the old one sealed. An
// environment-variable source is never generated.
// Errors: FAILED_PRECONDITION starting with "sealed:" and saying what to fix; UNAVAILABLE or
// INTERNAL if a generated key cannot be written or drawn.
absl::StatusOr<LoadedMasterKey> LoadMasterKeyAtStart(const MasterKeySource& source,
                                                     bool first_start);

}  // namespace tidepool::secrets
