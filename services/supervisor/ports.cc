#include "services/supervisor/ports.h"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace tidepool::supervisor {
namespace {

constexpr char kListen[] = "0A";

struct Socket {
  int port = 0;
  std::string address;
  std::string inode;
};

// "0100007F:1F90" (little-endian IPv4) or a 32-hex-digit IPv6 address.
std::string DecodeAddress(const std::string& hex) {
  if (hex.size() == 8) {
    unsigned value = 0;
    if (!absl::SimpleHexAtoi(hex, &value)) return "";
    return absl::StrCat(value & 0xff, ".", (value >> 8) & 0xff, ".", (value >> 16) & 0xff, ".",
                        value >> 24);
  }
  if (hex == "00000000000000000000000000000000") return "::";
  if (hex == "00000000000000000000000001000000") return "::1";
  return "ipv6";
}

void ReadTable(const std::string& path, std::vector<Socket>* out, bool* read_any) {
  std::ifstream in(path);
  if (!in) return;
  *read_any = true;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (fields.size() < 10 || fields[3] != kListen) continue;
    std::pair<std::string, std::string> local = absl::StrSplit(fields[1], ':');
    unsigned port = 0;
    if (!absl::SimpleHexAtoi(local.second, &port)) continue;
    out->push_back(Socket{static_cast<int>(port), DecodeAddress(local.first), fields[9]});
  }
}

std::string ReadSmall(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.substr(0, 256);
}

}  // namespace

absl::StatusOr<v1::ListPortsResponse> ListListeningPorts(const std::set<int>& tool_pids,
                                                         const std::set<int>& omit_ports,
                                                         const std::string& proc_root) {
  std::vector<Socket> sockets;
  bool read_any = false;
  ReadTable(proc_root + "/net/tcp", &sockets, &read_any);
  ReadTable(proc_root + "/net/tcp6", &sockets, &read_any);
  if (!read_any) {
    return absl::UnavailableError("the socket tables cannot be read");
  }
  // socket inode -> pid, from every process's fds that /proc lets us see.
  std::map<std::string, int> owners;
  if (DIR* dir = ::opendir(proc_root.c_str()); dir != nullptr) {
    while (dirent* entry = ::readdir(dir)) {
      int pid = 0;
      if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
      const std::string fd_dir = absl::StrCat(proc_root, "/", pid, "/fd");
      DIR* fds = ::opendir(fd_dir.c_str());
      if (fds == nullptr) continue;
      while (dirent* fd = ::readdir(fds)) {
        char target[64] = {};
        const std::string link = absl::StrCat(fd_dir, "/", fd->d_name);
        const ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
        if (n <= 0) continue;
        absl::string_view text(target, static_cast<size_t>(n));
        if (absl::ConsumePrefix(&text, "socket:[") && absl::ConsumeSuffix(&text, "]")) {
          owners.emplace(std::string(text), pid);
        }
      }
      ::closedir(fds);
    }
    ::closedir(dir);
  }
  std::map<std::pair<int, std::string>, v1::ListeningPort> ports;
  for (const Socket& socket : sockets) {
    if (omit_ports.count(socket.port)) continue;
    v1::ListeningPort port;
    port.set_port(socket.port);
    port.set_address(socket.address);
    if (auto owner = owners.find(socket.inode); owner != owners.end()) {
      const int pid = owner->second;
      port.set_pid(pid);
      std::string comm = ReadSmall(absl::StrCat(proc_root, "/", pid, "/comm"));
      while (!comm.empty() && comm.back() == '\n') comm.pop_back();
      port.set_process_name(comm);
      std::string cmdline = ReadSmall(absl::StrCat(proc_root, "/", pid, "/cmdline"));
      for (char& c : cmdline) {
        if (c == '\0') c = ' ';
      }
      while (!cmdline.empty() && cmdline.back() == ' ') cmdline.pop_back();
      port.set_command(cmdline);
      // The tool itself, or a child of it (same process group as a tool pid is not visible
      // here; direct pids are).
      port.set_tool(tool_pids.count(pid) > 0);
    }
    ports.emplace(std::make_pair(socket.port, socket.address), port);
  }
  v1::ListPortsResponse response;
  for (auto& [key, port] : ports) *response.add_ports() = std::move(port);
  return response;
}

}  // namespace tidepool::supervisor
