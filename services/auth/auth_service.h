#pragma once

#include <memory>

#include "lib/service_main.h"
#include "services/auth/authenticator.h"
#include "tidepool/auth/v1/auth_service.grpc.pb.h"

namespace tidepool::auth {

// The gRPC adapter for tidepool.auth.v1.AuthService over an Authenticator: maps protos and
// statuses and applies the owner-or-admin rules using the caller (lib/caller.h). The
// per-method caller allowlists are enforced before these handlers run.
//
// Built: local accounts (SignInWithPassword, CompleteSetup), sessions (RefreshSession,
// SignOut, SignOutEverywhere, VerifySession, WatchRevocations), signing keys (GetPublicKeys,
// RotateSigningKey), users and invites. Not built yet, answering UNIMPLEMENTED with a
// message: BeginSignIn and CompleteSignIn (OIDC, GitHub, SAML providers).
// Thread-safe.
class AuthServiceImpl final : public v1::AuthService::Service {
 public:
  // `auth` must outlive the service.
  explicit AuthServiceImpl(Authenticator& auth) : auth_(auth) {}

  grpc::Status ListProviders(grpc::ServerContext* context, const v1::ListProvidersRequest* request,
                             v1::ListProvidersResponse* response) override;
  grpc::Status BeginSignIn(grpc::ServerContext* context, const v1::BeginSignInRequest* request,
                           v1::BeginSignInResponse* response) override;
  grpc::Status CompleteSignIn(grpc::ServerContext* context,
                              const v1::CompleteSignInRequest* request,
                              v1::CompleteSignInResponse* response) override;
  grpc::Status SignInWithPassword(grpc::ServerContext* context,
                                  const v1::SignInWithPasswordRequest* request,
                                  v1::SignInWithPasswordResponse* response) override;
  grpc::Status CompleteSetup(grpc::ServerContext* context, const v1::CompleteSetupRequest* request,
                             v1::CompleteSetupResponse* response) override;
  grpc::Status RefreshSession(grpc::ServerContext* context,
                              const v1::RefreshSessionRequest* request,
                              v1::RefreshSessionResponse* response) override;
  grpc::Status SignOut(grpc::ServerContext* context, const v1::SignOutRequest* request,
                       v1::SignOutResponse* response) override;
  grpc::Status SignOutEverywhere(grpc::ServerContext* context,
                                 const v1::SignOutEverywhereRequest* request,
                                 v1::SignOutEverywhereResponse* response) override;
  grpc::Status VerifySession(grpc::ServerContext* context, const v1::VerifySessionRequest* request,
                             v1::VerifySessionResponse* response) override;
  grpc::Status GetPublicKeys(grpc::ServerContext* context, const v1::GetPublicKeysRequest* request,
                             v1::GetPublicKeysResponse* response) override;
  grpc::Status WatchRevocations(grpc::ServerContext* context,
                                const v1::WatchRevocationsRequest* request,
                                grpc::ServerWriter<v1::WatchRevocationsResponse>* writer) override;
  grpc::Status RotateSigningKey(grpc::ServerContext* context,
                                const v1::RotateSigningKeyRequest* request,
                                v1::RotateSigningKeyResponse* response) override;
  grpc::Status ListUsers(grpc::ServerContext* context, const v1::ListUsersRequest* request,
                         v1::ListUsersResponse* response) override;
  grpc::Status GetUser(grpc::ServerContext* context, const v1::GetUserRequest* request,
                       v1::GetUserResponse* response) override;
  grpc::Status SetUserRole(grpc::ServerContext* context, const v1::SetUserRoleRequest* request,
                           v1::SetUserRoleResponse* response) override;
  grpc::Status SuspendUser(grpc::ServerContext* context, const v1::SuspendUserRequest* request,
                           v1::SuspendUserResponse* response) override;
  grpc::Status ReinstateUser(grpc::ServerContext* context, const v1::ReinstateUserRequest* request,
                             v1::ReinstateUserResponse* response) override;
  grpc::Status SetUserTimezone(grpc::ServerContext* context,
                               const v1::SetUserTimezoneRequest* request,
                               v1::SetUserTimezoneResponse* response) override;
  grpc::Status CreateInvite(grpc::ServerContext* context, const v1::CreateInviteRequest* request,
                            v1::CreateInviteResponse* response) override;
  grpc::Status ListInvites(grpc::ServerContext* context, const v1::ListInvitesRequest* request,
                           v1::ListInvitesResponse* response) override;
  grpc::Status RevokeInvite(grpc::ServerContext* context, const v1::RevokeInviteRequest* request,
                            v1::RevokeInviteResponse* response) override;

 private:
  Authenticator& auth_;
};

// The service as the platform hosts it (tidepool-auth and the all-in-one tidepool): auth.db
// under <data_dir>/auth/, and on first start the initial admin with a one-time setup link
// printed to standard output (never to the log).
ServiceDefinition AuthServiceDefinition();

}  // namespace tidepool::auth
