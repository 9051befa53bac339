// The relay's I/O contexts and the moves of a socket between them.
#include "transport/io_contexts.hpp"

#include <unistd.h>

#include <algorithm>

namespace switchboard::core::transport {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

IoContexts::IoContexts(std::size_t count) {
  for (std::size_t i = 0; i < std::max<std::size_t>(count, 1); ++i) {
    contexts_.push_back(std::make_unique<asio::io_context>());
  }
}

asio::io_context& IoContexts::next() noexcept {
  return *contexts_[next_.fetch_add(1, std::memory_order_relaxed) % contexts_.size()];
}

std::vector<asio::any_io_executor> IoContexts::executors() const {
  std::vector<asio::any_io_executor> executors;
  for (const auto& context : contexts_) executors.emplace_back(context->get_executor());
  return executors;
}

tcp::socket move_to(tcp::socket socket, asio::io_context& target, tcp protocol) {
  if (&asio::query(socket.get_executor(), asio::execution::context) == &target) return socket;
  boost::system::error_code ec;
  tcp::socket moved(target);
  const auto handle = socket.release(ec);
  if (ec) return moved;
  moved.assign(protocol, handle, ec);
  if (ec) ::close(handle);
  return moved;
}

}  // namespace switchboard::core::transport
