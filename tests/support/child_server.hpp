// Test support: the real switchboard-server binary as a child process with its output captured,
// its environment controlled, and a plain HTTP client for its admin endpoint.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace switchboard::test {

class ChildServer {
public:
  /// Starts `binary ARGS...` with only the given SWITCHBOARD_* variables set (any inherited
  /// ones are removed). Does not wait for anything.
  ChildServer(const std::string& binary, std::vector<std::string> args,
              std::map<std::string, std::string> environment = {});
  ~ChildServer();
  ChildServer(const ChildServer&) = delete;
  ChildServer& operator=(const ChildServer&) = delete;

  /// Waits until `text` appears in stdout or stderr; returns whether it did within `timeout`.
  bool wait_for_output(const std::string& text,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10));
  /// Waits for the "listening core" line (and "listening admin" when `admin`); false when the
  /// process ended or the timeout passed first.
  bool wait_listening(bool admin, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  /// Waits for the exit: its code, 128+N when killed by signal N, or nothing on timeout.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void signal(int signal_number);

  std::string out() const;
  std::string err() const;
  /// The port of a "listening KIND H:P" line (KIND: core, grpc, admin), 0 when not printed.
  std::uint16_t port(const std::string& kind) const;
  int pid() const { return pid_; }

private:
  void read_pipe(int fd, std::string& into);

  int pid_ = -1;
  std::optional<int> exit_code_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string out_;
  std::string err_;
  int open_pipes_ = 2;
  std::thread out_reader_;
  std::thread err_reader_;
};

/// Runs the binary to completion (bounded by `timeout`, then killed): exit code and output.
struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
RunResult run_server(const std::string& binary, std::vector<std::string> args,
                     std::map<std::string, std::string> environment = {},
                     std::chrono::milliseconds timeout = std::chrono::seconds(10));

struct HttpResponse {
  int status = 0;  ///< 0: no response (connection failed or timed out)
  std::string headers;
  std::string body;
};
/// One HTTP/1.1 request to 127.0.0.1:port, connection closed after it; bounded by `timeout`.
HttpResponse http_request(std::uint16_t port, const std::string& method, const std::string& target,
                          std::chrono::milliseconds timeout = std::chrono::seconds(5));

/// The value of the Prometheus sample `series` (name with its labels exactly as exposed, e.g.
/// `switchboard_streams_total{door="grpc",status="OK"}`), or nothing when absent.
std::optional<double> metric_value(const std::string& exposition, const std::string& series);

}  // namespace switchboard::test
