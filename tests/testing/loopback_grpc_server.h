#pragma once

// A real gRPC server for in-process tests: hand-written service implementations on
// 127.0.0.1 (a free port), plaintext, and a channel to it.

#include <initializer_list>
#include <memory>
#include <string>

#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

namespace tidepool::testing {

struct LoopbackGrpcServer {
  std::unique_ptr<grpc::Server> server;  // null if it could not start
  std::shared_ptr<grpc::Channel> channel;
  int port = 0;

  // Not owned: `services` must outlive the server.
  static LoopbackGrpcServer Start(std::initializer_list<grpc::Service*> services) {
    LoopbackGrpcServer started;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &started.port);
    for (grpc::Service* service : services) builder.RegisterService(service);
    started.server = builder.BuildAndStart();
    if (started.server == nullptr || started.port == 0) {
      started.server.reset();
      return started;
    }
    started.channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(started.port),
                                          grpc::InsecureChannelCredentials());
    return started;
  }
};

}  // namespace tidepool::testing
