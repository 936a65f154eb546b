#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tidepool {

// PEM material for one mutual-TLS identity: the platform CA certificate that peers must chain
// to, this identity's certificate and its private key. The key is a secret: never log it.
struct TlsIdentity {
  std::string name;  // the Common Name, e.g. "auth" or "tidepoolctl"
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;
};

// A certificate authority held in memory (for issuing; tests also build rogue ones).
struct CertAuthority {
  std::string cert_pem;
  std::string key_pem;
};

// Creates a self-signed CA (EC P-256, 10 years) named "<org> platform CA".
absl::StatusOr<CertAuthority> CreateCertAuthority(const std::string& org);

// Issues a certificate for `name` signed by `ca`: CN=name, usable as TLS server and client,
// with subject alternative names localhost, 127.0.0.1, ::1, <name> and
// <name>.tidepool.internal. Returns INVALID_ARGUMENT for a malformed CA or name.
absl::StatusOr<TlsIdentity> IssueIdentity(const CertAuthority& ca, const std::string& name,
                                          absl::Duration validity = absl::Hours(24 * 365));

// Makes sure `dir` holds a platform CA and a certificate for each of `names`, creating what is
// missing (dir 0700, keys 0600, written atomically) and re-issuing certificates that expire
// within 30 days. Safe when several processes start at once (an flock on dir/.lock).
// Errors: UNAVAILABLE if the directory cannot be created or written, FAILED_PRECONDITION if
// an existing key file is readable by group or others.
absl::Status EnsurePlatformPki(const std::string& dir, const std::vector<std::string>& names);

// Loads the CA and `name`'s certificate and key from `dir`. Errors: NOT_FOUND if a file is
// missing (the message says to start the platform once or to run with tls.auto_generate),
// FAILED_PRECONDITION if the key file is readable by group or others.
absl::StatusOr<TlsIdentity> LoadTlsIdentity(const std::string& dir, const std::string& name);

}  // namespace tidepool
