#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace tidepool::ctl {

// Runs `tidepoolctl audit <query|export|verify|checkpoint> [flags]` against the running audit
// service. Exit codes: 0 success (verify: the chain is intact), 1 failure (verify: BROKEN, or
// the service could not be reached), 2 bad usage.
int AuditCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// The usage text of the audit commands.
const char* AuditUsage();

}  // namespace tidepool::ctl
