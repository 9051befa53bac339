// Child-process relay with captured output, and a minimal blocking HTTP client.
#include "support/child_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace switchboard::test {

ChildServer::ChildServer(const std::string& binary, std::vector<std::string> args,
                         std::map<std::string, std::string> environment) {
  int out[2];
  int err[2];
  if (::pipe(out) != 0 || ::pipe(err) != 0) throw std::runtime_error("pipe failed");
  // Prepared before fork: only async-signal-safe calls are allowed in the child.
  std::vector<std::string> all{binary};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_text;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    if (std::strncmp(*entry, "SWITCHBOARD_", 12) != 0) env_text.emplace_back(*entry);
  }
  for (const auto& [name, value] : environment) env_text.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (auto& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(err[1], STDERR_FILENO);
    ::close(out[0]);
    ::close(out[1]);
    ::close(err[0]);
    ::close(err[1]);
    ::execve(binary.c_str(), argv.data(), envp.data());
    std::_Exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  out_reader_ = std::thread([this, fd = out[0]] { read_pipe(fd, out_); });
  err_reader_ = std::thread([this, fd = err[0]] { read_pipe(fd, err_); });
}

ChildServer::~ChildServer() {
  if (!exit_code_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    (void)wait_exit(std::chrono::seconds(10));
  }
  if (out_reader_.joinable()) out_reader_.join();
  if (err_reader_.joinable()) err_reader_.join();
}

void ChildServer::read_pipe(int fd, std::string& into) {
  char buffer[4096];
  for (;;) {
    const auto n = ::read(fd, buffer, sizeof buffer);
    if (n <= 0) break;
    std::lock_guard lock(mutex_);
    into.append(buffer, static_cast<std::size_t>(n));
    changed_.notify_all();
  }
  ::close(fd);
  std::lock_guard lock(mutex_);
  --open_pipes_;
  changed_.notify_all();
}

bool ChildServer::wait_for_output(const std::string& text, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] {
    return out_.find(text) != std::string::npos || err_.find(text) != std::string::npos ||
           open_pipes_ == 0;
  }) && (out_.find(text) != std::string::npos || err_.find(text) != std::string::npos);
}

bool ChildServer::wait_listening(bool admin, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto left = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
  };
  if (!wait_for_output("listening core ", left())) return false;
  // The lines are printed together, core first: wait for the end of the block.
  if (admin && !wait_for_output("listening admin ", left())) return false;
  return true;
}

std::optional<int> ChildServer::wait_exit(std::chrono::milliseconds timeout) {
  if (exit_code_) return exit_code_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    const int done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) break;
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    // waitpid has no timeout form; a short poll interval bounds the wait.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  // Output written before the exit must be read before callers look at it.
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, std::chrono::seconds(5), [&] { return open_pipes_ == 0; });
  return exit_code_;
}

void ChildServer::signal(int signal_number) {
  if (!exit_code_ && pid_ > 0) ::kill(pid_, signal_number);
}

std::string ChildServer::out() const {
  std::lock_guard lock(mutex_);
  return out_;
}

std::string ChildServer::err() const {
  std::lock_guard lock(mutex_);
  return err_;
}

std::uint16_t ChildServer::port(const std::string& kind) const {
  const std::string text = out();
  const std::string prefix = "listening " + kind + " ";
  const auto at = text.find(prefix);
  if (at == std::string::npos) return 0;
  const auto end = text.find('\n', at);
  const auto line = text.substr(at, end - at);
  const auto colon = line.rfind(':');
  return static_cast<std::uint16_t>(std::stoul(line.substr(colon + 1)));
}

RunResult run_server(const std::string& binary, std::vector<std::string> args,
                     std::map<std::string, std::string> environment,
                     std::chrono::milliseconds timeout) {
  ChildServer child(binary, std::move(args), std::move(environment));
  RunResult result;
  const auto code = child.wait_exit(timeout);
  if (!code) {
    child.signal(SIGKILL);
    (void)child.wait_exit(std::chrono::seconds(10));
  }
  result.exit_code = code.value_or(-1);
  result.out = child.out();
  result.err = child.err();
  return result;
}

HttpResponse http_request(std::uint16_t port, const std::string& method, const std::string& target,
                          std::chrono::milliseconds timeout) {
  HttpResponse response;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return response;
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return response;
  }
  const std::string request =
      method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return response;
  }
  std::string raw;
  char buffer[16384];
  // Bounded: the server closes after one response, and every read times out.
  for (int reads = 0; reads < 100000; ++reads) {
    const auto n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    raw.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const auto header_end = raw.find("\r\n\r\n");
  if (header_end == std::string::npos || raw.rfind("HTTP/1.1 ", 0) != 0) return response;
  response.status = std::stoi(raw.substr(9, 3));
  response.headers = raw.substr(0, header_end);
  response.body = raw.substr(header_end + 4);
  return response;
}

std::optional<double> metric_value(const std::string& exposition, const std::string& series) {
  std::istringstream lines(exposition);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nullopt;
}

}  // namespace switchboard::test
