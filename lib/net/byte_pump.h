#pragma once

// Relaying bytes between two Asio streams, for the egress relay (inside each sandbox) and the
// egress proxy (in the platform): one direction at a time, through one bounded buffer.

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/asio/write.hpp>

namespace tidepool::net {

// One direction of a relayed connection.
struct PumpDirection {
  std::vector<char> buffer;  // sized by the caller (the most held at once)
  bool eof = false;
  int64_t bytes = 0;                      // relayed in this direction
  std::atomic<int64_t>* total = nullptr;  // a shared counter to add to; may be null
};

// Reads from `from` into dir.buffer, writes all of it to `to`, and repeats until EOF (then
// shuts down the write side of `to`, the half-close) or an error. `connection` (kept alive by
// the pending handlers) provides:
//   bool Pumping() const;      // false once the connection is closing: handlers stop
//   void Close();              // on any error, and when both directions saw EOF
//   bool BothEof() const;      // both directions' eof
//   void Touch();              // bytes moved (for idle timeouts)
template <typename Connection, typename From, typename To>
void PumpBytes(std::shared_ptr<Connection> connection, From& from, To& to, PumpDirection& dir) {
  from.async_read_some(
      boost::asio::buffer(dir.buffer),
      [connection, &from, &to, &dir](boost::system::error_code ec, size_t n) {
        if (!connection->Pumping()) return;
        if (ec) {
          if (ec != boost::asio::error::eof) {
            connection->Close();
            return;
          }
          boost::system::error_code ignored;
          to.shutdown(boost::asio::socket_base::shutdown_send, ignored);
          dir.eof = true;
          if (connection->BothEof()) connection->Close();
          return;
        }
        connection->Touch();
        boost::asio::async_write(
            to, boost::asio::buffer(dir.buffer.data(), n),
            [connection, &from, &to, &dir](boost::system::error_code write_ec, size_t written) {
              if (!connection->Pumping()) return;
              if (write_ec) {
                connection->Close();
                return;
              }
              dir.bytes += static_cast<int64_t>(written);
              if (dir.total != nullptr) *dir.total += static_cast<int64_t>(written);
              connection->Touch();
              PumpBytes(connection, from, to, dir);
            });
      });
}

}  // namespace tidepool::net
