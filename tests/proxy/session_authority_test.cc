#include "services/proxy/session_authority.h"

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "lib/crypto/crypto.h"
#include "services/auth/session_token.h"
#include "tests/testing/loopback_grpc_server.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"
#include "tidepool/auth/v1/auth_service.grpc.pb.h"

namespace tidepool::proxy {
namespace {

namespace authpb = ::tidepool::auth::v1;
using ::testing::HasSubstr;
using ::testing::Not;
using ::tidepool::testing::FakeClock;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

// The fake clock's start: a whole second, so that token times (whole seconds) line up with it.
absl::Time T0() { return absl::FromUnixSeconds(1900000000); }

google::protobuf::Timestamp Stamp(absl::Time t) {
  google::protobuf::Timestamp out;
  const int64_t seconds = absl::ToUnixSeconds(t);
  out.set_seconds(seconds);
  out.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(t - absl::FromUnixSeconds(seconds))));
  return out;
}

// Polls `condition` every 2 ms for up to `timeout` (real time).
bool PollUntil(const std::function<bool()>& condition, absl::Duration timeout = absl::Seconds(2)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() >= deadline) {
      return false;
    }
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

// A user or session id: `prefix` and 26 base32 characters encoding `n`.
std::string Id(absl::string_view prefix, int n) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::string suffix(26, 'a');
  for (int i = 25; n > 0 && i >= 0; --i, n /= 32) {
    suffix[static_cast<size_t>(i)] = kAlphabet[n % 32];
  }
  return absl::StrCat(prefix, suffix);
}
std::string User(int n) { return Id("u_", n); }
std::string Session(int n) { return Id("s_", n); }

// An Ed25519 signing key of the fake auth service.
struct TestKey {
  auth::SigningKey signing;
  auth::VerificationKey verification;
};

TestKey NewKey(absl::Time not_after = absl::InfiniteFuture()) {
  absl::StatusOr<crypto::Ed25519PrivateKey> generated = crypto::Ed25519PrivateKey::Generate();
  EXPECT_THAT(generated, IsOk());
  auto private_key = std::make_shared<const crypto::Ed25519PrivateKey>(*std::move(generated));
  TestKey key;
  key.signing.key_id = auth::KeyIdForPublicKey(private_key->PublicKey());
  key.signing.private_key = private_key;
  key.signing.not_before = absl::UnixEpoch();
  key.signing.not_after = not_after;
  key.verification.key_id = key.signing.key_id;
  key.verification.public_key = private_key->PublicKey();
  key.verification.not_before = absl::UnixEpoch();
  key.verification.not_after = not_after;
  key.verification.current = true;
  return key;
}

std::string SignToken(const TestKey& key, const std::string& user_id, const std::string& session_id,
                      absl::Time issued_at, absl::Duration lifetime = absl::Minutes(15),
                      absl::string_view role = auth::kRoleUser) {
  auth::SessionClaims claims;
  claims.user_id = user_id;
  claims.session_id = session_id;
  claims.role = std::string(role);
  claims.issued_at = issued_at;
  claims.expires_at = issued_at + lifetime;
  absl::StatusOr<std::string> token = auth::SignSessionToken(claims, key.signing);
  EXPECT_THAT(token, IsOk());
  return token.value_or("");
}

// A hand-written AuthService: GetPublicKeys from the published keys; WatchRevocations from a
// revocation log (replaying after after_sequence, a replay_complete heartbeat, then live
// revocations and heartbeats at the requested interval), which can go silent, withhold
// replay_complete or end every stream; VerifySession with a chosen verdict (OK verifies the
// token with the published keys). Records requests. Thread-safe.
class FakeAuthService final : public authpb::AuthService::Service {
 public:
  explicit FakeAuthService(Clock& clock) : verifier_(keys_, clock) {}

  void PublishKeys(const std::vector<TestKey>& keys) {
    std::vector<auth::VerificationKey> verification;
    absl::MutexLock lock(&mu_);
    key_response_.clear_keys();
    for (const TestKey& key : keys) {
      authpb::PublicKey* out = key_response_.add_keys();
      out->set_key_id(key.verification.key_id);
      out->set_algorithm("EdDSA");
      out->set_public_key(key.verification.public_key);
      *out->mutable_not_before() = Stamp(key.verification.not_before);
      if (key.verification.not_after != absl::InfiniteFuture()) {
        *out->mutable_not_after() = Stamp(key.verification.not_after);
      }
      out->set_current(key.verification.current);
      verification.push_back(key.verification);
    }
    keys_.Set(std::move(verification));
  }
  void SetCacheTtl(absl::Duration ttl) {
    absl::MutexLock lock(&mu_);
    key_response_.mutable_cache_ttl()->set_seconds(absl::ToInt64Seconds(ttl));
  }
  int key_requests() {
    absl::MutexLock lock(&mu_);
    return key_requests_;
  }

  // Appends a revocation to the log (assigning the next sequence) and returns its sequence.
  uint64_t RevokeSession(const std::string& session_id, absl::Time revoke_time,
                         absl::Time forget_after) {
    authpb::Revocation revocation;
    revocation.set_session_id(session_id);
    revocation.set_reason(authpb::REVOCATION_REASON_SIGN_OUT);
    *revocation.mutable_revoke_time() = Stamp(revoke_time);
    *revocation.mutable_forget_after_time() = Stamp(forget_after);
    absl::MutexLock lock(&mu_);
    return AppendLocked(std::move(revocation));
  }
  uint64_t RevokeUser(const std::string& user_id, absl::Time revoke_time, absl::Time forget_after) {
    authpb::Revocation revocation;
    revocation.set_user_id(user_id);
    revocation.set_reason(authpb::REVOCATION_REASON_USER_SUSPENDED);
    *revocation.mutable_revoke_time() = Stamp(revoke_time);
    *revocation.mutable_forget_after_time() = Stamp(forget_after);
    absl::MutexLock lock(&mu_);
    return AppendLocked(std::move(revocation));
  }

  // Sends one last revocation (of an unrelated session, returned as its sequence), then nothing
  // at all, on every stream, until Resume(). Once the client has applied that marker, nothing
  // the fake sent before can still be in flight.
  uint64_t GoSilent(absl::Time now) {
    authpb::Revocation marker;
    marker.set_session_id(Session(999999));
    *marker.mutable_revoke_time() = Stamp(now);
    *marker.mutable_forget_after_time() = Stamp(now + absl::Hours(1));
    absl::MutexLock lock(&mu_);
    silent_after_ = AppendLocked(std::move(marker));
    silent_ = true;
    return silent_after_;
  }
  void Resume() {
    absl::MutexLock lock(&mu_);
    silent_ = false;
    changed_.SignalAll();
  }
  void WithholdReplayComplete(bool withhold) {
    absl::MutexLock lock(&mu_);
    withhold_replay_complete_ = withhold;
    changed_.SignalAll();
  }
  // Ends every open stream with UNAVAILABLE.
  void EndStreams() {
    absl::MutexLock lock(&mu_);
    ++end_generation_;
    changed_.SignalAll();
  }
  // Ends every stream for good (before the server shuts down).
  void ShutDown() {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    changed_.SignalAll();
  }
  std::vector<authpb::WatchRevocationsRequest> watch_requests() {
    absl::MutexLock lock(&mu_);
    return watch_requests_;
  }
  int open_streams() {
    absl::MutexLock lock(&mu_);
    return open_streams_;
  }

  void SetVerdict(grpc::StatusCode verdict) {
    absl::MutexLock lock(&mu_);
    verdict_ = verdict;
  }
  int verify_calls() {
    absl::MutexLock lock(&mu_);
    return verify_calls_;
  }

  grpc::Status GetPublicKeys(grpc::ServerContext* /*context*/,
                             const authpb::GetPublicKeysRequest* /*request*/,
                             authpb::GetPublicKeysResponse* response) override {
    absl::MutexLock lock(&mu_);
    ++key_requests_;
    *response = key_response_;
    return grpc::Status::OK;
  }

  grpc::Status VerifySession(grpc::ServerContext* /*context*/,
                             const authpb::VerifySessionRequest* request,
                             authpb::VerifySessionResponse* response) override {
    grpc::StatusCode verdict;
    {
      absl::MutexLock lock(&mu_);
      ++verify_calls_;
      verdict = verdict_;
    }
    if (verdict != grpc::StatusCode::OK) {
      return grpc::Status(verdict, "fake verdict");
    }
    absl::StatusOr<auth::SessionClaims> claims = verifier_.Verify(request->session_token());
    if (!claims.ok()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "the session has ended");
    }
    response->set_session_id(claims->session_id);
    response->set_user_id(claims->user_id);
    response->set_role(claims->role == auth::kRoleAdmin ? common::v1::ROLE_ADMIN
                                                        : common::v1::ROLE_USER);
    *response->mutable_expire_time() = Stamp(claims->expires_at);
    response->set_key_id(claims->key_id);
    return grpc::Status::OK;
  }

  grpc::Status WatchRevocations(
      grpc::ServerContext* context, const authpb::WatchRevocationsRequest* request,
      grpc::ServerWriter<authpb::WatchRevocationsResponse>* writer) override {
    absl::Duration interval = absl::Seconds(1);
    if (request->has_heartbeat_interval()) {
      interval = absl::Seconds(request->heartbeat_interval().seconds()) +
                 absl::Nanoseconds(request->heartbeat_interval().nanos());
    }
    uint64_t last = request->after_sequence();
    int generation = 0;
    {
      absl::MutexLock lock(&mu_);
      watch_requests_.push_back(*request);
      generation = end_generation_;
      ++open_streams_;
    }
    bool replayed = false;
    absl::Time next_heartbeat = absl::InfiniteFuture();
    grpc::Status result;
    for (;;) {
      std::vector<authpb::WatchRevocationsResponse> out;
      {
        absl::MutexLock lock(&mu_);
        // Wake at least every 20 ms to notice a cancelled call.
        const absl::Time wake = std::min(next_heartbeat, absl::Now() + absl::Milliseconds(20));
        while (!shutting_down_ && generation == end_generation_ &&
               !(HasWorkLocked(last, replayed) || absl::Now() >= wake)) {
          changed_.WaitWithDeadline(&mu_, wake);
        }
        if (shutting_down_ || context->IsCancelled()) {
          result = grpc::Status(grpc::StatusCode::CANCELLED, "stream over");
          break;
        }
        if (generation != end_generation_) {
          result = grpc::Status(grpc::StatusCode::UNAVAILABLE, "the fake ended the stream");
          break;
        }
        for (const authpb::Revocation& revocation : log_) {
          if (revocation.sequence() > last &&
              (!silent_ || revocation.sequence() <= silent_after_)) {
            *out.emplace_back().mutable_revocation() = revocation;
            last = revocation.sequence();
          }
        }
        if (!silent_) {
          const bool complete = !replayed && !withhold_replay_complete_;
          if (complete || absl::Now() >= next_heartbeat ||
              next_heartbeat == absl::InfiniteFuture()) {
            authpb::RevocationHeartbeat* heartbeat = out.emplace_back().mutable_heartbeat();
            *heartbeat->mutable_server_time() = Stamp(absl::Now());
            heartbeat->set_latest_sequence(last);
            heartbeat->set_replay_complete(complete);
            replayed = replayed || complete;
            next_heartbeat = absl::Now() + interval;
          }
        }
      }
      bool written = true;
      for (const authpb::WatchRevocationsResponse& message : out) {
        written = written && writer->Write(message);
      }
      if (!written) {
        result = grpc::Status(grpc::StatusCode::CANCELLED, "the watcher went away");
        break;
      }
    }
    absl::MutexLock lock(&mu_);
    --open_streams_;
    return result;
  }

 private:
  class Keys final : public auth::PublicKeySource {
   public:
    void Set(std::vector<auth::VerificationKey> keys) {
      absl::MutexLock lock(&mu_);
      keys_ = std::move(keys);
    }
    std::optional<auth::VerificationKey> Find(absl::string_view kid, absl::Time now) override {
      absl::MutexLock lock(&mu_);
      for (const auth::VerificationKey& key : keys_) {
        if (key.key_id == kid && now < key.not_after) {
          return key;
        }
      }
      return std::nullopt;
    }

   private:
    absl::Mutex mu_;
    std::vector<auth::VerificationKey> keys_ ABSL_GUARDED_BY(mu_);
  };

  uint64_t AppendLocked(authpb::Revocation revocation) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    revocation.set_sequence(next_sequence_++);
    log_.push_back(std::move(revocation));
    changed_.SignalAll();
    return log_.back().sequence();
  }

  bool HasWorkLocked(uint64_t last, bool replayed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const uint64_t limit = silent_ ? silent_after_ : UINT64_MAX;
    for (const authpb::Revocation& revocation : log_) {
      if (revocation.sequence() > last && revocation.sequence() <= limit) {
        return true;
      }
    }
    return !silent_ && !replayed && !withhold_replay_complete_;
  }

  Keys keys_;
  auth::SessionTokenVerifier verifier_;

  absl::Mutex mu_;
  absl::CondVar changed_;
  authpb::GetPublicKeysResponse key_response_ ABSL_GUARDED_BY(mu_);
  int key_requests_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<authpb::Revocation> log_ ABSL_GUARDED_BY(mu_);
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  bool silent_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t silent_after_ ABSL_GUARDED_BY(mu_) = 0;
  bool withhold_replay_complete_ ABSL_GUARDED_BY(mu_) = false;
  int end_generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  int open_streams_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<authpb::WatchRevocationsRequest> watch_requests_ ABSL_GUARDED_BY(mu_);
  grpc::StatusCode verdict_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::OK;
  int verify_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

// Fast heartbeats and reconnects; staleness (5 s) by the fake clock.
SessionAuthorityOptions FastOptions() {
  SessionAuthorityOptions options;
  options.heartbeat_interval = absl::Milliseconds(100);
  options.reconnect_backoff_max = absl::Milliseconds(200);
  return options;
}

// Expects an error whose message holds no piece of `token` and none of its ids.
void ExpectNothingOfToken(const absl::Status& status, absl::string_view token,
                          const std::string& user_id, const std::string& session_id) {
  const std::string message(status.message());
  for (absl::string_view part : absl::StrSplit(token, '.')) {
    if (part.size() >= 8) {
      EXPECT_THAT(message, Not(HasSubstr(std::string(part.substr(0, 8)))));
      EXPECT_THAT(message, Not(HasSubstr(std::string(part.substr(part.size() - 8)))));
    }
  }
  EXPECT_THAT(message, Not(HasSubstr(user_id)));
  EXPECT_THAT(message, Not(HasSubstr(session_id)));
}

class SessionAuthorityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = NewKey();
    fake_.PublishKeys({key_});
    fake_.SetCacheTtl(absl::Seconds(60));
    tidepool::testing::LoopbackGrpcServer started =
        tidepool::testing::LoopbackGrpcServer::Start({&fake_});
    ASSERT_NE(started.server, nullptr);
    server_ = std::move(started.server);
    port_ = started.port;
    channel_ = started.channel;
  }

  void TearDown() override {
    authority_.reset();
    StopServer();
  }

  void StopServer() {
    if (server_ != nullptr) {
      fake_.ShutDown();
      server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      server_.reset();
    }
  }

  // Builds the authority (with `listener`, if any) without starting it.
  SessionAuthority& Build(SessionAuthorityOptions options = FastOptions(),
                          std::function<void(const authpb::Revocation&)> listener = nullptr) {
    authority_ = std::make_unique<SessionAuthority>(channel_, clock_, options);
    if (listener) {
      authority_->SetRevocationListener(std::move(listener));
    }
    return *authority_;
  }

  // Builds and starts the authority and waits until its feed is fresh and its keys fetched.
  SessionAuthority& StartFresh(SessionAuthorityOptions options = FastOptions(),
                               std::function<void(const authpb::Revocation&)> listener = nullptr) {
    SessionAuthority& authority = Build(options, std::move(listener));
    authority.Start();
    EXPECT_TRUE(
        PollUntil([&] { return authority.FeedFresh() && authority.GetStats().key_fetches >= 1; }));
    return authority;
  }

  // Waits until the authority has received `n` revocations in all.
  bool WaitForRevocations(uint64_t n) {
    return PollUntil([&] { return authority_->GetStats().revocations >= n; });
  }

  std::string Token(int user, int session, absl::Time issued_at = T0()) {
    return SignToken(key_, User(user), Session(session), issued_at);
  }

  FakeClock clock_{T0()};
  FakeAuthService fake_{clock_};
  TestKey key_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<SessionAuthority> authority_;
};

TEST_F(SessionAuthorityTest, AcceptsValidTokensWithTheirIdentity) {
  SessionAuthority& authority = StartFresh();

  absl::StatusOr<SessionIdentity> user = authority.Verify(Token(1, 1));
  ASSERT_THAT(user, IsOk());
  EXPECT_EQ(user->user_id, User(1));
  EXPECT_EQ(user->session_id, Session(1));
  EXPECT_FALSE(user->admin);
  EXPECT_EQ(user->issued_at, T0());
  EXPECT_EQ(user->expires_at, T0() + absl::Minutes(15));

  const std::string admin_token = SignToken(key_, User(2), Session(2), T0() - absl::Seconds(30),
                                            absl::Minutes(10), auth::kRoleAdmin);
  absl::StatusOr<SessionIdentity> admin = authority.Verify(admin_token);
  ASSERT_THAT(admin, IsOk());
  EXPECT_EQ(admin->user_id, User(2));
  EXPECT_EQ(admin->session_id, Session(2));
  EXPECT_TRUE(admin->admin);
  EXPECT_EQ(admin->issued_at, T0() - absl::Seconds(30));
  EXPECT_EQ(admin->expires_at, T0() + absl::Seconds(570));

  // Again, from the verifier's cache.
  EXPECT_THAT(authority.Verify(admin_token), IsOk());
  EXPECT_EQ(authority.GetStats().online_verifications, 0u);
  EXPECT_EQ(fake_.verify_calls(), 0);
  EXPECT_EQ(authority.GetStats().key_fetches, 1u);
}

TEST_F(SessionAuthorityTest, RejectsBadTokensWithoutEchoingThem) {
  SessionAuthority& authority = StartFresh();
  const std::string good = Token(1, 1);
  ASSERT_THAT(authority.Verify(good), IsOk());

  // A flipped signature character (in the middle, so every bit counts).
  std::string bad_signature = good;
  char& c = bad_signature[bad_signature.size() - 20];
  c = c == 'A' ? 'B' : 'A';
  // Signed by a key auth never published.
  const TestKey other = NewKey();
  const std::string other_key = SignToken(other, User(1), Session(1), T0());
  // Expired a minute ago (beyond the 5 s skew).
  const std::string expired =
      SignToken(key_, User(1), Session(1), T0() - absl::Minutes(16), absl::Minutes(15));
  // Signed with a key whose verification window has closed.
  const TestKey retired = NewKey(T0() - absl::Seconds(1));
  fake_.PublishKeys({key_, retired});
  const std::string retired_key = SignToken(retired, User(1), Session(1), T0() - absl::Minutes(1));

  for (const std::string& token : {bad_signature, other_key, expired, retired_key}) {
    absl::StatusOr<SessionIdentity> result = authority.Verify(token);
    EXPECT_THAT(result, StatusIs(absl::StatusCode::kUnauthenticated));
    ExpectNothingOfToken(result.status(), token, User(1), Session(1));
  }
  EXPECT_THAT(authority.Verify("not-a-token"), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(authority.Verify(""), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_EQ(authority.GetStats().online_verifications, 0u);
}

TEST_F(SessionAuthorityTest, SessionRevocationRejectsWithinOneSecond) {
  SessionAuthority& authority = StartFresh();
  const std::string token = Token(1, 1);
  const std::string other = Token(1, 2);
  ASSERT_THAT(authority.Verify(token), IsOk());

  const absl::Time pushed = absl::Now();
  fake_.RevokeSession(Session(1), T0(), T0() + absl::Minutes(16));
  ASSERT_TRUE(PollUntil([&] { return !authority.Verify(token).ok(); }));
  const absl::Duration latency = absl::Now() - pushed;
  std::printf("[          ] revocation-to-rejection latency: %.3f ms\n",
              absl::ToDoubleMilliseconds(latency));
  RecordProperty("revocation_latency_us", std::to_string(absl::ToInt64Microseconds(latency)));
  EXPECT_LT(latency, absl::Seconds(1));

  absl::StatusOr<SessionIdentity> rejected = authority.Verify(token);
  EXPECT_THAT(rejected, StatusIs(absl::StatusCode::kUnauthenticated));
  ExpectNothingOfToken(rejected.status(), token, User(1), Session(1));
  // Only that session: the same user's other session is fine.
  EXPECT_THAT(authority.Verify(other), IsOk());
  EXPECT_EQ(authority.GetStats().revocations, 1u);
  EXPECT_EQ(authority.GetStats().online_verifications, 0u);
}

TEST_F(SessionAuthorityTest, UserRevocationRejectsTokensIssuedUpToItsSecond) {
  SessionAuthority& authority = StartFresh();
  clock_.Advance(absl::Seconds(1));  // now T0 + 1 s: tokens up to T0 + 6 s are not "future"
  const std::string older = Token(1, 1, T0() - absl::Minutes(1));
  const std::string same_second = Token(1, 2, T0());
  const std::string next_second = Token(1, 3, T0() + absl::Seconds(1));
  const std::string other_user = Token(2, 4, T0() - absl::Minutes(1));
  ASSERT_THAT(authority.Verify(older), IsOk());

  // Revoked at T0 + 0.3 s: iat T0 (truncated) may be earlier, so it is rejected.
  fake_.RevokeUser(User(1), T0() + absl::Milliseconds(300), T0() + absl::Minutes(16));
  ASSERT_TRUE(WaitForRevocations(1));
  EXPECT_THAT(authority.Verify(older), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(authority.Verify(same_second), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(authority.Verify(next_second), IsOk());
  EXPECT_THAT(authority.Verify(other_user), IsOk());

  // A second revocation exactly on a whole second also covers tokens of that second.
  fake_.RevokeUser(User(1), T0() + absl::Seconds(1), T0() + absl::Minutes(16));
  ASSERT_TRUE(WaitForRevocations(2));
  EXPECT_THAT(authority.Verify(next_second), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(authority.Verify(Token(1, 5, T0() + absl::Seconds(2))), IsOk());
  EXPECT_EQ(authority.GetStats().revocation_entries, 1u);  // one user entry
  EXPECT_EQ(authority.GetStats().online_verifications, 0u);
}

TEST_F(SessionAuthorityTest, ListenerSeesEachRevocationAfterItApplies) {
  const std::string token = Token(1, 1);
  absl::Mutex mu;
  std::vector<authpb::Revocation> seen;
  std::vector<absl::StatusCode> verdicts;
  SessionAuthority& authority = StartFresh(FastOptions(), [&](const authpb::Revocation& r) {
    // On the watch thread: the revocation must already be in force.
    const absl::StatusCode verdict = authority_->Verify(token).status().code();
    absl::MutexLock lock(&mu);
    seen.push_back(r);
    verdicts.push_back(verdict);
  });
  ASSERT_THAT(authority.Verify(token), IsOk());

  const uint64_t sequence = fake_.RevokeSession(Session(1), T0(), T0() + absl::Minutes(16));
  ASSERT_TRUE(PollUntil([&] {
    absl::MutexLock lock(&mu);
    return !seen.empty();
  }));
  absl::MutexLock lock(&mu);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].sequence(), sequence);
  EXPECT_EQ(seen[0].session_id(), Session(1));
  EXPECT_EQ(seen[0].reason(), authpb::REVOCATION_REASON_SIGN_OUT);
  EXPECT_EQ(verdicts[0], absl::StatusCode::kUnauthenticated);
}

TEST_F(SessionAuthorityTest, ForgetsRevocationsAfterForgetAfterTime) {
  SessionAuthority& authority = StartFresh();
  // Tokens that outlive their revocations' forget_after_time (auth never issues such; here it
  // makes forgetting observable).
  const std::string session_token = SignToken(key_, User(1), Session(1), T0(), absl::Hours(1));
  const std::string user_token = SignToken(key_, User(2), Session(2), T0(), absl::Hours(1));
  fake_.RevokeSession(Session(1), T0(), T0() + absl::Seconds(10));
  fake_.RevokeUser(User(2), T0(), T0() + absl::Seconds(20));
  ASSERT_TRUE(WaitForRevocations(2));
  EXPECT_THAT(authority.Verify(session_token), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(authority.Verify(user_token), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_EQ(authority.GetStats().revocation_entries, 2u);

  clock_.Advance(absl::Seconds(10));  // the session entry's forget_after_time
  ASSERT_TRUE(PollUntil([&] { return authority.FeedFresh(); }));
  EXPECT_THAT(authority.Verify(session_token), IsOk());
  EXPECT_THAT(authority.Verify(user_token), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_TRUE(PollUntil([&] { return authority.GetStats().revocation_entries == 1; }));

  clock_.Advance(absl::Seconds(10));
  ASSERT_TRUE(PollUntil([&] { return authority.FeedFresh(); }));
  EXPECT_THAT(authority.Verify(user_token), IsOk());
  EXPECT_TRUE(PollUntil([&] { return authority.GetStats().revocation_entries == 0; }));
  EXPECT_EQ(authority.GetStats().online_verifications, 0u);

  // A revocation that arrives already forgettable is counted but not kept.
  fake_.RevokeSession(Session(3), T0(), T0() + absl::Seconds(5));
  ASSERT_TRUE(WaitForRevocations(3));
  EXPECT_EQ(authority.GetStats().revocation_entries, 0u);
}

TEST_F(SessionAuthorityTest, StaleFeedVerifiesOnlineUntilTheFeedReturns) {
  const SessionAuthorityOptions options = FastOptions();
  SessionAuthority& authority = StartFresh(options);
  const std::string token = Token(1, 1);
  ASSERT_THAT(authority.Verify(token), IsOk());

  fake_.GoSilent(clock_.Now());
  ASSERT_TRUE(WaitForRevocations(1));  // the marker: nothing else is in flight
  EXPECT_TRUE(authority.FeedFresh());
  clock_.Advance(options.stale_after - absl::Milliseconds(1));
  EXPECT_TRUE(authority.FeedFresh());
  EXPECT_THAT(authority.Verify(token), IsOk());
  EXPECT_EQ(authority.GetStats().online_verifications, 0u);
  clock_.Advance(absl::Milliseconds(1));  // silent for stale_after
  EXPECT_FALSE(authority.FeedFresh());

  // Online, and auth's answer counts.
  absl::StatusOr<SessionIdentity> online = authority.Verify(token);
  ASSERT_THAT(online, IsOk());
  EXPECT_EQ(online->user_id, User(1));
  EXPECT_EQ(online->session_id, Session(1));
  EXPECT_EQ(authority.GetStats().online_verifications, 1u);
  EXPECT_EQ(fake_.verify_calls(), 1);
  // The verdict is reused for online_verify_cache...
  fake_.SetVerdict(grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(authority.Verify(token), IsOk());
  EXPECT_EQ(fake_.verify_calls(), 1);
  // ...and then auth is asked again, and its "no" holds.
  clock_.Advance(options.online_verify_cache);
  absl::StatusOr<SessionIdentity> refused = authority.Verify(token);
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kUnauthenticated));
  ExpectNothingOfToken(refused.status(), token, User(1), Session(1));
  EXPECT_EQ(fake_.verify_calls(), 2);
  EXPECT_THAT(authority.Verify(Token(2, 2)), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_EQ(fake_.verify_calls(), 3);
  EXPECT_EQ(authority.GetStats().online_verifications, 3u);

  // The feed returns: local verification again, no more online calls.
  fake_.SetVerdict(grpc::StatusCode::OK);
  fake_.Resume();
  ASSERT_TRUE(PollUntil([&] { return authority.FeedFresh(); }));
  for (int i = 0; i < 10; ++i) {
    EXPECT_THAT(authority.Verify(token), IsOk());
    EXPECT_THAT(authority.Verify(Token(2, 2)), IsOk());
  }
  EXPECT_EQ(authority.GetStats().online_verifications, 3u);
  EXPECT_EQ(fake_.verify_calls(), 3);
}

TEST_F(SessionAuthorityTest, StaleFeedWithoutOnlineCacheAsksEveryTime) {
  SessionAuthorityOptions options = FastOptions();
  options.online_verify_cache = absl::ZeroDuration();
  SessionAuthority& authority = StartFresh(options);
  const std::string token = Token(1, 1);
  fake_.GoSilent(clock_.Now());
  ASSERT_TRUE(WaitForRevocations(1));
  clock_.Advance(options.stale_after);
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(authority.Verify(token), IsOk());
  }
  EXPECT_EQ(fake_.verify_calls(), 3);
}

TEST_F(SessionAuthorityTest, StaleFeedAndAuthUnavailableFailsClosed) {
  SessionAuthority& authority = StartFresh();
  const std::string token = Token(1, 1);
  fake_.GoSilent(clock_.Now());
  ASSERT_TRUE(WaitForRevocations(1));
  clock_.Advance(FastOptions().stale_after);
  fake_.SetVerdict(grpc::StatusCode::UNAVAILABLE);

  absl::StatusOr<SessionIdentity> result = authority.Verify(token);
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kUnavailable));
  ExpectNothingOfToken(result.status(), token, User(1), Session(1));
  // Not a verdict, so not reused: the next request asks again.
  EXPECT_THAT(authority.Verify(token), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(fake_.verify_calls(), 2);
}

TEST_F(SessionAuthorityTest, StaleFeedAndAuthDownFailsClosedPromptly) {
  SessionAuthority& authority = StartFresh();
  const std::string token = Token(1, 1);
  ASSERT_THAT(authority.Verify(token), IsOk());
  StopServer();
  clock_.Advance(FastOptions().stale_after);
  EXPECT_FALSE(authority.FeedFresh());

  const absl::Time start = absl::Now();
  absl::StatusOr<SessionIdentity> result = authority.Verify(token);
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kUnavailable));
  ExpectNothingOfToken(result.status(), token, User(1), Session(1));
  EXPECT_LT(absl::Now() - start, FastOptions().online_verify_deadline + absl::Milliseconds(500));
  EXPECT_GE(authority.GetStats().online_verifications, 1u);
}

TEST_F(SessionAuthorityTest, VerifiesOnlineUntilTheInitialReplayCompletes) {
  fake_.RevokeSession(Session(1), T0(), T0() + absl::Minutes(16));
  fake_.WithholdReplayComplete(true);
  SessionAuthority& authority = Build();
  authority.Start();
  ASSERT_TRUE(WaitForRevocations(1));
  EXPECT_FALSE(authority.FeedFresh());

  // A revocation already replayed is enforced without asking...
  EXPECT_THAT(authority.Verify(Token(1, 1)), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_EQ(fake_.verify_calls(), 0);
  // ...any other token is verified online until the replay is complete.
  EXPECT_THAT(authority.Verify(Token(2, 2)), IsOk());
  EXPECT_EQ(fake_.verify_calls(), 1);

  fake_.WithholdReplayComplete(false);
  ASSERT_TRUE(PollUntil([&] { return authority.FeedFresh(); }));
  EXPECT_THAT(authority.Verify(Token(3, 3)), IsOk());
  EXPECT_EQ(fake_.verify_calls(), 1);
}

TEST_F(SessionAuthorityTest, ReconnectResumesAfterTheLastSequenceSeen) {
  SessionAuthority& authority = StartFresh();
  fake_.RevokeSession(Session(1), T0(), T0() + absl::Minutes(16));
  fake_.RevokeSession(Session(2), T0(), T0() + absl::Minutes(16));
  const uint64_t third = fake_.RevokeUser(User(3), T0(), T0() + absl::Minutes(16));
  ASSERT_TRUE(WaitForRevocations(3));

  fake_.EndStreams();
  ASSERT_TRUE(PollUntil([&] { return fake_.watch_requests().size() >= 2; }));
  const std::vector<authpb::WatchRevocationsRequest> requests = fake_.watch_requests();
  EXPECT_EQ(requests[0].after_sequence(), 0u);
  EXPECT_EQ(requests[1].after_sequence(), third);
  EXPECT_EQ(requests[1].heartbeat_interval().seconds(), 0);
  EXPECT_EQ(requests[1].heartbeat_interval().nanos(), 100000000);
  EXPECT_GE(authority.GetStats().reconnects, 1u);

  // The new stream carries on, without replaying what was seen.
  fake_.RevokeSession(Session(4), T0(), T0() + absl::Minutes(16));
  ASSERT_TRUE(WaitForRevocations(4));
  EXPECT_THAT(authority.Verify(Token(4, 4)), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(authority.Verify(Token(5, 5)), IsOk());
  EXPECT_EQ(authority.GetStats().revocations, 4u);
  EXPECT_EQ(authority.GetStats().revocation_entries, 4u);
}

TEST_F(SessionAuthorityTest, SilentStreamIsAbandonedAndReopened) {
  SessionAuthorityOptions options = FastOptions();
  options.stale_after = absl::Milliseconds(300);  // real time, for the watchdog
  SessionAuthority& authority = StartFresh(options);
  fake_.GoSilent(clock_.Now());
  ASSERT_TRUE(WaitForRevocations(1));
  EXPECT_TRUE(PollUntil([&] { return fake_.watch_requests().size() >= 2; }));
  EXPECT_GE(authority.GetStats().reconnects, 1u);
  EXPECT_EQ(fake_.watch_requests().back().after_sequence(), 1u);
}

TEST_F(SessionAuthorityTest, UnknownKidRefetchesOnceAndAcceptsTheRotatedKey) {
  SessionAuthority& authority = StartFresh();
  ASSERT_THAT(authority.Verify(Token(1, 1)), IsOk());
  ASSERT_EQ(authority.GetStats().key_fetches, 1u);
  ASSERT_EQ(fake_.key_requests(), 1);

  // auth rotates: the new key signs, the old one verifies until its grace window ends.
  TestKey rotated = NewKey();
  TestKey previous = key_;
  previous.verification.current = false;
  previous.verification.not_after = T0() + absl::Minutes(20);
  fake_.PublishKeys({previous, rotated});
  const std::string new_token = SignToken(rotated, User(2), Session(2), T0());
  absl::StatusOr<SessionIdentity> identity = authority.Verify(new_token);
  ASSERT_THAT(identity, IsOk());
  EXPECT_EQ(identity->user_id, User(2));
  EXPECT_EQ(authority.GetStats().key_fetches, 2u);
  EXPECT_THAT(authority.Verify(new_token), IsOk());
  EXPECT_THAT(authority.Verify(Token(1, 1)), IsOk());
  EXPECT_THAT(authority.Verify(Token(3, 3)), IsOk());
  EXPECT_EQ(authority.GetStats().key_fetches, 2u);
  EXPECT_EQ(fake_.key_requests(), 2);
}

TEST_F(SessionAuthorityTest, UnknownKidBurstIsRateLimited) {
  const SessionAuthorityOptions options = FastOptions();
  SessionAuthority& authority = StartFresh(options);
  const uint64_t before = authority.GetStats().key_fetches;
  const TestKey unknown = NewKey();
  std::vector<std::string> tokens;
  for (int i = 0; i < 100; ++i) {
    tokens.push_back(SignToken(unknown, User(i), Session(i), T0()));
  }

  std::atomic<int> rejected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < 100; i += 4) {
        if (authority.Verify(tokens[static_cast<size_t>(i)]).status().code() ==
            absl::StatusCode::kUnauthenticated) {
          ++rejected;
        }
      }
    });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }
  EXPECT_EQ(rejected.load(), 100);
  const uint64_t burst = authority.GetStats().key_fetches - before;
  EXPECT_GE(burst, 1u);
  EXPECT_LE(burst, 2u);

  // One more refetch is allowed once min_key_refetch_interval has passed.
  const uint64_t after_burst = authority.GetStats().key_fetches;
  clock_.Advance(options.min_key_refetch_interval - absl::Milliseconds(1));
  EXPECT_THAT(authority.Verify(tokens[0]), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_EQ(authority.GetStats().key_fetches, after_burst);
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_THAT(authority.Verify(tokens[0]), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(authority.Verify(tokens[1]), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_EQ(authority.GetStats().key_fetches, after_burst + 1);
}

TEST_F(SessionAuthorityTest, RefetchesKeysWhenTheCacheTtlRunsOut) {
  fake_.SetCacheTtl(absl::Seconds(10));
  SessionAuthority& authority = StartFresh();
  const std::string old_token = Token(1, 1);
  ASSERT_THAT(authority.Verify(old_token), IsOk());
  ASSERT_EQ(authority.GetStats().key_fetches, 1u);

  // auth drops the key; the proxy notices at the next fetch, when the TTL has run out.
  const TestKey replacement = NewKey();
  fake_.PublishKeys({replacement});
  clock_.Advance(absl::Seconds(9));
  ASSERT_TRUE(PollUntil([&] { return authority.FeedFresh(); }));
  EXPECT_THAT(authority.Verify(old_token), IsOk());
  EXPECT_EQ(authority.GetStats().key_fetches, 1u);
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(PollUntil([&] { return authority.GetStats().key_fetches == 2; }));
  ASSERT_TRUE(PollUntil([&] { return !authority.Verify(old_token).ok(); }));
  EXPECT_THAT(authority.Verify(old_token), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(authority.Verify(SignToken(replacement, User(2), Session(2), T0())), IsOk());
}

TEST_F(SessionAuthorityTest, VerifiesRightAfterStartWithOneKeyFetch) {
  // The first requests race the background key fetch: they wait for it (or make it), and the
  // keys are fetched once. The feed may not be fresh yet, so auth may be asked.
  SessionAuthority& authority = Build();
  authority.Start();
  std::vector<std::thread> threads;
  std::atomic<int> accepted{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      if (authority.Verify(Token(t, t)).ok()) {
        ++accepted;
      }
    });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }
  EXPECT_EQ(accepted.load(), 4);
  EXPECT_EQ(authority.GetStats().key_fetches, 1u);
  EXPECT_EQ(fake_.key_requests(), 1);
}

TEST_F(SessionAuthorityTest, CheckSessionAppliesExpiryRevocationsAndFreshness) {
  const SessionAuthorityOptions options = FastOptions();
  SessionAuthority& authority = StartFresh(options);
  absl::StatusOr<SessionIdentity> first = authority.Verify(Token(1, 1));
  absl::StatusOr<SessionIdentity> second = authority.Verify(Token(2, 2));
  ASSERT_THAT(first, IsOk());
  ASSERT_THAT(second, IsOk());
  EXPECT_THAT(authority.CheckSession(*first), IsOk());

  SessionIdentity expired = *first;
  expired.expires_at = clock_.Now();
  EXPECT_THAT(authority.CheckSession(expired), StatusIs(absl::StatusCode::kUnauthenticated));

  fake_.RevokeSession(Session(1), T0(), T0() + absl::Minutes(16));
  fake_.RevokeUser(User(2), T0() + absl::Milliseconds(300), T0() + absl::Minutes(16));
  ASSERT_TRUE(WaitForRevocations(2));
  EXPECT_THAT(authority.CheckSession(*first), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(authority.CheckSession(*second), StatusIs(absl::StatusCode::kUnauthenticated));
  SessionIdentity reissued = *second;
  reissued.session_id = Session(3);
  reissued.issued_at = T0() + absl::Seconds(1);
  EXPECT_THAT(authority.CheckSession(reissued), IsOk());

  // Stale: no token to ask auth about, so only what is known to be revoked is UNAUTHENTICATED.
  fake_.GoSilent(clock_.Now());
  ASSERT_TRUE(WaitForRevocations(3));
  clock_.Advance(options.stale_after);
  EXPECT_THAT(authority.CheckSession(reissued), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(authority.CheckSession(*first), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_EQ(fake_.verify_calls(), 0);
}

TEST_F(SessionAuthorityTest, FollowsTheChannelProvider) {
  // A second auth replica with the same key.
  FakeAuthService other_fake(clock_);
  other_fake.PublishKeys({key_});
  tidepool::testing::LoopbackGrpcServer other =
      tidepool::testing::LoopbackGrpcServer::Start({&other_fake});
  ASSERT_NE(other.server, nullptr);
  std::unique_ptr<grpc::Server> other_server = std::move(other.server);
  std::shared_ptr<grpc::Channel> other_channel = other.channel;

  absl::Mutex mu;
  std::shared_ptr<grpc::Channel> current;  // none yet: auth is not reachable
  authority_ = std::make_unique<SessionAuthority>(
      [&]() -> std::shared_ptr<grpc::Channel> {
        absl::MutexLock lock(&mu);
        return current;
      },
      clock_, FastOptions());
  SessionAuthority& authority = *authority_;
  authority.Start();
  EXPECT_THAT(authority.Verify(Token(1, 1)), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(authority.GetStats().key_fetches, 0u);

  {
    absl::MutexLock lock(&mu);
    current = channel_;
  }
  ASSERT_TRUE(PollUntil([&] { return authority.FeedFresh(); }));
  EXPECT_THAT(authority.Verify(Token(1, 1)), IsOk());
  fake_.RevokeSession(Session(1), T0(), T0() + absl::Minutes(16));
  ASSERT_TRUE(WaitForRevocations(1));

  // auth moves: the next stream goes to the other replica, resuming where it left off.
  {
    absl::MutexLock lock(&mu);
    current = other_channel;
  }
  fake_.EndStreams();
  ASSERT_TRUE(PollUntil([&] { return other_fake.watch_requests().size() == 1; }));
  EXPECT_EQ(other_fake.watch_requests()[0].after_sequence(), 1u);
  EXPECT_THAT(authority.Verify(Token(1, 1)), StatusIs(absl::StatusCode::kUnauthenticated));

  authority_.reset();
  other_fake.ShutDown();
  other_server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
}

TEST_F(SessionAuthorityTest, UnavailableWhileNoKeysCouldBeFetched) {
  StopServer();
  SessionAuthority& authority = Build();
  authority.Start();
  EXPECT_THAT(authority.Verify(Token(1, 1)), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_FALSE(authority.FeedFresh());
}

TEST_F(SessionAuthorityTest, StopReturnsPromptlyWhileTheStreamIsOpen) {
  SessionAuthority& authority = StartFresh();
  ASSERT_EQ(fake_.open_streams(), 1);
  const absl::Time start = absl::Now();
  authority.Stop();
  const absl::Duration took = absl::Now() - start;
  EXPECT_LT(took, absl::Seconds(1));
  EXPECT_FALSE(authority.FeedFresh());
  EXPECT_TRUE(PollUntil([&] { return fake_.open_streams() == 0; }));
  authority.Stop();  // idempotent

  // Stopped: every token is verified online.
  EXPECT_THAT(authority.Verify(Token(1, 1)), IsOk());
  EXPECT_EQ(authority.GetStats().online_verifications, 1u);
}

}  // namespace
}  // namespace tidepool::proxy
