// Blocking client: an I/O thread runs the async client; calls hop onto it and wait for results.
#include "switchboard/blocking.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace switchboard::client {

namespace asio = boost::asio;

namespace {

// Threads for request and broadcast handlers; owned jointly by the client and those threads.
// The I/O thread only queues a handler: a thread kept from an earlier one takes it, or the
// pool's starter thread starts one. So the I/O thread never waits for a thread to start (which
// can take long on a loaded machine, long enough to miss the relay's keepalive), and requests
// do not pay for a thread each. There are always as many threads as handlers queued or running.
class HandlerPool : public std::enable_shared_from_this<HandlerPool> {
public:
  // Started on the thread that sets up handlers, never on the I/O thread.
  void start() {
    std::thread([self = shared_from_this()] { self->start_threads(); }).detach();
  }

  void run(std::function<void()> handler) {
    std::lock_guard lock(mutex_);
    handlers_.push_back(std::move(handler));
    ++pending_;
    if (threads_ < pending_) {
      ++threads_;
      ++to_start_;
      starter_wake_.notify_one();
    } else {
      handler_ready_.notify_one();
    }
  }

  // Until no handler is queued or running.
  void wait_idle() {
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [&] { return pending_ == 0; });
  }

  // Idle threads end now instead of after kKeepIdle; queued handlers still run.
  void stop() {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    handler_ready_.notify_all();
    starter_wake_.notify_all();
  }

private:
  static constexpr auto kKeepIdle = std::chrono::seconds(5);

  void start_threads() {
    std::unique_lock lock(mutex_);
    for (;;) {
      starter_wake_.wait(lock, [&] { return to_start_ > 0 || stopping_; });
      if (to_start_ == 0) return;  // stopping
      --to_start_;
      lock.unlock();
      std::thread([self = shared_from_this()] { self->work(); }).detach();
      lock.lock();
    }
  }

  void work() {
    std::unique_lock lock(mutex_);
    for (;;) {
      if (!handlers_.empty()) {
        auto handler = std::move(handlers_.front());
        handlers_.pop_front();
        lock.unlock();
        handler();
        handler = nullptr;  // what it holds (possibly the client) goes before the lock is taken
        lock.lock();
        if (--pending_ == 0) idle_.notify_all();
        continue;
      }
      if (stopping_ || !handler_ready_.wait_for(lock, kKeepIdle,
                                                [&] { return !handlers_.empty() || stopping_; })) {
        if (handlers_.empty()) break;
      }
    }
    --threads_;
  }

  std::mutex mutex_;
  std::condition_variable handler_ready_;
  std::condition_variable starter_wake_;
  std::condition_variable idle_;
  std::deque<std::function<void()>> handlers_;
  std::size_t pending_ = 0;   // handlers queued or running
  std::size_t threads_ = 0;   // threads running or about to start
  std::size_t to_start_ = 0;  // of those, the ones the starter has yet to start
  bool stopping_ = false;
};

}  // namespace

struct BlockingClient::Impl {
  /// The client a BlockingStream holds (type-erased, as the public header cannot name Impl).
  static Impl& of(const std::shared_ptr<void>& client) { return *static_cast<Impl*>(client.get()); }

  ~Impl() {
    run_sync([&] { connection.reset(); });
    guard.reset();
    io_thread.join();
    if (handlers) handlers->stop();
  }

  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  std::thread io_thread;
  std::shared_ptr<Connection> connection;

  std::shared_ptr<HandlerPool> handlers;  // set up by serve() or on_broadcast()
  std::once_flag handlers_started;
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

  // On the thread setting up handlers, before the I/O thread can need the pool.
  void start_handlers() {
    std::call_once(handlers_started, [&] {
      handlers = std::make_shared<HandlerPool>();
      handlers->start();
    });
  }
};

const Uuid& BlockingStream::peer() const { return stream_->peer(); }
const wire::Metadata& BlockingStream::metadata() const { return stream_->metadata(); }
std::chrono::milliseconds BlockingStream::deadline() const { return stream_->deadline(); }

Outcome BlockingStream::write(std::span<const std::uint8_t> bytes, bool last) {
  return BlockingClient::Impl::of(client_).call<Outcome>(
      [s = stream_, bytes, last] { return s->write(bytes, last); });
}

Outcome BlockingStream::finish() { return write({}, true); }

Outcome BlockingStream::fail(Status status, std::uint32_t app_code, std::string message) {
  return BlockingClient::Impl::of(client_).call<Outcome>([s = stream_, status, app_code, &message] {
    return s->fail(status, app_code, std::move(message));
  });
}

wire::Slice BlockingStream::read_chunk() {
  if (pending_.size > 0) return std::exchange(pending_, wire::Slice{});
  return BlockingClient::Impl::of(client_).call<wire::Slice>([s = stream_] { return s->read(); });
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
  return BlockingClient::Impl::of(client_).call<Outcome>([s = stream_] { return s->result(); });
}

void BlockingStream::reset(Status status, std::string message) {
  BlockingClient::Impl::of(client_).run_sync([&] { stream_->reset(status, std::move(message)); });
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
  if (impl_->handlers) impl_->handlers->wait_idle();
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
  impl_->start_handlers();
  impl_->run_sync([&] {
    impl_->connection->on_request([weak, handler](std::shared_ptr<Stream> stream) {
      auto impl = weak.lock();
      if (!impl) return;
      impl->handlers->run([weak, handler, stream = std::move(stream)] {
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
  impl_->start_handlers();
  impl_->run_sync([&] {
    impl_->connection->on_broadcast([weak, handler](std::shared_ptr<Stream> stream) {
      auto impl = weak.lock();
      if (!impl) return;
      impl->handlers->run([weak, handler, stream = std::move(stream)] {
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
