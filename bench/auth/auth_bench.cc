// bench/auth: session-token throughput on ONE thread, through the real SigningKeyRing (over a
// temporary SQLite database) and SessionTokenVerifier:
//   - signed/s:  SignSessionToken with the ring's current key;
//   - cold/s:    Verify with the cache disabled (base64url, JSON, Ed25519 on every call);
//   - warm/s:    Verify of the same token again and again through the verified-token cache,
//                as the proxy does for a session cookie on every request;
//   - warm, many sessions/s: the same over 10,000 distinct cached tokens.
// Prints the figures and exits non-zero if warm verification misses 100,000/s.
//
//   auth_bench [--seconds S]   (S: measuring time per figure, default 2)
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lib/clock.h"
#include "lib/sqlite_store.h"
#include "services/auth/authenticator.h"
#include "services/auth/session_token.h"
#include "services/auth/signing_key_ring.h"

namespace {

using tidepool::auth::SessionClaims;
using tidepool::auth::SessionTokenVerifier;
using tidepool::auth::SessionTokenVerifierOptions;

constexpr double kWarmTargetPerSecond = 100000;
constexpr int kBatch = 256;

std::string SessionId(int i) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::string id = "s_" + std::string(22, 'q');
  for (int d = 0; d < 4; ++d) {
    id.push_back(kAlphabet[(i >> (5 * d)) & 31]);
  }
  return id;
}

SessionClaims Claims(absl::Time now, int session) {
  return SessionClaims{
      "u_7h3kq2m4x5c6v7b2n3m4k5j6h7", SessionId(session), "user", now, now + absl::Minutes(15), ""};
}

// Runs `op` in batches until `duration` has passed; returns operations per second, or -1 if
// an operation failed.
template <typename Op>
double Measure(absl::Duration duration, Op op) {
  int64_t count = 0;
  const absl::Time start = absl::Now();
  absl::Duration elapsed;
  do {
    for (int i = 0; i < kBatch; ++i) {
      if (!op(count + i)) {
        return -1;
      }
    }
    count += kBatch;
    elapsed = absl::Now() - start;
  } while (elapsed < duration);
  return static_cast<double>(count) / absl::ToDoubleSeconds(elapsed);
}

int Fail(absl::string_view what, const absl::Status& status) {
  std::cerr << "bench failed: " << what << ": " << status << "\n";
  return 1;
}

// Measures and prints the figures using a database under `dir`. Returns the exit code.
int Run(const std::string& dir, absl::Duration duration) {
  tidepool::RealClock clock;
  absl::StatusOr<std::unique_ptr<tidepool::SqliteDb>> db =
      tidepool::SqliteDb::Open(dir + "/auth.db", tidepool::SqliteOptions{});
  if (!db.ok()) {
    return Fail("open database", db.status());
  }
  absl::StatusOr<std::unique_ptr<tidepool::auth::SigningKeyRing>> ring =
      tidepool::auth::SigningKeyRing::Open(**db, clock);
  if (!ring.ok()) {
    return Fail("open key ring", ring.status());
  }
  const tidepool::auth::SigningKey key = (*ring)->Current();
  const absl::Time now = clock.Now();
  absl::StatusOr<std::string> token = tidepool::auth::SignSessionToken(Claims(now, 0), key);
  if (!token.ok()) {
    return Fail("sign", token.status());
  }

  const SessionClaims claims = Claims(now, 1);
  const double signed_per_s = Measure(
      duration, [&](int64_t) { return tidepool::auth::SignSessionToken(claims, key).ok(); });

  SessionTokenVerifierOptions cold_options;
  cold_options.cache_capacity = 0;
  SessionTokenVerifier cold(**ring, clock, cold_options);
  const double cold_per_s = Measure(duration, [&](int64_t) { return cold.Verify(*token).ok(); });

  SessionTokenVerifier warm(**ring, clock);
  const double warm_per_s = Measure(duration, [&](int64_t) { return warm.Verify(*token).ok(); });

  constexpr int kSessions = 10000;
  std::vector<std::string> tokens;
  tokens.reserve(kSessions);
  for (int i = 0; i < kSessions; ++i) {
    absl::StatusOr<std::string> t = tidepool::auth::SignSessionToken(Claims(now, i), key);
    if (!t.ok()) {
      return Fail("sign session token", t.status());
    }
    const absl::Status verified = warm.Verify(*t).status();
    if (!verified.ok()) {
      return Fail("verify session token", verified);
    }
    tokens.push_back(*std::move(t));
  }
  const double warm_many_per_s = Measure(duration, [&](int64_t i) {
    return warm.Verify(tokens[static_cast<size_t>(i % kSessions)]).ok();
  });

  if (signed_per_s < 0 || cold_per_s < 0 || warm_per_s < 0 || warm_many_per_s < 0) {
    std::cerr << "bench failed: an operation failed during measurement\n";
    return 1;
  }
  // Local-account sign-ins, end to end through the Authenticator (scrypt at the production
  // cost ln=15, r=8, p=1; session created; token signed; audit recorded by a stand-in that
  // accepts everything, since this measures auth alone).
  class AcceptingAudit final : public tidepool::AuditEmitter {
   public:
    void Emit(tidepool::common::v1::AuditEvent) override {}
    absl::Status EmitDurable(tidepool::common::v1::AuditEvent, absl::Time) override {
      return absl::OkStatus();
    }
  } audit;
  tidepool::auth::AuthenticatorOptions auth_options;
  auth_options.dir = dir + "/authenticator";
  auth_options.admin_email = "bench@example.org";
  absl::StatusOr<std::unique_ptr<tidepool::auth::Authenticator>> auth =
      tidepool::auth::Authenticator::Open(auth_options, clock, &audit);
  if (!auth.ok()) {
    return Fail("open authenticator", auth.status());
  }
  absl::StatusOr<std::optional<std::string>> setup = (*auth)->EnsureFirstAdmin();
  if (!setup.ok() || !setup->has_value()) {
    return Fail("first admin", setup.ok() ? absl::InternalError("no setup token") : setup.status());
  }
  const std::string password = "benchmark password 2026";
  if (absl::StatusOr<tidepool::auth::Grant> grant =
          (*auth)->CompleteSetup(**setup, password, "", "127.0.0.1");
      !grant.ok()) {
    return Fail("setup", grant.status());
  }
  const double sign_in_per_s = Measure(duration, [&](int64_t) {
    return (*auth)->SignInWithPassword("bench@example.org", password, "", "127.0.0.1").ok();
  });
  if (sign_in_per_s < 0) {
    std::cerr << "bench failed: a sign-in failed during measurement\n";
    return 1;
  }
  std::cout << absl::StrFormat("local sign-ins (scrypt ln=15):     %12.1f /s\n", sign_in_per_s);

  const bool met = warm_per_s >= kWarmTargetPerSecond;
  std::cout << absl::StrFormat("session tokens signed:            %12.0f /s\n", signed_per_s)
            << absl::StrFormat("verified cold (no cache, Ed25519): %12.0f /s\n", cold_per_s)
            << absl::StrFormat("verified warm (same token, cache): %12.0f /s\n", warm_per_s)
            << absl::StrFormat("verified warm (%d sessions):  %12.0f /s\n", kSessions,
                               warm_many_per_s)
            << absl::StrFormat("warm speed-up over cold:           %12.1f x\n",
                               warm_per_s / cold_per_s)
            << "warm >= 100,000/s: " << (met ? "met" : "MISSED") << "\n";
  return met ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2;
  for (int i = 1; i < argc; i += 2) {
    if (std::string(argv[i]) != "--seconds" || i + 1 >= argc ||
        !absl::SimpleAtod(argv[i + 1], &seconds) || seconds <= 0) {
      std::cerr << "usage: auth_bench [--seconds S]\n";
      return 2;
    }
  }
  const absl::Duration duration = absl::Seconds(seconds);

  char pattern[] = "/tmp/tidepool_auth_bench_XXXXXX";
  if (::mkdtemp(pattern) == nullptr) {
    std::cerr << "bench failed: mkdtemp\n";
    return 1;
  }
  const std::string dir = pattern;
  const int rc = Run(dir, duration);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}
