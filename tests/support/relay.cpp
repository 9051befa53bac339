// In-process relay fixture and small helpers for the integration tests.
#include "support/relay.hpp"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace switchboard::test {
namespace {

// SWITCHBOARD_TEST_LOG=debug shows the relay's own account of a failing test.
void apply_test_log_level() {
  // The logging registry is made here, before the relay's threads start. Made lazily by the
  // first log line of whichever thread comes first, its creation is ordered only inside the
  // uninstrumented spdlog library, where a thread sanitizer cannot see it.
  spdlog::default_logger_raw();
  if (const char* level = std::getenv("SWITCHBOARD_TEST_LOG")) {
    spdlog::set_level(spdlog::level::from_str(level));
  }
}

}  // namespace

InProcessRelay::InProcessRelay(core::Limits limits, unsigned threads) {
  core::ServerConfig config;
  config.listen = "127.0.0.1:0";
  config.grpc_listen = "127.0.0.1:0";
  config.admin_listen = "127.0.0.1:0";  // never the fixed default: relays run side by side
  config.threads = threads;
  config.limits = limits;
  apply_test_log_level();
  server_ = std::make_unique<core::Server>(config);
  server_->start();
}

InProcessRelay::InProcessRelay(core::ServerConfig config) {
  config.listen = "127.0.0.1:0";
  config.grpc_listen = "127.0.0.1:0";
  config.admin_listen = "127.0.0.1:0";
  apply_test_log_level();
  server_ = std::make_unique<core::Server>(std::move(config));
  server_->start();
}

InProcessRelay::~InProcessRelay() { shutdown(); }

void InProcessRelay::shutdown() {
  if (stopped_) return;
  stopped_ = true;
  server_->shutdown();
  server_->wait();
}

core::Limits fast_limits() {
  core::Limits limits;
  limits.handshake_timeout = std::chrono::milliseconds(300);
  limits.keepalive_interval = std::chrono::milliseconds(200);
  limits.slow_consumer_timeout = std::chrono::milliseconds(300);
  limits.drain_timeout = std::chrono::milliseconds(2000);
  return limits;
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return condition();
}

std::size_t resident_bytes(int pid) {
  std::ifstream status(pid == 0 ? std::string("/proc/self/status")
                                : "/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream fields(line.substr(6));
      std::size_t kib = 0;
      fields >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

}  // namespace switchboard::test
