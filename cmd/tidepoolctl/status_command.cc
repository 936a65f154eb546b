#include "cmd/tidepoolctl/status_command.h"

#include <cstdio>
#include <ostream>

#include "absl/strings/str_format.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "lib/cli_flags.h"
#include "lib/platform_client.h"
#include "lib/platform_config.h"
#include "nlohmann/json.hpp"

namespace tidepool::ctl {
namespace {

std::string DefaultFullName(const std::string& service) {
  if (service == "provisioner") {
    return "tidepool.provisioner.v1.WorkspaceService";
  }
  if (service == "proxy") {
    return "tidepool.proxy.v1.ProxyAdminService";
  }
  std::string cls = service;
  cls[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(cls[0])));
  return absl::StrFormat("tidepool.%s.v1.%sService", service, cls);
}

}  // namespace

absl::StatusOr<std::vector<ServiceStatus>> CheckPlatformStatus(const std::string& data_dir,
                                                               const std::string& tls_dir,
                                                               absl::Duration timeout) {
  absl::StatusOr<TlsIdentity> self = LoadTlsIdentity(tls_dir, "tidepoolctl");
  if (!self.ok()) {
    return self.status();
  }
  std::vector<ServiceStatus> statuses;
  for (const std::string& name : ServiceNames()) {
    ServiceStatus status;
    status.service = name;
    status.full_name = DefaultFullName(name);
    absl::StatusOr<RunInfo> info = ReadRunInfo(data_dir, name);
    if (!info.ok()) {
      status.state =
          info.status().code() == absl::StatusCode::kNotFound ? "NOT_RUNNING" : "UNKNOWN";
      status.detail = std::string(info.status().message());
      statuses.push_back(std::move(status));
      continue;
    }
    if (!info->full_names.empty()) {
      status.full_name = info->full_names.front();
    }
    status.grpc = info->grpc;
    status.metrics = info->metrics;
    status.pid = info->pid;
    auto stub = grpc::health::v1::Health::NewStub(DialPlatformService(*self, info->grpc));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(status.full_name);
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status rpc = stub->Check(&context, request, &response);
    if (!rpc.ok()) {
      status.state = "UNREACHABLE";
      status.detail = rpc.error_message();
    } else {
      status.state = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
    }
    statuses.push_back(std::move(status));
  }
  return statuses;
}

void PrintStatusTable(const std::vector<ServiceStatus>& statuses, std::ostream& out) {
  out << absl::StrFormat("%-12s %-12s %-22s %-22s %-8s %s\n", "SERVICE", "STATE", "GRPC", "METRICS",
                         "PID", "DETAIL");
  for (const ServiceStatus& s : statuses) {
    out << absl::StrFormat("%-12s %-12s %-22s %-22s %-8s %s\n", s.service, s.state,
                           s.grpc.empty() ? "-" : s.grpc, s.metrics.empty() ? "-" : s.metrics,
                           s.pid == 0 ? "-" : std::to_string(s.pid), s.detail);
  }
}

void PrintStatusJson(const std::vector<ServiceStatus>& statuses, std::ostream& out) {
  nlohmann::json doc;
  doc["services"] = nlohmann::json::array();
  bool all_serving = true;
  for (const ServiceStatus& s : statuses) {
    nlohmann::json item;
    item["service"] = s.service;
    item["full_name"] = s.full_name;
    item["state"] = s.state;
    item["grpc"] = s.grpc;
    item["metrics"] = s.metrics;
    item["pid"] = s.pid;
    item["detail"] = s.detail;
    doc["services"].push_back(std::move(item));
    all_serving = all_serving && s.state == "SERVING";
  }
  doc["all_serving"] = all_serving;
  out << doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

int StatusCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  bool json = false;
  absl::Duration timeout = absl::Seconds(2);
  std::vector<std::string> server_args;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--json") {
      json = true;
    } else if (args[i] == "--timeout" && i + 1 < args.size()) {
      if (!absl::ParseDuration(args[++i], &timeout) || timeout <= absl::ZeroDuration()) {
        err << "tidepoolctl status: --timeout must be a duration such as 2s\n";
        return kExitUsage;
      }
    } else {
      server_args.push_back(args[i]);
    }
  }
  absl::StatusOr<ServerFlags> flags = ParseServerFlags(server_args);
  if (!flags.ok()) {
    err << "tidepoolctl status: " << flags.status().message() << "\n";
    return kExitUsage;
  }
  std::string data_dir;
  absl::StatusOr<PlatformConfig> config = LoadConfigForFlags(*flags, &data_dir);
  if (!config.ok()) {
    err << "tidepoolctl: config error: " << config.status().message() << "\n";
    return kExitUsage;
  }
  absl::StatusOr<std::vector<ServiceStatus>> statuses =
      CheckPlatformStatus(data_dir, TlsDir(*config, data_dir), timeout);
  if (!statuses.ok()) {
    err << "tidepoolctl: " << statuses.status().message() << "\n";
    return kExitFailure;
  }
  if (json) {
    PrintStatusJson(*statuses, out);
  } else {
    PrintStatusTable(*statuses, out);
  }
  for (const ServiceStatus& s : *statuses) {
    if (s.state != "SERVING") {
      return kExitFailure;
    }
  }
  return kExitOk;
}

}  // namespace tidepool::ctl
