#include "services/secrets/keyring.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "lib/crypto/crypto.h"
#include "lib/file_util.h"
#include "nlohmann/json.hpp"
#include "services/secrets/byte_codec.h"
#include "services/secrets/secret_file.h"

namespace tidepool::secrets {
namespace {

constexpr absl::string_view kKeyringFormat = "tidepool.secrets.keyring/v1";
constexpr size_t kKeySize = crypto::kAesKeySize;
// A keyring with more terms than this is malformed (rotation at most daily: 100+ years).
constexpr uint32_t kMaxTerms = 50000;

std::string KeyringAad(uint64_t term) {
  std::string aad(kKeyringFormat);
  aad.push_back('\0');
  AppendU64(&aad, term);
  return aad;
}

absl::Status Sealed(absl::string_view why) {
  return absl::FailedPreconditionError(absl::StrCat("sealed: ", why));
}

constexpr absl::string_view kCannotOpen =
    "the keyring cannot be opened with this master key (a different master key, or an altered "
    "keyring file)";

}  // namespace

absl::StatusOr<Keyring> Keyring::Create(absl::Time now) {
  absl::StatusOr<std::string> kek = crypto::RandomBytes(kKeySize);
  if (!kek.ok()) {
    return kek.status();
  }
  absl::StatusOr<std::string> fingerprint = crypto::RandomBytes(kKeySize);
  if (!fingerprint.ok()) {
    return fingerprint.status();
  }
  Keyring keyring;
  keyring.terms_.push_back(KeyringTerm{1, SecretBytes(*std::move(kek)), now});
  keyring.fingerprint_key_ = SecretBytes(*std::move(fingerprint));
  return keyring;
}

absl::StatusOr<Keyring> Keyring::WithNewTerm(absl::Time now) const {
  absl::StatusOr<std::string> kek = crypto::RandomBytes(kKeySize);
  if (!kek.ok()) {
    return kek.status();
  }
  Keyring next;
  for (const KeyringTerm& term : terms_) {
    next.terms_.push_back(KeyringTerm{term.term, term.key.Clone(), term.create_time});
  }
  next.terms_.push_back(KeyringTerm{active_term() + 1, SecretBytes(*std::move(kek)), now});
  next.fingerprint_key_ = fingerprint_key_.Clone();
  return next;
}

absl::StatusOr<absl::string_view> Keyring::KeyOf(uint64_t term) const {
  for (const KeyringTerm& entry : terms_) {
    if (entry.term == term) {
      return entry.key.view();
    }
  }
  return absl::FailedPreconditionError(absl::StrCat("a data key is wrapped under keyring term ",
                                                    term, ", which this keyring (newest term ",
                                                    active_term(), ") does not have"));
}

std::vector<uint64_t> Keyring::terms() const {
  std::vector<uint64_t> out;
  for (const KeyringTerm& entry : terms_) {
    out.push_back(entry.term);
  }
  return out;
}

absl::StatusOr<std::string> Keyring::Seal(absl::string_view master_key) const {
  if (master_key.size() != kKeySize) {
    return absl::InvalidArgumentError("a master key must be exactly 32 bytes");
  }
  std::string plain;
  AppendU32(&plain, static_cast<uint32_t>(terms_.size()));
  for (const KeyringTerm& entry : terms_) {
    AppendU64(&plain, entry.term);
    AppendU64(&plain, static_cast<uint64_t>(absl::ToUnixMicros(entry.create_time)));
    plain.append(entry.key.view().data(), entry.key.size());
  }
  plain.append(fingerprint_key_.view().data(), fingerprint_key_.size());
  SecretBytes wiped(std::move(plain));
  absl::StatusOr<std::string> sealed =
      crypto::AesGcmSeal(master_key, wiped.view(), KeyringAad(active_term()));
  if (!sealed.ok()) {
    return sealed.status();
  }
  nlohmann::json doc;
  doc["format"] = std::string(kKeyringFormat);
  doc["term"] = active_term();
  doc["sealed"] = absl::Base64Escape(*sealed);
  return doc.dump(2) + "\n";
}

absl::StatusOr<Keyring> Keyring::Unseal(absl::string_view master_key, absl::string_view file) {
  if (master_key.size() != kKeySize) {
    return absl::InvalidArgumentError("a master key must be exactly 32 bytes");
  }
  nlohmann::json doc = nlohmann::json::parse(file.begin(), file.end(), nullptr,
                                             /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || doc.size() != 3 || !doc.contains("format") ||
      !doc.contains("term") || !doc.contains("sealed") || !doc["format"].is_string() ||
      doc["format"].get<std::string>() != kKeyringFormat || !doc["term"].is_number_unsigned() ||
      !doc["sealed"].is_string()) {
    return Sealed("the keyring file is malformed (expected a tidepool.secrets.keyring/v1 object)");
  }
  const uint64_t header_term = doc["term"].get<uint64_t>();
  std::string sealed;
  if (header_term == 0 || !absl::Base64Unescape(doc["sealed"].get<std::string>(), &sealed)) {
    return Sealed("the keyring file is malformed");
  }
  absl::StatusOr<std::string> opened =
      crypto::AesGcmOpen(master_key, sealed, KeyringAad(header_term));
  if (!opened.ok()) {
    return Sealed(kCannotOpen);
  }
  SecretBytes plain(*std::move(opened));
  ByteReader reader(plain.view());
  uint32_t count = 0;
  if (!reader.ReadU32(&count) || count == 0 || count > kMaxTerms) {
    return Sealed("the keyring's content is malformed");
  }
  Keyring keyring;
  for (uint32_t i = 0; i < count; ++i) {
    uint64_t term = 0;
    uint64_t created = 0;
    absl::string_view key;
    if (!reader.ReadU64(&term) || !reader.ReadU64(&created) || !reader.ReadBytes(kKeySize, &key)) {
      return Sealed("the keyring's content is malformed");
    }
    if (term == 0 || (!keyring.terms_.empty() && term <= keyring.terms_.back().term)) {
      return Sealed("the keyring's terms are not strictly increasing");
    }
    keyring.terms_.push_back(KeyringTerm{term, SecretBytes(std::string(key)),
                                         absl::FromUnixMicros(static_cast<int64_t>(created))});
  }
  absl::string_view fingerprint;
  if (!reader.ReadBytes(kKeySize, &fingerprint) || !reader.AtEnd()) {
    return Sealed("the keyring's content is malformed");
  }
  keyring.fingerprint_key_ = SecretBytes(std::string(fingerprint));
  if (keyring.active_term() != header_term) {
    return Sealed("the keyring's header does not match its content");
  }
  return keyring;
}

absl::StatusOr<Keyring> LoadKeyringFile(const std::string& path, absl::string_view master_key) {
  if (!PathExists(path)) {
    return absl::NotFoundError(absl::StrCat("the keyring file ", path, " is missing"));
  }
  absl::StatusOr<std::string> file = ReadFileToString(path);
  if (!file.ok()) {
    return Sealed(absl::StrCat("the keyring file ", path, " cannot be read"));
  }
  absl::StatusOr<Keyring> keyring = Keyring::Unseal(master_key, *file);
  if (!keyring.ok() && keyring.status().code() == absl::StatusCode::kFailedPrecondition) {
    return absl::FailedPreconditionError(absl::StrCat(keyring.status().message(), " (", path, ")"));
  }
  return keyring;
}

absl::Status SaveKeyringFile(const std::string& path, const Keyring& keyring,
                             absl::string_view master_key) {
  absl::StatusOr<std::string> sealed = keyring.Seal(master_key);
  if (!sealed.ok()) {
    return sealed.status();
  }
  return WriteSecretFile(path, *sealed);
}

absl::Status CheckNotRolledBack(const Keyring& keyring, uint64_t highest_term_seen) {
  if (keyring.active_term() < highest_term_seen) {
    return Sealed(absl::StrCat(
        "keyring rollback detected: the keyring file's newest term is ", keyring.active_term(),
        ", but term ", highest_term_seen,
        " was already in use; restore the newest keyring file (an older copy would bring back "
        "retired keys)"));
  }
  return absl::OkStatus();
}

std::string RotationDue(const RotationPolicy& policy, int64_t active_term_encryptions,
                        absl::Time active_term_created, absl::Time now) {
  if (active_term_encryptions >= policy.max_operations) {
    return "operations";
  }
  if (now - active_term_created >= policy.max_age) {
    return "age";
  }
  return "";
}

}  // namespace tidepool::secrets
