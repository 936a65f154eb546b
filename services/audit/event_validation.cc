#include "services/audit/event_validation.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "lib/text.h"

namespace tidepool::audit {
namespace {

constexpr size_t kMaxIdBytes = 128;
constexpr size_t kMaxActionBytes = 128;
constexpr size_t kMaxReasonBytes = 64;
constexpr size_t kMaxAddressBytes = 64;
constexpr size_t kMaxAttributes = 32;
constexpr size_t kMaxAttributeKeyBytes = 64;
constexpr size_t kMaxAttributeValueBytes = 1024;
constexpr size_t kMaxEventBytes = 64 * 1024;

bool IsLowerIdentifierChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

absl::Status CheckString(absl::string_view field, absl::string_view value, size_t max_bytes) {
  if (value.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is longer than ", max_bytes, " bytes"));
  }
  if (!IsCleanUtf8(value)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is not valid UTF-8 or contains control characters"));
  }
  return absl::OkStatus();
}

bool IsSnakeCase(absl::string_view text) {
  if (text.empty() || !(text[0] >= 'a' && text[0] <= 'z')) {
    return false;
  }
  for (char c : text) {
    if (!IsLowerIdentifierChar(c)) {
      return false;
    }
  }
  return true;
}

bool IsAttributeKey(absl::string_view key) {
  if (key.empty() || !(key[0] >= 'a' && key[0] <= 'z')) {
    return false;
  }
  for (char c : key) {
    if (!IsLowerIdentifierChar(c) && c != '.') {
      return false;
    }
  }
  return true;
}

}  // namespace

bool IsValidAction(absl::string_view action) {
  if (action.empty() || action.size() > kMaxActionBytes) {
    return false;
  }
  int segments = 0;
  size_t start = 0;
  while (start <= action.size()) {
    size_t dot = action.find('.', start);
    if (dot == absl::string_view::npos) {
      dot = action.size();
    }
    if (!IsSnakeCase(action.substr(start, dot - start))) {
      return false;
    }
    ++segments;
    start = dot + 1;
  }
  return segments >= 2;
}

absl::Status ValidateEventForAppend(const common::v1::AuditEvent& event) {
  if (event.sequence() != 0 || event.has_server_time() || !event.prev_hash().empty() ||
      !event.hash().empty() || !event.source_service().empty()) {
    return absl::InvalidArgumentError(
        "sequence, server_time, prev_hash, hash and source_service are assigned by the server "
        "and must be unset");
  }
  if (event.event_id().empty()) {
    return absl::InvalidArgumentError("event_id is required");
  }
  if (event.actor().kind() == common::v1::ACTOR_KIND_UNSPECIFIED || event.actor().id().empty()) {
    return absl::InvalidArgumentError("actor kind and id are required");
  }
  if (!common::v1::ActorKind_IsValid(event.actor().kind())) {
    return absl::InvalidArgumentError("actor kind is not a known value");
  }
  if (event.outcome() == common::v1::OUTCOME_UNSPECIFIED ||
      !common::v1::Outcome_IsValid(event.outcome())) {
    return absl::InvalidArgumentError("outcome is required");
  }
  if (!IsValidAction(event.action())) {
    return absl::InvalidArgumentError(
        "action must be lower-case dotted words such as auth.sign_in, at most 128 bytes");
  }
  for (const auto& [field, value, max] :
       {std::tuple<const char*, const std::string&, size_t>{"event_id", event.event_id(),
                                                            kMaxIdBytes},
        {"actor.id", event.actor().id(), kMaxIdBytes},
        {"subject_user_id", event.subject_user_id(), kMaxIdBytes},
        {"workspace_id", event.workspace_id(), kMaxIdBytes},
        {"request_id", event.request_id(), kMaxIdBytes},
        {"reason_code", event.reason_code(), kMaxReasonBytes},
        {"source_address", event.source_address(), kMaxAddressBytes}}) {
    absl::Status status = CheckString(field, value, max);
    if (!status.ok()) {
      return status;
    }
  }
  if (!event.reason_code().empty() && !IsSnakeCase(event.reason_code())) {
    return absl::InvalidArgumentError("reason_code must be lower-case snake case");
  }
  if (event.attributes_size() > static_cast<int>(kMaxAttributes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", kMaxAttributes, " attributes are allowed"));
  }
  for (const auto& [key, value] : event.attributes()) {
    if (key.size() > kMaxAttributeKeyBytes || !IsAttributeKey(key)) {
      return absl::InvalidArgumentError(
          "attribute keys must be lower-case words with dots or underscores, at most 64 bytes");
    }
    absl::Status status =
        CheckString(absl::StrCat("attribute ", key), value, kMaxAttributeValueBytes);
    if (!status.ok()) {
      return status;
    }
  }
  if (event.ByteSizeLong() > kMaxEventBytes) {
    return absl::InvalidArgumentError("the event is larger than 64 KiB");
  }
  return absl::OkStatus();
}

}  // namespace tidepool::audit
