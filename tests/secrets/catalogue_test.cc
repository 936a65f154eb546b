// The provider catalogue: the shipped file's content, the loader's validation, the value
// checks Put relies on, and the proto form GetCatalogue serves.
#include "services/secrets/catalogue.h"

#include <functional>
#include <map>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/file_util.h"
#include "nlohmann/json.hpp"
#include "tests/secrets/test_support.h"
#include "tests/testing/status_matchers.h"

namespace tidepool::secrets {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::UnorderedElementsAre;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

Catalogue Embedded() {
  absl::StatusOr<Catalogue> catalogue = Catalogue::LoadEmbedded();
  EXPECT_THAT(catalogue, IsOk());
  return *std::move(catalogue);
}

// Parses the shipped catalogue after `edit` changed it.
absl::StatusOr<Catalogue> ParseEdited(const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json doc = nlohmann::json::parse(std::string(EmbeddedCatalogueJson()));
  edit(doc);
  return Catalogue::Parse(doc.dump());
}

nlohmann::json& Provider(nlohmann::json& doc, const std::string& id) {
  for (nlohmann::json& provider : doc["providers"]) {
    if (provider["id"] == id) {
      return provider;
    }
  }
  ADD_FAILURE() << "no provider " << id;
  return doc["providers"][0];
}

TEST(CatalogueTest, EmbeddedBytesAreTheSourceFile) {
  absl::StatusOr<std::string> source =
      ReadFileToString(std::string(TIDEPOOL_SOURCE_DIR) + "/services/secrets/catalogue.json");
  ASSERT_THAT(source, IsOk());
  EXPECT_EQ(std::string(EmbeddedCatalogueJson()), *source);
}

TEST(CatalogueTest, ShipsTwentyProvidersInEveryCategory) {
  Catalogue catalogue = Embedded();
  ASSERT_EQ(catalogue.providers().size(), 20u);
  std::map<ProviderCategory, std::set<std::string>> by_category;
  for (const CatalogueProvider& provider : catalogue.providers()) {
    by_category[provider.category].insert(provider.provider_id);
  }
  EXPECT_THAT(
      by_category[ProviderCategory::kAiModel],
      UnorderedElementsAre("anthropic", "openai", "gemini", "mistral", "xai", "groq", "openrouter",
                           "deepseek", "together", "fireworks", "moonshot", "github_copilot",
                           "model_server"));
  EXPECT_THAT(by_category[ProviderCategory::kWebSearch],
              UnorderedElementsAre("brave", "tavily", "perplexity", "searxng"));
  EXPECT_THAT(by_category[ProviderCategory::kMessaging], UnorderedElementsAre("slack", "telegram"));
  EXPECT_THAT(by_category[ProviderCategory::kDeveloper], UnorderedElementsAre("github"));
  EXPECT_THAT(catalogue.profiles(), ::testing::ElementsAre("openclaw", "shell"));
}

TEST(CatalogueTest, EveryProviderIsCompleteForOpenClaw) {
  Catalogue catalogue = Embedded();
  std::set<std::string> capabilities;
  for (const CatalogueProvider& provider : catalogue.providers()) {
    SCOPED_TRACE(provider.provider_id);
    EXPECT_FALSE(provider.display_name.empty());
    EXPECT_FALSE(provider.description.empty());
    EXPECT_EQ(provider.docs_url.rfind("https://", 0), 0u);
    EXPECT_TRUE(capabilities.insert(provider.capability).second);
    const CatalogueMapping* openclaw = provider.FindMapping("openclaw");
    ASSERT_NE(openclaw, nullptr);
    for (const CatalogueField& field : provider.fields) {
      EXPECT_FALSE(field.format.empty());
      EXPECT_GT(field.max_length, 0);
      bool mapped = false;
      for (const CatalogueTarget& target : openclaw->targets) {
        mapped |= target.field_id == field.field_id;
        EXPECT_NE(target.env_var.empty(), target.config_entry.empty());
      }
      EXPECT_TRUE(mapped) << field.field_id;
    }
  }
}

TEST(CatalogueTest, MappingsFollowOpenClawsDocumentedKeys) {
  Catalogue catalogue = Embedded();
  auto openclaw_target = [&](const std::string& provider, const std::string& field) {
    const CatalogueMapping* mapping = catalogue.FindProvider(provider)->FindMapping("openclaw");
    for (const CatalogueTarget& target : mapping->targets) {
      if (target.field_id == field) {
        return target.env_var.empty() ? "config:" + target.config_entry : "env:" + target.env_var;
      }
    }
    return std::string("none");
  };
  EXPECT_EQ(openclaw_target("anthropic", "api_key"), "config:models.providers.anthropic.apiKey");
  EXPECT_EQ(openclaw_target("gemini", "api_key"), "config:models.providers.google.apiKey");
  EXPECT_EQ(openclaw_target("brave", "api_key"),
            "config:plugins.entries.brave.config.webSearch.apiKey");
  EXPECT_EQ(openclaw_target("searxng", "url"),
            "config:plugins.entries.searxng.config.webSearch.baseUrl");
  EXPECT_EQ(openclaw_target("slack", "bot_token"), "config:channels.slack.botToken");
  EXPECT_EQ(openclaw_target("slack", "app_token"), "config:channels.slack.appToken");
  EXPECT_EQ(openclaw_target("telegram", "bot_token"), "config:channels.telegram.botToken");
  EXPECT_EQ(openclaw_target("github", "token"), "env:GH_TOKEN");
  // Config entries OpenClaw hot-reloads apply at once; environment variables need a restart.
  EXPECT_TRUE(
      catalogue.FindProvider("anthropic")->FindMapping("openclaw")->applies_without_restart);
  EXPECT_FALSE(catalogue.FindProvider("github")->FindMapping("openclaw")->applies_without_restart);
  EXPECT_FALSE(catalogue.FindProvider("anthropic")->FindMapping("shell")->applies_without_restart);
}

TEST(CatalogueTest, SearxngTakesAUrlAndSlackTakesTwoTokens) {
  Catalogue catalogue = Embedded();
  const CatalogueProvider* searxng = catalogue.FindProvider("searxng");
  ASSERT_EQ(searxng->fields.size(), 1u);
  EXPECT_EQ(searxng->fields[0].kind, FieldKind::kUrl);
  const CatalogueProvider* slack = catalogue.FindProvider("slack");
  ASSERT_EQ(slack->fields.size(), 2u);
  EXPECT_NE(slack->FindField("bot_token"), nullptr);
  EXPECT_NE(slack->FindField("app_token"), nullptr);
}

TEST(CatalogueTest, EveryFieldAcceptsAWellFormedValue) {
  Catalogue catalogue = Embedded();
  const std::map<std::string, std::string> samples = testing::SampleValues();
  size_t fields = 0;
  for (const CatalogueProvider& provider : catalogue.providers()) {
    for (const CatalogueField& field : provider.fields) {
      ++fields;
      const std::string key = provider.provider_id + "." + field.field_id;
      auto sample = samples.find(key);
      ASSERT_NE(sample, samples.end()) << key;
      EXPECT_THAT(
          catalogue.ValidateValue(provider.provider_id, field.field_id, sample->second, 16384),
          IsOk())
          << key;
    }
  }
  EXPECT_EQ(fields, samples.size());
}

TEST(CatalogueTest, RejectsMalformedValuesWithoutEchoingThem) {
  Catalogue catalogue = Embedded();
  const std::string canary = "sk-ant-CANARY-value-that-must-not-be-echoed";
  struct Case {
    std::string provider, field, value;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"anthropic", "api_key", "", "is empty"},
      {"anthropic", "api_key", "sk-openai-" + canary, "does not have the expected format"},
      {"anthropic", "api_key", canary + "\n", "control characters"},
      {"anthropic", "api_key", " " + canary, "expected format"},
      {"anthropic", "api_key", canary + std::string(1, '\0'), "control characters"},
      {"anthropic", "api_key", canary + "\xff", "invalid UTF-8"},
      {"anthropic", "api_key", canary + std::string(300, 'a'), "this field takes at most 256"},
      {"github", "token", "ghp_" + canary, "expected format"},
      {"telegram", "bot_token", canary, "expected format"},
  };
  for (const Case& c : cases) {
    absl::Status status = catalogue.ValidateValue(c.provider, c.field, c.value, 16384);
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << c.value;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.provider + "." + c.field));
    EXPECT_THAT(testing::FindLeaks(std::string(status.message()), canary), ::testing::IsEmpty());
  }
  // The global size limit applies before the field's.
  EXPECT_THAT(
      catalogue.ValidateValue("anthropic", "api_key", "sk-ant-" + std::string(200, 'a'), 100),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("the limit is 100")));
}

TEST(CatalogueTest, UrlFieldsRejectWhatIsNotAPlainHttpUrl) {
  Catalogue catalogue = Embedded();
  for (const char* bad :
       {"searx.example.org", "ftp://searx.example.org", "https://user:pw@searx.example.org",
        "https://searx.example.org/#frag", "https://searx.example.org:70000/",
        "https://searx.example.org:/", "https://", "https://searx example.org/",
        "javascript:alert(1)", "https://searx.example.org/?q=x"}) {
    EXPECT_THAT(catalogue.ValidateValue("searxng", "url", bad, 16384),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << bad;
  }
  for (const char* good :
       {"http://127.0.0.1:8888", "https://searx.example.org", "https://searx.example.org/",
        "https://[::1]:8080/searx", "https://search.example.org/instance/path"}) {
    EXPECT_THAT(catalogue.ValidateValue("searxng", "url", good, 16384), IsOk()) << good;
  }
}

TEST(CatalogueTest, UnknownProviderOrFieldIsInvalidArgument) {
  Catalogue catalogue = Embedded();
  EXPECT_THAT(catalogue.ValidateValue("nope", "api_key", "x", 100),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not in the catalogue")));
  EXPECT_THAT(catalogue.ValidateValue("anthropic", "token", "x", 100),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has no field")));
  EXPECT_THAT(catalogue.ValidateValue("Bad Id!", "api_key", "x", 100),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("malformed")));
}

TEST(CatalogueTest, CapabilitiesNeedEveryRequiredField) {
  Catalogue catalogue = Embedded();
  EXPECT_THAT(catalogue.Capabilities({{"slack", "bot_token"}}), Not(Contains("channel.slack")));
  EXPECT_THAT(catalogue.Capabilities({{"slack", "bot_token"}, {"slack", "app_token"}}),
              ::testing::ElementsAre("channel.slack"));
  EXPECT_THAT(catalogue.Capabilities({{"anthropic", "api_key"}, {"searxng", "url"}}),
              ::testing::ElementsAre("model.anthropic", "web_search.searxng"));
  EXPECT_THAT(catalogue.Capabilities({{"retired", "api_key"}}), ::testing::IsEmpty());
}

TEST(CatalogueTest, ProtoCarriesEverythingAndFiltersByProfile) {
  Catalogue catalogue = Embedded();
  v1::GetCatalogueResponse all = catalogue.ToProto("");
  ASSERT_EQ(all.providers_size(), 20);
  EXPECT_EQ(all.catalogue_version().size(), 16u);
  EXPECT_EQ(all.catalogue_version(), catalogue.version());
  const v1::Provider& slack = [&]() -> const v1::Provider& {
    for (const v1::Provider& p : all.providers()) {
      if (p.provider_id() == "slack") {
        return p;
      }
    }
    return all.providers(0);
  }();
  EXPECT_EQ(slack.category(), v1::PROVIDER_CATEGORY_MESSAGING);
  EXPECT_EQ(slack.capability(), "channel.slack");
  EXPECT_EQ(slack.fields_size(), 2);
  EXPECT_EQ(slack.fields(0).kind(), v1::FIELD_KIND_SECRET);
  EXPECT_TRUE(slack.fields(0).required());
  EXPECT_EQ(slack.profile_mappings_size(), 2);
  v1::GetCatalogueResponse openclaw = catalogue.ToProto("openclaw");
  for (const v1::Provider& p : openclaw.providers()) {
    ASSERT_EQ(p.profile_mappings_size(), 1) << p.provider_id();
    EXPECT_EQ(p.profile_mappings(0).profile(), "openclaw");
  }
}

TEST(CatalogueTest, VersionChangesWithTheFile) {
  absl::StatusOr<Catalogue> edited = ParseEdited(
      [](nlohmann::json& doc) { Provider(doc, "brave")["description"] = "Another description."; });
  ASSERT_THAT(edited, IsOk());
  EXPECT_NE(edited->version(), Embedded().version());
}

struct BadCatalogue {
  std::string name;
  std::function<void(nlohmann::json&)> edit;
  std::string message;
};

class CatalogueValidationTest : public ::testing::TestWithParam<BadCatalogue> {};

TEST_P(CatalogueValidationTest, IsRejectedWithThePath) {
  EXPECT_THAT(ParseEdited(GetParam().edit),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(GetParam().message)));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CatalogueValidationTest,
    ::testing::Values(
        BadCatalogue{"UnknownTopLevelKey", [](nlohmann::json& d) { d["extra"] = 1; },
                     "unknown key \"extra\""},
        BadCatalogue{"WrongFormatMarker", [](nlohmann::json& d) { d["format"] = "v2"; },
                     "format must be"},
        BadCatalogue{"UnknownProviderKey",
                     [](nlohmann::json& d) { Provider(d, "openai")["secret"] = true; },
                     "providers[1] has an unknown key \"secret\""},
        BadCatalogue{"MissingProviderKey",
                     [](nlohmann::json& d) { Provider(d, "openai").erase("capability"); },
                     "is missing the key \"capability\""},
        BadCatalogue{"DuplicateProviderId",
                     [](nlohmann::json& d) {
                       Provider(d, "openai")["id"] = "anthropic";
                       Provider(d, "anthropic")["capability"] = "model.other";
                     },
                     "\"anthropic\" is used twice"},
        BadCatalogue{
            "DuplicateCapability",
            [](nlohmann::json& d) { Provider(d, "openai")["capability"] = "model.anthropic"; },
            "used by two providers"},
        BadCatalogue{
            "BadRegex",
            [](nlohmann::json& d) { Provider(d, "groq")["fields"][0]["format"] = "gsk_[A-Z"; },
            "not a valid RE2 regular expression"},
        BadCatalogue{"BadCategory",
                     [](nlohmann::json& d) { Provider(d, "groq")["category"] = "ai"; },
                     "must be one of ai_model"},
        BadCatalogue{"BadKind",
                     [](nlohmann::json& d) { Provider(d, "groq")["fields"][0]["kind"] = "pin"; },
                     "must be \"secret\" or \"url\""},
        BadCatalogue{"MaxLengthOutOfRange",
                     [](nlohmann::json& d) { Provider(d, "groq")["fields"][0]["max_length"] = 0; },
                     "must be between 1 and 65536"},
        BadCatalogue{
            "MaxLengthNotAnInteger",
            [](nlohmann::json& d) { Provider(d, "groq")["fields"][0]["max_length"] = "64"; },
            "must be an integer"},
        BadCatalogue{"DuplicateFieldId",
                     [](nlohmann::json& d) {
                       nlohmann::json& slack = Provider(d, "slack");
                       slack["fields"][1]["id"] = "bot_token";
                     },
                     "\"bot_token\" is used twice"},
        BadCatalogue{
            "NoRequiredField",
            [](nlohmann::json& d) { Provider(d, "groq")["fields"][0]["required"] = false; },
            "at least one required field"},
        BadCatalogue{"UndeclaredProfile",
                     [](nlohmann::json& d) {
                       Provider(d, "groq")["profiles"]["vscode"] =
                           Provider(d, "groq")["profiles"]["shell"];
                     },
                     "not a profile declared"},
        BadCatalogue{"TargetForUnknownField",
                     [](nlohmann::json& d) {
                       Provider(d, "groq")["profiles"]["shell"]["targets"][0]["field"] = "token";
                     },
                     "not a field of the provider"},
        BadCatalogue{"TargetWithBothDestinations",
                     [](nlohmann::json& d) {
                       Provider(d, "groq")["profiles"]["shell"]["targets"][0]["config_entry"] =
                           "a.b";
                     },
                     "exactly one of \"env_var\" and \"config_entry\""},
        BadCatalogue{"BadEnvVarName",
                     [](nlohmann::json& d) {
                       Provider(d, "groq")["profiles"]["shell"]["targets"][0]["env_var"] =
                           "groq-key";
                     },
                     "must match [A-Z_][A-Z0-9_]*"},
        BadCatalogue{"RequiredFieldWithoutTarget",
                     [](nlohmann::json& d) {
                       nlohmann::json& targets =
                           Provider(d, "slack")["profiles"]["openclaw"]["targets"];
                       targets.erase(targets.begin() + 1);
                     },
                     "no target for the required field \"app_token\""},
        BadCatalogue{"TwoProvidersWriteOneVariable",
                     [](nlohmann::json& d) {
                       Provider(d, "groq")["profiles"]["shell"]["targets"][0]["env_var"] =
                           "OPENAI_API_KEY";
                     },
                     "environment variable OPENAI_API_KEY, which openai.api_key already writes"},
        BadCatalogue{"NoProviders",
                     [](nlohmann::json& d) { d["providers"] = nlohmann::json::array(); },
                     "providers must be a non-empty list"}),
    [](const ::testing::TestParamInfo<BadCatalogue>& info) { return info.param.name; });

TEST(CatalogueTest, RejectsDuplicateKeysAndInvalidJson) {
  const std::string json(EmbeddedCatalogueJson());
  std::string duplicated = json;
  const size_t first = duplicated.find("\"display_name\": \"Anthropic\",");
  ASSERT_NE(first, std::string::npos);
  duplicated.insert(first, "\"display_name\": \"Shadow\",\n      ");
  EXPECT_THAT(Catalogue::Parse(duplicated),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("the key \"display_name\" appears twice")));
  EXPECT_THAT(Catalogue::Parse(json.substr(0, json.size() / 2)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid JSON")));
  EXPECT_THAT(Catalogue::Parse(""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Catalogue::Parse("[]"), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace tidepool::secrets
