#include "services/audit/audit_service.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "lib/authz.h"
#include "lib/caller.h"
#include "lib/grpc_status.h"
#include "lib/log.h"
#include "lib/periodic_task.h"

namespace tidepool::audit {
namespace {

constexpr size_t kMaxExportChunk = 1024 * 1024;

}  // namespace

grpc::Status AuditServiceImpl::Append(grpc::ServerContext* context,
                                      const v1::AppendRequest* request,
                                      v1::AppendResponse* response) {
  if (request->events_size() > kMaxAppendBatch) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("a batch holds at most ", kMaxAppendBatch, " events"));
  }
  const std::string source =
      context->auth_context() != nullptr ? PeerIdentity(*context->auth_context()) : "";
  std::vector<common::v1::AuditEvent> events(request->events().begin(), request->events().end());
  absl::StatusOr<AppendResult> result = log_.Append(std::move(events), source);
  if (!result.ok()) {
    return ToGrpcStatus(result.status());
  }
  response->mutable_sequences()->Add(result->sequences.begin(), result->sequences.end());
  *response->mutable_commit_time() = google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(
      absl::ToUnixMicros(result->commit_time));
  return grpc::Status::OK;
}

grpc::Status AuditServiceImpl::Query(grpc::ServerContext* context, const v1::QueryRequest* request,
                                     v1::QueryResponse* response) {
  if (absl::Status admin = RequireAdmin(*context); !admin.ok()) {
    return ToGrpcStatus(admin);
  }
  absl::StatusOr<QueryPage> page =
      log_.Query(request->filter(), request->page().page_size(), request->page().page_token());
  if (!page.ok()) {
    return ToGrpcStatus(page.status());
  }
  for (common::v1::AuditEvent& event : page->events) {
    *response->add_events() = std::move(event);
  }
  response->mutable_page()->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status AuditServiceImpl::Export(grpc::ServerContext* context,
                                      const v1::ExportRequest* request,
                                      grpc::ServerWriter<v1::ExportResponse>* writer) {
  if (absl::Status admin = RequireAdmin(*context); !admin.ok()) {
    return ToGrpcStatus(admin);
  }
  v1::ExportResponse chunk;
  std::string* lines = chunk.mutable_json_lines();
  bool write_failed = false;
  auto flush = [&] {
    if (chunk.event_count() == 0) {
      return true;
    }
    if (!writer->Write(chunk)) {
      write_failed = true;
      return false;
    }
    chunk.Clear();
    lines = chunk.mutable_json_lines();
    return true;
  };
  absl::Status status = log_.Export(request->filter(), [&](const common::v1::AuditEvent& event) {
    if (context->IsCancelled()) {
      return false;
    }
    std::string line;
    if (!google::protobuf::util::MessageToJsonString(event, &line).ok()) {
      return false;
    }
    line.push_back('\n');
    if (lines->size() + line.size() > kMaxExportChunk && !flush()) {
      return false;
    }
    lines->append(line);
    chunk.set_event_count(chunk.event_count() + 1);
    chunk.set_last_sequence(event.sequence());
    return true;
  });
  if (write_failed || context->IsCancelled()) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the export was cancelled");
  }
  if (!status.ok()) {
    return ToGrpcStatus(status);
  }
  flush();
  return grpc::Status::OK;
}

grpc::Status AuditServiceImpl::Verify(grpc::ServerContext* context,
                                      const v1::VerifyRequest* request,
                                      v1::VerifyResponse* response) {
  if (absl::Status admin = RequireAdmin(*context); !admin.ok()) {
    return ToGrpcStatus(admin);
  }
  absl::StatusOr<v1::VerifyResponse> result =
      log_.Verify(request->start_sequence(), request->end_sequence());
  if (!result.ok()) {
    return ToGrpcStatus(result.status());
  }
  *response = *std::move(result);
  return grpc::Status::OK;
}

grpc::Status AuditServiceImpl::GetCheckpoint(grpc::ServerContext* context,
                                             const v1::GetCheckpointRequest* /*request*/,
                                             v1::GetCheckpointResponse* response) {
  if (absl::Status admin = RequireAdmin(*context); !admin.ok()) {
    return ToGrpcStatus(admin);
  }
  absl::StatusOr<v1::Checkpoint> checkpoint = log_.LatestCheckpoint();
  if (!checkpoint.ok()) {
    return ToGrpcStatus(checkpoint.status());
  }
  *response->mutable_checkpoint() = *std::move(checkpoint);
  return grpc::Status::OK;
}

namespace {

// Owns the log and the checkpoint timer for the lifetime of the hosted service.
class HostedAuditService {
 public:
  explicit HostedAuditService(std::unique_ptr<AuditLog> log)
      : log_(std::move(log)), timer_(absl::Seconds(1), [this] {
          absl::Status status = log_->MaybeCheckpoint(/*force=*/false);
          if (!status.ok()) {
            LogError("cannot sign an audit checkpoint", {{"error", std::string(status.message())}});
          }
        }) {}

  AuditLog& log() { return *log_; }

  void Stop() {
    timer_.Stop();
    absl::Status status = log_->MaybeCheckpoint(/*force=*/true);
    if (!status.ok()) {
      LogError("cannot sign the final audit checkpoint",
               {{"error", std::string(status.message())}});
    }
  }

 private:
  std::unique_ptr<AuditLog> log_;
  PeriodicTask timer_;
};

}  // namespace

ServiceDefinition AuditServiceDefinition() {
  ServiceDefinition definition;
  definition.name = "audit";
  definition.create =
      [](const ServiceContext& context) -> absl::StatusOr<std::vector<HostedService>> {
    AuditLogOptions options;
    options.dir = context.data_dir + "/audit";
    options.checkpoint_interval = context.config.audit.checkpoint_interval;
    options.checkpoint_every_records =
        static_cast<uint64_t>(context.config.audit.checkpoint_every_records);
    options.append_only_checkpoints = context.config.audit.checkpoint_append_only;
    absl::StatusOr<std::unique_ptr<AuditLog>> log =
        AuditLog::Open(options, context.clock, &context.metrics);
    if (!log.ok()) {
      return log.status();
    }
    auto hosted = std::make_shared<HostedAuditService>(*std::move(log));
    std::vector<HostedService> services;
    services.push_back(HostedService{.full_name = "tidepool.audit.v1.AuditService",
                                     .service = std::make_unique<AuditServiceImpl>(hosted->log()),
                                     .on_stopped = [hosted] { hosted->Stop(); },
                                     .state = hosted});
    return services;
  };
  return definition;
}

}  // namespace tidepool::audit
