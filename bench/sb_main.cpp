// switchboard-bench: load generator on the native async client; one subcommand per workload/role.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <cstdio>
#include <exception>
#include <map>

#include "sb_bench.hpp"

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: switchboard-bench COMMAND --port P --channel UUID [flags]\n"
               "roles:     responder [--reply-size 128] [--ready-file F]\n"
               "           receiver --connections K --expect-msgs M [--idle-report-ms 3000]\n"
               "workloads: rr-lat [--n 5000 --warmup 500 --size 128]\n"
               "           rr-conc [--requesters 16 --n 200000 --responders 1 --size 128]\n"
               "           stream [--bytes 1G --chunk 64K]\n"
               "           small [--n 1000000 --size 16 --inflight 128]\n"
               "           fanout [--receivers 8 --bytes 256M --chunk 64K]\n"
               "           conns --relay-pid PID [--peers 10000 --channels 100 --idle-ms 1000]\n"
               "           join-storm [--peers 10000 --channels 100 --concurrency PEERS]\n"
               "             [--nats-url nats://127.0.0.1:PORT --relay-pid PID --settle-ms 60000]\n"
               "           channels --relay-pid PID [--channels 1000 --requesters 16 --n 200000]\n"
               "           (with channels-serve [--channels 1000] on the same --channel)\n"
               "           discrete [--n 16384 --size 64K --inflight 64 --mode broadcast|request]\n"
               "             [--api async|blocking]\n"
               "             [--relay-pid PID]\n"
               "every command: [--host 127.0.0.1] [--timeout SECONDS (120)]\n"
               "Workloads print one JSON line of results on stdout.\n");
}

// Runs one subcommand; records its exit code (or failure) and stops the loop when it returns.
boost::asio::awaitable<void> run_command(sbb::Command command, const bench::Args& args,
                                         int& exit_code, std::string& failure,
                                         boost::asio::io_context& io) {
  try {
    exit_code = co_await command(args);
  } catch (const std::exception& e) {
    exit_code = 1;
    failure = e.what();
  }
  io.stop();
}

}  // namespace

int main(int argc, char** argv) {
  const std::map<std::string, sbb::Command> commands = {{"responder", sbb::responder},
                                                        {"receiver", sbb::receiver},
                                                        {"rr-lat", sbb::rr_lat},
                                                        {"rr-conc", sbb::rr_conc},
                                                        {"stream", sbb::stream},
                                                        {"small", sbb::small},
                                                        {"fanout", sbb::fanout},
                                                        {"conns", sbb::conns},
                                                        {"join-storm", sbb::join_storm},
                                                        {"channels", sbb::channels_workload},
                                                        {"channels-serve", sbb::channels_serve},
                                                        {"discrete", sbb::discrete}};
  if (argc < 2 || commands.count(argv[1]) == 0) {
    usage();
    return 2;
  }
  try {
    const bench::Args args(argc, argv, 2);
    const auto host = args.str("host", "127.0.0.1");
    if (host != "127.0.0.1" && host != "localhost") {
      std::fprintf(stderr, "switchboard-bench: only loopback targets are allowed\n");
      return 2;
    }
    boost::asio::io_context io(1);
    int exit_code = 3;  // stays 3 if the time bound stops the run
    std::string failure;
    boost::asio::co_spawn(io, run_command(commands.at(argv[1]), args, exit_code, failure, io),
                          boost::asio::detached);
    // Every run is bounded in time, and stops on SIGINT/SIGTERM.
    boost::asio::steady_timer limit(io, std::chrono::seconds(args.num("timeout", 120)));
    limit.async_wait([&](boost::system::error_code ec) {
      if (ec) return;
      failure = "time limit reached";
      io.stop();
    });
    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](boost::system::error_code ec, int) {
      if (ec) return;
      exit_code = 0;
      io.stop();
    });
    io.run();
    if (!failure.empty()) {
      std::fprintf(stderr, "switchboard-bench %s: %s\n", argv[1], failure.c_str());
      bench::Json()
          .add("workload", argv[1])
          .add("system", "switchboard")
          .add("error", failure)
          .print();
    }
    std::fflush(stdout);
    // Connections and coroutines may still be pending; leave without unwinding them.
    std::_Exit(exit_code);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "switchboard-bench: %s\n", e.what());
    return 2;
  }
}
