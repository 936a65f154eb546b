#include "lib/platform_client.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "nlohmann/json.hpp"

namespace tidepool {

std::shared_ptr<grpc::Channel> DialPlatformService(const TlsIdentity& self,
                                                   const std::string& target) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = self.ca_pem;
  ssl.pem_private_key = self.key_pem;
  ssl.pem_cert_chain = self.cert_pem;
  grpc::ChannelArguments args;
  // One connection per dial: keeps identities of different dials from sharing a subchannel.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(ssl), args);
}

std::string HostPort(const std::string& host, int port) {
  if (host.find(':') != std::string::npos) {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

std::string RunFilePath(const std::string& data_dir, const std::string& name) {
  return absl::StrCat(data_dir, "/run/", name, ".json");
}

absl::StatusOr<RunInfo> ReadRunInfo(const std::string& data_dir, const std::string& name) {
  const std::string path = RunFilePath(data_dir, name);
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(name, " is not running (no ", path, ")"));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  nlohmann::json doc = nlohmann::json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc["grpc"].is_string() ||
      !doc["metrics"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is malformed"));
  }
  RunInfo info;
  info.service = doc.value("service", name);
  if (doc["full_names"].is_array()) {
    for (const auto& item : doc["full_names"]) {
      if (item.is_string()) {
        info.full_names.push_back(item.get<std::string>());
      }
    }
  }
  info.grpc = doc["grpc"].get<std::string>();
  info.metrics = doc["metrics"].get<std::string>();
  info.pid = doc.value("pid", int64_t{0});
  info.started = doc.value("started", "");
  return info;
}

absl::StatusOr<std::string> ResolveServiceTarget(const std::string& data_dir,
                                                 const std::string& name,
                                                 const ServiceEndpointConfig& configured) {
  if (absl::StatusOr<RunInfo> info = ReadRunInfo(data_dir, name); info.ok()) {
    return info->grpc;
  }
  if (configured.grpc_port != 0) {
    return HostPort(configured.grpc_address, configured.grpc_port);
  }
  return absl::UnavailableError(absl::StrCat("the ", name, " service is not running"));
}

std::shared_ptr<grpc::Channel> PlatformChannels::Get(absl::string_view service) {
  const std::string name(service);
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  Entry& entry = entries_[name];
  if (entry.channel != nullptr && now - entry.resolved < absl::Seconds(2)) return entry.channel;
  if (config_.services.count(name) == 0) return nullptr;
  absl::StatusOr<std::string> target = ResolveServiceTarget(data_dir_, name, config_.Service(name));
  if (!target.ok()) return entry.channel;  // keep the last one, if any
  if (entry.channel == nullptr || *target != entry.target) {
    entry.channel = DialPlatformService(self_, *target);
    entry.target = *target;
  }
  entry.resolved = now;
  return entry.channel;
}

}  // namespace tidepool
