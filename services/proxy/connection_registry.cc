#include "services/proxy/connection_registry.h"

#include <utility>

namespace tidepool::proxy {

uint64_t ConnectionRegistry::Add(std::shared_ptr<ConnectionEntry> entry) {
  absl::MutexLock lock(&mu_);
  entry->id = next_id_++;
  const uint64_t id = entry->id;
  entries_[id] = std::move(entry);
  return id;
}

void ConnectionRegistry::Remove(uint64_t id) {
  absl::MutexLock lock(&mu_);
  entries_.erase(id);
}

void ConnectionRegistry::Update(uint64_t id, const std::function<void(ConnectionEntry&)>& update) {
  absl::MutexLock lock(&mu_);
  if (auto it = entries_.find(id); it != entries_.end()) update(*it->second);
}

std::vector<ConnectionRegistry::Snapshot> ConnectionRegistry::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<Snapshot> out;
  out.reserve(entries_.size());
  for (const auto& [id, entry] : entries_) {
    out.push_back(Snapshot{.id = id,
                           .kind = entry->kind,
                           .source_address = entry->source_address,
                           .open_time = entry->open_time,
                           .user_id = entry->user_id,
                           .session_id = entry->session_id,
                           .workspace_id = entry->workspace_id,
                           .bytes_received = entry->bytes_received.load(),
                           .bytes_sent = entry->bytes_sent.load(),
                           .last_activity = absl::FromUnixMicros(
                               entry->last_activity_unix_micros.load())});
  }
  return out;
}

int ConnectionRegistry::CloseIf(const std::function<bool(const ConnectionEntry&)>& match,
                                const std::string& reason) {
  absl::MutexLock lock(&mu_);
  int closed = 0;
  for (auto& [id, entry] : entries_) {
    if (entry->closing || !match(*entry)) continue;
    entry->closing = true;
    if (entry->close) entry->close(reason);
    ++closed;
  }
  return closed;
}

int ConnectionRegistry::CloseSession(const std::string& session_id, const std::string& reason) {
  if (session_id.empty()) return 0;
  return CloseIf([&](const ConnectionEntry& e) { return e.session_id == session_id; }, reason);
}

int ConnectionRegistry::CloseUser(const std::string& user_id, absl::Time issued_at_or_before,
                                  const std::string& reason) {
  if (user_id.empty()) return 0;
  return CloseIf(
      [&](const ConnectionEntry& e) {
        return e.user_id == user_id && e.session_issued_at <= issued_at_or_before;
      },
      reason);
}

int ConnectionRegistry::CloseAll(const std::string& reason) {
  return CloseIf([](const ConnectionEntry&) { return true; }, reason);
}

int ConnectionRegistry::CloseExpired(absl::Time now) {
  return CloseIf(
      [now](const ConnectionEntry& e) {
        return e.deadline_unix_micros.load() <= absl::ToUnixMicros(now) ||
               now - absl::FromUnixMicros(e.last_activity_unix_micros.load()) > e.idle_limit;
      },
      "deadline");
}

int ConnectionRegistry::CountWebSockets(const std::string& user_id) const {
  absl::MutexLock lock(&mu_);
  int count = 0;
  for (const auto& [id, entry] : entries_) {
    if (entry->user_id == user_id && entry->upgraded) ++count;
  }
  return count;
}

size_t ConnectionRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

}  // namespace tidepool::proxy
