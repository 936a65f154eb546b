#include "lib/log.h"

#include <grpc/support/log.h>
#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/grpc_logging.h"
#include "nlohmann/json.hpp"

namespace tidepool {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(LogTest, FormatsOneJsonObjectWithFields) {
  const std::string line = FormatLogLine(LogLevel::kWarning, "auth", "sign-in failed",
                                         {{"reason", "bad_state"}, {"attempt", 3}, {"ok", false}});
  nlohmann::json doc = nlohmann::json::parse(line);
  EXPECT_EQ(doc["level"], "warning");
  EXPECT_EQ(doc["component"], "auth");
  EXPECT_EQ(doc["msg"], "sign-in failed");
  EXPECT_EQ(doc["reason"], "bad_state");
  EXPECT_EQ(doc["attempt"], 3);
  EXPECT_EQ(doc["ok"], false);
  EXPECT_THAT(doc["ts"].get<std::string>(),
              ::testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z"));
  EXPECT_THAT(line, Not(HasSubstr("\n")));
}

TEST(LogTest, EscapesControlCharactersAndInvalidUtf8) {
  const std::string hostile = std::string("evil\x1b[31mred\r\nnext\x07") + "\xff\xfe";
  const std::string line = FormatLogLine(LogLevel::kInfo, "proxy", hostile, {{"path", hostile}});
  for (char c : line) {
    EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20) << "raw control byte in: " << line;
  }
  EXPECT_THAT(line, HasSubstr("\\u001b"));
  EXPECT_TRUE(nlohmann::json::accept(line));
}

TEST(LogTest, WritesWholeLinesAtOrAboveTheLevel) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ConfigureLogging(LogOptions{LogLevel::kInfo, fds[1], "test"});
  LogDebug("hidden");
  LogInfo("shown", {{"n", 1}});
  ConfigureLogging(LogOptions{});
  ::close(fds[1]);
  std::string out;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buffer, sizeof(buffer))) > 0) {
    out.append(buffer, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  EXPECT_THAT(out, Not(HasSubstr("hidden")));
  ASSERT_THAT(out, HasSubstr("shown"));
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(nlohmann::json::parse(out)["component"], "test");
}

std::string Drain(int fd) {
  std::string out;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof(buffer))) > 0) {
    out.append(buffer, static_cast<size_t>(n));
  }
  return out;
}

TEST(LogTest, GrpcCoreLogsBecomeDebugJsonLines) {
  RouteLibraryLogs();
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ConfigureLogging(LogOptions{LogLevel::kInfo, fds[1], "test"});
  gpr_log(GPR_ERROR, "bind failed: %s", "in use");  // below info once routed: dropped
  ConfigureLogging(LogOptions{LogLevel::kDebug, fds[1], "test"});
  gpr_log(GPR_ERROR, "handshake failed: %d", 42);
  ConfigureLogging(LogOptions{});
  ::close(fds[1]);
  const std::string out = Drain(fds[0]);
  ::close(fds[0]);
  EXPECT_THAT(out, Not(HasSubstr("bind failed")));
  nlohmann::json doc = nlohmann::json::parse(out);
  EXPECT_EQ(doc["msg"], "handshake failed: 42");
  EXPECT_EQ(doc["component"], "grpc");
  EXPECT_EQ(doc["grpc_severity"], "error");
  EXPECT_EQ(doc["level"], "debug");
}

TEST(LogTest, ParsesLevels) {
  LogLevel level;
  EXPECT_TRUE(ParseLogLevel("debug", &level));
  EXPECT_EQ(level, LogLevel::kDebug);
  EXPECT_TRUE(ParseLogLevel("error", &level));
  EXPECT_EQ(level, LogLevel::kError);
  EXPECT_FALSE(ParseLogLevel("verbose", &level));
}

}  // namespace
}  // namespace tidepool
