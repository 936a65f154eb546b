// The secrets service through a real mutual-TLS gRPC server on 127.0.0.1:0, built by the same
// ServiceDefinition the binaries use, with a recording audit emitter and the service's log
// captured to a file. Checks who may do what (cross-user NOT_FOUND, the provisioner-only
// plaintext method), the Watch feed, rotation, process hygiene, and that a canary secret shows
// up nowhere but in the provisioner's ResolveForWorkspace answer.
#include "services/secrets/secrets_service.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/authz.h"
#include "lib/crypto/crypto.h"
#include "lib/file_util.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/platform_client.h"
#include "lib/server_runner.h"
#include "services/secrets/secret_file.h"
#include "tests/secrets/test_support.h"
#include "tests/testing/platform_call.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::secrets {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

constexpr char kAlice[] = "u_aaaaaaaaaaaaaaaaaaaaaaaaaa";
constexpr char kBob[] = "u_bbbbbbbbbbbbbbbbbbbbbbbbbb";
constexpr char kAdmin[] = "u_cccccccccccccccccccccccccc";
constexpr char kWorkspace[] = "ws_aaaaaaaaaaaaaaaaaaaaaaaaaa";
// Canaries: a key, and a URL whose encodings all differ from it (quote, backslash, '&', '%').
constexpr char kCanaryKey[] = "sk-ant-api03-CANARY7q4Zx9Lp2Wv8Rt6Yu1Io3Pa5Sd0Fg-QUOKKA";
constexpr char kCanaryUrl[] = "https://canary-host.example.org/p\"a\\th&q=1+2%41'<x>";

class SecretsServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log_fd_ =
        ::open(tmp_.Join("service.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    ASSERT_GE(log_fd_, 0);
    LogOptions log;
    log.level = LogLevel::kDebug;
    log.fd = log_fd_;
    log.component = "tidepool-secrets";
    ConfigureLogging(log);
    ASSERT_THAT(EnsurePlatformPki(tmp_.Join("pki"), PlatformIdentities()), IsOk());
    config_ = DefaultPlatformConfig();
    data_dir_ = tmp_.Join("data");
    Start();
  }

  void Start() {
    absl::StatusOr<std::vector<HostedService>> hosted = SecretsServiceDefinition().create(
        ServiceContext{config_, data_dir_, clock_, *registry_, &audit_});
    ASSERT_THAT(hosted, IsOk());
    ServerRunnerOptions options;
    options.component = "secrets";
    options.tls = Identity("secrets");
    options.registry = registry_;
    absl::StatusOr<std::unique_ptr<ServerRunner>> runner =
        ServerRunner::Start(std::move(options), *std::move(hosted));
    ASSERT_THAT(runner, IsOk());
    runner_ = *std::move(runner);
  }

  void TearDown() override {
    if (runner_ != nullptr) {
      runner_->Shutdown(absl::Now());
      runner_.reset();
    }
    ConfigureLogging(LogOptions());
    ::close(log_fd_);
  }

  TlsIdentity Identity(const std::string& name) {
    return tidepool::testing::TestIdentity(tmp_.Join("pki"), name);
  }

  std::unique_ptr<v1::SecretsService::Stub> Stub(const std::string& identity) {
    return tidepool::testing::TestStub<v1::SecretsService>(tmp_.Join("pki"), identity, runner_->grpc_port());
  }

  using Call = tidepool::testing::PlatformCall;

  grpc::Status Put(const std::string& as_user, const std::string& provider,
                   const std::string& field, const std::string& value, v1::PutResponse* response,
                   const std::string& for_user = "", int64_t expected_version = 0,
                   const std::string& role = "user") {
    v1::PutRequest request;
    request.set_user_id(for_user);
    request.set_provider_id(provider);
    request.set_field_id(field);
    request.set_value(value);
    request.set_expected_version(expected_version);
    Call call(as_user, role);
    grpc::Status status = Stub("proxy")->Put(&call.context, request, response);
    Seen(status, *response);
    return status;
  }

  grpc::Status List(const std::string& as_user, const std::string& for_user,
                    v1::ListResponse* response, const std::string& role = "user") {
    v1::ListRequest request;
    request.set_user_id(for_user);
    Call call(as_user, role);
    grpc::Status status = Stub("proxy")->List(&call.context, request, response);
    Seen(status, *response);
    return status;
  }

  grpc::Status Delete(const std::string& as_user, const std::string& for_user,
                      const std::string& provider, const std::string& field,
                      v1::DeleteResponse* response, int64_t expected_version = 0,
                      const std::string& role = "user") {
    v1::DeleteRequest request;
    request.set_user_id(for_user);
    request.set_provider_id(provider);
    request.set_field_id(field);
    request.set_expected_version(expected_version);
    Call call(as_user, role);
    grpc::Status status = Stub("proxy")->Delete(&call.context, request, response);
    Seen(status, *response);
    return status;
  }

  grpc::Status Resolve(const std::string& identity, const std::string& owner,
                       v1::ResolveForWorkspaceResponse* response) {
    v1::ResolveForWorkspaceRequest request;
    request.set_workspace_id(kWorkspace);
    request.set_owner_user_id(owner);
    request.set_profile("openclaw");
    Call call;
    return Stub(identity)->ResolveForWorkspace(&call.context, request, response);
  }

  // Everything a client saw, except the provisioner's plaintext answers.
  void Seen(const grpc::Status& status, const google::protobuf::Message& response) {
    seen_ += status.error_message();
    seen_ += status.error_details();
    seen_ += response.DebugString();
    seen_ += response.SerializeAsString();
  }

  std::string LogText() { return tidepool::testing::ReadFileOrEmpty(tmp_.Join("service.log")); }

  tidepool::testing::ScopedTempDir tmp_;
  int log_fd_ = -1;
  PlatformConfig config_;
  std::string data_dir_;
  RealClock clock_;
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  testing::RecordingAudit audit_;
  std::string seen_;
  std::unique_ptr<ServerRunner> runner_;
};

TEST_F(SecretsServiceTest, PutListAndDeleteOwnSecrets) {
  v1::PutResponse put;
  ASSERT_TRUE(Put(kAlice, "anthropic", "api_key", kCanaryKey, &put).ok());
  EXPECT_EQ(put.secret().user_id(), kAlice);
  EXPECT_EQ(put.secret().version(), 1);
  EXPECT_EQ(put.secret().fingerprint().size(), 16u);
  EXPECT_TRUE(put.applies_without_restart());
  v1::ListResponse listed;
  ASSERT_TRUE(List(kAlice, "", &listed).ok());
  ASSERT_EQ(listed.secrets_size(), 1);
  EXPECT_EQ(listed.secrets(0).provider_id(), "anthropic");
  EXPECT_EQ(listed.secrets(0).fingerprint(), put.secret().fingerprint());
  EXPECT_THAT(listed.capabilities(), ::testing::ElementsAre("model.anthropic"));
  v1::DeleteResponse deleted;
  ASSERT_TRUE(Delete(kAlice, "", "anthropic", "api_key", &deleted).ok());
  EXPECT_EQ(deleted.deleted_secrets_size(), 1);
  v1::ListResponse after;
  ASSERT_TRUE(List(kAlice, kAlice, &after).ok());
  EXPECT_EQ(after.secrets_size(), 0);
}

TEST_F(SecretsServiceTest, OtherUsersGetNotFoundExactlyAsForAMissingSecret) {
  v1::PutResponse put;
  ASSERT_TRUE(Put(kAlice, "anthropic", "api_key", kCanaryKey, &put).ok());
  std::vector<grpc::Status> refused;
  v1::ListResponse listed;
  refused.push_back(List(kBob, kAlice, &listed));
  v1::DeleteResponse deleted;
  refused.push_back(Delete(kBob, kAlice, "anthropic", "api_key", &deleted));
  refused.push_back(Delete(kBob, kAlice, "anthropic", "", &deleted));
  v1::PutResponse overwrite;
  refused.push_back(Put(kBob, "anthropic", "api_key",
                        testing::SampleValues().at("anthropic.api_key"), &overwrite, kAlice));
  // ...and what Bob gets for a secret that does not exist at all, and Alice for hers.
  refused.push_back(Delete(kBob, "", "anthropic", "api_key", &deleted));
  refused.push_back(Delete(kAlice, "", "github", "token", &deleted));
  for (const grpc::Status& status : refused) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(status.error_message(), "no such secret");
  }
  // Alice's secret is untouched; the attempts are in the audit trail.
  v1::ResolveForWorkspaceResponse resolved;
  ASSERT_TRUE(Resolve("provisioner", kAlice, &resolved).ok());
  ASSERT_EQ(resolved.secrets_size(), 1);
  EXPECT_EQ(resolved.secrets(0).value(), kCanaryKey);
  EXPECT_THAT(audit_.Actions(),
              ::testing::IsSupersetOf(
                  {"secrets.list:not_owner", "secrets.delete:not_owner", "secrets.put:not_owner"}));
}

TEST_F(SecretsServiceTest, AdminsManageOthersButNeverWriteTheirKeys) {
  v1::PutResponse put;
  ASSERT_TRUE(Put(kAlice, "anthropic", "api_key", kCanaryKey, &put).ok());
  v1::ListResponse listed;
  ASSERT_TRUE(List(kAdmin, kAlice, &listed, "admin").ok());
  EXPECT_EQ(listed.secrets_size(), 1);
  v1::PutResponse overwrite;
  EXPECT_EQ(Put(kAdmin, "anthropic", "api_key", testing::SampleValues().at("anthropic.api_key"),
                &overwrite, kAlice, 0, "admin")
                .error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::DeleteResponse deleted;
  ASSERT_TRUE(Delete(kAdmin, kAlice, "anthropic", "", &deleted, 0, "admin").ok());
  EXPECT_EQ(deleted.deleted_secrets_size(), 1);
}

TEST_F(SecretsServiceTest, TidepoolctlNamesTheUserAndTheProxyNeedsAPerson) {
  v1::PutRequest request;
  request.set_provider_id("github");
  request.set_field_id("token");
  request.set_value(testing::SampleValues().at("github.token"));
  v1::PutResponse response;
  Call missing_user;
  EXPECT_EQ(Stub("tidepoolctl")->Put(&missing_user.context, request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  request.set_user_id(kBob);
  Call cli;
  ASSERT_TRUE(Stub("tidepoolctl")->Put(&cli.context, request, &response).ok());
  EXPECT_FALSE(response.applies_without_restart());  // GH_TOKEN is read at process start
  Call anonymous;
  EXPECT_EQ(Stub("proxy")->Put(&anonymous.context, request, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  request.set_user_id("bob");
  Call malformed(kBob);
  EXPECT_EQ(Stub("proxy")->Put(&malformed.context, request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(SecretsServiceTest, OnlyTheProvisionerResolvesPlaintext) {
  v1::PutResponse put;
  ASSERT_TRUE(Put(kAlice, "anthropic", "api_key", kCanaryKey, &put).ok());
  for (const std::string& identity : PlatformIdentities()) {
    if (identity == "provisioner") {
      continue;
    }
    v1::ResolveForWorkspaceResponse response;
    grpc::Status status = Resolve(identity, kAlice, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << identity;
    Seen(status, response);
  }
  v1::ResolveForWorkspaceResponse response;
  grpc::Status status = Resolve("provisioner", kAlice, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.secrets_size(), 1);
  EXPECT_EQ(response.secrets(0).value(), kCanaryKey);
  ASSERT_EQ(response.secrets(0).targets_size(), 1);
  EXPECT_EQ(response.secrets(0).targets(0).config_entry(), "models.providers.anthropic.apiKey");
  EXPECT_TRUE(response.secrets(0).applies_without_restart());
  EXPECT_THAT(response.capabilities(), ::testing::ElementsAre("model.anthropic"));
  EXPECT_EQ(response.watch_sequence(), 1u);
  // The allowlist itself names the provisioner alone.
  absl::StatusOr<MethodAuthorizer> authorizer =
      MethodAuthorizer::ForServices({"tidepool.secrets.v1.SecretsService"});
  ASSERT_THAT(authorizer, IsOk());
  EXPECT_THAT(authorizer->AllowedCallers("/tidepool.secrets.v1.SecretsService/ResolveForWorkspace"),
              ::testing::ElementsAre("provisioner"));
  v1::ResolveForWorkspaceRequest bad;
  bad.set_workspace_id(kWorkspace);
  bad.set_owner_user_id(kAlice);
  bad.set_profile("emacs");
  Call call;
  EXPECT_EQ(Stub("provisioner")->ResolveForWorkspace(&call.context, bad, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(SecretsServiceTest, WatchReplaysThenFollowsChangesWithoutValues) {
  v1::PutResponse put;
  ASSERT_TRUE(Put(kAlice, "anthropic", "api_key", kCanaryKey, &put).ok());
  ASSERT_TRUE(
      Put(kBob, "brave", "api_key", testing::SampleValues().at("brave.api_key"), &put).ok());
  grpc::ClientContext context;
  v1::WatchRequest request;
  request.set_user_id(kAlice);
  request.set_after_sequence(0);
  std::unique_ptr<grpc::ClientReader<v1::WatchResponse>> stream =
      Stub("provisioner")->Watch(&context, request);
  v1::WatchResponse message;
  ASSERT_TRUE(stream->Read(&message));
  EXPECT_FALSE(message.has_change());
  EXPECT_EQ(message.latest_sequence(), 2u);
  ASSERT_TRUE(
      Put(kBob, "brave", "api_key", testing::SampleValues().at("brave.api_key"), &put).ok());
  v1::DeleteResponse deleted;
  ASSERT_TRUE(Delete(kAlice, "", "anthropic", "", &deleted).ok());
  ASSERT_TRUE(stream->Read(&message));  // Bob's change is filtered out
  ASSERT_TRUE(message.has_change());
  EXPECT_EQ(message.change().sequence(), 4u);
  EXPECT_EQ(message.change().kind(), v1::CHANGE_KIND_DELETE);
  EXPECT_EQ(message.change().secret().user_id(), kAlice);
  Seen(grpc::Status::OK, message);
  context.TryCancel();
  while (stream->Read(&message)) {
  }
  stream->Finish().IgnoreError();

  // Replay from a sequence, every user.
  grpc::ClientContext replay_context;
  request.set_user_id("");
  request.set_after_sequence(1);
  stream = Stub("provisioner")->Watch(&replay_context, request);
  std::vector<uint64_t> sequences;
  while (sequences.size() < 3 && stream->Read(&message)) {
    Seen(grpc::Status::OK, message);
    if (message.has_change()) {
      sequences.push_back(message.change().sequence());
    }
  }
  EXPECT_THAT(sequences, ::testing::ElementsAre(2, 3, 4));
  replay_context.TryCancel();
  while (stream->Read(&message)) {
  }
  stream->Finish().IgnoreError();
}

TEST_F(SecretsServiceTest, WatchRefusesBadRequestsAndOtherCallers) {
  for (auto [user, after, code] :
       {std::tuple{std::string("alice"), uint64_t{0}, grpc::StatusCode::INVALID_ARGUMENT},
        std::tuple{std::string(""), uint64_t{99}, grpc::StatusCode::FAILED_PRECONDITION}}) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::WatchRequest request;
    request.set_user_id(user);
    request.set_after_sequence(after);
    auto stream = Stub("provisioner")->Watch(&context, request);
    v1::WatchResponse message;
    EXPECT_FALSE(stream->Read(&message));
    EXPECT_EQ(stream->Finish().error_code(), code);
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = Stub("proxy")->Watch(&context, v1::WatchRequest());
  v1::WatchResponse message;
  EXPECT_FALSE(stream->Read(&message));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(SecretsServiceTest, GetCatalogueServesTwentyProviders) {
  v1::GetCatalogueRequest request;
  v1::GetCatalogueResponse response;
  Call call(kAlice);
  ASSERT_TRUE(Stub("proxy")->GetCatalogue(&call.context, request, &response).ok());
  EXPECT_EQ(response.providers_size(), 20);
  EXPECT_EQ(response.catalogue_version().size(), 16u);
  request.set_profile("vscode");
  Call bad(kAlice);
  EXPECT_EQ(Stub("proxy")->GetCatalogue(&bad.context, request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(SecretsServiceTest, TidepoolctlRotatesTheMasterKeyOnline) {
  v1::PutResponse put;
  ASSERT_TRUE(Put(kAlice, "anthropic", "api_key", kCanaryKey, &put).ok());
  std::string new_key(32, 'N');
  new_key[0] = '\x02';
  v1::RotateMasterKeyRequest request;
  request.set_new_key_material(new_key);
  request.set_reason("scheduled");
  v1::RotateMasterKeyResponse response;
  Call proxy_admin(kAdmin, "admin");
  EXPECT_EQ(Stub("proxy")->RotateMasterKey(&proxy_admin.context, request, &response).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  Call cli;
  grpc::Status status = Stub("tidepoolctl")->RotateMasterKey(&cli.context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.term(), 2u);
  EXPECT_EQ(response.rewrapped_data_key_count(), 1);
  v1::ResolveForWorkspaceResponse resolved;
  ASSERT_TRUE(Resolve("provisioner", kAlice, &resolved).ok());
  EXPECT_EQ(resolved.secrets(0).value(), kCanaryKey);
  // From a key file: it must be owner-only.
  const std::string path = tmp_.Join("next.key");
  std::string file_key(32, '\x91');
  file_key[5] = 'K';
  ASSERT_TRUE(tidepool::testing::WriteFile(path, crypto::HexEncode(file_key) + "\n"));
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  request.set_new_key_path(path);
  Call exposed;
  status = Stub("tidepoolctl")->RotateMasterKey(&exposed.context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("chmod 600"));
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  Call from_file;
  ASSERT_TRUE(Stub("tidepoolctl")->RotateMasterKey(&from_file.context, request, &response).ok());
  EXPECT_EQ(response.term(), 3u);
  request.clear_new_key();
  Call none;
  EXPECT_EQ(Stub("tidepoolctl")->RotateMasterKey(&none.context, request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(SecretsServiceTest, AuditOutageRefusesWritesWithUnavailable) {
  audit_.SetDown(true);
  v1::PutResponse put;
  grpc::Status status = Put(kAlice, "anthropic", "api_key", kCanaryKey, &put);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  v1::ListResponse listed;
  ASSERT_TRUE(List(kAlice, "", &listed).ok());
  EXPECT_EQ(listed.secrets_size(), 0);
}

TEST_F(SecretsServiceTest, TheProcessCannotDumpCore) {
  EXPECT_EQ(::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
  struct rlimit core {};
  ASSERT_EQ(::getrlimit(RLIMIT_CORE, &core), 0);
  EXPECT_EQ(core.rlim_cur, 0u);
  EXPECT_EQ(core.rlim_max, 0u);
}

TEST_F(SecretsServiceTest, AWrongMasterKeyKeepsTheServiceFromStarting) {
  runner_->Shutdown(absl::Now());
  runner_.reset();
  const std::string key_file = data_dir_ + "/secrets/master.key";
  ASSERT_TRUE(PathExists(key_file));
  std::string other(32, 'W');
  other[0] = '\x03';
  ASSERT_THAT(WriteSecretFile(key_file, other), IsOk());
  absl::StatusOr<std::vector<HostedService>> hosted = SecretsServiceDefinition().create(
      ServiceContext{config_, data_dir_, clock_, *registry_, &audit_});
  EXPECT_THAT(hosted, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("sealed:")));
}

TEST_F(SecretsServiceTest, AnEnvironmentKeyIsLoadedAndThenRemovedFromTheEnvironment) {
  runner_->Shutdown(absl::Now());
  runner_.reset();
  config_.secrets.master_key_env = "TIDEPOOL_SERVICE_TEST_MASTER_KEY";
  data_dir_ = tmp_.Join("env-data");
  ::setenv("TIDEPOOL_SERVICE_TEST_MASTER_KEY", crypto::HexEncode(std::string(32, '\x7f')).c_str(),
           1);
  Start();
  EXPECT_EQ(std::getenv("TIDEPOOL_SERVICE_TEST_MASTER_KEY"), nullptr);
  EXPECT_FALSE(PathExists(data_dir_ + "/secrets/master.key"));
  v1::PutResponse put;
  EXPECT_TRUE(Put(kAlice, "anthropic", "api_key", kCanaryKey, &put).ok());
}

TEST_F(SecretsServiceTest, TheCanaryAppearsNowhereButInTheProvisionersAnswer) {
  v1::PutResponse put;
  ASSERT_TRUE(Put(kAlice, "anthropic", "api_key", kCanaryKey, &put).ok());
  ASSERT_TRUE(Put(kAlice, "searxng", "url", kCanaryUrl, &put).ok());
  // Every way a value could come back: replacements, refusals, listings, the feed.
  ASSERT_TRUE(Put(kAlice, "anthropic", "api_key", kCanaryKey, &put, "", 1).ok());
  EXPECT_FALSE(Put(kAlice, "anthropic", "api_key", kCanaryKey, &put, "", 1).ok());  // ABORTED
  EXPECT_FALSE(Put(kAlice, "anthropic", "api_key", kCanaryKey, &put, "", -1).ok());
  EXPECT_FALSE(Put(kAlice, "groq", "api_key", kCanaryKey, &put).ok());  // wrong format
  EXPECT_FALSE(Put(kAlice, "anthropic", "api_key", std::string(kCanaryKey) + "\n", &put).ok());
  EXPECT_FALSE(
      Put(kAlice, "anthropic", "api_key", kCanaryKey + std::string(20000, 'z'), &put).ok());
  EXPECT_FALSE(Put(kAlice, "nope", "api_key", kCanaryKey, &put).ok());
  EXPECT_FALSE(Put(kAlice, "searxng", "url", std::string(kCanaryUrl) + "#frag", &put).ok());
  EXPECT_FALSE(Put(kBob, "anthropic", "api_key", kCanaryKey, &put, kAlice).ok());
  v1::ListResponse listed;
  ASSERT_TRUE(List(kAlice, "", &listed).ok());
  ASSERT_TRUE(List(kAdmin, kAlice, &listed, "admin").ok());
  v1::DeleteResponse deleted;
  EXPECT_FALSE(Delete(kAlice, "", "anthropic", "api_key", &deleted, 99).ok());
  grpc::ClientContext watch_context;
  v1::WatchRequest watch;
  watch.set_after_sequence(1);
  auto stream = Stub("provisioner")->Watch(&watch_context, watch);
  v1::WatchResponse message;
  for (int changes = 0; changes < 2 && stream->Read(&message);) {
    Seen(grpc::Status::OK, message);
    changes += message.has_change() ? 1 : 0;
  }
  watch_context.TryCancel();
  while (stream->Read(&message)) {
  }
  stream->Finish().IgnoreError();
  for (const char* identity : {"proxy", "scaler", "auth"}) {
    v1::ResolveForWorkspaceResponse refused;
    Seen(Resolve(identity, kAlice, &refused), refused);
  }
  // The provisioner does get the plaintext: the one surface that may carry it.
  v1::ResolveForWorkspaceResponse resolved;
  ASSERT_TRUE(Resolve("provisioner", kAlice, &resolved).ok());
  ASSERT_EQ(resolved.secrets_size(), 2);
  EXPECT_EQ(resolved.secrets(0).value(), kCanaryKey);
  EXPECT_EQ(resolved.secrets(1).value(), kCanaryUrl);
  v1::RotateMasterKeyRequest rotate;
  rotate.set_new_key_material(std::string(31, 'x') + "\x04");
  v1::RotateMasterKeyResponse rotated;
  Call cli;
  ASSERT_TRUE(Stub("tidepoolctl")->RotateMasterKey(&cli.context, rotate, &rotated).ok());
  ASSERT_TRUE(Delete(kAlice, "", "anthropic", "", &deleted).ok());

  const std::string metrics = SerializeMetrics(*registry_);
  EXPECT_THAT(metrics, HasSubstr("tidepool_secrets_operations_total"));
  const std::vector<std::pair<std::string, std::string>> surfaces = {
      {"responses and errors", seen_},
      {"audit events", audit_.AllText()},
      {"log", LogText()},
      {"metrics", metrics},
      {"database", tidepool::testing::ReadFileOrEmpty(data_dir_ + "/secrets/secrets.db") +
                       tidepool::testing::ReadFileOrEmpty(data_dir_ + "/secrets/secrets.db-wal")},
      {"keyring", tidepool::testing::ReadFileOrEmpty(data_dir_ + "/secrets/keyring")},
  };
  EXPECT_THAT(seen_, HasSubstr("does not have the expected format"));  // the refusals were seen
  EXPECT_THAT(audit_.Actions(), Contains("secrets.resolve"));
  for (const auto& [name, text] : surfaces) {
    EXPECT_FALSE(text.empty()) << name;
    for (const char* canary : {kCanaryKey, kCanaryUrl}) {
      EXPECT_THAT(testing::FindLeaks(text, canary), IsEmpty()) << name << ": " << canary;
    }
  }
}

}  // namespace
}  // namespace tidepool::secrets
