#include "services/audit/checkpoint_log.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "lib/file_util.h"
#include "lib/log.h"
#include "lib/status_macros.h"
#include "nlohmann/json.hpp"

namespace tidepool::audit {
namespace {

absl::StatusOr<TrustedKeys> ParseTrustedKeys(const std::string& text, const std::string& path) {
  TrustedKeys keys;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
    std::string public_key;
    if (parts.size() != 2 || !absl::Base64Unescape(parts[1], &public_key) ||
        public_key.size() != crypto::kEd25519PublicKeySize || KeyIdOf(public_key) != parts[0]) {
      return absl::FailedPreconditionError(absl::StrCat(path, " has a malformed line"));
    }
    keys[parts[0]] = public_key;
  }
  return keys;
}

}  // namespace

std::string CheckpointNote(uint64_t tree_size, absl::string_view head_hash, int64_t unix_seconds) {
  return absl::StrCat("tidepool-audit-checkpoint/v1\n", tree_size, "\n",
                      absl::Base64Escape(head_hash), "\n", unix_seconds, "\n");
}

std::string KeyIdOf(absl::string_view public_key) {
  return crypto::HexEncode(crypto::Sha256(public_key)).substr(0, 16);
}

absl::Status VerifyCheckpoint(const SignedCheckpoint& checkpoint, const TrustedKeys& keys) {
  auto key = keys.find(checkpoint.key_id);
  if (key == keys.end()) {
    return absl::UnauthenticatedError(absl::StrCat("checkpoint at tree size ", checkpoint.tree_size,
                                                   " is signed by an unknown key"));
  }
  absl::Status status = crypto::Ed25519Verify(
      key->second,
      CheckpointNote(checkpoint.tree_size, checkpoint.head_hash, checkpoint.unix_seconds),
      checkpoint.signature);
  if (!status.ok()) {
    return absl::UnauthenticatedError(
        absl::StrCat("checkpoint at tree size ", checkpoint.tree_size, " has a bad signature"));
  }
  return absl::OkStatus();
}

CheckpointSigner::CheckpointSigner(crypto::Ed25519PrivateKey key, TrustedKeys trusted)
    : key_(std::make_unique<crypto::Ed25519PrivateKey>(std::move(key))),
      key_id_(KeyIdOf(key_->PublicKey())),
      trusted_(std::move(trusted)) {}

absl::StatusOr<CheckpointSigner> CheckpointSigner::LoadOrCreate(
    const std::string& key_path, const std::string& trusted_keys_path) {
  absl::StatusOr<std::string> pem = ReadFileToString(key_path);
  std::optional<crypto::Ed25519PrivateKey> key;
  if (pem.ok()) {
    TP_RETURN_IF_ERROR(CheckOwnerOnly(key_path));
    absl::StatusOr<crypto::Ed25519PrivateKey> loaded = crypto::Ed25519PrivateKey::FromPem(*pem);
    if (!loaded.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(key_path, " is not an Ed25519 key"));
    }
    key.emplace(*std::move(loaded));
  } else {
    TP_ASSIGN_OR_RETURN(crypto::Ed25519PrivateKey generated, crypto::Ed25519PrivateKey::Generate());
    TP_ASSIGN_OR_RETURN(std::string new_pem, generated.ToPem());
    TP_RETURN_IF_ERROR(WriteFileAtomically(key_path, new_pem, 0600));
    key.emplace(std::move(generated));
  }
  const std::string public_key = key->PublicKey();
  const std::string key_id = KeyIdOf(public_key);
  TrustedKeys trusted;
  absl::StatusOr<std::string> trusted_text = ReadFileToString(trusted_keys_path);
  if (trusted_text.ok()) {
    TP_ASSIGN_OR_RETURN(trusted, ParseTrustedKeys(*trusted_text, trusted_keys_path));
  }
  if (trusted.count(key_id) == 0) {
    trusted[key_id] = public_key;
    std::string text;
    for (const auto& [id, pub] : trusted) {
      absl::StrAppend(&text, id, " ", absl::Base64Escape(pub), "\n");
    }
    TP_RETURN_IF_ERROR(WriteFileAtomically(trusted_keys_path, text, 0644));
  }
  return CheckpointSigner(*std::move(key), std::move(trusted));
}

absl::StatusOr<SignedCheckpoint> CheckpointSigner::Sign(uint64_t tree_size,
                                                        absl::string_view head_hash,
                                                        absl::Time time) const {
  SignedCheckpoint checkpoint;
  checkpoint.tree_size = tree_size;
  checkpoint.head_hash = std::string(head_hash);
  checkpoint.unix_seconds = absl::ToUnixSeconds(time);
  checkpoint.key_id = key_id_;
  TP_ASSIGN_OR_RETURN(checkpoint.signature,
                      key_->Sign(CheckpointNote(tree_size, head_hash, checkpoint.unix_seconds)));
  return checkpoint;
}

std::string CheckpointToJsonLine(const SignedCheckpoint& checkpoint) {
  nlohmann::ordered_json doc;
  doc["tree_size"] = checkpoint.tree_size;
  doc["head_hash"] = absl::Base64Escape(checkpoint.head_hash);
  doc["time"] = checkpoint.unix_seconds;
  doc["key_id"] = checkpoint.key_id;
  doc["signature"] = absl::Base64Escape(checkpoint.signature);
  return doc.dump();
}

bool ParseCheckpointJsonLine(absl::string_view line, SignedCheckpoint* checkpoint) {
  nlohmann::json doc = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc["tree_size"].is_number_unsigned() ||
      !doc["head_hash"].is_string() || !doc["time"].is_number_integer() ||
      !doc["key_id"].is_string() || !doc["signature"].is_string()) {
    return false;
  }
  checkpoint->tree_size = doc["tree_size"].get<uint64_t>();
  checkpoint->unix_seconds = doc["time"].get<int64_t>();
  checkpoint->key_id = doc["key_id"].get<std::string>();
  return absl::Base64Unescape(doc["head_hash"].get<std::string>(), &checkpoint->head_hash) &&
         absl::Base64Unescape(doc["signature"].get<std::string>(), &checkpoint->signature);
}

absl::StatusOr<std::unique_ptr<CheckpointFile>> CheckpointFile::Open(const std::string& path,
                                                                     bool append_only_attribute) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  bool enforced = false;
  int flags = 0;
  if (::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
    if ((flags & FS_APPEND_FL) != 0) {
      enforced = true;
    } else if (append_only_attribute) {
      flags |= FS_APPEND_FL;
      enforced = ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
    }
  }
  if (append_only_attribute && !enforced) {
    LogWarning(
        "the checkpoint file cannot carry the append-only attribute here; it is still "
        "only ever appended to",
        {{"path", path}});
  }
  auto file = std::unique_ptr<CheckpointFile>(new CheckpointFile(path, fd, enforced));
  absl::StatusOr<std::string> text = ReadFileToString(path);
  file->needs_newline_ = text.ok() && !text->empty() && text->back() != '\n';
  return file;
}

CheckpointFile::~CheckpointFile() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

absl::Status CheckpointFile::Append(const SignedCheckpoint& checkpoint) {
  std::string line =
      absl::StrCat(needs_newline_ ? "\n" : "", CheckpointToJsonLine(checkpoint), "\n");
  if (::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size()) ||
      ::fsync(fd_) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot append to ", path_, ": ", std::strerror(errno)));
  }
  needs_newline_ = false;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<CheckpointLine>> CheckpointFile::ReadAll() const {
  absl::StatusOr<std::string> text = ReadFileToString(path_);
  if (!text.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot read ", path_));
  }
  std::vector<CheckpointLine> lines;
  size_t start = 0;
  int number = 0;
  while (start < text->size()) {
    const size_t end = text->find('\n', start);
    if (end == std::string::npos) {
      break;  // torn by a crash before its fsync: never acknowledged
    }
    ++number;
    absl::string_view line(text->data() + start, end - start);
    start = end + 1;
    if (line.empty()) {
      continue;
    }
    CheckpointLine parsed;
    parsed.line_number = number;
    parsed.well_formed = ParseCheckpointJsonLine(line, &parsed.checkpoint);
    lines.push_back(std::move(parsed));
  }
  return lines;
}

}  // namespace tidepool::audit
