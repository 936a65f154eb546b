#pragma once

// Per-workspace credentials: what the proxy (and the provisioner, and the scaler) present to a
// workspace's supervisor in the X-Tidepool-Credential header.
//
//   tpc1.<workspace_id>.<caller>.<expiry unix seconds>.<base64url HMAC-SHA256>
//
// The MAC key is the workspace key, HMAC-SHA256(platform key, "tidepool workspace key v1|" +
// workspace id): the provisioner derives it from its platform key and hands it to the
// supervisor at start (never to the tool), so a credential is valid for one workspace only,
// names the one platform identity it was minted for, and expires.

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace tidepool {

// The workspace key for `workspace_id` under the provisioner's 32-byte platform key.
std::string DeriveWorkspaceKey(absl::string_view platform_key, absl::string_view workspace_id);

// The key the stamped files' digests are made under (StampManifestEntry.hmac_sha256):
// HMAC-SHA256(workspace key, "tidepool stamp digest v1"). The supervisor derives it from the
// workspace key it already holds, so no further key material enters the sandbox.
std::string DeriveStampDigestKey(absl::string_view workspace_key);

// The stamp manifest's file name in the stamp directory (supervisor_service.proto).
inline constexpr char kStampManifestName[] = "stamp-manifest.json";

// Mints a credential for `caller` ("proxy", "provisioner", "scaler") valid until `expire`.
std::string MintWorkspaceCredential(absl::string_view workspace_key,
                                    absl::string_view workspace_id, absl::string_view caller,
                                    absl::Time expire);

// Checks a credential in constant time against `workspace_key` and `workspace_id` and returns
// the caller it names. UNAUTHENTICATED (one message for every failure) when it is malformed,
// for another workspace, badly signed or expired at `now`.
absl::StatusOr<std::string> VerifyWorkspaceCredential(absl::string_view workspace_key,
                                                      absl::string_view workspace_id,
                                                      absl::string_view credential, absl::Time now);

}  // namespace tidepool
