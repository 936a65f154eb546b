#include "tests/testing/temp_dir.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "gtest/gtest.h"

namespace tidepool::testing {

ScopedTempDir::ScopedTempDir() {
  std::string base = ::testing::TempDir();
  if (base.empty() || base.back() != '/') {
    base += "/";
  }
  std::string pattern = base + "tidepool_test_XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (::mkdtemp(buffer.data()) != nullptr) {
    path_ = buffer.data();
  }
}

ScopedTempDir::~ScopedTempDir() {
  if (!path_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
}

bool WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  return static_cast<bool>(out);
}

}  // namespace tidepool::testing
