// The relay's I/O contexts, one per I/O thread, and the moves of a socket between them.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstddef>
#include <memory>
#include <vector>

namespace switchboard::core::transport {

/// Context 0 (main()) runs the listeners, the admin endpoint, signals and its share of
/// connections; the others run connections only. Each context has one thread (run by the
/// owner), so a hand-off between two connections of one thread is a queue push, never a
/// wake-up of another thread.
/// Not built with concurrency hint 1: that hint queues a post made on the context's own thread
/// privately until the running handler returns, so a post from another thread made later could
/// run first. Sessions run on these contexts without a strand and need posts in order.
class IoContexts {
public:
  /// `count` contexts (at least one).
  explicit IoContexts(std::size_t count);

  boost::asio::io_context& main() noexcept { return *contexts_.front(); }
  boost::asio::io_context& at(std::size_t index) noexcept { return *contexts_[index]; }
  std::size_t size() const noexcept { return contexts_.size(); }
  /// The context of the next connection, round-robin. Any thread.
  boost::asio::io_context& next() noexcept;
  std::vector<boost::asio::any_io_executor> executors() const;

private:
  std::vector<std::unique_ptr<boost::asio::io_context>> contexts_;
  std::atomic<std::size_t> next_{0};
};

/// The same connection, served by `target` from now on (no operation may be outstanding).
/// `protocol`: the socket's own (v4 or v6), which the caller knows from accept.
boost::asio::ip::tcp::socket move_to(boost::asio::ip::tcp::socket socket,
                                     boost::asio::io_context& target,
                                     boost::asio::ip::tcp protocol);

}  // namespace switchboard::core::transport
