#include "services/supervisor/terminal_websocket.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>  // before Boost: Asio 1.74 headers use std::exchange

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "tidepool/supervisor/v1/supervisor_service.pb.h"

namespace tidepool::supervisor {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using local = asio::local::stream_protocol;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

TerminalOptions ShOptions() {
  TerminalOptions options;
  options.shell = {"/bin/sh"};
  options.env = {{"PATH", "/usr/bin:/bin"}, {"HOME", "/tmp"}, {"PS1", "$ "}};
  options.reap_interval = absl::ZeroDuration();
  return options;
}

// A Unix-socket WebSocket server like the supervisor's: an io_context nobody runs, one thread
// per connection doing a synchronous accept and then ServeTerminal.
class TerminalServer {
 public:
  TerminalServer(TerminalManager& manager, std::string socket_path, int connections)
      : manager_(manager), acceptor_(io_, local::endpoint(socket_path)) {
    thread_ = std::thread([this, connections] {
      for (int i = 0; i < connections; ++i) {
        local::socket socket(io_);
        boost::system::error_code ec;
        acceptor_.accept(socket, ec);
        if (ec) {
          return;
        }
        websocket::stream<local::socket> ws(std::move(socket));
        beast::http::request<beast::http::empty_body> request;
        beast::flat_buffer buffer;
        beast::http::read(ws.next_layer(), buffer, request, ec);
        if (ec) {
          return;
        }
        ws.accept(request, ec);
        if (ec) {
          return;
        }
        // The route's query: session_id=...&cols=..&rows=.. (fixed by the tests).
        const std::string target(request.target());
        const std::string id = target.substr(target.find("session_id=") + 11,
                                             target.find('&') - target.find("session_id=") - 11);
        ServeTerminal(ws, manager_, id, 80, 24);
      }
    });
  }
  ~TerminalServer() { thread_.join(); }

 private:
  TerminalManager& manager_;
  asio::io_context io_;
  local::acceptor acceptor_;
  std::thread thread_;
};

// A synchronous WebSocket client.
class Client {
 public:
  Client(const std::string& socket_path, const std::string& session_id) : ws_(io_) {
    ws_.next_layer().connect(local::endpoint(socket_path));
    ws_.control_callback([this](websocket::frame_type kind, beast::string_view) {
      if (kind == websocket::frame_type::pong) {
        ++pongs_;
      }
    });
    ws_.handshake("localhost",
                  "/_tidepool/v1/terminal?session_id=" + session_id + "&cols=80&rows=24");
  }

  void SendInput(const std::string& bytes) {
    ws_.binary(true);
    ws_.write(asio::buffer(bytes));
  }
  void SendControl(const std::string& json) {
    ws_.text(true);
    ws_.write(asio::buffer(json));
  }
  void Ping() { ws_.ping({}); }

  // Reads binary frames until the output contains `needle`; false if the connection ends or a
  // text frame arrives first (it is kept in last_text()).
  bool ReadUntil(absl::string_view needle) {
    while (!absl::StrContains(output_, needle)) {
      if (!ReadFrame() || !last_text_.empty()) {
        return false;
      }
    }
    return true;
  }

  // Reads until a text frame arrives and returns it.
  std::optional<std::string> ReadControl() {
    while (last_text_.empty()) {
      if (!ReadFrame()) {
        return std::nullopt;
      }
    }
    return std::exchange(last_text_, "");
  }

  // Reads once more, expecting the server's close.
  boost::system::error_code ReadError() {
    beast::flat_buffer buffer;
    boost::system::error_code ec;
    while (!ec) {
      ws_.read(buffer, ec);
    }
    return ec;
  }

  void Close() { ws_.close(websocket::close_code::normal); }

  const std::string& output() const { return output_; }
  int pongs() const { return pongs_; }
  websocket::close_reason reason() const { return ws_.reason(); }

 private:
  bool ReadFrame() {
    beast::flat_buffer buffer;
    boost::system::error_code ec;
    ws_.read(buffer, ec);
    if (ec) {
      return false;
    }
    if (ws_.got_text()) {
      last_text_ = beast::buffers_to_string(buffer.data());
    } else {
      output_ += beast::buffers_to_string(buffer.data());
    }
    return true;
  }

  asio::io_context io_;
  websocket::stream<local::socket> ws_;
  std::string output_;
  std::string last_text_;
  int pongs_ = 0;
};

TEST(ServeTerminalTest, RoundTripResizeAndExitOverARealWebSocket) {
  tidepool::testing::ScopedTempDir dir;
  const std::string socket_path = dir.Join("s.sock");
  TerminalManager manager(ShOptions());
  TerminalServer server(manager, socket_path, 1);

  Client client(socket_path, "web-1");
  client.Ping();
  client.SendInput("echo hello-$((6*7))\n");
  ASSERT_TRUE(client.ReadUntil("hello-42")) << client.output();
  EXPECT_EQ(client.pongs(), 1);

  client.SendControl(R"({"resize":{"cols":120,"rows":50}})");
  client.SendInput("stty size; echo sized-$((1+1))\n");
  ASSERT_TRUE(client.ReadUntil("sized-2")) << client.output();
  EXPECT_THAT(client.output(), ::testing::HasSubstr("50 120"));

  client.SendInput("exit 5\n");
  std::optional<std::string> control = client.ReadControl();
  ASSERT_TRUE(control.has_value()) << client.output();
  v1::TerminalControl parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(*control, &parsed).ok()) << *control;
  ASSERT_TRUE(parsed.has_exit()) << *control;
  EXPECT_EQ(parsed.exit().exit_code(), 5);
  EXPECT_EQ(*control, R"({"exit":{"exitCode":5}})");
  EXPECT_EQ(client.ReadError(), websocket::error::closed);
  EXPECT_EQ(client.reason().code, websocket::close_code::normal);
}

TEST(ServeTerminalTest, ReconnectReplaysScrollbackAndKeepsTheShell) {
  tidepool::testing::ScopedTempDir dir;
  const std::string socket_path = dir.Join("s.sock");
  TerminalManager manager(ShOptions());
  TerminalServer server(manager, socket_path, 3);
  {
    Client client(socket_path, "tab-7");
    client.SendInput("KEPT=v-$((2*4)); echo first-$((5+5))\n");
    ASSERT_TRUE(client.ReadUntil("first-10")) << client.output();
    client.Close();
  }
  {
    Client client(socket_path, "tab-7");
    ASSERT_TRUE(client.ReadUntil("first-10")) << client.output();  // the replay
    client.SendInput("echo \"kept=$KEPT\"\n");
    ASSERT_TRUE(client.ReadUntil("kept=v-8")) << client.output();
    client.SendInput("exit\n");
    std::optional<std::string> control = client.ReadControl();
    ASSERT_TRUE(control.has_value());
    EXPECT_EQ(*control, R"({"exit":{"exitCode":0}})");
  }
  {
    // An invalid control message closes the connection with a policy error.
    Client client(socket_path, "tab-8");
    client.SendControl(R"({"resize":{"cols":"wide"}})");
    EXPECT_EQ(client.ReadError(), websocket::error::closed);
    EXPECT_EQ(client.reason().code, websocket::close_code::policy_error);
  }
}

TEST(ServeTerminalTest, RefusedAttachClosesWithPolicyError) {
  tidepool::testing::ScopedTempDir dir;
  const std::string socket_path = dir.Join("s.sock");
  TerminalManager manager(ShOptions());
  TerminalServer server(manager, socket_path, 1);
  Client client(socket_path, "bad.id");
  EXPECT_EQ(client.ReadError(), websocket::error::closed);
  EXPECT_EQ(client.reason().code, websocket::close_code::policy_error);
  EXPECT_THAT(CheckTerminalRequest("bad.id", 80, 24), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CheckTerminalRequest("good-id", 80, 24), IsOk());
}

}  // namespace
}  // namespace tidepool::supervisor
