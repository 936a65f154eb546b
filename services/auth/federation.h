#pragma once

// Federated sign-in protocols: OpenID Connect (any issuer, Google, Microsoft) and GitHub's
// OAuth 2.0 web flow plus its REST API. Each provider builds authorization URLs and turns a
// callback into a verified ExternalIdentity; accounts, invites, sessions and audit are the
// Authenticator's business.
//
// Both protocols use the authorization code flow with PKCE S256 (never "plain") and a state
// value checked by the caller (SignInStateStore) before Complete() runs.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lib/clock.h"
#include "lib/identity_providers.h"
#include "services/auth/jose.h"

namespace tidepool::auth {

// A person as a provider vouches for them, after every protocol check.
struct ExternalIdentity {
  std::string provider_id;
  std::string kind;  // "oidc", "google", "microsoft", "github"
  // The immutable account key: "<iss>#<sub>" for OIDC and Google, "<tid>/<oid>" for
  // Microsoft, the numeric user id for GitHub. Never an e-mail or login name.
  std::string subject;
  std::string email;  // as reported; may be empty
  bool email_verified = false;
  std::string display_name;
  std::vector<std::string> groups;      // OIDC "groups"
  std::string tenant_id;                // Microsoft
  std::vector<std::string> github_orgs; // GitHub orgs among the allowed ones the user is in
};

// What Complete() needs from the stored sign-in state.
struct CallbackContext {
  std::map<std::string, std::string> params;
  std::string nonce;
  std::string code_verifier;
  std::string redirect_uri;
};

class FederatedProvider {
 public:
  virtual ~FederatedProvider() = default;

  virtual const IdentityProviderConfig& config() const = 0;

  // The URL to send the browser to. UNAVAILABLE if the provider's metadata cannot be
  // fetched (OIDC discovery).
  virtual absl::StatusOr<std::string> AuthorizationUrl(const std::string& redirect_uri,
                                                       const std::string& state,
                                                       const std::string& nonce,
                                                       const std::string& code_challenge) = 0;

  // Validates the callback, exchanges the code, verifies what the provider asserts and checks
  // the allow rules. Errors: INVALID_ARGUMENT for a provider error or a missing code,
  // UNAUTHENTICATED for any failed check (issuer mix-up, exchange refused, invalid ID token),
  // PERMISSION_DENIED when the allow rules refuse the identity, UNAVAILABLE when the provider
  // cannot be reached. `*reason` gets a stable reason code for the audit trail.
  virtual absl::StatusOr<ExternalIdentity> Complete(const CallbackContext& callback,
                                                    std::string* reason) = 0;
};

// Builds the provider for `config` (kinds oidc, google, microsoft and github) with its
// resolved client secret. `clock` must outlive it.
std::unique_ptr<FederatedProvider> MakeFederatedProvider(IdentityProviderConfig config,
                                                         std::string client_secret, Clock& clock);

// The PKCE S256 challenge for `verifier` (RFC 7636 §4.2).
std::string PkceChallenge(const std::string& verifier);

// Applies a provider's allow rules (email domain with a verified e-mail, groups, tenants,
// GitHub orgs). PERMISSION_DENIED with `*reason` set when refused.
absl::Status CheckAllowRules(const IdentityProviderConfig& config, const ExternalIdentity& identity,
                             std::string* reason);

}  // namespace tidepool::auth
