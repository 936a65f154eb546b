#pragma once

// Calling a platform service hosted in the test process, as one of the platform's identities
// (from the test's own PKI directory, made by EnsurePlatformPki).

#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "lib/pki.h"
#include "lib/platform_client.h"
#include "tests/testing/status_matchers.h"

namespace tidepool::testing {

// The identity `name` from `pki_dir`; fails the test if it cannot be loaded.
inline TlsIdentity TestIdentity(const std::string& pki_dir, const std::string& name) {
  absl::StatusOr<TlsIdentity> id = LoadTlsIdentity(pki_dir, name);
  EXPECT_THAT(id, IsOk());
  return id.ok() ? *id : TlsIdentity{};
}

// A stub of `Service` on 127.0.0.1:`port`, calling as `identity`.
template <typename Service>
std::unique_ptr<typename Service::Stub> TestStub(const std::string& pki_dir,
                                                 const std::string& identity, int port) {
  return Service::NewStub(
      DialPlatformService(TestIdentity(pki_dir, identity), absl::StrCat("127.0.0.1:", port)));
}

// A client context with a 10 s deadline; with `user`, as the proxy acting for that person.
struct PlatformCall {
  explicit PlatformCall(const std::string& user = "", const std::string& role = "user") {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!user.empty()) {
      context.AddMetadata("x-tidepool-user-id", user);
      context.AddMetadata("x-tidepool-role", role);
    }
  }
  grpc::ClientContext context;
};

}  // namespace tidepool::testing
