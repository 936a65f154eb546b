#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace YAML {
class Node;
}

namespace tidepool {

// A declarative description of a YAML config file: every key the file may contain, its type,
// its validation and where its value goes. Defaults are the initial values of the bound
// variables, so every key has one; Apply() only overrides what the file sets.
//
// Apply() rejects, naming the file, line and dotted key:
//   - a key the schema does not know (typos never pass silently),
//   - a value of the wrong type or outside its allowed range or set,
//   - a section given as a scalar or list.
//
// Bound pointers are not owned and must outlive the schema. Not thread-safe.
class ConfigSchema {
 public:
  // A check run on a parsed value; returns an error message, or "" when the value is fine.
  template <typename T>
  using Check = std::function<std::string(const T&)>;

  void String(absl::string_view path, std::string* out, Check<std::string> check = nullptr);
  void Int(absl::string_view path, int* out, int min, int max);
  void Bool(absl::string_view path, bool* out);
  // A Go-style duration string such as "30m", "1h30m", "250ms".
  void Duration(absl::string_view path, absl::Duration* out, absl::Duration min,
                absl::Duration max);
  // A string that must be one of `allowed`.
  void Enum(absl::string_view path, std::string* out, std::vector<std::string> allowed);
  void StringList(absl::string_view path, std::vector<std::string>* out,
                  Check<std::string> check_each = nullptr);
  // A sub-tree parsed by `parse` (for lists of objects such as identity providers). The
  // callback gets the node and a prefix "FILE:LINE: 'path'" for its messages.
  void Custom(absl::string_view path,
              std::function<absl::Status(const YAML::Node&, const std::string& where)> parse);

  // Applies a parsed document. `file` names the source in messages. A null document (an empty
  // file) applies nothing. Returns INVALID_ARGUMENT with a one-line message on the first error.
  absl::Status Apply(const YAML::Node& root, absl::string_view file) const;

  // Every dotted key the schema knows, sorted (for documentation and tests).
  std::vector<std::string> Keys() const;

 private:
  using Setter = std::function<absl::Status(const YAML::Node&, const std::string& where)>;
  void Add(absl::string_view path, Setter setter);
  absl::Status ApplyMap(const YAML::Node& map, const std::string& prefix,
                        absl::string_view file) const;
  bool IsSection(const std::string& path) const;

  std::map<std::string, Setter> entries_;
};

// Reads and parses a YAML file and applies it to `schema`. Errors (INVALID_ARGUMENT or
// NOT_FOUND) are one line naming the file: missing or unreadable file, YAML syntax error with
// line and column, or the schema's own errors.
absl::Status LoadYamlFile(const std::string& path, const ConfigSchema& schema);

// Applies YAML text (for tests); `name` stands for the file in messages.
absl::Status LoadYamlString(absl::string_view text, absl::string_view name,
                            const ConfigSchema& schema);

}  // namespace tidepool
