#include "services/secrets/secrets_vault.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/crypto/crypto.h"
#include "lib/log.h"
#include "lib/status_macros.h"
#include "lib/text.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "services/secrets/envelope.h"
#include "services/secrets/secret_file.h"

namespace tidepool::secrets {
namespace {

namespace commonpb = ::tidepool::common::v1;

constexpr int kRewrapBatch = 100;
constexpr size_t kMaxAttributeBytes = 1024;
constexpr char kAutoRotationActor[] = "secrets.auto_rotation";

commonpb::AuditEvent NewEvent(absl::string_view action, commonpb::Outcome outcome,
                              const Actor& actor, absl::string_view subject_user_id) {
  commonpb::AuditEvent event;
  event.set_action(std::string(action));
  event.set_outcome(outcome);
  if (!actor.user_id.empty()) {
    event.mutable_actor()->set_kind(commonpb::ACTOR_KIND_USER);
    event.mutable_actor()->set_id(actor.user_id);
  } else if (!actor.service.empty()) {
    event.mutable_actor()->set_kind(commonpb::ACTOR_KIND_SERVICE);
    event.mutable_actor()->set_id(actor.service);
  } else {
    event.mutable_actor()->set_kind(commonpb::ACTOR_KIND_SYSTEM);
    event.mutable_actor()->set_id(kAutoRotationActor);
  }
  if (!actor.service.empty()) {
    (*event.mutable_attributes())["via"] = actor.service;
  }
  event.set_subject_user_id(std::string(subject_user_id));
  return event;
}

void SetAttribute(commonpb::AuditEvent& event, absl::string_view key, absl::string_view value) {
  std::string text(value.substr(0, kMaxAttributeBytes));
  if (!IsCleanUtf8(text)) {
    text = "(not shown: not clean UTF-8)";
  }
  (*event.mutable_attributes())[std::string(key)] = std::move(text);
}

// Provider and field attributes, only when they are well-formed ids (never free text).
void SetIds(commonpb::AuditEvent& event, absl::string_view provider_id,
            absl::string_view field_id) {
  if (IsValidCatalogueId(provider_id)) {
    SetAttribute(event, "provider", provider_id);
  }
  if (IsValidCatalogueId(field_id)) {
    SetAttribute(event, "field", field_id);
  }
}

// "a.b, c.d, ..." cut to fit one attribute.
std::string JoinFields(const std::vector<std::string>& names) {
  std::string joined = absl::StrJoin(names, ",");
  if (joined.size() > kMaxAttributeBytes) {
    joined.resize(kMaxAttributeBytes - 4);
    joined += ",...";
  }
  return joined;
}

}  // namespace

bool IsValidUserId(absl::string_view user_id) { return IsRandomId(user_id, "u_"); }

bool IsValidWorkspaceId(absl::string_view workspace_id) { return IsRandomId(workspace_id, "ws_"); }

bool IsValidCatalogueId(absl::string_view id) {
  if (id.empty() || id.size() > 64 || !(id[0] >= 'a' && id[0] <= 'z')) {
    return false;
  }
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

struct SecretsVault::Metrics {
  explicit Metrics(prometheus::Registry& registry)
      : operations(prometheus::BuildCounter()
                       .Name("tidepool_secrets_operations_total")
                       .Help("Secrets operations by operation and resulting status code.")
                       .Register(registry)),
        integrity_failures(prometheus::BuildCounter()
                               .Name("tidepool_secrets_integrity_failures_total")
                               .Help("Stored ciphertexts or data keys that failed "
                                     "authentication (altered or moved rows).")
                               .Register(registry)
                               .Add({})),
        rotations(prometheus::BuildCounter()
                      .Name("tidepool_secrets_keyring_rotations_total")
                      .Help("Keyring terms added, by trigger.")
                      .Register(registry)),
        term(prometheus::BuildGauge()
                 .Name("tidepool_secrets_keyring_term")
                 .Help("The active keyring term.")
                 .Register(registry)
                 .Add({})) {}
  prometheus::Family<prometheus::Counter>& operations;
  prometheus::Counter& integrity_failures;
  prometheus::Family<prometheus::Counter>& rotations;
  prometheus::Gauge& term;
};

SecretsVault::SecretsVault(SecretsVaultOptions options, const Catalogue& catalogue, Clock& clock,
                           AuditEmitter* audit, prometheus::Registry* registry)
    : options_(std::move(options)),
      catalogue_(catalogue),
      clock_(clock),
      audit_(audit),
      metrics_(registry == nullptr ? nullptr : std::make_unique<Metrics>(*registry)) {}

SecretsVault::~SecretsVault() = default;

absl::StatusOr<std::unique_ptr<SecretsVault>> SecretsVault::Open(SecretsVaultOptions options,
                                                                 const Catalogue& catalogue,
                                                                 Clock& clock, AuditEmitter* audit,
                                                                 prometheus::Registry* registry) {
  if (options.dir.empty() || options.max_value_bytes < 1 || options.rotation.max_operations < 1 ||
      options.rotation.max_age <= absl::ZeroDuration() ||
      options.master_key.file.empty() == options.master_key.env_var.empty()) {
    return absl::InvalidArgumentError(
        "secrets: a directory, one master key source and positive limits are required");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot create ", options.dir, ": ", ec.message()));
  }
  ::chmod(options.dir.c_str(), 0700);
  auto vault = std::unique_ptr<SecretsVault>(
      new SecretsVault(std::move(options), catalogue, clock, audit, registry));
  const SecretsVaultOptions& opts = vault->options_;
  const std::string db_path = opts.dir + "/secrets.db";
  vault->keyring_path_ = opts.dir + "/keyring";
  const bool first_start = !PathExists(db_path) && !PathExists(vault->keyring_path_);

  TP_ASSIGN_OR_RETURN(LoadedMasterKey loaded, LoadMasterKeyAtStart(opts.master_key, first_start));
  SecretBytes master = std::move(loaded.key);
  if (loaded.generated) {
    LogWarning(
        "generated a new master key for the secrets service; back it up, it cannot be "
        "recreated",
        {{"key_file", opts.master_key.file}});
  }
  SecretStoreOptions store_options;
  store_options.path = db_path;
  store_options.max_secrets_per_user = opts.max_secrets_per_user;
  store_options.max_encryptions_per_data_key = opts.max_encryptions_per_data_key;
  store_options.change_retention = opts.change_retention;
  TP_ASSIGN_OR_RETURN(vault->store_, SecretStore::Open(store_options, clock));
  SecretStore& store = *vault->store_;

  const std::string next_key_path =
      opts.master_key.file.empty() ? std::string() : opts.master_key.file + ".next";
  absl::StatusOr<Keyring> keyring = LoadKeyringFile(vault->keyring_path_, master.view());
  if (keyring.ok()) {
    if (!next_key_path.empty() && PathExists(next_key_path)) {
      // A rotation stopped before its keyring was written: the old key still rules.
      TP_RETURN_IF_ERROR(RemoveDurably(next_key_path));
      LogWarning("discarded the new key of a master key rotation that did not complete",
                 {{"key_file", next_key_path}});
    }
  } else if (keyring.status().code() == absl::StatusCode::kNotFound) {
    TP_ASSIGN_OR_RETURN(uint64_t recorded, store.HighestKeyringTerm());
    TP_ASSIGN_OR_RETURN(uint64_t wrapped, store.HighestDataKeyTerm());
    if (recorded > 0 || wrapped > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "sealed: the keyring file ", vault->keyring_path_,
          " is missing, but the database holds data keys (keyring term ",
          std::max(recorded, wrapped), "); restore the keyring file from your backup"));
    }
    TP_ASSIGN_OR_RETURN(keyring, Keyring::Create(clock.Now()));
    TP_RETURN_IF_ERROR(SaveKeyringFile(vault->keyring_path_, *keyring, master.view()));
  } else if (keyring.status().code() == absl::StatusCode::kFailedPrecondition &&
             !next_key_path.empty() && PathExists(next_key_path)) {
    // A rotation wrote its keyring but stopped before replacing the key file: finish it.
    absl::StatusOr<SecretBytes> next_key = ReadMasterKeyFile(next_key_path);
    if (!next_key.ok()) {
      return keyring.status();
    }
    absl::StatusOr<Keyring> retried = LoadKeyringFile(vault->keyring_path_, next_key->view());
    if (!retried.ok()) {
      return keyring.status();
    }
    TP_RETURN_IF_ERROR(RenameDurably(next_key_path, opts.master_key.file));
    master = *std::move(next_key);
    keyring = std::move(retried);
    LogWarning("completed an interrupted master key rotation",
               {{"key_file", opts.master_key.file}});
  } else {
    return keyring.status();
  }

  TP_ASSIGN_OR_RETURN(uint64_t recorded, store.HighestKeyringTerm());
  TP_ASSIGN_OR_RETURN(uint64_t wrapped, store.HighestDataKeyTerm());
  const uint64_t highest = std::max(recorded, wrapped);
  if (absl::Status rollback = CheckNotRolledBack(*keyring, highest); !rollback.ok()) {
    commonpb::AuditEvent event =
        NewEvent("secrets.keyring_rollback_detected", commonpb::OUTCOME_DENIED, Actor{}, "");
    SetAttribute(event, "keyring_term", std::to_string(keyring->active_term()));
    SetAttribute(event, "recorded_term", std::to_string(highest));
    vault->AuditNonBlocking(std::move(event));
    LogError("keyring rollback detected; the secrets service stays sealed",
             {{"keyring_term", keyring->active_term()}, {"recorded_term", highest}});
    return rollback;
  }
  TP_RETURN_IF_ERROR(store.RecordKeyringTerm(keyring->active_term()));
  {
    absl::MutexLock lock(&vault->keyring_mu_);
    vault->keyring_ = std::make_shared<const Keyring>(*std::move(keyring));
    vault->master_key_ = std::move(master);
    if (vault->metrics_ != nullptr) {
      vault->metrics_->term.Set(static_cast<double>(vault->keyring_->active_term()));
    }
  }
  vault->master_key_generated_ = loaded.generated;
  return vault;
}

std::shared_ptr<const Keyring> SecretsVault::Snapshot() {
  absl::MutexLock lock(&keyring_mu_);
  return keyring_;
}

uint64_t SecretsVault::active_term() { return Snapshot()->active_term(); }

template <typename T>
absl::StatusOr<T> SecretsVault::WithKeyring(
    const std::function<absl::StatusOr<T>(const Keyring& keyring)>& op) {
  std::shared_ptr<const Keyring> keyring = Snapshot();
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<T> result = op(*keyring);
    if (result.ok() || result.status().code() != absl::StatusCode::kFailedPrecondition ||
        attempt == 2) {
      return result;
    }
    std::shared_ptr<const Keyring> fresh = Snapshot();
    if (fresh->active_term() == keyring->active_term()) {
      return result;  // not a rotation race: the data key's term is truly unknown
    }
    keyring = std::move(fresh);
  }
}

absl::Mutex& SecretsVault::UserLock(absl::string_view user_id) {
  const size_t hash =
      std::hash<std::string_view>()(std::string_view(user_id.data(), user_id.size()));
  return user_locks_[hash % user_locks_.size()];
}

absl::Status SecretsVault::AuditDurable(commonpb::AuditEvent event) {
  if (audit_ == nullptr) {
    return absl::UnavailableError("no audit trail is configured; the operation was refused");
  }
  absl::Status status =
      audit_->EmitDurable(std::move(event), clock_.Now() + options_.audit_timeout);
  if (!status.ok()) {
    return absl::UnavailableError(
        "the audit trail cannot record this right now, so it was refused; try again shortly");
  }
  return absl::OkStatus();
}

void SecretsVault::AuditNonBlocking(commonpb::AuditEvent event) {
  if (audit_ != nullptr) {
    audit_->Emit(std::move(event));
  }
}

void SecretsVault::Count(absl::string_view operation, const absl::Status& status) {
  if (metrics_ != nullptr) {
    metrics_->operations
        .Add({{"operation", std::string(operation)},
              {"code", absl::StatusCodeToString(status.code())}})
        .Increment();
  }
}

void SecretsVault::RecordDenied(const Actor& actor, absl::string_view action,
                                absl::string_view requested_user_id) {
  commonpb::AuditEvent event = NewEvent(action, commonpb::OUTCOME_DENIED, actor,
                                        IsValidUserId(requested_user_id) ? requested_user_id : "");
  event.set_reason_code("not_owner");
  AuditNonBlocking(std::move(event));
  Count(action.substr(action.rfind('.') + 1), absl::NotFoundError(""));
}

absl::StatusOr<PutOutcome> SecretsVault::Put(const Actor& actor, absl::string_view user_id,
                                             absl::string_view provider_id,
                                             absl::string_view field_id, absl::string_view value,
                                             int64_t expected_version) {
  absl::StatusOr<PutOutcome> result =
      PutImpl(actor, user_id, provider_id, field_id, value, expected_version);
  Count("put", result.status());
  return result;
}

absl::StatusOr<PutOutcome> SecretsVault::PutImpl(const Actor& actor, absl::string_view user_id,
                                                 absl::string_view provider_id,
                                                 absl::string_view field_id,
                                                 absl::string_view value,
                                                 int64_t expected_version) {
  if (!IsValidUserId(user_id)) {
    return absl::InvalidArgumentError("user_id is malformed");
  }
  if (expected_version < -1) {
    return absl::InvalidArgumentError(
        "expected_version must be 0 (any), -1 (only if absent) or a stored version");
  }
  auto refuse = [&](const absl::Status& status, absl::string_view reason) {
    commonpb::AuditEvent event = NewEvent("secrets.put", commonpb::OUTCOME_FAILURE, actor, user_id);
    event.set_reason_code(std::string(reason));
    SetIds(event, provider_id, field_id);
    AuditNonBlocking(std::move(event));
    return status;
  };
  if (absl::Status valid = catalogue_.ValidateValue(provider_id, field_id, value,
                                                    static_cast<size_t>(options_.max_value_bytes));
      !valid.ok()) {
    return refuse(valid, "invalid_value");
  }
  absl::MutexLock user_lock(&UserLock(user_id));
  TP_RETURN_IF_ERROR(RotateKeyringIfDue().status());
  TP_ASSIGN_OR_RETURN(std::optional<SecretMeta> existing,
                      store_->Get(user_id, provider_id, field_id));
  // The store checks these again inside its transaction; checking first keeps refused writes
  // out of the trail of successful ones.
  if (expected_version == -1 && existing.has_value()) {
    return refuse(
        absl::AlreadyExistsError(absl::StrCat(
            provider_id, ".", field_id, " is already stored (version ", existing->version, ")")),
        "already_exists");
  }
  if (expected_version > 0 && (!existing.has_value() || existing->version != expected_version)) {
    return refuse(absl::AbortedError(absl::StrCat(
                      "version conflict: ", provider_id, ".", field_id, " is ",
                      existing.has_value() ? absl::StrCat("at version ", existing->version)
                                           : std::string("not stored"),
                      ", not at version ", expected_version, "; read it again and retry")),
                  "version_conflict");
  }
  if (!existing.has_value()) {
    TP_ASSIGN_OR_RETURN(int64_t count, store_->Count(user_id));
    if (count >= options_.max_secrets_per_user) {
      return refuse(absl::ResourceExhaustedError(absl::StrCat(
                        "you already store ", count, " secrets, the most allowed per user (",
                        options_.max_secrets_per_user, "); delete some first")),
                    "limit_reached");
    }
  }
  TP_ASSIGN_OR_RETURN(int64_t last_version, store_->LastVersion(user_id, provider_id, field_id));
  const int64_t next_version =
      std::max(last_version, existing.has_value() ? existing->version : int64_t{0}) + 1;
  std::shared_ptr<const Keyring> keyring = Snapshot();
  const std::string fingerprint = Fingerprint(keyring->fingerprint_key(), value);

  commonpb::AuditEvent event = NewEvent("secrets.put", commonpb::OUTCOME_SUCCESS, actor, user_id);
  SetIds(event, provider_id, field_id);
  SetAttribute(event, "version", std::to_string(next_version));
  SetAttribute(event, "secret_fingerprint", fingerprint);
  SetAttribute(event, "replaced", existing.has_value() ? "true" : "false");
  TP_RETURN_IF_ERROR(AuditDurable(std::move(event)));

  absl::StatusOr<StoredPut> stored = WithKeyring<StoredPut>([&](const Keyring& current) {
    return store_->Put(current, user_id, provider_id, field_id, value, fingerprint,
                       existing.has_value() ? existing->version : -1);
  });
  if (!stored.ok()) {
    commonpb::AuditEvent failed = NewEvent("secrets.put", commonpb::OUTCOME_ERROR, actor, user_id);
    failed.set_reason_code("store_failed");
    SetIds(failed, provider_id, field_id);
    AuditNonBlocking(std::move(failed));
    return stored.status();
  }
  if (stored->data_key_replaced) {
    LogInfo("replaced a user's data key after its encryption budget",
            {{"user_id", std::string(user_id)}});
  }
  PutOutcome outcome;
  outcome.secret = std::move(stored->secret);
  const CatalogueProvider* provider = catalogue_.FindProvider(provider_id);
  const CatalogueMapping* mapping =
      provider == nullptr ? nullptr : provider->FindMapping(options_.default_profile);
  outcome.applies_without_restart = mapping != nullptr && mapping->applies_without_restart;
  return outcome;
}

absl::StatusOr<std::vector<SecretMeta>> SecretsVault::Delete(const Actor& actor,
                                                             absl::string_view user_id,
                                                             absl::string_view provider_id,
                                                             absl::string_view field_id,
                                                             int64_t expected_version) {
  absl::StatusOr<std::vector<SecretMeta>> result =
      DeleteImpl(actor, user_id, provider_id, field_id, expected_version);
  Count("delete", result.status());
  return result;
}

absl::StatusOr<std::vector<SecretMeta>> SecretsVault::DeleteImpl(const Actor& actor,
                                                                 absl::string_view user_id,
                                                                 absl::string_view provider_id,
                                                                 absl::string_view field_id,
                                                                 int64_t expected_version) {
  if (!IsValidUserId(user_id)) {
    return absl::InvalidArgumentError("user_id is malformed");
  }
  if (!IsValidCatalogueId(provider_id)) {
    return absl::InvalidArgumentError("provider_id is missing or malformed");
  }
  if (!field_id.empty() && !IsValidCatalogueId(field_id)) {
    return absl::InvalidArgumentError("field_id is malformed");
  }
  if (expected_version < 0 || (expected_version != 0 && field_id.empty())) {
    return absl::InvalidArgumentError(
        "expected_version must be 0 or a stored version, and needs a field_id");
  }
  absl::MutexLock user_lock(&UserLock(user_id));
  TP_ASSIGN_OR_RETURN(std::vector<SecretMeta> rows, store_->List(user_id, provider_id));
  if (!field_id.empty()) {
    rows.erase(std::remove_if(rows.begin(), rows.end(),
                              [&](const SecretMeta& m) { return m.field_id != field_id; }),
               rows.end());
  }
  if (rows.empty()) {
    return absl::NotFoundError(kNoSuchSecret);
  }
  if (expected_version != 0 && rows.front().version != expected_version) {
    return absl::AbortedError(absl::StrCat("version conflict: ", provider_id, ".", field_id,
                                           " is at version ", rows.front().version, ", not ",
                                           expected_version, "; read it again and retry"));
  }
  std::vector<std::string> names;
  std::vector<std::string> fingerprints;
  for (const SecretMeta& row : rows) {
    names.push_back(absl::StrCat(row.provider_id, ".", row.field_id));
    fingerprints.push_back(row.fingerprint);
  }
  commonpb::AuditEvent event =
      NewEvent("secrets.delete", commonpb::OUTCOME_SUCCESS, actor, user_id);
  SetIds(event, provider_id, field_id);
  SetAttribute(event, "fields", JoinFields(names));
  SetAttribute(event, "secret_fingerprints", JoinFields(fingerprints));
  TP_RETURN_IF_ERROR(AuditDurable(std::move(event)));
  absl::StatusOr<StoredDelete> deleted =
      store_->Delete(user_id, provider_id, field_id, expected_version);
  if (!deleted.ok()) {
    commonpb::AuditEvent failed =
        NewEvent("secrets.delete", commonpb::OUTCOME_ERROR, actor, user_id);
    failed.set_reason_code("store_failed");
    SetIds(failed, provider_id, field_id);
    AuditNonBlocking(std::move(failed));
    return deleted.status();
  }
  return std::move(deleted->deleted);
}

absl::StatusOr<ListOutcome> SecretsVault::List(const Actor& actor, absl::string_view user_id,
                                               absl::string_view provider_id) {
  absl::StatusOr<ListOutcome> result = [&]() -> absl::StatusOr<ListOutcome> {
    if (!IsValidUserId(user_id)) {
      return absl::InvalidArgumentError("user_id is malformed");
    }
    if (!provider_id.empty() && !IsValidCatalogueId(provider_id)) {
      return absl::InvalidArgumentError("provider_id is malformed");
    }
    ListOutcome outcome;
    TP_ASSIGN_OR_RETURN(outcome.secrets, store_->List(user_id, provider_id));
    // Capabilities count every stored field, also when a provider filter is set.
    std::vector<SecretMeta> all;
    if (!provider_id.empty()) {
      TP_ASSIGN_OR_RETURN(all, store_->List(user_id, ""));
    }
    std::vector<std::pair<std::string, std::string>> stored;
    for (const SecretMeta& meta : provider_id.empty() ? outcome.secrets : all) {
      stored.emplace_back(meta.provider_id, meta.field_id);
    }
    outcome.capabilities = catalogue_.Capabilities(stored);
    commonpb::AuditEvent event =
        NewEvent("secrets.list", commonpb::OUTCOME_SUCCESS, actor, user_id);
    SetAttribute(event, "count", std::to_string(outcome.secrets.size()));
    AuditNonBlocking(std::move(event));
    return outcome;
  }();
  Count("list", result.status());
  return result;
}

absl::StatusOr<Resolution> SecretsVault::Resolve(const Actor& actor, absl::string_view workspace_id,
                                                 absl::string_view owner_user_id,
                                                 absl::string_view profile) {
  absl::StatusOr<Resolution> result = ResolveImpl(actor, workspace_id, owner_user_id, profile);
  Count("resolve", result.status());
  return result;
}

absl::StatusOr<Resolution> SecretsVault::ResolveImpl(const Actor& actor,
                                                     absl::string_view workspace_id,
                                                     absl::string_view owner_user_id,
                                                     absl::string_view profile) {
  if (!IsValidWorkspaceId(workspace_id)) {
    return absl::InvalidArgumentError("workspace_id is malformed");
  }
  if (!IsValidUserId(owner_user_id)) {
    return absl::InvalidArgumentError("owner_user_id is malformed");
  }
  if (!catalogue_.HasProfile(profile)) {
    return absl::InvalidArgumentError(
        absl::StrCat("profile must be one of the catalogue's tool profiles (",
                     absl::StrJoin(catalogue_.profiles(), ", "), ")"));
  }
  Resolution resolution;
  // Read the sequence first: every change after it is replayed to a watcher starting there.
  resolution.watch_sequence = store_->LatestSequence();
  absl::StatusOr<std::vector<PlainSecret>> plain = WithKeyring<std::vector<PlainSecret>>(
      [&](const Keyring& keyring) { return store_->DecryptAll(keyring, owner_user_id); });
  if (!plain.ok()) {
    if (plain.status().code() == absl::StatusCode::kInternal ||
        plain.status().code() == absl::StatusCode::kFailedPrecondition) {
      commonpb::AuditEvent event =
          NewEvent("secrets.integrity_failure", commonpb::OUTCOME_ERROR, actor, owner_user_id);
      event.set_workspace_id(std::string(workspace_id));
      event.set_reason_code("authentication_failed");
      AuditNonBlocking(std::move(event));
      if (metrics_ != nullptr) {
        metrics_->integrity_failures.Increment();
      }
      LogError(
          "a stored secret failed authentication; nothing was returned",
          {{"user_id", std::string(owner_user_id)}, {"workspace_id", std::string(workspace_id)}});
      return absl::InternalError("a stored secret failed authentication");
    }
    return plain.status();
  }
  std::vector<std::pair<std::string, std::string>> stored;
  std::vector<std::string> names;
  for (PlainSecret& secret : *plain) {
    ResolvedField field;
    const CatalogueProvider* provider = catalogue_.FindProvider(secret.meta.provider_id);
    const CatalogueMapping* mapping =
        provider == nullptr ? nullptr : provider->FindMapping(profile);
    if (mapping != nullptr) {
      field.applies_without_restart = mapping->applies_without_restart;
      for (const CatalogueTarget& target : mapping->targets) {
        if (target.field_id == secret.meta.field_id) {
          field.targets.push_back(target);
        }
      }
    }
    stored.emplace_back(secret.meta.provider_id, secret.meta.field_id);
    names.push_back(absl::StrCat(secret.meta.provider_id, ".", secret.meta.field_id));
    field.meta = std::move(secret.meta);
    field.value = std::move(secret.value);
    resolution.secrets.push_back(std::move(field));
  }
  resolution.capabilities = catalogue_.Capabilities(stored);
  commonpb::AuditEvent event =
      NewEvent("secrets.resolve", commonpb::OUTCOME_SUCCESS, actor, owner_user_id);
  event.set_workspace_id(std::string(workspace_id));
  SetAttribute(event, "profile", profile);
  SetAttribute(event, "field_count", std::to_string(names.size()));
  SetAttribute(event, "fields", JoinFields(names));
  TP_RETURN_IF_ERROR(AuditDurable(std::move(event)));
  return resolution;
}

absl::StatusOr<RotationOutcome> SecretsVault::RotateMasterKey(const Actor& actor,
                                                              SecretBytes new_key,
                                                              absl::string_view reason,
                                                              absl::string_view key_source) {
  absl::StatusOr<RotationOutcome> result =
      RotateMasterKeyImpl(actor, std::move(new_key), reason, key_source);
  Count("rotate_master_key", result.status());
  return result;
}

absl::StatusOr<RotationOutcome> SecretsVault::RotateMasterKeyImpl(const Actor& actor,
                                                                  SecretBytes new_key,
                                                                  absl::string_view reason,
                                                                  absl::string_view key_source) {
  if (!options_.master_key.env_var.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the master key comes from the environment variable ", options_.master_key.env_var,
        ", which this service cannot change; rotate online with a key file "
        "(secrets.master_key_file) instead"));
  }
  if (new_key.size() != kMasterKeySize) {
    return absl::InvalidArgumentError("the new master key must be exactly 32 bytes");
  }
  if (absl::StatusOr<SecretBytes> checked = ParseMasterKey(new_key.view(), "the new master key");
      !checked.ok()) {
    return absl::InvalidArgumentError(checked.status().message());
  }
  if (!rotation_mu_.TryLock()) {
    return absl::FailedPreconditionError(
        "a key rotation is already running; try again when it has finished");
  }
  struct Unlock {
    absl::Mutex& mu;
    ~Unlock() ABSL_NO_THREAD_SAFETY_ANALYSIS { mu.Unlock(); }
  } unlock{rotation_mu_};
  bool same = false;
  {
    absl::MutexLock lock(&keyring_mu_);
    same = crypto::ConstantTimeEquals(master_key_.view(), new_key.view());
  }
  if (same) {
    return absl::AlreadyExistsError("the new master key equals the current one");
  }
  const uint64_t new_term = active_term() + 1;
  commonpb::AuditEvent event =
      NewEvent("secrets.master_key_rotated", commonpb::OUTCOME_SUCCESS, actor, "");
  SetAttribute(event, "new_term", std::to_string(new_term));
  SetAttribute(event, "key_source", key_source);
  if (!reason.empty()) {
    SetAttribute(event, "reason", reason);
  }
  TP_RETURN_IF_ERROR(AuditDurable(std::move(event)));
  absl::StatusOr<RotationOutcome> outcome = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return RotateLocked(&new_key, /*rewrap=*/true);
  }();
  if (outcome.ok() && metrics_ != nullptr) {
    metrics_->rotations.Add({{"trigger", "master_key"}}).Increment();
  }
  if (outcome.ok()) {
    LogInfo("rotated the master key",
            {{"term", outcome->term}, {"rewrapped_data_keys", outcome->rewrapped_data_keys}});
  }
  return outcome;
}

absl::StatusOr<uint64_t> SecretsVault::RotateKeyringIfDue() {
  std::shared_ptr<const Keyring> keyring = Snapshot();
  TP_ASSIGN_OR_RETURN(int64_t used, store_->TermEncryptions(keyring->active_term()));
  if (RotationDue(options_.rotation, used, keyring->active_create_time(), clock_.Now()).empty()) {
    return keyring->active_term();
  }
  absl::MutexLock rotation(&rotation_mu_);
  keyring = Snapshot();  // another thread may have rotated meanwhile
  TP_ASSIGN_OR_RETURN(used, store_->TermEncryptions(keyring->active_term()));
  const std::string due =
      RotationDue(options_.rotation, used, keyring->active_create_time(), clock_.Now());
  if (due.empty()) {
    return keyring->active_term();
  }
  commonpb::AuditEvent event =
      NewEvent("secrets.keyring_rotated", commonpb::OUTCOME_SUCCESS, Actor{}, "");
  SetAttribute(event, "trigger", due);
  SetAttribute(event, "new_term", std::to_string(keyring->active_term() + 1));
  SetAttribute(event, "term_encryptions", std::to_string(used));
  TP_RETURN_IF_ERROR(AuditDurable(std::move(event)));
  // Like Vault's automatic rotation: older terms stay for reading, nothing is rewrapped (which
  // would spend the new term's budget at once).
  TP_ASSIGN_OR_RETURN(RotationOutcome outcome, RotateLocked(nullptr, /*rewrap=*/false));
  if (metrics_ != nullptr) {
    metrics_->rotations.Add({{"trigger", due}}).Increment();
  }
  LogInfo("rotated the keyring automatically",
          {{"term", outcome.term}, {"trigger", due}, {"term_encryptions", used}});
  return outcome.term;
}

absl::StatusOr<RotationOutcome> SecretsVault::RotateLocked(const SecretBytes* new_master_key,
                                                           bool rewrap) {
  std::shared_ptr<const Keyring> current = Snapshot();
  TP_ASSIGN_OR_RETURN(Keyring next, current->WithNewTerm(clock_.Now()));
  SecretBytes master;
  if (new_master_key != nullptr) {
    master = new_master_key->Clone();
  } else {
    absl::MutexLock lock(&keyring_mu_);
    master = master_key_.Clone();
  }
  const std::string& key_file = options_.master_key.file;
  const std::string next_key_file = key_file + ".next";
  if (new_master_key != nullptr) {
    // The new key is durable before anything is sealed under it (see Open for recovery).
    TP_RETURN_IF_ERROR(WriteMasterKeyFile(next_key_file, master.view()));
  }
  if (absl::Status saved = SaveKeyringFile(keyring_path_, next, master.view()); !saved.ok()) {
    if (new_master_key != nullptr) {
      RemoveDurably(next_key_file).IgnoreError();
    }
    return saved;
  }
  // The keyring file now needs the new key: from here on the rotation has happened.
  absl::Status promoted = absl::OkStatus();
  if (new_master_key != nullptr) {
    promoted = RenameDurably(next_key_file, key_file);
  }
  auto shared = std::make_shared<const Keyring>(std::move(next));
  {
    absl::MutexLock lock(&keyring_mu_);
    keyring_ = shared;
    master_key_ = std::move(master);
    if (metrics_ != nullptr) {
      metrics_->term.Set(static_cast<double>(shared->active_term()));
    }
  }
  absl::Status recorded = store_->RecordKeyringTerm(shared->active_term());
  RotationOutcome outcome;
  outcome.term = shared->active_term();
  absl::Status rewrapped = absl::OkStatus();
  while (rewrap) {
    absl::StatusOr<int64_t> batch = store_->RewrapDataKeys(*shared, kRewrapBatch);
    if (!batch.ok()) {
      rewrapped = batch.status();
      break;
    }
    if (*batch == 0) {
      break;
    }
    outcome.rewrapped_data_keys += *batch;
  }
  outcome.complete_time = clock_.Now();
  if (!promoted.ok() || !recorded.ok() || !rewrapped.ok()) {
    const absl::Status& first = !promoted.ok() ? promoted : !recorded.ok() ? recorded : rewrapped;
    LogError("keyring rotation finished only in part",
             {{"term", outcome.term}, {"error", std::string(first.message())}});
    return absl::UnavailableError(absl::StrCat(
        "the new keyring term ", outcome.term, " is active, but finishing the rotation failed (",
        first.message(), "); data keys stay readable and the next start completes it"));
  }
  return outcome;
}

}  // namespace tidepool::secrets
