// Soak peer: echo responder, broadcast verifier and traffic generator over one BlockingClient.
#include "soak/peer.hpp"

#include <fmt/format.h>

#include "soak/body.hpp"

namespace switchboard::soak {
namespace {

constexpr std::size_t kMaxChunk = 1024 * 1024;
// A stall or pause is never longer than this, whatever the chaos loop asks.
constexpr std::int64_t kLongestWaitMs = 10'000;

std::string metadata_value(const wire::Metadata& metadata, std::string_view key) {
  for (const auto& [k, v] : metadata) {
    if (k == key) return v;
  }
  return {};
}

std::uint64_t elapsed_ms(Clock::time_point start) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
}

}  // namespace

SoakPeer::SoakPeer(PeerConfig config) : config_(std::move(config)) {
  client::ConnectOptions options;
  options.port = config_.port;
  options.channel = config_.channel;
  options.accept_requests = true;
  client_ = std::make_unique<client::BlockingClient>(options);
  id_ = client_->peer_id();
  who_ = id_.to_string();
  client_->serve([this](client::BlockingStream& stream) { handle_request(stream); });
  client_->on_broadcast([this](client::BlockingStream& stream) { handle_broadcast(stream); });
  config_.emit(fmt::format("J {} {}", who_, config_.channel_index));
  watcher_ = std::thread([this] {
    const auto outcome = client_->wait_closed();
    if (!closing_.exchange(true)) {
      config_.emit(fmt::format("C {} {}", who_, status_name(outcome.status)));
    }
  });
}

SoakPeer::~SoakPeer() {
  close();
  client_.reset();  // waits for every handler thread
}

void SoakPeer::start_traffic() {
  traffic_ = std::thread([this] { traffic_loop(); });
}

void SoakPeer::join_traffic() {
  if (traffic_.joinable()) traffic_.join();
}

void SoakPeer::stall_reads(std::chrono::milliseconds how_long) {
  stall_until_ms_ = now_ms() + std::min<std::int64_t>(how_long.count(), kLongestWaitMs);
}

void SoakPeer::pause_responses(std::chrono::milliseconds how_long) {
  pause_until_ms_ = now_ms() + std::min<std::int64_t>(how_long.count(), kLongestWaitMs);
}

void SoakPeer::close() {
  {
    std::lock_guard lock(close_mutex_);
    if (closed_) return;
    closed_ = true;
  }
  const bool relay_closed = closing_.exchange(true);
  if (!relay_closed) config_.emit(fmt::format("Q {}", who_));
  traffic_stop_ = true;
  client_->close();
  join_traffic();
  if (watcher_.joinable()) watcher_.join();
  if (!relay_closed) config_.emit(fmt::format("L {}", who_));
}

std::uint64_t SoakPeer::wait_until(const std::atomic<std::int64_t>& until_ms) {
  const auto start = Clock::now();
  for (int step = 0; step < 1000 && !closing_ && now_ms() < until_ms.load(); ++step) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return elapsed_ms(start);
}

std::string SoakPeer::new_sid(std::mt19937_64& rng) { return to_hex(rng()); }

void SoakPeer::traffic_loop() {
  std::mt19937_64 rng(config_.seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  // Bounded in count as well as by stop_traffic(): far more than a 600 s run opens.
  for (int op = 0; op < 1'000'000 && !traffic_stop_ && !closing_; ++op) {
    const auto size = log_uniform_size(rng, config_.max_body, 0.05);
    const double pick = unit(rng);
    if (pick < 0.6) {
      run_request(rng, client::Target::any(), size, config_.deadline);
    } else if (pick < 0.75) {
      const auto others = client_->peers();
      const auto target = others.empty() ? client::Target::any()
                                         : client::Target::to(others[rng() % others.size()]);
      run_request(rng, target, size, config_.deadline);
    } else {
      run_broadcast(rng, size);
    }
    ++opened_;
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 20));
  }
}

Status SoakPeer::one_request(const Uuid& target, std::chrono::milliseconds deadline,
                             std::size_t size) {
  std::mt19937_64 rng(config_.seed ^ static_cast<std::uint64_t>(now_ms()));
  return run_request(rng, client::Target::to(target), size, deadline);
}

void SoakPeer::write_body(std::mt19937_64& rng, client::BlockingStream& stream,
                          const std::vector<std::uint8_t>& body, client::Outcome& outcome) {
  if (body.empty()) {
    outcome = stream.finish();
    return;
  }
  std::size_t offset = 0;
  // Each write sends at least one byte, so the loop ends after at most body.size() writes.
  while (offset < body.size()) {
    const auto n = std::min(log_uniform_size(rng, kMaxChunk), body.size() - offset);
    const bool last = offset + n == body.size();
    outcome = stream.write(std::span(body).subspan(offset, n), last);
    if (!outcome.ok()) return;
    offset += n;
  }
}

Status SoakPeer::run_request(std::mt19937_64& rng, client::Target target, std::size_t size,
                             std::chrono::milliseconds deadline) {
  const auto sid = new_sid(rng);
  std::vector<std::uint8_t> body(size);
  fill_body(body, rng());
  BodyHash sent;
  sent.update(body);
  client::StreamOptions options;
  options.deadline = deadline;
  options.metadata = {{"sid", sid}, {"sum", to_hex(sent.value())}, {"len", std::to_string(size)}};
  config_.emit(fmt::format("OS {} req {} {}", sid, deadline.count(), who_));
  const auto start = Clock::now();
  auto stream = client_->request(target, options);
  client::Outcome write_outcome;
  std::mt19937_64 chunk_rng(rng());
  // Full duplex: the echo must be read while the request is still being written.
  std::thread writer([&] { write_body(chunk_rng, stream, body, write_outcome); });
  BodyHash echoed;
  std::uint64_t waited = 0;
  for (;;) {
    waited += wait_until(stall_until_ms_);
    const auto chunk = stream.read_chunk();
    if (chunk.size == 0) break;
    echoed.update(chunk.bytes());
  }
  auto outcome = stream.result();
  writer.join();
  if (outcome.ok() && !write_outcome.ok()) outcome = write_outcome;
  const bool verified = outcome.ok() && echoed.size() == size && echoed.value() == sent.value();
  config_.emit(fmt::format("ES {} {} {} {} {} 0 0", sid, static_cast<int>(outcome.status),
                           verified ? 1 : 0, echoed.size(),
                           elapsed_ms(start) - std::min(waited, elapsed_ms(start))));
  return outcome.status;
}

void SoakPeer::run_broadcast(std::mt19937_64& rng, std::size_t size) {
  const auto sid = new_sid(rng);
  std::vector<std::uint8_t> body(size);
  fill_body(body, rng());
  BodyHash sent;
  sent.update(body);
  client::StreamOptions options;
  options.deadline = config_.deadline;
  options.metadata = {{"sid", sid}, {"sum", to_hex(sent.value())}, {"len", std::to_string(size)}};
  config_.emit(fmt::format("OS {} bc {} {}", sid, config_.deadline.count(), who_));
  const auto start = Clock::now();
  auto stream = client_->broadcast(options);
  client::Outcome write_outcome;
  write_body(rng, stream, body, write_outcome);
  auto outcome = stream.result();
  if (outcome.ok() && !write_outcome.ok()) outcome = write_outcome;
  config_.emit(fmt::format("ES {} {} {} {} {} {} {}", sid, static_cast<int>(outcome.status),
                           outcome.ok() ? 1 : 0, size, elapsed_ms(start), outcome.delivered,
                           outcome.dropped));
}

void SoakPeer::handle_request(client::BlockingStream& stream) {
  const auto sid = metadata_value(stream.metadata(), "sid");
  const auto sum = from_hex(metadata_value(stream.metadata(), "sum"));
  const auto len_text = metadata_value(stream.metadata(), "len");
  const std::uint64_t len = len_text.empty() ? 0 : std::stoull(len_text);
  const auto start = Clock::now();
  if (!sid.empty()) {
    config_.emit(fmt::format("OR {} {} req {}", sid, who_, stream.deadline().count()));
  }
  std::uint64_t waited = wait_until(pause_until_ms_);
  BodyHash received;
  client::Outcome outcome;
  bool write_failed = false;
  for (;;) {
    waited += wait_until(stall_until_ms_);
    const auto chunk = stream.read_chunk();
    if (chunk.size == 0) break;
    received.update(chunk.bytes());
    outcome = stream.write(chunk.bytes());
    if (!outcome.ok()) {
      write_failed = true;
      break;
    }
  }
  if (!write_failed) {
    const auto finished = stream.finish();
    outcome = stream.result();
    if (outcome.ok() && !finished.ok()) outcome = finished;
  }
  const bool verified = outcome.ok() && received.size() == len && received.value() == sum;
  if (sid.empty()) return;
  config_.emit(fmt::format("ER {} {} {} {} {} {}", sid, who_, static_cast<int>(outcome.status),
                           verified ? 1 : 0, received.size(),
                           elapsed_ms(start) - std::min(waited, elapsed_ms(start))));
}

void SoakPeer::handle_broadcast(client::BlockingStream& stream) {
  const auto sid = metadata_value(stream.metadata(), "sid");
  const auto sum = from_hex(metadata_value(stream.metadata(), "sum"));
  const auto len_text = metadata_value(stream.metadata(), "len");
  const std::uint64_t len = len_text.empty() ? 0 : std::stoull(len_text);
  const auto start = Clock::now();
  if (!sid.empty()) {
    config_.emit(fmt::format("OR {} {} bc {}", sid, who_, stream.deadline().count()));
  }
  BodyHash received;
  std::uint64_t waited = 0;
  for (;;) {
    waited += wait_until(stall_until_ms_);
    const auto chunk = stream.read_chunk();
    if (chunk.size == 0) break;
    received.update(chunk.bytes());
  }
  const auto outcome = stream.result();
  const bool verified = outcome.ok() && received.size() == len && received.value() == sum;
  if (sid.empty()) return;
  config_.emit(fmt::format("ER {} {} {} {} {} {}", sid, who_, static_cast<int>(outcome.status),
                           verified ? 1 : 0, received.size(),
                           elapsed_ms(start) - std::min(waited, elapsed_ms(start))));
}

}  // namespace switchboard::soak
