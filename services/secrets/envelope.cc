#include "services/secrets/envelope.h"

#include <utility>

#include "lib/crypto/crypto.h"
#include "services/secrets/byte_codec.h"

namespace tidepool::secrets {
namespace {

constexpr absl::string_view kDataKeyDomain = "tidepool.secrets.dek/v1";
constexpr absl::string_view kValueDomain = "tidepool.secrets.value/v1";

}  // namespace

std::string DataKeyAad(const DataKeyBinding& binding) {
  std::string aad(kDataKeyDomain);
  aad.push_back('\0');
  AppendU64(&aad, binding.term);
  AppendU64(&aad, static_cast<uint64_t>(binding.generation));
  AppendField(&aad, binding.user_id);
  return aad;
}

std::string ValueAad(const ValueBinding& binding) {
  std::string aad(kValueDomain);
  aad.push_back('\0');
  aad.push_back(static_cast<char>(kValueFormatV1));
  AppendU64(&aad, static_cast<uint64_t>(binding.generation));
  AppendU64(&aad, static_cast<uint64_t>(binding.version));
  AppendField(&aad, binding.user_id);
  AppendField(&aad, binding.provider_id);
  AppendField(&aad, binding.field_id);
  return aad;
}

absl::StatusOr<SecretBytes> NewDataKey() {
  absl::StatusOr<std::string> key = crypto::RandomBytes(kDataKeySize);
  if (!key.ok()) {
    return key.status();
  }
  return SecretBytes(*std::move(key));
}

absl::StatusOr<std::string> WrapDataKey(absl::string_view kek, const DataKeyBinding& binding,
                                        absl::string_view data_key) {
  if (data_key.size() != kDataKeySize) {
    return absl::InvalidArgumentError("a data key must be exactly 32 bytes");
  }
  return crypto::AesGcmSeal(kek, data_key, DataKeyAad(binding));
}

absl::StatusOr<SecretBytes> UnwrapDataKey(absl::string_view kek, const DataKeyBinding& binding,
                                          absl::string_view wrapped) {
  absl::StatusOr<std::string> key = crypto::AesGcmOpen(kek, wrapped, DataKeyAad(binding));
  if (!key.ok() || key->size() != kDataKeySize) {
    return absl::InternalError("a stored data key failed authentication");
  }
  return SecretBytes(*std::move(key));
}

absl::StatusOr<std::string> SealValue(absl::string_view data_key, const ValueBinding& binding,
                                      absl::string_view plaintext) {
  absl::StatusOr<std::string> sealed = crypto::AesGcmSeal(data_key, plaintext, ValueAad(binding));
  if (!sealed.ok()) {
    return sealed.status();
  }
  std::string out(1, static_cast<char>(kValueFormatV1));
  out.append(*sealed);
  return out;
}

absl::StatusOr<SecretBytes> OpenValue(absl::string_view data_key, const ValueBinding& binding,
                                      absl::string_view sealed) {
  if (sealed.empty() || static_cast<uint8_t>(sealed[0]) != kValueFormatV1) {
    return absl::InternalError("a stored secret failed authentication");
  }
  absl::StatusOr<std::string> plain =
      crypto::AesGcmOpen(data_key, sealed.substr(1), ValueAad(binding));
  if (!plain.ok()) {
    return absl::InternalError("a stored secret failed authentication");
  }
  return SecretBytes(*std::move(plain));
}

std::string Fingerprint(absl::string_view fingerprint_key, absl::string_view value) {
  return crypto::HexEncode(crypto::HmacSha256(fingerprint_key, value)).substr(0, 16);
}

}  // namespace tidepool::secrets
