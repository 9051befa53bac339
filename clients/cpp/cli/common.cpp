// Shared pieces of the switchboard CLI: address and id parsing, joining, exit codes, messages.
#include "common.hpp"

#include <unistd.h>

#include <charconv>

#include "io.hpp"

namespace switchboard::cli {

std::optional<ServerAddress> parse_server(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) {
    return std::nullopt;
  }
  std::string_view host = text.substr(0, colon);
  const std::string_view port_text = text.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return std::nullopt;
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return std::nullopt;  // an IPv6 address needs brackets
  }
  unsigned port = 0;
  const auto [end, error] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (error != std::errc{} || end != port_text.data() + port_text.size() || port == 0 ||
      port > 65535) {
    return std::nullopt;
  }
  return ServerAddress{std::string(host), static_cast<std::uint16_t>(port)};
}

std::optional<Uuid> parse_uuid(std::string_view text, bool allow_nil) {
  auto id = Uuid::parse(text);
  if (!id || (!allow_nil && id->is_nil())) return std::nullopt;
  return id;
}

std::string check_server(const std::string& text) {
  if (parse_server(text)) return {};
  return "not a relay address: '" + text + "' (expected HOST:PORT, e.g. 127.0.0.1:7400)";
}

std::string check_uuid(const std::string& text, bool allow_nil) {
  const auto id = Uuid::parse(text);
  if (!id) {
    return "not a UUID: '" + text +
           "' (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx; `switchboard uuid` prints one)";
  }
  if (!allow_nil && id->is_nil()) return "the nil UUID cannot be used here";
  return {};
}

Joined join(const GlobalOptions& global, const Uuid& channel, Role role, bool reconnect) {
  const auto address = parse_server(global.server);
  if (!address) {
    report(check_server(global.server));
    return {nullptr, kExitUsage};
  }
  client::ConnectOptions options;
  options.host = address->host;
  options.port = address->port;
  options.channel = channel;
  options.accept_requests = role == Role::responder;
  options.observe = role == Role::observer;
  options.token = global.token;
  options.reconnect.enabled = reconnect;
  options.tls = global.tls;
  if (!global.peer_id.empty()) options.peer_id = parse_uuid(global.peer_id, true).value_or(Uuid{});
  try {
    return {std::make_unique<client::BlockingClient>(std::move(options)), kExitOk};
  } catch (const client::ConnectError& e) {
    return {nullptr, report_join_failure(global, channel, e.outcome())};
  }
}

int report_join_failure(const GlobalOptions& global, const Uuid& channel,
                        const client::Outcome& outcome) {
  if (outcome.unreachable) {
    // Not a status of the protocol: nothing was said to a relay.
    report(outcome.message);
    return kExitUnreachable;
  }
  report("cannot join channel " + channel.to_string() + " at " + global.server + ": " +
         outcome.describe());
  return kExitConnection;
}

std::string describe_event(const client::ConnectionEvent& event, const Uuid& peer) {
  using Kind = client::ConnectionEvent::Kind;
  switch (event.kind) {
    case Kind::disconnected:
      return "switchboard: relay connection lost: " + event.reason.describe() + "; reconnecting";
    case Kind::reconnected:
      return "reconnected peer=" + peer.to_string() + " version=" + std::to_string(event.version);
    case Kind::retry_scheduled:
    case Kind::closed:
      break;
  }
  return {};
}

void ClientCloser::close() {
  std::lock_guard lock(mutex_);
  if (client_ != nullptr) client_->close();
}

void ClientCloser::release() {
  std::lock_guard lock(mutex_);
  client_ = nullptr;
}

int exit_code_for(const client::Outcome& outcome) {
  if (outcome.ok()) return kExitOk;
  return kExitStatusBase + static_cast<int>(outcome.status);
}

void report(std::string_view text) {
  std::string line = "switchboard: ";
  line += text;
  report_raw(line);
}

void report_raw(std::string_view text) { (void)write_line(STDERR_FILENO, text); }

}  // namespace switchboard::cli
