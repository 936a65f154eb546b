#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/clock.h"
#include "lib/sqlite_store.h"

namespace tidepool::auth {

// What auth asks of the provisioner (tidepool.provisioner.v1.WorkspaceService).
class ProvisionerRequests {
 public:
  virtual ~ProvisionerRequests() = default;
  virtual absl::Status EnsureWorkspace(const std::string& user_id, const std::string& timezone) = 0;
  virtual absl::Status SetOwnerSuspended(const std::string& user_id, bool suspended,
                                         const std::string& reason) = 0;
};

// One pending request.
struct OutboxItem {
  std::string user_id;
  std::string action;  // "ensure" or "suspension"
  bool suspended = false;
  std::string detail;  // timezone (ensure) or reason (suspension)
  int attempts = 0;
  absl::Time next_attempt_time;
  std::string last_error;
  int64_t generation = 0;  // bumped by every enqueue of the same (user, action)
};

// Requests to the provisioner that must eventually happen even though the provisioner may be
// down (or, before issue #6, answer UNIMPLEMENTED): a new user's first sign-in asks for their
// workspace, a suspension asks to stop and hold it. Each request is stored durably in the
// auth database first (so it survives a restart), tried at once, and retried with
// exponential backoff (5 s doubling to 10 min) until it succeeds. A newer suspension request
// for a user replaces an older one, so the provisioner always ends in the latest state.
// Thread-safe.
class ProvisionerOutbox {
 public:
  static absl::StatusOr<std::unique_ptr<ProvisionerOutbox>> Open(SqliteDb& db, Clock& clock,
                                                                 ProvisionerRequests* target);

  absl::Status EnqueueEnsure(absl::string_view user_id, absl::string_view timezone);
  absl::Status EnqueueSuspension(absl::string_view user_id, bool suspended,
                                 absl::string_view reason);

  // Sends every due request once; returns how many succeeded. Failures are logged (without
  // secrets) and rescheduled.
  int DrainOnce();

  absl::StatusOr<std::vector<OutboxItem>> Pending();

 private:
  ProvisionerOutbox(SqliteDb& db, Clock& clock, ProvisionerRequests* target)
      : db_(db), clock_(clock), target_(target) {}
  absl::Status Upsert(absl::string_view user_id, absl::string_view action, bool suspended,
                      absl::string_view detail);

  absl::Mutex drain_mu_;  // one drain at a time
  absl::Mutex mu_;
  SqliteDb& db_ ABSL_GUARDED_BY(mu_);
  Clock& clock_;
  ProvisionerRequests* const target_;
};

}  // namespace tidepool::auth
