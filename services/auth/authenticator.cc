#include "services/auth/authenticator.h"

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/crypto/crypto.h"
#include "lib/file_util.h"
#include "lib/log.h"
#include "lib/return_path.h"
#include "lib/status_macros.h"

namespace tidepool::auth {
namespace {

namespace commonpb = ::tidepool::common::v1;

constexpr absl::string_view kWrongCredentials = "the e-mail or password is wrong";
constexpr size_t kMaxEmailBytes = 254;
constexpr size_t kMaxSecretBytes = 1024;

std::string RoleName(UserRole role) {
  return std::string(role == UserRole::kAdmin ? kRoleAdmin : kRoleUser);
}

absl::Status CheckTimezoneIfSet(absl::string_view timezone) {
  if (!timezone.empty() && !IsValidTimezone(timezone)) {
    return absl::InvalidArgumentError("timezone must be an IANA time zone such as Europe/Berlin");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> LoadOrCreateKey(const std::string& path) {
  absl::StatusOr<std::string> existing = ReadFileToString(path);
  if (existing.ok()) {
    TP_RETURN_IF_ERROR(CheckOwnerOnly(path));
    if (existing->size() < 32) {
      return absl::FailedPreconditionError(absl::StrCat(path, " is shorter than 32 bytes"));
    }
    return existing;
  }
  TP_ASSIGN_OR_RETURN(std::string key, crypto::RandomBytes(32));
  TP_RETURN_IF_ERROR(WriteFileAtomically(path, key, 0600));
  return key;
}

}  // namespace

commonpb::AuditEvent AuthEvent(absl::string_view action, commonpb::Outcome outcome,
                               absl::string_view actor_user_id, absl::string_view subject_user_id) {
  commonpb::AuditEvent event;
  event.set_action(std::string(action));
  event.set_outcome(outcome);
  if (actor_user_id.empty()) {
    event.mutable_actor()->set_kind(commonpb::ACTOR_KIND_SERVICE);
    event.mutable_actor()->set_id("auth");
  } else {
    event.mutable_actor()->set_kind(commonpb::ACTOR_KIND_USER);
    event.mutable_actor()->set_id(std::string(actor_user_id));
  }
  event.set_subject_user_id(std::string(subject_user_id));
  return event;
}

Authenticator::Authenticator(AuthenticatorOptions options, Clock& clock, AuditEmitter* audit)
    : options_(std::move(options)),
      clock_(clock),
      audit_(audit),
      hasher_(options_.password),
      password_throttle_(clock),
      invite_throttle_(clock) {}

Authenticator::~Authenticator() = default;

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Open(
    const AuthenticatorOptions& options, Clock& clock, AuditEmitter* audit) {
  for (const auto& provider : options.providers) {
    if (provider == nullptr) {
      return absl::InvalidArgumentError("a sign-in provider is missing");
    }
  }
  if (options.token_lifetime <= absl::ZeroDuration() || options.token_lifetime > absl::Hours(1) ||
      options.session_lifetime < options.token_lifetime ||
      options.session_lifetime > absl::Hours(168)) {
    return absl::InvalidArgumentError(
        "session token lifetime must be at most 1h and session lifetime at most 168h");
  }
  TP_RETURN_IF_ERROR(PasswordHasher::ValidateOptions(options.password));
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot create ", options.dir, ": ", ec.message()));
  }
  auto auth = std::unique_ptr<Authenticator>(new Authenticator(options, clock, audit));
  const std::string path = options.dir + "/auth.db";
  for (std::unique_ptr<SqliteDb>* db :
       {&auth->users_db_, &auth->sessions_db_, &auth->keys_db_, &auth->invites_db_}) {
    TP_ASSIGN_OR_RETURN(*db, SqliteDb::Open(path, SqliteOptions{}));
  }
  TP_ASSIGN_OR_RETURN(auth->users_, UserStore::Open(*auth->users_db_, clock));
  SessionStoreOptions session_options;
  session_options.token_lifetime = options.token_lifetime;
  session_options.session_lifetime = options.session_lifetime;
  TP_ASSIGN_OR_RETURN(auth->sessions_,
                      SessionStore::Open(*auth->sessions_db_, clock, session_options));
  SigningKeyRingOptions key_options;
  key_options.grace = options.token_lifetime;
  key_options.min_rotation_interval = options.min_rotation_interval;
  TP_ASSIGN_OR_RETURN(auth->keys_, SigningKeyRing::Open(*auth->keys_db_, clock, key_options));
  auth->verifier_ = std::make_unique<SessionTokenVerifier>(*auth->keys_, clock);
  TP_RETURN_IF_ERROR(InviteStore::InitSchema(*auth->invites_db_));
  TP_ASSIGN_OR_RETURN(std::string fingerprint_key,
                      LoadOrCreateKey(options.dir + "/invite_fingerprint.key"));
  auth->invites_ = std::make_unique<InviteStore>(*auth->invites_db_, clock, auth->invite_throttle_,
                                                 fingerprint_key);
  TP_ASSIGN_OR_RETURN(auth->signin_db_, SqliteDb::Open(path, SqliteOptions{}));
  TP_ASSIGN_OR_RETURN(auth->signin_states_,
                      SignInStateStore::Open(*auth->signin_db_, clock, options.signin_states));
  TP_ASSIGN_OR_RETURN(auth->outbox_db_, SqliteDb::Open(path, SqliteOptions{}));
  TP_ASSIGN_OR_RETURN(auth->outbox_,
                      ProvisionerOutbox::Open(*auth->outbox_db_, clock, options.provisioner));
  return auth;
}

absl::Status Authenticator::AuditDurable(commonpb::AuditEvent event) {
  if (audit_ == nullptr) {
    return absl::UnavailableError("no audit trail is configured");
  }
  absl::Status status = audit_->EmitDurable(std::move(event), clock_.Now() + absl::Seconds(5));
  if (!status.ok()) {
    return absl::UnavailableError("the audit trail cannot record this; try again shortly");
  }
  return absl::OkStatus();
}

void Authenticator::AuditFailure(commonpb::AuditEvent event) {
  if (audit_ != nullptr) {
    audit_->Emit(std::move(event));
  }
}

absl::StatusOr<std::optional<std::string>> Authenticator::EnsureFirstAdmin() {
  TP_ASSIGN_OR_RETURN(int64_t count, users_->Count());
  UserRecord admin;
  if (count == 0) {
    TP_ASSIGN_OR_RETURN(
        admin, users_->CreateLocalUser(options_.admin_email, "Administrator", UserRole::kAdmin));
    AuditFailure(
        AuthEvent("admin.first_admin_created", commonpb::OUTCOME_SUCCESS, "", admin.user_id));
  } else {
    absl::StatusOr<UserRecord> existing = users_->FindByEmail(options_.admin_email);
    if (!existing.ok() || !existing->password_hash.empty()) {
      return std::optional<std::string>();
    }
    admin = *std::move(existing);
  }
  if (!admin.password_hash.empty()) {
    return std::optional<std::string>();
  }
  TP_ASSIGN_OR_RETURN(std::string token,
                      users_->CreateSetupToken(admin.user_id, options_.setup_link_lifetime));
  return std::optional<std::string>(std::move(token));
}

absl::StatusOr<Grant> Authenticator::IssueGrant(const UserRecord& user, SessionSecret secret) {
  const absl::Time now = clock_.Now();
  SessionClaims claims;
  claims.user_id = user.user_id;
  claims.session_id = secret.session.session_id;
  claims.role = RoleName(user.role);
  claims.issued_at = now;
  claims.expires_at = now + options_.token_lifetime;
  TP_ASSIGN_OR_RETURN(std::string token, SignSessionToken(claims, keys_->Current()));
  Grant grant;
  grant.session_token = std::move(token);
  grant.session_token_expire_time = absl::FromUnixSeconds(absl::ToUnixSeconds(claims.expires_at));
  grant.refresh_token = std::move(secret.refresh_token);
  grant.refresh_token_expire_time = secret.session.refresh_expire_time;
  grant.session_id = secret.session.session_id;
  grant.user = user;
  grant.user.password_hash.clear();
  return grant;
}

absl::StatusOr<Grant> Authenticator::SignInWithPassword(absl::string_view email,
                                                        absl::string_view password,
                                                        absl::string_view timezone,
                                                        absl::string_view source_address) {
  if (email.empty() || password.empty() || email.size() > kMaxEmailBytes ||
      password.size() > kMaxSecretBytes) {
    return absl::InvalidArgumentError(
        "e-mail and password are required (at most 254 and 1024 bytes)");
  }
  TP_RETURN_IF_ERROR(CheckTimezoneIfSet(timezone));
  if (!options_.local_accounts) {
    return absl::FailedPreconditionError("local accounts are not enabled in this deployment");
  }
  absl::StatusOr<GuessThrottle::Attempt> attempt = password_throttle_.Admit(source_address, email);
  if (!attempt.ok()) {
    commonpb::AuditEvent event = AuthEvent("auth.sign_in_failed", commonpb::OUTCOME_DENIED, "", "");
    event.set_reason_code("throttled");
    event.set_source_address(std::string(source_address.substr(0, 64)));
    AuditFailure(std::move(event));
    return absl::ResourceExhaustedError("too many failed sign-ins; wait a minute and try again");
  }
  absl::StatusOr<UserRecord> user = users_->FindByEmail(email);
  const bool known = user.ok() && !user->password_hash.empty();
  const bool match = known ? hasher_.Verify(password, user->password_hash)
                           : (hasher_.VerifyDummy(password), false);
  if (!match) {
    commonpb::AuditEvent event = AuthEvent("auth.sign_in_failed", commonpb::OUTCOME_FAILURE, "",
                                           user.ok() ? user->user_id : "");
    event.set_reason_code(known ? "bad_password" : "unknown_account");
    event.set_source_address(std::string(source_address.substr(0, 64)));
    (*event.mutable_attributes())["provider"] = "local";
    AuditFailure(std::move(event));
    return absl::UnauthenticatedError(kWrongCredentials);
  }
  password_throttle_.Forgive(*attempt);
  if (user->suspended) {
    commonpb::AuditEvent event =
        AuthEvent("auth.sign_in_failed", commonpb::OUTCOME_DENIED, user->user_id, user->user_id);
    event.set_reason_code("suspended");
    AuditFailure(std::move(event));
    return absl::PermissionDeniedError("this account is suspended");
  }
  commonpb::AuditEvent event =
      AuthEvent("auth.sign_in", commonpb::OUTCOME_SUCCESS, user->user_id, user->user_id);
  event.set_source_address(std::string(source_address.substr(0, 64)));
  (*event.mutable_attributes())["provider"] = "local";
  TP_RETURN_IF_ERROR(AuditDurable(std::move(event)));
  if (hasher_.NeedsRehash(user->password_hash)) {
    if (absl::StatusOr<std::string> rehashed = hasher_.Hash(password); rehashed.ok()) {
      (void)users_->SetPasswordHash(user->user_id, *rehashed);
    }
  }
  if (!timezone.empty()) {
    TP_ASSIGN_OR_RETURN(*user, users_->SetTimezone(user->user_id, timezone));
  }
  TP_RETURN_IF_ERROR(users_->RecordSignIn(user->user_id));
  TP_ASSIGN_OR_RETURN(SessionSecret secret, sessions_->Create(user->user_id));
  return IssueGrant(*user, std::move(secret));
}

absl::StatusOr<Grant> Authenticator::CompleteSetup(absl::string_view setup_token,
                                                   absl::string_view password,
                                                   absl::string_view timezone,
                                                   absl::string_view source_address) {
  TP_RETURN_IF_ERROR(CheckPasswordPolicy(password));
  TP_RETURN_IF_ERROR(CheckTimezoneIfSet(timezone));
  absl::StatusOr<GuessThrottle::Attempt> attempt =
      password_throttle_.Admit(source_address, "setup");
  if (!attempt.ok()) {
    return absl::ResourceExhaustedError("too many failed attempts; wait a minute and try again");
  }
  absl::StatusOr<UserRecord> user = users_->ConsumeSetupToken(setup_token);
  if (!user.ok()) {
    commonpb::AuditEvent event = AuthEvent("auth.setup_failed", commonpb::OUTCOME_FAILURE, "", "");
    event.set_reason_code("invalid_setup_token");
    event.set_source_address(std::string(source_address.substr(0, 64)));
    AuditFailure(std::move(event));
    return user.status();
  }
  password_throttle_.Forgive(*attempt);
  commonpb::AuditEvent completed =
      AuthEvent("auth.setup_completed", commonpb::OUTCOME_SUCCESS, user->user_id, user->user_id);
  completed.set_source_address(std::string(source_address.substr(0, 64)));
  TP_RETURN_IF_ERROR(AuditDurable(std::move(completed)));
  TP_ASSIGN_OR_RETURN(std::string hash, hasher_.Hash(password));
  TP_RETURN_IF_ERROR(users_->SetPasswordHash(user->user_id, hash));
  if (!timezone.empty()) {
    TP_ASSIGN_OR_RETURN(*user, users_->SetTimezone(user->user_id, timezone));
  }
  const bool first_sign_in = !user->last_sign_in_time.has_value();
  TP_RETURN_IF_ERROR(users_->RecordSignIn(user->user_id));
  if (first_sign_in) {
    RequestWorkspace(*user);  // a local account's first sign-in is its setup
  }
  TP_ASSIGN_OR_RETURN(SessionSecret secret, sessions_->Create(user->user_id));
  return IssueGrant(*user, std::move(secret));
}

absl::StatusOr<Grant> Authenticator::Refresh(absl::string_view refresh_token) {
  if (refresh_token.empty() || refresh_token.size() > kMaxSecretBytes) {
    return absl::InvalidArgumentError("refresh_token is required (at most 1024 bytes)");
  }
  TP_ASSIGN_OR_RETURN(SessionSecret secret, sessions_->Refresh(refresh_token));
  TP_ASSIGN_OR_RETURN(UserRecord user, users_->Get(secret.session.user_id));
  if (user.suspended) {
    (void)sessions_->Revoke(secret.session.session_id, RevokeReason::kUserSuspended);
    return absl::PermissionDeniedError("this account is suspended");
  }
  return IssueGrant(user, std::move(secret));
}

absl::StatusOr<SessionClaims> Authenticator::VerifySession(absl::string_view session_token) {
  if (session_token.empty() || session_token.size() > 4096) {
    return absl::InvalidArgumentError("session_token is required (at most 4096 bytes)");
  }
  TP_ASSIGN_OR_RETURN(SessionClaims claims, verifier_->Verify(session_token));
  TP_ASSIGN_OR_RETURN(bool active,
                      sessions_->IsActive(claims.session_id, claims.user_id, claims.issued_at));
  if (!active) {
    return absl::UnauthenticatedError("the session has ended");
  }
  absl::StatusOr<UserRecord> user = users_->Get(claims.user_id);
  if (!user.ok() || user->suspended) {
    return absl::UnauthenticatedError("the session has ended");
  }
  return claims;
}

absl::StatusOr<std::string> Authenticator::SignOut(absl::string_view session_token) {
  if (session_token.empty()) {
    return absl::InvalidArgumentError("session_token is required");
  }
  TP_ASSIGN_OR_RETURN(SessionClaims claims, verifier_->Verify(session_token));
  TP_RETURN_IF_ERROR(sessions_->Revoke(claims.session_id, RevokeReason::kSignOut));
  AuditFailure(
      AuthEvent("auth.sign_out", commonpb::OUTCOME_SUCCESS, claims.user_id, claims.user_id));
  return claims.session_id;
}

absl::StatusOr<int> Authenticator::SignOutEverywhere(absl::string_view session_token) {
  TP_ASSIGN_OR_RETURN(SessionClaims claims, VerifySession(session_token));
  TP_ASSIGN_OR_RETURN(
      int revoked, sessions_->RevokeAllForUser(claims.user_id, RevokeReason::kSignOutEverywhere));
  AuditFailure(AuthEvent("auth.sign_out_everywhere", commonpb::OUTCOME_SUCCESS, claims.user_id,
                         claims.user_id));
  return revoked;
}

std::vector<VerificationKey> Authenticator::PublicKeys() const { return keys_->PublicKeys(); }

absl::StatusOr<KeyRotation> Authenticator::RotateSigningKey(const Actor& actor,
                                                            absl::string_view reason) {
  if (reason.size() > kMaxRotationReasonBytes) {
    return absl::InvalidArgumentError("reason is at most 512 bytes");
  }
  commonpb::AuditEvent event =
      AuthEvent("admin.signing_key_rotated", commonpb::OUTCOME_SUCCESS, actor.user_id, "");
  (*event.mutable_attributes())["previous_key_id"] = keys_->Current().key_id;
  TP_RETURN_IF_ERROR(AuditDurable(std::move(event)));
  return keys_->Rotate(reason);
}

absl::StatusOr<UserPage> Authenticator::ListUsers(absl::string_view query,
                                                  std::optional<UserRole> role, int page_size,
                                                  absl::string_view page_token,
                                                  std::optional<bool> suspended) {
  TP_ASSIGN_OR_RETURN(UserPage page, users_->List(query, role, page_size, page_token, suspended));
  for (UserRecord& user : page.users) {
    user.password_hash.clear();
  }
  return page;
}

absl::StatusOr<UserRecord> Authenticator::GetUser(absl::string_view user_id) {
  TP_ASSIGN_OR_RETURN(UserRecord user, users_->Get(user_id));
  user.password_hash.clear();
  return user;
}

absl::Status Authenticator::CheckNotLastAdmin(const UserRecord& target) {
  if (target.role != UserRole::kAdmin || target.suspended) {
    return absl::OkStatus();
  }
  TP_ASSIGN_OR_RETURN(UserPage admins, users_->List("", UserRole::kAdmin, 2, ""));
  int active = 0;
  for (const UserRecord& admin : admins.users) {
    active += admin.suspended ? 0 : 1;
  }
  if (active <= 1 && admins.next_page_token.empty()) {
    return absl::FailedPreconditionError("this is the last active administrator");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::pair<UserRecord, int>> Authenticator::SetUserRole(const Actor& actor,
                                                                      absl::string_view user_id,
                                                                      UserRole role,
                                                                      int64_t expected_version) {
  TP_ASSIGN_OR_RETURN(UserRecord user, users_->Get(user_id));
  // Refuse a stale write before auditing it, so the trail never records a change that is
  // then rejected (the store re-checks the version against concurrent writers).
  if (expected_version != 0 && expected_version != user.version) {
    return absl::AbortedError("the user changed since it was read; read it again");
  }
  if (user.role == UserRole::kAdmin && role != UserRole::kAdmin) {
    TP_RETURN_IF_ERROR(CheckNotLastAdmin(user));
  }
  commonpb::AuditEvent event =
      AuthEvent("admin.role_changed", commonpb::OUTCOME_SUCCESS, actor.user_id, user_id);
  (*event.mutable_attributes())["role"] = RoleName(role);
  TP_RETURN_IF_ERROR(AuditDurable(std::move(event)));
  TP_ASSIGN_OR_RETURN(UserRecord updated, users_->SetRole(user_id, role, expected_version));
  TP_ASSIGN_OR_RETURN(int revoked,
                      sessions_->RevokeAllForUser(user_id, RevokeReason::kRoleChanged));
  updated.password_hash.clear();
  return std::make_pair(std::move(updated), revoked);
}

absl::StatusOr<std::pair<UserRecord, int>> Authenticator::SuspendUser(const Actor& actor,
                                                                      absl::string_view user_id,
                                                                      absl::string_view reason) {
  if (reason.size() > 512) {
    return absl::InvalidArgumentError("reason is at most 512 bytes");
  }
  TP_ASSIGN_OR_RETURN(UserRecord user, users_->Get(user_id));
  if (!actor.user_id.empty() && actor.user_id == user_id) {
    return absl::FailedPreconditionError("you cannot suspend yourself");
  }
  TP_RETURN_IF_ERROR(CheckNotLastAdmin(user));
  TP_RETURN_IF_ERROR(AuditDurable(
      AuthEvent("admin.user_suspended", commonpb::OUTCOME_SUCCESS, actor.user_id, user_id)));
  TP_ASSIGN_OR_RETURN(UserRecord updated, users_->SetSuspended(user_id, true, reason));
  if (absl::Status queued = outbox_->EnqueueSuspension(user_id, true, reason); !queued.ok()) {
    LogWarning("cannot queue the workspace stop for a suspended user",
               {{"user_id", std::string(user_id)}, {"error", std::string(queued.message())}});
  }
  if (options_.outbox_enqueued) options_.outbox_enqueued();
  TP_ASSIGN_OR_RETURN(int revoked,
                      sessions_->RevokeAllForUser(user_id, RevokeReason::kUserSuspended));
  // TODO(tidepool): ask the provisioner to stop and hold the user's workspaces
  // (WorkspaceService.SetOwnerSuspended) once it exists (issue #6).
  updated.password_hash.clear();
  return std::make_pair(std::move(updated), revoked);
}

absl::StatusOr<UserRecord> Authenticator::ReinstateUser(const Actor& actor,
                                                        absl::string_view user_id,
                                                        absl::string_view reason) {
  TP_RETURN_IF_ERROR(users_->Get(user_id).status());
  commonpb::AuditEvent event =
      AuthEvent("admin.user_reinstated", commonpb::OUTCOME_SUCCESS, actor.user_id, user_id);
  TP_RETURN_IF_ERROR(AuditDurable(std::move(event)));
  (void)reason;
  TP_ASSIGN_OR_RETURN(UserRecord updated, users_->SetSuspended(user_id, false, ""));
  if (absl::Status queued = outbox_->EnqueueSuspension(user_id, false, reason); !queued.ok()) {
    LogWarning("cannot queue the workspace release for a reinstated user",
               {{"user_id", std::string(user_id)}, {"error", std::string(queued.message())}});
  }
  if (options_.outbox_enqueued) options_.outbox_enqueued();
  updated.password_hash.clear();
  return updated;
}

absl::StatusOr<UserRecord> Authenticator::SetUserTimezone(absl::string_view user_id,
                                                          absl::string_view timezone) {
  TP_ASSIGN_OR_RETURN(UserRecord updated, users_->SetTimezone(user_id, timezone));
  updated.password_hash.clear();
  return updated;
}

absl::StatusOr<std::pair<InviteRecord, std::string>> Authenticator::CreateInvite(const Actor& actor,
                                                                                 InviteSpec spec) {
  spec.created_by_user_id = actor.user_id.empty() ? actor.service : actor.user_id;
  TP_ASSIGN_OR_RETURN(auto created, invites_->Create(spec));
  commonpb::AuditEvent event =
      AuthEvent("admin.invite_created", commonpb::OUTCOME_SUCCESS, actor.user_id, "");
  (*event.mutable_attributes())["invite_id"] = created.first.invite_id;
  (*event.mutable_attributes())["code_fingerprint"] = created.first.code_fingerprint;
  (*event.mutable_attributes())["max_uses"] = std::to_string(created.first.max_uses);
  absl::Status audited = AuditDurable(std::move(event));
  if (!audited.ok()) {
    (void)invites_->Revoke(created.first.invite_id);  // never hand out an unaudited code
    return audited;
  }
  return created;
}

absl::StatusOr<InvitePage> Authenticator::ListInvites(bool include_inactive, int page_size,
                                                      absl::string_view page_token) {
  return invites_->List(include_inactive, page_size, page_token);
}

absl::StatusOr<InviteRecord> Authenticator::RevokeInvite(const Actor& actor,
                                                         absl::string_view invite_id) {
  TP_ASSIGN_OR_RETURN(InviteRecord revoked, invites_->Revoke(invite_id));
  commonpb::AuditEvent event =
      AuthEvent("admin.invite_revoked", commonpb::OUTCOME_SUCCESS, actor.user_id, "");
  (*event.mutable_attributes())["invite_id"] = revoked.invite_id;
  AuditFailure(std::move(event));
  return revoked;
}

// ---------------------------------------------------------------------------------------
// Federated sign-in

void Authenticator::RequestWorkspace(const UserRecord& user) {
  // Through the durable outbox: the sign-in succeeds even when the provisioner is down, and
  // the request is retried until it lands.
  if (absl::Status queued = outbox_->EnqueueEnsure(user.user_id, user.timezone); !queued.ok()) {
    LogWarning("cannot queue the new user's workspace",
               {{"user_id", user.user_id}, {"error", std::string(queued.message())}});
  }
  if (options_.outbox_enqueued) options_.outbox_enqueued();
}

FederatedProvider* Authenticator::FindProvider(absl::string_view provider_id) const {
  for (const auto& provider : options_.providers) {
    if (provider->config().id == provider_id) {
      return provider.get();
    }
  }
  return nullptr;
}

std::string Authenticator::CallbackUrl(absl::string_view provider_id) const {
  return absl::StrCat(options_.public_url, "/auth/callback/", provider_id);
}

void Authenticator::AuditSignInFailure(absl::string_view provider_id, absl::string_view reason,
                                       absl::string_view source_address,
                                       absl::string_view user_id) {
  commonpb::AuditEvent event =
      AuthEvent("auth.sign_in_failed", commonpb::OUTCOME_FAILURE, user_id, user_id);
  event.set_reason_code(std::string(reason));
  event.set_source_address(std::string(source_address.substr(0, 64)));
  (*event.mutable_attributes())["provider"] = std::string(provider_id.substr(0, 64));
  AuditFailure(std::move(event));
}

absl::StatusOr<FederatedStart> Authenticator::BeginFederatedSignIn(
    absl::string_view provider_id, absl::string_view return_path, absl::string_view timezone,
    absl::string_view invite_code, absl::string_view source_address) {
  FederatedProvider* provider = FindProvider(provider_id);
  if (provider == nullptr) {
    return absl::InvalidArgumentError(
        "unknown sign-in provider (ListProviders names the enabled ones; local accounts use "
        "SignInWithPassword)");
  }
  const std::string path = return_path.empty() ? std::string("/") : std::string(return_path);
  if (!IsSafeReturnPath(path)) {
    return absl::InvalidArgumentError(
        "return_path must be a path on this site starting with a single '/'");
  }
  TP_RETURN_IF_ERROR(CheckTimezoneIfSet(timezone));
  if (invite_code.size() > 128) {
    return absl::InvalidArgumentError("invite_code is at most 128 bytes");
  }
  SignInState state;
  state.provider_id = std::string(provider_id);
  TP_ASSIGN_OR_RETURN(state.nonce, crypto::RandomToken(32));
  TP_ASSIGN_OR_RETURN(state.code_verifier, crypto::RandomToken(32));
  state.invite_code = std::string(invite_code);
  state.return_path = path;
  state.timezone = std::string(timezone);
  state.source_address = std::string(source_address);
  // Resolve the provider's URL first: an unreachable issuer must not leave a state behind.
  const std::string redirect_uri = CallbackUrl(provider_id);
  TP_ASSIGN_OR_RETURN(NewSignIn created, signin_states_->Create(state));
  absl::StatusOr<std::string> url = provider->AuthorizationUrl(
      redirect_uri, created.state, state.nonce, PkceChallenge(state.code_verifier));
  if (!url.ok()) {
    std::string ignored;
    (void)signin_states_->Take(created.state, created.cookie_value, &ignored);
    return url.status();
  }
  FederatedStart start;
  start.authorization_url = *std::move(url);
  start.cookie_value = std::move(created.cookie_value);
  start.expire_time = created.expire_time;
  return start;
}

absl::StatusOr<UserRecord> Authenticator::FindOrCreateFederatedUser(
    const ExternalIdentity& identity, const SignInState& state, bool* created) {
  *created = false;
  absl::StatusOr<UserRecord> existing = users_->FindByIdentity(identity.provider_id,
                                                               identity.subject);
  if (existing.ok() || !absl::IsNotFound(existing.status())) {
    return existing;
  }
  // A new account. When invites are required, one is redeemed first (atomically: of 100
  // concurrent redemptions of a single-use code exactly one succeeds). Only a verified
  // e-mail can satisfy an invite bound to an address or domain.
  const std::string verified_email = identity.email_verified ? identity.email : std::string();
  std::string invite_id;
  std::string invite_fingerprint;
  if (options_.invite_required) {
    if (state.invite_code.empty()) {
      AuditSignInFailure(identity.provider_id, "invite_required", state.source_address, "");
      return absl::PermissionDeniedError(
          "this deployment needs an invite code to create an account; ask an administrator "
          "for one and sign in again with it");
    }
    RedeemDetails details;
    absl::StatusOr<InviteRecord> redeemed =
        invites_->Redeem(state.invite_code, verified_email, state.source_address, &details);
    if (!redeemed.ok()) {
      commonpb::AuditEvent event =
          AuthEvent("auth.invite_redeem_failed", commonpb::OUTCOME_DENIED, "", "");
      event.set_reason_code(std::string(RedeemOutcomeName(details.outcome)));
      event.set_source_address(std::string(state.source_address.substr(0, 64)));
      (*event.mutable_attributes())["provider"] = identity.provider_id;
      if (!details.code_fingerprint.empty()) {
        (*event.mutable_attributes())["code_fingerprint"] = details.code_fingerprint;
      }
      AuditFailure(std::move(event));
      if (absl::IsResourceExhausted(redeemed.status())) {
        return redeemed.status();
      }
      if (absl::IsNotFound(redeemed.status())) {
        return absl::PermissionDeniedError(
            "the invite code is not valid (it may be mistyped, used up, expired or meant for "
            "another address)");
      }
      return absl::UnavailableError("the invite could not be checked; try again shortly");
    }
    invite_id = redeemed->invite_id;
    invite_fingerprint = details.code_fingerprint;
  }
  IdentityRecord record;
  record.provider_id = identity.provider_id;
  record.kind = identity.kind;
  record.subject = identity.subject;
  record.email = identity.email;
  absl::StatusOr<UserRecord> user = users_->CreateFederatedUser(record, identity.display_name);
  if (absl::IsAlreadyExists(user.status())) {
    // A concurrent first sign-in of the same identity created it.
    return users_->FindByIdentity(identity.provider_id, identity.subject);
  }
  TP_RETURN_IF_ERROR(user.status());
  *created = true;
  commonpb::AuditEvent event =
      AuthEvent("auth.account_created", commonpb::OUTCOME_SUCCESS, user->user_id, user->user_id);
  (*event.mutable_attributes())["provider"] = identity.provider_id;
  (*event.mutable_attributes())["subject"] = identity.subject.substr(0, 256);
  if (!invite_id.empty()) {
    (*event.mutable_attributes())["invite_id"] = invite_id;
    (*event.mutable_attributes())["code_fingerprint"] = invite_fingerprint;
  }
  TP_RETURN_IF_ERROR(AuditDurable(std::move(event)));
  return user;
}

absl::StatusOr<Grant> Authenticator::CompleteFederatedSignIn(
    absl::string_view provider_id, const std::map<std::string, std::string>& params,
    absl::string_view cookie_value, absl::string_view source_address, std::string* return_path,
    bool* new_user) {
  *new_user = false;
  size_t total = 0;
  for (const auto& [name, value] : params) {
    total += name.size() + value.size();
  }
  if (params.size() > 32 || total > 16 * 1024) {
    AuditSignInFailure(provider_id, "callback_too_large", source_address, "");
    return absl::InvalidArgumentError("the sign-in response is too large");
  }
  auto state_param = params.find("state");
  std::string reason;
  absl::StatusOr<SignInState> state = signin_states_->Take(
      state_param == params.end() ? absl::string_view() : absl::string_view(state_param->second),
      cookie_value, &reason);
  if (!state.ok()) {
    AuditSignInFailure(provider_id, reason, source_address, "");
    return state.status();
  }
  FederatedProvider* provider = FindProvider(provider_id);
  if (provider == nullptr || state->provider_id != provider_id) {
    // A response delivered to another provider's callback (mix-up): never exchanged.
    AuditSignInFailure(provider_id, "provider_mismatch", source_address, "");
    return absl::UnauthenticatedError(
        "the sign-in response does not belong to this provider; start signing in again");
  }
  CallbackContext callback;
  callback.params = params;
  callback.nonce = state->nonce;
  callback.code_verifier = state->code_verifier;
  callback.redirect_uri = CallbackUrl(provider_id);
  absl::StatusOr<ExternalIdentity> identity = provider->Complete(callback, &reason);
  if (!identity.ok()) {
    AuditSignInFailure(provider_id, reason.empty() ? "invalid_response" : reason, source_address,
                       "");
    return identity.status();
  }
  bool created = false;
  absl::StatusOr<UserRecord> user = FindOrCreateFederatedUser(*identity, *state, &created);
  if (!user.ok()) {
    return user.status();
  }
  if (user->suspended) {
    AuditSignInFailure(provider_id, "suspended", source_address, user->user_id);
    return absl::PermissionDeniedError("this account is suspended");
  }
  commonpb::AuditEvent event =
      AuthEvent("auth.sign_in", commonpb::OUTCOME_SUCCESS, user->user_id, user->user_id);
  event.set_source_address(std::string(source_address.substr(0, 64)));
  (*event.mutable_attributes())["provider"] = std::string(provider_id);
  TP_RETURN_IF_ERROR(AuditDurable(std::move(event)));
  (void)users_->RecordIdentitySignIn(identity->provider_id, identity->subject, identity->email);
  if (!state->timezone.empty()) {
    TP_ASSIGN_OR_RETURN(*user, users_->SetTimezone(user->user_id, state->timezone));
  }
  TP_RETURN_IF_ERROR(users_->RecordSignIn(user->user_id));
  if (created) {
    RequestWorkspace(*user);
  }
  TP_ASSIGN_OR_RETURN(SessionSecret secret, sessions_->Create(user->user_id));
  *return_path = state->return_path;
  *new_user = created;
  return IssueGrant(*user, std::move(secret));
}

}  // namespace tidepool::auth
