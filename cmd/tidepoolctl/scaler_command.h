#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace tidepool::ctl {

// tidepoolctl scaler policy|set-policy|pin|unpin|decisions|jobs|capacity (see its help).
int ScalerCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// tidepoolctl workspaces idle [--workspace WS_ID]: why each workspace is awake or asleep.
int IdleStatusCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace tidepool::ctl
