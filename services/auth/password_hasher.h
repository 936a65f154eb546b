#pragma once

// Password hashing for local accounts: scrypt (RFC 7914) through OpenSSL 3, stored as a
// PHC-style string, plus the password policy applied when a password is set.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tidepool::auth {

// Limits on scrypt parameters, for both PasswordHasher::Options and parameters parsed from a
// stored hash. A stored value outside them never verifies, so a tampered database row cannot
// make the service burn unbounded memory or CPU (scrypt's cost is chosen by the hash itself).
inline constexpr int kScryptMaxLog2N = 20;
inline constexpr uint32_t kScryptMaxR = 32;
inline constexpr uint32_t kScryptMaxP = 16;
inline constexpr uint64_t kScryptMaxRTimesP = 64;
// 128 * r * N: the size of scrypt's working array.
inline constexpr uint64_t kScryptMaxMemoryBytes = uint64_t{256} << 20;
// N * r * p: proportional to CPU time; 16 times the default (2^15 * 8 * 1).
inline constexpr uint64_t kScryptMaxWork = uint64_t{1} << 22;
// Salt and derived-key sizes accepted in options and in stored hashes.
inline constexpr size_t kScryptMinSaltBytes = 16;
inline constexpr size_t kScryptMaxSaltBytes = 64;
inline constexpr size_t kScryptMinKeyBytes = 16;
inline constexpr size_t kScryptMaxKeyBytes = 64;

// Password policy limits (see CheckPasswordPolicy).
inline constexpr size_t kMinPasswordCodePoints = 12;
inline constexpr size_t kMaxPasswordBytes = 1024;

// Checks a new password against the policy: valid UTF-8 without NUL, at least 12 characters
// (Unicode code points), at most 1024 bytes, and not one character repeated.
// Errors: INVALID_ARGUMENT with a message naming the rule that failed; the message never
// contains the password. Thread-safe.
absl::Status CheckPasswordPolicy(absl::string_view password);

// Hashes and verifies passwords with scrypt. Encoded hashes look like
//   $scrypt$ln=15,r=8,p=1$<salt>$<hash>
// where ln is log2(N) and <salt> and <hash> are standard base64 ("A-Za-z0-9+/") without
// padding, as in the PHC string format. The parameters travel with the hash, so raising the
// options later keeps old hashes verifiable; NeedsRehash tells when to re-hash after a
// successful sign-in.
//
// Stateless apart from its options: all methods are const and thread-safe.
class PasswordHasher {
 public:
  struct Options {
    // N = 2^log2_n. The defaults cost about 32 MiB and tens of milliseconds per hash.
    int log2_n = 15;
    uint32_t r = 8;
    uint32_t p = 1;
    size_t salt_bytes = 16;
    size_t key_bytes = 32;
  };

  // Checks `options` against the kScrypt* limits above. Call at startup so a misconfiguration
  // fails there rather than at the first sign-in.
  // Errors: INVALID_ARGUMENT naming the parameter out of range.
  static absl::Status ValidateOptions(const Options& options);

  PasswordHasher() : PasswordHasher(Options()) {}
  explicit PasswordHasher(const Options& options) : options_(options) {}

  // Hashes `password` under a fresh random salt with the current options and returns the
  // encoded string. Does not apply the password policy (see CheckPasswordPolicy).
  // Errors: INVALID_ARGUMENT if the password exceeds kMaxPasswordBytes or contains NUL
  // (scrypt's HMAC would treat "pw" and "pw\0" alike); FAILED_PRECONDITION
  // if the options are out of range (see ValidateOptions); INTERNAL if the random generator
  // or OpenSSL fails.
  absl::StatusOr<std::string> Hash(absl::string_view password) const;

  // Returns true if and only if `encoded` is a well-formed hash within the limits above, with
  // a key at least options().key_bytes long, and `password` hashes to it under its salt and
  // parameters. Malformed, truncated or out-of-range encodings, and passwords over
  // kMaxPasswordBytes or containing NUL, return false without running scrypt. The final
  // comparison is constant-time.
  bool Verify(absl::string_view password, absl::string_view encoded) const;

  // Returns true if `encoded` should be replaced by a fresh Hash after the next successful
  // Verify: any of its parameters (N, r, p or salt length) is below the current options, or
  // it is malformed. (A key shorter than options().key_bytes never verifies at all, since
  // it is indistinguishable from a truncated one; this returns true for it too.)
  bool NeedsRehash(absl::string_view encoded) const;

  // Runs scrypt with the current options on `password` and discards the result. Call it
  // when the account does not exist (or has no password) so that a sign-in attempt takes the
  // same time either way and its timing does not reveal which e-mails are registered.
  void VerifyDummy(absl::string_view password) const;

  const Options& options() const { return options_; }

 private:
  Options options_;
};

// The raw scrypt function (RFC 7914): derives `key_bytes` bytes from `password` and `salt`
// with cost N = `n` (a power of two above 1), block size `r` and parallelism `p`. Exposed for
// known-answer tests against RFC 7914 §12. Only the memory limit (kScryptMaxMemoryBytes for
// the working array) is enforced here, not the other kScrypt* limits.
// Errors: INVALID_ARGUMENT for parameters scrypt rejects or over the memory limit; INTERNAL
// if OpenSSL fails. Thread-safe.
absl::StatusOr<std::string> ScryptForTest(absl::string_view password, absl::string_view salt,
                                          uint64_t n, uint64_t r, uint64_t p, size_t key_bytes);

}  // namespace tidepool::auth
