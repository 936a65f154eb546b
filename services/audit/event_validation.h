#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "lib/text.h"
#include "tidepool/common/v1/audit_event.pb.h"

namespace tidepool::audit {

// Checks an event offered to Append against the bounds documented on AuditEvent: required
// fields present, server-assigned fields unset, every string valid UTF-8 without control
// characters (C0, DEL, C1), the action and reason-code forms, length limits, attribute limits
// and the 64 KiB serialized size. Returns OK or INVALID_ARGUMENT naming the field (never its
// content, which may be hostile). Thread-safe (pure).
absl::Status ValidateEventForAppend(const common::v1::AuditEvent& event);

// Valid UTF-8 without control characters: see lib/text.h.
using ::tidepool::IsCleanUtf8;

// True for a dotted lower-case action name such as "auth.sign_in".
bool IsValidAction(absl::string_view action);

}  // namespace tidepool::audit
