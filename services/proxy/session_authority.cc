#include "services/proxy/session_authority.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "lib/crypto/crypto.h"
#include "lib/grpc_status.h"
#include "lib/log.h"

namespace tidepool::proxy {
namespace {

namespace authpb = ::tidepool::auth::v1;
namespace commonpb = ::tidepool::common::v1;

// Generic failure reasons: never any part of the token.
constexpr absl::string_view kRevoked = "session revoked";
constexpr absl::string_view kSessionEnded = "the session has ended";
constexpr absl::string_view kNoKeys = "session keys are not available yet";
constexpr absl::string_view kExpired = "session expired";
constexpr absl::string_view kFeedStale =
    "the session cannot be checked now: the revocation feed is stale";
constexpr absl::string_view kAuthUnreachable =
    "the session cannot be verified now: the auth service is unreachable";

constexpr absl::Duration kInitialBackoff = absl::Milliseconds(100);
constexpr absl::Duration kMinBackoff = absl::Milliseconds(10);
// The maintenance round runs every stale_after / 4, within these bounds.
constexpr absl::Duration kMinMaintenancePeriod = absl::Milliseconds(10);
constexpr absl::Duration kMaxMaintenancePeriod = absl::Seconds(1);
// At most this many online verdicts are kept for reuse; beyond it verdicts are not cached.
constexpr size_t kMaxOnlineVerdicts = 10000;
// At most one warning about failed online verification per this interval (real time).
constexpr absl::Duration kOnlineWarningInterval = absl::Seconds(10);
// While the watch keeps failing, one warning per this interval (real time).
constexpr absl::Duration kWatchWarningInterval = absl::Seconds(30);

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

google::protobuf::Duration ToProto(absl::Duration d) {
  google::protobuf::Duration out;
  const int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  out.set_seconds(seconds);
  out.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
  return out;
}

std::string CodeName(const grpc::Status& status) {
  return absl::StatusCodeToString(FromGrpcStatus(status).code());
}

SessionIdentity IdentityOf(const auth::SessionClaims& claims) {
  SessionIdentity identity;
  identity.user_id = claims.user_id;
  identity.session_id = claims.session_id;
  identity.admin = claims.role == auth::kRoleAdmin;
  identity.issued_at = claims.issued_at;
  identity.expires_at = claims.expires_at;
  return identity;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Keys

// The latest GetPublicKeysResponse as an auth::PublicKeySource. A lookup is a reader lock and a
// scan of a handful of keys. Fetches are single-flight: a caller that misses while a fetch is
// in flight waits for it instead of starting another, and no lock is held during the RPC.
// Thread-safe.
class SessionAuthority::KeySet final : public auth::PublicKeySource {
 public:
  // `owner` provides the stub, the clock, the options and the fetch counter; it must outlive this.
  explicit KeySet(SessionAuthority& owner) : owner_(owner) {}

  // A key unknown (or out of its window) triggers one synchronous refetch, at most once per
  // min_key_refetch_interval, shared by concurrent callers.
  std::optional<auth::VerificationKey> Find(absl::string_view kid, absl::Time now) override {
    {
      absl::ReaderMutexLock lock(&mu_);
      if (std::optional<auth::VerificationKey> key = LookupLocked(kid, now)) {
        return key;
      }
    }
    absl::MutexLock lock(&mu_);
    if (fetching_) {
      mu_.Await(absl::Condition(this, &KeySet::NotFetching));
      return LookupLocked(kid, now);
    }
    if (std::optional<auth::VerificationKey> key = LookupLocked(kid, now)) {
      return key;  // fetched while we waited for the lock
    }
    if (now < last_miss_fetch_ + owner_.options_.min_key_refetch_interval) {
      return std::nullopt;
    }
    last_miss_fetch_ = now;
    FetchLocked(now);
    return LookupLocked(kid, now);
  }

  // Fetches if no set was fetched yet or the set's cache_ttl has run out, and no fetch was
  // attempted within min_key_refetch_interval. For the maintenance thread.
  void RefreshIfDue() {
    const absl::Time now = owner_.clock_.Now();
    absl::MutexLock lock(&mu_);
    if (stopped_ || fetching_ || now < expires_at_ ||
        now < last_attempt_ + owner_.options_.min_key_refetch_interval) {
      return;
    }
    FetchLocked(now);
  }

  // Fetches at once if no set was fetched yet or the last fetch failed: for the watch thread,
  // when a stream shows that auth is reachable again.
  void RefreshIfFailed() {
    const absl::Time now = owner_.clock_.Now();
    absl::MutexLock lock(&mu_);
    if (stopped_ || fetching_ || (loaded_ && !last_failed_)) {
      return;
    }
    FetchLocked(now);
  }

  // True once any key set has been fetched.
  bool Loaded() const {
    absl::ReaderMutexLock lock(&mu_);
    return loaded_;
  }

  // Cancels a fetch in flight and ends periodic refreshes (unknown kids still refetch).
  void Stop() {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
    if (in_flight_ != nullptr) {
      in_flight_->TryCancel();
    }
  }

 private:
  bool NotFetching() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !fetching_; }

  std::optional<auth::VerificationKey> LookupLocked(absl::string_view kid, absl::Time now) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    for (const auth::VerificationKey& key : keys_) {
      if (key.key_id == kid && now < key.not_after) {
        return key;
      }
    }
    return std::nullopt;
  }

  // Runs one GetPublicKeys with mu_ released (fetching_ keeps others out) and installs the
  // result. A failure keeps the previous set.
  void FetchLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const SessionAuthorityOptions& options = owner_.options_;
    fetching_ = true;
    last_attempt_ = now;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + options.online_verify_deadline));
    in_flight_ = &context;
    mu_.Unlock();

    authpb::GetPublicKeysResponse response;
    grpc::Status status(grpc::StatusCode::UNAVAILABLE, "no channel to the auth service");
    if (std::shared_ptr<authpb::AuthService::Stub> stub = owner_.AuthStub()) {
      owner_.key_fetches_.fetch_add(1, std::memory_order_relaxed);
      status = stub->GetPublicKeys(&context, authpb::GetPublicKeysRequest(), &response);
    }
    std::vector<auth::VerificationKey> keys;
    if (status.ok()) {
      for (const authpb::PublicKey& published : response.keys()) {
        if (published.algorithm() != "EdDSA" || !auth::IsValidKeyId(published.key_id()) ||
            published.public_key().size() != crypto::kEd25519PublicKeySize) {
          LogWarning("session authority: ignoring a malformed published key",
                     {{"key_id", published.key_id()}, {"algorithm", published.algorithm()}});
          continue;
        }
        auth::VerificationKey key;
        key.key_id = published.key_id();
        key.public_key = published.public_key();
        key.not_before =
            published.has_not_before() ? FromProto(published.not_before()) : absl::InfinitePast();
        key.not_after =
            published.has_not_after() ? FromProto(published.not_after()) : absl::InfiniteFuture();
        key.current = published.current();
        keys.push_back(std::move(key));
      }
    } else {
      LogWarning("session authority: cannot fetch the session keys",
                 {{"code", CodeName(status)}, {"message", status.error_message()}});
    }
    const absl::Duration ttl =
        std::max(FromProto(response.cache_ttl()), options.min_key_refetch_interval);
    const absl::Time fetched = owner_.clock_.Now();

    mu_.Lock();
    in_flight_ = nullptr;
    fetching_ = false;
    last_failed_ = !status.ok();
    if (status.ok()) {
      keys_ = std::move(keys);
      loaded_ = true;
      expires_at_ = fetched + ttl;
    }
  }

  SessionAuthority& owner_;

  mutable absl::Mutex mu_;
  std::vector<auth::VerificationKey> keys_ ABSL_GUARDED_BY(mu_);
  bool loaded_ ABSL_GUARDED_BY(mu_) = false;
  // When the set's cache_ttl runs out.
  absl::Time expires_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // The last fetch of any kind, and the last one an unknown kid triggered.
  absl::Time last_attempt_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time last_miss_fetch_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool fetching_ ABSL_GUARDED_BY(mu_) = false;
  bool last_failed_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* in_flight_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

// ---------------------------------------------------------------------------------------------
// SessionAuthority

SessionAuthority::SessionAuthority(std::shared_ptr<grpc::Channel> auth, Clock& clock,
                                   SessionAuthorityOptions options)
    : SessionAuthority(ChannelProvider([auth = std::move(auth)] { return auth; }), clock, options) {
}

SessionAuthority::SessionAuthority(ChannelProvider auth, Clock& clock,
                                   SessionAuthorityOptions options)
    : clock_(clock),
      options_(options),
      channel_provider_(std::move(auth)),
      keys_(std::make_unique<KeySet>(*this)),
      verifier_(*keys_, clock_) {}

SessionAuthority::~SessionAuthority() { Stop(); }

void SessionAuthority::SetRevocationListener(
    std::function<void(const auth::v1::Revocation&)> listener) {
  listener_ = std::move(listener);
}

void SessionAuthority::Start() {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  if (started_) {
    return;
  }
  started_ = true;
  {
    absl::MutexLock lock(&watch_mu_);
    if (stopping_) {
      return;
    }
  }
  const absl::Duration period =
      std::clamp(options_.stale_after / 4, kMinMaintenancePeriod, kMaxMaintenancePeriod);
  maintenance_ = std::make_unique<PeriodicTask>(period, [this] { Maintain(); });
  maintenance_->RunSoon();  // the first key fetch
  watch_thread_ = std::thread([this] { WatchLoop(); });
}

void SessionAuthority::Stop() {
  absl::MutexLock lifecycle(&lifecycle_mu_);
  {
    absl::MutexLock lock(&watch_mu_);
    stopping_ = true;
    if (stream_ != nullptr) {
      stream_->TryCancel();
    }
    watch_wake_.SignalAll();
  }
  keys_->Stop();
  if (maintenance_ != nullptr) {
    maintenance_->Stop();
  }
  if (watch_thread_.joinable()) {
    watch_thread_.join();
  }
  absl::MutexLock lock(&state_mu_);
  feed_stopped_ = true;
}

absl::StatusOr<SessionIdentity> SessionAuthority::Verify(absl::string_view token) {
  absl::StatusOr<auth::SessionClaims> claims = verifier_.Verify(token);
  if (!claims.ok()) {
    if (!keys_->Loaded()) {
      return absl::UnavailableError(kNoKeys);
    }
    return claims.status();  // UNAUTHENTICATED, generic
  }
  const absl::Time now = clock_.Now();
  {
    absl::ReaderMutexLock lock(&state_mu_);
    // A revocation we know of holds whether or not the feed is fresh.
    if (RevokedLocked(claims->session_id, claims->user_id, claims->issued_at, now)) {
      return absl::UnauthenticatedError(kRevoked);
    }
    if (FreshLocked(now)) {
      return IdentityOf(*claims);
    }
  }
  return VerifyOnline(token, *claims);
}

absl::Status SessionAuthority::CheckSession(const SessionIdentity& identity) {
  const absl::Time now = clock_.Now();
  if (now >= identity.expires_at) {
    return absl::UnauthenticatedError(kExpired);
  }
  absl::ReaderMutexLock lock(&state_mu_);
  if (RevokedLocked(identity.session_id, identity.user_id, identity.issued_at, now)) {
    return absl::UnauthenticatedError(kRevoked);
  }
  if (!FreshLocked(now)) {
    return absl::UnavailableError(kFeedStale);
  }
  return absl::OkStatus();
}

bool SessionAuthority::FeedFresh() const {
  const absl::Time now = clock_.Now();
  absl::ReaderMutexLock lock(&state_mu_);
  return FreshLocked(now);
}

SessionAuthority::Stats SessionAuthority::GetStats() const {
  Stats stats;
  stats.revocations = revocations_.load(std::memory_order_relaxed);
  stats.online_verifications = online_verifications_.load(std::memory_order_relaxed);
  stats.key_fetches = key_fetches_.load(std::memory_order_relaxed);
  stats.reconnects = reconnects_.load(std::memory_order_relaxed);
  absl::ReaderMutexLock lock(&state_mu_);
  stats.revocation_entries = revoked_sessions_.size() + revoked_users_.size();
  return stats;
}

bool SessionAuthority::FreshLocked(absl::Time now) const {
  return !feed_stopped_ && replay_complete_ && now - last_message_ < options_.stale_after;
}

std::shared_ptr<authpb::AuthService::Stub> SessionAuthority::AuthStub() {
  std::shared_ptr<grpc::Channel> channel = channel_provider_ ? channel_provider_() : nullptr;
  if (channel == nullptr) {
    return nullptr;
  }
  absl::MutexLock lock(&stub_mu_);
  if (channel != stub_channel_) {
    stub_ = authpb::AuthService::NewStub(channel);
    stub_channel_ = std::move(channel);
  }
  return stub_;
}

bool SessionAuthority::RevokedLocked(const std::string& session_id, const std::string& user_id,
                                     absl::Time issued_at, absl::Time now) const {
  // Entries past forget_after are ignored here even before Forget() drops them.
  const auto session = revoked_sessions_.find(session_id);
  if (session != revoked_sessions_.end() && now < session->second) {
    return true;
  }
  // iat is whole seconds and revoke_time is not: a token whose iat falls in the second of the
  // revocation may have been issued before it, so `<=` rejects it (auth does the same).
  const auto user = revoked_users_.find(user_id);
  return user != revoked_users_.end() && now < user->second.forget_after &&
         issued_at <= user->second.revoke_time;
}

absl::StatusOr<SessionIdentity> SessionAuthority::VerifyOnline(absl::string_view token,
                                                               const auth::SessionClaims& claims) {
  const bool reuse = options_.online_verify_cache > absl::ZeroDuration();
  std::string digest;
  if (reuse) {
    digest = crypto::Sha256(token);
    const absl::Time now = clock_.Now();
    absl::MutexLock lock(&online_mu_);
    const auto it = online_verdicts_.find(digest);
    if (it != online_verdicts_.end() && now < it->second.reuse_until) {
      return it->second.result;
    }
  }

  authpb::VerifySessionRequest request;
  request.set_session_token(std::string(token));
  authpb::VerifySessionResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.online_verify_deadline));
  grpc::Status status(grpc::StatusCode::UNAVAILABLE, "no channel to the auth service");
  if (std::shared_ptr<authpb::AuthService::Stub> stub = AuthStub()) {
    online_verifications_.fetch_add(1, std::memory_order_relaxed);
    status = stub->VerifySession(&context, request, &response);
  }

  absl::StatusOr<SessionIdentity> result;
  switch (status.error_code()) {
    case grpc::StatusCode::OK:
      if (response.session_id() != claims.session_id || response.user_id() != claims.user_id) {
        result = absl::UnauthenticatedError(kSessionEnded);
      } else {
        result = IdentityOf(claims);
        // Least privilege: admin only if both the token and auth say so.
        result->admin = result->admin && response.role() == commonpb::ROLE_ADMIN;
      }
      break;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::INVALID_ARGUMENT:
      result = absl::UnauthenticatedError(kSessionEnded);
      break;
    default: {
      // No verdict: fail closed, and do not remember it.
      const int64_t now_ns = absl::GetCurrentTimeNanos();
      int64_t last_ns = last_online_warning_ns_.load(std::memory_order_relaxed);
      if (now_ns - last_ns >= absl::ToInt64Nanoseconds(kOnlineWarningInterval) &&
          last_online_warning_ns_.compare_exchange_strong(last_ns, now_ns)) {
        LogWarning("session authority: online session verification failed",
                   {{"code", CodeName(status)}, {"message", status.error_message()}});
      }
      return absl::UnavailableError(kAuthUnreachable);
    }
  }

  if (reuse) {
    const absl::Time reuse_until = clock_.Now() + options_.online_verify_cache;
    absl::MutexLock lock(&online_mu_);
    if (online_verdicts_.size() < kMaxOnlineVerdicts || online_verdicts_.count(digest) != 0) {
      online_verdicts_[digest] = OnlineVerdict{result, reuse_until};
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// The feed

void SessionAuthority::WatchLoop() {
  const absl::Duration max_backoff = std::max(options_.reconnect_backoff_max, kMinBackoff);
  const absl::Duration initial_backoff = std::min(kInitialBackoff, max_backoff);
  absl::Duration backoff = initial_backoff;
  int failures = 0;  // attempts since the last message
  absl::Time last_warning = absl::InfinitePast();
  for (;;) {
    bool received = false;
    const grpc::Status status = WatchOnce(&received);
    if (received) {
      backoff = initial_backoff;
      failures = 0;
    }
    {
      absl::MutexLock lock(&watch_mu_);
      if (stopping_) {
        return;
      }
    }
    ++failures;
    if (failures == 1 || absl::Now() - last_warning >= kWatchWarningInterval) {
      last_warning = absl::Now();
      LogWarning("session authority: the revocation watch ended; reconnecting",
                 {{"code", CodeName(status)},
                  {"message", status.error_message()},
                  {"after_sequence", last_sequence_},
                  {"attempts", failures},
                  {"backoff_ms", absl::ToInt64Milliseconds(backoff)}});
    }
    absl::MutexLock lock(&watch_mu_);
    const absl::Time until = absl::Now() + backoff;
    while (!stopping_ && absl::Now() < until) {
      watch_wake_.WaitWithDeadline(&watch_mu_, until);
    }
    if (stopping_) {
      return;
    }
    backoff = std::min(backoff * 2, max_backoff);
  }
}

grpc::Status SessionAuthority::WatchOnce(bool* received) {
  std::shared_ptr<authpb::AuthService::Stub> stub = AuthStub();
  if (stub == nullptr) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "no channel to the auth service");
  }
  grpc::ClientContext context;
  {
    absl::MutexLock lock(&watch_mu_);
    if (stopping_) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "stopping");
    }
    stream_ = &context;
    stream_last_read_ = absl::Now();
  }
  if (opened_stream_) {
    reconnects_.fetch_add(1, std::memory_order_relaxed);
  }
  opened_stream_ = true;

  authpb::WatchRevocationsRequest request;
  request.set_after_sequence(last_sequence_);
  if (options_.heartbeat_interval > absl::ZeroDuration()) {
    *request.mutable_heartbeat_interval() = ToProto(options_.heartbeat_interval);
  }
  std::unique_ptr<grpc::ClientReader<authpb::WatchRevocationsResponse>> reader =
      stub->WatchRevocations(&context, request);
  authpb::WatchRevocationsResponse message;
  while (reader->Read(&message)) {
    {
      absl::MutexLock lock(&watch_mu_);
      stream_last_read_ = absl::Now();
    }
    if (!*received) {
      // auth is reachable: make up for a failed key fetch now rather than at the next retry.
      keys_->RefreshIfFailed();
    }
    *received = true;
    Apply(message);
  }
  const grpc::Status status = reader->Finish();
  absl::MutexLock lock(&watch_mu_);
  stream_ = nullptr;
  return status;
}

void SessionAuthority::Apply(const authpb::WatchRevocationsResponse& message) {
  const absl::Time now = clock_.Now();
  if (!message.has_revocation()) {
    {
      absl::MutexLock lock(&state_mu_);
      last_message_ = now;
      if (message.has_heartbeat() && message.heartbeat().replay_complete()) {
        replay_complete_ = true;
      }
    }
    Forget(now);
    return;
  }

  const authpb::Revocation& revocation = message.revocation();
  // Unset times fail closed: an entry without forget_after_time is kept, a user revocation
  // without revoke_time covers tokens issued up to its arrival.
  const absl::Time forget_after = revocation.has_forget_after_time()
                                      ? FromProto(revocation.forget_after_time())
                                      : absl::InfiniteFuture();
  const absl::Time revoke_time =
      revocation.has_revoke_time() ? FromProto(revocation.revoke_time()) : now;
  {
    absl::MutexLock lock(&state_mu_);
    last_message_ = now;
    if (now < forget_after) {
      switch (revocation.target_case()) {
        case authpb::Revocation::kSessionId: {
          absl::Time& entry =
              revoked_sessions_.try_emplace(revocation.session_id(), forget_after).first->second;
          entry = std::max(entry, forget_after);
          next_forget_ = std::min(next_forget_, forget_after);
          break;
        }
        case authpb::Revocation::kUserId: {
          // Several revocations of one user combine into the latest revoke_time and the latest
          // forget_after: that rejects every token any of them rejects.
          UserRevocation& entry = revoked_users_[revocation.user_id()];
          entry.revoke_time = std::max(entry.revoke_time, revoke_time);
          entry.forget_after = std::max(entry.forget_after, forget_after);
          next_forget_ = std::min(next_forget_, forget_after);
          break;
        }
        case authpb::Revocation::TARGET_NOT_SET:
          break;
      }
    }
  }
  Forget(now);
  if (revocation.target_case() == authpb::Revocation::TARGET_NOT_SET) {
    LogWarning("session authority: a revocation without a target was ignored",
               {{"sequence", static_cast<uint64_t>(revocation.sequence())}});
  }
  last_sequence_ = std::max(last_sequence_, static_cast<uint64_t>(revocation.sequence()));
  revocations_.fetch_add(1, std::memory_order_relaxed);
  if (listener_) {
    listener_(revocation);
  }
}

void SessionAuthority::Maintain() {
  // A stream that stays silent (a dead peer without a reset) is abandoned; WatchLoop reopens it.
  {
    absl::MutexLock lock(&watch_mu_);
    const absl::Time real_now = absl::Now();
    if (stream_ != nullptr && real_now - stream_last_read_ >= options_.stale_after) {
      LogWarning("session authority: the revocation watch is silent; reconnecting",
                 {{"silent_ms", absl::ToInt64Milliseconds(real_now - stream_last_read_)}});
      stream_->TryCancel();
      stream_last_read_ = real_now;
    }
  }

  const absl::Time now = clock_.Now();
  Forget(now);
  {
    absl::MutexLock lock(&online_mu_);
    for (auto it = online_verdicts_.begin(); it != online_verdicts_.end();) {
      if (it->second.reuse_until <= now) {
        it = online_verdicts_.erase(it);
      } else {
        ++it;
      }
    }
  }
  keys_->RefreshIfDue();
}

void SessionAuthority::Forget(absl::Time now) {
  absl::MutexLock lock(&state_mu_);
  if (now < next_forget_) {
    return;
  }
  absl::Time next = absl::InfiniteFuture();
  for (auto it = revoked_sessions_.begin(); it != revoked_sessions_.end();) {
    if (it->second <= now) {
      it = revoked_sessions_.erase(it);
    } else {
      next = std::min(next, it->second);
      ++it;
    }
  }
  for (auto it = revoked_users_.begin(); it != revoked_users_.end();) {
    if (it->second.forget_after <= now) {
      it = revoked_users_.erase(it);
    } else {
      next = std::min(next, it->second.forget_after);
      ++it;
    }
  }
  next_forget_ = next;
}

}  // namespace tidepool::proxy
