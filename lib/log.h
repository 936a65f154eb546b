#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <variant>

#include "absl/strings/string_view.h"

namespace tidepool {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// One structured field of a log line. Values are copied.
struct LogField {
  LogField(absl::string_view k, absl::string_view v) : key(k), value(std::string(v)) {}
  LogField(absl::string_view k, const char* v) : key(k), value(std::string(v)) {}
  LogField(absl::string_view k, const std::string& v) : key(k), value(v) {}
  LogField(absl::string_view k, int v) : key(k), value(static_cast<int64_t>(v)) {}
  LogField(absl::string_view k, int64_t v) : key(k), value(v) {}
  LogField(absl::string_view k, uint64_t v) : key(k), value(static_cast<int64_t>(v)) {}
  LogField(absl::string_view k, double v) : key(k), value(v) {}
  LogField(absl::string_view k, bool v) : key(k), value(v) {}

  std::string key;
  std::variant<std::string, int64_t, double, bool> value;
};

// Process-wide log settings, set once by main.cc before any thread starts.
struct LogOptions {
  LogLevel level = LogLevel::kInfo;
  // The file descriptor lines are written to (stderr by default).
  int fd = 2;
  // The value of the "component" field when a call does not name one (e.g. "tidepool").
  std::string component = "tidepool";
};
void ConfigureLogging(const LogOptions& options);

// Parses "debug", "info", "warning" or "error".
bool ParseLogLevel(absl::string_view text, LogLevel* level);

// Writes one JSON line: {"ts":RFC3339 UTC,"level":..,"component":..,"msg":..,<fields>}.
// Control characters and invalid UTF-8 in any value are escaped or replaced, so no raw
// control byte reaches a terminal or log viewer. Never pass secrets. Thread-safe: each line is
// written with a single write(2).
void Log(LogLevel level, absl::string_view msg, std::initializer_list<LogField> fields = {});

// Renders the line Log() would write, without the trailing newline (for tests).
std::string FormatLogLine(LogLevel level, absl::string_view component, absl::string_view msg,
                          std::initializer_list<LogField> fields);

inline void LogDebug(absl::string_view msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kDebug, msg, fields);
}
inline void LogInfo(absl::string_view msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kInfo, msg, fields);
}
inline void LogWarning(absl::string_view msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kWarning, msg, fields);
}
inline void LogError(absl::string_view msg, std::initializer_list<LogField> fields = {}) {
  Log(LogLevel::kError, msg, fields);
}

}  // namespace tidepool
