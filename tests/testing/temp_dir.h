#pragma once

#include <string>

namespace tidepool::testing {

// A fresh directory under ::testing::TempDir(), removed with its contents on destruction.
class ScopedTempDir {
 public:
  ScopedTempDir();
  ~ScopedTempDir();
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes `contents` to `path` (truncating). Returns false on failure.
bool WriteFile(const std::string& path, const std::string& contents);

}  // namespace tidepool::testing
