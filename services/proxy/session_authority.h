#pragma once

// The proxy's session verification: every browser request's session token is checked here.
//
// Tokens are verified locally (auth::SessionTokenVerifier over the keys of
// AuthService.GetPublicKeys) and checked against revocations that AuthService.WatchRevocations
// pushes to the proxy. While that feed is fresh, a request costs a cache lookup and a
// revocation-set lookup and no RPC. When the feed is stale (silent for stale_after, or its
// initial replay not yet complete), the proxy cannot know about recent revocations, so it fails
// closed: every token is verified online (AuthService.VerifySession), and the proxy answers
// UNAVAILABLE if auth cannot be reached. A revocation already known locally is enforced either
// way. A reconnect does not reset freshness: the new stream resumes after the last sequence seen
// and replays what was missed, so the proxy is never blind for longer than stale_after.
//
// Revocation rules (the same as the auth service's SessionStore::IsActive):
//   - a session revocation rejects every token that carries its session id;
//   - a user revocation rejects every token of that user with iat <= revoke_time. `iat` is in
//     whole seconds (SignSessionToken truncates) and revoke_time has sub-second precision, so a
//     token issued in the same second as the revocation, whose iat was truncated to that second,
//     is rejected; a token from the next whole second on is accepted (that is how a user signs in
//     again after being reinstated). Online verdicts (VerifySession) follow the same rule.
//   - an entry is forgotten once its forget_after_time has passed (by then every token it
//     concerns has expired).
//
// Times: every decision (freshness, expiry, forget_after_time, key cache lifetimes, rate limits)
// uses the injected Clock. RPC deadlines, the reconnect backoff and the detection of a silent
// stream (which is then abandoned and reopened) use real time.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"
#include "lib/clock.h"
#include "lib/periodic_task.h"
#include "services/auth/session_token.h"
#include "tidepool/auth/v1/auth_service.grpc.pb.h"

namespace tidepool::proxy {

// Who a verified session token belongs to.
struct SessionIdentity {
  std::string user_id;
  std::string session_id;
  bool admin = false;
  absl::Time issued_at = absl::UnixEpoch();
  absl::Time expires_at = absl::UnixEpoch();
};

struct SessionAuthorityOptions {
  // Fail closed (verify online) when no message (revocation or heartbeat) has arrived for this
  // long. A stream silent this long in real time is also abandoned and reopened.
  absl::Duration stale_after = absl::Seconds(5);
  // The heartbeat interval asked of auth (auth accepts 100 ms to 5 s).
  absl::Duration heartbeat_interval = absl::Seconds(1);
  // The deadline of each VerifySession and GetPublicKeys call.
  absl::Duration online_verify_deadline = absl::Seconds(2);
  // While the feed is stale, how long an online verdict (valid or not) for one token may be
  // reused. 0 = never: every Verify asks auth.
  absl::Duration online_verify_cache = absl::Seconds(1);
  // An unknown kid triggers at most one key refetch per interval; a failed periodic refresh is
  // retried no sooner than this either.
  absl::Duration min_key_refetch_interval = absl::Seconds(5);
  // The reconnect backoff of the revocation watch doubles from 100 ms up to this.
  absl::Duration reconnect_backoff_max = absl::Seconds(2);
};

// Verifies session tokens for the proxy's edge.
//
// Threads: Start() runs a watch thread (the WatchRevocations stream) and a maintenance thread
// (initial and periodic key fetches, forgetting old revocations, abandoning a silent stream).
// Verify, CheckSession, FeedFresh and GetStats are thread-safe and may be called from any number
// of threads, also before Start() and after Stop() (the feed is then stale, so every token is
// verified online). No lock is held across an RPC; the common path (fresh feed, token seen
// before) is a SHA-256, two hash lookups and the revocation-set lookups, under reader locks.
class SessionAuthority {
 public:
  // Where auth is now: called before every RPC and stream (it may re-resolve and return another
  // channel; the stub is rebuilt when the channel changes). A null channel means auth cannot be
  // reached right now. Must be thread-safe and fast.
  using ChannelProvider = std::function<std::shared_ptr<grpc::Channel>()>;

  // `auth` is a channel to tidepool.auth.v1.AuthService (the caller gives it the proxy's mTLS
  // identity). `clock` is not owned and must outlive this object.
  SessionAuthority(std::shared_ptr<grpc::Channel> auth, Clock& clock,
                   SessionAuthorityOptions options = {});
  // As above, with the channel looked up through `auth` each time.
  SessionAuthority(ChannelProvider auth, Clock& clock, SessionAuthorityOptions options = {});
  // Stop()s. No Verify call may still be running.
  ~SessionAuthority();
  SessionAuthority(const SessionAuthority&) = delete;
  SessionAuthority& operator=(const SessionAuthority&) = delete;

  // Starts the revocation watch (resuming with after_sequence on every reconnect, exponential
  // backoff up to reconnect_backoff_max) and fetches the keys in the background. Non-blocking.
  // Only the first call has an effect; a stopped authority does not start again.
  void Start();

  // Cancels the stream and any key fetch in flight (ClientContext::TryCancel) and joins the
  // threads; the feed is stale from then on. Idempotent; returns promptly.
  void Stop();

  // Verifies `token` for one request:
  //   1. locally: signature, issuer, expiry and key window (keys from GetPublicKeys, cached for
  //      the response's cache_ttl; an unknown kid triggers at most one rate-limited synchronous
  //      refetch, shared by concurrent callers);
  //   2. a token whose session or user is revoked in the local sets is rejected;
  //   3. if the feed is fresh, the token is accepted;
  //   4. otherwise auth's VerifySession decides (deadline online_verify_deadline; the verdict is
  //      reused for online_verify_cache while the feed stays stale).
  // Errors: UNAUTHENTICATED for a malformed, badly signed, expired or revoked token, with a short
  // generic message that never contains any part of the token; UNAVAILABLE when the feed is
  // stale and auth cannot be reached (or answers anything but a verdict), or when no key set
  // could be fetched yet.
  absl::StatusOr<SessionIdentity> Verify(absl::string_view token);

  // Checks an identity established earlier by Verify (e.g. carried in a cookie the edge signed
  // itself) against the clock and the revocations, without a token: OK if it has not expired,
  // neither its session nor its user (issued_at <= revoke_time) is revoked, and the feed is
  // fresh. Errors: UNAUTHENTICATED (generic message) if expired or revoked; UNAVAILABLE if the
  // feed is stale (there is no token to verify online, so this fails closed). Never calls auth.
  absl::Status CheckSession(const SessionIdentity& identity);

  // Called on the watch thread for every revocation received, after it has been applied (a
  // Verify from inside the listener already sees it), so that the edge can close open
  // WebSockets. Must be fast and must not call Stop(). Set before Start().
  void SetRevocationListener(std::function<void(const auth::v1::Revocation&)> listener);

  // True when the initial replay is complete, a message arrived less than stale_after ago (by
  // the injected clock), and Stop() has not been called.
  bool FeedFresh() const;

  // Counters since construction (for metrics and tests): revocations received, VerifySession
  // calls made (not cached verdicts), GetPublicKeys calls made, streams opened after the first.
  // `revocation_entries` is the number of session and user revocations held now.
  struct Stats {
    uint64_t revocations = 0, online_verifications = 0, key_fetches = 0, reconnects = 0;
    uint64_t revocation_entries = 0;
  };
  Stats GetStats() const;

 private:
  class KeySet;  // the auth::PublicKeySource over GetPublicKeys; in session_authority.cc

  struct UserRevocation {
    absl::Time revoke_time = absl::InfinitePast();
    absl::Time forget_after = absl::InfinitePast();
  };
  // A verdict of VerifySession, reused while the feed is stale.
  struct OnlineVerdict {
    absl::StatusOr<SessionIdentity> result;
    absl::Time reuse_until = absl::InfinitePast();
  };

  void WatchLoop();
  // Applies one stream message to the local state and calls the listener.
  void Apply(const auth::v1::WatchRevocationsResponse& message);
  // The maintenance thread's round: keys, forgetting, the silent-stream watchdog.
  void Maintain();
  void Forget(absl::Time now);

  bool FreshLocked(absl::Time now) const ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  bool RevokedLocked(const std::string& session_id, const std::string& user_id,
                     absl::Time issued_at, absl::Time now) const
      ABSL_SHARED_LOCKS_REQUIRED(state_mu_);
  absl::StatusOr<SessionIdentity> VerifyOnline(absl::string_view token,
                                               const auth::SessionClaims& claims);
  // One WatchRevocations stream, from open to end. Sets `*received` if a message arrived.
  grpc::Status WatchOnce(bool* received);
  // The stub for the provider's current channel; null if there is none.
  std::shared_ptr<auth::v1::AuthService::Stub> AuthStub();

  std::atomic<uint64_t> revocations_{0};
  std::atomic<uint64_t> online_verifications_{0};
  std::atomic<uint64_t> key_fetches_{0};
  std::atomic<uint64_t> reconnects_{0};

  Clock& clock_;
  const SessionAuthorityOptions options_;
  const ChannelProvider channel_provider_;
  absl::Mutex stub_mu_;
  std::shared_ptr<grpc::Channel> stub_channel_ ABSL_GUARDED_BY(stub_mu_);
  std::shared_ptr<auth::v1::AuthService::Stub> stub_ ABSL_GUARDED_BY(stub_mu_);
  const std::unique_ptr<KeySet> keys_;
  auth::SessionTokenVerifier verifier_;
  // Written before Start(), read only by the watch thread.
  std::function<void(const auth::v1::Revocation&)> listener_;

  // The local view of the feed.
  mutable absl::Mutex state_mu_;
  std::unordered_map<std::string, absl::Time> revoked_sessions_
      ABSL_GUARDED_BY(state_mu_);  // session id -> forget_after
  std::unordered_map<std::string, UserRevocation> revoked_users_ ABSL_GUARDED_BY(state_mu_);
  absl::Time next_forget_ ABSL_GUARDED_BY(state_mu_) = absl::InfiniteFuture();
  absl::Time last_message_ ABSL_GUARDED_BY(state_mu_) = absl::InfinitePast();
  bool replay_complete_ ABSL_GUARDED_BY(state_mu_) = false;
  bool feed_stopped_ ABSL_GUARDED_BY(state_mu_) = false;

  // Online verdicts while stale, keyed by the token's SHA-256.
  absl::Mutex online_mu_;
  std::unordered_map<std::string, OnlineVerdict> online_verdicts_ ABSL_GUARDED_BY(online_mu_);
  std::atomic<int64_t> last_online_warning_ns_{0};  // real time, for rate-limited logging

  // The watch stream.
  absl::Mutex watch_mu_;
  absl::CondVar watch_wake_;
  bool stopping_ ABSL_GUARDED_BY(watch_mu_) = false;
  grpc::ClientContext* stream_ ABSL_GUARDED_BY(watch_mu_) = nullptr;
  absl::Time stream_last_read_ ABSL_GUARDED_BY(watch_mu_);  // real time
  // Watch thread only.
  uint64_t last_sequence_ = 0;
  bool opened_stream_ = false;

  // Start/Stop.
  absl::Mutex lifecycle_mu_;
  bool started_ ABSL_GUARDED_BY(lifecycle_mu_) = false;
  std::unique_ptr<PeriodicTask> maintenance_ ABSL_GUARDED_BY(lifecycle_mu_);
  std::thread watch_thread_ ABSL_GUARDED_BY(lifecycle_mu_);
};

}  // namespace tidepool::proxy
