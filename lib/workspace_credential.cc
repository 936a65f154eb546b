#include "lib/workspace_credential.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "lib/crypto/crypto.h"

namespace tidepool {
namespace {

std::string Mac(absl::string_view key, absl::string_view prefix) {
  // Hex keeps the credential within [a-z0-9._] (safe in any header).
  return crypto::HexEncode(crypto::HmacSha256(key, prefix));
}

}  // namespace

std::string DeriveWorkspaceKey(absl::string_view platform_key, absl::string_view workspace_id) {
  return crypto::HmacSha256(platform_key, absl::StrCat("tidepool workspace key v1|", workspace_id));
}

std::string DeriveStampDigestKey(absl::string_view workspace_key) {
  return crypto::HmacSha256(workspace_key, "tidepool stamp digest v1");
}

std::string MintWorkspaceCredential(absl::string_view workspace_key,
                                    absl::string_view workspace_id, absl::string_view caller,
                                    absl::Time expire) {
  const std::string prefix =
      absl::StrCat("tpc1.", workspace_id, ".", caller, ".", absl::ToUnixSeconds(expire));
  return absl::StrCat(prefix, ".", Mac(workspace_key, prefix));
}

absl::StatusOr<std::string> VerifyWorkspaceCredential(absl::string_view workspace_key,
                                                      absl::string_view workspace_id,
                                                      absl::string_view credential,
                                                      absl::Time now) {
  const absl::Status invalid = absl::UnauthenticatedError("the workspace credential is not valid");
  if (credential.size() > 256 || workspace_key.empty()) {
    return invalid;
  }
  std::vector<absl::string_view> parts = absl::StrSplit(credential, '.');
  int64_t expire = 0;
  if (parts.size() != 5 || parts[0] != "tpc1" || parts[1] != workspace_id || parts[2].empty() ||
      !absl::SimpleAtoi(parts[3], &expire)) {
    return invalid;
  }
  const absl::string_view prefix = credential.substr(0, credential.rfind('.'));
  if (!crypto::ConstantTimeEquals(Mac(workspace_key, prefix), parts[4])) {
    return invalid;
  }
  if (absl::FromUnixSeconds(expire) <= now) {
    return invalid;
  }
  return std::string(parts[2]);
}

}  // namespace tidepool
