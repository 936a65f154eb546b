#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/audit_client.h"
#include "lib/periodic_task.h"
#include "lib/clock.h"
#include "services/provisioner/profile.h"
#include "services/provisioner/runtime.h"
#include "lib/supervisor_client.h"
#include "services/provisioner/secrets_source.h"
#include "services/provisioner/workspace_store.h"

namespace tidepool::provisioner {

// The port inside every sandbox where the supervisor's egress relay listens.
inline constexpr int kEgressRelayPort = 3128;

struct WorkspaceManagerOptions {
  // <data_dir>/provisioner: volumes/, sockets/, stamps/ live under it.
  std::string dir;
  // The supervisor binary on the host; its directory is bound read-only at /opt/tidepool/bin.
  std::string supervisor_binary;
  std::map<std::string, ToolProfile> profiles;
  std::string default_profile = "shell";
  // The provisioner's 32-byte platform key (workspace keys and stamp digests derive from it).
  std::string platform_key;
  ResourceLimits limits;
  // How long a start may take until the supervisor answers, before FAILED.
  absl::Duration ready_timeout = absl::Seconds(30);
  absl::Duration stop_grace = absl::Seconds(5);
  // How long the proxy's credentials live.
  absl::Duration credential_lifetime = absl::Minutes(10);
  int workers = 4;
  // Where the owners' keys come from; null stamps none.
  SecretsSource* secrets = nullptr;
  // The host directory where the platform's egress proxy listens (egress.sock); bound
  // read-only at /run/tidepool-egress in every sandbox, whose supervisor relays the tool's
  // HTTP(S)_PROXY (127.0.0.1:kEgressRelayPort) there. Empty: <dir>/../egress.
  std::string egress_socket_dir;
  // The admin's shared model server (model_server.*), for the profiles' templates.
  std::string model_server_url;
  std::string model_server_model;
  // The platform's public origin ("https://tidepool.example.com"), for the profiles' templates
  // (a tool's allowed origins).
  std::string public_origin;
  // Host directory of the tools every sandbox mounts read-only at /opt/tidepool/tools (Node.js
  // and OpenClaw, installed by scripts/setup). Empty or missing: nothing is mounted.
  std::string tools_dir;
  // The sandboxes' host group when they run as a host uid of their own (LocalRuntimeOptions::
  // sandbox_host_gid): the stamp and secrets directories are then this group's to read (0750,
  // files 0640), never to write. -1: they are the provisioner's alone (0700, files 0600).
  int sandbox_gid = -1;
  // Started spares of the default profile kept for new people, when the profile declares
  // owner_ready_path (provisioner.warm_spares): a spare is a workspace id, stamp, volume and
  // running sandbox made for nobody, its tool ready; a new person's Ensure claims one, and it
  // is stamped for them while it runs. Spares are in no store, list or view, and are deleted
  // by Stop (and, after a crash, by the next Start).
  int warm_spares = 0;
  // Told the number of ready spares whenever it changes, and each claim (for /metrics).
  std::function<void(int)> on_ready_spares;
  std::function<void()> on_spare_claimed;
  // How often the config guards' tamper events are pulled from running supervisors and
  // audited (the sandbox cannot call out). Zero disables it.
  absl::Duration guard_poll_interval = absl::Seconds(1);
};

// The tool's health as the provisioner last heard it (the API's WorkspaceHealth).
enum class WorkspaceHealthView { kUnknown, kHealthy, kDegraded, kUnhealthy };

// SandboxUsage with the CPU rate over the last sampling interval.
struct WorkspaceUsageSample {
  SandboxUsage usage;
  int64_t cpu_millicores = 0;
};

// A state change, for WatchWorkspaces.
struct WorkspaceEvent {
  uint64_t sequence = 0;
  WorkspaceRecord workspace;
};

// Where and how to reach a running workspace's supervisor.
struct Endpoint {
  std::string unix_socket_path;
  std::string credential;  // secret
  absl::Time credential_expire_time = absl::InfinitePast();
  // From the workspace's profile: how the proxy passes the person to the tool.
  IdentityHeaders identity;
};

// Drives every workspace's observed state towards its desired state through a Runtime:
// RUNNING (create the sandbox, stamp the profile, start the supervisor, wait until it answers),
// SLEEPING and SUSPENDED (stop the sandbox, keep the volume), DELETED (remove everything).
// Work for one workspace is serialized; a queue of worker threads serves all of them, and a
// request that arrives while a workspace is being reconciled is picked up right after. On
// start every live workspace is reconciled again, so running sandboxes are re-adopted, not
// duplicated. Every transition is recorded, audited and published. Thread-safe.
class WorkspaceManager {
 public:
  WorkspaceManager(WorkspaceManagerOptions options, WorkspaceStore& store, Runtime& runtime,
                   Clock& clock, AuditEmitter* audit);
  ~WorkspaceManager();  // Stop()s

  // Queues every live workspace and starts the workers.
  absl::Status Start();
  void Stop();

  // See workspace_service.proto for each operation's rules and errors.
  absl::StatusOr<EnsureOutcome> Ensure(const std::string& owner_user_id,
                                       const std::string& profile, const std::string& timezone);
  absl::StatusOr<WorkspaceRecord> Wake(const std::string& workspace_id, absl::Time wait_until);
  absl::StatusOr<WorkspaceRecord> Sleep(const std::string& workspace_id, const std::string& reason,
                                        absl::Time wait_until);
  absl::StatusOr<WorkspaceRecord> Restart(const std::string& workspace_id, absl::Time wait_until);
  absl::StatusOr<WorkspaceRecord> Delete(const std::string& workspace_id, absl::Time wait_until);
  absl::StatusOr<std::vector<WorkspaceRecord>> SetOwnerSuspended(const std::string& owner_user_id,
                                                                 bool suspended,
                                                                 const std::string& reason);
  absl::StatusOr<Endpoint> GetEndpoint(const std::string& workspace_id, const std::string& caller);
  // The workspace and owner an egress relay's credential names (see ResolveEgressCredential
  // in workspace_service.proto for the errors), and when it expires.
  struct EgressOwner {
    std::string workspace_id;
    std::string owner_user_id;
    absl::Time expire_time = absl::InfinitePast();
  };
  absl::StatusOr<EgressOwner> ResolveEgressCredential(const std::string& credential);
  // The sandbox's usage, with its CPU rate (cpu_millicores) over the time since the previous
  // call for it (a fresh 250 ms sample when there was none in the last 5 minutes).
  absl::StatusOr<WorkspaceUsageSample> Usage(const std::string& workspace_id);
  // The tool's health as its supervisor reports it (GetStatus, at most 1 s; remembered for
  // 5 s). UNSPECIFIED for a workspace that is not running.
  WorkspaceHealthView Health(const WorkspaceRecord& workspace);
  // The limits a workspace of `profile` gets: the configured ones, with the profile's memory
  // and CPU floors (min_memory_mib, min_cpu_millicores).
  ResourceLimits LimitsFor(const std::string& profile) const;

  // Blocks until the workspace's observed state equals its desired state (or FAILED), or
  // `deadline`. DEADLINE_EXCEEDED then.
  absl::StatusOr<WorkspaceRecord> AwaitSettled(const std::string& workspace_id, absl::Time deadline);

  // Events after `after_sequence`, waiting until `deadline` for at least one.
  std::vector<WorkspaceEvent> EventsAfter(uint64_t after_sequence, absl::Time deadline);
  uint64_t LatestSequence();

  // Re-stamps the keys of `owner_user_id`'s running workspace after they changed, and
  // restarts its tool when a changed key is not one the tool picks up on its own.
  absl::Status OnSecretsChanged(const std::string& owner_user_id);
  // OnSecretsChanged for the owner of every running workspace.
  void RestampAllSecrets();
  // Pulls new config-guard events from every running supervisor and audits each one
  // (config.tamper_detected). The pull is also the supervisor's heartbeat: a RUNNING
  // workspace whose supervisor misses kMaxGuardMisses pulls in a row is audited and restarted:
  // workspace.supervisor_unresponsive when it is stopped or hung (the tool cannot run on with
  // its guard frozen), workspace.sandbox_exited when the sandbox is gone (its supervisor was
  // killed from inside). Runs every guard_poll_interval; public for tests.
  void PollConfigGuards();
  static constexpr int kMaxGuardMisses = 5;

  // The started spares ready for new people (options_.warm_spares), oldest first.
  std::vector<std::string> ReadySpares();

  WorkspaceStore& store() { return store_; }
  const WorkspaceManagerOptions& options() const { return options_; }
  std::string SocketPath(const std::string& workspace_id) const;
  std::string VolumeDir(const std::string& workspace_id) const;
  std::string EgressSocketDir() const;

 private:
  // Spares (options_.warm_spares): kept topped up by SpareLoop.
  void SpareLoop();
  absl::StatusOr<std::string> MakeSpare(const ToolProfile& profile);
  void DiscardSpare(const std::string& workspace_id);
  // A ready spare for a new person, now claimed (removed from the ready ones); "" if none.
  std::string TakeSpare();
  // BringUp of a claimed spare: stamped for its owner while it runs, ready once the tool
  // answers the owner at the profile's owner_ready_path.
  absl::Status AdoptSpare(const WorkspaceRecord& workspace, const ToolProfile& profile);
  bool ToolAcceptsOwner(const WorkspaceRecord& workspace, const ToolProfile& profile);
  std::string SpareMarker(const std::string& workspace_id) const;
  void Enqueue(const std::string& workspace_id);
  void WorkerLoop();
  void Reconcile(const std::string& workspace_id);
  absl::Status BringUp(const WorkspaceRecord& workspace);
  // Renders the profile's files for the workspace and its owner and writes them with a new
  // manifest generation; returns the generation. Placeholders: workspace_id, owner_user_id,
  // timezone, profile, tool_credential (a secret derived from the workspace key, for the tool's
  // own authentication), model_server_url, model_server_model, capabilities (a JSON array
  // of the catalogue providers the owner has keys for, as StampSecrets last saw them),
  // public_origin, and egress_proxy_url (the supervisor's relay inside the sandbox).
  absl::StatusOr<uint64_t> Stamp(const WorkspaceRecord& workspace, const ToolProfile& profile);
  // Writes the owner's keys for the profile into the workspace's secrets directory. Returns
  // whether the tool must restart to see the change (false when nothing changed or every
  // changed key applies without a restart). `capabilities_changed`, if not null, tells whether
  // the set of providers with keys or a key mapped to a config entry changed (the profile's
  // files are then stamped again).
  absl::StatusOr<bool> StampSecrets(const WorkspaceRecord& workspace,
                                    bool* capabilities_changed = nullptr);
  std::string SecretsDir(const std::string& workspace_id) const;
  // Creates a directory the sandbox reads (stamps, secrets) with the modes of sandbox_gid.
  absl::Status PrepareSandboxReadDir(const std::string& dir) const;
  // Writes a file in such a directory: `mode` plus group read when sandbox_gid is set.
  absl::Status WriteSandboxReadFile(const std::string& path, const std::string& text,
                                    mode_t mode) const;
  SandboxSpec SpecFor(const WorkspaceRecord& workspace, const ToolProfile& profile) const;
  // `rendered` (a stamped file with merge_keys) with the owner's config-entry keys set in it.
  absl::StatusOr<std::string> MergeKeys(const WorkspaceRecord& workspace,
                                        const std::string& file_path,
                                        const std::string& rendered) const;
  // The values of the profile templates' {{placeholders}} for one workspace.
  std::map<std::string, std::string> TemplateValues(const WorkspaceRecord& workspace,
                                                    const ToolProfile& profile) const;
  bool SupervisorReady(const std::string& workspace_id);
  // POST /_tidepool/v1/<method> to the workspace's supervisor, as the provisioner.
  absl::StatusOr<SupervisorReply> CallSupervisor(const std::string& workspace_id,
                                                 const std::string& method, const std::string& body,
                                                 absl::Duration timeout);
  // Has the running supervisor install stamp `generation` (its guard reloads the files).
  absl::Status InstallStamp(const std::string& workspace_id, uint64_t generation);
  // Restarts the running tool, so that changed environment keys reach it.
  absl::Status RestartToolForKeys(const std::string& workspace_id);
  // PollConfigGuards' response to a supervisor that stopped answering.
  void RestartUnresponsive(const std::string& workspace_id);
  void Observe(const std::string& workspace_id, WorkspaceState state, const std::string& reason);
  void Publish(const WorkspaceRecord& record);
  absl::StatusOr<WorkspaceRecord> Want(const std::string& workspace_id, WorkspaceState desired,
                                       const std::string& reason, absl::Time wait_until);

  const WorkspaceManagerOptions options_;
  WorkspaceStore& store_;
  Runtime& runtime_;
  Clock& clock_;
  AuditEmitter* audit_;

  absl::Mutex queue_mu_;
  std::deque<std::string> queue_ ABSL_GUARDED_BY(queue_mu_);
  std::set<std::string> queued_ ABSL_GUARDED_BY(queue_mu_);
  std::set<std::string> busy_ ABSL_GUARDED_BY(queue_mu_);
  std::set<std::string> again_ ABSL_GUARDED_BY(queue_mu_);
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;
  std::vector<std::thread> workers_;
  std::unique_ptr<PeriodicTask> guard_poller_;
  // Per workspace, the providers its owner has keys for (a JSON array), for stamping.
  absl::Mutex samples_mu_;
  // Per workspace: the last CPU sample (cumulative seconds, when) and the last health heard.
  std::map<std::string, std::pair<double, absl::Time>> cpu_samples_ ABSL_GUARDED_BY(samples_mu_);
  std::map<std::string, std::pair<WorkspaceHealthView, absl::Time>> health_ ABSL_GUARDED_BY(samples_mu_);
  mutable absl::Mutex capabilities_mu_;
  std::map<std::string, std::string> capabilities_ ABSL_GUARDED_BY(capabilities_mu_);
  // Per workspace: the supervisor's boot id and the last guard event audited.
  absl::Mutex guard_mu_;
  std::map<std::string, std::pair<std::string, uint64_t>> guard_seen_ ABSL_GUARDED_BY(guard_mu_);
  // Per workspace: polls in a row its running sandbox's supervisor did not answer.
  std::map<std::string, int> guard_misses_ ABSL_GUARDED_BY(guard_mu_);

  absl::Mutex spares_mu_;
  std::deque<std::string> spares_ ABSL_GUARDED_BY(spares_mu_);  // ready, oldest first
  std::set<std::string> claimed_ ABSL_GUARDED_BY(spares_mu_);   // not yet stamped for the owner
  bool spares_stopping_ ABSL_GUARDED_BY(spares_mu_) = false;
  std::thread spare_thread_;

  absl::Mutex events_mu_;
  std::deque<WorkspaceEvent> events_ ABSL_GUARDED_BY(events_mu_);
  uint64_t sequence_ ABSL_GUARDED_BY(events_mu_) = 0;
};

}  // namespace tidepool::provisioner
