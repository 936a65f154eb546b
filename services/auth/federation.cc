#include "services/auth/federation.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/crypto/crypto.h"
#include "lib/http_client.h"
#include "lib/status_macros.h"
#include "nlohmann/json.hpp"

namespace tidepool::auth {
namespace {

using Json = nlohmann::json;

constexpr absl::Duration kMetadataTtl = absl::Hours(1);

absl::Status Refuse(std::string* reason, absl::string_view code, absl::StatusCode status,
                    absl::string_view message) {
  if (reason != nullptr) {
    *reason = std::string(code);
  }
  return absl::Status(status, message);
}

std::string StringMember(const Json& object, const char* name) {
  auto it = object.find(name);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::vector<std::string> StringArray(const Json& object, const char* name) {
  std::vector<std::string> out;
  auto it = object.find(name);
  if (it != object.end() && it->is_array()) {
    for (const Json& item : *it) {
      if (item.is_string()) out.push_back(item.get<std::string>());
    }
  }
  return out;
}

const std::string* Param(const CallbackContext& callback, const char* name) {
  auto it = callback.params.find(name);
  return it == callback.params.end() ? nullptr : &it->second;
}

// A provider error from the callback ("error=access_denied"). Only the RFC 6749 error code
// is kept, and only if it has the registered shape; error_description is never reflected.
absl::Status ProviderError(const std::string& error, std::string* reason) {
  std::string code = "unknown";
  if (!error.empty() && error.size() <= 64 &&
      std::all_of(error.begin(), error.end(),
                  [](char c) { return absl::ascii_islower(static_cast<unsigned char>(c)) || c == '_'; })) {
    code = error;
  }
  return Refuse(reason, "provider_error", absl::StatusCode::kInvalidArgument,
                absl::StrCat("the sign-in provider did not sign you in (", code,
                             "); try again or use another sign-in method"));
}

// The provider's default scopes followed by the configured extra ones, without repeats.
std::string ScopeList(std::vector<std::string> scopes, const std::vector<std::string>& extra) {
  for (const std::string& scope : extra) {
    if (std::find(scopes.begin(), scopes.end(), scope) == scopes.end()) scopes.push_back(scope);
  }
  return absl::StrJoin(scopes, " ");
}

// The authorization code from a callback, after refusing a provider error or a missing code.
absl::StatusOr<std::string> CallbackCode(const CallbackContext& callback, std::string* reason) {
  if (const std::string* error = Param(callback, "error")) {
    return ProviderError(*error, reason);
  }
  const std::string* code = Param(callback, "code");
  if (code == nullptr || code->empty() || code->size() > 2048) {
    return Refuse(reason, "code_missing", absl::StatusCode::kInvalidArgument,
                  "the sign-in response has no authorization code");
  }
  return *code;
}

std::string EmailDomain(const std::string& email) {
  const size_t at = email.rfind('@');
  return at == std::string::npos ? std::string() : absl::AsciiStrToLower(email.substr(at + 1));
}

// ---------------------------------------------------------------------------------------
// OpenID Connect

struct OidcMetadata {
  std::string issuer;
  std::string authorization_endpoint;
  std::string token_endpoint;
  std::string jwks_uri;
  std::vector<std::string> algorithms;
  bool iss_parameter_supported = false;
  bool client_secret_basic = true;
};

class OidcProvider final : public FederatedProvider {
 public:
  OidcProvider(IdentityProviderConfig config, std::string client_secret, Clock& clock)
      : config_(std::move(config)),
        client_secret_(std::move(client_secret)),
        clock_(clock),
        jwks_([this]() -> absl::StatusOr<std::string> { return FetchJwks(); }, clock) {}

  const IdentityProviderConfig& config() const override { return config_; }

  absl::StatusOr<std::string> AuthorizationUrl(const std::string& redirect_uri,
                                               const std::string& state, const std::string& nonce,
                                               const std::string& code_challenge) override {
    TP_ASSIGN_OR_RETURN(OidcMetadata metadata, Metadata());
    const std::string scopes = ScopeList({"openid", "email", "profile"}, config_.scopes);
    return AppendQuery(metadata.authorization_endpoint,
                       {{"response_type", "code"},
                        {"client_id", config_.client_id},
                        {"redirect_uri", redirect_uri},
                        {"scope", scopes},
                        {"state", state},
                        {"nonce", nonce},
                        {"code_challenge", code_challenge},
                        {"code_challenge_method", "S256"}});
  }

  absl::StatusOr<ExternalIdentity> Complete(const CallbackContext& callback,
                                            std::string* reason) override {
    if (const std::string* error = Param(callback, "error")) {
      return ProviderError(*error, reason);
    }
    TP_ASSIGN_OR_RETURN(OidcMetadata metadata, Metadata());
    const bool templated = absl::StrContains(metadata.issuer, "{tenantid}");
    // RFC 9207: the issuer in the response must be this flow's issuer, checked before any
    // code is sent anywhere (mix-up defence).
    const std::string* iss = Param(callback, "iss");
    if (iss != nullptr && !templated && *iss != metadata.issuer) {
      return Refuse(reason, "issuer_mismatch", absl::StatusCode::kUnauthenticated,
                    "the sign-in response came from a different provider than the one you chose");
    }
    if (iss == nullptr && metadata.iss_parameter_supported && !templated) {
      return Refuse(reason, "issuer_missing", absl::StatusCode::kUnauthenticated,
                    "the sign-in response does not name its issuer");
    }
    TP_ASSIGN_OR_RETURN(const std::string code, CallbackCode(callback, reason));
    std::vector<std::pair<std::string, std::string>> form = {
        {"grant_type", "authorization_code"},
        {"code", code},
        {"redirect_uri", callback.redirect_uri},
        {"code_verifier", callback.code_verifier}};
    HttpRequestOptions options;
    options.headers.emplace_back("Accept", "application/json");
    if (metadata.client_secret_basic) {
      const std::string credentials =
          absl::StrCat(UrlEncode(config_.client_id), ":", UrlEncode(client_secret_));
      options.headers.emplace_back("Authorization",
                                   absl::StrCat("Basic ", absl::Base64Escape(credentials)));
    } else {
      form.emplace_back("client_id", config_.client_id);
      form.emplace_back("client_secret", client_secret_);
    }
    absl::StatusOr<HttpResponse> response = HttpPostForm(metadata.token_endpoint, form, options);
    if (!response.ok()) {
      return Refuse(reason, "provider_unreachable", absl::StatusCode::kUnavailable,
                    "the sign-in provider cannot be reached; try again shortly");
    }
    Json body = Json::parse(response->body, nullptr, /*allow_exceptions=*/false);
    const std::string id_token = body.is_object() ? StringMember(body, "id_token") : "";
    if (response->status != 200 || id_token.empty()) {
      return Refuse(reason, "code_exchange_failed", absl::StatusCode::kUnauthenticated,
                    "the sign-in provider refused to complete the sign-in; start again");
    }
    jose::IdTokenExpectations expect;
    expect.issuer = metadata.issuer;
    expect.client_id = config_.client_id;
    expect.nonce = callback.nonce;
    expect.now = clock_.Now();
    for (const std::string& alg : config_.id_token_algorithms) {
      if (metadata.algorithms.empty() ||
          std::find(metadata.algorithms.begin(), metadata.algorithms.end(), alg) !=
              metadata.algorithms.end()) {
        expect.allowed_algorithms.push_back(alg);
      }
    }
    absl::StatusOr<jose::IdTokenClaims> claims =
        jose::VerifyIdToken(id_token, expect, jwks_, reason);
    if (!claims.ok()) {
      return claims.status();
    }
    ExternalIdentity identity;
    identity.provider_id = config_.id;
    identity.kind = config_.kind;
    identity.email = claims->email;
    identity.display_name = !claims->name.empty() ? claims->name : claims->preferred_username;
    identity.groups = claims->groups;
    identity.tenant_id = claims->tenant_id;
    if (config_.kind == "microsoft") {
      // Entra ID: the account is (tid, oid); its e-mail claims are not verified by
      // Microsoft for every tenant (nOAuth), so they never count as verified here.
      if (claims->tenant_id.empty() || claims->object_id.empty()) {
        return Refuse(reason, "missing_tid_oid", absl::StatusCode::kUnauthenticated,
                      "the identity token has no tenant and object id");
      }
      identity.subject = absl::StrCat(claims->tenant_id, "/", claims->object_id);
      identity.email_verified = false;
      if (identity.email.empty()) identity.email = claims->preferred_username;
    } else {
      identity.subject = absl::StrCat(claims->issuer, "#", claims->subject);
      identity.email_verified = claims->email_verified;
    }
    TP_RETURN_IF_ERROR(CheckAllowRules(config_, identity, reason));
    return identity;
  }

 private:
  absl::StatusOr<OidcMetadata> Metadata() {
    absl::MutexLock lock(&mu_);
    if (metadata_.has_value() && clock_.Now() - metadata_time_ < kMetadataTtl) {
      return *metadata_;
    }
    std::string base = config_.issuer;
    while (!base.empty() && base.back() == '/') base.pop_back();
    const std::string url = absl::StrCat(base, "/.well-known/openid-configuration");
    absl::StatusOr<HttpResponse> response = HttpGet(url);
    absl::Status problem;
    if (!response.ok()) {
      problem = response.status();
    } else if (response->status != 200) {
      problem = absl::UnavailableError(absl::StrCat("HTTP ", response->status));
    } else {
      Json doc = Json::parse(response->body, nullptr, /*allow_exceptions=*/false);
      OidcMetadata metadata;
      if (doc.is_object()) {
        metadata.issuer = StringMember(doc, "issuer");
        metadata.authorization_endpoint = StringMember(doc, "authorization_endpoint");
        metadata.token_endpoint = StringMember(doc, "token_endpoint");
        metadata.jwks_uri = StringMember(doc, "jwks_uri");
        metadata.algorithms = StringArray(doc, "id_token_signing_alg_values_supported");
        auto iss = doc.find("authorization_response_iss_parameter_supported");
        metadata.iss_parameter_supported = iss != doc.end() && iss->is_boolean() && iss->get<bool>();
        std::vector<std::string> methods = StringArray(doc, "token_endpoint_auth_methods_supported");
        metadata.client_secret_basic =
            methods.empty() ||
            std::find(methods.begin(), methods.end(), "client_secret_basic") != methods.end();
        std::vector<std::string> pkce = StringArray(doc, "code_challenge_methods_supported");
        const bool issuer_ok =
            metadata.issuer == config_.issuer ||
            (config_.kind == "microsoft" && absl::StrContains(metadata.issuer, "{tenantid}"));
        if (!issuer_ok) {
          problem = absl::UnavailableError("its discovery document names a different issuer");
        } else if (!pkce.empty() && std::find(pkce.begin(), pkce.end(), "S256") == pkce.end()) {
          problem = absl::UnavailableError("it does not support PKCE with S256");
        } else {
          for (const std::string* url : {&metadata.authorization_endpoint,
                                         &metadata.token_endpoint, &metadata.jwks_uri}) {
            if (absl::Status ok = CheckOutboundUrl(*url, "an endpoint"); !ok.ok() && problem.ok()) {
              problem = absl::UnavailableError("its discovery document lacks a usable endpoint");
            }
          }
        }
        if (problem.ok()) {
          metadata_ = metadata;
          metadata_time_ = clock_.Now();
          return metadata;
        }
      } else {
        problem = absl::UnavailableError("its discovery document is not JSON");
      }
    }
    if (metadata_.has_value()) {
      return *metadata_;  // keep serving the last good metadata while the issuer is down
    }
    return absl::UnavailableError(absl::StrCat("the sign-in provider \"", config_.id,
                                               "\" cannot be reached (", problem.message(),
                                               "); try again shortly"));
  }

  absl::StatusOr<std::string> FetchJwks() {
    std::string uri;
    {
      absl::MutexLock lock(&mu_);
      if (metadata_.has_value()) uri = metadata_->jwks_uri;
    }
    if (uri.empty()) {
      return absl::UnavailableError("no provider metadata yet");
    }
    TP_ASSIGN_OR_RETURN(HttpResponse response, HttpGet(uri));
    if (response.status != 200) {
      return absl::UnavailableError(absl::StrCat("HTTP ", response.status));
    }
    return std::move(response.body);
  }

  const IdentityProviderConfig config_;
  const std::string client_secret_;
  Clock& clock_;
  absl::Mutex mu_;
  std::optional<OidcMetadata> metadata_ ABSL_GUARDED_BY(mu_);
  absl::Time metadata_time_ ABSL_GUARDED_BY(mu_);
  jose::JwksCache jwks_;
};

// ---------------------------------------------------------------------------------------
// GitHub

class GitHubProvider final : public FederatedProvider {
 public:
  GitHubProvider(IdentityProviderConfig config, std::string client_secret)
      : config_(std::move(config)), client_secret_(std::move(client_secret)) {}

  const IdentityProviderConfig& config() const override { return config_; }

  absl::StatusOr<std::string> AuthorizationUrl(const std::string& redirect_uri,
                                               const std::string& state, const std::string&,
                                               const std::string& code_challenge) override {
    std::vector<std::string> defaults = {"read:user", "user:email"};
    if (!config_.allowed_github_orgs.empty()) defaults.push_back("read:org");
    const std::string scopes = ScopeList(std::move(defaults), config_.scopes);
    return AppendQuery(absl::StrCat(config_.github_web_url, "/login/oauth/authorize"),
                       {{"client_id", config_.client_id},
                        {"redirect_uri", redirect_uri},
                        {"scope", scopes},
                        {"state", state},
                        {"code_challenge", code_challenge},
                        {"code_challenge_method", "S256"}});
  }

  absl::StatusOr<ExternalIdentity> Complete(const CallbackContext& callback,
                                            std::string* reason) override {
    TP_ASSIGN_OR_RETURN(const std::string code, CallbackCode(callback, reason));
    HttpRequestOptions options;
    options.headers.emplace_back("Accept", "application/json");
    absl::StatusOr<HttpResponse> response =
        HttpPostForm(absl::StrCat(config_.github_web_url, "/login/oauth/access_token"),
                     {{"client_id", config_.client_id},
                      {"client_secret", client_secret_},
                      {"code", code},
                      {"redirect_uri", callback.redirect_uri},
                      {"code_verifier", callback.code_verifier}},
                     options);
    if (!response.ok()) {
      return Refuse(reason, "provider_unreachable", absl::StatusCode::kUnavailable,
                    "GitHub cannot be reached; try again shortly");
    }
    // GitHub answers errors with HTTP 200 and an "error" member.
    Json token = Json::parse(response->body, nullptr, /*allow_exceptions=*/false);
    const std::string access_token = token.is_object() ? StringMember(token, "access_token") : "";
    if (response->status != 200 || access_token.empty()) {
      return Refuse(reason, "code_exchange_failed", absl::StatusCode::kUnauthenticated,
                    "GitHub refused to complete the sign-in; start again");
    }
    HttpRequestOptions api;
    api.headers = {{"Accept", "application/vnd.github+json"},
                   {"Authorization", absl::StrCat("Bearer ", access_token)},
                   {"X-GitHub-Api-Version", "2022-11-28"}};
    auto get_json = [&](const std::string& path) -> absl::StatusOr<std::pair<int, Json>> {
      absl::StatusOr<HttpResponse> got = HttpGet(absl::StrCat(config_.github_api_url, path), api);
      if (!got.ok()) {
        return Refuse(reason, "provider_unreachable", absl::StatusCode::kUnavailable,
                      "GitHub cannot be reached; try again shortly");
      }
      return std::pair{got->status, Json::parse(got->body, nullptr, /*allow_exceptions=*/false)};
    };
    TP_ASSIGN_OR_RETURN(auto user, get_json("/user"));
    auto id = user.second.is_object() ? user.second.find("id") : user.second.end();
    if (user.first != 200 || id == user.second.end() || !id->is_number_unsigned() ||
        id->get<uint64_t>() == 0) {
      return Refuse(reason, "github_user_failed", absl::StatusCode::kUnauthenticated,
                    "GitHub did not say who you are; start again");
    }
    ExternalIdentity identity;
    identity.provider_id = config_.id;
    identity.kind = config_.kind;
    identity.subject = std::to_string(id->get<uint64_t>());
    identity.display_name = StringMember(user.second, "name");
    if (identity.display_name.empty()) identity.display_name = StringMember(user.second, "login");
    TP_ASSIGN_OR_RETURN(auto emails, get_json("/user/emails"));
    if (emails.first == 200 && emails.second.is_array()) {
      // Only a verified address counts; prefer the primary one.
      for (const Json& entry : emails.second) {
        if (!entry.is_object() || !entry.value("verified", false)) continue;
        const std::string email = StringMember(entry, "email");
        if (email.empty()) continue;
        if (entry.value("primary", false) || identity.email.empty()) {
          identity.email = email;
          identity.email_verified = true;
        }
      }
    }
    for (const std::string& org : config_.allowed_github_orgs) {
      TP_ASSIGN_OR_RETURN(auto membership,
                          get_json(absl::StrCat("/user/memberships/orgs/", UrlEncode(org))));
      if (membership.first == 200 && membership.second.is_object() &&
          StringMember(membership.second, "state") == "active") {
        identity.github_orgs.push_back(org);
      }
    }
    TP_RETURN_IF_ERROR(CheckAllowRules(config_, identity, reason));
    return identity;
  }

 private:
  const IdentityProviderConfig config_;
  const std::string client_secret_;
};

}  // namespace

std::string PkceChallenge(const std::string& verifier) {
  return jose::Base64UrlEncode(crypto::Sha256(verifier));
}

absl::Status CheckAllowRules(const IdentityProviderConfig& config, const ExternalIdentity& identity,
                             std::string* reason) {
  auto deny = [reason](absl::string_view code, absl::string_view message) {
    return Refuse(reason, code, absl::StatusCode::kPermissionDenied, message);
  };
  if (!config.allowed_email_domains.empty()) {
    const std::string domain = EmailDomain(identity.email);
    const bool listed = std::any_of(
        config.allowed_email_domains.begin(), config.allowed_email_domains.end(),
        [&](const std::string& allowed) { return absl::AsciiStrToLower(allowed) == domain; });
    if (!identity.email_verified || !listed) {
      return deny("email_domain_not_allowed",
                  "this deployment accepts sign-ins only from verified addresses in its allowed "
                  "e-mail domains");
    }
  }
  if (!config.allowed_groups.empty() &&
      std::none_of(identity.groups.begin(), identity.groups.end(), [&](const std::string& group) {
        return std::find(config.allowed_groups.begin(), config.allowed_groups.end(), group) !=
               config.allowed_groups.end();
      })) {
    return deny("group_not_allowed", "your account is not in a group allowed to sign in here");
  }
  if (!config.allowed_tenants.empty() &&
      std::find(config.allowed_tenants.begin(), config.allowed_tenants.end(),
                identity.tenant_id) == config.allowed_tenants.end()) {
    return deny("tenant_not_allowed", "your organization's tenant may not sign in here");
  }
  if (!config.allowed_github_orgs.empty() && identity.github_orgs.empty()) {
    return deny("github_org_not_allowed",
                "you are not an active member of a GitHub organization allowed to sign in here");
  }
  return absl::OkStatus();
}

std::unique_ptr<FederatedProvider> MakeFederatedProvider(IdentityProviderConfig config,
                                                         std::string client_secret, Clock& clock) {
  if (config.kind == "github") {
    return std::make_unique<GitHubProvider>(std::move(config), std::move(client_secret));
  }
  return std::make_unique<OidcProvider>(std::move(config), std::move(client_secret), clock);
}

}  // namespace tidepool::auth
