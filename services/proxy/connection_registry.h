#pragma once

// The edge's open connections: what each is (HTTP, WebSocket, terminal, preview), whose it is,
// and how to close it from another thread, for ListConnections and CloseConnections, for
// closing a revoked session's sockets at once, for the per-user WebSocket cap, and for the
// watchdog that ends connections past their deadline.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace tidepool::proxy {

// What a connection is; the values are tidepool.proxy.v1.ConnectionKind's.
enum class ConnectionKind { kHttp = 1, kWebSocket = 2, kTerminal = 3, kPreview = 4 };

// One open connection. The owning thread updates it; any thread may read it under the
// registry's lock or close it.
struct ConnectionEntry {
  uint64_t id = 0;
  ConnectionKind kind = ConnectionKind::kHttp;
  std::string source_address;
  absl::Time open_time;
  // Set once the connection carries an authenticated request (the latest one for HTTP).
  std::string user_id;
  std::string session_id;
  absl::Time session_issued_at;
  std::string workspace_id;
  // True once upgraded (WebSocket, terminal, a preview's WebSocket): counted against the
  // per-user cap.
  bool upgraded = false;
  // Ended by the watchdog after this long without traffic; InfiniteDuration: never.
  absl::Duration idle_limit = absl::InfiniteDuration();
  std::atomic<int64_t> bytes_received{0};
  std::atomic<int64_t> bytes_sent{0};
  std::atomic<int64_t> last_activity_unix_micros{0};
  // When the watchdog ends it (the header, idle or lifetime deadline), in Unix microseconds;
  // the owning thread sets it without the registry's lock. kNoDeadline: never.
  static constexpr int64_t kNoDeadline = INT64_MAX;
  std::atomic<int64_t> deadline_unix_micros{kNoDeadline};
  void SetDeadline(absl::Time at) {
    deadline_unix_micros = at == absl::InfiniteFuture() ? kNoDeadline : absl::ToUnixMicros(at);
  }
  // Closes it (shuts its sockets down so that blocked reads return); `reason` is a short
  // code. Called with the registry's lock held: must not call back into the registry.
  std::function<void(const std::string& reason)> close;
  bool closing = false;
};

class ConnectionRegistry {
 public:
  // Registers an entry; returns its id (assigned here).
  uint64_t Add(std::shared_ptr<ConnectionEntry> entry);
  void Remove(uint64_t id);

  // Runs `update` on the entry under the lock (for fields other than the atomics).
  void Update(uint64_t id, const std::function<void(ConnectionEntry&)>& update);

  // Copies of every entry's fields, oldest first.
  struct Snapshot {
    uint64_t id = 0;
    ConnectionKind kind = ConnectionKind::kHttp;
    std::string source_address;
    absl::Time open_time;
    std::string user_id;
    std::string session_id;
    std::string workspace_id;
    int64_t bytes_received = 0;
    int64_t bytes_sent = 0;
    absl::Time last_activity;
  };
  std::vector<Snapshot> List() const;

  // Closes every connection of `session_id`; returns how many.
  int CloseSession(const std::string& session_id, const std::string& reason);
  // Closes every connection of `user_id` authenticated with a token issued at or before
  // `issued_at_or_before` (InfiniteFuture: all of them); returns how many.
  int CloseUser(const std::string& user_id, absl::Time issued_at_or_before,
                const std::string& reason);
  // Closes every connection (shutdown).
  int CloseAll(const std::string& reason);
  // Closes the connections whose deadline has passed at `now`.
  int CloseExpired(absl::Time now);

  // Open WebSocket-like connections (WebSocket, terminal, preview upgrades) of a user.
  int CountWebSockets(const std::string& user_id) const;
  size_t size() const;

 private:
  int CloseIf(const std::function<bool(const ConnectionEntry&)>& match, const std::string& reason)
      ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, std::shared_ptr<ConnectionEntry>> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tidepool::proxy
