#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lib/crypto/crypto.h"

namespace tidepool::audit {

// A signed statement that the log held `tree_size` records and that record number
// `tree_size` had `head_hash`.
struct SignedCheckpoint {
  uint64_t tree_size = 0;
  std::string head_hash;  // 32 raw bytes
  int64_t unix_seconds = 0;
  std::string key_id;
  std::string signature;  // 64 raw bytes (Ed25519 over CheckpointNote(...))
};

// The exact bytes a checkpoint signs: "tidepool-audit-checkpoint/v1\n<size>\n<b64 hash>\n<time>\n".
std::string CheckpointNote(uint64_t tree_size, absl::string_view head_hash, int64_t unix_seconds);

// The key id of an Ed25519 public key: the first 16 hex characters of its SHA-256.
std::string KeyIdOf(absl::string_view public_key);

// Public keys trusted to sign checkpoints, by key id.
using TrustedKeys = std::map<std::string, std::string>;

// Checks a checkpoint's signature under `keys`. Returns OK, or UNAUTHENTICATED naming why
// (unknown key id, bad signature). Thread-safe.
absl::Status VerifyCheckpoint(const SignedCheckpoint& checkpoint, const TrustedKeys& keys);

// The audit service's checkpoint signing key, kept in `key_path` (PEM, 0600, created on first
// use), and the trusted public keys, kept in `trusted_keys_path` (one "<key id> <base64
// public key>" line each; the current key is added on creation). Not thread-safe after
// construction only for Sign() callers that share it without a lock: Sign() is const and
// thread-safe.
class CheckpointSigner {
 public:
  // Errors: UNAVAILABLE if the files cannot be read or written, FAILED_PRECONDITION if the key
  // file is readable by others or malformed.
  static absl::StatusOr<CheckpointSigner> LoadOrCreate(const std::string& key_path,
                                                       const std::string& trusted_keys_path);

  absl::StatusOr<SignedCheckpoint> Sign(uint64_t tree_size, absl::string_view head_hash,
                                        absl::Time time) const;
  const std::string& key_id() const { return key_id_; }
  const TrustedKeys& trusted_keys() const { return trusted_; }

 private:
  CheckpointSigner(crypto::Ed25519PrivateKey key, TrustedKeys trusted);
  std::unique_ptr<crypto::Ed25519PrivateKey> key_;
  std::string key_id_;
  TrustedKeys trusted_;
};

// One line of the checkpoint file, parsed.
struct CheckpointLine {
  int line_number = 0;
  bool well_formed = false;
  SignedCheckpoint checkpoint;  // when well_formed
};

// The checkpoint file: one JSON object per line, only ever appended to. It is separate from
// the SQLite store and opened with O_APPEND; when `append_only_attribute` is set (and the
// process may: CAP_LINUX_IMMUTABLE on a filesystem that supports it) it also carries the
// file system's append-only attribute, so not even its owner can rewrite or truncate it
// without first clearing that attribute. Thread-compatible: callers serialize Append().
class CheckpointFile {
 public:
  // Opens (creating if missing) `path`. Errors: UNAVAILABLE.
  static absl::StatusOr<std::unique_ptr<CheckpointFile>> Open(const std::string& path,
                                                              bool append_only_attribute);
  ~CheckpointFile();

  // Appends one checkpoint line and fsyncs. Errors: UNAVAILABLE.
  absl::Status Append(const SignedCheckpoint& checkpoint);

  // Reads every complete line (a trailing line without a newline, torn by a crash before its
  // fsync, was never acknowledged and is skipped). Errors: UNAVAILABLE.
  absl::StatusOr<std::vector<CheckpointLine>> ReadAll() const;

  // Whether the append-only attribute is in force.
  bool append_only_enforced() const { return append_only_enforced_; }
  const std::string& path() const { return path_; }

 private:
  CheckpointFile(std::string path, int fd, bool enforced)
      : path_(std::move(path)), fd_(fd), append_only_enforced_(enforced) {}
  std::string path_;
  int fd_;
  bool append_only_enforced_;
  bool needs_newline_ = false;
};

// Serialises a checkpoint as the file's JSON line (without the newline), and parses one back.
std::string CheckpointToJsonLine(const SignedCheckpoint& checkpoint);
bool ParseCheckpointJsonLine(absl::string_view line, SignedCheckpoint* checkpoint);

}  // namespace tidepool::audit
