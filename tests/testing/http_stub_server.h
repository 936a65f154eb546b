#pragma once

// A tiny HTTP/1.1 server on 127.0.0.1 (a free port) for tests that need to play an external
// party, such as a hostile identity provider. Each request is answered by the handler;
// one connection at a time, Connection: close.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

namespace tidepool::testing {

struct StubRequest {
  std::string method;
  std::string target;  // path and query
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

struct StubResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

class HttpStubServer {
 public:
  using Handler = std::function<StubResponse(const StubRequest&)>;

  explicit HttpStubServer(Handler handler);
  ~HttpStubServer();

  int port() const { return port_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int requests() const { return requests_.load(); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::atomic<int> requests_{0};
  std::thread thread_;
};

}  // namespace tidepool::testing
