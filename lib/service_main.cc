#include "lib/service_main.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lib/audit_client.h"
#include "lib/authz.h"
#include "lib/file_util.h"
#include "lib/grpc_logging.h"
#include "lib/log.h"
#include "lib/platform_client.h"
#include "nlohmann/json.hpp"

namespace tidepool {
namespace {

absl::Status WriteRunFile(const std::string& data_dir, const std::string& name,
                          const ServerRunner& runner) {
  nlohmann::json doc;
  doc["service"] = name;
  doc["full_names"] = runner.service_names();
  doc["grpc"] = HostPort(runner.options().grpc_address, runner.grpc_port());
  doc["metrics"] = HostPort(runner.options().metrics_address, runner.metrics_port());
  doc["pid"] = static_cast<int64_t>(::getpid());
  doc["started"] = absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone());
  return WriteFileAtomically(RunFilePath(data_dir, name), doc.dump(2) + "\n", 0644);
}

// Sends to the audit service wherever it currently runs: its run file (it may have picked a
// free port) or else its configured address, looked up on every call (one small file read
// per batch), so services that start before audit, or outlive an audit restart on another
// port, find it again.
class ResolvingAuditTransport final : public AuditTransport {
 public:
  ResolvingAuditTransport(TlsIdentity self, std::string data_dir, ServiceEndpointConfig configured)
      : self_(std::move(self)),
        data_dir_(std::move(data_dir)),
        configured_(std::move(configured)) {}

  absl::StatusOr<std::vector<uint64_t>> Append(const std::vector<common::v1::AuditEvent>& events,
                                               absl::Time deadline) override {
    std::shared_ptr<AuditTransport> transport;
    {
      absl::MutexLock lock(&mu_);
      absl::StatusOr<std::string> resolved = ResolveServiceTarget(data_dir_, "audit", configured_);
      if (!resolved.ok()) {
        return resolved.status();
      }
      const std::string& target = *resolved;
      if (target != target_ || transport_ == nullptr) {
        target_ = target;
        transport_ = std::make_shared<GrpcAuditTransport>(DialPlatformService(self_, target));
      }
      transport = transport_;
    }
    return transport->Append(events, deadline);
  }

 private:
  const TlsIdentity self_;
  const std::string data_dir_;
  const ServiceEndpointConfig configured_;
  absl::Mutex mu_;
  std::string target_ ABSL_GUARDED_BY(mu_);
  // Replaced when the target changes; a caller still using the old one keeps it alive.
  std::shared_ptr<AuditTransport> transport_ ABSL_GUARDED_BY(mu_);
};

common::v1::AuditEvent ServiceLifecycleEvent(const std::string& service,
                                             const std::string& action) {
  common::v1::AuditEvent event;
  event.mutable_actor()->set_kind(common::v1::ACTOR_KIND_SERVICE);
  event.mutable_actor()->set_id(service);
  event.set_action(action);
  event.set_outcome(common::v1::OUTCOME_SUCCESS);
  (*event.mutable_attributes())["version"] = TIDEPOOL_VERSION;
  (*event.mutable_attributes())["pid"] = std::to_string(::getpid());
  return event;
}

}  // namespace

int RunServices(const std::string& program, const ServerFlags& flags,
                const std::vector<ServiceDefinition>& services) {
  // Block the stop signals before any thread starts so that only sigwait() below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::string data_dir;
  absl::StatusOr<PlatformConfig> config = LoadConfigForFlags(flags, &data_dir);
  if (!config.ok()) {
    std::cerr << program << ": config error: " << config.status().message() << std::endl;
    return kExitUsage;
  }
  LogOptions log_options;
  ParseLogLevel(config->log_level, &log_options.level);
  log_options.component = program;
  ConfigureLogging(log_options);
  RouteLibraryLogs();

  std::error_code ec;
  std::filesystem::create_directories(absl::StrCat(data_dir, "/run"), ec);
  if (ec) {
    std::cerr << program << ": cannot create data directory " << data_dir << ": " << ec.message()
              << std::endl;
    return kExitUsage;
  }
  ::chmod(data_dir.c_str(), 0700);

  const std::string tls_dir = TlsDir(*config, data_dir);
  if (config->tls_auto_generate) {
    absl::Status pki = EnsurePlatformPki(tls_dir, PlatformIdentities());
    if (!pki.ok()) {
      std::cerr << program << ": " << pki.message() << std::endl;
      return kExitFailure;
    }
  }

  RealClock clock;
  std::vector<std::pair<std::string, std::unique_ptr<AuditClient>>> audit_clients;
  std::vector<std::pair<std::string, std::unique_ptr<ServerRunner>>> runners;
  // Stops everything. A clean stop (a signal after a full start) first records each service's
  // stop and flushes audit events while the audit service (stopped last) still runs; a failed
  // start records nothing it did not start.
  auto stop_all = [&](absl::Duration grace, bool clean) {
    if (clean) {
      const absl::Time flush_deadline = absl::Now() + std::min(grace, absl::Seconds(1));
      for (auto& [name, client] : audit_clients) {
        client->Emit(ServiceLifecycleEvent(name, "platform.service_stopped"));
      }
      for (auto& [name, client] : audit_clients) {
        client->Stop(flush_deadline);
      }
    }
    const absl::Time deadline = absl::Now() + grace;
    for (auto it = runners.rbegin(); it != runners.rend(); ++it) {
      it->second->Shutdown(deadline);
      std::filesystem::remove(RunFilePath(data_dir, it->first), ec);
    }
    for (auto& [name, client] : audit_clients) {
      client->Stop(absl::InfinitePast());
    }
  };
  for (const ServiceDefinition& definition : services) {
    absl::StatusOr<TlsIdentity> identity = LoadTlsIdentity(tls_dir, definition.name);
    if (!identity.ok()) {
      std::cerr << program << ": " << identity.status().message() << std::endl;
      stop_all(absl::ZeroDuration(), /*clean=*/false);
      return kExitFailure;
    }
    auto registry = std::make_shared<prometheus::Registry>();
    AuditClient* audit = nullptr;
    if (definition.name != "audit") {
      AuditClientOptions audit_options;
      audit_options.spool_path = absl::StrCat(data_dir, "/", definition.name, "/audit_spool.db");
      audit_options.source_name = definition.name;
      std::filesystem::create_directories(absl::StrCat(data_dir, "/", definition.name), ec);
      absl::StatusOr<std::unique_ptr<AuditClient>> client = AuditClient::Create(
          std::make_unique<ResolvingAuditTransport>(*identity, data_dir, config->Service("audit")),
          clock, audit_options, *registry);
      if (!client.ok()) {
        std::cerr << program << ": " << definition.name
                  << ": audit spool: " << client.status().message() << std::endl;
        stop_all(absl::ZeroDuration(), /*clean=*/false);
        return kExitFailure;
      }
      audit = client->get();
      audit_clients.emplace_back(definition.name, *std::move(client));
    }
    const ServiceContext context{*config, data_dir, clock, *registry, audit, &*identity};
    absl::StatusOr<std::vector<HostedService>> hosted = definition.create(context);
    if (!hosted.ok()) {
      std::cerr << program << ": " << definition.name << ": " << hosted.status().message()
                << std::endl;
      stop_all(absl::ZeroDuration(), /*clean=*/false);
      return kExitFailure;
    }
    const ServiceEndpointConfig& endpoint = config->Service(definition.name);
    ServerRunnerOptions options;
    options.component = definition.name;
    options.grpc_address = endpoint.grpc_address;
    options.grpc_port = endpoint.grpc_port;
    options.metrics_address = endpoint.metrics_address;
    options.metrics_port = endpoint.metrics_port;
    options.tls = *std::move(identity);
    options.registry = registry;
    absl::StatusOr<std::unique_ptr<ServerRunner>> runner =
        ServerRunner::Start(std::move(options), *std::move(hosted));
    if (!runner.ok()) {
      std::cerr << program << ": " << runner.status().message() << std::endl;
      stop_all(absl::ZeroDuration(), /*clean=*/false);
      return runner.status().code() == absl::StatusCode::kUnavailable ? kExitUsage : kExitFailure;
    }
    runners.emplace_back(definition.name, *std::move(runner));
  }

  std::cout << program << " is running (pid " << ::getpid() << ")\n"
            << "  config:   " << config->source << "\n"
            << "  data dir: " << data_dir << "\n"
            << "  certs:    " << tls_dir << " (mutual TLS; clients need a platform certificate)\n";
  std::printf("  %-12s %-22s %-22s\n", "SERVICE", "GRPC (mTLS)", "METRICS (http)");
  for (const auto& [name, runner] : runners) {
    std::printf(
        "  %-12s %-22s %-22s\n", name.c_str(),
        HostPort(runner->options().grpc_address, runner->grpc_port()).c_str(),
        absl::StrCat("http://", HostPort(runner->options().metrics_address, runner->metrics_port()),
                     "/metrics")
            .c_str());
    LogInfo("service started", {{"service", name},
                                {"grpc_port", runner->grpc_port()},
                                {"metrics_port", runner->metrics_port()}});
  }
  // The proxy's browser edge, when this process hosts it, says where it listens.
  if (absl::StatusOr<std::string> edge = ReadFileToString(RunFilePath(data_dir, "edge"));
      edge.ok()) {
    const nlohmann::json parsed = nlohmann::json::parse(*edge, nullptr, false);
    if (parsed.is_object() && parsed.contains("http")) {
      std::cout << "  browser:  " << config->public_url << " (edge on "
                << parsed["http"].get<std::string>() << ")\n";
    }
  }
  std::cout << "  check it: tidepoolctl status --data-dir " << data_dir << "\n"
            << "  stop it:  Ctrl-C or SIGTERM\n";
  std::cout.flush();
  // The run files come last: once they exist, everything above is printed and serving.
  for (const auto& [name, runner] : runners) {
    if (absl::Status written = WriteRunFile(data_dir, name, *runner); !written.ok()) {
      std::cerr << program << ": " << written.message() << std::endl;
      stop_all(absl::ZeroDuration(), /*clean=*/false);
      return kExitFailure;
    }
  }
  for (auto& [name, client] : audit_clients) {
    client->Start();
    client->Emit(ServiceLifecycleEvent(name, "platform.service_started"));
  }

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  LogInfo("stopping", {{"signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"}});
  const absl::Time started = absl::Now();
  stop_all(config->shutdown_grace, /*clean=*/true);
  LogInfo("stopped", {{"seconds", absl::ToDoubleSeconds(absl::Now() - started)}});
  return kExitOk;
}

int ServerBinaryMain(const std::string& program, int argc, char** argv,
                     const std::vector<ServiceDefinition>& services) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << "usage: " << program << " [--config FILE] [--data-dir DIR]\n" << ServerFlagsHelp();
    return kExitOk;
  }
  if (!args.empty() && args[0] == "--version") {
    std::cout << program << " " << TIDEPOOL_VERSION << "\n";
    return kExitOk;
  }
  absl::StatusOr<ServerFlags> flags = ParseServerFlags(args);
  if (!flags.ok()) {
    std::cerr << program << ": " << flags.status().message() << " (see --help)" << std::endl;
    return kExitUsage;
  }
  return RunServices(program, *flags, services);
}

}  // namespace tidepool
