#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace tidepool::ctl {

// `tidepoolctl users list|suspend|reinstate|set-role ...` against the auth service.
// Exit codes: 0 success, 1 failure, 2 bad usage.
int UsersCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// `tidepoolctl invites create|list|revoke ...` against the auth service. The code of a new
// invite is printed once, on standard output.
int InvitesCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace tidepool::ctl
