#include "services/secrets/secrets_service.h"

#include <cstdlib>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"
#include "lib/caller.h"
#include "lib/grpc_status.h"
#include "lib/log.h"
#include "lib/periodic_task.h"
#include "lib/text.h"
#include "services/secrets/process_hardening.h"

namespace tidepool::secrets {
namespace {

using google::protobuf::util::TimeUtil;

constexpr size_t kMaxReasonBytes = 512;
constexpr absl::Duration kWatchPollSlice = absl::Milliseconds(500);
constexpr absl::Duration kRotationCheckPeriod = absl::Hours(1);

google::protobuf::Timestamp Stamp(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

void ToProto(const SecretMeta& meta, v1::SecretMetadata* out) {
  out->set_user_id(meta.user_id);
  out->set_provider_id(meta.provider_id);
  out->set_field_id(meta.field_id);
  *out->mutable_create_time() = Stamp(meta.create_time);
  *out->mutable_update_time() = Stamp(meta.update_time);
  out->set_version(meta.version);
  out->set_fingerprint(meta.fingerprint);
}

// The user a call concerns and who is acting. `admins_for_others`: whether an admin person may
// act on someone else's secrets (Delete, List) or not (Put). tidepoolctl may always name a
// user. A refused cross-user attempt is NOT_FOUND, exactly as for a secret that does not exist.
struct Target {
  Actor actor;
  std::string user_id;
};

absl::StatusOr<Target> ResolveTarget(SecretsVault& vault, const grpc::ServerContext& context,
                                     const std::string& requested, bool admins_for_others,
                                     absl::string_view action) {
  absl::StatusOr<Caller> caller = ResolveCaller(context);
  if (!caller.ok()) {
    return caller.status();
  }
  Target target;
  target.actor = Actor{caller->user_id, caller->service};
  if (requested.empty()) {
    if (caller->user_id.empty()) {
      return absl::InvalidArgumentError("user_id is required");
    }
    target.user_id = caller->user_id;
    return target;
  }
  if (!IsValidUserId(requested)) {
    return absl::InvalidArgumentError("user_id is malformed");
  }
  const bool self = !caller->user_id.empty() && caller->user_id == requested;
  const bool operator_cli = caller->user_id.empty() && caller->admin;
  const bool admin_person = !caller->user_id.empty() && caller->admin && admins_for_others;
  if (!self && !operator_cli && !admin_person) {
    vault.RecordDenied(target.actor, action, requested);
    return absl::NotFoundError(kNoSuchSecret);
  }
  target.user_id = requested;
  return target;
}

}  // namespace

grpc::Status SecretsServiceImpl::Put(grpc::ServerContext* context, const v1::PutRequest* request,
                                     v1::PutResponse* response) {
  absl::StatusOr<Target> target = ResolveTarget(vault_, *context, request->user_id(),
                                                /*admins_for_others=*/false, "secrets.put");
  if (!target.ok()) {
    return ToGrpcStatus(target.status());
  }
  absl::StatusOr<PutOutcome> put =
      vault_.Put(target->actor, target->user_id, request->provider_id(), request->field_id(),
                 request->value(), request->expected_version());
  if (!put.ok()) {
    return ToGrpcStatus(put.status());
  }
  ToProto(put->secret, response->mutable_secret());
  response->set_applies_without_restart(put->applies_without_restart);
  return grpc::Status::OK;
}

grpc::Status SecretsServiceImpl::Delete(grpc::ServerContext* context,
                                        const v1::DeleteRequest* request,
                                        v1::DeleteResponse* response) {
  absl::StatusOr<Target> target = ResolveTarget(vault_, *context, request->user_id(),
                                                /*admins_for_others=*/true, "secrets.delete");
  if (!target.ok()) {
    return ToGrpcStatus(target.status());
  }
  absl::StatusOr<std::vector<SecretMeta>> deleted =
      vault_.Delete(target->actor, target->user_id, request->provider_id(), request->field_id(),
                    request->expected_version());
  if (!deleted.ok()) {
    return ToGrpcStatus(deleted.status());
  }
  for (const SecretMeta& meta : *deleted) {
    ToProto(meta, response->add_deleted_secrets());
  }
  return grpc::Status::OK;
}

grpc::Status SecretsServiceImpl::List(grpc::ServerContext* context, const v1::ListRequest* request,
                                      v1::ListResponse* response) {
  absl::StatusOr<Target> target = ResolveTarget(vault_, *context, request->user_id(),
                                                /*admins_for_others=*/true, "secrets.list");
  if (!target.ok()) {
    return ToGrpcStatus(target.status());
  }
  absl::StatusOr<ListOutcome> listed =
      vault_.List(target->actor, target->user_id, request->provider_id());
  if (!listed.ok()) {
    return ToGrpcStatus(listed.status());
  }
  for (const SecretMeta& meta : listed->secrets) {
    ToProto(meta, response->add_secrets());
  }
  for (const std::string& capability : listed->capabilities) {
    response->add_capabilities(capability);
  }
  return grpc::Status::OK;
}

grpc::Status SecretsServiceImpl::GetCatalogue(grpc::ServerContext*,
                                              const v1::GetCatalogueRequest* request,
                                              v1::GetCatalogueResponse* response) {
  const Catalogue& catalogue = vault_.catalogue();
  if (!request->profile().empty() && !catalogue.HasProfile(request->profile())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("profile must be one of the catalogue's tool profiles (",
                                     absl::StrJoin(catalogue.profiles(), ", "), ")"));
  }
  *response = catalogue.ToProto(request->profile());
  return grpc::Status::OK;
}

grpc::Status SecretsServiceImpl::Watch(grpc::ServerContext* context,
                                       const v1::WatchRequest* request,
                                       grpc::ServerWriter<v1::WatchResponse>* writer) {
  const std::string& user_id = request->user_id();
  if (!user_id.empty() && !IsValidUserId(user_id)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "user_id is malformed");
  }
  SecretStore& store = vault_.store();
  const uint64_t latest = store.LatestSequence();
  uint64_t position = request->after_sequence();
  if (position == 0) {
    position = latest;  // live changes only
  } else if (position > latest) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("after_sequence ", position, " is newer than the latest change (", latest,
                     "); resynchronise with ResolveForWorkspace and watch from its "
                     "watch_sequence"));
  }
  auto too_old = [&](uint64_t after) -> absl::Status {
    absl::StatusOr<uint64_t> oldest = store.OldestRetainedSequence();
    if (!oldest.ok()) {
      return oldest.status();
    }
    if (after + 1 < *oldest) {
      return absl::FailedPreconditionError(
          absl::StrCat("after_sequence ", after,
                       " is older than the retained change history (oldest kept: ", *oldest,
                       "); resynchronise with ResolveForWorkspace and watch from its "
                       "watch_sequence"));
    }
    return absl::OkStatus();
  };
  v1::WatchResponse hello;
  hello.set_latest_sequence(latest);
  if (!writer->Write(hello)) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the watcher went away");
  }
  absl::Time last_sent = absl::Now();
  while (!context->IsCancelled()) {
    if (absl::Status status = too_old(position); !status.ok()) {
      return ToGrpcStatus(status);
    }
    // Everything up to `scanned` is covered by the read below, also where the user filter
    // skips other users' changes.
    const uint64_t scanned = store.LatestSequence();
    absl::StatusOr<std::vector<SecretChange>> changes =
        store.ChangesAfter(position, user_id, options_.watch_batch);
    if (!changes.ok()) {
      return ToGrpcStatus(changes.status());
    }
    for (const SecretChange& change : *changes) {
      v1::WatchResponse message;
      v1::SecretChange* out = message.mutable_change();
      out->set_sequence(change.sequence);
      out->set_kind(change.kind == ChangeKind::kDelete ? v1::CHANGE_KIND_DELETE
                                                       : v1::CHANGE_KIND_PUT);
      ToProto(change.secret, out->mutable_secret());
      *out->mutable_change_time() = Stamp(change.change_time);
      message.set_latest_sequence(std::max(change.sequence, store.LatestSequence()));
      if (!writer->Write(message)) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "the watcher went away");
      }
      position = change.sequence;
      last_sent = absl::Now();
    }
    if (changes->size() == static_cast<size_t>(options_.watch_batch)) {
      continue;  // more to replay
    }
    position = std::max(position, scanned);
    if (absl::Now() - last_sent >= options_.watch_keepalive) {
      v1::WatchResponse keepalive;
      keepalive.set_latest_sequence(store.LatestSequence());
      if (!writer->Write(keepalive)) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "the watcher went away");
      }
      last_sent = absl::Now();
    }
    store.WaitForNewer(
        position, std::min(absl::Now() + kWatchPollSlice, last_sent + options_.watch_keepalive));
  }
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "the server is shutting down; reconnect with the last sequence seen");
}

grpc::Status SecretsServiceImpl::ResolveForWorkspace(grpc::ServerContext* context,
                                                     const v1::ResolveForWorkspaceRequest* request,
                                                     v1::ResolveForWorkspaceResponse* response) {
  // The allowlist admits the provisioner alone; checked again so that plaintext never depends
  // on one layer.
  absl::StatusOr<Caller> caller = ResolveCaller(*context);
  if (!caller.ok() || caller->service != "provisioner") {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "only the provisioner may resolve secrets");
  }
  absl::StatusOr<Resolution> resolution =
      vault_.Resolve(Actor{"", caller->service}, request->workspace_id(), request->owner_user_id(),
                     request->profile());
  if (!resolution.ok()) {
    return ToGrpcStatus(resolution.status());
  }
  for (const ResolvedField& field : resolution->secrets) {
    v1::ResolvedSecret* out = response->add_secrets();
    out->set_provider_id(field.meta.provider_id);
    out->set_field_id(field.meta.field_id);
    out->set_version(field.meta.version);
    out->set_value(std::string(field.value.view()));
    for (const CatalogueTarget& target : field.targets) {
      *out->add_targets() = TargetToProto(target);
    }
    out->set_applies_without_restart(field.applies_without_restart);
  }
  for (const std::string& capability : resolution->capabilities) {
    response->add_capabilities(capability);
  }
  response->set_watch_sequence(resolution->watch_sequence);
  return grpc::Status::OK;
}

grpc::Status SecretsServiceImpl::RotateMasterKey(grpc::ServerContext* context,
                                                 const v1::RotateMasterKeyRequest* request,
                                                 v1::RotateMasterKeyResponse* response) {
  absl::StatusOr<Caller> caller = ResolveCaller(*context);
  if (!caller.ok()) {
    return ToGrpcStatus(caller.status());
  }
  if (!caller->admin) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "administrators only");
  }
  if (request->reason().size() > kMaxReasonBytes || !IsCleanUtf8(request->reason())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "reason must be at most 512 bytes of text without control characters");
  }
  SecretBytes new_key;
  std::string key_source;
  switch (request->new_key_case()) {
    case v1::RotateMasterKeyRequest::kNewKeyPath: {
      absl::StatusOr<SecretBytes> read = ReadMasterKeyFile(request->new_key_path());
      if (!read.ok()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            std::string(read.status().message()));
      }
      new_key = *std::move(read);
      key_source = "file";
      break;
    }
    case v1::RotateMasterKeyRequest::kNewKeyMaterial:
      if (request->new_key_material().size() != kMasterKeySize) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "new_key_material must be exactly 32 bytes");
      }
      new_key = SecretBytes(request->new_key_material());
      key_source = "request";
      break;
    case v1::RotateMasterKeyRequest::NEW_KEY_NOT_SET:
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "new_key_path or new_key_material is required");
  }
  absl::StatusOr<RotationOutcome> rotated = vault_.RotateMasterKey(
      Actor{caller->user_id, caller->service}, std::move(new_key), request->reason(), key_source);
  if (!rotated.ok()) {
    return ToGrpcStatus(rotated.status());
  }
  response->set_term(rotated->term);
  response->set_rewrapped_data_key_count(rotated->rewrapped_data_keys);
  *response->mutable_complete_time() = Stamp(rotated->complete_time);
  return grpc::Status::OK;
}

SecretsVaultOptions VaultOptionsFromConfig(const PlatformConfig& config,
                                           const std::string& data_dir) {
  SecretsVaultOptions options;
  options.dir = data_dir + "/secrets";
  if (!config.secrets.master_key_env.empty()) {
    options.master_key.env_var = config.secrets.master_key_env;
  } else if (!config.secrets.master_key_file.empty()) {
    options.master_key.file = config.secrets.master_key_file;
  } else {
    options.master_key.file = options.dir + "/master.key";
  }
  options.max_value_bytes = config.secrets.max_value_bytes;
  options.max_secrets_per_user = config.secrets.max_secrets_per_user;
  options.rotation.max_operations = config.secrets.auto_rotate_operations;
  options.rotation.max_age = config.secrets.auto_rotate_interval;
  return options;
}

namespace {

// Everything the hosted service keeps alive, destroyed in reverse order (timer first).
struct HostedSecrets {
  std::unique_ptr<Catalogue> catalogue;
  std::unique_ptr<SecretsVault> vault;
  std::unique_ptr<PeriodicTask> rotation_timer;
};

}  // namespace

ServiceDefinition SecretsServiceDefinition() {
  ServiceDefinition definition;
  definition.name = "secrets";
  definition.create =
      [](const ServiceContext& context) -> absl::StatusOr<std::vector<HostedService>> {
    if (absl::Status hardened = DisableCoreDumps(); !hardened.ok()) {
      return hardened;
    }
    absl::StatusOr<Catalogue> catalogue = Catalogue::LoadEmbedded();
    if (!catalogue.ok()) {
      return absl::InternalError(absl::StrCat("the built-in provider catalogue is invalid: ",
                                              catalogue.status().message()));
    }
    auto hosted = std::make_shared<HostedSecrets>();
    hosted->catalogue = std::make_unique<Catalogue>(*std::move(catalogue));
    const SecretsVaultOptions options = VaultOptionsFromConfig(context.config, context.data_dir);
    absl::StatusOr<std::unique_ptr<SecretsVault>> vault = SecretsVault::Open(
        options, *hosted->catalogue, context.clock, context.audit, &context.metrics);
    if (!vault.ok()) {
      return vault.status();
    }
    hosted->vault = *std::move(vault);
    if (!options.master_key.env_var.empty()) {
      ::unsetenv(options.master_key.env_var.c_str());
    }
    SecretsVault* raw_vault = hosted->vault.get();
    hosted->rotation_timer = std::make_unique<PeriodicTask>(kRotationCheckPeriod, [raw_vault] {
      absl::StatusOr<uint64_t> term = raw_vault->RotateKeyringIfDue();
      if (!term.ok()) {
        LogWarning("scheduled keyring rotation check failed",
                   {{"error", std::string(term.status().message())}});
      }
    });
    LogInfo("secrets vault unsealed",
            {{"keyring_term", raw_vault->active_term()},
             {"providers", static_cast<int64_t>(hosted->catalogue->providers().size())}});
    std::vector<HostedService> services;
    services.push_back(
        HostedService{.full_name = "tidepool.secrets.v1.SecretsService",
                      .pending_note = "",
                      .service = std::make_unique<SecretsServiceImpl>(*hosted->vault),
                      .on_stopped = [hosted] { hosted->rotation_timer->Stop(); },
                      .state = hosted});
    return services;
  };
  return definition;
}

}  // namespace tidepool::secrets
