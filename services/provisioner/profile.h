#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tidepool::provisioner {

// A file the profile stamps into the workspace's read-only config directory.
struct StampedFileTemplate {
  std::string path;  // relative, no ".." and no leading "/"
  std::string text;  // with {{variable}} placeholders
};

// A tool profile (profiles/<name>.yaml): what runs in a workspace and how it is configured.
struct ToolProfile {
  std::string name;
  std::string description;
  std::vector<std::string> command;
  std::map<std::string, std::string> env;
  std::vector<StampedFileTemplate> files;
};

// Parses one profile. INVALID_ARGUMENT naming `source` and the problem: unknown keys, missing
// name or command, a relative command path, unsafe file paths, unknown placeholders.
absl::StatusOr<ToolProfile> ParseProfile(absl::string_view yaml, absl::string_view source);

// Loads every *.yaml in `dir`, keyed by name. Errors as ParseProfile, or NOT_FOUND.
absl::StatusOr<std::map<std::string, ToolProfile>> LoadProfiles(const std::string& dir);

// Replaces {{name}} placeholders with `values`. INVALID_ARGUMENT for an unknown one.
absl::StatusOr<std::string> RenderTemplate(absl::string_view text,
                                           const std::map<std::string, std::string>& values);

}  // namespace tidepool::provisioner
