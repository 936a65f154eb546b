#include "cmd/tidepoolctl/users_command.h"

#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "cmd/tidepoolctl/ctl_args.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/client_context.h"
#include "tidepool/auth/v1/auth_service.grpc.pb.h"

namespace tidepool::ctl {
namespace {

namespace authpb = ::tidepool::auth::v1;
namespace commonpb = ::tidepool::common::v1;
using google::protobuf::util::TimeUtil;

constexpr char kUsersUsage[] =
    "usage: tidepoolctl users <command> [flags]\n"
    "  list [--query TEXT] [--limit 100]\n"
    "  suspend --user USER_ID [--reason TEXT]     end every session now; refuse sign-in\n"
    "  reinstate --user USER_ID [--reason TEXT]\n"
    "  set-role --user USER_ID --role user|admin\n";

constexpr char kInvitesUsage[] =
    "usage: tidepoolctl invites <command> [flags]\n"
    "  create [--max-uses 1] [--expires 168h] [--email ADDRESS | --domain DOMAIN] [--note TEXT]\n"
    "  list [--all]\n"
    "  revoke --invite INVITE_ID\n";

std::string When(const google::protobuf::Timestamp& stamp) {
  if (stamp.seconds() == 0 && stamp.nanos() == 0) {
    return "-";
  }
  return absl::FormatTime("%Y-%m-%d %H:%M", absl::FromUnixSeconds(stamp.seconds()),
                          absl::UTCTimeZone());
}

void PrintUser(const authpb::User& user, std::ostream& out) {
  out << absl::StrFormat("%-30s %-32s %-6s %-10s %-16s %s\n", user.user_id(),
                         Printable(user.email()),
                         user.role() == commonpb::ROLE_ADMIN ? "admin" : "user",
                         user.state() == authpb::USER_STATE_SUSPENDED ? "suspended" : "active",
                         When(user.last_sign_in_time()), Printable(user.timezone()));
}

template <typename Fn>
int WithAuth(const CtlArgs& args, std::ostream& err, Fn fn) {
  absl::StatusOr<CtlContext> context = LoadCtlContext(args.server_flags());
  if (!context.ok()) {
    err << "tidepoolctl: " << context.status().message() << "\n";
    return context.status().code() == absl::StatusCode::kInvalidArgument ? kExitUsage
                                                                         : kExitFailure;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = DialService(*context, "auth");
  if (!channel.ok()) {
    err << "tidepoolctl: " << channel.status().message() << "\n";
    return kExitFailure;
  }
  auto stub = authpb::AuthService::NewStub(*channel);
  grpc::ClientContext call;
  call.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  grpc::Status status = fn(*stub, call);
  if (!status.ok()) {
    err << "tidepoolctl: " << status.error_message() << "\n";
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace

int UsersCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.empty() || args[0] == "help" || args[0] == "--help") {
    (args.empty() ? err : out) << kUsersUsage;
    return args.empty() ? kExitUsage : kExitOk;
  }
  const std::string command = args[0];
  std::set<std::string> with_values;
  if (command == "list") {
    with_values = {"query", "limit"};
  } else if (command == "suspend" || command == "reinstate") {
    with_values = {"user", "reason"};
  } else if (command == "set-role") {
    with_values = {"user", "role"};
  } else {
    err << "tidepoolctl users: unknown command \"" << command << "\"\n" << kUsersUsage;
    return kExitUsage;
  }
  absl::StatusOr<CtlArgs> parsed =
      CtlArgs::Parse(std::vector<std::string>(args.begin() + 1, args.end()), with_values, {});
  if (!parsed.ok()) {
    err << "tidepoolctl users " << command << ": " << parsed.status().message() << "\n";
    return kExitUsage;
  }
  if (command != "list" && !parsed->Has("user")) {
    err << "tidepoolctl users " << command << ": --user USER_ID is required\n";
    return kExitUsage;
  }
  if (command == "list") {
    int limit = 100;
    if (!absl::SimpleAtoi(parsed->Get("limit", "100"), &limit) || limit < 1 || limit > 1000) {
      err << "tidepoolctl users list: --limit must be 1 to 1000\n";
      return kExitUsage;
    }
    return WithAuth(*parsed, err, [&](authpb::AuthService::Stub& stub, grpc::ClientContext& call) {
      authpb::ListUsersRequest request;
      request.set_query(parsed->Get("query"));
      request.mutable_page()->set_page_size(limit);
      authpb::ListUsersResponse response;
      grpc::Status status = stub.ListUsers(&call, request, &response);
      if (status.ok()) {
        out << absl::StrFormat("%-30s %-32s %-6s %-10s %-16s %s\n", "USER", "EMAIL", "ROLE",
                               "STATE", "LAST SIGN-IN", "TIMEZONE");
        for (const authpb::User& user : response.users()) {
          PrintUser(user, out);
        }
      }
      return status;
    });
  }
  if (command == "set-role") {
    const std::string role = parsed->Get("role");
    if (role != "user" && role != "admin") {
      err << "tidepoolctl users set-role: --role must be user or admin\n";
      return kExitUsage;
    }
    return WithAuth(*parsed, err, [&](authpb::AuthService::Stub& stub, grpc::ClientContext& call) {
      authpb::SetUserRoleRequest request;
      request.set_user_id(parsed->Get("user"));
      request.set_role(role == "admin" ? commonpb::ROLE_ADMIN : commonpb::ROLE_USER);
      authpb::SetUserRoleResponse response;
      grpc::Status status = stub.SetUserRole(&call, request, &response);
      if (status.ok()) {
        PrintUser(response.user(), out);
        out << response.revoked_session_count() << " session(s) ended\n";
      }
      return status;
    });
  }
  return WithAuth(*parsed, err, [&](authpb::AuthService::Stub& stub, grpc::ClientContext& call) {
    if (command == "suspend") {
      authpb::SuspendUserRequest request;
      request.set_user_id(parsed->Get("user"));
      request.set_reason(parsed->Get("reason"));
      authpb::SuspendUserResponse response;
      grpc::Status status = stub.SuspendUser(&call, request, &response);
      if (status.ok()) {
        PrintUser(response.user(), out);
        out << response.revoked_session_count() << " session(s) ended\n";
      }
      return status;
    }
    authpb::ReinstateUserRequest request;
    request.set_user_id(parsed->Get("user"));
    request.set_reason(parsed->Get("reason"));
    authpb::ReinstateUserResponse response;
    grpc::Status status = stub.ReinstateUser(&call, request, &response);
    if (status.ok()) {
      PrintUser(response.user(), out);
    }
    return status;
  });
}

int InvitesCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.empty() || args[0] == "help" || args[0] == "--help") {
    (args.empty() ? err : out) << kInvitesUsage;
    return args.empty() ? kExitUsage : kExitOk;
  }
  const std::string command = args[0];
  std::set<std::string> with_values;
  std::set<std::string> switches;
  if (command == "create") {
    with_values = {"max-uses", "expires", "email", "domain", "note"};
  } else if (command == "list") {
    switches = {"all"};
  } else if (command == "revoke") {
    with_values = {"invite"};
  } else {
    err << "tidepoolctl invites: unknown command \"" << command << "\"\n" << kInvitesUsage;
    return kExitUsage;
  }
  absl::StatusOr<CtlArgs> parsed =
      CtlArgs::Parse(std::vector<std::string>(args.begin() + 1, args.end()), with_values, switches);
  if (!parsed.ok()) {
    err << "tidepoolctl invites " << command << ": " << parsed.status().message() << "\n";
    return kExitUsage;
  }
  if (command == "create") {
    int max_uses = 1;
    absl::Duration expires = absl::Hours(168);
    if (!absl::SimpleAtoi(parsed->Get("max-uses", "1"), &max_uses) ||
        !absl::ParseDuration(parsed->Get("expires", "168h"), &expires) ||
        expires <= absl::ZeroDuration()) {
      err << "tidepoolctl invites create: --max-uses takes a number, --expires a duration\n";
      return kExitUsage;
    }
    return WithAuth(*parsed, err, [&](authpb::AuthService::Stub& stub, grpc::ClientContext& call) {
      authpb::CreateInviteRequest request;
      request.set_max_uses(max_uses);
      *request.mutable_expire_time() =
          TimeUtil::SecondsToTimestamp(absl::ToUnixSeconds(absl::Now() + expires));
      if (parsed->Has("email")) {
        request.set_bound_email(parsed->Get("email"));
      } else if (parsed->Has("domain")) {
        request.set_bound_domain(parsed->Get("domain"));
      }
      request.set_note(parsed->Get("note"));
      authpb::CreateInviteResponse response;
      grpc::Status status = stub.CreateInvite(&call, request, &response);
      if (status.ok()) {
        out << "invite " << response.invite().invite_id() << " (" << response.invite().max_uses()
            << " use(s), expires " << When(response.invite().expire_time()) << " UTC)\n"
            << "code (shown once): " << response.code() << "\n";
      }
      return status;
    });
  }
  if (command == "list") {
    return WithAuth(*parsed, err, [&](authpb::AuthService::Stub& stub, grpc::ClientContext& call) {
      authpb::ListInvitesRequest request;
      if (!parsed->Has("all")) {
        request.set_state(authpb::INVITE_STATE_ACTIVE);
      }
      authpb::ListInvitesResponse response;
      grpc::Status status = stub.ListInvites(&call, request, &response);
      if (status.ok()) {
        out << absl::StrFormat("%-32s %-10s %-6s %-17s %-18s %s\n", "INVITE", "STATE", "USES",
                               "EXPIRES (UTC)", "FINGERPRINT", "BOUND TO");
        for (const authpb::Invite& invite : response.invites()) {
          std::string state = authpb::InviteState_Name(invite.state()).substr(13);
          out << absl::StrFormat("%-32s %-10s %-6s %-17s %-18s %s\n", invite.invite_id(), state,
                                 absl::StrCat(invite.use_count(), "/", invite.max_uses()),
                                 When(invite.expire_time()), invite.code_fingerprint(),
                                 Printable(invite.bound_email().empty() ? invite.bound_domain()
                                                                        : invite.bound_email()));
        }
      }
      return status;
    });
  }
  if (!parsed->Has("invite")) {
    err << "tidepoolctl invites revoke: --invite INVITE_ID is required\n";
    return kExitUsage;
  }
  return WithAuth(*parsed, err, [&](authpb::AuthService::Stub& stub, grpc::ClientContext& call) {
    authpb::RevokeInviteRequest request;
    request.set_invite_id(parsed->Get("invite"));
    authpb::RevokeInviteResponse response;
    grpc::Status status = stub.RevokeInvite(&call, request, &response);
    if (status.ok()) {
      out << "revoked " << response.invite().invite_id() << "\n";
    }
    return status;
  });
}

}  // namespace tidepool::ctl
