// bench/proxy: fetches a running workspace's supervisor endpoint as the browser edge does
// (WorkspaceService.GetEndpoint with the proxy's mTLS identity), so that nginx and
// configurable-http-proxy can be put in front of the same supervisor -> tool path.
//
//   tidepool_proxy_bench_endpoint --data-dir DIR --workspace WS_ID --out FILE
//
// Writes FILE (created with mode 0600, replaced if present) with three lines:
//   socket_path=<the supervisor's Unix socket>
//   credential=<the SECRET per-workspace credential, for X-Tidepool-Credential>
//   expires_unix=<when the credential stops working, seconds since the epoch>
// The credential is never written anywhere else (not to stdout, not to stderr).
// Exit codes: 0 on success, 2 for bad usage, 1 for any other failure (message on stderr).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "lib/pki.h"
#include "lib/platform_client.h"
#include "tidepool/provisioner/v1/workspace_service.grpc.pb.h"

namespace tidepool {
namespace {

namespace provpb = ::tidepool::provisioner::v1;

// Writes `contents` to `path` with mode 0600 (the file is created with that mode, never
// widened). Returns false on any error.
bool WritePrivateFile(const std::string& path, const std::string& contents) {
  ::unlink(path.c_str());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n <= 0) {
      ::close(fd);
      return false;
    }
    written += static_cast<size_t>(n);
  }
  return ::close(fd) == 0;
}

int Main(int argc, char** argv) {
  std::string data_dir;
  std::string workspace_id;
  std::string out;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--data-dir") {
      data_dir = argv[i + 1];
    } else if (flag == "--workspace") {
      workspace_id = argv[i + 1];
    } else if (flag == "--out") {
      out = argv[i + 1];
    }
  }
  if (data_dir.empty() || workspace_id.empty() || out.empty() || argc != 7) {
    std::fprintf(stderr,
                 "usage: tidepool_proxy_bench_endpoint --data-dir DIR --workspace WS_ID "
                 "--out FILE\n");
    return 2;
  }
  absl::StatusOr<TlsIdentity> identity = LoadTlsIdentity(data_dir + "/pki", "proxy");
  if (!identity.ok()) {
    std::fprintf(stderr, "proxy identity: %s\n", identity.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<RunInfo> provisioner = ReadRunInfo(data_dir, "provisioner");
  if (!provisioner.ok()) {
    std::fprintf(stderr, "provisioner: %s\n", provisioner.status().ToString().c_str());
    return 1;
  }
  auto stub = provpb::WorkspaceService::NewStub(DialPlatformService(*identity, provisioner->grpc));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  context.AddMetadata("x-tidepool-request-id", "req_bench_proxy_endpoint");
  provpb::GetEndpointRequest request;
  request.set_workspace_id(workspace_id);
  provpb::GetEndpointResponse response;
  const grpc::Status status = stub->GetEndpoint(&context, request, &response);
  if (!status.ok()) {
    std::fprintf(stderr, "GetEndpoint: code %d: %s\n", static_cast<int>(status.error_code()),
                 status.error_message().c_str());
    return 1;
  }
  if (response.unix_socket_path().empty() || response.credential().empty()) {
    std::fprintf(stderr, "GetEndpoint: no Unix socket path or no credential in the answer\n");
    return 1;
  }
  const std::string contents =
      absl::StrCat("socket_path=", response.unix_socket_path(), "\ncredential=",
                   response.credential(), "\nexpires_unix=",
                   response.credential_expire_time().seconds(), "\n");
  if (!WritePrivateFile(out, contents)) {
    std::fprintf(stderr, "cannot write %s\n", out.c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace tidepool

int main(int argc, char** argv) { return tidepool::Main(argc, argv); }
