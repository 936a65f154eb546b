#include "lib/config_loader.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "yaml-cpp/yaml.h"

namespace tidepool {
namespace {

std::string Where(const YAML::Node& node, absl::string_view file, const std::string& path) {
  const YAML::Mark mark = node.Mark();
  if (mark.line >= 0) {
    return absl::StrCat(file, ":", mark.line + 1, ": '", path, "'");
  }
  return absl::StrCat(file, ": '", path, "'");
}

absl::Status Bad(const std::string& where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, " ", what));
}

std::string Shown(const YAML::Node& node) {
  if (node.IsScalar()) {
    std::string text = node.Scalar();
    if (text.size() > 40) {
      text = text.substr(0, 40) + "...";
    }
    return absl::StrCat("\"", absl::CEscape(text), "\"");
  }
  if (node.IsSequence()) {
    return "a list";
  }
  if (node.IsMap()) {
    return "a mapping";
  }
  return "nothing";
}

}  // namespace

void ConfigSchema::Add(absl::string_view path, Setter setter) {
  entries_[std::string(path)] = std::move(setter);
}

void ConfigSchema::String(absl::string_view path, std::string* out, Check<std::string> check) {
  Add(path, [out, check](const YAML::Node& node, const std::string& where) -> absl::Status {
    if (!node.IsScalar()) {
      return Bad(where, absl::StrCat("must be a string, got ", Shown(node)));
    }
    std::string value = node.Scalar();
    if (check) {
      if (std::string problem = check(value); !problem.empty()) {
        return Bad(where, problem);
      }
    }
    *out = std::move(value);
    return absl::OkStatus();
  });
}

void ConfigSchema::Int(absl::string_view path, int* out, int min, int max) {
  Add(path, [out, min, max](const YAML::Node& node, const std::string& where) -> absl::Status {
    const std::string expect = absl::StrCat("must be an integer in [", min, ", ", max, "]");
    if (!node.IsScalar()) {
      return Bad(where, absl::StrCat(expect, ", got ", Shown(node)));
    }
    long long value = 0;
    try {
      value = node.as<long long>();
    } catch (const YAML::Exception&) {
      return Bad(where, absl::StrCat(expect, ", got ", Shown(node)));
    }
    if (value < min || value > max) {
      return Bad(where, absl::StrCat(expect, ", got ", value));
    }
    *out = static_cast<int>(value);
    return absl::OkStatus();
  });
}

void ConfigSchema::Bool(absl::string_view path, bool* out) {
  Add(path, [out](const YAML::Node& node, const std::string& where) -> absl::Status {
    if (node.IsScalar() && (node.Scalar() == "true" || node.Scalar() == "false")) {
      *out = node.Scalar() == "true";
      return absl::OkStatus();
    }
    return Bad(where, absl::StrCat("must be true or false, got ", Shown(node)));
  });
}

void ConfigSchema::Duration(absl::string_view path, absl::Duration* out, absl::Duration min,
                            absl::Duration max) {
  Add(path, [out, min, max](const YAML::Node& node, const std::string& where) -> absl::Status {
    const std::string expect =
        absl::StrCat("must be a duration such as \"30s\" or \"5m\" between ",
                     absl::FormatDuration(min), " and ", absl::FormatDuration(max));
    absl::Duration value;
    if (!node.IsScalar() || !absl::ParseDuration(node.Scalar(), &value)) {
      return Bad(where, absl::StrCat(expect, ", got ", Shown(node)));
    }
    if (value < min || value > max) {
      return Bad(where, absl::StrCat(expect, ", got ", Shown(node)));
    }
    *out = value;
    return absl::OkStatus();
  });
}

void ConfigSchema::Enum(absl::string_view path, std::string* out,
                        std::vector<std::string> allowed) {
  Add(path,
      [out, allowed = std::move(allowed)](const YAML::Node& node,
                                          const std::string& where) -> absl::Status {
        const std::string expect = absl::StrCat("must be one of ", absl::StrJoin(allowed, ", "));
        if (!node.IsScalar()) {
          return Bad(where, absl::StrCat(expect, ", got ", Shown(node)));
        }
        for (const std::string& option : allowed) {
          if (node.Scalar() == option) {
            *out = option;
            return absl::OkStatus();
          }
        }
        return Bad(where, absl::StrCat(expect, ", got ", Shown(node)));
      });
}

void ConfigSchema::StringList(absl::string_view path, std::vector<std::string>* out,
                              Check<std::string> check_each) {
  Add(path, [out, check_each](const YAML::Node& node, const std::string& where) -> absl::Status {
    if (!node.IsSequence()) {
      return Bad(where, absl::StrCat("must be a list of strings, got ", Shown(node)));
    }
    std::vector<std::string> values;
    for (size_t i = 0; i < node.size(); ++i) {
      const YAML::Node item = node[i];
      if (!item.IsScalar()) {
        return Bad(where, absl::StrCat("item ", i + 1, " must be a string, got ", Shown(item)));
      }
      if (check_each) {
        if (std::string problem = check_each(item.Scalar()); !problem.empty()) {
          return Bad(where, absl::StrCat("item ", i + 1, " ", problem));
        }
      }
      values.push_back(item.Scalar());
    }
    *out = std::move(values);
    return absl::OkStatus();
  });
}

void ConfigSchema::Custom(
    absl::string_view path,
    std::function<absl::Status(const YAML::Node&, const std::string& where)> parse) {
  Add(path, std::move(parse));
}

bool ConfigSchema::IsSection(const std::string& path) const {
  const std::string prefix = path + ".";
  auto it = entries_.lower_bound(prefix);
  return it != entries_.end() && absl::StartsWith(it->first, prefix);
}

absl::Status ConfigSchema::ApplyMap(const YAML::Node& map, const std::string& prefix,
                                    absl::string_view file) const {
  for (auto it = map.begin(); it != map.end(); ++it) {
    const YAML::Node key = it->first;
    const YAML::Node value = it->second;
    if (!key.IsScalar()) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(key, file, prefix), " has a key that is not a string"));
    }
    const std::string path =
        prefix.empty() ? key.Scalar() : absl::StrCat(prefix, ".", key.Scalar());
    const std::string where = Where(key, file, path);
    if (auto entry = entries_.find(path); entry != entries_.end()) {
      if (value.IsNull()) {
        return Bad(where, "has no value");
      }
      absl::Status status = entry->second(value, where);
      if (!status.ok()) {
        return status;
      }
      continue;
    }
    if (IsSection(path)) {
      if (value.IsNull()) {
        continue;  // an empty section keeps every default
      }
      if (!value.IsMap()) {
        return Bad(where, absl::StrCat("must be a section (a mapping), got ", Shown(value)));
      }
      absl::Status status = ApplyMap(value, path, file);
      if (!status.ok()) {
        return status;
      }
      continue;
    }
    return absl::InvalidArgumentError(absl::StrCat(where, " is not a known setting"));
  }
  return absl::OkStatus();
}

absl::Status ConfigSchema::Apply(const YAML::Node& root, absl::string_view file) const {
  if (!root.IsDefined() || root.IsNull()) {
    return absl::OkStatus();
  }
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": the top level must be a mapping of sections"));
  }
  return ApplyMap(root, "", file);
}

std::vector<std::string> ConfigSchema::Keys() const {
  std::vector<std::string> keys;
  keys.reserve(entries_.size());
  for (const auto& [key, setter] : entries_) {
    keys.push_back(key);
  }
  return keys;
}

absl::Status LoadYamlString(absl::string_view text, absl::string_view name,
                            const ConfigSchema& schema) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ":", e.mark.line + 1, ":",
                                                   e.mark.column + 1, ": invalid YAML: ", e.msg));
  }
  try {
    return schema.Apply(root, name);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ":", e.mark.line + 1, ": ", e.msg));
  }
}

absl::Status LoadYamlFile(const std::string& path, const ConfigSchema& schema) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read config file ", path, ": it is a directory"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat("config file ", path, " does not exist"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read config file ", path, ": ", std::strerror(err)));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read config file ", path));
  }
  return LoadYamlString(buffer.str(), path, schema);
}

}  // namespace tidepool
