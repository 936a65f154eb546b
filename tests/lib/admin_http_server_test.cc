#include "lib/admin_http_server.h"

#include <atomic>
#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "tests/testing/http_get.h"
#include "tests/testing/status_matchers.h"

namespace tidepool {
namespace {

using ::testing::HasSubstr;
using ::tidepool::testing::HttpGet;
using ::tidepool::testing::HttpRequest;
using ::tidepool::testing::IsOk;
using ::tidepool::testing::StatusIs;

TEST(AdminHttpServerTest, ServesProbesAndMetrics) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter()
      .Name("demo_events_total")
      .Help("Demo.")
      .Register(*registry)
      .Add({})
      .Increment(3);
  std::atomic<bool> ready{false};
  AdminHttpServer server(registry, [&] { return ready.load(); });
  absl::StatusOr<int> port = server.Start("127.0.0.1", 0);
  ASSERT_THAT(port, IsOk());
  const std::string target = absl::StrCat("127.0.0.1:", *port);

  absl::StatusOr<tidepool::testing::HttpResponse> health = HttpGet(target, "/healthz");
  ASSERT_THAT(health, IsOk());
  EXPECT_EQ(health->status, 200);

  absl::StatusOr<tidepool::testing::HttpResponse> readyz = HttpGet(target, "/readyz");
  ASSERT_THAT(readyz, IsOk());
  EXPECT_EQ(readyz->status, 503);
  ready = true;
  readyz = HttpGet(target, "/readyz");
  ASSERT_THAT(readyz, IsOk());
  EXPECT_EQ(readyz->status, 200);

  absl::StatusOr<tidepool::testing::HttpResponse> metrics = HttpGet(target, "/metrics");
  ASSERT_THAT(metrics, IsOk());
  EXPECT_EQ(metrics->status, 200);
  EXPECT_THAT(metrics->content_type, HasSubstr("text/plain; version=0.0.4"));
  EXPECT_THAT(metrics->body, HasSubstr("demo_events_total 3"));

  absl::StatusOr<tidepool::testing::HttpResponse> missing = HttpGet(target, "/secrets");
  ASSERT_THAT(missing, IsOk());
  EXPECT_EQ(missing->status, 404);
  absl::StatusOr<tidepool::testing::HttpResponse> post = HttpRequest("POST", target, "/metrics");
  ASSERT_THAT(post, IsOk());
  EXPECT_EQ(post->status, 405);

  server.Stop();
  EXPECT_THAT(HttpGet(target, "/healthz"), StatusIs(absl::StatusCode::kUnavailable));
}

TEST(AdminHttpServerTest, BusyPortIsUnavailable) {
  auto registry = std::make_shared<prometheus::Registry>();
  AdminHttpServer first(registry, nullptr);
  absl::StatusOr<int> port = first.Start("127.0.0.1", 0);
  ASSERT_THAT(port, IsOk());
  AdminHttpServer second(registry, nullptr);
  EXPECT_THAT(second.Start("127.0.0.1", *port),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cannot listen")));
  EXPECT_THAT(second.Start("not-an-ip", 0), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace tidepool
