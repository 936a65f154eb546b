#include "services/proxy/activity_reporter.h"

#include <chrono>
#include <utility>

#include "google/protobuf/util/time_util.h"
#include "grpcpp/client_context.h"
#include "lib/log.h"
#include "tidepool/scaler/v1/scaler_service.grpc.pb.h"

namespace tidepool::proxy {

namespace scalerpb = ::tidepool::scaler::v1;

ActivityReporter::ActivityReporter(std::function<std::shared_ptr<grpc::Channel>()> scaler,
                                   Clock& clock, absl::Duration interval)
    : scaler_(std::move(scaler)), clock_(clock), interval_(interval) {}

ActivityReporter::~ActivityReporter() { Stop(); }

void ActivityReporter::Record(const std::string& workspace_id, const std::string& user_id,
                              int source, int64_t bytes) {
  absl::MutexLock lock(&mu_);
  Pending& pending = pending_[Key(workspace_id, user_id, source)];
  ++pending.events;
  pending.bytes += bytes;
}

void ActivityReporter::Flush() {
  std::map<Key, Pending> batch;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(pending_);
  }
  if (batch.empty()) return;
  scalerpb::RecordActivityRequest request;
  const google::protobuf::Timestamp now =
      google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(clock_.Now()));
  for (const auto& [key, pending] : batch) {
    scalerpb::ActivityRecord* record = request.add_records();
    record->set_workspace_id(std::get<0>(key));
    record->set_user_id(std::get<1>(key));
    record->set_source(static_cast<scalerpb::ActivitySource>(std::get<2>(key)));
    *record->mutable_time() = now;
    record->set_byte_count(pending.bytes);
    record->set_event_count(pending.events);
  }
  std::shared_ptr<grpc::Channel> channel = scaler_();
  grpc::Status status(grpc::StatusCode::UNAVAILABLE, "the scaler cannot be found");
  if (channel != nullptr) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    scalerpb::RecordActivityResponse response;
    status = scalerpb::ScalerService::NewStub(channel)->RecordActivity(&context, request, &response);
  }
  absl::MutexLock lock(&mu_);
  if (status.ok()) {
    ++stats_.batches_sent;
    stats_.records_sent += request.records_size();
  } else {
    if (stats_.batches_failed++ % 60 == 0) {
      LogWarning("cannot report workspace activity to the scaler",
                 {{"code", static_cast<int>(status.error_code())},
                  {"records", request.records_size()}});
    }
  }
}

void ActivityReporter::Start() {
  if (task_ == nullptr) task_ = std::make_unique<PeriodicTask>(interval_, [this] { Flush(); });
}

void ActivityReporter::Stop() {
  if (task_ != nullptr) {
    task_->Stop();
    task_.reset();
  }
  Flush();
}

ActivityReporter::Stats ActivityReporter::GetStats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace tidepool::proxy
