#include "cmd/tidepoolctl/audit_command.h"

#include <fstream>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cmd/tidepoolctl/ctl_args.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/client_context.h"
#include "lib/cli_flags.h"
#include "tidepool/audit/v1/audit_service.grpc.pb.h"

namespace tidepool::ctl {
namespace {

using google::protobuf::util::TimeUtil;
namespace auditpb = ::tidepool::audit::v1;
namespace commonpb = ::tidepool::common::v1;

constexpr char kUsage[] =
    "usage: tidepoolctl audit <command> [flags]\n"
    "\n"
    "commands:\n"
    "  query    events matching the filters, newest first (--limit 50, --json for JSON lines)\n"
    "  export   every matching event as JSON lines, oldest first (--output FILE)\n"
    "  verify   check the hash chain and signed checkpoints (--from 1, --to head)\n"
    "  checkpoint  show the latest signed checkpoint\n"
    "\n"
    "filters (query, export):\n"
    "  --actor ID  --subject USER_ID  --workspace WORKSPACE_ID  --action PREFIX\n"
    "  --outcome success|failure|denied|error\n"
    "  --since TIME  --until TIME   RFC 3339 (2026-12-01T09:00:00Z) or an age such as 24h\n";

const std::set<std::string> kFilterFlags = {"actor",   "subject", "workspace", "action",
                                            "outcome", "since",   "until"};

absl::StatusOr<absl::Time> ParseWhen(const std::string& text) {
  absl::Time when;
  std::string error;
  if (absl::ParseTime(absl::RFC3339_full, text, &when, &error)) {
    return when;
  }
  absl::Duration age;
  if (absl::ParseDuration(text, &age) && age >= absl::ZeroDuration()) {
    return absl::Now() - age;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("\"", text, "\" is neither an RFC 3339 time nor an age such as 24h"));
}

absl::StatusOr<auditpb::AuditFilter> BuildFilter(const CtlArgs& args) {
  auditpb::AuditFilter filter;
  filter.set_actor_id(args.Get("actor"));
  filter.set_subject_user_id(args.Get("subject"));
  filter.set_workspace_id(args.Get("workspace"));
  filter.set_action_prefix(args.Get("action"));
  if (args.Has("outcome")) {
    const std::string outcome = args.Get("outcome");
    commonpb::Outcome value;
    std::string upper = "OUTCOME_";
    for (char c : outcome) {
      upper.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    }
    if (!commonpb::Outcome_Parse(upper, &value) || value == commonpb::OUTCOME_UNSPECIFIED) {
      return absl::InvalidArgumentError("--outcome must be success, failure, denied or error");
    }
    filter.set_outcome(value);
  }
  for (const char* bound : {"since", "until"}) {
    if (!args.Has(bound)) {
      continue;
    }
    absl::StatusOr<absl::Time> when = ParseWhen(args.Get(bound));
    if (!when.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--", bound, ": ", when.status().message()));
    }
    google::protobuf::Timestamp stamp =
        TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(*when));
    *(std::string(bound) == "since" ? filter.mutable_start_time() : filter.mutable_end_time()) =
        stamp;
  }
  return filter;
}

void SetDeadline(grpc::ClientContext& context, absl::Duration timeout) {
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

std::string Outcome(commonpb::Outcome outcome) {
  std::string name = commonpb::Outcome_Name(outcome);
  std::string lower;
  for (char c : name.substr(8)) {
    lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return lower;
}

int Query(auditpb::AuditService::Stub& stub, const CtlArgs& args, std::ostream& out,
          std::ostream& err) {
  absl::StatusOr<auditpb::AuditFilter> filter = BuildFilter(args);
  int limit = 50;
  if (!filter.ok() || !absl::SimpleAtoi(args.Get("limit", "50"), &limit) || limit < 1 ||
      limit > 100000) {
    err << "tidepoolctl audit query: "
        << (filter.ok() ? "--limit must be 1 to 100000" : filter.status().message()) << "\n";
    return kExitUsage;
  }
  const bool json = args.Has("json");
  if (!json) {
    out << absl::StrFormat("%-8s %-20s %-24s %-28s %-8s %-20s %s\n", "SEQ", "TIME (UTC)", "ACTOR",
                           "ACTION", "OUTCOME", "SUBJECT", "REASON");
  }
  std::string token;
  int shown = 0;
  do {
    auditpb::QueryRequest request;
    *request.mutable_filter() = *filter;
    request.mutable_page()->set_page_size(std::min(1000, limit - shown));
    request.mutable_page()->set_page_token(token);
    auditpb::QueryResponse response;
    grpc::ClientContext context;
    SetDeadline(context, absl::Seconds(30));
    grpc::Status status = stub.Query(&context, request, &response);
    if (!status.ok()) {
      err << "tidepoolctl audit query: " << status.error_message() << "\n";
      return kExitFailure;
    }
    for (const commonpb::AuditEvent& event : response.events()) {
      if (json) {
        std::string line;
        (void)google::protobuf::util::MessageToJsonString(event, &line);
        out << line << "\n";
      } else {
        const absl::Time when =
            absl::FromUnixMicros(TimeUtil::TimestampToMicroseconds(event.server_time()));
        out << absl::StrFormat("%-8d %-20s %-24s %-28s %-8s %-20s %s\n", event.sequence(),
                               absl::FormatTime("%Y-%m-%d %H:%M:%S", when, absl::UTCTimeZone()),
                               Printable(event.actor().id()), Printable(event.action()),
                               Outcome(event.outcome()), Printable(event.subject_user_id()),
                               Printable(event.reason_code()));
      }
      ++shown;
    }
    token = response.page().next_page_token();
  } while (!token.empty() && shown < limit);
  return kExitOk;
}

int Export(auditpb::AuditService::Stub& stub, const CtlArgs& args, std::ostream& out,
           std::ostream& err) {
  absl::StatusOr<auditpb::AuditFilter> filter = BuildFilter(args);
  if (!filter.ok()) {
    err << "tidepoolctl audit export: " << filter.status().message() << "\n";
    return kExitUsage;
  }
  std::ofstream file;
  std::ostream* sink = &out;
  if (args.Has("output")) {
    file.open(args.Get("output"), std::ios::binary | std::ios::trunc);
    if (!file) {
      err << "tidepoolctl audit export: cannot write " << args.Get("output") << "\n";
      return kExitFailure;
    }
    sink = &file;
  }
  auditpb::ExportRequest request;
  *request.mutable_filter() = *filter;
  grpc::ClientContext context;
  SetDeadline(context, absl::Hours(1));
  auto reader = stub.Export(&context, request);
  auditpb::ExportResponse chunk;
  int64_t events = 0;
  while (reader->Read(&chunk)) {
    sink->write(chunk.json_lines().data(), static_cast<std::streamsize>(chunk.json_lines().size()));
    events += chunk.event_count();
  }
  grpc::Status status = reader->Finish();
  sink->flush();
  if (!status.ok() || !*sink) {
    err << "tidepoolctl audit export: "
        << (status.ok() ? "cannot write the output" : status.error_message()) << "\n";
    return kExitFailure;
  }
  if (args.Has("output")) {
    err << "exported " << events << " events to " << args.Get("output") << "\n";
  }
  return kExitOk;
}

int Verify(auditpb::AuditService::Stub& stub, const CtlArgs& args, std::ostream& out,
           std::ostream& err) {
  uint64_t from = 1;
  uint64_t to = 0;
  if (!absl::SimpleAtoi(args.Get("from", "1"), &from) ||
      !absl::SimpleAtoi(args.Get("to", "0"), &to)) {
    err << "tidepoolctl audit verify: --from and --to take sequence numbers\n";
    return kExitUsage;
  }
  auditpb::VerifyRequest request;
  request.set_start_sequence(from);
  request.set_end_sequence(to);
  auditpb::VerifyResponse response;
  grpc::ClientContext context;
  SetDeadline(context, absl::Hours(1));
  grpc::Status status = stub.Verify(&context, request, &response);
  if (!status.ok()) {
    err << "tidepoolctl audit verify: " << status.error_message() << "\n";
    return kExitFailure;
  }
  if (response.result() == auditpb::VERIFY_RESULT_OK) {
    out << "OK: records " << response.start_sequence() << ".." << response.end_sequence()
        << " intact (" << response.verified_record_count() << " records, "
        << response.verified_checkpoint_count() << " signed checkpoints)\n";
    return kExitOk;
  }
  out << "BROKEN at sequence " << response.first_bad_sequence() << ": "
      << auditpb::VerifyFailure_Name(response.failure()) << ": " << Printable(response.detail())
      << "\n";
  return kExitFailure;
}

int Checkpoint(auditpb::AuditService::Stub& stub, std::ostream& out, std::ostream& err) {
  auditpb::GetCheckpointResponse response;
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(10));
  grpc::Status status = stub.GetCheckpoint(&context, {}, &response);
  if (!status.ok()) {
    err << "tidepoolctl audit checkpoint: " << status.error_message() << "\n";
    return kExitFailure;
  }
  out << "tree size: " << response.checkpoint().tree_size() << "\n"
      << "time:      " << TimeUtil::ToString(response.checkpoint().time()) << "\n"
      << "key id:    " << response.checkpoint().key_id() << "\n"
      << "note:\n"
      << response.checkpoint().signed_note();
  return kExitOk;
}

}  // namespace

const char* AuditUsage() { return kUsage; }

int AuditCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.empty() || args[0] == "--help" || args[0] == "help") {
    (args.empty() ? err : out) << kUsage;
    return args.empty() ? kExitUsage : kExitOk;
  }
  const std::string command = args[0];
  std::set<std::string> with_values;
  std::set<std::string> switches;
  if (command == "query") {
    with_values = kFilterFlags;
    with_values.insert("limit");
    switches = {"json"};
  } else if (command == "export") {
    with_values = kFilterFlags;
    with_values.insert("output");
  } else if (command == "verify") {
    with_values = {"from", "to"};
  } else if (command != "checkpoint") {
    err << "tidepoolctl audit: unknown command \"" << command << "\"\n" << kUsage;
    return kExitUsage;
  }
  absl::StatusOr<CtlArgs> parsed =
      CtlArgs::Parse(std::vector<std::string>(args.begin() + 1, args.end()), with_values, switches);
  if (!parsed.ok()) {
    err << "tidepoolctl audit " << command << ": " << parsed.status().message() << "\n";
    return kExitUsage;
  }
  absl::StatusOr<CtlContext> context = LoadCtlContext(parsed->server_flags());
  if (!context.ok()) {
    err << "tidepoolctl: " << context.status().message() << "\n";
    return context.status().code() == absl::StatusCode::kInvalidArgument ? kExitUsage
                                                                         : kExitFailure;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = DialService(*context, "audit");
  if (!channel.ok()) {
    err << "tidepoolctl: " << channel.status().message() << "\n";
    return kExitFailure;
  }
  auto stub = auditpb::AuditService::NewStub(*channel);
  if (command == "query") {
    return Query(*stub, *parsed, out, err);
  }
  if (command == "export") {
    return Export(*stub, *parsed, out, err);
  }
  if (command == "verify") {
    return Verify(*stub, *parsed, out, err);
  }
  return Checkpoint(*stub, out, err);
}

}  // namespace tidepool::ctl
