#pragma once

// The provider catalogue: which bring-your-own keys the platform knows, how each value is
// checked, and where each tool profile wants it. The data lives in catalogue.json beside this
// file and is embedded into the binary at build time (catalogue_embed.cc), so a moved or
// installed binary needs no data files.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tidepool/secrets/v1/secrets_service.pb.h"

namespace re2 {
class RE2;
}

namespace tidepool::secrets {

// The catalogue shipped inside this binary: the bytes of services/secrets/catalogue.json as
// they were at build time. Thread-safe.
absl::string_view EmbeddedCatalogueJson();

enum class ProviderCategory { kAiModel, kWebSearch, kMessaging, kDeveloper };
enum class FieldKind { kSecret, kUrl };

// Where one field goes for one tool profile: exactly one of env_var and config_entry is set.
struct CatalogueTarget {
  std::string field_id;
  std::string env_var;
  std::string config_entry;
};

// How one tool profile consumes a provider.
struct CatalogueMapping {
  std::string profile;
  std::vector<CatalogueTarget> targets;
  bool applies_without_restart = false;
};

// One input of a provider.
struct CatalogueField {
  std::string field_id;
  std::string display_name;
  FieldKind kind = FieldKind::kSecret;
  // An RE2 pattern the whole value must match.
  std::string format;
  std::string placeholder;
  bool required = true;
  int max_length = 0;
  // `format`, compiled once. Shared so that the catalogue stays copyable.
  std::shared_ptr<const re2::RE2> regex;
};

// One provider.
struct CatalogueProvider {
  std::string provider_id;
  std::string display_name;
  ProviderCategory category = ProviderCategory::kAiModel;
  std::string description;
  std::string docs_url;
  std::string capability;
  std::string capability_display_name;
  std::vector<CatalogueField> fields;
  std::vector<CatalogueMapping> mappings;

  // The field with this id, or null.
  const CatalogueField* FindField(absl::string_view field_id) const;
  // The mapping for this profile, or null when the profile cannot use the provider.
  const CatalogueMapping* FindMapping(absl::string_view profile) const;
};

// A validated, immutable provider catalogue. Copyable; every const method is thread-safe.
class Catalogue {
 public:
  // Parses and validates catalogue JSON. Everything is checked, and the first problem is
  // reported with its JSON path: invalid JSON, duplicate keys in an object, unknown or missing
  // keys, values of the wrong type, a wrong "format" marker, malformed or duplicate ids
  // (providers, fields, capabilities), a regular expression RE2 cannot compile, a max_length
  // outside [1, 65536], a provider without a required field, a mapping for an undeclared
  // profile, a target naming an unknown field or setting both or neither of env_var and
  // config_entry, a required field without a target in some mapping, and two targets of one
  // profile that write the same environment variable or config entry.
  // Errors: INVALID_ARGUMENT with a one-line message.
  static absl::StatusOr<Catalogue> Parse(absl::string_view json);

  // Parses the embedded catalogue (EmbeddedCatalogueJson()).
  // Errors: INVALID_ARGUMENT as Parse (a build shipped a broken catalogue.json).
  static absl::StatusOr<Catalogue> LoadEmbedded();

  // Providers in file order.
  const std::vector<CatalogueProvider>& providers() const { return providers_; }
  // The tool profiles the catalogue declares ("openclaw", "shell").
  const std::vector<std::string>& profiles() const { return profiles_; }
  bool HasProfile(absl::string_view profile) const;
  // The provider with this id, or null.
  const CatalogueProvider* FindProvider(absl::string_view provider_id) const;
  // The first 16 hex characters of the SHA-256 of the catalogue's bytes: changes whenever the
  // shipped file changes.
  const std::string& version() const { return version_; }

  // Checks `value` for one field before it is stored: the provider and field must exist; the
  // value must be non-empty, at most `max_value_bytes` and the field's max_length, strict UTF-8
  // without control characters, a well-formed http(s) URL for URL fields, and fully match the
  // field's format. Messages name the provider and field and show the non-secret placeholder;
  // they never contain the value or any part of it.
  // Errors: INVALID_ARGUMENT.
  absl::Status ValidateValue(absl::string_view provider_id, absl::string_view field_id,
                             absl::string_view value, size_t max_value_bytes) const;

  // The capabilities unlocked by the stored (provider id, field id) pairs: a provider counts
  // when every one of its required fields is stored. In catalogue order, without duplicates.
  std::vector<std::string> Capabilities(
      const std::vector<std::pair<std::string, std::string>>& stored) const;

  // The catalogue as served by GetCatalogue. With a non-empty `profile`, only that profile's
  // mappings are included (providers it cannot use are listed without mappings); the caller
  // checks that the profile exists.
  v1::GetCatalogueResponse ToProto(absl::string_view profile) const;

 private:
  Catalogue() = default;

  std::vector<std::string> profiles_;
  std::vector<CatalogueProvider> providers_;
  std::string version_;
};

// Converts a catalogue target to its proto form.
v1::FieldTarget TargetToProto(const CatalogueTarget& target);

}  // namespace tidepool::secrets
