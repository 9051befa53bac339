// Cuttable loopback proxy: an Asio thread pumping bytes between client and relay sockets.
#include "support/cut_proxy.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <future>
#include <list>
#include <thread>

namespace switchboard::test {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

void reset_socket(tcp::socket& socket) {
  boost::system::error_code ignored;
  if (!socket.is_open()) return;
  socket.set_option(asio::socket_base::linger(true, 0), ignored);
  socket.close(ignored);
}

struct Pair {
  explicit Pair(tcp::socket accepted) : client(std::move(accepted)), relay(client.get_executor()) {}
  tcp::socket client;
  tcp::socket relay;
  bool stopped = false;  // frozen, held or cut: pumps stop without touching the sockets
};
}  // namespace

struct CutProxy::State {
  asio::io_context io;
  // Keeps run() going while nothing is pending, so that run() below always finds it running.
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  tcp::acceptor acceptor{io};
  std::uint16_t upstream_port = 0;
  std::atomic<std::size_t>* accepted = nullptr;
  NewConnections mode = NewConnections::forward;
  std::list<std::shared_ptr<Pair>> live;  // forwarding or frozen
  std::list<std::shared_ptr<Pair>> held;  // client side reset, relay side kept
  std::list<tcp::socket> silent;          // accepted in hold mode
  std::thread thread;

  template <typename F>
  void run(F&& f) {
    std::promise<void> done;
    asio::post(io, [&] {
      f();
      done.set_value();
    });
    done.get_future().wait();
  }

  asio::awaitable<void> pump(std::shared_ptr<Pair> pair, tcp::socket& from, tcp::socket& to) {
    std::vector<std::uint8_t> buffer(64 * 1024);
    for (;;) {
      auto [read_error, n] = co_await from.async_read_some(asio::buffer(buffer), kUseTuple);
      if (pair->stopped) co_return;
      if (read_error) break;
      auto [write_error, written] =
          co_await asio::async_write(to, asio::buffer(buffer.data(), n), kUseTuple);
      if (pair->stopped) co_return;
      if (write_error) break;
    }
    // An ordinary end on one side: pass it on as an ordinary close.
    pair->stopped = true;
    boost::system::error_code ignored;
    pair->client.close(ignored);
    pair->relay.close(ignored);
    live.remove(pair);
  }

  asio::awaitable<void> forward(std::shared_ptr<Pair> pair) {
    auto [ec] = co_await pair->relay.async_connect(
        tcp::endpoint(asio::ip::address_v4::loopback(), upstream_port), kUseTuple);
    if (pair->stopped) co_return;
    if (ec) {
      reset_socket(pair->client);
      live.remove(pair);
      co_return;
    }
    asio::co_spawn(io, pump(pair, pair->client, pair->relay), asio::detached);
    asio::co_spawn(io, pump(pair, pair->relay, pair->client), asio::detached);
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(kUseTuple);
      if (ec) co_return;
      ++*accepted;
      if (mode == NewConnections::reset) {
        reset_socket(socket);
      } else if (mode == NewConnections::hold) {
        silent.push_back(std::move(socket));
      } else {
        auto pair = std::make_shared<Pair>(std::move(socket));
        live.push_back(pair);
        asio::co_spawn(io, forward(pair), asio::detached);
      }
    }
  }
};

CutProxy::CutProxy(std::uint16_t upstream_port) : state_(std::make_shared<State>()) {
  state_->upstream_port = upstream_port;
  state_->accepted = &accepted_;
  const tcp::endpoint endpoint(asio::ip::address_v4::loopback(), 0);
  state_->acceptor.open(endpoint.protocol());
  state_->acceptor.bind(endpoint);
  state_->acceptor.listen();
  port_ = state_->acceptor.local_endpoint().port();
  asio::co_spawn(state_->io, state_->accept_loop(), asio::detached);
  state_->thread = std::thread([state = state_.get()] { state->io.run(); });
}

CutProxy::~CutProxy() {
  state_->run([&] {
    boost::system::error_code ignored;
    state_->acceptor.close(ignored);
  });
  cut();
  release_held();
  state_->run([&] {
    for (auto& socket : state_->silent) reset_socket(socket);
    state_->silent.clear();
  });
  state_->work.reset();
  state_->io.stop();
  state_->thread.join();
}

void CutProxy::cut() {
  state_->run([&] {
    for (auto& pair : state_->live) {
      pair->stopped = true;
      reset_socket(pair->client);
      reset_socket(pair->relay);
    }
    state_->live.clear();
  });
}

void CutProxy::cut_client_side() {
  state_->run([&] {
    for (auto& pair : state_->live) {
      pair->stopped = true;
      reset_socket(pair->client);
      state_->held.push_back(pair);
    }
    state_->live.clear();
  });
}

void CutProxy::release_held() {
  state_->run([&] {
    for (auto& pair : state_->held) reset_socket(pair->relay);
    state_->held.clear();
  });
}

void CutProxy::freeze() {
  state_->run([&] {
    for (auto& pair : state_->live) pair->stopped = true;
  });
}

void CutProxy::set_new_connections(NewConnections mode) {
  state_->run([&] {
    state_->mode = mode;
    if (mode != NewConnections::hold) {
      for (auto& socket : state_->silent) reset_socket(socket);
      state_->silent.clear();
    }
  });
}

}  // namespace switchboard::test
