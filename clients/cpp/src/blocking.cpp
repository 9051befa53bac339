// Blocking client: an I/O thread runs the async client; calls hop onto it and wait for results.
#include "switchboard/blocking.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_future.hpp>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

namespace switchboard::client {

namespace asio = boost::asio;

namespace {
BlockingClient::Impl& impl_of(const std::shared_ptr<void>& client) {
  return *static_cast<BlockingClient::Impl*>(client.get());
}
}  // namespace

struct BlockingClient::Impl {
  ~Impl() {
    run_sync([&] { connection.reset(); });
    guard.reset();
    io_thread.join();
  }

  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  std::thread io_thread;
  std::shared_ptr<Connection> connection;

  std::mutex mutex;
  std::condition_variable idle;
  std::size_t workers = 0;
  std::mutex broadcast_mutex;  // one broadcast handler at a time

  template <typename T, typename F>
  T call(F&& make_awaitable) {
    if (std::this_thread::get_id() == io_thread.get_id()) {
      throw std::logic_error("blocking switchboard call made on the client's I/O thread");
    }
    return asio::co_spawn(io, std::forward<F>(make_awaitable), asio::use_future).get();
  }

  template <typename F>
  void run_sync(F&& f) {
    std::promise<void> done;
    asio::post(io, [&] {
      f();
      done.set_value();
    });
    done.get_future().wait();
  }

  void spawn_worker(std::function<void()> work) {
    {
      std::lock_guard lock(mutex);
      ++workers;
    }
    std::thread([this, work = std::move(work)] {
      work();
      std::lock_guard lock(mutex);
      if (--workers == 0) idle.notify_all();
    }).detach();
  }
};

const Uuid& BlockingStream::peer() const { return stream_->peer(); }
const wire::Metadata& BlockingStream::metadata() const { return stream_->metadata(); }
std::chrono::milliseconds BlockingStream::deadline() const { return stream_->deadline(); }

Outcome BlockingStream::write(std::span<const std::uint8_t> bytes, bool last) {
  return impl_of(client_).call<Outcome>(
      [s = stream_, bytes, last] { return s->write(bytes, last); });
}

Outcome BlockingStream::finish() { return write({}, true); }

Outcome BlockingStream::fail(Status status, std::uint32_t app_code, std::string message) {
  return impl_of(client_).call<Outcome>([s = stream_, status, app_code, &message] {
    return s->fail(status, app_code, std::move(message));
  });
}

wire::Slice BlockingStream::read_chunk() {
  if (pending_.size > 0) return std::exchange(pending_, wire::Slice{});
  return impl_of(client_).call<wire::Slice>([s = stream_] { return s->read(); });
}

std::size_t BlockingStream::read(std::span<std::uint8_t> out) {
  if (out.empty()) return 0;
  if (pending_.size == 0) pending_ = read_chunk();
  const auto n = std::min<std::size_t>(out.size(), pending_.size);
  if (n > 0) std::memcpy(out.data(), pending_.data, n);
  pending_.take_front(static_cast<std::uint32_t>(n));
  return n;
}

Outcome BlockingStream::result() {
  return impl_of(client_).call<Outcome>([s = stream_] { return s->result(); });
}

void BlockingStream::reset(Status status, std::string message) {
  impl_of(client_).run_sync([&] { stream_->reset(status, std::move(message)); });
}

BlockingClient::BlockingClient(ConnectOptions options) : impl_(std::make_shared<Impl>()) {
  impl_->io_thread = std::thread([impl = impl_.get()] { impl->io.run(); });
  Outcome outcome;
  try {
    impl_->connection = impl_->call<std::shared_ptr<Connection>>(
        [executor = impl_->io.get_executor(), options = std::move(options), &outcome]() mutable {
          return Connection::connect(executor, std::move(options), outcome);
        });
  } catch (...) {
    impl_.reset();
    throw;
  }
  if (!impl_->connection) {
    impl_.reset();
    throw ConnectError(outcome);
  }
}

BlockingClient::~BlockingClient() {
  close();
  std::unique_lock lock(impl_->mutex);
  impl_->idle.wait(lock, [&] { return impl_->workers == 0; });
  // The I/O thread ends with the last BlockingStream still held elsewhere, or now.
}

Uuid BlockingClient::peer_id() const { return impl_->connection->peer_id(); }

std::vector<Uuid> BlockingClient::peers() {
  std::vector<Uuid> result;
  impl_->run_sync([&] { result = impl_->connection->peers(); });
  return result;
}

std::uint64_t BlockingClient::membership_version() {
  std::uint64_t version = 0;
  impl_->run_sync([&] { version = impl_->connection->membership_version(); });
  return version;
}

BlockingStream BlockingClient::request(Target target, const StreamOptions& options) {
  std::shared_ptr<Stream> stream;
  impl_->run_sync([&] { stream = impl_->connection->open_request(target, options); });
  return BlockingStream(std::move(stream), impl_);
}

BlockingStream BlockingClient::broadcast(const StreamOptions& options) {
  std::shared_ptr<Stream> stream;
  impl_->run_sync([&] { stream = impl_->connection->open_broadcast(options); });
  return BlockingStream(std::move(stream), impl_);
}

Outcome BlockingClient::send(Target target, std::span<const std::uint8_t> body,
                             std::vector<std::uint8_t>& response, const StreamOptions& options) {
  auto stream = request(target, options);
  std::thread writer;
  Outcome write_outcome;
  // Full duplex: the response may start (and must be read) before the request is written.
  writer = std::thread([&] { write_outcome = stream.write(body, true); });
  response.clear();
  for (;;) {
    auto chunk = stream.read_chunk();
    if (chunk.size == 0) break;
    response.insert(response.end(), chunk.data, chunk.data + chunk.size);
  }
  auto outcome = stream.result();
  if (outcome.ok() && !write_outcome.ok()) outcome = write_outcome;
  writer.join();
  if (outcome.ok() && !write_outcome.ok()) outcome = write_outcome;
  return outcome;
}

void BlockingClient::serve(std::function<void(BlockingStream&)> handler) {
  // Handlers run on the I/O thread and must not own the client: they hold it weakly.
  std::weak_ptr<Impl> weak = impl_;
  impl_->run_sync([&] {
    impl_->connection->on_request([weak, handler](std::shared_ptr<Stream> stream) {
      auto impl = weak.lock();
      if (!impl) return;
      impl->spawn_worker([weak, handler, stream = std::move(stream)] {
        auto owner = weak.lock();
        if (!owner) return;
        {
          BlockingStream request(stream, owner);
          handler(request);
        }
        // A handler that returned without ending its response answers OK.
        asio::co_spawn(
            owner->io,
            [stream]() -> asio::awaitable<void> {
              if (!stream->ended()) co_await stream->finish();
            },
            asio::use_future)
            .get();
      });
    });
  });
}

void BlockingClient::on_broadcast(std::function<void(BlockingStream&)> handler) {
  std::weak_ptr<Impl> weak = impl_;
  impl_->run_sync([&] {
    impl_->connection->on_broadcast([weak, handler](std::shared_ptr<Stream> stream) {
      auto impl = weak.lock();
      if (!impl) return;
      impl->spawn_worker([weak, handler, stream = std::move(stream)] {
        auto owner = weak.lock();
        if (!owner) return;
        std::lock_guard lock(owner->broadcast_mutex);
        BlockingStream message(stream, owner);
        handler(message);
      });
    });
  });
}

void BlockingClient::on_presence(std::function<void(const PresenceChange&)> handler) {
  impl_->run_sync([&] { impl_->connection->on_presence(std::move(handler)); });
}

void BlockingClient::on_connection_event(std::function<void(const ConnectionEvent&)> handler) {
  impl_->run_sync([&] { impl_->connection->on_connection_event(std::move(handler)); });
}

ConnectionState BlockingClient::state() {
  ConnectionState state = ConnectionState::closed;
  impl_->run_sync([&] { state = impl_->connection->state(); });
  return state;
}

Outcome BlockingClient::wait_closed() {
  return impl_->call<Outcome>([c = impl_->connection] { return c->wait_closed(); });
}

void BlockingClient::close() {
  impl_->run_sync([&] {
    if (impl_->connection) impl_->connection->close();
  });
}

}  // namespace switchboard::client
