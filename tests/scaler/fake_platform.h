#pragma once

// A fake of the platform as the scaler sees it (WorkspaceDirectory), for the scaler's tests.

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "lib/clock.h"
#include "lib/sqlite_store.h"
#include "services/scaler/scaler_store.h"
#include "services/scaler/workspace_directory.h"
#include "tests/testing/status_matchers.h"

namespace tidepool::scaler {

inline constexpr char kWs[] = "ws_aaaaaaaaaaaaaaaaaaaaaaaaaa";
inline constexpr char kOwner[] = "u_aaaaaaaaaaaaaaaaaaaaaaaaaa";

// The platform as the scaler sees it: workspaces whose state the test sets and whose sleeps
// and wakes take effect at once, and their tools' jobs.
class FakePlatform final : public WorkspaceDirectory {
 public:
  explicit FakePlatform(Clock& clock) : clock_(clock) {}

  struct Workspace {
    WorkspaceView view;
    WorkspaceActivityView activity;
  };

  Workspace& Add(const std::string& id, common::v1::WorkspaceState state,
                 const std::string& owner = kOwner) {
    Workspace& w = workspaces[id];
    w.view.workspace_id = id;
    w.view.owner_user_id = owner;
    w.view.state = state;
    w.view.last_transition_time = clock_.Now();
    return w;
  }
  common::v1::WorkspaceState State(const std::string& id) { return workspaces[id].view.state; }

  absl::StatusOr<std::vector<WorkspaceView>> List() override {
    if (!down.ok()) return down;
    std::vector<WorkspaceView> views;
    for (const auto& [id, w] : workspaces) views.push_back(w.view);
    return views;
  }
  absl::StatusOr<WorkspaceView> Get(const std::string& id) override {
    if (!down.ok()) return down;
    auto it = workspaces.find(id);
    if (it == workspaces.end()) return absl::NotFoundError("no such workspace");
    return it->second.view;
  }
  absl::Status Sleep(const std::string& id, const std::string& reason) override {
    if (!down.ok()) return down;
    sleep_reasons.push_back(reason);
    Transition(id, common::v1::WORKSPACE_STATE_SLEEPING);
    return absl::OkStatus();
  }
  absl::StatusOr<common::v1::WorkspaceState> Wake(const std::string& id,
                                                const std::string& reason) override {
    if (!down.ok()) return down;
    wake_reasons.push_back(reason);
    Transition(id, common::v1::WORKSPACE_STATE_RUNNING);
    return common::v1::WORKSPACE_STATE_RUNNING;
  }
  absl::StatusOr<WorkspaceActivityView> Inspect(const std::string& id) override {
    if (!down.ok()) return down;
    Workspace& w = workspaces[id];
    if (w.view.state != common::v1::WORKSPACE_STATE_RUNNING) {
      return absl::FailedPreconditionError("not running");
    }
    return w.activity;
  }

  void Transition(const std::string& id, common::v1::WorkspaceState state) {
    workspaces[id].view.state = state;
    workspaces[id].view.last_transition_time = clock_.Now();
  }

  std::map<std::string, Workspace> workspaces;
  std::vector<std::string> sleep_reasons;
  std::vector<std::string> wake_reasons;
  absl::Status down;  // every call fails with it when not OK

 private:
  Clock& clock_;
};


// A scaler store in a fresh SQLite file at `path` (the test fails if it cannot be opened).
struct TestStore {
  explicit TestStore(const std::string& path) {
    absl::StatusOr<std::unique_ptr<SqliteDb>> opened = SqliteDb::Open(path, SqliteOptions{});
    EXPECT_THAT(opened, tidepool::testing::IsOk());
    if (!opened.ok()) return;
    db = *std::move(opened);
    absl::StatusOr<std::unique_ptr<ScalerStore>> made = ScalerStore::Open(*db);
    EXPECT_THAT(made, tidepool::testing::IsOk());
    if (made.ok()) store = *std::move(made);
  }
  std::unique_ptr<SqliteDb> db;
  std::unique_ptr<ScalerStore> store;
};

}  // namespace tidepool::scaler
