#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace tidepool::ctl {

// tidepoolctl workspaces list|ensure|wake|stop|restart|delete|usage (see its help).
int WorkspacesCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace tidepool::ctl
