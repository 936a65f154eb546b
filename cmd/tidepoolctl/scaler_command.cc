#include "cmd/tidepoolctl/scaler_command.h"

#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "cmd/tidepoolctl/ctl_args.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/client_context.h"
#include "tidepool/scaler/v1/scaler_service.grpc.pb.h"

namespace tidepool::ctl {
namespace {

namespace scalerpb = ::tidepool::scaler::v1;
namespace commonpb = ::tidepool::common::v1;
using google::protobuf::util::TimeUtil;

constexpr char kUsage[] =
    "usage: tidepoolctl scaler <command> [flags]\n"
    "  policy                                    the idle policy in effect\n"
    "  set-policy [--idle-timeout 30m] [--check-interval 60s] [--grace-after-wake 5m]\n"
    "             [--wake-before-job 2m] [--keep-messaging-awake true|false]\n"
    "             [--override USER_ID=DURATION|always-on,...] [--expected-version N]\n"
    "                                            replaces the policy (unset flags: defaults)\n"
    "  pin --workspace WS_ID [--for 2h] [--reason TEXT]   keep it awake (until unpinned)\n"
    "  unpin --workspace WS_ID\n"
    "  decisions [--workspace WS_ID] [--action sleep|wake|keep-awake] [--limit 50]\n"
    "  jobs [--workspace WS_ID] [--outcome on-time|late|missed] [--limit 50]\n"
    "                                            scheduled runs and how each went\n"
    "  capacity [--horizon 1h]\n"
    "(tidepoolctl workspaces idle shows why each workspace is awake or asleep.)\n";

// "KEEP_AWAKE_REASON_RECENT_ACTIVITY" -> "recent-activity".
std::string Name(const std::string& full, absl::string_view prefix) {
  std::string name = absl::StartsWith(full, prefix) ? full.substr(prefix.size()) : full;
  name = absl::AsciiStrToLower(name);
  for (char& c : name) {
    if (c == '_') c = '-';
  }
  return name;
}

std::string Time(const google::protobuf::Timestamp& t) {
  return t.seconds() == 0 && t.nanos() == 0 ? "-" : TimeUtil::ToString(t).substr(0, 19) + "Z";
}

std::string Span(const google::protobuf::Duration& d) {
  const absl::Duration duration = absl::Seconds(d.seconds());
  if (duration >= absl::Hours(1)) {
    const int64_t minutes = absl::ToInt64Minutes(duration) % 60;
    return absl::StrCat(absl::ToInt64Hours(duration), "h",
                        minutes == 0 ? "" : absl::StrCat(minutes, "m"));
  }
  if (duration >= absl::Minutes(1)) return absl::StrCat(absl::ToInt64Minutes(duration), "m");
  return absl::StrCat(d.seconds(), "s");
}

absl::StatusOr<google::protobuf::Duration> ParseSpan(const std::string& flag,
                                                     const std::string& text) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " must be a duration such as 30m or 90s, got \"", text, "\""));
  }
  return TimeUtil::SecondsToDuration(absl::ToInt64Seconds(d));
}

std::unique_ptr<scalerpb::ScalerService::Stub> Dial(const CtlArgs& args, std::ostream& err) {
  absl::StatusOr<CtlContext> context = LoadCtlContext(args.server_flags());
  if (!context.ok()) {
    err << "tidepoolctl: " << context.status().message() << "\n";
    return nullptr;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = DialService(*context, "scaler");
  if (!channel.ok()) {
    err << "tidepoolctl: " << channel.status().message() << "\n";
    return nullptr;
  }
  return scalerpb::ScalerService::NewStub(*channel);
}

void PrintPolicy(const scalerpb::IdlePolicy& p, int64_t version, std::ostream& out) {
  out << "version " << version << "\n"
      << "idle timeout " << Span(p.idle_timeout()) << "\n"
      << "check interval " << Span(p.check_interval()) << "\n"
      << "grace after wake " << Span(p.grace_after_wake()) << "\n"
      << "wake before job " << Span(p.wake_before_job()) << "\n"
      << "keep messaging awake " << (p.keep_messaging_awake() ? "yes" : "no") << "\n";
  for (const scalerpb::UserPolicyOverride& o : p.user_overrides()) {
    out << "override " << o.user_id() << ": "
        << (o.always_on() ? "always on"
                          : absl::StrCat("idle timeout ", Span(o.idle_timeout())))
        << "\n";
  }
}

grpc::ClientContext* Deadline(grpc::ClientContext& call) {
  call.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  return &call;
}

}  // namespace

int IdleStatusCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  absl::StatusOr<CtlArgs> parsed = CtlArgs::Parse(args, {"workspace"}, {});
  if (!parsed.ok()) {
    err << "tidepoolctl workspaces idle: " << parsed.status().message() << "\n";
    return kExitUsage;
  }
  std::unique_ptr<scalerpb::ScalerService::Stub> stub = Dial(*parsed, err);
  if (stub == nullptr) return kExitFailure;
  scalerpb::GetIdleStatusRequest request;
  if (parsed->Has("workspace")) request.add_workspace_ids(parsed->Get("workspace"));
  out << absl::StrFormat("%-29s %-28s %-9s %-7s %-7s %-20s %-16s %-20s %s\n", "WORKSPACE", "OWNER",
                         "STATE", "IDLE", "TIMEOUT", "LAST ACTIVITY", "SOURCE", "SLEEPS/WAKES AT",
                         "KEPT AWAKE BY");
  std::string token;
  do {
    request.mutable_page()->set_page_size(1000);
    request.mutable_page()->set_page_token(token);
    scalerpb::GetIdleStatusResponse response;
    grpc::ClientContext call;
    grpc::Status status = stub->GetIdleStatus(Deadline(call), request, &response);
    if (!status.ok()) {
      err << "tidepoolctl: " << status.error_message() << "\n";
      return kExitFailure;
    }
    for (const scalerpb::IdleStatus& s : response.statuses()) {
      std::vector<std::string> reasons;
      for (int reason : s.keep_awake_reasons()) {
        reasons.push_back(Name(
            scalerpb::KeepAwakeReason_Name(static_cast<scalerpb::KeepAwakeReason>(reason)),
            "KEEP_AWAKE_REASON_"));
      }
      if (s.pinned() && s.has_pin_expire_time()) {
        reasons.push_back(absl::StrCat("(pin ends ", Time(s.pin_expire_time()), ")"));
      }
      const std::string when = s.has_sleep_time()                  ? Time(s.sleep_time())
                               : s.has_next_scheduled_wake_time() ? Time(s.next_scheduled_wake_time())
                                                                  : "-";
      out << absl::StrFormat(
          "%-29s %-28s %-9s %-7s %-7s %-20s %-16s %-20s %s\n", s.workspace_id(),
          s.owner_user_id(),
          Name(commonpb::WorkspaceState_Name(s.state()),
                                         "WORKSPACE_STATE_"),
          s.has_idle_duration() ? Span(s.idle_duration()) : "-", Span(s.idle_timeout()),
          Time(s.last_activity_time()),
          s.last_activity_source() == scalerpb::ACTIVITY_SOURCE_UNSPECIFIED
              ? "-"
              : Name(
                    scalerpb::ActivitySource_Name(s.last_activity_source()), "ACTIVITY_SOURCE_"),
          when, reasons.empty() ? "-" : absl::StrJoin(reasons, ", "));
    }
    token = response.page().next_page_token();
  } while (!token.empty());
  return kExitOk;
}

int ScalerCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.empty() || args[0] == "help" || args[0] == "--help") {
    (args.empty() ? err : out) << kUsage;
    return args.empty() ? kExitUsage : kExitOk;
  }
  const std::string command = args[0];
  std::set<std::string> with_values;
  if (command == "policy") {
  } else if (command == "set-policy") {
    with_values = {"idle-timeout",         "check-interval", "grace-after-wake", "wake-before-job",
                   "keep-messaging-awake", "override",       "expected-version"};
  } else if (command == "pin") {
    with_values = {"workspace", "for", "reason"};
  } else if (command == "unpin") {
    with_values = {"workspace"};
  } else if (command == "decisions") {
    with_values = {"workspace", "action", "limit"};
  } else if (command == "jobs") {
    with_values = {"workspace", "outcome", "limit"};
  } else if (command == "capacity") {
    with_values = {"horizon"};
  } else {
    err << "tidepoolctl scaler: unknown command \"" << command << "\"\n" << kUsage;
    return kExitUsage;
  }
  absl::StatusOr<CtlArgs> parsed =
      CtlArgs::Parse(std::vector<std::string>(args.begin() + 1, args.end()), with_values, {});
  auto usage_error = [&](absl::string_view message) {
    err << "tidepoolctl scaler " << command << ": " << message << "\n";
    return kExitUsage;
  };
  if (!parsed.ok()) return usage_error(parsed.status().message());
  if ((command == "pin" || command == "unpin") && !parsed->Has("workspace")) {
    return usage_error("--workspace WS_ID is required");
  }
  int limit = 50;
  if (parsed->Has("limit") &&
      (!absl::SimpleAtoi(parsed->Get("limit"), &limit) || limit < 1 || limit > 1000)) {
    return usage_error("--limit must be 1 to 1000");
  }

  // Everything the flags say is checked before anything is sent.
  scalerpb::SetPolicyRequest set_policy;
  scalerpb::PinWorkspaceRequest pin;
  scalerpb::ListDecisionsRequest decisions;
  scalerpb::ListJobRunsRequest jobs;
  scalerpb::GetCapacityReportRequest capacity;
  if (command == "set-policy") {
    scalerpb::IdlePolicy* policy = set_policy.mutable_policy();
    const std::vector<std::pair<std::string, google::protobuf::Duration*>> spans = {
        {"idle-timeout", policy->mutable_idle_timeout()},
        {"check-interval", policy->mutable_check_interval()},
        {"grace-after-wake", policy->mutable_grace_after_wake()},
        {"wake-before-job", policy->mutable_wake_before_job()}};
    for (const auto& [flag, field] : spans) {
      if (!parsed->Has(flag)) continue;
      absl::StatusOr<google::protobuf::Duration> span = ParseSpan(flag, parsed->Get(flag));
      if (!span.ok()) return usage_error(span.status().message());
      *field = *span;
    }
    if (!parsed->Has("idle-timeout")) policy->clear_idle_timeout();
    if (!parsed->Has("check-interval")) policy->clear_check_interval();
    if (!parsed->Has("grace-after-wake")) policy->clear_grace_after_wake();
    if (!parsed->Has("wake-before-job")) policy->clear_wake_before_job();
    const std::string keep = parsed->Get("keep-messaging-awake", "true");
    if (keep != "true" && keep != "false") {
      return usage_error("--keep-messaging-awake must be true or false");
    }
    policy->set_keep_messaging_awake(keep == "true");
    for (absl::string_view entry :
         absl::StrSplit(parsed->Get("override"), ',', absl::SkipWhitespace())) {
      std::pair<std::string, std::string> kv = absl::StrSplit(entry, absl::MaxSplits('=', 1));
      scalerpb::UserPolicyOverride* o = policy->add_user_overrides();
      o->set_user_id(kv.first);
      if (kv.second == "always-on") {
        o->set_always_on(true);
      } else {
        absl::StatusOr<google::protobuf::Duration> span = ParseSpan("override", kv.second);
        if (!span.ok()) {
          return usage_error("--override entries are USER_ID=DURATION or USER_ID=always-on");
        }
        *o->mutable_idle_timeout() = *span;
      }
    }
    int64_t expected = 0;
    if (parsed->Has("expected-version") &&
        (!absl::SimpleAtoi(parsed->Get("expected-version"), &expected) || expected < 0)) {
      return usage_error("--expected-version must be a version number");
    }
    set_policy.set_expected_version(expected);
  } else if (command == "pin") {
    pin.set_workspace_id(parsed->Get("workspace"));
    pin.set_reason(parsed->Get("reason"));
    if (parsed->Has("for")) {
      absl::Duration d;
      if (!absl::ParseDuration(parsed->Get("for"), &d) || d <= absl::ZeroDuration()) {
        return usage_error("--for must be a positive duration such as 2h");
      }
      *pin.mutable_expire_time() =
          TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(absl::Now() + d));
    }
  } else if (command == "decisions") {
    decisions.set_workspace_id(parsed->Get("workspace"));
    decisions.mutable_page()->set_page_size(limit);
    const std::string action = parsed->Get("action");
    if (action == "sleep") {
      decisions.set_action(scalerpb::DECISION_ACTION_SLEEP);
    } else if (action == "wake") {
      decisions.set_action(scalerpb::DECISION_ACTION_WAKE);
    } else if (action == "keep-awake") {
      decisions.set_action(scalerpb::DECISION_ACTION_KEEP_AWAKE);
    } else if (!action.empty()) {
      return usage_error("--action must be sleep, wake or keep-awake");
    }
  } else if (command == "jobs") {
    jobs.set_workspace_id(parsed->Get("workspace"));
    jobs.mutable_page()->set_page_size(limit);
    const std::string outcome = parsed->Get("outcome");
    if (outcome == "on-time") {
      jobs.set_outcome(scalerpb::JOB_RUN_OUTCOME_ON_TIME);
    } else if (outcome == "late") {
      jobs.set_outcome(scalerpb::JOB_RUN_OUTCOME_LATE);
    } else if (outcome == "missed") {
      jobs.set_outcome(scalerpb::JOB_RUN_OUTCOME_MISSED);
    } else if (!outcome.empty()) {
      return usage_error("--outcome must be on-time, late or missed");
    }
  } else if (command == "capacity" && parsed->Has("horizon")) {
    absl::StatusOr<google::protobuf::Duration> span = ParseSpan("horizon", parsed->Get("horizon"));
    if (!span.ok()) return usage_error(span.status().message());
    *capacity.mutable_horizon() = *span;
  }

  std::unique_ptr<scalerpb::ScalerService::Stub> stub = Dial(*parsed, err);
  if (stub == nullptr) return kExitFailure;
  grpc::ClientContext call;
  grpc::Status status;
  if (command == "policy") {
    scalerpb::GetPolicyResponse response;
    status = stub->GetPolicy(Deadline(call), scalerpb::GetPolicyRequest(), &response);
    if (status.ok()) PrintPolicy(response.policy(), response.version(), out);
  } else if (command == "set-policy") {
    scalerpb::SetPolicyResponse response;
    status = stub->SetPolicy(Deadline(call), set_policy, &response);
    if (status.ok()) PrintPolicy(response.policy(), response.version(), out);
  } else if (command == "pin") {
    scalerpb::PinWorkspaceResponse response;
    status = stub->PinWorkspace(Deadline(call), pin, &response);
    if (status.ok()) {
      out << "pinned " << pin.workspace_id()
          << (response.status().has_pin_expire_time()
                  ? absl::StrCat(" until ", Time(response.status().pin_expire_time()))
                  : " until unpinned")
          << "\n";
    }
  } else if (command == "unpin") {
    scalerpb::UnpinWorkspaceRequest request;
    request.set_workspace_id(parsed->Get("workspace"));
    scalerpb::UnpinWorkspaceResponse response;
    status = stub->UnpinWorkspace(Deadline(call), request, &response);
    if (status.ok()) out << "unpinned " << request.workspace_id() << "\n";
  } else if (command == "decisions") {
    scalerpb::ListDecisionsResponse response;
    status = stub->ListDecisions(Deadline(call), decisions, &response);
    if (status.ok()) {
      out << absl::StrFormat("%-20s %-29s %-10s %-13s %-3s %s\n", "TIME", "WORKSPACE", "ACTION",
                             "REASON", "OK", "DETAIL");
      for (const scalerpb::Decision& d : response.decisions()) {
        out << absl::StrFormat(
            "%-20s %-29s %-10s %-13s %-3s %s%s\n", Time(d.decide_time()), d.workspace_id(),
            Name(scalerpb::DecisionAction_Name(d.action()),
                                           "DECISION_ACTION_"),
            Name(scalerpb::DecisionReason_Name(d.reason()),
                                           "DECISION_REASON_"),
            d.succeeded() ? "yes" : "no", Printable(d.detail()),
            d.error_code().empty() ? "" : absl::StrCat(" (", d.error_code(), ")"));
      }
    }
  } else if (command == "jobs") {
    scalerpb::ListJobRunsResponse response;
    status = stub->ListJobRuns(Deadline(call), jobs, &response);
    if (status.ok()) {
      out << absl::StrFormat("%-20s %-29s %-20s %-16s %-8s %-20s %s\n", "SCHEDULED (UTC)",
                             "WORKSPACE", "JOB", "TIMEZONE", "OUTCOME", "STARTED", "WHY");
      for (const scalerpb::JobRun& r : response.job_runs()) {
        out << absl::StrFormat(
            "%-20s %-29s %-20s %-16s %-8s %-20s %s\n", Time(r.scheduled_time()), r.workspace_id(),
            Printable(r.job_name().empty() ? r.job_id() : r.job_name()), Printable(r.timezone()),
            Name(scalerpb::JobRunOutcome_Name(r.outcome()),
                                          "JOB_RUN_OUTCOME_"),
            Time(r.start_time()),
            r.miss_reason() == scalerpb::MISS_REASON_UNSPECIFIED
                ? "-"
                : Name(scalerpb::MissReason_Name(r.miss_reason()),
                                             "MISS_REASON_"));
      }
    }
  } else if (command == "capacity") {
    scalerpb::GetCapacityReportResponse response;
    status = stub->GetCapacityReport(Deadline(call), capacity, &response);
    if (status.ok()) {
      out << absl::StrFormat(
          "running %d (always on %d), sleeping %d, provisioning %d, failed %d, suspended %d\n"
          "projected over %s: %d millicores, %d MiB",
          response.running_count(), response.always_on_count(), response.sleeping_count(),
          response.provisioning_count(), response.failed_count(), response.suspended_count(),
          Span(response.horizon()), response.projected_cpu_millicores(),
          response.projected_memory_bytes() >> 20);
      if (response.capacity_cpu_millicores() > 0 || response.capacity_memory_bytes() > 0) {
        out << absl::StrFormat(" of %d millicores, %d MiB", response.capacity_cpu_millicores(),
                               response.capacity_memory_bytes() >> 20);
      }
      out << "\n";
    }
  }
  if (!status.ok()) {
    err << "tidepoolctl: " << status.error_message() << "\n";
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace tidepool::ctl
