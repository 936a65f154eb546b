#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "lib/audit_client.h"
#include "lib/clock.h"
#include "lib/sqlite_store.h"
#include "services/auth/federation.h"
#include "services/auth/invite_store.h"
#include "services/auth/password_hasher.h"
#include "services/auth/provisioner_outbox.h"
#include "services/auth/session_store.h"
#include "services/auth/session_token.h"
#include "services/auth/signin_state_store.h"
#include "services/auth/signing_key_ring.h"
#include "services/auth/user_store.h"

namespace tidepool::auth {

struct AuthenticatorOptions {
  // Where auth.db lives (0600, synchronous=FULL).
  std::string dir;
  // How long a session token lives (verified locally by proxies; ≤ 1 h).
  absl::Duration token_lifetime = absl::Minutes(15);
  // How long a session lasts before signing in again (G19: ≤ 168 h).
  absl::Duration session_lifetime = absl::Hours(168);
  // The first administrator's e-mail, created with a one-time setup link on first start.
  std::string admin_email = "admin@tidepool.local";
  // How long a setup link stays valid.
  absl::Duration setup_link_lifetime = absl::Hours(24);
  // Password hashing cost (scrypt); tests lower it.
  PasswordHasher::Options password = PasswordHasher::Options();
  // The minimum interval between signing-key rotations.
  absl::Duration min_rotation_interval = absl::Minutes(1);
  // Offer local accounts (SignInWithPassword).
  bool local_accounts = true;
  // New federated accounts need an invite code.
  bool invite_required = false;
  // Federated providers in sign-in page order.
  std::vector<std::shared_ptr<FederatedProvider>> providers;
  // The platform's public URL; provider callbacks are <public_url>/auth/callback/<id>.
  std::string public_url = "http://127.0.0.1:8080";
  SignInStateStoreOptions signin_states;
  // Where workspace requests go (the provisioner); null keeps them queued.
  ProvisionerRequests* provisioner = nullptr;
  // Called after a request is queued, so the outbox can be drained at once.
  std::function<void()> outbox_enqueued = nullptr;
};

// What BeginFederatedSignIn returns.
struct FederatedStart {
  std::string authorization_url;
  std::string cookie_value;  // secret: the browser-binding cookie
  absl::Time expire_time;
};

// What a successful sign-in, setup or refresh returns.
struct Grant {
  std::string session_token;
  absl::Time session_token_expire_time;
  std::string refresh_token;
  absl::Time refresh_token_expire_time;
  std::string session_id;
  UserRecord user;
};

// Verified claims of a live session.
struct LiveSession {
  SessionClaims claims;
};

// Who asks for an administrative change: tidepoolctl (no user) or an admin person.
struct Actor {
  std::string user_id;  // empty for tidepoolctl
  std::string service;  // the mTLS identity ("tidepoolctl", "proxy")
};

// The identity core of the auth service, free of gRPC: local accounts, sessions, signing
// keys, users and invites, each security-relevant act recorded in the audit trail (blocking
// and fail-closed for sign-ins, setup and admin changes; non-blocking for failures).
//
// Not owned: `clock` and `audit` must outlive it (`audit` may be null only in tests that
// do not exercise audited paths: such calls then fail with UNAVAILABLE). Thread-safe.
class Authenticator {
 public:
  // Opens auth.db under options.dir, the key ring and the stores. Errors: UNAVAILABLE,
  // FAILED_PRECONDITION, INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Open(const AuthenticatorOptions& options,
                                                             Clock& clock, AuditEmitter* audit);
  ~Authenticator();

  // On a platform with no users, creates the first admin; while that admin has no password,
  // returns a fresh one-time setup token (to print as a link), else std::nullopt.
  absl::StatusOr<std::optional<std::string>> EnsureFirstAdmin();

  absl::StatusOr<Grant> SignInWithPassword(absl::string_view email, absl::string_view password,
                                           absl::string_view timezone,
                                           absl::string_view source_address);
  absl::StatusOr<Grant> CompleteSetup(absl::string_view setup_token, absl::string_view password,
                                      absl::string_view timezone, absl::string_view source_address);
  absl::StatusOr<Grant> Refresh(absl::string_view refresh_token);
  absl::StatusOr<std::string> SignOut(absl::string_view session_token);
  absl::StatusOr<int> SignOutEverywhere(absl::string_view session_token);
  // Signature, expiry, server-side session and suspension, all checked.
  absl::StatusOr<SessionClaims> VerifySession(absl::string_view session_token);

  std::vector<VerificationKey> PublicKeys() const;
  absl::StatusOr<KeyRotation> RotateSigningKey(const Actor& actor, absl::string_view reason);

  absl::StatusOr<UserPage> ListUsers(absl::string_view query, std::optional<UserRole> role,
                                     int page_size, absl::string_view page_token,
                                     std::optional<bool> suspended = std::nullopt);
  absl::StatusOr<UserRecord> GetUser(absl::string_view user_id);
  // Returns the updated user and how many sessions were revoked.
  absl::StatusOr<std::pair<UserRecord, int>> SetUserRole(const Actor& actor,
                                                         absl::string_view user_id, UserRole role,
                                                         int64_t expected_version);
  absl::StatusOr<std::pair<UserRecord, int>> SuspendUser(const Actor& actor,
                                                         absl::string_view user_id,
                                                         absl::string_view reason);
  absl::StatusOr<UserRecord> ReinstateUser(const Actor& actor, absl::string_view user_id,
                                           absl::string_view reason);
  absl::StatusOr<UserRecord> SetUserTimezone(absl::string_view user_id, absl::string_view timezone);
  absl::StatusOr<std::pair<InviteRecord, std::string>> CreateInvite(const Actor& actor,
                                                                    InviteSpec spec);
  absl::StatusOr<InvitePage> ListInvites(bool include_inactive, int page_size,
                                         absl::string_view page_token);
  absl::StatusOr<InviteRecord> RevokeInvite(const Actor& actor, absl::string_view invite_id);

  // Federated sign-in (OIDC, Google, Microsoft, GitHub): see auth_service.proto for the rules
  // and error codes of BeginSignIn and CompleteSignIn.
  absl::StatusOr<FederatedStart> BeginFederatedSignIn(absl::string_view provider_id,
                                                      absl::string_view return_path,
                                                      absl::string_view timezone,
                                                      absl::string_view invite_code,
                                                      absl::string_view source_address);
  // On success, `*return_path` is the validated path from BeginSignIn and `*new_user` tells
  // whether the account was created now.
  absl::StatusOr<Grant> CompleteFederatedSignIn(absl::string_view provider_id,
                                                const std::map<std::string, std::string>& params,
                                                absl::string_view cookie_value,
                                                absl::string_view source_address,
                                                std::string* return_path, bool* new_user);
  // The callback URL registered with a provider.
  std::string CallbackUrl(absl::string_view provider_id) const;
  const AuthenticatorOptions& options() const { return options_; }
  absl::StatusOr<std::vector<IdentityRecord>> ListIdentities(absl::string_view user_id) {
    return users_->ListIdentities(user_id);
  }

  SessionStore& sessions() { return *sessions_; }
  ProvisionerOutbox& provisioner_outbox() { return *outbox_; }

 private:
  Authenticator(AuthenticatorOptions options, Clock& clock, AuditEmitter* audit);
  absl::StatusOr<Grant> IssueGrant(const UserRecord& user, SessionSecret secret);
  absl::Status AuditDurable(common::v1::AuditEvent event);
  void AuditFailure(common::v1::AuditEvent event);
  absl::Status CheckNotLastAdmin(const UserRecord& target);
  FederatedProvider* FindProvider(absl::string_view provider_id) const;
  // Asks the provisioner (through the outbox) for the user's workspace.
  void RequestWorkspace(const UserRecord& user);
  void AuditSignInFailure(absl::string_view provider_id, absl::string_view reason,
                          absl::string_view source_address, absl::string_view user_id);
  absl::StatusOr<UserRecord> FindOrCreateFederatedUser(const ExternalIdentity& identity,
                                                       const SignInState& state, bool* created);

  const AuthenticatorOptions options_;
  Clock& clock_;
  AuditEmitter* audit_;
  PasswordHasher hasher_;
  GuessThrottle password_throttle_;
  GuessThrottle invite_throttle_;
  // One connection per store: SqliteDb handles are not shared across stores.
  std::unique_ptr<SqliteDb> users_db_;
  std::unique_ptr<SqliteDb> sessions_db_;
  std::unique_ptr<SqliteDb> keys_db_;
  std::unique_ptr<SqliteDb> invites_db_;
  std::unique_ptr<SqliteDb> signin_db_;
  std::unique_ptr<SqliteDb> outbox_db_;
  std::unique_ptr<UserStore> users_;
  std::unique_ptr<SessionStore> sessions_;
  std::unique_ptr<SigningKeyRing> keys_;
  std::unique_ptr<SessionTokenVerifier> verifier_;
  std::unique_ptr<InviteStore> invites_;
  std::unique_ptr<SignInStateStore> signin_states_;
  std::unique_ptr<ProvisionerOutbox> outbox_;
};

// Builds an audit event for the auth service.
common::v1::AuditEvent AuthEvent(absl::string_view action, common::v1::Outcome outcome,
                                 absl::string_view actor_user_id,
                                 absl::string_view subject_user_id);

}  // namespace tidepool::auth
