// TCP and in-memory transports: each owns its socket or its end of a shared pipe.
#include "transport/transport.hpp"

#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

namespace switchboard::core::transport {
namespace {

using boost::system::error_code;
using tcp = asio::ip::tcp;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

class TcpTransport final : public Transport {
  static constexpr std::size_t kMaxIov = 1024;  // IOV_MAX on Linux

public:
  TcpTransport(tcp::socket socket, const tcp::endpoint& remote) : socket_(std::move(socket)) {
    error_code ec;
    socket_.set_option(tcp::no_delay(true), ec);
    remote_ = remote.address().to_string() + ":" + std::to_string(remote.port());
  }

  asio::any_io_executor get_executor() override { return socket_.get_executor(); }

  asio::awaitable<IoResult> read_some(asio::mutable_buffer buffer) override {
    co_return co_await socket_.async_read_some(buffer, kUseTuple);
  }

  asio::awaitable<IoResult> write(std::span<const asio::const_buffer> buffers) override {
    // A span is copied into the operation by value: no allocation for the buffer sequence.
    co_return co_await asio::async_write(socket_, buffers, kUseTuple);
  }

  std::size_t try_write(std::span<const asio::const_buffer> buffers,
                        error_code& ec) noexcept override {
    // One sendmsg over every piece (Asio's own writes gather at most 64 per call).
    std::array<iovec, kMaxIov> iov;
    const std::size_t count = std::min(buffers.size(), kMaxIov);
    for (std::size_t i = 0; i < count; ++i) {
      iov[i].iov_base = const_cast<void*>(buffers[i].data());
      iov[i].iov_len = buffers[i].size();
    }
    msghdr message{};
    message.msg_iov = iov.data();
    message.msg_iovlen = count;
    const ssize_t n = ::sendmsg(socket_.native_handle(), &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      ec = error_code(errno == EAGAIN ? EWOULDBLOCK : errno, asio::error::get_system_category());
      return 0;
    }
    ec = {};
    return static_cast<std::size_t>(n);
  }

  void shutdown_send() noexcept override {
    error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
  }

  void close() noexcept override {
    error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
  }

  std::string remote() const override { return remote_; }

private:
  tcp::socket socket_;
  std::string remote_;
};

using IoHandler = asio::any_completion_handler<void(error_code, std::size_t)>;

// Both directions of an in-memory pipe. Touched only on the one executor both ends share.
struct PipeState {
  struct Direction {
    std::vector<std::uint8_t> bytes;  // written, not yet read
    std::size_t read_offset = 0;
    bool writer_done = false;  // the writing end shut down or closed: eof after the bytes
    asio::mutable_buffer waiting_buffer;
    // Boost 1.81's any_completion_handler move-assignment recurses: only move-construct it.
    std::optional<IoHandler> waiting_reader;
  };
  explicit PipeState(asio::any_io_executor ex) : executor(std::move(ex)) {}
  asio::any_io_executor executor;
  Direction directions[2];  // directions[i]: bytes travelling towards end i
  bool end_closed[2] = {false, false};
};

void complete(const asio::any_io_executor& executor, IoHandler handler, error_code ec,
              std::size_t bytes) {
  asio::post(executor, [handler = std::move(handler), ec, bytes]() mutable {
    std::move(handler)(ec, bytes);
  });
}

// Fills a waiting read from the direction's bytes, or finishes it with eof.
void serve_reader(PipeState& pipe, PipeState::Direction& direction) {
  if (!direction.waiting_reader) return;
  const std::size_t available = direction.bytes.size() - direction.read_offset;
  if (available == 0 && !direction.writer_done) return;
  IoHandler handler(std::move(*direction.waiting_reader));
  direction.waiting_reader.reset();
  const auto buffer = direction.waiting_buffer;
  if (available == 0) {
    complete(pipe.executor, std::move(handler), asio::error::eof, 0);
    return;
  }
  const std::size_t n = std::min(available, buffer.size());
  std::memcpy(buffer.data(), direction.bytes.data() + direction.read_offset, n);
  direction.read_offset += n;
  if (direction.read_offset == direction.bytes.size()) {
    direction.bytes.clear();
    direction.read_offset = 0;
  }
  complete(pipe.executor, std::move(handler), {}, n);
}

class MemoryTransport final : public Transport {
public:
  MemoryTransport(std::shared_ptr<PipeState> pipe, int end) : pipe_(std::move(pipe)), end_(end) {}
  ~MemoryTransport() override { close(); }

  asio::any_io_executor get_executor() override { return pipe_->executor; }

  asio::awaitable<IoResult> read_some(asio::mutable_buffer buffer) override {
    co_return co_await asio::async_initiate<decltype(kUseTuple), void(error_code, std::size_t)>(
        [this](auto handler, asio::mutable_buffer target) {
          start_read_some(target, IoHandler(std::move(handler)));
        },
        kUseTuple, buffer);
  }

  asio::awaitable<IoResult> write(std::span<const asio::const_buffer> buffers) override {
    co_return co_await asio::async_initiate<decltype(kUseTuple), void(error_code, std::size_t)>(
        [this](auto handler, std::span<const asio::const_buffer> source) {
          start_write(source, IoHandler(std::move(handler)));
        },
        kUseTuple, buffers);
  }

  void shutdown_send() noexcept override {
    auto& outgoing = pipe_->directions[1 - end_];
    outgoing.writer_done = true;
    serve_reader(*pipe_, outgoing);
  }

  void close() noexcept override {
    if (pipe_->end_closed[end_]) return;
    pipe_->end_closed[end_] = true;
    shutdown_send();
    auto& incoming = pipe_->directions[end_];
    if (incoming.waiting_reader) {
      IoHandler handler(std::move(*incoming.waiting_reader));
      incoming.waiting_reader.reset();
      complete(pipe_->executor, std::move(handler), asio::error::operation_aborted, 0);
    }
  }

  std::string remote() const override { return "memory"; }

private:
  void start_read_some(asio::mutable_buffer buffer, IoHandler handler) {
    if (pipe_->end_closed[end_]) {
      complete(pipe_->executor, std::move(handler), asio::error::bad_descriptor, 0);
      return;
    }
    auto& incoming = pipe_->directions[end_];
    incoming.waiting_buffer = buffer;
    incoming.waiting_reader.emplace(std::move(handler));
    serve_reader(*pipe_, incoming);
  }

  void start_write(std::span<const asio::const_buffer> buffers, IoHandler handler) {
    auto& outgoing = pipe_->directions[1 - end_];
    if (pipe_->end_closed[end_] || pipe_->end_closed[1 - end_] || outgoing.writer_done) {
      complete(pipe_->executor, std::move(handler), asio::error::broken_pipe, 0);
      return;
    }
    std::size_t total = 0;
    for (const auto& buffer : buffers) {
      const auto* bytes = static_cast<const std::uint8_t*>(buffer.data());
      outgoing.bytes.insert(outgoing.bytes.end(), bytes, bytes + buffer.size());
      total += buffer.size();
    }
    serve_reader(*pipe_, outgoing);
    complete(pipe_->executor, std::move(handler), {}, total);
  }

  std::shared_ptr<PipeState> pipe_;
  int end_;
};

}  // namespace

std::unique_ptr<Transport> make_tcp_transport(tcp::socket socket, const tcp::endpoint& remote) {
  return std::make_unique<TcpTransport>(std::move(socket), remote);
}

std::pair<std::unique_ptr<Transport>, std::unique_ptr<Transport>> make_memory_pipe(
    asio::any_io_executor executor) {
  auto pipe = std::make_shared<PipeState>(std::move(executor));
  return {std::make_unique<MemoryTransport>(pipe, 0), std::make_unique<MemoryTransport>(pipe, 1)};
}

}  // namespace switchboard::core::transport
