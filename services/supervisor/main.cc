// tidepool-supervisor: the entry process of every workspace sandbox (see README.md).
//
// It runs the profile's tool with restarts, guards the stamped configuration, and serves, on
// the workspace's Unix socket, to callers holding a valid per-workspace credential:
// GetStatus, ListPorts, RestartTool, StopTool, UpdateStamp, ListConfigEvents, the file RPCs
// (ListFiles, StatFile, MakeDirectory, MovePath, CopyPath, DeletePath, ExtractArchive),
// uploads, downloads, git clone, and terminals (a PTY running the user's shell) over
// WebSocket; every other path goes to the tool's own web UI (--tool-http).
//
// Environment (read once, then removed from the environment so the tool never sees them):
//   TIDEPOOL_WORKSPACE_ID    the workspace id
//   TIDEPOOL_WORKSPACE_KEY   the workspace key, hex (verifies credentials)
//   TIDEPOOL_PROFILE         the profile name
//   TIDEPOOL_DISK_QUOTA_BYTES  the volume quota the file API enforces (507 when reached)
// Usage: tidepool-supervisor --socket PATH [--tool-log PATH] [--env-file PATH] [--health-http PORT:PATH]
//        [--stamp-dir DIR] [--schedule-store PATH] [--schedule-format F] [--work-process NAME]...
//        [--egress-relay PORT:SOCKET] [--egress-forward PORT:HOST:PORT]... [--tool-http PORT]
//        [-- TOOL ARGV...]
//   --tool-http: the tool's web UI port; every path outside /_tidepool/ is forwarded there
//     (tool_proxy.h), for the proxy only.
//   --egress-relay: listen on 127.0.0.1:PORT and relay every connection to the platform's
//     egress proxy at the Unix socket SOCKET (egress_relay.h); the tool's HTTP(S)_PROXY.
//   --egress-forward PORT:HOST:PORT (repeatable): listen on 127.0.0.1:PORT and tunnel every
//     connection to HOST:PORT through the same egress proxy (CONNECT); for a model server on
//     the host's loopback, which the tool reaches at the same address inside the sandbox.
//   --schedule-store: the tool's jobs (ScheduleStore JSON), relative to the home directory;
//     GetStatus reports them with their next run times in the owner's timezone (TZ).
//   --schedule-format tidepool-json|openclaw-sqlite: how the store is kept (schedule_reader.h).
//   --work-process NAME (repeatable): a process name that counts as work while it runs;
//     GetStatus lists those running (the scaler keeps the workspace awake under them).
//   --stamp-dir: the read-only stamped configuration (stamp-manifest.json and the originals),
//     guarded by the config guard (config_guard.h); the tool starts only when it verifies.
//   --env-file: KEY=VALUE lines merged into the tool's environment at every (re)start.
//   --health-http PORT:PATH: the tool is healthy while GET http://127.0.0.1:PORT PATH answers
//     2xx or 3xx (otherwise: while its process runs).
#include <algorithm>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <iostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/periodic_task.h"
#include "lib/crypto/crypto.h"
#include "lib/workspace_credential.h"
#include "services/supervisor/config_guard.h"
#include "services/supervisor/egress_relay.h"
#include "services/supervisor/file_service.h"
#include "services/supervisor/git_clone.h"
#include "services/supervisor/ports.h"
#include "services/supervisor/resources.h"
#include "services/supervisor/safe_path.h"
#include "services/supervisor/schedule_reader.h"
#include "services/supervisor/terminal.h"
#include "services/supervisor/terminal_websocket.h"
#include "services/supervisor/tool_proxy.h"
#include "services/supervisor/tool_runner.h"
#include "services/supervisor/upload_manager.h"

namespace tidepool::supervisor {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using local = asio::local::stream_protocol;

constexpr char kVersion[] = TIDEPOOL_VERSION;

std::string TakeEnv(const char* name) {
  const char* value = std::getenv(name);
  std::string out = value == nullptr ? "" : value;
  ::unsetenv(name);
  return out;
}

struct Config {
  std::string workspace_id;
  std::string workspace_key;
  std::string profile;
  std::string socket_path;
  // The tool's schedule store, relative to the home directory ("" = none), and the owner's
  // timezone its jobs default to.
  std::string schedule_store;
  // "tidepool-json" (ScheduleStore) or "openclaw-sqlite" (OpenClaw's state database).
  std::string schedule_format = "tidepool-json";
  std::set<std::string> work_processes;
  std::string timezone;
  // The tool's web UI port inside the sandbox (0: none); other paths are forwarded there.
  int tool_http_port = 0;
  // The supervisor's own listening ports (the egress relay and its forwards): not listed by
  // ListPorts, never a preview.
  std::set<int> own_ports;
};

http::response<http::string_body> JsonReply(unsigned version, http::status status,
                                            std::string body) {
  http::response<http::string_body> response(status, version);
  response.set(http::field::content_type, "application/json");
  response.set(http::field::cache_control, "no-store");
  response.body() = std::move(body);
  response.prepare_payload();
  return response;
}

// {"code": ..., "message": ...}, escaped as JSON (messages may quote a file name).
http::response<http::string_body> Error(unsigned version, http::status status,
                                        absl::string_view code, absl::string_view message) {
  google::protobuf::Struct error;
  (*error.mutable_fields())["code"].set_string_value(std::string(code));
  (*error.mutable_fields())["message"].set_string_value(std::string(message));
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(error, &json);
  return JsonReply(version, status, std::move(json));
}

// Checks the request's workspace credential and that its caller is in `allowed` (empty: any
// valid caller). Returns the caller, or the 401/403 response to send instead.
template <typename Fields>
absl::StatusOr<std::string> CheckCaller(const Config& config, const Fields& request,
                                        const std::set<std::string>& allowed,
                                        std::optional<http::response<http::string_body>>* refusal,
                                        unsigned version) {
  auto header = request.find("X-Tidepool-Credential");
  absl::StatusOr<std::string> caller = VerifyWorkspaceCredential(
      config.workspace_key, config.workspace_id,
      header == request.end() ? "" : std::string(header->value()), absl::Now());
  if (!caller.ok()) {
    *refusal = Error(version, http::status::unauthorized, "UNAUTHENTICATED",
                     "a valid workspace credential is required");
  } else if (!allowed.empty() && !allowed.count(*caller)) {
    *refusal = Error(version, http::status::forbidden, "PERMISSION_DENIED",
                     "this caller may not use this route");
    return absl::PermissionDeniedError("not allowed");
  }
  return caller;
}

// Parses `body` into `request` with protobuf's JSON mapping (unknown fields are refused).
template <typename Request>
bool ParseBody(const std::string& body, Request* request) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  return google::protobuf::util::JsonStringToMessage(body.empty() ? "{}" : body, request, options)
      .ok();
}

template <typename Response>
http::response<http::string_body> Reply(unsigned version, const Response& response) {
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(response, &json);
  return JsonReply(version, http::status::ok, std::move(json));
}

http::status HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument: return http::status::bad_request;
    case absl::StatusCode::kUnauthenticated: return http::status::unauthorized;
    case absl::StatusCode::kPermissionDenied: return http::status::forbidden;
    case absl::StatusCode::kNotFound: return http::status::not_found;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted: return http::status::conflict;
    case absl::StatusCode::kFailedPrecondition: return http::status::precondition_failed;
    case absl::StatusCode::kResourceExhausted: return http::status::too_many_requests;
    case absl::StatusCode::kUnavailable: return http::status::service_unavailable;
    case absl::StatusCode::kUnimplemented: return http::status::not_implemented;
    default: return http::status::internal_server_error;
  }
}

// One RPC route: who may call it and what it does with the JSON body.
struct Route {
  std::set<std::string> callers;
  std::function<http::response<http::string_body>(unsigned version, const std::string& body)> run;
};

// A route that parses the request, calls `method` and answers its response or its error.
template <typename Request, typename Response>
Route FileRoute(FileService& files,
                absl::StatusOr<Response> (FileService::*method)(const Request&)) {
  return Route{{"proxy"}, [&files, method](unsigned version, const std::string& body) {
                 Request request;
                 if (!ParseBody(body, &request)) {
                   return Error(version, http::status::bad_request, "INVALID_ARGUMENT",
                                "malformed request");
                 }
                 absl::StatusOr<Response> response = (files.*method)(request);
                 if (!response.ok()) {
                   const absl::StatusCode code = response.status().code();
                   return Error(version,
                                code == absl::StatusCode::kResourceExhausted
                                    ? http::status::insufficient_storage
                                    : HttpStatusFor(code),
                                absl::StatusCodeToString(code), response.status().message());
                 }
                 return Reply(version, *response);
               }};
}

std::map<std::string, Route> Routes(const Config& config, ToolRunner& tool, FileService& files,
                                    ConfigGuard* guard, const SafeRoot* home_root) {
  std::map<std::string, Route> routes;
  routes["ListFiles"] = FileRoute(files, &FileService::ListFiles);
  routes["StatFile"] = FileRoute(files, &FileService::StatFile);
  routes["MakeDirectory"] = FileRoute(files, &FileService::MakeDirectory);
  routes["MovePath"] = FileRoute(files, &FileService::MovePath);
  routes["CopyPath"] = FileRoute(files, &FileService::CopyPath);
  routes["DeletePath"] = FileRoute(files, &FileService::DeletePath);
  routes["ExtractArchive"] = FileRoute(files, &FileService::ExtractArchive);
  routes["GetStatus"] = {{"proxy", "provisioner", "scaler"}, [&config, &tool, &files, guard, home_root](unsigned version,
                                                                               const std::string&) {
    v1::GetStatusResponse status;
    *status.mutable_tool() = tool.Status();
    *status.mutable_resources() = SampleProcesses();
    if (absl::StatusOr<int64_t> used = files.UsedBytes(); used.ok()) {
      status.mutable_resources()->set_disk_used_bytes(*used);
    }
    status.mutable_resources()->set_disk_quota_bytes(std::max<int64_t>(0, files.quota_bytes()));
    status.set_supervisor_version(kVersion);
    status.set_config_ok(guard == nullptr || guard->ok());
    if (guard != nullptr) {
      status.set_stamp_generation(guard->generation());
      for (v1::StampedFileStatus& file : guard->FileStatuses()) {
        *status.add_stamped_files() = std::move(file);
      }
    }
    const absl::Time now = absl::Now();
    if (home_root != nullptr && !config.schedule_store.empty()) {
      absl::StatusOr<std::vector<v1::ScheduledJob>> jobs =
          config.schedule_format == "openclaw-sqlite"
              ? ReadOpenClawJobs(*home_root, config.schedule_store, config.timezone, now)
              : ReadScheduledJobs(*home_root, config.schedule_store, config.timezone, now);
      if (jobs.ok()) {
        for (v1::ScheduledJob& job : *jobs) *status.add_scheduled_jobs() = std::move(job);
      } else {
        LogWarning("cannot read the tool's scheduled jobs",
                   {{"error", std::string(jobs.status().message())}});
      }
    }
    for (std::string& name : RunningProcessNames(config.work_processes)) {
      status.add_work_processes(std::move(name));
    }
    *status.mutable_status_time() =
        google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(now));
    return Reply(version, status);
  }};
  routes["ListPorts"] = {{"proxy"}, [&](unsigned version, const std::string&) {
    std::set<int> tool_pids;
    if (const int pid = tool.Status().pid(); pid > 0) tool_pids.insert(pid);
    absl::StatusOr<v1::ListPortsResponse> ports = ListListeningPorts(tool_pids, config.own_ports);
    if (!ports.ok()) {
      return Error(version, HttpStatusFor(ports.status().code()),
                   absl::StatusCodeToString(ports.status().code()), ports.status().message());
    }
    return Reply(version, *ports);
  }};
  routes["RestartTool"] = {{"provisioner"}, [&tool, guard](unsigned version, const std::string& body) {
    v1::RestartToolRequest request;
    if (!ParseBody(body, &request)) {
      return Error(version, http::status::bad_request, "INVALID_ARGUMENT", "malformed request");
    }
    if (guard != nullptr) guard->ClearQuarantine();
    tool.Restart();
    v1::RestartToolResponse response;
    *response.mutable_tool() = tool.Status();
    return Reply(version, response);
  }};
  routes["StopTool"] = {{"provisioner"}, [&](unsigned version, const std::string& body) {
    v1::StopToolRequest request;
    if (!ParseBody(body, &request)) {
      return Error(version, http::status::bad_request, "INVALID_ARGUMENT", "malformed request");
    }
    tool.Pause();
    v1::StopToolResponse response;
    *response.mutable_tool() = tool.Status();
    return Reply(version, response);
  }};
  routes["UpdateStamp"] = {{"provisioner"}, [&tool, guard](unsigned version, const std::string& body) {
    v1::UpdateStampRequest request;
    if (!ParseBody(body, &request)) {
      return Error(version, http::status::bad_request, "INVALID_ARGUMENT", "malformed request");
    }
    if (guard == nullptr) {
      return Error(version, http::status::precondition_failed, "FAILED_PRECONDITION",
                   "this workspace has no stamp directory");
    }
    absl::StatusOr<ConfigGuard::ReloadResult> reloaded = guard->Reload(request.generation());
    if (!reloaded.ok()) {
      return Error(version, HttpStatusFor(reloaded.status().code()),
                   absl::StatusCodeToString(reloaded.status().code()), reloaded.status().message());
    }
    v1::UpdateStampResponse response;
    response.set_applied_generation(reloaded->generation);
    for (const std::string& path : reloaded->changed_paths) response.add_changed_paths(path);
    // A tool held back by its configuration starts once the configuration is right again.
    if (request.restart_tool() || tool.Status().health() == v1::TOOL_HEALTH_BLOCKED_CONFIG) {
      guard->ClearQuarantine();
      tool.Restart();
      response.set_tool_restarted(true);
    }
    return Reply(version, response);
  }};
  routes["ListConfigEvents"] = {{"provisioner"}, [guard](unsigned version, const std::string& body) {
    v1::ListConfigEventsRequest request;
    if (!ParseBody(body, &request)) {
      return Error(version, http::status::bad_request, "INVALID_ARGUMENT", "malformed request");
    }
    const absl::Duration wait = absl::Seconds(request.wait().seconds()) +
                                absl::Nanoseconds(request.wait().nanos());
    if (wait < absl::ZeroDuration() || wait > absl::Seconds(30)) {
      return Error(version, http::status::bad_request, "INVALID_ARGUMENT",
                   "wait must be between 0 and 30 s");
    }
    if (guard == nullptr) return Reply(version, v1::ListConfigEventsResponse());
    return Reply(version, guard->Events(request.after_sequence(), wait));
  }};
  (void)config;
  return routes;
}

http::response<http::string_body> Handle(const Config& config, ToolRunner& tool,
                                         const std::map<std::string, Route>& routes,
                                         const http::request<http::string_body>& request) {
  const unsigned version = request.version();
  std::optional<http::response<http::string_body>> refusal;
  absl::StatusOr<std::string> caller = CheckCaller(config, request, {}, &refusal, version);
  if (refusal.has_value()) return *std::move(refusal);
  absl::string_view target(request.target().data(), request.target().size());
  if (absl::ConsumePrefix(&target, "/_tidepool/v1/")) {
    auto route = routes.find(std::string(target));
    if (route != routes.end()) {
      if (request.method() != http::verb::post) {
        return Error(version, http::status::method_not_allowed, "INVALID_ARGUMENT", "use POST");
      }
      if (!route->second.callers.count(*caller)) {
        return Error(version, http::status::forbidden, "PERMISSION_DENIED",
                     "this caller may not use this route");
      }
      return route->second.run(version, request.body());
    }
  }
  (void)tool;
  return Error(version, http::status::not_found, "NOT_FOUND", "no such supervisor route");
}

// GET /_tidepool/v1/terminal?session_id=&cols=&rows= with a WebSocket upgrade: the caller
// (the proxy) is checked, then the connection becomes the terminal until it closes.
bool MaybeServeTerminal(const Config& config, TerminalManager& terminals,
                        const http::request<http::string_body>& request, local::socket& socket) {
  absl::string_view target(request.target().data(), request.target().size());
  const size_t query_at = target.find('?');
  if (target.substr(0, query_at) != "/_tidepool/v1/terminal") return false;
  auto reply = [&](http::response<http::string_body> response) {
    boost::system::error_code ec;
    response.keep_alive(false);
    http::write(socket, response, ec);
  };
  std::optional<http::response<http::string_body>> refusal;
  (void)CheckCaller(config, request, {"proxy"}, &refusal, request.version());
  if (refusal.has_value()) {
    reply(*std::move(refusal));
    return true;
  }
  std::map<std::string, std::string> params;
  if (query_at != absl::string_view::npos) {
    for (absl::string_view pair : absl::StrSplit(target.substr(query_at + 1), '&')) {
      std::pair<std::string, std::string> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
      params[kv.first] = kv.second;
    }
  }
  int cols = 80;
  int rows = 24;
  const bool sizes_ok = (!params.count("cols") || absl::SimpleAtoi(params["cols"], &cols)) &&
                        (!params.count("rows") || absl::SimpleAtoi(params["rows"], &rows));
  absl::Status valid = sizes_ok ? CheckTerminalRequest(params["session_id"], cols, rows)
                                : absl::InvalidArgumentError("cols and rows must be numbers");
  if (!valid.ok() || !beast::websocket::is_upgrade(request)) {
    reply(Error(request.version(), http::status::bad_request, "INVALID_ARGUMENT",
                valid.ok() ? "a terminal needs a WebSocket upgrade" : valid.message()));
    return true;
  }
  TerminalWebSocket ws(std::move(socket));
  boost::system::error_code ec;
  ws.accept(request, ec);
  if (!ec) ServeTerminal(ws, terminals, params["session_id"], cols, rows);
  return true;
}

std::map<std::string, std::string> QueryParams(absl::string_view target) {
  std::map<std::string, std::string> params;
  const size_t query_at = target.find('?');
  if (query_at == absl::string_view::npos) return params;
  for (absl::string_view pair : absl::StrSplit(target.substr(query_at + 1), '&', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
    std::string value;
    for (size_t i = 0; i < kv.second.size(); ++i) {  // percent-decoding
      int hex = 0;
      if (kv.second[i] == '%' && i + 2 < kv.second.size() &&
          absl::SimpleHexAtoi(kv.second.substr(i + 1, 2), &hex)) {
        value.push_back(static_cast<char>(hex));
        i += 2;
      } else {
        value.push_back(kv.second[i] == '+' ? ' ' : kv.second[i]);
      }
    }
    params[kv.first] = std::move(value);
  }
  return params;
}

http::response<http::string_body> StatusError(unsigned version, const absl::Status& status) {
  return Error(version,
               status.code() == absl::StatusCode::kResourceExhausted
                   ? http::status::insufficient_storage
                   : HttpStatusFor(status.code()),
               absl::StatusCodeToString(status.code()), status.message());
}

// The byte-streaming file routes (proxy only): PUT/GET/DELETE /_tidepool/v1/upload and
// GET /_tidepool/v1/download. Bodies stream through without being held whole. Returns false
// if the request is not one of them; sets *keep_alive to whether the connection may go on.
bool MaybeServeTransfer(const Config& config, FileService& files, UploadManager& uploads,
                        http::request_parser<http::empty_body>& header, local::socket& socket,
                        beast::flat_buffer& buffer, bool* keep_alive) {
  const auto& request = header.get();
  absl::string_view target(request.target().data(), request.target().size());
  const absl::string_view route = target.substr(0, target.find('?'));
  if (route != "/_tidepool/v1/upload" && route != "/_tidepool/v1/download") return false;
  const unsigned version = request.version();
  boost::system::error_code ec;
  *keep_alive = false;
  auto reply = [&](http::response<http::string_body> response) {
    response.keep_alive(false);
    http::write(socket, response, ec);
  };
  std::optional<http::response<http::string_body>> refusal;
  (void)CheckCaller(config, request, {"proxy"}, &refusal, version);
  if (refusal.has_value()) {
    reply(*std::move(refusal));
    return true;
  }
  std::map<std::string, std::string> params = QueryParams(target);
  if (route == "/_tidepool/v1/download") {
    if (request.method() != http::verb::get) {
      reply(Error(version, http::status::method_not_allowed, "INVALID_ARGUMENT", "use GET"));
      return true;
    }
    http::response<http::empty_body> head(http::status::ok, version);
    head.set(http::field::content_type, "application/octet-stream");
    head.set(http::field::content_disposition, "attachment");
    head.set("X-Content-Type-Options", "nosniff");
    head.set(http::field::cache_control, "no-store");
    head.chunked(true);
    bool started = false;
    absl::Status streamed = files.StreamDownload(
        params["path"], params["format"], [&](absl::string_view chunk) {
          if (!started) {
            http::response_serializer<http::empty_body> serializer(head);
            http::write_header(socket, serializer, ec);
            started = true;
          }
          if (!ec && !chunk.empty()) {
            boost::asio::write(socket, http::make_chunk(boost::asio::buffer(chunk.data(), chunk.size())), ec);
          }
          return !ec;
        });
    if (!started) {
      if (!streamed.ok()) {
        reply(StatusError(version, streamed));
        return true;
      }
      http::response_serializer<http::empty_body> serializer(head);  // an empty file
      http::write_header(socket, serializer, ec);
    }
    if (streamed.ok() && !ec) {
      boost::asio::write(socket, http::make_chunk_last(), ec);
    }
    return true;  // after a failure mid-stream the connection closes without a last chunk
  }
  // Uploads.
  const std::string& upload_id = params["upload_id"];
  if (request.method() == http::verb::get || request.method() == http::verb::delete_) {
    absl::StatusOr<v1::UploadStatus> status = request.method() == http::verb::get
                                                  ? uploads.Status(upload_id)
                                                  : [&]() -> absl::StatusOr<v1::UploadStatus> {
                                                      absl::Status gone = uploads.Abandon(upload_id);
                                                      if (!gone.ok()) return gone;
                                                      return v1::UploadStatus();
                                                    }();
    reply(status.ok() ? Reply(version, *status) : StatusError(version, status.status()));
    return true;
  }
  if (request.method() != http::verb::put) {
    reply(Error(version, http::status::method_not_allowed, "INVALID_ARGUMENT", "use PUT"));
    return true;
  }
  int64_t offset = 0;
  int64_t total = 0;
  if (!absl::SimpleAtoi(params["offset"], &offset) || !absl::SimpleAtoi(params["total_size"], &total)) {
    reply(Error(version, http::status::bad_request, "INVALID_ARGUMENT",
                "offset and total_size must be numbers"));
    return true;
  }
  http::request_parser<http::buffer_body> body(std::move(header));
  body.body_limit(kNoBodyLimit);  // bounded by the volume quota, not by a buffer
  auto read_fn = [&](char* out, size_t n) -> ssize_t {
    if (body.is_done()) return 0;
    body.get().body().data = out;
    body.get().body().size = n;
    http::read(socket, buffer, body, ec);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) return -1;
    return static_cast<ssize_t>(n - body.get().body().size);
  };
  v1::UploadStatus current;
  absl::StatusOr<v1::UploadStatus> status = uploads.PutChunk(
      upload_id, params["path"], offset, total, params["overwrite"] == "true", read_fn, &current);
  if (status.ok()) {
    reply(Reply(version, *status));
  } else if (status.status().code() == absl::StatusCode::kAborted) {
    std::string json;
    (void)google::protobuf::util::MessageToJsonString(current, &json);
    reply(JsonReply(version, http::status::conflict, std::move(json)));
  } else {
    reply(StatusError(version, status.status()));
  }
  return true;
}

// POST /_tidepool/v1/GitClone: application/x-ndjson, one GitCloneResponse per line as git
// reports progress; a failure after the first line ends with an error object line.
bool MaybeServeGitClone(const Config& config, FileService& files,
                        const http::request<http::string_body>& request, local::socket& socket) {
  if (request.target() != "/_tidepool/v1/GitClone") return false;
  const unsigned version = request.version();
  boost::system::error_code ec;
  auto reply = [&](http::response<http::string_body> response) {
    response.keep_alive(false);
    http::write(socket, response, ec);
  };
  std::optional<http::response<http::string_body>> refusal;
  (void)CheckCaller(config, request, {"proxy"}, &refusal, version);
  if (refusal.has_value()) {
    reply(*std::move(refusal));
    return true;
  }
  v1::GitCloneRequest clone;
  if (request.method() != http::verb::post || !ParseBody(request.body(), &clone)) {
    reply(Error(version, http::status::bad_request, "INVALID_ARGUMENT", "malformed request"));
    return true;
  }
  bool started = false;
  auto line = [&](const std::string& json) {
    if (!started) {
      http::response<http::empty_body> head(http::status::ok, version);
      head.set(http::field::content_type, "application/x-ndjson");
      head.set(http::field::cache_control, "no-store");
      head.chunked(true);
      http::response_serializer<http::empty_body> serializer(head);
      http::write_header(socket, serializer, ec);
      started = true;
    }
    const std::string text = json + "\n";
    if (!ec) boost::asio::write(socket, http::make_chunk(boost::asio::buffer(text)), ec);
    return !ec;
  };
  absl::Status cloned = GitClone(files, clone, [&](const v1::GitCloneResponse& message) {
    std::string json;
    (void)google::protobuf::util::MessageToJsonString(message, &json);
    return line(json);
  });
  if (!cloned.ok() && !started) {
    reply(StatusError(version, cloned));
    return true;
  }
  if (!cloned.ok()) {
    std::string message(cloned.message());
    for (char& c : message) {
      if (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20) c = ' ';
    }
    line(absl::StrCat("{\"code\":\"", absl::StatusCodeToString(cloned.code()),
                      "\",\"message\":\"", message, "\"}"));
  }
  if (!ec) boost::asio::write(socket, http::make_chunk_last(), ec);
  return true;
}

// The header with which the proxy asks for a preview of a port inside the sandbox.
constexpr char kPreviewPortHeader[] = "X-Tidepool-Preview-Port";

// The port a preview request names if it may be previewed, else 0: a decimal port from 1024
// up, listening now, not the tool's own (its gateway and UI are reached only through the
// tool route, with identity) and not the supervisor's egress relay.
int PreviewPort(const Config& config, ToolRunner& tool, boost::beast::string_view value) {
  int port = 0;
  if (value.empty() || value.size() > 5 ||
      !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      !absl::SimpleAtoi(absl::string_view(value.data(), value.size()), &port) || port < 1024 ||
      port > 65535 || port == config.tool_http_port || config.own_ports.count(port) > 0) {
    return 0;
  }
  std::set<int> tool_pids;
  if (const int pid = tool.Status().pid(); pid > 0) tool_pids.insert(pid);
  absl::StatusOr<v1::ListPortsResponse> ports = ListListeningPorts(tool_pids, config.own_ports);
  if (!ports.ok()) return 0;
  for (const v1::ListeningPort& listening : ports->ports()) {
    if (listening.port() == port) return listening.tool() ? 0 : port;
  }
  return 0;
}

void Serve(const Config& config, ToolRunner& tool, const std::map<std::string, Route>& routes,
           TerminalManager& terminals, FileService& files, UploadManager& uploads,
           local::socket socket) {
  beast::flat_buffer buffer;
  boost::system::error_code ec;
  for (;;) {
    http::request_parser<http::empty_body> header;
    header.header_limit(16 * 1024);
    // Beast checks a Content-Length against the limit in force when the header completes;
    // uploads and the tool's routes are unbounded here, the JSON routes are checked below.
    header.body_limit(kNoBodyLimit);
    http::read_header(socket, buffer, header, ec);
    if (ec) return;
    if (header.get().find(kPreviewPortHeader) != header.get().end()) {
      // A preview: whatever the path (an app may well serve /_tidepool/...), it goes to the
      // named port, for the proxy only.
      std::optional<http::response<http::string_body>> refusal;
      (void)CheckCaller(config, header.get(), {"proxy"}, &refusal, header.get().version());
      int port = 0;
      if (!refusal.has_value()) {
        port = PreviewPort(config, tool, header.get()[kPreviewPortHeader]);
        if (port == 0) {
          refusal = Error(header.get().version(), http::status::not_found, "NOT_FOUND",
                          "nothing previewable is listening on that port");
        }
      }
      if (refusal.has_value()) {
        refusal->keep_alive(false);
        http::write(socket, *refusal, ec);
        return;
      }
      ForwardToTool(port, header, socket, buffer);
      return;
    }
    if (!absl::StartsWith(absl::string_view(header.get().target().data(), header.get().target().size()),
                          "/_tidepool/")) {
      // The tool's own web UI, for the proxy only.
      std::optional<http::response<http::string_body>> refusal;
      (void)CheckCaller(config, header.get(), {"proxy"}, &refusal, header.get().version());
      if (!refusal.has_value() && config.tool_http_port == 0) {
        refusal = Error(header.get().version(), http::status::not_found, "NOT_FOUND",
                        "this workspace's tool has no web UI");
      }
      if (refusal.has_value()) {
        refusal->keep_alive(false);
        http::write(socket, *refusal, ec);
        return;
      }
      ForwardToTool(config.tool_http_port, header, socket, buffer);
      return;
    }
    bool keep_alive = false;
    if (MaybeServeTransfer(config, files, uploads, header, socket, buffer, &keep_alive)) return;
    constexpr uint64_t kMaxJsonBody = 64 * 1024;
    if (header.content_length().value_or(0) > kMaxJsonBody) {
      http::response<http::string_body> too_large =
          Error(header.get().version(), http::status::payload_too_large, "INVALID_ARGUMENT",
                "the request body is over 64 KiB");
      too_large.keep_alive(false);
      http::write(socket, too_large, ec);
      return;
    }
    http::request_parser<http::string_body> parser(std::move(header));
    parser.body_limit(kMaxJsonBody);  // chunked bodies are counted as they arrive
    http::read(socket, buffer, parser, ec);
    if (ec) return;
    http::request<http::string_body> request = parser.release();
    if (MaybeServeTerminal(config, terminals, request, socket)) return;
    if (MaybeServeGitClone(config, files, request, socket)) return;
    http::response<http::string_body> response = Handle(config, tool, routes, request);
    response.keep_alive(request.keep_alive());
    http::write(socket, response, ec);
    if (ec || !request.keep_alive()) return;
  }
}

int Main(int argc, char** argv) {
  // No core dumps and no ptrace/proc access by the tool (same uid) to this process's memory,
  // which holds the workspace key.
  ::prctl(PR_SET_DUMPABLE, 0);
  struct rlimit no_core {};
  ::setrlimit(RLIMIT_CORE, &no_core);
  Config config;
  config.workspace_id = TakeEnv("TIDEPOOL_WORKSPACE_ID");
  absl::StatusOr<std::string> key = crypto::HexDecode(TakeEnv("TIDEPOOL_WORKSPACE_KEY"));
  config.profile = TakeEnv("TIDEPOOL_PROFILE");
  int64_t quota = 0;  // the volume quota for the file API; 0 = unlimited
  (void)absl::SimpleAtoi(TakeEnv("TIDEPOOL_DISK_QUOTA_BYTES"), &quota);
  ToolRunnerOptions tool_options;
  std::string stamp_dir;  // the read-only stamped configuration; empty: nothing is guarded
  EgressRelayOptions egress_options;  // no upstream socket: no relay
  // --egress-forward: loopback ports forwarded to a destination through the egress proxy.
  std::vector<std::pair<int, std::string>> forwards;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--socket" && i + 1 < argc) {
      config.socket_path = argv[++i];
    } else if (arg == "--tool-log" && i + 1 < argc) {
      tool_options.log_path = argv[++i];
    } else if (arg == "--egress-relay" && i + 1 < argc) {
      // PORT:SOCKET, e.g. 3128:/run/tidepool-egress/egress.sock
      const std::string value = argv[++i];
      const size_t colon = value.find(':');
      if (colon == std::string::npos ||
          !absl::SimpleAtoi(value.substr(0, colon), &egress_options.listen_port) ||
          egress_options.listen_port < 1 || egress_options.listen_port > 65535 ||
          colon + 1 == value.size()) {
        std::cerr << "tidepool-supervisor: --egress-relay wants PORT:SOCKET\n";
        return 2;
      }
      egress_options.upstream_socket = value.substr(colon + 1);
      config.own_ports.insert(egress_options.listen_port);
    } else if (arg == "--egress-forward" && i + 1 < argc) {
      // PORT:HOST:PORT, e.g. 11434:127.0.0.1:11434 (needs --egress-relay for the socket)
      const std::string value = argv[++i];
      const size_t colon = value.find(':');
      int port = 0;
      if (colon == std::string::npos || !absl::SimpleAtoi(value.substr(0, colon), &port) ||
          port < 1 || port > 65535 || value.find(':', colon + 1) == std::string::npos) {
        std::cerr << "tidepool-supervisor: --egress-forward wants PORT:HOST:PORT\n";
        return 2;
      }
      forwards.emplace_back(port, value.substr(colon + 1));
      config.own_ports.insert(port);
    } else if (arg == "--tool-http" && i + 1 < argc) {
      if (!absl::SimpleAtoi(argv[++i], &config.tool_http_port) || config.tool_http_port < 1 ||
          config.tool_http_port > 65535) {
        std::cerr << "tidepool-supervisor: --tool-http wants a port\n";
        return 2;
      }
    } else if (arg == "--schedule-store" && i + 1 < argc) {
      config.schedule_store = argv[++i];
    } else if (arg == "--schedule-format" && i + 1 < argc) {
      config.schedule_format = argv[++i];
      if (config.schedule_format != "tidepool-json" && config.schedule_format != "openclaw-sqlite") {
        std::cerr << "tidepool-supervisor: --schedule-format wants tidepool-json or openclaw-sqlite\n";
        return 2;
      }
    } else if (arg == "--work-process" && i + 1 < argc) {
      config.work_processes.insert(argv[++i]);
    } else if (arg == "--stamp-dir" && i + 1 < argc) {
      stamp_dir = argv[++i];
    } else if (arg == "--env-file" && i + 1 < argc) {
      tool_options.env_file = argv[++i];
    } else if (arg == "--health-http" && i + 1 < argc) {
      // PORT:PATH, e.g. 18789:/healthz
      const std::string value = argv[++i];
      const size_t colon = value.find(':');
      if (colon == std::string::npos ||
          !absl::SimpleAtoi(value.substr(0, colon), &tool_options.health_port) ||
          tool_options.health_port < 1 || tool_options.health_port > 65535) {
        std::cerr << "tidepool-supervisor: --health-http wants PORT:PATH\n";
        return 2;
      }
      tool_options.health_path = value.substr(colon + 1);
    } else if (arg == "--") {
      for (++i; i < argc; ++i) tool_options.argv.push_back(argv[i]);
    } else {
      std::cerr << "tidepool-supervisor: unknown argument " << arg << "\n";
      return 2;
    }
  }
  if (config.workspace_id.empty() || !key.ok() || key->size() != 32 || config.socket_path.empty()) {
    std::cerr << "tidepool-supervisor: needs TIDEPOOL_WORKSPACE_ID, a 32-byte hex "
                 "TIDEPOOL_WORKSPACE_KEY and --socket\n";
    return 2;
  }
  config.workspace_key = *key;
  tool_options.profile = config.profile;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const size_t eq = entry.find('=');
    if (eq != std::string::npos) tool_options.env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  if (!tool_options.log_path.empty()) {
    std::filesystem::create_directories(std::filesystem::path(tool_options.log_path).parent_path());
  }

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  asio::io_context io;
  ::unlink(config.socket_path.c_str());
  local::acceptor acceptor(io);
  boost::system::error_code ec;
  acceptor.open(local(), ec);
  if (!ec) acceptor.bind(local::endpoint(config.socket_path), ec);
  if (!ec) acceptor.listen(64, ec);
  if (ec) {
    std::cerr << "tidepool-supervisor: cannot listen on " << config.socket_path << ": "
              << ec.message() << "\n";
    return 1;
  }
  ::chmod(config.socket_path.c_str(), 0600);
  const std::string home =
      tool_options.env.count("HOME") ? tool_options.env["HOME"] : "/home/user";
  // The config guard: the tool never starts on a configuration that does not match its stamp.
  std::unique_ptr<ConfigGuard> guard;
  ToolRunner* tool_for_guard = nullptr;
  if (!stamp_dir.empty()) {
    ConfigGuardOptions guard_options;
    guard_options.stamp_dir = stamp_dir;
    guard_options.volume_root = home;
    guard_options.digest_key = DeriveStampDigestKey(config.workspace_key);
    guard_options.on_quarantine = [&tool_for_guard] {
      if (tool_for_guard != nullptr) {
        tool_for_guard->Block("the stamped configuration was changed too often; the tool is "
                              "stopped until the workspace is restarted");
      }
    };
    absl::StatusOr<std::unique_ptr<ConfigGuard>> created = ConfigGuard::Create(guard_options);
    if (!created.ok()) {
      std::cerr << "tidepool-supervisor: " << created.status().message() << "\n";
      return 1;
    }
    guard = *std::move(created);
    if (absl::StatusOr<ConfigGuard::ReloadResult> loaded = guard->Reload(); !loaded.ok()) {
      LogError("the stamped configuration cannot be verified; the tool will not start",
               {{"error", std::string(loaded.status().message())}});
    }
    tool_options.before_start = [&guard] { return guard->Check("pre_start"); };
  }
  ToolRunner tool(tool_options);
  tool_for_guard = &tool;
  if (guard != nullptr) guard->Start();
  tool.Start();
  FileService files(home, quota);
  if (auto tz = tool_options.env.find("TZ"); tz != tool_options.env.end()) config.timezone = tz->second;
  absl::StatusOr<SafeRoot> home_root = SafeRoot::Open(home);
  const std::map<std::string, Route> routes =
      Routes(config, tool, files, guard.get(), home_root.ok() ? &*home_root : nullptr);
  RealClock clock;
  UploadManager uploads(files, clock);
  // Unfinished uploads are discarded after 24 h without a chunk.
  PeriodicTask purge_uploads(absl::Hours(1),
                             [&uploads] { (void)uploads.PurgeOlderThan(UploadManager::kRetention); });
  // The sandbox's one way out: a loopback port relayed to the platform's egress proxy, each
  // connection introduced by a short-lived credential naming this workspace.
  std::unique_ptr<EgressRelay> egress;
  if (!egress_options.upstream_socket.empty()) {
    egress_options.preamble_token = [&config] {
      return MintWorkspaceCredential(config.workspace_key, config.workspace_id, "egress",
                                     absl::Now() + absl::Minutes(10));
    };
    absl::StatusOr<std::unique_ptr<EgressRelay>> started = EgressRelay::Start(egress_options);
    if (!started.ok()) {
      LogError("cannot start the egress relay; the workspace has no way out",
               {{"error", std::string(started.status().message())}});
    } else {
      egress = *std::move(started);
    }
  }
  // A destination the tool must reach at its own address (a model server on the host's
  // loopback): the same port on the sandbox's loopback, tunnelled through the egress proxy.
  std::vector<std::unique_ptr<EgressRelay>> forwarded;
  for (const auto& [port, destination] : forwards) {
    if (egress_options.upstream_socket.empty()) break;
    EgressRelayOptions options = egress_options;
    options.listen_port = port;
    options.tunnel_to = destination;
    absl::StatusOr<std::unique_ptr<EgressRelay>> started = EgressRelay::Start(options);
    if (!started.ok()) {
      LogError("cannot forward a port through the egress proxy",
               {{"port", port}, {"error", std::string(started.status().message())}});
      continue;
    }
    forwarded.push_back(*std::move(started));
  }
  TerminalOptions terminal_options;
  terminal_options.working_dir = tool_options.env.count("HOME") ? tool_options.env["HOME"] : "/";
  for (const char* name : {"HOME", "USER", "SHELL", "LANG", "PATH", "TZ", "HTTP_PROXY",
                           "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy"}) {
    if (auto it = tool_options.env.find(name); it != tool_options.env.end()) {
      terminal_options.env[name] = it->second;
    }
  }
  TerminalManager terminals(terminal_options);
  std::thread accept_thread([&] {
    for (;;) {
      local::socket socket(io);
      boost::system::error_code accept_ec;
      acceptor.accept(socket, accept_ec);
      if (accept_ec) return;
      std::thread(Serve, std::cref(config), std::ref(tool), std::cref(routes), std::ref(terminals),
                  std::ref(files), std::ref(uploads), std::move(socket))
          .detach();
    }
  });
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  if (guard != nullptr) guard->Stop();
  tool.Stop();
  if (egress != nullptr) egress->Stop();
  for (const std::unique_ptr<EgressRelay>& relay : forwarded) relay->Stop();
  ::unlink(config.socket_path.c_str());
  // Connections are served by detached threads; leave without unwinding under them.
  accept_thread.detach();
  std::_Exit(0);
}

}  // namespace
}  // namespace tidepool::supervisor

int main(int argc, char** argv) { return tidepool::supervisor::Main(argc, argv); }
