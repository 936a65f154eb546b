// The scaler's gRPC surface in process, over mutual TLS with the platform's identities: input
// checks, who may see and change what, and the activity budget.
#include "services/scaler/scaler_service.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "lib/authz.h"
#include "lib/pki.h"
#include "lib/platform_client.h"
#include "lib/server_runner.h"
#include "lib/sqlite_store.h"
#include "tests/scaler/fake_platform.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/platform_call.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace tidepool::scaler {
namespace {

namespace commonpb = ::tidepool::common::v1;
using google::protobuf::util::TimeUtil;
using ::testing::HasSubstr;
using ::tidepool::testing::IsOk;

constexpr char kBobWs[] = "ws_bbbbbbbbbbbbbbbbbbbbbbbbbb";
constexpr char kBob[] = "u_bbbbbbbbbbbbbbbbbbbbbbbbbb";
constexpr char kAdmin[] = "u_cccccccccccccccccccccccccc";

class ScalerServiceTest : public ::testing::Test {
 protected:
  ScalerServiceTest() : clock_(absl::Now()), platform_(clock_) {}

  void SetUp() override {
    ASSERT_THAT(EnsurePlatformPki(tmp_.Join("pki"), PlatformIdentities()), IsOk());
    stored_ = std::make_unique<TestStore>(tmp_.Join("scaler.db"));
    ASSERT_NE(stored_->store, nullptr);
    store_ = stored_->store.get();
    engine_ = std::make_unique<IdleEngine>(IdleEngineOptions{}, *store_, platform_, clock_,
                                           nullptr, nullptr);
    platform_.Add(kWs, commonpb::WORKSPACE_STATE_RUNNING, kOwner);
    platform_.Add(kBobWs, commonpb::WORKSPACE_STATE_RUNNING, kBob);
    std::vector<HostedService> hosted;
    hosted.push_back(HostedService{
        .full_name = "tidepool.scaler.v1.ScalerService",
        .pending_note = "",
        .service = std::make_unique<ScalerServiceImpl>(
            *engine_, ActivityBudget{.burst = 5, .per_second = 0.001}),
        .on_stopped = nullptr,
        .state = nullptr});
    ServerRunnerOptions options;
    options.component = "scaler";
    options.tls = Identity("scaler");
    absl::StatusOr<std::unique_ptr<ServerRunner>> runner =
        ServerRunner::Start(std::move(options), std::move(hosted));
    ASSERT_THAT(runner, IsOk());
    runner_ = *std::move(runner);
  }

  void TearDown() override {
    if (runner_ != nullptr) runner_->Shutdown(absl::Now());
  }

  TlsIdentity Identity(const std::string& name) {
    return tidepool::testing::TestIdentity(tmp_.Join("pki"), name);
  }

  std::unique_ptr<v1::ScalerService::Stub> Stub(const std::string& identity) {
    return tidepool::testing::TestStub<v1::ScalerService>(tmp_.Join("pki"), identity, runner_->grpc_port());
  }

  using Call = tidepool::testing::PlatformCall;

  v1::ActivityRecord Record(const std::string& ws, const std::string& user) {
    v1::ActivityRecord record;
    record.set_workspace_id(ws);
    record.set_source(v1::ACTIVITY_SOURCE_HTTP);
    *record.mutable_time() = TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_.Now()));
    record.set_user_id(user);
    return record;
  }

  tidepool::testing::ScopedTempDir tmp_;
  tidepool::testing::FakeClock clock_;
  FakePlatform platform_;
  std::unique_ptr<TestStore> stored_;
  ScalerStore* store_ = nullptr;
  std::unique_ptr<IdleEngine> engine_;
  std::unique_ptr<ServerRunner> runner_;
};

TEST_F(ScalerServiceTest, ActivityIsCheckedWholeAndBudgetedPerCaller) {
  auto send = [&](const std::string& identity, std::vector<v1::ActivityRecord> records,
                  v1::RecordActivityResponse* response) {
    v1::RecordActivityRequest request;
    for (v1::ActivityRecord& record : records) *request.add_records() = std::move(record);
    Call call;
    return Stub(identity)->RecordActivity(&call.context, request, response);
  };
  v1::RecordActivityResponse response;
  grpc::Status ok = send("proxy", {Record(kWs, kOwner), Record(kWs, "")}, &response);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(response.accepted_count(), 1);
  EXPECT_EQ(response.ignored_count(), 1);  // no person behind it
  // One bad record refuses the batch, and says which.
  v1::ActivityRecord no_source = Record(kWs, kOwner);
  no_source.clear_source();
  grpc::Status refused = send("proxy", {Record(kWs, kOwner), no_source}, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(refused.error_message(), HasSubstr("record 1: source"));
  EXPECT_EQ(send("proxy", {}, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(send("proxy", {Record("ws_short", kOwner)}, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // Only the proxy, supervisors and the provisioner report activity.
  EXPECT_EQ(send("auth", {Record(kWs, kOwner)}, &response).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // The budget here is 5 calls: four are spent above (refused batches count too).
  EXPECT_TRUE(send("proxy", {Record(kWs, kOwner)}, &response).ok());
  grpc::Status throttled = send("proxy", {Record(kWs, kOwner)}, &response);
  EXPECT_EQ(throttled.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Each caller has its own.
  EXPECT_TRUE(send("provisioner", {Record(kWs, kOwner)}, &response).ok());
}

TEST_F(ScalerServiceTest, APersonSeesOnlyTheirOwnWorkspacesAndOthersLookMissing) {
  v1::GetIdleStatusResponse mine;
  {
    Call call(kOwner);
    ASSERT_TRUE(Stub("proxy")->GetIdleStatus(&call.context, {}, &mine).ok());
  }
  ASSERT_EQ(mine.statuses_size(), 1);
  EXPECT_EQ(mine.statuses(0).workspace_id(), kWs);
  auto status_of = [&](const std::string& ws) {
    v1::GetIdleStatusRequest request;
    request.add_workspace_ids(ws);
    v1::GetIdleStatusResponse response;
    Call call(kOwner);
    return Stub("proxy")->GetIdleStatus(&call.context, request, &response);
  };
  grpc::Status bobs = status_of(kBobWs);
  grpc::Status missing = status_of("ws_zzzzzzzzzzzzzzzzzzzzzzzzzz");
  EXPECT_EQ(bobs.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(bobs.error_code(), missing.error_code());
  EXPECT_EQ(bobs.error_message(), missing.error_message());
  // Decisions and runs: hers only; a job filter needs its workspace.
  v1::ListDecisionsRequest decisions;
  decisions.set_workspace_id(kBobWs);
  v1::ListDecisionsResponse listed;
  Call call(kOwner);
  EXPECT_EQ(Stub("proxy")->ListDecisions(&call.context, decisions, &listed).error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::ListJobRunsRequest runs;
  runs.set_job_id("digest");
  v1::ListJobRunsResponse run_list;
  Call runs_call(kOwner);
  EXPECT_EQ(Stub("proxy")->ListJobRuns(&runs_call.context, runs, &run_list).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // The proxy must say who it acts for.
  Call nobody;
  v1::GetIdleStatusResponse anonymous;
  EXPECT_EQ(Stub("proxy")->GetIdleStatus(&nobody.context, {}, &anonymous).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(ScalerServiceTest, AdminsSeeEverythingAPageAtATime) {
  std::vector<std::string> seen;
  std::string token;
  do {
    v1::GetIdleStatusRequest request;
    request.mutable_page()->set_page_size(1);
    request.mutable_page()->set_page_token(token);
    v1::GetIdleStatusResponse response;
    Call call(kAdmin, "admin");
    ASSERT_TRUE(Stub("proxy")->GetIdleStatus(&call.context, request, &response).ok());
    ASSERT_LE(response.statuses_size(), 1);
    for (const auto& s : response.statuses()) seen.push_back(s.workspace_id());
    token = response.page().next_page_token();
  } while (!token.empty());
  EXPECT_EQ(seen, (std::vector<std::string>{kWs, kBobWs}));
  v1::GetIdleStatusRequest bad;
  bad.mutable_page()->set_page_token("not-a-token");
  v1::GetIdleStatusResponse response;
  Call call;
  EXPECT_EQ(Stub("tidepoolctl")->GetIdleStatus(&call.context, bad, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ScalerServiceTest, PolicyPinsAndCapacityAreForAdmins) {
  v1::SetPolicyRequest set;
  *set.mutable_policy()->mutable_idle_timeout() = TimeUtil::SecondsToDuration(3600);
  v1::SetPolicyResponse set_response;
  {
    Call call(kOwner);
    EXPECT_EQ(Stub("proxy")->SetPolicy(&call.context, set, &set_response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    Call call(kAdmin, "admin");
    ASSERT_TRUE(Stub("proxy")->SetPolicy(&call.context, set, &set_response).ok());
    EXPECT_EQ(set_response.version(), 1);
  }
  v1::PinWorkspaceRequest pin;
  pin.set_workspace_id(kBobWs);
  v1::PinWorkspaceResponse pinned;
  {
    Call call(kOwner);
    EXPECT_EQ(Stub("proxy")->PinWorkspace(&call.context, pin, &pinned).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  *pin.mutable_expire_time() = TimeUtil::SecondsToTimestamp(1000);  // 1970
  {
    Call call;
    grpc::Status past = Stub("tidepoolctl")->PinWorkspace(&call.context, pin, &pinned);
    EXPECT_EQ(past.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(past.error_message(), HasSubstr("in the past"));
  }
  pin.clear_expire_time();
  pin.set_reason(std::string(300, 'r'));
  {
    Call call;
    EXPECT_EQ(Stub("tidepoolctl")->PinWorkspace(&call.context, pin, &pinned).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  pin.set_reason("release demo");
  {
    Call call;
    ASSERT_TRUE(Stub("tidepoolctl")->PinWorkspace(&call.context, pin, &pinned).ok());
    EXPECT_TRUE(pinned.status().pinned());
  }
  v1::GetCapacityReportResponse report;
  {
    Call call(kOwner);
    EXPECT_EQ(Stub("proxy")->GetCapacityReport(&call.context, {}, &report).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    Call call;
    ASSERT_TRUE(Stub("tidepoolctl")->GetCapacityReport(&call.context, {}, &report).ok());
    EXPECT_EQ(report.running_count(), 2);
    EXPECT_EQ(report.always_on_count(), 1);  // the pinned one
  }
}

TEST_F(ScalerServiceTest, TheMessageHookIsTheProxysAndChecksItsInput) {
  platform_.Transition(kWs, commonpb::WORKSPACE_STATE_SLEEPING);
  v1::WakeForMessageRequest request;
  request.set_workspace_id(kWs);
  request.set_channel("");
  v1::WakeForMessageResponse response;
  {
    Call call;
    EXPECT_EQ(Stub("proxy")->WakeForMessage(&call.context, request, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  request.set_channel("slack");
  {
    Call call;
    EXPECT_EQ(Stub("tidepoolctl")->WakeForMessage(&call.context, request, &response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    Call call;
    ASSERT_TRUE(Stub("proxy")->WakeForMessage(&call.context, request, &response).ok());
    EXPECT_TRUE(response.woke());
  }
  EXPECT_EQ(platform_.State(kWs), commonpb::WORKSPACE_STATE_RUNNING);
}

}  // namespace
}  // namespace tidepool::scaler
