#include "lib/authz.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/security/auth_context.h"
#include "tidepool/common/v1/options.pb.h"

namespace tidepool {
namespace {

namespace commonpb = ::tidepool::common::v1;

constexpr absl::string_view kOpenServices[] = {
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
};

bool IsPlatformIdentity(absl::string_view name) {
  for (const std::string& known : PlatformIdentities()) {
    if (known == name) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::string CallerName(int caller_enum_value) {
  if (caller_enum_value == commonpb::CALLER_CLI) {
    return "tidepoolctl";
  }
  if (caller_enum_value == commonpb::CALLER_UNSPECIFIED ||
      !commonpb::Caller_IsValid(caller_enum_value)) {
    return "";
  }
  std::string name = commonpb::Caller_Name(static_cast<commonpb::Caller>(caller_enum_value));
  return absl::AsciiStrToLower(absl::StripPrefix(name, "CALLER_"));
}

const std::vector<std::string>& PlatformIdentities() {
  static const std::vector<std::string>* names = [] {
    auto* out = new std::vector<std::string>;
    const google::protobuf::EnumDescriptor* callers = commonpb::Caller_descriptor();
    for (int i = 0; i < callers->value_count(); ++i) {
      std::string name = CallerName(callers->value(i)->number());
      if (!name.empty()) {
        out->push_back(std::move(name));
      }
    }
    return out;
  }();
  return *names;
}

absl::StatusOr<MethodAuthorizer> MethodAuthorizer::ForServices(
    const std::vector<std::string>& service_full_names) {
  MethodAuthorizer authorizer;
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const std::string& service_name : service_full_names) {
    const google::protobuf::ServiceDescriptor* service = pool->FindServiceByName(service_name);
    if (service == nullptr) {
      return absl::NotFoundError(absl::StrCat("service ", service_name, " is not linked in"));
    }
    for (int i = 0; i < service->method_count(); ++i) {
      const google::protobuf::MethodDescriptor* method = service->method(i);
      std::set<std::string>& allowed =
          authorizer.allowed_[absl::StrCat("/", service->full_name(), "/", method->name())];
      const auto& options = method->options();
      for (int j = 0; j < options.ExtensionSize(commonpb::allowed_callers); ++j) {
        std::string name = CallerName(options.GetExtension(commonpb::allowed_callers, j));
        if (!name.empty()) {
          allowed.insert(std::move(name));
        }
      }
    }
  }
  return authorizer;
}

absl::Status MethodAuthorizer::Check(absl::string_view path, absl::string_view caller) const {
  if (!IsPlatformIdentity(caller)) {
    return absl::UnauthenticatedError("the client certificate names no platform identity");
  }
  for (absl::string_view open : kOpenServices) {
    if (absl::StartsWith(path, open)) {
      return absl::OkStatus();
    }
  }
  auto it = allowed_.find(path);
  if (it == allowed_.end()) {
    return absl::PermissionDeniedError(absl::StrCat(path, " is not served here"));
  }
  if (it->second.count(std::string(caller)) == 0) {
    return absl::PermissionDeniedError(absl::StrCat("'", caller, "' may not call ", path));
  }
  return absl::OkStatus();
}

std::set<std::string> MethodAuthorizer::AllowedCallers(absl::string_view path) const {
  auto it = allowed_.find(path);
  return it == allowed_.end() ? std::set<std::string>{} : it->second;
}

std::vector<std::string> MethodAuthorizer::MethodPaths() const {
  std::vector<std::string> paths;
  for (const auto& [path, callers] : allowed_) {
    paths.push_back(path);
  }
  return paths;
}

std::string PeerIdentity(const grpc::AuthContext& context) {
  std::vector<grpc::string_ref> names = context.FindPropertyValues("x509_common_name");
  if (names.size() != 1) {
    return "";
  }
  return std::string(names[0].data(), names[0].size());
}

grpc::Status AllowlistAuthProcessor::Process(const InputMetadata& auth_metadata,
                                             grpc::AuthContext* context,
                                             OutputMetadata* /*consumed_auth_metadata*/,
                                             OutputMetadata* /*response_metadata*/) {
  auto path = auth_metadata.find(":path");
  if (path == auth_metadata.end()) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "request without a method path");
  }
  const std::string caller = PeerIdentity(*context);
  absl::Status decision =
      authorizer_.Check(absl::string_view(path->second.data(), path->second.size()), caller);
  if (!decision.ok()) {
    return grpc::Status(static_cast<grpc::StatusCode>(decision.code()),
                        std::string(decision.message()));
  }
  return grpc::Status::OK;
}

}  // namespace tidepool
