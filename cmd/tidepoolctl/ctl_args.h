#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "lib/cli_flags.h"
#include "lib/pki.h"
#include "lib/platform_config.h"

namespace tidepool::ctl {

// Parsed command-line flags of one tidepoolctl command: `--name value`, `--name=value`, or a
// bare `--name` for switches.
class CtlArgs {
 public:
  // `with_values` and `switches` are the flag names (without "--") the command accepts, in
  // addition to --config and --data-dir. Returns INVALID_ARGUMENT naming an unknown flag, a
  // missing value or a stray positional argument.
  static absl::StatusOr<CtlArgs> Parse(const std::vector<std::string>& args,
                                       const std::set<std::string>& with_values,
                                       const std::set<std::string>& switches);

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  const ServerFlags& server_flags() const { return server_flags_; }

 private:
  std::map<std::string, std::string> values_;
  ServerFlags server_flags_;
};

// What every tidepoolctl command that talks to a service needs: the data directory, the
// config and tidepoolctl's own certificate.
struct CtlContext {
  std::string data_dir;
  PlatformConfig config;
  TlsIdentity self;
};

// Loads config and certificate for `flags`. Errors are one line, ready to print.
absl::StatusOr<CtlContext> LoadCtlContext(const ServerFlags& flags);

// A mutual-TLS channel to a running service, found through its run file. NOT_FOUND if the
// service is not running.
absl::StatusOr<std::shared_ptr<grpc::Channel>> DialService(const CtlContext& context,
                                                           const std::string& service);

// Replaces control characters and invalid bytes with escapes, so nothing printed from a
// record can drive the terminal.
std::string Printable(const std::string& text);

}  // namespace tidepool::ctl
