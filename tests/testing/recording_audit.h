#pragma once

// An AuditEmitter for tests: records every event, and can be switched "down" so that durable
// emission fails as it does while the audit service is unreachable.

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "lib/audit_client.h"

namespace tidepool::testing {

// Records events; when `down`, durable emission fails as it does while audit is unreachable.
class RecordingAudit final : public AuditEmitter {
 public:
  void Emit(common::v1::AuditEvent event) override {
    absl::MutexLock lock(&mu_);
    events_.push_back(std::move(event));
  }
  absl::Status EmitDurable(common::v1::AuditEvent event, absl::Time) override {
    absl::MutexLock lock(&mu_);
    if (down_) {
      return absl::UnavailableError("audit down");
    }
    events_.push_back(std::move(event));
    return absl::OkStatus();
  }
  void SetDown(bool down) {
    absl::MutexLock lock(&mu_);
    down_ = down;
  }
  std::vector<common::v1::AuditEvent> Events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }
  // "action" or "action:reason_code" per event, in order.
  std::vector<std::string> Actions() {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> actions;
    for (const auto& event : events_) {
      actions.push_back(event.action() +
                        (event.reason_code().empty() ? "" : ":" + event.reason_code()));
    }
    return actions;
  }
  // Every event as text and as serialised bytes.
  std::string AllText() {
    absl::MutexLock lock(&mu_);
    std::string text;
    for (const auto& event : events_) {
      text += event.DebugString();
      text += event.SerializeAsString();
    }
    return text;
  }

 private:
  absl::Mutex mu_;
  std::vector<common::v1::AuditEvent> events_ ABSL_GUARDED_BY(mu_);
  bool down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace tidepool::testing
