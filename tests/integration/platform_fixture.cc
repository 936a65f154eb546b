#include "tests/integration/platform_fixture.h"

#include <sys/mount.h>

#include <fstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace tidepool::testing {

RunningPlatform::~RunningPlatform() {
  processes_.clear();
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::vector<std::string> mounted;
  for (std::string line; std::getline(mountinfo, line);) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ');
    if (fields.size() > 4 && absl::StartsWith(fields[4], data_dir_ + "/")) {
      mounted.push_back(fields[4]);
    }
  }
  for (auto it = mounted.rbegin(); it != mounted.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
}

absl::StatusOr<std::unique_ptr<RunningPlatform>> RunningPlatform::Start(
    const std::vector<std::vector<std::string>>& commands, const std::vector<std::string>& services,
    absl::Duration timeout, const std::string& config) {
  auto platform = std::unique_ptr<RunningPlatform>(new RunningPlatform());
  platform->data_dir_ = platform->tmp_.Join("data");
  platform->config_path_ = platform->tmp_.Join("tidepool.yaml");
  if (!WriteFile(platform->config_path_, config)) {
    return absl::InternalError("cannot write config");
  }
  for (std::vector<std::string> argv : commands) {
    argv.push_back("--config");
    argv.push_back(platform->config_path_);
    argv.push_back("--data-dir");
    argv.push_back(platform->data_dir_);
    absl::StatusOr<std::unique_ptr<Subprocess>> process =
        Subprocess::Start(argv, platform->tmp_.path());
    if (!process.ok()) {
      return process.status();
    }
    platform->processes_.push_back(*std::move(process));
  }
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    bool all = true;
    for (const std::string& service : services) {
      all = all && platform->Info(service).ok();
    }
    if (all) {
      return platform;
    }
    for (auto& process : platform->processes_) {
      absl::StatusOr<int> code = process->Wait(absl::ZeroDuration());
      if (code.ok()) {
        return absl::InternalError(absl::StrCat("a platform process exited with ", *code,
                                                "; stderr: ", process->Stderr()));
      }
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError("the platform did not write its run files in time");
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

void DeleteAllWorkspaces(provisioner::v1::WorkspaceService::Stub& workspaces) {
  namespace provisionerpb = ::tidepool::provisioner::v1;
  provisionerpb::ListWorkspacesResponse list;
  grpc::ClientContext context;
  if (!workspaces.ListWorkspaces(&context, {}, &list).ok()) return;
  for (const auto& w : list.workspaces()) {
    provisionerpb::DeleteWorkspaceRequest remove;
    remove.set_workspace_id(w.workspace_id());
    remove.set_confirm_workspace_id(w.workspace_id());
    provisionerpb::DeleteWorkspaceResponse ignored;
    grpc::ClientContext delete_context;
    (void)workspaces.DeleteWorkspace(&delete_context, remove, &ignored);
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    provisionerpb::ListWorkspacesRequest deleted_only;
    deleted_only.add_states(common::v1::WORKSPACE_STATE_DELETED);
    provisionerpb::ListWorkspacesResponse deleted;
    grpc::ClientContext poll;
    if (workspaces.ListWorkspaces(&poll, deleted_only, &deleted).ok() &&
        deleted.workspaces_size() == list.workspaces_size()) {
      return;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

}  // namespace tidepool::testing
