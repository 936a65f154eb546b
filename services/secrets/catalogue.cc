#include "services/secrets/catalogue.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "lib/crypto/crypto.h"
#include "lib/text.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"

namespace tidepool::secrets {
namespace {

using Json = nlohmann::json;

constexpr absl::string_view kFormatMarker = "tidepool.secrets.catalogue/v1";
constexpr int kMaxFieldLength = 65536;
constexpr size_t kMaxIdLength = 64;

absl::Status Bad(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("catalogue: ", path, " ", what));
}

bool IsLowerId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxIdLength || !absl::ascii_islower(id[0])) {
    return false;
  }
  return std::all_of(id.begin(), id.end(), [](char c) {
    return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_';
  });
}

bool IsProfileName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxIdLength || !absl::ascii_islower(name[0])) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_' || c == '-';
  });
}

// "model.anthropic": lower-case dotted, at least two parts.
bool IsCapability(absl::string_view capability) {
  std::vector<absl::string_view> parts = absl::StrSplit(capability, '.');
  if (parts.size() < 2 || capability.size() > 128) {
    return false;
  }
  return std::all_of(parts.begin(), parts.end(), IsLowerId);
}

bool IsEnvVarName(absl::string_view name) {
  if (name.empty() || name.size() > 128 || absl::ascii_isdigit(name[0])) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isupper(c) || absl::ascii_isdigit(c) || c == '_';
  });
}

// "models.providers.anthropic.apiKey": dot-separated segments of letters, digits, '_' and '-'.
bool IsConfigEntry(absl::string_view entry) {
  if (entry.empty() || entry.size() > 256) {
    return false;
  }
  for (absl::string_view part : absl::StrSplit(entry, '.')) {
    if (part.empty() || !std::all_of(part.begin(), part.end(), [](char c) {
          return absl::ascii_isalnum(c) || c == '_' || c == '-';
        })) {
      return false;
    }
  }
  return true;
}

// The object at `path` must have every key of `required` and nothing outside `required`.
absl::Status CheckObject(const Json& value, const std::string& path,
                         std::initializer_list<const char*> required) {
  if (!value.is_object()) {
    return Bad(path, "must be an object");
  }
  std::set<std::string> known(required.begin(), required.end());
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (known.count(it.key()) == 0) {
      return Bad(path, absl::StrCat("has an unknown key \"", it.key(), "\""));
    }
  }
  for (const char* key : required) {
    if (!value.contains(key)) {
      return Bad(path, absl::StrCat("is missing the key \"", key, "\""));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> GetString(const Json& object, const char* key,
                                      const std::string& path) {
  const Json& value = object.at(key);
  if (!value.is_string()) {
    return Bad(absl::StrCat(path, ".", key), "must be a string");
  }
  return value.get<std::string>();
}

absl::StatusOr<bool> GetBool(const Json& object, const char* key, const std::string& path) {
  const Json& value = object.at(key);
  if (!value.is_boolean()) {
    return Bad(absl::StrCat(path, ".", key), "must be true or false");
  }
  return value.get<bool>();
}

absl::StatusOr<int64_t> GetInt(const Json& object, const char* key, const std::string& path) {
  const Json& value = object.at(key);
  if (!value.is_number_integer()) {
    return Bad(absl::StrCat(path, ".", key), "must be an integer");
  }
  return value.get<int64_t>();
}

absl::StatusOr<std::string> GetNonEmptyText(const Json& object, const char* key,
                                            const std::string& path) {
  absl::StatusOr<std::string> text = GetString(object, key, path);
  if (text.ok() && (text->empty() || !IsCleanUtf8(*text))) {
    return Bad(absl::StrCat(path, ".", key),
               "must be non-empty UTF-8 text without control characters");
  }
  return text;
}

// Parses JSON, refusing duplicate keys in any object (nlohmann keeps the last silently).
absl::StatusOr<Json> ParseStrictJson(absl::string_view text) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto callback = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!open_objects.empty()) {
          open_objects.pop_back();
        }
        break;
      case Json::parse_event_t::key:
        if (!open_objects.empty() &&
            !open_objects.back().insert(parsed.get<std::string>()).second && duplicate.empty()) {
          duplicate = parsed.get<std::string>();
        }
        break;
      default:
        break;
    }
    return true;
  };
  Json doc;
  try {
    doc = Json::parse(text.begin(), text.end(), callback);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("catalogue: not valid JSON: ", e.what()));
  }
  if (!duplicate.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("catalogue: the key \"", duplicate, "\" appears twice in one object"));
  }
  return doc;
}

absl::StatusOr<ProviderCategory> ParseCategory(const std::string& name, const std::string& path) {
  if (name == "ai_model") {
    return ProviderCategory::kAiModel;
  }
  if (name == "web_search") {
    return ProviderCategory::kWebSearch;
  }
  if (name == "messaging") {
    return ProviderCategory::kMessaging;
  }
  if (name == "developer") {
    return ProviderCategory::kDeveloper;
  }
  return Bad(path, "must be one of ai_model, web_search, messaging, developer");
}

absl::StatusOr<CatalogueField> ParseField(const Json& value, const std::string& path) {
  absl::Status shape = CheckObject(
      value, path,
      {"id", "display_name", "kind", "format", "placeholder", "required", "max_length"});
  if (!shape.ok()) {
    return shape;
  }
  CatalogueField field;
  absl::StatusOr<std::string> id = GetString(value, "id", path);
  if (!id.ok()) {
    return id.status();
  }
  if (!IsLowerId(*id)) {
    return Bad(path + ".id", "must match [a-z][a-z0-9_]* (at most 64 characters)");
  }
  field.field_id = *id;
  absl::StatusOr<std::string> display = GetNonEmptyText(value, "display_name", path);
  if (!display.ok()) {
    return display.status();
  }
  field.display_name = *display;
  absl::StatusOr<std::string> kind = GetString(value, "kind", path);
  if (!kind.ok()) {
    return kind.status();
  }
  if (*kind == "secret") {
    field.kind = FieldKind::kSecret;
  } else if (*kind == "url") {
    field.kind = FieldKind::kUrl;
  } else {
    return Bad(path + ".kind", "must be \"secret\" or \"url\"");
  }
  absl::StatusOr<std::string> format = GetString(value, "format", path);
  if (!format.ok()) {
    return format.status();
  }
  if (format->empty()) {
    return Bad(path + ".format", "must be a non-empty RE2 regular expression");
  }
  re2::RE2::Options options;
  options.set_log_errors(false);
  auto regex = std::make_shared<const re2::RE2>(*format, options);
  if (!regex->ok()) {
    return Bad(path + ".format",
               absl::StrCat("is not a valid RE2 regular expression: ", regex->error()));
  }
  field.format = *format;
  field.regex = std::move(regex);
  absl::StatusOr<std::string> placeholder = GetString(value, "placeholder", path);
  if (!placeholder.ok()) {
    return placeholder.status();
  }
  if (!IsCleanUtf8(*placeholder)) {
    return Bad(path + ".placeholder", "must be UTF-8 text without control characters");
  }
  field.placeholder = *placeholder;
  absl::StatusOr<bool> required = GetBool(value, "required", path);
  if (!required.ok()) {
    return required.status();
  }
  field.required = *required;
  absl::StatusOr<int64_t> max_length = GetInt(value, "max_length", path);
  if (!max_length.ok()) {
    return max_length.status();
  }
  if (*max_length < 1 || *max_length > kMaxFieldLength) {
    return Bad(path + ".max_length", "must be between 1 and 65536");
  }
  field.max_length = static_cast<int>(*max_length);
  return field;
}

absl::StatusOr<CatalogueMapping> ParseMapping(const Json& value, const std::string& profile,
                                              const CatalogueProvider& provider,
                                              const std::string& path) {
  absl::Status shape = CheckObject(value, path, {"applies_without_restart", "targets"});
  if (!shape.ok()) {
    return shape;
  }
  CatalogueMapping mapping;
  mapping.profile = profile;
  absl::StatusOr<bool> hot = GetBool(value, "applies_without_restart", path);
  if (!hot.ok()) {
    return hot.status();
  }
  mapping.applies_without_restart = *hot;
  const Json& targets = value.at("targets");
  if (!targets.is_array() || targets.empty()) {
    return Bad(path + ".targets", "must be a non-empty list");
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    const std::string target_path = absl::StrCat(path, ".targets[", i, "]");
    const Json& target = targets[i];
    if (!target.is_object()) {
      return Bad(target_path, "must be an object");
    }
    const bool has_env = target.contains("env_var");
    const bool has_config = target.contains("config_entry");
    if (has_env == has_config) {
      return Bad(target_path, "must set exactly one of \"env_var\" and \"config_entry\"");
    }
    absl::Status target_shape =
        CheckObject(target, target_path, {"field", has_env ? "env_var" : "config_entry"});
    if (!target_shape.ok()) {
      return target_shape;
    }
    CatalogueTarget parsed;
    absl::StatusOr<std::string> field = GetString(target, "field", target_path);
    if (!field.ok()) {
      return field.status();
    }
    if (provider.FindField(*field) == nullptr) {
      return Bad(target_path + ".field",
                 absl::StrCat("names \"", *field, "\", which is not a field of the provider"));
    }
    parsed.field_id = *field;
    if (has_env) {
      absl::StatusOr<std::string> env = GetString(target, "env_var", target_path);
      if (!env.ok()) {
        return env.status();
      }
      if (!IsEnvVarName(*env)) {
        return Bad(target_path + ".env_var", "must match [A-Z_][A-Z0-9_]*");
      }
      parsed.env_var = *env;
    } else {
      absl::StatusOr<std::string> entry = GetString(target, "config_entry", target_path);
      if (!entry.ok()) {
        return entry.status();
      }
      if (!IsConfigEntry(*entry)) {
        return Bad(target_path + ".config_entry",
                   "must be a dotted path of letters, digits, '_' and '-'");
      }
      parsed.config_entry = *entry;
    }
    mapping.targets.push_back(std::move(parsed));
  }
  for (const CatalogueField& field : provider.fields) {
    if (!field.required) {
      continue;
    }
    const bool mapped =
        std::any_of(mapping.targets.begin(), mapping.targets.end(),
                    [&](const CatalogueTarget& t) { return t.field_id == field.field_id; });
    if (!mapped) {
      return Bad(path,
                 absl::StrCat("has no target for the required field \"", field.field_id, "\""));
    }
  }
  return mapping;
}

absl::StatusOr<CatalogueProvider> ParseProvider(const Json& value,
                                                const std::vector<std::string>& profiles,
                                                const std::string& path) {
  absl::Status shape = CheckObject(value, path,
                                   {"id", "display_name", "category", "description", "docs_url",
                                    "capability", "capability_display_name", "fields", "profiles"});
  if (!shape.ok()) {
    return shape;
  }
  CatalogueProvider provider;
  absl::StatusOr<std::string> id = GetString(value, "id", path);
  if (!id.ok()) {
    return id.status();
  }
  if (!IsLowerId(*id)) {
    return Bad(path + ".id", "must match [a-z][a-z0-9_]* (at most 64 characters)");
  }
  provider.provider_id = *id;
  const std::string where = absl::StrCat(path, " (\"", *id, "\")");
  for (auto [key, out] :
       {std::pair{"display_name", &provider.display_name},
        std::pair{"description", &provider.description},
        std::pair{"capability_display_name", &provider.capability_display_name}}) {
    absl::StatusOr<std::string> text = GetNonEmptyText(value, key, where);
    if (!text.ok()) {
      return text.status();
    }
    *out = *text;
  }
  absl::StatusOr<std::string> category = GetString(value, "category", where);
  if (!category.ok()) {
    return category.status();
  }
  absl::StatusOr<ProviderCategory> parsed_category = ParseCategory(*category, where + ".category");
  if (!parsed_category.ok()) {
    return parsed_category.status();
  }
  provider.category = *parsed_category;
  absl::StatusOr<std::string> docs = GetString(value, "docs_url", where);
  if (!docs.ok()) {
    return docs.status();
  }
  if (!absl::StartsWith(*docs, "https://") || !IsCleanUtf8(*docs) ||
      docs->find(' ') != std::string::npos) {
    return Bad(where + ".docs_url", "must be an https:// URL");
  }
  provider.docs_url = *docs;
  absl::StatusOr<std::string> capability = GetString(value, "capability", where);
  if (!capability.ok()) {
    return capability.status();
  }
  if (!IsCapability(*capability)) {
    return Bad(where + ".capability", "must be lower-case and dotted, like \"model.anthropic\"");
  }
  provider.capability = *capability;

  const Json& fields = value.at("fields");
  if (!fields.is_array() || fields.empty()) {
    return Bad(where + ".fields", "must be a non-empty list");
  }
  for (size_t i = 0; i < fields.size(); ++i) {
    absl::StatusOr<CatalogueField> field =
        ParseField(fields[i], absl::StrCat(where, ".fields[", i, "]"));
    if (!field.ok()) {
      return field.status();
    }
    if (provider.FindField(field->field_id) != nullptr) {
      return Bad(absl::StrCat(where, ".fields[", i, "].id"),
                 absl::StrCat("\"", field->field_id, "\" is used twice"));
    }
    provider.fields.push_back(*std::move(field));
  }
  if (std::none_of(provider.fields.begin(), provider.fields.end(),
                   [](const CatalogueField& f) { return f.required; })) {
    return Bad(where + ".fields", "must have at least one required field");
  }

  const Json& mappings = value.at("profiles");
  if (!mappings.is_object() || mappings.empty()) {
    return Bad(where + ".profiles", "must be a non-empty object keyed by tool profile");
  }
  for (auto it = mappings.begin(); it != mappings.end(); ++it) {
    const std::string mapping_path = absl::StrCat(where, ".profiles.", it.key());
    if (std::find(profiles.begin(), profiles.end(), it.key()) == profiles.end()) {
      return Bad(mapping_path, "is not a profile declared in the top-level \"profiles\" list");
    }
    absl::StatusOr<CatalogueMapping> mapping =
        ParseMapping(it.value(), it.key(), provider, mapping_path);
    if (!mapping.ok()) {
      return mapping.status();
    }
    provider.mappings.push_back(*std::move(mapping));
  }
  return provider;
}

// A well-formed http(s) URL without credentials or fragment, with a host and a valid port.
bool IsAcceptableUrl(absl::string_view url) {
  absl::string_view rest = url;
  if (!absl::ConsumePrefix(&rest, "https://") && !absl::ConsumePrefix(&rest, "http://")) {
    return false;
  }
  for (char c : url) {
    if (c <= 0x20 || c >= 0x7f) {
      return false;
    }
  }
  if (url.find('#') != absl::string_view::npos) {
    return false;
  }
  const size_t authority_end = rest.find_first_of("/?");
  absl::string_view authority = rest.substr(0, authority_end);
  if (authority.empty() || authority.find('@') != absl::string_view::npos) {
    return false;
  }
  absl::string_view host = authority;
  absl::string_view port;
  if (host.front() == '[') {
    const size_t close = host.find(']');
    if (close == absl::string_view::npos || close == 1) {
      return false;
    }
    port = host.substr(close + 1);
    host = host.substr(0, close + 1);
    if (!port.empty() && !absl::ConsumePrefix(&port, ":")) {
      return false;
    }
  } else if (const size_t colon = host.find(':'); colon != absl::string_view::npos) {
    port = host.substr(colon + 1);
    host = host.substr(0, colon);
    if (port.empty()) {
      return false;
    }
  }
  if (host.empty()) {
    return false;
  }
  if (!port.empty()) {
    int number = 0;
    if (port.size() > 5 || !absl::SimpleAtoi(port, &number) || number < 1 || number > 65535) {
      return false;
    }
  }
  return true;
}

}  // namespace

const CatalogueField* CatalogueProvider::FindField(absl::string_view field_id) const {
  for (const CatalogueField& field : fields) {
    if (field.field_id == field_id) {
      return &field;
    }
  }
  return nullptr;
}

const CatalogueMapping* CatalogueProvider::FindMapping(absl::string_view profile) const {
  for (const CatalogueMapping& mapping : mappings) {
    if (mapping.profile == profile) {
      return &mapping;
    }
  }
  return nullptr;
}

absl::StatusOr<Catalogue> Catalogue::Parse(absl::string_view json) {
  absl::StatusOr<Json> doc = ParseStrictJson(json);
  if (!doc.ok()) {
    return doc.status();
  }
  absl::Status shape = CheckObject(*doc, "(top level)", {"format", "profiles", "providers"});
  if (!shape.ok()) {
    return shape;
  }
  absl::StatusOr<std::string> format = GetString(*doc, "format", "(top level)");
  if (!format.ok()) {
    return format.status();
  }
  if (*format != kFormatMarker) {
    return Bad("format", absl::StrCat("must be \"", kFormatMarker, "\""));
  }
  Catalogue catalogue;
  const Json& profiles = doc->at("profiles");
  if (!profiles.is_array() || profiles.empty()) {
    return Bad("profiles", "must be a non-empty list of tool profile names");
  }
  for (size_t i = 0; i < profiles.size(); ++i) {
    const std::string path = absl::StrCat("profiles[", i, "]");
    if (!profiles[i].is_string() || !IsProfileName(profiles[i].get<std::string>())) {
      return Bad(path, "must be a profile name matching [a-z][a-z0-9_-]*");
    }
    const std::string name = profiles[i].get<std::string>();
    if (catalogue.HasProfile(name)) {
      return Bad(path, absl::StrCat("\"", name, "\" is listed twice"));
    }
    catalogue.profiles_.push_back(name);
  }
  const Json& providers = doc->at("providers");
  if (!providers.is_array() || providers.empty()) {
    return Bad("providers", "must be a non-empty list");
  }
  std::set<std::string> capabilities;
  // Per profile, every environment variable and config entry written, and by whom.
  std::map<std::pair<std::string, std::string>, std::string> destinations;
  for (size_t i = 0; i < providers.size(); ++i) {
    const std::string path = absl::StrCat("providers[", i, "]");
    absl::StatusOr<CatalogueProvider> provider =
        ParseProvider(providers[i], catalogue.profiles_, path);
    if (!provider.ok()) {
      return provider.status();
    }
    if (catalogue.FindProvider(provider->provider_id) != nullptr) {
      return Bad(path + ".id", absl::StrCat("\"", provider->provider_id, "\" is used twice"));
    }
    if (!capabilities.insert(provider->capability).second) {
      return Bad(path + ".capability",
                 absl::StrCat("\"", provider->capability, "\" is used by two providers"));
    }
    for (const CatalogueMapping& mapping : provider->mappings) {
      for (const CatalogueTarget& target : mapping.targets) {
        const std::string destination = target.env_var.empty()
                                            ? absl::StrCat("config entry ", target.config_entry)
                                            : absl::StrCat("environment variable ", target.env_var);
        const std::string writer = absl::StrCat(provider->provider_id, ".", target.field_id);
        auto [it, inserted] = destinations.emplace(std::pair{mapping.profile, destination}, writer);
        if (!inserted) {
          return Bad(
              absl::StrCat(path, ".profiles.", mapping.profile),
              absl::StrCat("writes the ", destination, ", which ", it->second, " already writes"));
        }
      }
    }
    catalogue.providers_.push_back(*std::move(provider));
  }
  catalogue.version_ = crypto::HexEncode(crypto::Sha256(json)).substr(0, 16);
  return catalogue;
}

absl::StatusOr<Catalogue> Catalogue::LoadEmbedded() { return Parse(EmbeddedCatalogueJson()); }

bool Catalogue::HasProfile(absl::string_view profile) const {
  return std::find(profiles_.begin(), profiles_.end(), profile) != profiles_.end();
}

const CatalogueProvider* Catalogue::FindProvider(absl::string_view provider_id) const {
  for (const CatalogueProvider& provider : providers_) {
    if (provider.provider_id == provider_id) {
      return &provider;
    }
  }
  return nullptr;
}

absl::Status Catalogue::ValidateValue(absl::string_view provider_id, absl::string_view field_id,
                                      absl::string_view value, size_t max_value_bytes) const {
  const CatalogueProvider* provider = FindProvider(provider_id);
  if (provider == nullptr) {
    return absl::InvalidArgumentError(
        IsLowerId(provider_id)
            ? absl::StrCat("provider \"", provider_id, "\" is not in the catalogue")
            : std::string("provider_id is missing or malformed"));
  }
  const CatalogueField* field = provider->FindField(field_id);
  if (field == nullptr) {
    return absl::InvalidArgumentError(
        IsLowerId(field_id)
            ? absl::StrCat("provider \"", provider_id, "\" has no field \"", field_id, "\"")
            : std::string("field_id is missing or malformed"));
  }
  const std::string name = absl::StrCat("the value of ", provider_id, ".", field_id);
  if (value.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " is empty"));
  }
  if (value.size() > max_value_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " is ", value.size(), " bytes; the limit is ", max_value_bytes));
  }
  if (value.size() > static_cast<size_t>(field->max_length)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " is ", value.size(), " bytes; this field takes at most ", field->max_length));
  }
  if (!IsCleanUtf8(value)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name,
                     " contains control characters, line breaks or invalid UTF-8; paste it without "
                     "surrounding whitespace"));
  }
  const std::string hint =
      field->placeholder.empty() ? std::string() : absl::StrCat(" (", field->placeholder, ")");
  if (field->kind == FieldKind::kUrl && !IsAcceptableUrl(value)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name,
                     " must be an http:// or https:// URL with a host, without credentials or a "
                     "fragment",
                     hint));
  }
  if (!re2::RE2::FullMatch(re2::StringPiece(value.data(), value.size()), *field->regex)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " does not have the expected format", hint));
  }
  return absl::OkStatus();
}

std::vector<std::string> Catalogue::Capabilities(
    const std::vector<std::pair<std::string, std::string>>& stored) const {
  std::set<std::pair<std::string, std::string>> have(stored.begin(), stored.end());
  std::vector<std::string> capabilities;
  for (const CatalogueProvider& provider : providers_) {
    const bool complete =
        std::all_of(provider.fields.begin(), provider.fields.end(), [&](const CatalogueField& f) {
          return !f.required || have.count({provider.provider_id, f.field_id}) > 0;
        });
    if (complete) {
      capabilities.push_back(provider.capability);
    }
  }
  return capabilities;
}

v1::FieldTarget TargetToProto(const CatalogueTarget& target) {
  v1::FieldTarget out;
  out.set_field_id(target.field_id);
  if (!target.env_var.empty()) {
    out.set_env_var(target.env_var);
  } else {
    out.set_config_entry(target.config_entry);
  }
  return out;
}

v1::GetCatalogueResponse Catalogue::ToProto(absl::string_view profile) const {
  v1::GetCatalogueResponse response;
  response.set_catalogue_version(version_);
  for (const CatalogueProvider& provider : providers_) {
    v1::Provider* out = response.add_providers();
    out->set_provider_id(provider.provider_id);
    out->set_display_name(provider.display_name);
    switch (provider.category) {
      case ProviderCategory::kAiModel:
        out->set_category(v1::PROVIDER_CATEGORY_AI_MODEL);
        break;
      case ProviderCategory::kWebSearch:
        out->set_category(v1::PROVIDER_CATEGORY_WEB_SEARCH);
        break;
      case ProviderCategory::kMessaging:
        out->set_category(v1::PROVIDER_CATEGORY_MESSAGING);
        break;
      case ProviderCategory::kDeveloper:
        out->set_category(v1::PROVIDER_CATEGORY_DEVELOPER);
        break;
    }
    out->set_description(provider.description);
    out->set_docs_url(provider.docs_url);
    out->set_capability(provider.capability);
    out->set_capability_display_name(provider.capability_display_name);
    for (const CatalogueField& field : provider.fields) {
      v1::ProviderField* f = out->add_fields();
      f->set_field_id(field.field_id);
      f->set_display_name(field.display_name);
      f->set_kind(field.kind == FieldKind::kUrl ? v1::FIELD_KIND_URL : v1::FIELD_KIND_SECRET);
      f->set_format(field.format);
      f->set_placeholder(field.placeholder);
      f->set_required(field.required);
      f->set_max_length(field.max_length);
    }
    for (const CatalogueMapping& mapping : provider.mappings) {
      if (!profile.empty() && mapping.profile != profile) {
        continue;
      }
      v1::ProfileMapping* m = out->add_profile_mappings();
      m->set_profile(mapping.profile);
      m->set_applies_without_restart(mapping.applies_without_restart);
      for (const CatalogueTarget& target : mapping.targets) {
        *m->add_targets() = TargetToProto(target);
      }
    }
  }
  return response;
}

}  // namespace tidepool::secrets
