#include "lib/identity_providers.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/config_loader.h"
#include "lib/file_util.h"
#include "lib/http_client.h"
#include "yaml-cpp/yaml.h"

namespace tidepool {
namespace {

constexpr size_t kMaxSecretBytes = 4096;

std::string CheckId(const std::string& value) {
  if (value.empty() || value.size() > 32) {
    return "must be 1 to 32 characters";
  }
  for (char c : value) {
    if (!(absl::ascii_islower(static_cast<unsigned char>(c)) ||
          absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '-')) {
      return "may contain only a-z, 0-9 and '-'";
    }
  }
  return value == "local" ? "\"local\" is reserved for local accounts" : "";
}

std::string CheckNoSpace(const std::string& value) {
  return value.find_first_of(" \t\r\n") == std::string::npos ? "" : "must not contain spaces";
}

std::string CheckDomain(const std::string& value) {
  if (value.empty() || value.find('.') == std::string::npos || value.front() == '.' ||
      value.find('@') != std::string::npos || !CheckNoSpace(value).empty()) {
    return "must be a domain such as example.com";
  }
  return "";
}

void BuildEntrySchema(IdentityProviderConfig& p, ConfigSchema& schema) {
  schema.String("id", &p.id, CheckId);
  schema.Enum("kind", &p.kind, {"oidc", "google", "microsoft", "github"});
  schema.String("display_name", &p.display_name, [](const std::string& v) {
    return v.size() <= 64 ? "" : "must be at most 64 bytes";
  });
  schema.String("issuer", &p.issuer, CheckNoSpace);
  schema.String("tenant", &p.tenant, CheckNoSpace);
  schema.String("client_id", &p.client_id, CheckNoSpace);
  schema.String("client_secret_file", &p.client_secret_file);
  schema.String("client_secret_env", &p.client_secret_env, CheckNoSpace);
  schema.StringList("scopes", &p.scopes, CheckNoSpace);
  schema.StringList("id_token_algorithms", &p.id_token_algorithms, [](const std::string& v) {
    return v == "RS256" || v == "PS256" || v == "ES256" || v == "EdDSA"
               ? ""
               : "must be one of RS256, PS256, ES256, EdDSA";
  });
  schema.StringList("allowed_email_domains", &p.allowed_email_domains, CheckDomain);
  schema.StringList("allowed_groups", &p.allowed_groups);
  schema.StringList("allowed_tenants", &p.allowed_tenants, CheckNoSpace);
  schema.StringList("allowed_github_orgs", &p.allowed_github_orgs, CheckNoSpace);
  schema.String("github_web_url", &p.github_web_url, CheckNoSpace);
  schema.String("github_api_url", &p.github_api_url, CheckNoSpace);
}

absl::Status Bad(const std::string& where, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(where, " ", message));
}

absl::Status CheckEntry(IdentityProviderConfig& p, const std::string& where) {
  if (p.id.empty() || p.kind.empty() || p.client_id.empty()) {
    return Bad(where, "needs id, kind and client_id");
  }
  if (p.client_secret_file.empty() == p.client_secret_env.empty()) {
    return Bad(where, "needs exactly one of client_secret_file and client_secret_env");
  }
  if (p.kind == "google" && p.issuer.empty()) {
    p.issuer = "https://accounts.google.com";
  }
  if (p.kind == "microsoft" && p.issuer.empty()) {
    p.issuer = absl::StrCat("https://login.microsoftonline.com/", p.tenant, "/v2.0");
  }
  if (p.kind == "github") {
    if (!p.issuer.empty()) {
      return Bad(where, "issuer does not apply to kind github (use github_web_url)");
    }
    for (const std::string* url : {&p.github_web_url, &p.github_api_url}) {
      if (absl::Status ok = CheckOutboundUrl(*url, "github_web_url/github_api_url"); !ok.ok()) {
        return Bad(where, ok.message());
      }
    }
  } else {
    if (p.issuer.empty()) {
      return Bad(where, "needs issuer for kind oidc");
    }
    if (absl::Status ok = CheckOutboundUrl(p.issuer, "issuer"); !ok.ok()) {
      return Bad(where, ok.message());
    }
    if (!p.allowed_github_orgs.empty()) {
      return Bad(where, "allowed_github_orgs applies only to kind github");
    }
  }
  if (!p.allowed_tenants.empty() && p.kind != "microsoft") {
    return Bad(where, "allowed_tenants applies only to kind microsoft");
  }
  if (p.id_token_algorithms.empty()) {
    return Bad(where, "id_token_algorithms must not be empty");
  }
  if (p.display_name.empty()) {
    static const std::map<std::string, std::string> kNames = {
        {"oidc", "single sign-on"}, {"google", "Google"}, {"microsoft", "Microsoft"},
        {"github", "GitHub"}};
    p.display_name = absl::StrCat("Sign in with ", kNames.at(p.kind));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseIdentityProviders(const YAML::Node& node, const std::string& where,
                                    std::vector<IdentityProviderConfig>* out) {
  if (!node.IsSequence()) {
    return Bad(where, "must be a list of providers");
  }
  std::vector<IdentityProviderConfig> providers;
  std::set<std::string> ids;
  for (size_t i = 0; i < node.size(); ++i) {
    const std::string item_where = absl::StrCat(where, " item ", i + 1);
    if (!node[i].IsMap()) {
      return Bad(item_where, "must be a map with id, kind, client_id, ...");
    }
    IdentityProviderConfig provider;
    ConfigSchema schema;
    BuildEntrySchema(provider, schema);
    if (absl::Status applied = schema.Apply(node[i], item_where); !applied.ok()) {
      return applied;
    }
    if (absl::Status checked = CheckEntry(provider, item_where); !checked.ok()) {
      return checked;
    }
    if (!ids.insert(provider.id).second) {
      return Bad(item_where, absl::StrCat("repeats the id \"", provider.id, "\""));
    }
    providers.push_back(std::move(provider));
  }
  *out = std::move(providers);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ResolveClientSecret(const IdentityProviderConfig& provider) {
  std::string secret;
  if (!provider.client_secret_env.empty()) {
    const char* value = std::getenv(provider.client_secret_env.c_str());
    if (value == nullptr || *value == '\0') {
      return absl::FailedPreconditionError(
          absl::StrCat("sign-in provider \"", provider.id, "\": environment variable ",
                       provider.client_secret_env, " is not set"));
    }
    secret = value;
  } else {
    struct stat st {};
    if (::stat(provider.client_secret_file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat("sign-in provider \"", provider.id, "\": client secret file ",
                       provider.client_secret_file, " does not exist or is not a file"));
    }
    if ((st.st_mode & 077) != 0 || st.st_uid != ::geteuid()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "sign-in provider \"", provider.id, "\": client secret file ",
          provider.client_secret_file,
          " must be owned by this user and readable by its owner only (chmod 600)"));
    }
    absl::StatusOr<std::string> contents = ReadFileToString(provider.client_secret_file);
    if (!contents.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("sign-in provider \"", provider.id, "\": cannot read ",
                       provider.client_secret_file));
    }
    secret = *std::move(contents);
  }
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) {
    secret.pop_back();
  }
  if (secret.empty() || secret.size() > kMaxSecretBytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "sign-in provider \"", provider.id, "\": the client secret is empty or too long"));
  }
  return secret;
}

}  // namespace tidepool
