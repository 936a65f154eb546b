// A bad config or bad flag makes every binary exit with status 2 and one clear line.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/platform_fixture.h"
#include "tests/testing/status_matchers.h"

namespace tidepool {
namespace {

using ::testing::HasSubstr;
using ::tidepool::testing::BinaryPath;
using ::tidepool::testing::IsOk;

class BadConfigTest : public ::testing::Test {
 protected:
  // Runs `argv` and expects exit 2 with exactly one plain (non-JSON) stderr line, containing
  // `expect`. Structured JSON log lines from services that had started before the failure
  // may accompany it; a config or flag error fails before anything logs at all.
  void ExpectUsageError(const std::vector<std::string>& argv, const std::string& expect,
                        bool allow_logs = false) {
    absl::StatusOr<tidepool::testing::CommandResult> result =
        tidepool::testing::RunCommand(argv, tmp_.path(), absl::Seconds(20));
    ASSERT_THAT(result, IsOk());
    EXPECT_EQ(result->exit_code, 2) << result->out << result->err;
    std::vector<std::string> plain;
    for (absl::string_view line : absl::StrSplit(result->err, '\n', absl::SkipWhitespace())) {
      if (!(allow_logs && absl::StartsWith(line, "{\"ts\":"))) {
        plain.emplace_back(line);
      }
    }
    ASSERT_EQ(plain.size(), 1u) << result->err;
    EXPECT_THAT(plain[0], HasSubstr(expect));
  }

  std::string Write(const std::string& yaml) {
    const std::string path = tmp_.Join("tidepool.yaml");
    EXPECT_TRUE(tidepool::testing::WriteFile(path, yaml));
    return path;
  }

  std::vector<std::string> Up(const std::string& config) {
    return {BinaryPath("tidepool"), "up", "--config", config, "--data-dir", tmp_.Join("data")};
  }

  // `tidepool up` with every service on free ports and `provisioner_lines` ("  key: value\n")
  // in the provisioner's section; what it printed and how it exited.
  absl::StatusOr<tidepool::testing::CommandResult> UpWithProvisioner(
      const std::string& provisioner_lines) {
    std::string config = "log:\n  level: info\n";
    for (const char* svc : {"auth", "provisioner", "secrets", "proxy", "scaler", "audit"}) {
      config += absl::StrCat(svc, ":\n  grpc_port: 0\n  metrics_port: 0\n");
      if (std::string(svc) == "provisioner") config += provisioner_lines;
    }
    config += "  checkpoint_append_only: false\n";  // audit: removable with the temp dir
    return tidepool::testing::RunCommand(Up(Write(config)), tmp_.path(), absl::Seconds(20));
  }

  tidepool::testing::ScopedTempDir tmp_;
};

TEST_F(BadConfigTest, UnknownKey) {
  const std::string path = Write("auth:\n  grpc_prot: 7401\n");
  ExpectUsageError(Up(path), absl::StrCat(path, ":2: 'auth.grpc_prot' is not a known setting"));
}

TEST_F(BadConfigTest, WrongType) {
  const std::string path = Write("scaler:\n  metrics_port: lots\n");
  ExpectUsageError(Up(path), absl::StrCat(path, ":2: 'scaler.metrics_port' must be an integer"));
}

TEST_F(BadConfigTest, MissingFile) {
  ExpectUsageError(Up(tmp_.Join("absent.yaml")),
                   absl::StrCat("config file ", tmp_.Join("absent.yaml"), " does not exist"));
}

TEST_F(BadConfigTest, UnreadableFile) {
  ExpectUsageError(Up(tmp_.path()), absl::StrCat("cannot read config file ", tmp_.path()));
}

TEST_F(BadConfigTest, MalformedYaml) {
  const std::string path = Write("auth: {grpc_port: 1\n");
  ExpectUsageError(Up(path), absl::StrCat(path, ":"));
}

TEST_F(BadConfigTest, PortOutOfRange) {
  const std::string path = Write("proxy:\n  grpc_port: 65536\n");
  ExpectUsageError(Up(path), "'proxy.grpc_port' must be an integer in [0, 65535], got 65536");
}

TEST_F(BadConfigTest, PortUsedTwice) {
  const std::string path = Write("audit:\n  grpc_port: 7999\nauth:\n  grpc_port: 7999\n");
  ExpectUsageError(Up(path), "both use port 7999");
}

TEST_F(BadConfigTest, PortAlreadyTaken) {
  // Hold a port, then ask the platform to listen on it.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  std::string config = "log:\n  level: info\n";
  for (const char* svc : {"auth", "provisioner", "secrets", "proxy", "audit"}) {
    config += absl::StrCat(svc, ":\n  grpc_port: 0\n  metrics_port: 0\n");
  }
  config += "  checkpoint_append_only: false\n";  // audit: removable with the temp dir
  config += absl::StrCat("scaler:\n  grpc_port: 0\n  metrics_port: ", port, "\n");
  ExpectUsageError(Up(Write(config)), absl::StrCat("cannot listen on 127.0.0.1:", port),
                   /*allow_logs=*/true);
  ::close(fd);
}

// The OpenClaw profile as the default needs the administrator's model server: without it the
// platform does not start, and says which settings are missing.
TEST_F(BadConfigTest, TheOpenClawProfileWithoutAModelServer) {
  absl::StatusOr<tidepool::testing::CommandResult> result =
      UpWithProvisioner("  default_profile: openclaw\n  hard_disk_quota: false\n");
  ASSERT_THAT(result, IsOk());
  EXPECT_NE(result->exit_code, 0) << result->out;
  EXPECT_THAT(result->err,
              HasSubstr("tidepool: provisioner: provisioner.default_profile \"openclaw\" needs the "
                        "administrator's model server: set model_server.base_url"));
}

TEST_F(BadConfigTest, ARootProvisionerWhoseSandboxUserDoesNotExist) {
  if (::geteuid() != 0) GTEST_SKIP() << "only a root provisioner has a sandbox user";
  absl::StatusOr<tidepool::testing::CommandResult> result =
      UpWithProvisioner("  sandbox_user: no-such-sandbox-user\n  hard_disk_quota: false\n");
  ASSERT_THAT(result, IsOk());
  EXPECT_NE(result->exit_code, 0) << result->out;
  EXPECT_THAT(result->err, HasSubstr("tidepool: provisioner: provisioner.sandbox_user "
                                     "\"no-such-sandbox-user\" does not exist on this host"));
  EXPECT_THAT(result->err, HasSubstr("useradd --system"));
}

TEST_F(BadConfigTest, GrpcPortOfARunningInstanceIsRefused) {
  // A second platform asked to use the first one's gRPC port must refuse to start rather
  // than share the port (gRPC would otherwise bind it with SO_REUSEPORT).
  absl::StatusOr<std::unique_ptr<tidepool::testing::RunningPlatform>> first =
      tidepool::testing::RunningPlatform::Start({{BinaryPath("tidepool-audit")}}, {"audit"});
  ASSERT_THAT(first, IsOk());
  absl::StatusOr<RunInfo> info = (*first)->Info("audit");
  ASSERT_THAT(info, IsOk());
  const std::string port = info->grpc.substr(info->grpc.rfind(':') + 1);
  const std::string path = Write(absl::StrCat(
      "audit:\n  grpc_port: ", port, "\n  metrics_port: 0\n  checkpoint_append_only: false\n"));
  ExpectUsageError({BinaryPath("tidepool-audit"), "--config", path, "--data-dir", tmp_.Join("d")},
                   absl::StrCat("cannot listen for gRPC on 127.0.0.1:", port));
}

TEST_F(BadConfigTest, UnknownFlag) {
  ExpectUsageError({BinaryPath("tidepool"), "up", "--bogus"}, "unknown argument \"--bogus\"");
  ExpectUsageError({BinaryPath("tidepool-auth"), "--config"}, "--config needs a value");
  ExpectUsageError({BinaryPath("tidepool"), "launch"}, "unknown command \"launch\"");
}

TEST_F(BadConfigTest, SingleServiceBinaryAndConfigCheckAgree) {
  const std::string path = Write("log:\n  level: chatty\n");
  ExpectUsageError({BinaryPath("tidepool-audit"), "--config", path, "--data-dir", tmp_.Join("d")},
                   "'log.level' must be one of debug, info, warning, error");
  ExpectUsageError({BinaryPath("tidepool"), "config", "check", "--config", path},
                   "'log.level' must be one of");
  absl::StatusOr<tidepool::testing::CommandResult> ok = tidepool::testing::RunCommand(
      {BinaryPath("tidepool"), "config", "check", "--config", Write("log:\n  level: debug\n")},
      tmp_.path());
  ASSERT_THAT(ok, IsOk());
  EXPECT_EQ(ok->exit_code, 0);
  EXPECT_THAT(ok->out, HasSubstr(": ok"));
}

}  // namespace
}  // namespace tidepool
