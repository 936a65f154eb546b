// tidepoolctl: the admin CLI. Speaks gRPC with mutual TLS as the "tidepoolctl" identity, whose
// certificate the platform issues into its data directory on first start.
#include <iostream>
#include <string>
#include <vector>

#include "cmd/tidepoolctl/audit_command.h"
#include "cmd/tidepoolctl/scaler_command.h"
#include "cmd/tidepoolctl/status_command.h"
#include "cmd/tidepoolctl/users_command.h"
#include "cmd/tidepoolctl/workspaces_command.h"
#include "lib/cli_flags.h"
#include "lib/grpc_logging.h"

namespace {

constexpr char kUsage[] =
    "usage: tidepoolctl <command> [flags]\n"
    "\n"
    "commands:\n"
    "  status [--json] [--timeout 2s]   health of every platform service\n"
    "  audit query|export|verify|checkpoint   the audit trail (tidepoolctl audit help)\n"
    "  users list|suspend|reinstate|set-role  people (tidepoolctl users help)\n"
    "  invites create|list|revoke             invite codes (tidepoolctl invites help)\n"
    "  workspaces list|ensure|wake|stop|restart|delete|usage|idle   (tidepoolctl workspaces help)\n"
    "  scaler policy|set-policy|pin|unpin|decisions|jobs|capacity   (tidepoolctl scaler help)\n"
    "  version                          print the version\n"
    "\n"
    "flags (all commands):\n";

}  // namespace

int main(int argc, char** argv) {
  tidepool::RouteLibraryLogs();  // a refused handshake is reported in the table, not as noise
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    (args.empty() ? std::cerr : std::cout) << kUsage << tidepool::ServerFlagsHelp();
    return args.empty() ? tidepool::kExitUsage : tidepool::kExitOk;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "version" || args[0] == "--version") {
    std::cout << "tidepoolctl " << TIDEPOOL_VERSION << "\n";
    return tidepool::kExitOk;
  }
  if (args[0] == "audit") {
    return tidepool::ctl::AuditCommand(rest, std::cout, std::cerr);
  }
  if (args[0] == "users") {
    return tidepool::ctl::UsersCommand(rest, std::cout, std::cerr);
  }
  if (args[0] == "invites") {
    return tidepool::ctl::InvitesCommand(rest, std::cout, std::cerr);
  }
  if (args[0] == "workspaces") {
    return tidepool::ctl::WorkspacesCommand(rest, std::cout, std::cerr);
  }
  if (args[0] == "scaler") {
    return tidepool::ctl::ScalerCommand(rest, std::cout, std::cerr);
  }
  if (args[0] == "status") {
    return tidepool::ctl::StatusCommand(rest, std::cout, std::cerr);
  }
  std::cerr << "tidepoolctl: unknown command \"" << args[0] << "\" (see tidepoolctl --help)\n";
  return tidepool::kExitUsage;
}
