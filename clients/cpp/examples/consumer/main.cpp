// Example: one process that serves requests and sends one to itself through the relay.
// Usage: consumer PORT
#include <cstdio>
#include <cstdlib>
#include <string>
#include <switchboard/blocking.hpp>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer PORT\n");
    return 2;
  }
  using namespace switchboard;
  client::ConnectOptions options;
  options.port = static_cast<std::uint16_t>(std::atoi(argv[1]));
  options.channel = Uuid::random();

  options.accept_requests = true;
  client::BlockingClient responder(options);
  responder.serve([](client::BlockingStream& request) {
    std::string body;
    std::vector<std::uint8_t> buffer(4096);
    while (auto n = request.read(buffer))
      body.append(buffer.begin(), buffer.begin() + static_cast<long>(n));
    const std::string answer = "hello, " + body;
    request.write({reinterpret_cast<const std::uint8_t*>(answer.data()), answer.size()}, true);
  });

  options.accept_requests = false;
  client::BlockingClient sender(options);
  const std::string name = "consumer";
  std::vector<std::uint8_t> response;
  const auto outcome =
      sender.send(client::Target::to(responder.peer_id()),
                  {reinterpret_cast<const std::uint8_t*>(name.data()), name.size()}, response);
  if (!outcome.ok()) {
    std::fprintf(stderr, "send failed: %s\n", outcome.describe().c_str());
    return 1;
  }
  std::printf("%s\n", std::string(response.begin(), response.end()).c_str());
  return 0;
}
