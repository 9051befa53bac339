// Test support: the real switchboard-server binary as a child process on an ephemeral port.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace switchboard::test {

class ServerProcess {
public:
  /// Starts `binary --listen 127.0.0.1:PORT ARGS...` and waits for its "listening core" line.
  /// `core_port` 0 lets the system pick; a test restarting a relay passes the previous port.
  explicit ServerProcess(const std::string& binary, std::vector<std::string> args = {},
                         std::uint16_t core_port = 0);
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  std::uint16_t port() const { return port_; }
  /// The gateway's port from the "listening grpc" line, waiting up to `timeout` for it; 0 when
  /// the relay serves no gRPC.
  std::uint16_t grpc_port(std::chrono::milliseconds timeout = std::chrono::seconds(5)) const;
  int pid() const { return pid_; }
  /// Sends `signal` and waits up to `timeout` for the exit; returns the exit code, or -1 on
  /// timeout (the process is then killed), or 128+N when killed by signal N.
  int stop(int signal, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  /// Peak resident set size (VmHWM) in bytes.
  std::size_t peak_rss() const;
  std::size_t rss() const;

private:
  struct GrpcLine;
  int pid_ = -1;
  std::uint16_t port_ = 0;
  std::shared_ptr<GrpcLine> grpc_;  // shared with the thread that drains the relay's stdout
};

}  // namespace switchboard::test
