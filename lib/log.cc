#include "lib/log.h"

#include <unistd.h>

#include <atomic>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace tidepool {
namespace {

struct LogState {
  absl::Mutex mu;
  LogOptions options ABSL_GUARDED_BY(mu);
};

LogState& State() {
  static LogState* state = new LogState();  // never destroyed: logging works during exit
  return *state;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

}  // namespace

void ConfigureLogging(const LogOptions& options) {
  absl::MutexLock lock(&State().mu);
  State().options = options;
}

bool ParseLogLevel(absl::string_view text, LogLevel* level) {
  if (text == "debug") {
    *level = LogLevel::kDebug;
  } else if (text == "info") {
    *level = LogLevel::kInfo;
  } else if (text == "warning") {
    *level = LogLevel::kWarning;
  } else if (text == "error") {
    *level = LogLevel::kError;
  } else {
    return false;
  }
  return true;
}

std::string FormatLogLine(LogLevel level, absl::string_view component, absl::string_view msg,
                          std::initializer_list<LogField> fields) {
  nlohmann::ordered_json line;
  line["ts"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  line["level"] = LevelName(level);
  line["component"] = std::string(component);
  line["msg"] = std::string(msg);
  for (const LogField& field : fields) {
    std::visit([&](const auto& v) { line[field.key] = v; }, field.value);
  }
  // Replace invalid UTF-8; dump() escapes control characters as \uXXXX.
  return line.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

void Log(LogLevel level, absl::string_view msg, std::initializer_list<LogField> fields) {
  LogOptions options;
  {
    absl::MutexLock lock(&State().mu);
    options = State().options;
  }
  if (static_cast<int>(level) < static_cast<int>(options.level)) {
    return;
  }
  std::string line = FormatLogLine(level, options.component, msg, fields);
  line.push_back('\n');
  // One write per line keeps lines whole when threads log concurrently.
  const char* data = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(options.fd, data, left);
    if (n <= 0) {
      return;
    }
    data += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace tidepool
