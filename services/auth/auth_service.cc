#include "services/auth/auth_service.h"

#include <chrono>
#include <iostream>
#include <map>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "lib/caller.h"
#include "lib/grpc_status.h"
#include "lib/log.h"
#include "lib/periodic_task.h"
#include "lib/platform_client.h"
#include "tidepool/provisioner/v1/workspace_service.grpc.pb.h"

namespace tidepool::auth {
namespace {

namespace commonpb = ::tidepool::common::v1;
using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp Stamp(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

commonpb::Role RoleToProto(UserRole role) {
  return role == UserRole::kAdmin ? commonpb::ROLE_ADMIN : commonpb::ROLE_USER;
}

commonpb::Role RoleNameToProto(absl::string_view role) {
  return role == kRoleAdmin ? commonpb::ROLE_ADMIN : commonpb::ROLE_USER;
}

void ToProto(const UserRecord& user, v1::User* out) {
  out->set_user_id(user.user_id);
  out->set_email(user.email);
  out->set_display_name(user.display_name);
  out->set_role(RoleToProto(user.role));
  out->set_state(user.suspended ? v1::USER_STATE_SUSPENDED : v1::USER_STATE_ACTIVE);
  out->set_suspend_reason(user.suspend_reason);
  out->set_timezone(user.timezone);
  *out->mutable_create_time() = Stamp(user.create_time);
  if (user.last_sign_in_time.has_value()) {
    *out->mutable_last_sign_in_time() = Stamp(*user.last_sign_in_time);
  }
  out->set_version(user.version);
}

void ToProto(const Grant& grant, v1::SessionGrant* out) {
  out->set_session_token(grant.session_token);
  *out->mutable_session_token_expire_time() = Stamp(grant.session_token_expire_time);
  out->set_refresh_token(grant.refresh_token);
  *out->mutable_refresh_token_expire_time() = Stamp(grant.refresh_token_expire_time);
  out->set_session_id(grant.session_id);
  out->mutable_user()->set_user_id(grant.user.user_id);
  out->mutable_user()->set_email(grant.user.email);
  out->mutable_user()->set_display_name(grant.user.display_name);
  out->set_role(RoleToProto(grant.user.role));
}

void ToProto(const VerificationKey& key, v1::PublicKey* out) {
  out->set_key_id(key.key_id);
  out->set_algorithm("EdDSA");
  out->set_public_key(key.public_key);
  *out->mutable_not_before() = Stamp(key.not_before);
  if (key.not_after != absl::InfiniteFuture()) {
    *out->mutable_not_after() = Stamp(key.not_after);
  }
  out->set_current(key.current);
}

void ToProto(const InviteRecord& invite, v1::Invite* out) {
  out->set_invite_id(invite.invite_id);
  if (!invite.bound_email.empty()) {
    out->set_bound_email(invite.bound_email);
  } else if (!invite.bound_domain.empty()) {
    out->set_bound_domain(invite.bound_domain);
  }
  out->set_max_uses(invite.max_uses);
  out->set_use_count(invite.use_count);
  *out->mutable_create_time() = Stamp(invite.create_time);
  *out->mutable_expire_time() = Stamp(invite.expire_time);
  out->set_created_by_user_id(invite.created_by);
  switch (invite.state) {
    case InviteState::kActive:
      out->set_state(v1::INVITE_STATE_ACTIVE);
      break;
    case InviteState::kExpired:
      out->set_state(v1::INVITE_STATE_EXPIRED);
      break;
    case InviteState::kUsedUp:
      out->set_state(v1::INVITE_STATE_USED_UP);
      break;
    case InviteState::kRevoked:
      out->set_state(v1::INVITE_STATE_REVOKED);
      break;
  }
  out->set_note(invite.note);
  out->set_code_fingerprint(invite.code_fingerprint);
}

// The administrative actor of a call, or the reason it may not act.
absl::StatusOr<Actor> AdminActor(const grpc::ServerContext& context) {
  absl::StatusOr<Caller> caller = ResolveCaller(context);
  if (!caller.ok()) {
    return caller.status();
  }
  if (!caller->admin) {
    return absl::PermissionDeniedError("administrators only");
  }
  return Actor{caller->user_id, caller->service};
}

// The user a self-or-admin call concerns: empty means the calling person. A person asking
// about someone else without being an admin gets NOT_FOUND, exactly as for a missing user.
absl::StatusOr<std::string> SelfOrAdminTarget(const grpc::ServerContext& context,
                                              const std::string& requested) {
  absl::StatusOr<Caller> caller = ResolveCaller(context);
  if (!caller.ok()) {
    return caller.status();
  }
  if (requested.empty()) {
    if (caller->user_id.empty()) {
      return absl::InvalidArgumentError("user_id is required");
    }
    return caller->user_id;
  }
  if (!IsValidUserId(requested)) {
    return absl::InvalidArgumentError("user_id is malformed");
  }
  if (!caller->admin && caller->user_id != requested) {
    return absl::NotFoundError("no such user");
  }
  return requested;
}

absl::StatusOr<UserRole> RoleFromProto(commonpb::Role role) {
  if (role == commonpb::ROLE_ADMIN) {
    return UserRole::kAdmin;
  }
  if (role == commonpb::ROLE_USER) {
    return UserRole::kUser;
  }
  return absl::InvalidArgumentError("role must be ROLE_USER or ROLE_ADMIN");
}

v1::ProviderKind ProviderKindToProto(absl::string_view kind) {
  if (kind == "google") return v1::PROVIDER_KIND_GOOGLE;
  if (kind == "microsoft") return v1::PROVIDER_KIND_MICROSOFT;
  if (kind == "github") return v1::PROVIDER_KIND_GITHUB;
  return v1::PROVIDER_KIND_OIDC;
}

// Sends auth's workspace requests to the provisioner over mutual TLS, wherever it runs now.
class GrpcProvisionerRequests final : public ProvisionerRequests {
 public:
  GrpcProvisionerRequests(TlsIdentity self, std::string data_dir, ServiceEndpointConfig configured)
      : self_(std::move(self)), data_dir_(std::move(data_dir)), configured_(std::move(configured)) {}

  absl::Status EnsureWorkspace(const std::string& user_id, const std::string& timezone) override {
    provisioner::v1::EnsureWorkspaceRequest request;
    request.set_owner_user_id(user_id);
    request.set_timezone(timezone);
    provisioner::v1::EnsureWorkspaceResponse response;
    return Call([&](provisioner::v1::WorkspaceService::Stub& stub, grpc::ClientContext* context) {
      return stub.EnsureWorkspace(context, request, &response);
    });
  }

  absl::Status SetOwnerSuspended(const std::string& user_id, bool suspended,
                                 const std::string& reason) override {
    provisioner::v1::SetOwnerSuspendedRequest request;
    request.set_owner_user_id(user_id);
    request.set_suspended(suspended);
    request.set_reason(reason.substr(0, 256));
    provisioner::v1::SetOwnerSuspendedResponse response;
    return Call([&](provisioner::v1::WorkspaceService::Stub& stub, grpc::ClientContext* context) {
      return stub.SetOwnerSuspended(context, request, &response);
    });
  }

 private:
  template <typename Fn>
  absl::Status Call(Fn fn) {
    absl::StatusOr<std::string> target = ResolveServiceTarget(data_dir_, "provisioner", configured_);
    if (!target.ok()) {
      return target.status();
    }
    auto stub = provisioner::v1::WorkspaceService::NewStub(DialPlatformService(self_, *target));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return FromGrpcStatus(fn(*stub, &context));
  }

  const TlsIdentity self_;
  const std::string data_dir_;
  const ServiceEndpointConfig configured_;
};

// The Authenticator plus what keeps it company while the service runs.
struct AuthState {
  std::unique_ptr<GrpcProvisionerRequests> provisioner;
  std::shared_ptr<Authenticator> auth;
  std::unique_ptr<PeriodicTask> outbox_drain;
};

v1::RevocationReason ReasonToProto(RevokeReason reason) {
  return static_cast<v1::RevocationReason>(static_cast<int>(reason));
}

}  // namespace

grpc::Status AuthServiceImpl::ListProviders(grpc::ServerContext*, const v1::ListProvidersRequest*,
                                            v1::ListProvidersResponse* response) {
  const AuthenticatorOptions& options = auth_.options();
  if (options.local_accounts) {
    v1::Provider* local = response->add_providers();
    local->set_provider_id("local");
    local->set_kind(v1::PROVIDER_KIND_LOCAL);
    local->set_display_name("E-mail and password");
  }
  for (const auto& provider : options.providers) {
    v1::Provider* out = response->add_providers();
    out->set_provider_id(provider->config().id);
    out->set_kind(ProviderKindToProto(provider->config().kind));
    out->set_display_name(provider->config().display_name);
  }
  response->set_invite_required(options.invite_required);
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::BeginSignIn(grpc::ServerContext*,
                                          const v1::BeginSignInRequest* request,
                                          v1::BeginSignInResponse* response) {
  absl::StatusOr<FederatedStart> start = auth_.BeginFederatedSignIn(
      request->provider_id(), request->return_path(), request->timezone(), request->invite_code(),
      request->source_address());
  if (!start.ok()) {
    return ToGrpcStatus(start.status());
  }
  response->set_authorization_url(start->authorization_url);
  response->set_state_cookie_value(start->cookie_value);
  *response->mutable_state_expire_time() = Stamp(start->expire_time);
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::CompleteSignIn(grpc::ServerContext*,
                                             const v1::CompleteSignInRequest* request,
                                             v1::CompleteSignInResponse* response) {
  const std::map<std::string, std::string> params(request->callback_params().begin(),
                                                  request->callback_params().end());
  std::string return_path;
  bool new_user = false;
  absl::StatusOr<Grant> grant = auth_.CompleteFederatedSignIn(
      request->provider_id(), params, request->state_cookie_value(), request->source_address(),
      &return_path, &new_user);
  if (!grant.ok()) {
    return ToGrpcStatus(grant.status());
  }
  ToProto(*grant, response->mutable_grant());
  response->set_return_path(return_path);
  response->set_new_user(new_user);
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::SignInWithPassword(grpc::ServerContext*,
                                                 const v1::SignInWithPasswordRequest* request,
                                                 v1::SignInWithPasswordResponse* response) {
  absl::StatusOr<Grant> grant = auth_.SignInWithPassword(
      request->email(), request->password(), request->timezone(), request->source_address());
  if (!grant.ok()) {
    return ToGrpcStatus(grant.status());
  }
  ToProto(*grant, response->mutable_grant());
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::CompleteSetup(grpc::ServerContext*,
                                            const v1::CompleteSetupRequest* request,
                                            v1::CompleteSetupResponse* response) {
  absl::StatusOr<Grant> grant = auth_.CompleteSetup(request->setup_token(), request->password(),
                                                    request->timezone(), request->source_address());
  if (!grant.ok()) {
    return ToGrpcStatus(grant.status());
  }
  ToProto(*grant, response->mutable_grant());
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::RefreshSession(grpc::ServerContext*,
                                             const v1::RefreshSessionRequest* request,
                                             v1::RefreshSessionResponse* response) {
  absl::StatusOr<Grant> grant = auth_.Refresh(request->refresh_token());
  if (!grant.ok()) {
    return ToGrpcStatus(grant.status());
  }
  ToProto(*grant, response->mutable_grant());
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::SignOut(grpc::ServerContext*, const v1::SignOutRequest* request,
                                      v1::SignOutResponse* response) {
  absl::StatusOr<std::string> session = auth_.SignOut(request->session_token());
  if (!session.ok()) {
    return ToGrpcStatus(session.status());
  }
  response->set_session_id(*session);
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::SignOutEverywhere(grpc::ServerContext*,
                                                const v1::SignOutEverywhereRequest* request,
                                                v1::SignOutEverywhereResponse* response) {
  absl::StatusOr<int> revoked = auth_.SignOutEverywhere(request->session_token());
  if (!revoked.ok()) {
    return ToGrpcStatus(revoked.status());
  }
  response->set_revoked_session_count(*revoked);
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::VerifySession(grpc::ServerContext*,
                                            const v1::VerifySessionRequest* request,
                                            v1::VerifySessionResponse* response) {
  absl::StatusOr<SessionClaims> claims = auth_.VerifySession(request->session_token());
  if (!claims.ok()) {
    return ToGrpcStatus(claims.status());
  }
  response->set_session_id(claims->session_id);
  response->set_user_id(claims->user_id);
  response->set_role(RoleNameToProto(claims->role));
  *response->mutable_expire_time() = Stamp(claims->expires_at);
  response->set_key_id(claims->key_id);
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::GetPublicKeys(grpc::ServerContext*, const v1::GetPublicKeysRequest*,
                                            v1::GetPublicKeysResponse* response) {
  for (const VerificationKey& key : auth_.PublicKeys()) {
    ToProto(key, response->add_keys());
  }
  response->mutable_cache_ttl()->set_seconds(60);
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::WatchRevocations(
    grpc::ServerContext* context, const v1::WatchRevocationsRequest* request,
    grpc::ServerWriter<v1::WatchRevocationsResponse>* writer) {
  absl::Duration interval = absl::Seconds(1);
  if (request->has_heartbeat_interval()) {
    interval = absl::Milliseconds(TimeUtil::DurationToMilliseconds(request->heartbeat_interval()));
    if (interval < absl::Milliseconds(100) || interval > absl::Seconds(5)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "heartbeat_interval must be between 100ms and 5s");
    }
  }
  SessionStore& sessions = auth_.sessions();
  uint64_t last = request->after_sequence();
  bool replayed = false;
  while (!context->IsCancelled()) {
    absl::StatusOr<std::vector<Revocation>> revocations = sessions.RevocationsAfter(last);
    if (!revocations.ok()) {
      return ToGrpcStatus(revocations.status());
    }
    for (const Revocation& revocation : *revocations) {
      v1::WatchRevocationsResponse message;
      v1::Revocation* out = message.mutable_revocation();
      out->set_sequence(revocation.sequence);
      if (!revocation.session_id.empty()) {
        out->set_session_id(revocation.session_id);
      } else {
        out->set_user_id(revocation.user_id);
      }
      out->set_reason(ReasonToProto(revocation.reason));
      *out->mutable_revoke_time() = Stamp(revocation.revoke_time);
      *out->mutable_forget_after_time() = Stamp(revocation.forget_after);
      if (!writer->Write(message)) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "the watcher went away");
      }
      last = std::max(last, revocation.sequence);
    }
    if (!replayed || revocations->empty()) {
      v1::WatchRevocationsResponse heartbeat;
      *heartbeat.mutable_heartbeat()->mutable_server_time() = Stamp(absl::Now());
      heartbeat.mutable_heartbeat()->set_latest_sequence(std::max(last, sessions.LatestSequence()));
      heartbeat.mutable_heartbeat()->set_replay_complete(!replayed);
      replayed = true;
      if (!writer->Write(heartbeat)) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "the watcher went away");
      }
    }
    sessions.WaitForNewer(last, absl::Now() + interval);
  }
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down; reconnect");
}

grpc::Status AuthServiceImpl::RotateSigningKey(grpc::ServerContext* context,
                                               const v1::RotateSigningKeyRequest* request,
                                               v1::RotateSigningKeyResponse* response) {
  absl::StatusOr<Actor> actor = AdminActor(*context);
  if (!actor.ok()) {
    return ToGrpcStatus(actor.status());
  }
  absl::StatusOr<KeyRotation> rotation = auth_.RotateSigningKey(*actor, request->reason());
  if (!rotation.ok()) {
    return ToGrpcStatus(rotation.status());
  }
  ToProto(rotation->new_key, response->mutable_new_key());
  ToProto(rotation->previous_key, response->mutable_previous_key());
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::ListUsers(grpc::ServerContext* context,
                                        const v1::ListUsersRequest* request,
                                        v1::ListUsersResponse* response) {
  if (absl::StatusOr<Actor> actor = AdminActor(*context); !actor.ok()) {
    return ToGrpcStatus(actor.status());
  }
  std::optional<UserRole> role;
  if (request->role() != commonpb::ROLE_UNSPECIFIED) {
    absl::StatusOr<UserRole> parsed = RoleFromProto(request->role());
    if (!parsed.ok()) {
      return ToGrpcStatus(parsed.status());
    }
    role = *parsed;
  }
  std::optional<bool> suspended;
  if (request->state() != v1::USER_STATE_UNSPECIFIED) {
    suspended = request->state() == v1::USER_STATE_SUSPENDED;
  }
  absl::StatusOr<UserPage> page = auth_.ListUsers(request->query(), role,
                                                  request->page().page_size(),
                                                  request->page().page_token(), suspended);
  if (!page.ok()) {
    return ToGrpcStatus(page.status());
  }
  for (const UserRecord& user : page->users) {
    ToProto(user, response->add_users());
  }
  response->mutable_page()->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::GetUser(grpc::ServerContext* context,
                                      const v1::GetUserRequest* request,
                                      v1::GetUserResponse* response) {
  absl::StatusOr<std::string> target = SelfOrAdminTarget(*context, request->user_id());
  if (!target.ok()) {
    return ToGrpcStatus(target.status());
  }
  absl::StatusOr<UserRecord> user = auth_.GetUser(*target);
  if (!user.ok()) {
    return ToGrpcStatus(user.status());
  }
  ToProto(*user, response->mutable_user());
  if (absl::StatusOr<std::vector<IdentityRecord>> identities = auth_.ListIdentities(*target);
      identities.ok()) {
    for (const IdentityRecord& identity : *identities) {
      v1::LinkedIdentity* out = response->mutable_user()->add_identities();
      out->set_provider_id(identity.provider_id);
      out->set_provider_kind(ProviderKindToProto(identity.kind));
      out->set_subject(identity.subject);
      out->set_email(identity.email);
      *out->mutable_link_time() = Stamp(identity.link_time);
      if (identity.last_sign_in_time.has_value()) {
        *out->mutable_last_sign_in_time() = Stamp(*identity.last_sign_in_time);
      }
    }
  }
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::SetUserRole(grpc::ServerContext* context,
                                          const v1::SetUserRoleRequest* request,
                                          v1::SetUserRoleResponse* response) {
  absl::StatusOr<Actor> actor = AdminActor(*context);
  if (!actor.ok()) {
    return ToGrpcStatus(actor.status());
  }
  absl::StatusOr<UserRole> role = RoleFromProto(request->role());
  if (!role.ok() || !IsValidUserId(request->user_id())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        role.ok() ? "user_id is malformed" : std::string(role.status().message()));
  }
  absl::StatusOr<std::pair<UserRecord, int>> result =
      auth_.SetUserRole(*actor, request->user_id(), *role, request->expected_version());
  if (!result.ok()) {
    return ToGrpcStatus(result.status());
  }
  ToProto(result->first, response->mutable_user());
  response->set_revoked_session_count(result->second);
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::SuspendUser(grpc::ServerContext* context,
                                          const v1::SuspendUserRequest* request,
                                          v1::SuspendUserResponse* response) {
  absl::StatusOr<Actor> actor = AdminActor(*context);
  if (!actor.ok()) {
    return ToGrpcStatus(actor.status());
  }
  if (!IsValidUserId(request->user_id())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "user_id is malformed");
  }
  absl::StatusOr<std::pair<UserRecord, int>> result =
      auth_.SuspendUser(*actor, request->user_id(), request->reason());
  if (!result.ok()) {
    return ToGrpcStatus(result.status());
  }
  ToProto(result->first, response->mutable_user());
  response->set_revoked_session_count(result->second);
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::ReinstateUser(grpc::ServerContext* context,
                                            const v1::ReinstateUserRequest* request,
                                            v1::ReinstateUserResponse* response) {
  absl::StatusOr<Actor> actor = AdminActor(*context);
  if (!actor.ok()) {
    return ToGrpcStatus(actor.status());
  }
  if (!IsValidUserId(request->user_id())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "user_id is malformed");
  }
  absl::StatusOr<UserRecord> user =
      auth_.ReinstateUser(*actor, request->user_id(), request->reason());
  if (!user.ok()) {
    return ToGrpcStatus(user.status());
  }
  ToProto(*user, response->mutable_user());
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::SetUserTimezone(grpc::ServerContext* context,
                                              const v1::SetUserTimezoneRequest* request,
                                              v1::SetUserTimezoneResponse* response) {
  absl::StatusOr<std::string> target = SelfOrAdminTarget(*context, request->user_id());
  if (!target.ok()) {
    return ToGrpcStatus(target.status());
  }
  absl::StatusOr<UserRecord> user = auth_.SetUserTimezone(*target, request->timezone());
  if (!user.ok()) {
    return ToGrpcStatus(user.status());
  }
  ToProto(*user, response->mutable_user());
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::CreateInvite(grpc::ServerContext* context,
                                           const v1::CreateInviteRequest* request,
                                           v1::CreateInviteResponse* response) {
  absl::StatusOr<Actor> actor = AdminActor(*context);
  if (!actor.ok()) {
    return ToGrpcStatus(actor.status());
  }
  InviteSpec spec;
  spec.max_uses = request->max_uses() == 0 ? 1 : request->max_uses();
  spec.expire_time =
      request->has_expire_time()
          ? absl::FromUnixMicros(TimeUtil::TimestampToMicroseconds(request->expire_time()))
          : absl::Now() + absl::Hours(24 * 7);
  spec.bound_email = request->bound_email();
  spec.bound_domain = request->bound_domain();
  spec.note = request->note();
  absl::StatusOr<std::pair<InviteRecord, std::string>> created = auth_.CreateInvite(*actor, spec);
  if (!created.ok()) {
    return ToGrpcStatus(created.status());
  }
  ToProto(created->first, response->mutable_invite());
  response->set_code(created->second);
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::ListInvites(grpc::ServerContext* context,
                                          const v1::ListInvitesRequest* request,
                                          v1::ListInvitesResponse* response) {
  if (absl::StatusOr<Actor> actor = AdminActor(*context); !actor.ok()) {
    return ToGrpcStatus(actor.status());
  }
  const bool include_inactive = request->state() != v1::INVITE_STATE_ACTIVE;
  absl::StatusOr<InvitePage> page = auth_.ListInvites(include_inactive, request->page().page_size(),
                                                      request->page().page_token());
  if (!page.ok()) {
    return ToGrpcStatus(page.status());
  }
  for (const InviteRecord& invite : page->invites) {
    v1::Invite converted;
    ToProto(invite, &converted);
    if (request->state() == v1::INVITE_STATE_UNSPECIFIED || converted.state() == request->state()) {
      *response->add_invites() = std::move(converted);
    }
  }
  response->mutable_page()->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status AuthServiceImpl::RevokeInvite(grpc::ServerContext* context,
                                           const v1::RevokeInviteRequest* request,
                                           v1::RevokeInviteResponse* response) {
  absl::StatusOr<Actor> actor = AdminActor(*context);
  if (!actor.ok()) {
    return ToGrpcStatus(actor.status());
  }
  absl::StatusOr<InviteRecord> revoked = auth_.RevokeInvite(*actor, request->invite_id());
  if (!revoked.ok()) {
    return ToGrpcStatus(revoked.status());
  }
  ToProto(*revoked, response->mutable_invite());
  return grpc::Status::OK;
}

ServiceDefinition AuthServiceDefinition() {
  ServiceDefinition definition;
  definition.name = "auth";
  definition.create =
      [](const ServiceContext& context) -> absl::StatusOr<std::vector<HostedService>> {
    AuthenticatorOptions options;
    options.dir = context.data_dir + "/auth";
    options.admin_email = context.config.auth.admin_email;
    options.token_lifetime = context.config.auth.session_token_lifetime;
    options.session_lifetime = context.config.auth.session_lifetime;
    options.local_accounts = context.config.auth.local_accounts;
    options.invite_required = context.config.auth.invite_required;
    options.public_url = context.config.public_url;
    for (const IdentityProviderConfig& provider : context.config.auth.providers) {
      absl::StatusOr<std::string> secret = ResolveClientSecret(provider);
      if (!secret.ok()) {
        return secret.status();
      }
      options.providers.push_back(
          MakeFederatedProvider(provider, *std::move(secret), context.clock));
    }
    auto state = std::make_shared<AuthState>();
    if (context.identity != nullptr) {
      state->provisioner = std::make_unique<GrpcProvisionerRequests>(
          *context.identity, context.data_dir, context.config.Service("provisioner"));
      options.provisioner = state->provisioner.get();
    }
    // Requests reach the provisioner at once; the period only paces retries.
    options.outbox_enqueued = [raw = state.get()] {
      if (raw->outbox_drain != nullptr) raw->outbox_drain->RunSoon();
    };
    absl::StatusOr<std::unique_ptr<Authenticator>> opened =
        Authenticator::Open(options, context.clock, context.audit);
    if (!opened.ok()) {
      return opened.status();
    }
    std::shared_ptr<Authenticator> auth = *std::move(opened);
    state->auth = auth;
    state->outbox_drain = std::make_unique<PeriodicTask>(
        absl::Seconds(5), [raw = auth.get()] { raw->provisioner_outbox().DrainOnce(); });
    absl::StatusOr<std::optional<std::string>> setup = auth->EnsureFirstAdmin();
    if (!setup.ok()) {
      return setup.status();
    }
    if (setup->has_value()) {
      // Standard output only: the operator's terminal, never the JSON log. The token rides in
      // the URL fragment, which browsers do not send to servers.
      std::cout << "\n  First start: set the administrator's password (" << options.admin_email
                << ") within 24 h at\n    " << context.config.public_url << "/setup#" << **setup
                << "\n  (open it in a browser; a new link is printed at every start until the"
                   " password is set)\n\n";
      std::cout.flush();
      LogInfo("first administrator awaits setup; the one-time link was printed to stdout",
              {{"admin_email", options.admin_email}});
    }
    std::vector<HostedService> services;
    services.push_back(HostedService{.full_name = "tidepool.auth.v1.AuthService",
                                     .pending_note = "",
                                     .service = std::make_unique<AuthServiceImpl>(*auth),
                                     .on_stopped = [state] { state->outbox_drain->Stop(); },
                                     .state = state});
    return services;
  };
  return definition;
}

}  // namespace tidepool::auth
