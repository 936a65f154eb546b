// The real `tidepool up` (and the six single-service binaries) checked from this separate
// client process: health, reflection, metrics through promtool, tidepoolctl, and shutdown.
#include <signal.h>

#include <filesystem>
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "lib/platform_client.h"
#include "lib/platform_config.h"
#include "nlohmann/json.hpp"
#include "tests/integration/platform_fixture.h"
#include "tests/testing/http_get.h"
#include "tests/testing/status_matchers.h"
#include "tidepool/audit/v1/audit_service.grpc.pb.h"
#include "tidepool/scaler/v1/scaler_service.grpc.pb.h"
#include "tidepool/secrets/v1/secrets_service.grpc.pb.h"

namespace tidepool {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsSupersetOf;
using ::tidepool::testing::BinaryPath;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::RunningPlatform;

using grpc::health::v1::HealthCheckResponse;

std::chrono::system_clock::time_point In(absl::Duration d) {
  return absl::ToChronoTime(absl::Now() + d);
}

grpc::Status Check(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                   HealthCheckResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(In(absl::Seconds(5)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  return grpc::health::v1::Health::NewStub(channel)->Check(&context, request, response);
}

absl::StatusOr<std::vector<std::string>> ListServices(
    const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext context;
  context.set_deadline(In(absl::Seconds(5)));
  auto stream =
      grpc::reflection::v1alpha::ServerReflection::NewStub(channel)->ServerReflectionInfo(&context);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("*");
  if (!stream->Write(request)) {
    return absl::UnavailableError("reflection write failed");
  }
  stream->WritesDone();
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  std::vector<std::string> names;
  while (stream->Read(&response)) {
    for (const auto& service : response.list_services_response().service()) {
      names.push_back(service.name());
    }
  }
  grpc::Status status = stream->Finish();
  if (!status.ok()) {
    return absl::UnavailableError(status.error_message());
  }
  return names;
}

const std::vector<std::string>& TidepoolServices() {
  static const std::vector<std::string>* names = new std::vector<std::string>{
      "tidepool.audit.v1.AuditService",     "tidepool.auth.v1.AuthService",
      "tidepool.secrets.v1.SecretsService", "tidepool.provisioner.v1.WorkspaceService",
      "tidepool.scaler.v1.ScalerService",   "tidepool.proxy.v1.ProxyAdminService"};
  return *names;
}

class TidepoolUpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<RunningPlatform>> platform =
        RunningPlatform::Start({{BinaryPath("tidepool"), "up"}}, ServiceNames());
    ASSERT_THAT(platform, IsOk());
    platform_ = *std::move(platform);
    absl::StatusOr<TlsIdentity> cli = platform_->CliIdentity();
    ASSERT_THAT(cli, IsOk());
    cli_ = *cli;
  }

  std::shared_ptr<grpc::Channel> Dial(const std::string& service) {
    absl::StatusOr<RunInfo> info = platform_->Info(service);
    EXPECT_THAT(info, IsOk());
    return DialPlatformService(cli_, info.ok() ? info->grpc : "127.0.0.1:1");
  }

  std::unique_ptr<RunningPlatform> platform_;
  TlsIdentity cli_;
};

TEST_F(TidepoolUpTest, HealthReportsServingForEveryServiceByFullName) {
  for (const std::string& service : ServiceNames()) {
    absl::StatusOr<RunInfo> info = platform_->Info(service);
    ASSERT_THAT(info, IsOk());
    ASSERT_EQ(info->full_names.size(), 1u);
    HealthCheckResponse response;
    grpc::Status status = Check(Dial(service), info->full_names[0], &response);
    ASSERT_TRUE(status.ok()) << service << ": " << status.error_message();
    EXPECT_EQ(response.status(), HealthCheckResponse::SERVING) << service;
    status = Check(Dial(service), "", &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  }
}

TEST_F(TidepoolUpTest, ReflectionListsEveryTidepoolService) {
  std::set<std::string> all;
  for (const std::string& service : ServiceNames()) {
    absl::StatusOr<std::vector<std::string>> names = ListServices(Dial(service));
    ASSERT_THAT(names, IsOk()) << service;
    EXPECT_THAT(*names, Contains("grpc.health.v1.Health")) << service;
    EXPECT_THAT(*names, Contains("grpc.reflection.v1alpha.ServerReflection")) << service;
    all.insert(names->begin(), names->end());
  }
  EXPECT_THAT(all, IsSupersetOf(TidepoolServices()));
}

TEST_F(TidepoolUpTest, EveryMetricsPagePassesPromtool) {
  for (const std::string& service : ServiceNames()) {
    // Make at least one RPC so the per-RPC families have samples.
    HealthCheckResponse response;
    ASSERT_TRUE(Check(Dial(service), "", &response).ok());
    absl::StatusOr<RunInfo> info = platform_->Info(service);
    ASSERT_THAT(info, IsOk());
    absl::StatusOr<tidepool::testing::HttpResponse> page =
        tidepool::testing::HttpGet(info->metrics, "/metrics");
    ASSERT_THAT(page, IsOk());
    ASSERT_EQ(page->status, 200);
    EXPECT_THAT(page->body, HasSubstr("tidepool_grpc_server_handled_total{"));
    const std::string file = platform_->log_dir() + "/" + service + ".metrics";
    ASSERT_TRUE(tidepool::testing::WriteFile(file, page->body));
    absl::StatusOr<tidepool::testing::CommandResult> lint = tidepool::testing::RunCommand(
        {"/bin/sh", "-c", "promtool check metrics < \"$0\"", file}, platform_->log_dir());
    ASSERT_THAT(lint, IsOk());
    EXPECT_EQ(lint->exit_code, 0) << service << ":\n" << lint->out << lint->err;
    for (const char* probe : {"/healthz", "/readyz"}) {
      absl::StatusOr<tidepool::testing::HttpResponse> ok =
          tidepool::testing::HttpGet(info->metrics, probe);
      ASSERT_THAT(ok, IsOk());
      EXPECT_EQ(ok->status, 200) << service << probe;
    }
  }
}

TEST_F(TidepoolUpTest, TidepoolctlRunsAWorkspaceThroughItsLifecycle) {
  auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), BinaryPath("tidepoolctl"));
    args.push_back("--data-dir");
    args.push_back(platform_->data_dir());
    absl::StatusOr<tidepool::testing::CommandResult> result =
        tidepool::testing::RunCommand(args, platform_->log_dir(), absl::Seconds(90));
    EXPECT_THAT(result, IsOk());
    return result.ok() ? *result : tidepool::testing::CommandResult{};
  };
  // The first administrator exists from the first start.
  tidepool::testing::CommandResult users = ctl({"users", "list"});
  ASSERT_EQ(users.exit_code, 0) << users.err;
  const size_t at = users.out.find("u_");
  ASSERT_NE(at, std::string::npos) << users.out;
  const std::string owner = users.out.substr(at, 28);
  tidepool::testing::CommandResult ensured = ctl({"workspaces", "ensure", "--owner", owner, "--wait"});
  ASSERT_EQ(ensured.exit_code, 0) << ensured.err;
  EXPECT_THAT(ensured.out, HasSubstr("running"));
  const std::string workspace = ensured.out.substr(0, ensured.out.find(' '));
  tidepool::testing::CommandResult usage = ctl({"workspaces", "usage", "--workspace", workspace});
  EXPECT_EQ(usage.exit_code, 0) << usage.err;
  EXPECT_THAT(usage.out, HasSubstr("of 1024 MiB"));
  // The scaler says why it is awake, and an admin can pin it.
  tidepool::testing::CommandResult idle = ctl({"workspaces", "idle"});
  ASSERT_EQ(idle.exit_code, 0) << idle.err;
  EXPECT_THAT(idle.out, ::testing::ContainsRegex(workspace + " +" + owner + " +running"));
  EXPECT_THAT(idle.out, HasSubstr("grace-after-wake"));
  tidepool::testing::CommandResult pinned =
      ctl({"scaler", "pin", "--workspace", workspace, "--for", "2h", "--reason", "demo"});
  ASSERT_EQ(pinned.exit_code, 0) << pinned.err;
  EXPECT_THAT(ctl({"workspaces", "idle", "--workspace", workspace}).out, HasSubstr("pinned"));
  EXPECT_EQ(ctl({"scaler", "unpin", "--workspace", workspace}).exit_code, 0);
  tidepool::testing::CommandResult bad_policy = ctl({"scaler", "set-policy", "--idle-timeout", "10s"});
  EXPECT_EQ(bad_policy.exit_code, 1);
  EXPECT_THAT(bad_policy.err, HasSubstr("idle_timeout must be between 1 minute and 7 days"));
  tidepool::testing::CommandResult policy = ctl({"scaler", "set-policy", "--idle-timeout", "45m"});
  EXPECT_EQ(policy.exit_code, 0) << policy.err;
  EXPECT_THAT(policy.out, HasSubstr("idle timeout 45m"));
  tidepool::testing::CommandResult capacity = ctl({"scaler", "capacity"});
  EXPECT_EQ(capacity.exit_code, 0) << capacity.err;
  EXPECT_THAT(capacity.out, HasSubstr("running 1"));
  tidepool::testing::CommandResult refused = ctl({"workspaces", "delete", "--workspace", workspace});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("confirm_workspace_id"));
  tidepool::testing::CommandResult deleted =
      ctl({"workspaces", "delete", "--workspace", workspace, "--confirm", workspace});
  EXPECT_EQ(deleted.exit_code, 0) << deleted.err;
  // Wait until the sandbox is gone (nothing may outlive the test).
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  std::string listed;
  while (absl::Now() < deadline) {
    listed = ctl({"workspaces", "list"}).out;
    if (listed.find("deleted       deleted") != std::string::npos) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_THAT(listed, HasSubstr("deleted       deleted"));
}

TEST_F(TidepoolUpTest, TidepoolctlStatusFindsThePlatformFromTheDataDir) {
  absl::StatusOr<tidepool::testing::CommandResult> json = tidepool::testing::RunCommand(
      {BinaryPath("tidepoolctl"), "status", "--json", "--data-dir", platform_->data_dir()},
      platform_->log_dir());
  ASSERT_THAT(json, IsOk());
  EXPECT_EQ(json->exit_code, 0) << json->out << json->err;
  nlohmann::json doc = nlohmann::json::parse(json->out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << json->out;
  EXPECT_EQ(doc["all_serving"], true);
  ASSERT_EQ(doc["services"].size(), ServiceNames().size());
  for (const auto& item : doc["services"]) {
    EXPECT_EQ(item["state"], "SERVING") << item.dump();
  }

  absl::StatusOr<tidepool::testing::CommandResult> table = tidepool::testing::RunCommand(
      {BinaryPath("tidepoolctl"), "status", "--data-dir", platform_->data_dir()},
      platform_->log_dir());
  ASSERT_THAT(table, IsOk());
  EXPECT_EQ(table->exit_code, 0);
  EXPECT_THAT(table->out, HasSubstr("SERVICE"));
  for (const std::string& service : ServiceNames()) {
    EXPECT_THAT(table->out, ::testing::ContainsRegex(service + " +SERVING"));
  }
}

TEST_F(TidepoolUpTest, SigtermStopsEverythingWithinFiveSeconds) {
  auto& process = platform_->processes().front();
  const absl::Time start = absl::Now();
  ASSERT_TRUE(process->Signal(SIGTERM));
  absl::StatusOr<int> code = process->Wait(absl::Seconds(5));
  ASSERT_THAT(code, IsOk()) << "still running 5 s after SIGTERM";
  EXPECT_EQ(*code, 0) << process->Stderr();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  for (const std::string& service : ServiceNames()) {
    EXPECT_FALSE(std::filesystem::exists(RunFilePath(platform_->data_dir(), service))) << service;
  }
  // tidepoolctl now reports the platform as not running, with a failing exit code.
  absl::StatusOr<tidepool::testing::CommandResult> status = tidepool::testing::RunCommand(
      {BinaryPath("tidepoolctl"), "status", "--data-dir", platform_->data_dir()},
      platform_->log_dir());
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->exit_code, 1);
  EXPECT_THAT(status->out, HasSubstr("NOT_RUNNING"));
}

TEST_F(TidepoolUpTest, SigintAlsoStopsCleanly) {
  auto& process = platform_->processes().front();
  ASSERT_TRUE(process->Signal(SIGINT));
  absl::StatusOr<int> code = process->Wait(absl::Seconds(5));
  ASSERT_THAT(code, IsOk());
  EXPECT_EQ(*code, 0);
}

TEST_F(TidepoolUpTest, PrintsWhereEverythingIs) {
  const std::string out = platform_->processes().front()->Stdout();
  for (const std::string& service : ServiceNames()) {
    absl::StatusOr<RunInfo> info = platform_->Info(service);
    ASSERT_THAT(info, IsOk());
    EXPECT_THAT(out, HasSubstr(info->grpc)) << out;
    EXPECT_THAT(out, HasSubstr("http://" + info->metrics + "/metrics")) << out;
  }
  EXPECT_THAT(out, HasSubstr(platform_->data_dir()));
  // Structured logs go to stderr as JSON lines.
  const std::string err = platform_->processes().front()->Stderr();
  std::istringstream lines(err);
  std::string line;
  int parsed = 0;
  while (std::getline(lines, line)) {
    EXPECT_TRUE(nlohmann::json::accept(line)) << line;
    ++parsed;
  }
  EXPECT_GE(parsed, 6);
}

TEST_F(TidepoolUpTest, FirstStartPrintsTheSetupLinkOnStandardOutputOnly) {
  const std::string out = platform_->processes().front()->Stdout();
  EXPECT_THAT(out, ::testing::ContainsRegex("http://127.0.0.1:8080/setup#tps_[a-z2-7]{52}"));
  // Never in the structured log.
  EXPECT_THAT(platform_->processes().front()->Stderr(), ::testing::Not(HasSubstr("tps_")));
}

TEST_F(TidepoolUpTest, TidepoolctlManagesUsersAndInvites) {
  auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), BinaryPath("tidepoolctl"));
    args.push_back("--data-dir");
    args.push_back(platform_->data_dir());
    absl::StatusOr<tidepool::testing::CommandResult> result =
        tidepool::testing::RunCommand(args, platform_->log_dir());
    EXPECT_THAT(result, IsOk());
    return result.ok() ? *result : tidepool::testing::CommandResult{};
  };
  tidepool::testing::CommandResult users = ctl({"users", "list"});
  ASSERT_EQ(users.exit_code, 0) << users.err;
  EXPECT_THAT(users.out,
              ::testing::ContainsRegex("u_[a-z2-7]{26} +admin@tidepool.local +admin +active"));
  tidepool::testing::CommandResult invite =
      ctl({"invites", "create", "--max-uses", "2", "--domain", "example.org"});
  ASSERT_EQ(invite.exit_code, 0) << invite.err;
  EXPECT_THAT(invite.out, ::testing::ContainsRegex("code \\(shown once\\): tpi_[a-z2-7]{32}"));
  tidepool::testing::CommandResult invites = ctl({"invites", "list"});
  ASSERT_EQ(invites.exit_code, 0) << invites.err;
  EXPECT_THAT(invites.out, HasSubstr("ACTIVE     0/2"));
  EXPECT_THAT(invites.out, ::testing::Not(HasSubstr("tpi_")));
  // The only administrator cannot be suspended.
  const std::string admin_id = users.out.substr(users.out.find("u_"), 28);
  tidepool::testing::CommandResult suspend = ctl({"users", "suspend", "--user", admin_id});
  EXPECT_EQ(suspend.exit_code, 1);
  EXPECT_THAT(suspend.err, HasSubstr("last active administrator"));
  EXPECT_EQ(ctl({"users", "set-role", "--user", admin_id, "--role", "owner"}).exit_code, 2);
  // Each of these is in the audit trail.
  tidepool::testing::CommandResult audit = ctl({"audit", "query", "--action", "admin"});
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  EXPECT_THAT(audit.out, HasSubstr("admin.invite_created"));
  EXPECT_THAT(audit.out, HasSubstr("admin.first_admin_created"));
}

TEST(StandaloneBinariesTest, EachServiceRunsAsItsOwnProcess) {
  std::vector<std::vector<std::string>> commands;
  for (const std::string& service : ServiceNames()) {
    commands.push_back({BinaryPath("tidepool-" + service)});
  }
  absl::StatusOr<std::unique_ptr<RunningPlatform>> platform =
      RunningPlatform::Start(commands, ServiceNames());
  ASSERT_THAT(platform, IsOk());
  // Six processes generated one CA between them (they share the data dir's PKI lock).
  absl::StatusOr<tidepool::testing::CommandResult> status = tidepool::testing::RunCommand(
      {BinaryPath("tidepoolctl"), "status", "--json", "--data-dir", (*platform)->data_dir()},
      (*platform)->log_dir());
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(status->exit_code, 0) << status->out << status->err;
  std::set<int64_t> pids;
  for (const std::string& service : ServiceNames()) {
    absl::StatusOr<RunInfo> info = (*platform)->Info(service);
    ASSERT_THAT(info, IsOk());
    pids.insert(info->pid);
  }
  EXPECT_EQ(pids.size(), ServiceNames().size());
  for (auto& process : (*platform)->processes()) {
    ASSERT_TRUE(process->Signal(SIGTERM));
    absl::StatusOr<int> code = process->Wait(absl::Seconds(5));
    ASSERT_THAT(code, IsOk());
    EXPECT_EQ(*code, 0);
  }
}

}  // namespace
}  // namespace tidepool
