// The audit service through a real mutual-TLS gRPC server on 127.0.0.1:0.
#include "services/audit/audit_service.h"

#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/authz.h"
#include "lib/metrics.h"
#include "lib/platform_client.h"
#include "lib/server_runner.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::audit {
namespace {

using ::testing::HasSubstr;
using ::tidepool::testing::IsOk;

common::v1::AuditEvent Event(int i) {
  common::v1::AuditEvent event;
  event.set_event_id(absl::StrCat("ev_", i));
  event.mutable_actor()->set_kind(common::v1::ACTOR_KIND_SERVICE);
  event.mutable_actor()->set_id("auth");
  event.set_action("auth.sign_in");
  event.set_outcome(common::v1::OUTCOME_SUCCESS);
  event.set_subject_user_id("u_alice");
  return event;
}

class AuditServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_THAT(EnsurePlatformPki(tmp_.Join("pki"), PlatformIdentities()), IsOk());
    config_.audit.checkpoint_append_only = false;
    const std::string data_dir = tmp_.path();
    absl::StatusOr<std::vector<HostedService>> hosted = AuditServiceDefinition().create(
        ServiceContext{config_, data_dir, clock_, *registry_, nullptr});
    ASSERT_THAT(hosted, IsOk());
    ServerRunnerOptions options;
    options.component = "audit";
    options.tls = Identity("audit");
    options.registry = registry_;
    absl::StatusOr<std::unique_ptr<ServerRunner>> runner =
        ServerRunner::Start(std::move(options), *std::move(hosted));
    ASSERT_THAT(runner, IsOk());
    runner_ = *std::move(runner);
  }

  TlsIdentity Identity(const std::string& name) {
    absl::StatusOr<TlsIdentity> id = LoadTlsIdentity(tmp_.Join("pki"), name);
    EXPECT_THAT(id, IsOk());
    return id.ok() ? *id : TlsIdentity{};
  }

  std::unique_ptr<v1::AuditService::Stub> Stub(const std::string& identity) {
    return v1::AuditService::NewStub(
        DialPlatformService(Identity(identity), absl::StrCat("127.0.0.1:", runner_->grpc_port())));
  }

  static void Deadline(grpc::ClientContext& context) {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  }

  grpc::Status Append(const std::string& identity, int first, int count,
                      v1::AppendResponse* response) {
    v1::AppendRequest request;
    for (int i = first; i < first + count; ++i) {
      *request.add_events() = Event(i);
    }
    grpc::ClientContext context;
    Deadline(context);
    return Stub(identity)->Append(&context, request, response);
  }

  tidepool::testing::ScopedTempDir tmp_;
  RealClock clock_;
  PlatformConfig config_ = DefaultPlatformConfig();
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  std::unique_ptr<ServerRunner> runner_;
};

TEST_F(AuditServiceTest, AppendStampsTheCallingService) {
  v1::AppendResponse response;
  grpc::Status status = Append("secrets", 1, 3, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(response.sequences(), ::testing::ElementsAre(1, 2, 3));
  v1::QueryRequest query;
  v1::QueryResponse page;
  grpc::ClientContext context;
  Deadline(context);
  ASSERT_TRUE(Stub("tidepoolctl")->Query(&context, query, &page).ok());
  ASSERT_EQ(page.events_size(), 3);
  EXPECT_EQ(page.events(0).source_service(), "secrets");
  EXPECT_EQ(page.events(0).sequence(), 3u);
  EXPECT_THAT(SerializeMetrics(*registry_), HasSubstr("tidepool_audit_appended_events_total 3"));
}

TEST_F(AuditServiceTest, OversizedBatchesAreRejectedWhole) {
  v1::AppendResponse response;
  grpc::Status status = Append("auth", 1, kMaxAppendBatch + 1, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::AppendRequest request;
  *request.add_events() = Event(1);
  request.mutable_events(0)->set_sequence(99);  // server-assigned
  grpc::ClientContext context;
  Deadline(context);
  status = Stub("auth")->Append(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("event 0"));
}

TEST_F(AuditServiceTest, OnlyAdministratorsReadTheTrail) {
  v1::AppendResponse appended;
  ASSERT_TRUE(Append("auth", 1, 2, &appended).ok());
  auto query = [&](const std::string& identity,
                   std::vector<std::pair<std::string, std::string>> metadata) {
    grpc::ClientContext context;
    Deadline(context);
    for (const auto& [key, value] : metadata) {
      context.AddMetadata(key, value);
    }
    v1::QueryResponse response;
    return Stub(identity)->Query(&context, v1::QueryRequest{}, &response).error_code();
  };
  EXPECT_EQ(query("tidepoolctl", {}), grpc::StatusCode::OK);
  EXPECT_EQ(query("proxy", {}), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(query("proxy", {{"x-tidepool-user-id", "u_alice"}, {"x-tidepool-role", "user"}}),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(query("proxy", {{"x-tidepool-user-id", "u_root"}, {"x-tidepool-role", "admin"}}),
            grpc::StatusCode::OK);
  // Identity metadata from any service other than the proxy is never trusted.
  EXPECT_EQ(query("auth", {{"x-tidepool-user-id", "u_root"}, {"x-tidepool-role", "admin"}}),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(query("scaler", {}), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(AuditServiceTest, ExportStreamsJsonLinesOldestFirst) {
  v1::AppendResponse appended;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(Append("auth", 1 + i * 1000, 1000, &appended).ok());
  }
  grpc::ClientContext context;
  Deadline(context);
  auto reader = Stub("tidepoolctl")->Export(&context, v1::ExportRequest{});
  v1::ExportResponse chunk;
  uint64_t expected = 1;
  int chunks = 0;
  while (reader->Read(&chunk)) {
    ++chunks;
    EXPECT_LE(chunk.json_lines().size(), 1024u * 1024u);
    std::istringstream lines(chunk.json_lines());
    std::string line;
    int count = 0;
    while (std::getline(lines, line)) {
      nlohmann::json doc = nlohmann::json::parse(line);
      ASSERT_EQ(std::stoull(doc["sequence"].get<std::string>()), expected);
      ++expected;
      ++count;
    }
    EXPECT_EQ(count, chunk.event_count());
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(expected, 3001u);
  EXPECT_GE(chunks, 1);
}

TEST_F(AuditServiceTest, VerifyAndCheckpointOverGrpc) {
  grpc::ClientContext first;
  Deadline(first);
  v1::GetCheckpointResponse checkpoint;
  EXPECT_EQ(Stub("tidepoolctl")->GetCheckpoint(&first, {}, &checkpoint).error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::AppendResponse appended;
  ASSERT_TRUE(Append("auth", 1, 1000, &appended).ok());
  grpc::ClientContext second;
  Deadline(second);
  ASSERT_TRUE(Stub("tidepoolctl")->GetCheckpoint(&second, {}, &checkpoint).ok());
  EXPECT_EQ(checkpoint.checkpoint().tree_size(), 1000u);
  EXPECT_EQ(checkpoint.checkpoint().signature().size(), 64u);
  v1::VerifyRequest request;
  request.set_start_sequence(1);
  v1::VerifyResponse verdict;
  grpc::ClientContext third;
  Deadline(third);
  ASSERT_TRUE(Stub("tidepoolctl")->Verify(&third, request, &verdict).ok());
  EXPECT_EQ(verdict.result(), v1::VERIFY_RESULT_OK);
  EXPECT_EQ(verdict.verified_record_count(), 1000u);
  EXPECT_EQ(verdict.verified_checkpoint_count(), 1u);
}

}  // namespace
}  // namespace tidepool::audit
