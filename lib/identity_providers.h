#pragma once

// The sign-in providers section of tidepool.yaml (`auth.providers`), parsed and validated.
//
//   auth:
//     invite_required: true
//     providers:
//       - id: google                 # [a-z0-9-], used in the callback path /auth/callback/<id>
//         kind: google               # oidc | google | microsoft | github
//         client_id: 1234.apps.googleusercontent.com
//         client_secret_file: /etc/tidepool/google.secret   # 0600; or client_secret_env
//         allowed_email_domains: [example.com]
//       - id: corp
//         kind: oidc
//         issuer: https://sso.example.com
//         allowed_groups: [engineering]
//       - id: github
//         kind: github
//         allowed_github_orgs: [acme]

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace YAML {
class Node;
}

namespace tidepool {

struct IdentityProviderConfig {
  std::string id;
  // "oidc", "google", "microsoft" or "github".
  std::string kind;
  // The sign-in button's label; empty means "Sign in with <kind's name>".
  std::string display_name;
  // OIDC issuer (required for kind oidc; defaults for google and microsoft).
  std::string issuer;
  // Microsoft: a tenant id (single tenant), "organizations" or "common" (multi-tenant).
  std::string tenant = "organizations";
  std::string client_id;
  // Where the client secret comes from: a file readable only by its owner, or an
  // environment variable. Exactly one must be set.
  std::string client_secret_file;
  std::string client_secret_env;
  // Extra scopes beyond the kind's defaults (openid email profile; GitHub read:user
  // user:email, plus read:org when orgs are required).
  std::vector<std::string> scopes;
  // ID-token signing algorithms accepted (intersected with the issuer's metadata).
  std::vector<std::string> id_token_algorithms = {"RS256"};
  // Allow rules; an empty list allows everyone.
  std::vector<std::string> allowed_email_domains;  // needs a verified e-mail
  std::vector<std::string> allowed_groups;         // OIDC "groups" claim
  std::vector<std::string> allowed_tenants;        // Microsoft "tid"
  std::vector<std::string> allowed_github_orgs;
  // GitHub endpoints (GitHub Enterprise Server, or a local stand-in in tests).
  std::string github_web_url = "https://github.com";
  std::string github_api_url = "https://api.github.com";
};

// Parses the `auth.providers` list. `where` prefixes messages ("FILE:LINE: 'auth.providers'").
// Checks each entry's keys and types, unique ids, the kind's required keys and URL schemes;
// does not read secret files (ResolveClientSecret does, when the service starts).
absl::Status ParseIdentityProviders(const YAML::Node& node, const std::string& where,
                                    std::vector<IdentityProviderConfig>* out);

// Reads the provider's client secret from its file (which must be a regular file readable
// by its owner only) or environment variable. FAILED_PRECONDITION with a message naming the
// provider and the file or variable, never the secret.
absl::StatusOr<std::string> ResolveClientSecret(const IdentityProviderConfig& provider);

}  // namespace tidepool
