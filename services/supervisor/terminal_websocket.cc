#include "services/supervisor/terminal_websocket.h"

#include <algorithm>
#include <atomic>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>  // before Boost: Asio 1.74 headers use std::exchange

#include "google/protobuf/util/json_util.h"
#include "tidepool/supervisor/v1/supervisor_service.pb.h"

namespace tidepool::supervisor {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using ErrorCode = boost::system::error_code;

// Output queued for the client beyond this is dropped, then resent from the scrollback.
constexpr size_t kMaxPendingBytes = 256 * 1024;
constexpr size_t kMaxFrameBytes = 64 * 1024;
constexpr size_t kMaxInputMessageBytes = 1024 * 1024;
// How soon input that did not fit the PTY is retried.
constexpr auto kInputRetry = std::chrono::milliseconds(10);
// How often a waiting ServeTerminal re-checks its state when another thread ran its handlers.
constexpr auto kDrivePeriod = std::chrono::milliseconds(50);

// Serialises the restart of a stopped io_context among ServeTerminal calls.
std::mutex& RestartMutex() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}

websocket::close_reason CloseReasonFor(const absl::Status& status) {
  websocket::close_code code = websocket::close_code::internal_error;
  if (status.code() == absl::StatusCode::kInvalidArgument) {
    code = websocket::close_code::policy_error;
  } else if (status.code() == absl::StatusCode::kResourceExhausted) {
    code = websocket::close_code::try_again_later;
  }
  // A close reason is at most 123 bytes.
  std::string message(status.message().substr(0, 120));
  return websocket::close_reason(code, message);
}

// The state of one connection. Strand-only members are touched only by handlers on strand_;
// members under mu_ are also touched by the session's reader thread (output and exit).
class Pump : public std::enable_shared_from_this<Pump> {
 public:
  Pump(TerminalWebSocket& ws, std::shared_ptr<TerminalSession> session, asio::io_context& io)
      : ws_(ws),
        session_(std::move(session)),
        strand_(asio::make_strand(io.get_executor())),
        input_timer_(strand_) {}

  // Before any handler runs: queue the scrollback replay.
  void Prime(const TerminalScrollback& scrollback, std::optional<int> exit_code) {
    std::lock_guard<std::mutex> lock(mu_);
    committed_end_ = scrollback.end_offset - scrollback.bytes.size();
    queued_end_ = scrollback.end_offset;
    if (!scrollback.bytes.empty()) {
      pending_bytes_ = scrollback.bytes.size();
      pending_.push_back(scrollback.bytes);
    }
    exit_code_ = exit_code;
  }

  void Start() {
    Post([this] {
      StartRead();
      PumpOutput();
    });
  }

  // Reader thread: output bytes at stream offset `offset`.
  void OnOutput(absl::string_view data, uint64_t offset) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!resync_ && offset + data.size() > queued_end_) {
      if (offset < queued_end_) {
        data.remove_prefix(queued_end_ - offset);
        offset = queued_end_;
      }
      if (offset > queued_end_ || pending_bytes_ + data.size() > kMaxPendingBytes) {
        // The client is slow: drop what waits and resend from the scrollback once it catches up.
        resync_ = true;
        pending_.clear();
        pending_bytes_ = 0;
        queued_end_ = committed_end_;
      } else {
        pending_.emplace_back(data);
        pending_bytes_ += data.size();
        queued_end_ = offset + data.size();
      }
    }
    KickLocked();
  }

  // Reader thread: the shell exited (after its last output).
  void OnExit(int exit_code) {
    std::lock_guard<std::mutex> lock(mu_);
    exit_code_ = exit_code;
    KickLocked();
  }

  // Any thread: ends the connection's work; the read chain stops once its operation completes.
  void Stop() {
    Post([this] {
      stopping_ = true;
      input_timer_.cancel();
    });
  }

  bool read_done() const { return read_done_.load(); }
  bool idle() const { return outstanding_.load() == 0; }

 private:
  template <typename F>
  void Post(F f) {
    ++outstanding_;
    asio::post(strand_, [self = shared_from_this(), f = std::move(f)]() mutable {
      f();
      self->Done();
    });
  }

  // Wraps a completion handler: runs on the strand and is counted until it has run.
  template <typename F>
  auto Bind(F f) {
    ++outstanding_;
    return asio::bind_executor(
        strand_, [self = shared_from_this(), f = std::move(f)](auto&&... args) mutable {
          f(std::forward<decltype(args)>(args)...);
          self->Done();
        });
  }

  void Done() { --outstanding_; }

  void KickLocked() {
    if (kick_posted_) {
      return;
    }
    kick_posted_ = true;
    Post([this] {
      {
        std::lock_guard<std::mutex> lock(mu_);
        kick_posted_ = false;
      }
      PumpOutput();
    });
  }

  // ---- output (strand) ----

  void PumpOutput() {
    if (writing_ || close_started_ || stopping_ || read_done_) {
      return;
    }
    std::string frame;
    bool text = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (resync_) {
        resync_ = false;
        // Taken under mu_ so no output is lost between the snapshot and the queue: later
        // chunks have offsets at or past end_offset, earlier ones are trimmed as duplicates.
        TerminalScrollback snapshot = session_->Snapshot();
        const uint64_t ring_start = snapshot.end_offset - snapshot.bytes.size();
        const uint64_t from = std::max(committed_end_, ring_start);
        if (from < snapshot.end_offset) {
          frame = snapshot.bytes.substr(static_cast<size_t>(from - ring_start));
        }
        committed_end_ = std::max(committed_end_, snapshot.end_offset);
        queued_end_ = committed_end_;
      }
      while (!pending_.empty() && frame.size() < kMaxFrameBytes) {
        frame += pending_.front();
        pending_bytes_ -= pending_.front().size();
        committed_end_ += pending_.front().size();
        pending_.pop_front();
      }
      if (frame.empty() && !resync_ && exit_code_.has_value() && !exit_sent_) {
        v1::TerminalControl control;
        control.mutable_exit()->set_exit_code(*exit_code_);
        google::protobuf::util::JsonPrintOptions options;
        options.always_print_primitive_fields = true;  // {"exit":{"exitCode":0}}
        (void)google::protobuf::util::MessageToJsonString(control, &frame, options);
        text = true;
        exit_sent_ = true;
      } else if (frame.empty() && exit_sent_ && !close_reason_.has_value()) {
        close_reason_ = websocket::close_reason(websocket::close_code::normal);
      }
    }
    if (!frame.empty()) {
      write_buffer_ = std::move(frame);
      writing_ = true;
      ws_.text(text);
      ws_.async_write(asio::buffer(write_buffer_),
                      Bind([this](ErrorCode ec, std::size_t) { OnWritten(ec); }));
      return;
    }
    if (close_reason_.has_value()) {
      close_started_ = true;
      ws_.async_close(*close_reason_, Bind([](ErrorCode) {}));
    }
  }

  void OnWritten(ErrorCode ec) {
    writing_ = false;
    if (ec) {
      Abort();
      return;
    }
    PumpOutput();
  }

  // A failed connection: make any pending operation complete.
  void Abort() {
    stopping_ = true;
    input_timer_.cancel();
    ErrorCode ignored;
    beast::get_lowest_layer(ws_).shutdown(asio::socket_base::shutdown_both, ignored);
  }

  void CloseWith(websocket::close_reason reason) {
    if (!close_reason_.has_value()) {
      close_reason_ = std::move(reason);
    }
    PumpOutput();
  }

  // ---- input (strand) ----

  void StartRead() {
    if (stopping_) {
      FinishReading();
      return;
    }
    ws_.async_read(read_buffer_, Bind([this](ErrorCode ec, std::size_t) { OnRead(ec); }));
  }

  void FinishReading() { read_done_ = true; }

  void OnRead(ErrorCode ec) {
    if (ec) {
      if (ec != websocket::error::closed) {
        Abort();
      }
      stopping_ = true;
      FinishReading();
      return;
    }
    const bool binary = ws_.got_binary();
    std::string message = beast::buffers_to_string(read_buffer_.data());
    read_buffer_.consume(read_buffer_.size());
    if (binary) {
      input_ = std::move(message);
      WriteInput();
      return;
    }
    v1::TerminalControl control;
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    if (!google::protobuf::util::JsonStringToMessage(message, &control, options).ok()) {
      CloseWith(websocket::close_reason(websocket::close_code::policy_error,
                                        "invalid TerminalControl JSON"));
    } else if (control.has_resize()) {
      absl::Status resized = session_->Resize(control.resize().cols(), control.resize().rows());
      if (resized.code() == absl::StatusCode::kInvalidArgument) {
        CloseWith(CloseReasonFor(resized));
      }
      // FAILED_PRECONDITION: the shell exited; its exit message follows.
    }
    StartRead();
  }

  void WriteInput() {
    while (!input_.empty() && !stopping_) {
      absl::StatusOr<size_t> written = session_->TryWrite(input_);
      if (!written.ok()) {
        input_.clear();  // the shell exited: its exit message follows
        break;
      }
      input_.erase(0, *written);
      if (!input_.empty()) {
        // The PTY's input queue is full: hold further client frames until it drains.
        input_timer_.expires_after(kInputRetry);
        input_timer_.async_wait(Bind([this](ErrorCode) { WriteInput(); }));
        return;
      }
    }
    StartRead();
  }

  TerminalWebSocket& ws_;
  const std::shared_ptr<TerminalSession> session_;
  // Beast 1.74's composed operations need an executor with on_work_started(), which the
  // polymorphic any_io_executor lacks: the strand wraps the io_context's own executor.
  asio::strand<asio::io_context::executor_type> strand_;
  std::atomic<int> outstanding_{0};
  std::atomic<bool> read_done_{false};

  // Strand only.
  asio::steady_timer input_timer_;
  beast::flat_buffer read_buffer_;
  std::string input_;
  std::string write_buffer_;
  bool writing_ = false;
  bool stopping_ = false;
  bool close_started_ = false;
  std::optional<websocket::close_reason> close_reason_;

  // Shared with the reader thread. pending_ holds the bytes [committed_end_, queued_end_);
  // committed_end_ is the end of what was handed to the socket.
  std::mutex mu_;
  std::deque<std::string> pending_;
  size_t pending_bytes_ = 0;
  uint64_t committed_end_ = 0;
  uint64_t queued_end_ = 0;
  bool resync_ = false;
  bool kick_posted_ = false;
  bool exit_sent_ = false;
  std::optional<int> exit_code_;
};

// Runs handlers of the stream's io_context until `done()`.
template <typename Pred>
void DriveUntil(asio::io_context* io, Pred done) {
  while (!done()) {
    io->run_one_for(kDrivePeriod);
    if (io->stopped()) {
      std::lock_guard<std::mutex> lock(RestartMutex());
      io->restart();
    }
  }
}

}  // namespace

absl::Status CheckTerminalRequest(absl::string_view session_id, int cols, int rows) {
  if (!IsValidTerminalSessionId(session_id)) {
    return absl::InvalidArgumentError(
        "session_id must be 1-64 characters of letters, digits, '_' and '-'");
  }
  if (cols < 1 || cols > 1000 || rows < 1 || rows > 1000) {
    return absl::InvalidArgumentError("cols and rows must be within 1..1000");
  }
  return absl::OkStatus();
}

void ServeTerminal(TerminalWebSocket& ws, TerminalManager& manager, const std::string& session_id,
                   int cols, int rows) {
  absl::StatusOr<std::shared_ptr<TerminalSession>> attached =
      manager.Attach(session_id, cols, rows);
  if (!attached.ok()) {
    ErrorCode ignored;
    ws.close(CloseReasonFor(attached.status()), ignored);
    return;
  }
  std::shared_ptr<TerminalSession> session = *std::move(attached);

  const auto* io_executor = ws.get_executor().target<asio::io_context::executor_type>();
  if (io_executor == nullptr) {
    ErrorCode ignored;
    ws.close(websocket::close_reason(websocket::close_code::internal_error,
                                     "terminal stream not on an io_context"),
             ignored);
    session->Detach();
    return;
  }
  asio::io_context* io = &io_executor->context();

  ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
  ws.read_message_max(kMaxInputMessageBytes);
  ws.auto_fragment(false);

  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  {
    std::lock_guard<std::mutex> lock(RestartMutex());
    work.emplace(io->get_executor());
    if (io->stopped()) {
      io->restart();
    }
  }

  auto pump = std::make_shared<Pump>(ws, session, *io);
  std::weak_ptr<Pump> weak = pump;
  TerminalSubscribeResult subscribed = session->Subscribe(
      [weak](absl::string_view data, uint64_t offset) {
        if (auto p = weak.lock()) {
          p->OnOutput(data, offset);
        }
      },
      [weak](int exit_code) {
        if (auto p = weak.lock()) {
          p->OnExit(exit_code);
        }
      });
  pump->Prime(subscribed.scrollback, subscribed.exit_code);
  pump->Start();

  DriveUntil(io, [&] { return pump->read_done(); });
  subscribed.subscription->Cancel();  // no output callback runs or posts after this
  pump->Stop();
  DriveUntil(io, [&] { return pump->idle(); });
  session->Detach();
  std::lock_guard<std::mutex> lock(RestartMutex());
  work.reset();
}

}  // namespace tidepool::supervisor
