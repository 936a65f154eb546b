#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/clock.h"
#include "lib/sqlite_store.h"
#include "tidepool/common/v1/common.pb.h"

namespace tidepool::provisioner {

using WorkspaceState = common::v1::WorkspaceState;

// One workspace as the provisioner records it.
struct WorkspaceRecord {
  std::string workspace_id;  // "ws_" + 26 base32
  std::string owner_user_id;
  std::string profile;
  WorkspaceState state = common::v1::WORKSPACE_STATE_PROVISIONING;
  WorkspaceState desired_state = common::v1::WORKSPACE_STATE_RUNNING;
  std::string state_reason;
  std::string timezone;
  absl::Time create_time = absl::InfinitePast();
  absl::Time update_time = absl::InfinitePast();
  absl::Time last_transition_time = absl::InfinitePast();
  int64_t version = 1;
};

struct WorkspacePage {
  std::vector<WorkspaceRecord> workspaces;
  std::string next_page_token;
};

// What EnsureForOwner did.
struct EnsureOutcome {
  WorkspaceRecord workspace;
  bool created = false;
};

// Workspaces and owner flags in the provisioner's SQLite database (synchronous=FULL: a
// transition, once acknowledged, survives a crash). One workspace per owner for now,
// enforced by a UNIQUE index, so concurrent Ensure calls for one owner yield one record.
// Thread-safe.
class WorkspaceStore {
 public:
  static absl::StatusOr<std::unique_ptr<WorkspaceStore>> Open(SqliteDb& db, Clock& clock);

  // Returns the owner's workspace, creating it (PROVISIONING, desired RUNNING) if absent, and
  // records `timezone` when non-empty. FAILED_PRECONDITION if the owner is suspended and has
  // no workspace yet (one is created only once reinstated). A created workspace gets
  // `new_workspace_id` when non-empty (a started spare's), else a random one.
  absl::StatusOr<EnsureOutcome> EnsureForOwner(absl::string_view owner_user_id,
                                               absl::string_view profile,
                                               absl::string_view timezone,
                                               absl::string_view new_workspace_id = "");

  // NOT_FOUND if absent.
  absl::StatusOr<WorkspaceRecord> Get(absl::string_view workspace_id);
  absl::StatusOr<std::optional<WorkspaceRecord>> GetByOwner(absl::string_view owner_user_id);

  // Ordered by workspace id; filters are optional. INVALID_ARGUMENT for a bad token or size.
  absl::StatusOr<WorkspacePage> List(std::optional<WorkspaceState> state,
                                     absl::string_view owner_user_id, int page_size,
                                     absl::string_view page_token);
  // Every workspace that is not DELETED (for the reconciler).
  absl::StatusOr<std::vector<WorkspaceRecord>> ListLive();

  // Sets the desired state (and the reason) and bumps the version. ABORTED when
  // `expected_version` is non-zero and differs.
  absl::StatusOr<WorkspaceRecord> SetDesired(absl::string_view workspace_id,
                                             WorkspaceState desired, absl::string_view reason,
                                             int64_t expected_version = 0);
  // Records an observed transition; the transition time changes only when the state does.
  absl::StatusOr<WorkspaceRecord> SetObserved(absl::string_view workspace_id, WorkspaceState state,
                                              absl::string_view reason);

  // The owner's suspension flag (remembered even without a workspace).
  absl::Status SetOwnerSuspended(absl::string_view owner_user_id, bool suspended);
  absl::StatusOr<bool> IsOwnerSuspended(absl::string_view owner_user_id);

 private:
  WorkspaceStore(SqliteDb& db, Clock& clock) : db_(db), clock_(clock) {}
  absl::StatusOr<WorkspaceRecord> GetLocked(absl::string_view column, absl::string_view value)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<bool> IsOwnerSuspendedLocked(absl::string_view owner_user_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  SqliteDb& db_ ABSL_GUARDED_BY(mu_);
  Clock& clock_;
};

// True for "ws_" followed by 26 lower-case base32 characters.
bool IsValidWorkspaceId(absl::string_view id);

}  // namespace tidepool::provisioner
