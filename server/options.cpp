// The option table and the loaders built from it: TOML file, environment, flags, and renderers.
#include "server/options.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <limits>
#include <set>
#include <sstream>

#include "switchboard/wire/frame.hpp"

extern char** environ;

namespace switchboard::core {
namespace {

constexpr std::string_view kEnvPrefix = "SWITCHBOARD_";

std::string lower(std::string text) {
  std::ranges::transform(text, text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

std::optional<std::uint64_t> parse_decimal(std::string_view text) {
  std::uint64_t value = 0;
  const auto* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc{} || ptr != end || text.empty()) return std::nullopt;
  return value;
}

/// A bare number, or a number with a unit from `units` (each a suffix and its multiplier).
std::optional<std::uint64_t> parse_with_units(
    std::string_view text, const std::vector<std::pair<std::string_view, std::uint64_t>>& units) {
  std::size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  const auto number = parse_decimal(text.substr(0, digits));
  if (!number) return std::nullopt;
  std::string_view unit = text.substr(digits);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  if (unit.empty()) return number;
  for (const auto& [suffix, multiplier] : units) {
    if (unit == suffix) {
      if (*number > std::numeric_limits<std::uint64_t>::max() / multiplier) return std::nullopt;
      return *number * multiplier;
    }
  }
  return std::nullopt;
}

std::string format_duration(Milliseconds value) {
  const auto ms = value.count();
  if (ms != 0 && ms % 3'600'000 == 0) return fmt::format("{}h", ms / 3'600'000);
  if (ms != 0 && ms % 60'000 == 0) return fmt::format("{}m", ms / 60'000);
  if (ms != 0 && ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
  return fmt::format("{}ms", ms);
}

using Error = std::optional<std::string>;

template <typename Field>
Option unsigned_option(std::string key, std::string help, std::uint64_t min, std::uint64_t max,
                       Field field, OptionType type = OptionType::unsigned_integer,
                       std::vector<std::string> aliases = {}) {
  Option option;
  option.key = std::move(key);
  option.type = type;
  option.help = std::move(help);
  option.flag_aliases = std::move(aliases);
  option.read = [field](const ServerConfig& config) {
    return std::to_string(field(const_cast<ServerConfig&>(config)));
  };
  option.write = [field, min, max, type](ServerConfig& config, const std::string& text) -> Error {
    const auto value = type == OptionType::size
                           ? parse_with_units(text, {{"KiB", 1024},
                                                     {"MiB", 1024 * 1024},
                                                     {"GiB", std::uint64_t{1024} * 1024 * 1024}})
                           : parse_decimal(text);
    if (!value) {
      return type == OptionType::size
                 ? "\"" + text +
                       "\" is not a byte count (a number, optionally with KiB, MiB or GiB)"
                 : "\"" + text + "\" is not a non-negative integer";
    }
    if (*value < min || *value > max) {
      return fmt::format("{} is out of range [{}, {}]", *value, min, max);
    }
    using Value = std::remove_reference_t<decltype(field(config))>;
    field(config) = static_cast<Value>(*value);
    return std::nullopt;
  };
  return option;
}

template <typename Field>
Option duration_option(std::string key, std::string help, std::int64_t min_ms, Field field,
                       std::vector<std::string> aliases) {
  Option option;
  option.key = std::move(key);
  option.type = OptionType::duration;
  option.help = std::move(help);
  option.flag_aliases = std::move(aliases);
  option.read = [field](const ServerConfig& config) {
    return format_duration(field(const_cast<ServerConfig&>(config)));
  };
  option.write = [field, min_ms](ServerConfig& config, const std::string& text) -> Error {
    const auto value =
        parse_with_units(text, {{"ms", 1}, {"s", 1000}, {"m", 60'000}, {"h", 3'600'000}});
    constexpr std::uint64_t kMax = std::uint64_t{24} * 3'600'000 * 365;
    if (!value || *value > kMax) {
      return "\"" + text + "\" is not a duration (e.g. 500ms, 30s, 5m; a bare number is ms)";
    }
    if (static_cast<std::int64_t>(*value) < min_ms) {
      return fmt::format("{} is shorter than the minimum {}ms",
                         format_duration(Milliseconds(static_cast<std::int64_t>(*value))), min_ms);
    }
    field(config) = Milliseconds(static_cast<std::int64_t>(*value));
    return std::nullopt;
  };
  return option;
}

template <typename Field>
Option string_option(std::string key, OptionType type, std::string help, Field field,
                     std::vector<std::string> choices = {}, bool may_be_empty = false) {
  Option option;
  option.key = std::move(key);
  option.type = type;
  option.help = std::move(help);
  option.choices = choices;
  option.read = [field](const ServerConfig& config) {
    return field(const_cast<ServerConfig&>(config));
  };
  option.write = [field, type, choices, may_be_empty](ServerConfig& config,
                                                      const std::string& text) -> Error {
    if (type == OptionType::address && !(text.empty() && may_be_empty)) {
      try {
        (void)parse_endpoint(text);
      } catch (const std::exception& e) {
        return std::string(e.what());
      }
    }
    if (type == OptionType::choice && std::ranges::find(choices, text) == choices.end()) {
      std::string list;
      for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
      return "\"" + text + "\" is not one of: " + list;
    }
    field(config) = text;
    return std::nullopt;
  };
  return option;
}

template <typename Field>
Option bool_option(std::string key, std::string help, Field field) {
  Option option;
  option.key = std::move(key);
  option.type = OptionType::boolean;
  option.help = std::move(help);
  option.read = [field](const ServerConfig& config) {
    return std::string(field(const_cast<ServerConfig&>(config)) ? "true" : "false");
  };
  option.write = [field](ServerConfig& config, const std::string& text) -> Error {
    const auto value = lower(text);
    if (value == "true" || value == "1" || value == "yes" || value == "on") {
      field(config) = true;
    } else if (value == "false" || value == "0" || value == "no" || value == "off") {
      field(config) = false;
    } else {
      return "\"" + text + "\" is not a boolean (true or false)";
    }
    return std::nullopt;
  };
  return option;
}

// Token authentication (docs/SECURITY.md). The HS256 secret itself is no option: it comes from
// a file or from SWITCHBOARD_AUTH_HS256_SECRET, so it never shows in `ps` or --print-config.
void add_auth_options(std::vector<Option>& table) {
  using C = ServerConfig&;
  Option mode;
  mode.key = "auth_mode";
  mode.type = OptionType::choice;
  mode.help =
      "open: tokens ignored; required: every join, stream and presence call needs a valid signed "
      "token";
  mode.choices = {"open", "required"};
  mode.read = [](const ServerConfig& config) {
    return std::string(config.auth.mode == auth::Mode::required ? "required" : "open");
  };
  mode.write = [](ServerConfig& config, const std::string& text) -> Error {
    if (text != "open" && text != "required") {
      return "\"" + text + "\" is not one of: open, required";
    }
    config.auth.mode = text == "required" ? auth::Mode::required : auth::Mode::open;
    return std::nullopt;
  };
  table.push_back(std::move(mode));
  table.push_back(
      string_option("auth_hs256_secret_file", OptionType::string,
                    "file holding the HS256 secret (one trailing newline ignored); or set "
                    "SWITCHBOARD_AUTH_HS256_SECRET",
                    [](C c) -> std::string& { return c.auth.hs256_secret_file; }));
  Option keys;
  keys.key = "auth_public_key_files";
  keys.type = OptionType::string;
  keys.help =
      "comma-separated PEM public keys accepted for RS256 (RSA) and ES256 (EC P-256) tokens";
  keys.flag_aliases = {"--auth-public-key-file"};
  keys.read = [](const ServerConfig& config) {
    std::string text;
    for (const auto& path : config.auth.public_key_files) text += (text.empty() ? "" : ",") + path;
    return text;
  };
  keys.write = [](ServerConfig& config, const std::string& text) -> Error {
    config.auth.public_key_files.clear();
    for (std::size_t at = 0; at < text.size();) {
      const auto comma = std::min(text.find(',', at), text.size());
      if (comma > at) config.auth.public_key_files.push_back(text.substr(at, comma - at));
      at = comma + 1;
    }
    return std::nullopt;
  };
  table.push_back(std::move(keys));
  table.push_back(string_option("auth_issuer", OptionType::string,
                                "when set, tokens must carry this iss",
                                [](C c) -> std::string& { return c.auth.issuer; }));
  table.push_back(string_option("auth_audience", OptionType::string,
                                "when set, tokens' aud must contain this",
                                [](C c) -> std::string& { return c.auth.audience; }));
}

std::vector<Option> build_table() {
  using C = ServerConfig&;
  constexpr std::uint64_t kU32 = std::numeric_limits<std::uint32_t>::max();
  constexpr std::uint64_t kGiB = std::uint64_t{1024} * 1024 * 1024;
  std::vector<Option> table;
  table.push_back(string_option("listen", OptionType::address,
                                "core (native) listen address HOST:PORT; port 0 picks one",
                                [](C c) -> std::string& { return c.listen; }));
  table.push_back(string_option(
      "grpc_listen", OptionType::address,
      "gRPC gateway listen address HOST:PORT; port 0 picks one; empty disables",
      [](C c) -> std::string& { return c.grpc_listen; }, {}, true));
  table.push_back(string_option(
      "admin_listen", OptionType::address,
      "HTTP admin endpoint (metrics, health) HOST:PORT; port 0 picks one; empty disables",
      [](C c) -> std::string& { return c.admin_listen; }, {}, true));
  table.push_back(bool_option("admin_introspection",
                              "serve /channels and the operator page /ui/ on the admin endpoint "
                              "(lists channel and peer ids)",
                              [](C c) -> bool& { return c.admin_introspection; }));
  table.push_back(unsigned_option("threads", "I/O threads (0: one per core)", 0, 1024,
                                  [](C c) -> unsigned& { return c.threads; }));
  table.push_back(string_option(
      "placement", OptionType::choice,
      "thread of a plaintext native connection: channel (the one its channel hashes to: "
      "lowest latency) or round_robin (spreads one busy channel over all threads)",
      [](C c) -> std::string& { return c.placement; }, {"channel", "round_robin"}));
  table.push_back(unsigned_option(
      "idle_spin_us",
      "microseconds an I/O thread keeps polling after its last event before it sleeps (0: none)", 0,
      100'000, [](C c) -> unsigned& { return c.idle_spin_us; }));
  table.push_back(bool_option(
      "heap_huge_pages",
      "grow malloc's heap in transparent huge pages (restarts the process at start-up with "
      "GLIBC_TUNABLES=glibc.malloc.hugetlb=1 unless that tunable is set already)",
      [](C c) -> bool& { return c.heap_huge_pages; }));
  table.push_back(string_option("log_level", OptionType::choice, "least severe level logged",
                                [](C c) -> std::string& { return c.log_level; },
                                {"trace", "debug", "info", "warn", "error", "critical", "off"}));
  table.push_back(string_option("log_format", OptionType::choice,
                                "text, or json: one object per line with ts, level, msg, fields",
                                [](C c) -> std::string& { return c.log_format; },
                                {"text", "json"}));
  table.push_back(unsigned_option(
      "max_frame", "largest frame payload accepted (bytes), announced in the handshake", 1024,
      16 * 1024 * 1024, [](C c) -> std::uint32_t& { return c.limits.max_frame; },
      OptionType::size));
  table.push_back(unsigned_option(
      "stream_window", "bytes buffered per stream direction (flow-control window)", 1,
      wire::kMaxWindow, [](C c) -> std::uint32_t& { return c.limits.stream_window; },
      OptionType::size));
  table.push_back(unsigned_option(
      "message_window",
      "body bytes of whole messages one connection may have in the relay at once (flow-control "
      "window of MESSAGE)",
      wire::kMinMaxFrame, wire::kMaxWindow,
      [](C c) -> std::uint32_t& { return c.limits.message_window; }, OptionType::size));
  table.push_back(unsigned_option(
      "max_streams_per_connection", "streams one connection may have open in each direction", 1,
      kU32, [](C c) -> std::uint32_t& { return c.limits.max_streams_per_connection; },
      OptionType::unsigned_integer, {"--max-streams"}));
  table.push_back(
      unsigned_option("max_peers_per_channel", "peers on one channel", 1, kU32,
                      [](C c) -> std::uint32_t& { return c.limits.max_peers_per_channel; }));
  table.push_back(unsigned_option("max_channels", "channels on this relay", 1, kU32,
                                  [](C c) -> std::uint32_t& { return c.limits.max_channels; }));
  table.push_back(unsigned_option("max_connections", "open connections (native and gRPC)", 1, kU32,
                                  [](C c) -> std::uint32_t& { return c.limits.max_connections; }));
  table.push_back(unsigned_option(
      "max_lanes_per_connection",
      "lanes one shared native connection may carry at once (each counts as a connection)", 1, kU32,
      [](C c) -> std::uint32_t& { return c.limits.max_lanes_per_connection; }));
  table.push_back(
      unsigned_option("connect_rate_per_address",
                      "connections one source address may open per second (0: unlimited)", 0, kU32,
                      [](C c) -> std::uint32_t& { return c.limits.connect_rate_per_address; }));
  table.push_back(unsigned_option(
      "connect_burst_per_address",
      "connections one source address may open at once before the rate applies", 0, kU32,
      [](C c) -> std::uint32_t& { return c.limits.connect_burst_per_address; }));
  table.push_back(unsigned_option(
      "max_connection_buffer",
      "bytes queued towards one connection before it is closed as a slow consumer", 1, 64 * kGiB,
      [](C c) -> std::size_t& { return c.limits.max_connection_buffer; }, OptionType::size));
  table.push_back(unsigned_option(
      "socket_send_buffer",
      "kernel send buffer of each accepted connection, SO_SNDBUF (0: the kernel's autotuning; "
      "the kernel doubles it and caps it at net.core.wmem_max)",
      0, kGiB / 2, [](C c) -> std::size_t& { return c.limits.socket_send_buffer; },
      OptionType::size));
  table.push_back(unsigned_option(
      "read_block_size", "bytes read from a socket at once; must hold one whole frame", 4096, kGiB,
      [](C c) -> std::size_t& { return c.limits.read_block_size; }, OptionType::size));
  table.push_back(unsigned_option(
      "read_block_pool", "free read blocks kept for reuse by any connection (0: none)", 0, 4096,
      [](C c) -> std::uint32_t& { return c.limits.read_block_pool; }));
  table.push_back(duration_option("handshake_timeout", "time allowed for a connection's HELLO", 1,
                                  [](C c) -> Milliseconds& { return c.limits.handshake_timeout; },
                                  {"--handshake-timeout-ms"}));
  table.push_back(duration_option(
      "keepalive_interval",
      "silence before a PING; no answer within this again and the peer is dead", 1,
      [](C c) -> Milliseconds& { return c.limits.keepalive_interval; }, {"--keepalive-ms"}));
  table.push_back(duration_option(
      "slow_consumer_timeout",
      "time a broadcast receiver may hold bytes of which none leaves before it is dropped", 1,
      [](C c) -> Milliseconds& { return c.limits.slow_consumer_timeout; },
      {"--slow-consumer-timeout-ms"}));
  table.push_back(duration_option(
      "write_timeout",
      "time one socket write may take before the connection is closed as a slow consumer", 1,
      [](C c) -> Milliseconds& { return c.limits.write_timeout; }, {"--write-timeout-ms"}));
  table.push_back(duration_option(
      "presence_interval",
      "longest a presence change waits to be written with the ones that follow it closely, "
      "while changes keep coming (once they stop, held changes go out within a tick of a "
      "sixteenth of it, at most 25 ms)",
      0, [](C c) -> Milliseconds& { return c.limits.presence_interval; },
      {"--presence-interval-ms"}));
  table.push_back(unsigned_option(
      "presence_storm_rate",
      "presence changes a second, over the whole relay, from which joins count as a storm and "
      "held presence waits up to presence_storm_hold (0: never a storm)",
      0, kU32, [](C c) -> std::uint32_t& { return c.limits.presence_storm_rate; }));
  table.push_back(duration_option(
      "presence_storm_hold",
      "longest a presence change is held during a join storm, counted from the connection's "
      "last presence write (held changes still go out within a tick once the changes stop)",
      0, [](C c) -> Milliseconds& { return c.limits.presence_storm_hold; },
      {"--presence-storm-hold-ms"}));
  table.push_back(duration_option(
      "default_idle_timeout", "stream idle timeout when the opener sets none (0: none)", 0,
      [](C c) -> Milliseconds& { return c.limits.default_idle_timeout; }, {"--idle-timeout-ms"}));
  table.push_back(duration_option(
      "drain_timeout", "longest wait for streams in flight at shutdown (SIGTERM)", 0,
      [](C c) -> Milliseconds& { return c.limits.drain_timeout; }, {"--drain-timeout-ms"}));
  // The gRPC door's HTTP/2 guard (docs/GATEWAY.md, docs/SECURITY.md).
  table.push_back(unsigned_option(
      "grpc_max_header_block",
      "bytes of one gRPC request's header block (HEADERS + CONTINUATION); more closes the "
      "connection",
      1024, 1024 * 1024, [](C c) -> std::uint32_t& { return c.limits.grpc_max_header_block; },
      OptionType::size));
  table.push_back(unsigned_option(
      "grpc_max_streams_per_connection",
      "gRPC calls one HTTP/2 connection may have open (further ones are refused); at most "
      "max_connection_buffer / stream_window",
      1, kU32, [](C c) -> std::uint32_t& { return c.limits.grpc_max_streams_per_connection; }));
  table.push_back(unsigned_option(
      "grpc_control_frames_per_second",
      "SETTINGS, PING, PRIORITY and empty frames one gRPC connection may send per second "
      "(0: no limit)",
      0, kU32, [](C c) -> std::uint32_t& { return c.limits.grpc_control_frames_per_second; }));
  table.push_back(unsigned_option(
      "grpc_resets_per_second",
      "RST_STREAM frames and refused streams one gRPC connection may cause per second "
      "(0: no limit)",
      0, kU32, [](C c) -> std::uint32_t& { return c.limits.grpc_resets_per_second; }));
  add_auth_options(table);
  // TLS (docs/TLS.md): one certificate and key for both doors, each door switched on by itself.
  table.push_back(bool_option("tls_native",
                              "TLS on the core (native) door; needs tls_cert_file "
                              "and tls_key_file; SIGHUP re-reads the files",
                              [](C c) -> bool& { return c.tls.native; }));
  table.push_back(
      bool_option("tls_grpc",
                  "TLS on the gRPC door; needs tls_cert_file and "
                  "tls_key_file; terminated by the relay (ALPN h2); SIGHUP re-reads the files",
                  [](C c) -> bool& { return c.tls.grpc; }));
  table.push_back(string_option("tls_cert_file", OptionType::string,
                                "PEM certificate chain (leaf first) served by the TLS doors",
                                [](C c) -> std::string& { return c.tls.cert_file; }));
  table.push_back(string_option("tls_key_file", OptionType::string,
                                "PEM private key of the TLS certificate",
                                [](C c) -> std::string& { return c.tls.key_file; }));
  table.push_back(string_option(
      "tls_client_ca_file", OptionType::string,
      "PEM CA bundle; when set, clients of the TLS doors must present a certificate it signed "
      "(mutual TLS)",
      [](C c) -> std::string& { return c.tls.client_ca_file; }));
  table.push_back(unsigned_option("tls_grpc_refresh_seconds",
                                  "how often the gRPC door looks for changed TLS files", 1, 86'400,
                                  [](C c) -> unsigned& { return c.tls.grpc_refresh_seconds; }));
  // Cluster membership on etcd (docs/CLUSTER.md).
  table.push_back(string_option(
      "cluster_etcd", OptionType::string,
      "etcd endpoints http://HOST:PORT[,...] or https://HOST:PORT[,...] of the cluster's "
      "membership; empty: the relay runs alone",
      [](C c) -> std::string& { return c.cluster.etcd; }));
  table.push_back(string_option(
      "cluster_etcd_ca_file", OptionType::string,
      "PEM roots that etcd's certificate must chain to (https endpoints); empty: the system's "
      "roots",
      [](C c) -> std::string& { return c.cluster.etcd_ca_file; }));
  table.push_back(string_option(
      "cluster_etcd_cert_file", OptionType::string,
      "PEM client certificate this relay presents to etcd (etcd's --client-cert-auth); with "
      "cluster_etcd_key_file",
      [](C c) -> std::string& { return c.cluster.etcd_cert_file; }));
  table.push_back(string_option("cluster_etcd_key_file", OptionType::string,
                                "PEM private key of cluster_etcd_cert_file",
                                [](C c) -> std::string& { return c.cluster.etcd_key_file; }));
  table.push_back(unsigned_option(
      "cluster_etcd_tls_refresh_seconds",
      "how often the etcd CA, certificate and key files are read again (a renewed certificate "
      "needs no restart)",
      1, 86'400, [](C c) -> unsigned& { return c.cluster.etcd_tls_refresh_seconds; }));
  table.push_back(string_option("cluster_etcd_user", OptionType::string,
                                "etcd user this relay authenticates as (etcd's auth enabled); with "
                                "cluster_etcd_password_file",
                                [](C c) -> std::string& { return c.cluster.etcd_user; }));
  table.push_back(string_option(
      "cluster_etcd_password_file", OptionType::string,
      "file holding the etcd user's password (its first line), read at start-up and again "
      "at each login to etcd (a changed password needs no restart)",
      [](C c) -> std::string& { return c.cluster.etcd_password_file; }));
  table.push_back(string_option(
      "node_id", OptionType::string,
      "this relay's id in the cluster (letters, digits, '.', '_', '-'); empty: HOSTNAME-XXXXXX, "
      "random per process",
      [](C c) -> std::string& { return c.cluster.node_id; }));
  table.push_back(string_option(
      "advertise", OptionType::string,
      "native HOST:PORT (a name or an address) other relays send this relay's peers to; empty: "
      "the bound listen address",
      [](C c) -> std::string& { return c.cluster.advertise; }));
  table.push_back(string_option(
      "advertise_grpc", OptionType::string,
      "gRPC HOST:PORT (a name or an address) other relays send this relay's gRPC peers to; "
      "empty: the bound gRPC address",
      [](C c) -> std::string& { return c.cluster.advertise_grpc; }));
  table.push_back(string_option("cluster_prefix", OptionType::string,
                                "etcd key prefix of the cluster (members/ and channels/ under it)",
                                [](C c) -> std::string& { return c.cluster.prefix; }));
  table.push_back(duration_option(
      "cluster_lease_ttl",
      "TTL of this relay's etcd lease (whole seconds); it stops serving when a third is left "
      "unrenewed",
      1000, [](C c) -> Milliseconds& { return c.cluster.lease_ttl; }, {}));
  table.push_back(string_option(
      "cluster_ca_file", OptionType::string,
      "PEM roots to verify the other relays' gRPC doors with when calls are carried to them "
      "(with tls_grpc); empty: the system's roots",
      [](C c) -> std::string& { return c.cluster.ca_file; }));
  return table;
}

std::string_view type_name(OptionType type) {
  switch (type) {
    case OptionType::string:
      return "string";
    case OptionType::address:
      return "address";
    case OptionType::unsigned_integer:
      return "integer";
    case OptionType::size:
      return "bytes";
    case OptionType::duration:
      return "duration";
    case OptionType::boolean:
      return "boolean";
    case OptionType::choice:
      return "choice";
  }
  return "string";
}

const Option* find_option(std::string_view key) {
  for (const auto& option : option_table()) {
    if (option.key == key) return &option;
  }
  return nullptr;
}

std::string node_type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    default:
      return "a date or time";
  }
}

/// The node as the text form an option parses, or an error when its TOML type does not fit.
std::optional<std::string> node_text(const Option& option, const toml::node& node,
                                     std::string& error) {
  const bool numeric = option.type == OptionType::unsigned_integer ||
                       option.type == OptionType::size || option.type == OptionType::duration;
  if (numeric) {
    if (auto value = node.value<std::int64_t>(); value && node.is_integer()) {
      if (*value < 0) {
        error = fmt::format("{} is negative", *value);
        return std::nullopt;
      }
      return std::to_string(*value);
    }
    if (option.type != OptionType::unsigned_integer && node.is_string()) {
      return *node.value<std::string>();
    }
    error = "expected " +
            std::string(option.type == OptionType::unsigned_integer
                            ? "an integer"
                            : "an integer or a string with a unit") +
            ", got " + node_type_name(node);
    return std::nullopt;
  }
  if (option.type == OptionType::boolean) {
    if (node.is_boolean()) return *node.value<bool>() ? "true" : "false";
    error = "expected a boolean, got " + node_type_name(node);
    return std::nullopt;
  }
  if (node.is_string()) return *node.value<std::string>();
  error = "expected a string, got " + node_type_name(node);
  return std::nullopt;
}

void apply(ServerConfig& config, const Option& option, const std::string& value,
           const std::string& origin) {
  if (auto error = option.write(config, value)) {
    throw ConfigError(origin + ": " + *error);
  }
}

void apply_file(ServerConfig& config, const std::string& path) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    throw ConfigError(fmt::format("config file {} line {}: {}", path, where.line, e.description()));
  }
  for (const auto& [key, node] : table) {
    const auto line = node.source().begin.line;
    const std::string origin =
        fmt::format("config file {} line {}: key '{}'", path, line, std::string(key.str()));
    const Option* option = find_option(key.str());
    if (option == nullptr) throw ConfigError(origin + ": unknown key");
    std::string error;
    const auto text = node_text(*option, node, error);
    if (!text) throw ConfigError(origin + ": " + error);
    apply(config, *option, *text, origin);
  }
}

std::string toml_quote(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string Option::flag() const {
  std::string name = key;
  std::ranges::replace(name, '_', '-');
  return "--" + name;
}

std::string Option::env_name() const {
  std::string name(kEnvPrefix);
  for (char c : key) name += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

const std::vector<Option>& option_table() {
  static const std::vector<Option> table = build_table();
  return table;
}

std::map<std::string, std::string> switchboard_environment() {
  std::map<std::string, std::string> variables;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view text(*entry);
    const auto equals = text.find('=');
    if (equals == std::string_view::npos || !text.starts_with(kEnvPrefix)) continue;
    const std::string name(text.substr(0, equals));
    // Not options: the config file's path, the HS256 secret (never rendered by --print-config;
    // main reads it) and the CLI's token.
    if (name == "SWITCHBOARD_CONFIG" || name == "SWITCHBOARD_AUTH_HS256_SECRET" ||
        name == "SWITCHBOARD_TOKEN") {
      continue;
    }
    variables.emplace(name, std::string(text.substr(equals + 1)));
  }
  return variables;
}

ServerConfig load_config(const ConfigSources& sources) {
  ServerConfig config;
  if (sources.file) apply_file(config, *sources.file);
  for (const auto& [name, value] : sources.environment) {
    const Option* match = nullptr;
    for (const auto& option : option_table()) {
      if (option.env_name() == name) match = &option;
    }
    if (match == nullptr) {
      throw ConfigError("environment variable " + name + ": unknown key (no option '" +
                        lower(name.substr(kEnvPrefix.size())) + "')");
    }
    apply(config, *match, value, "environment variable " + name + ": key '" + match->key + "'");
  }
  for (const auto& [key, value] : sources.flags) {
    const Option* option = find_option(key);
    if (option == nullptr) throw ConfigError("unknown option " + key);
    apply(config, *option, value, "flag " + option->flag() + ": key '" + key + "'");
  }
  try {
    config.limits.validate();
  } catch (const std::invalid_argument& e) {
    throw ConfigError(std::string("invalid limits: ") + e.what());
  }
  try {
    config.tls.validate();
  } catch (const std::invalid_argument& e) {
    throw ConfigError(std::string("invalid TLS settings: ") + e.what());
  }
  if (config.cluster.lease_ttl.count() % 1000 != 0) {
    throw ConfigError("key 'cluster_lease_ttl': etcd leases count whole seconds, not " +
                      format_duration(config.cluster.lease_ttl));
  }
  if (!config.cluster.etcd.empty() && config.cluster.prefix.empty()) {
    throw ConfigError("key 'cluster_prefix': must not be empty");
  }
  if (config.cluster.etcd_cert_file.empty() != config.cluster.etcd_key_file.empty()) {
    throw ConfigError(
        "keys 'cluster_etcd_cert_file' and 'cluster_etcd_key_file': set both or neither");
  }
  if (config.cluster.etcd_user.empty() != config.cluster.etcd_password_file.empty()) {
    throw ConfigError(
        "keys 'cluster_etcd_user' and 'cluster_etcd_password_file': set both or neither");
  }
  return config;
}

std::string to_toml(const ServerConfig& config) {
  std::string out = "# switchboard-server configuration (effective values)\n";
  for (const auto& option : option_table()) {
    const auto value = option.read(config);
    switch (option.type) {
      case OptionType::unsigned_integer:
      case OptionType::size:
      case OptionType::boolean:
        out += option.key + " = " + value + "\n";
        break;
      default:
        out += option.key + " = " + toml_quote(value) + "\n";
    }
  }
  return out;
}

std::string config_reference_markdown() {
  const ServerConfig defaults;
  std::string out =
      "| Key (file) | Flag | Environment | Type | Default | Meaning |\n"
      "|---|---|---|---|---|---|\n";
  for (const auto& option : option_table()) {
    // fmt rather than chained string `+`, which GCC 12 at -O3 misreads as an overlapping copy.
    std::string flags = fmt::format("`{}`", option.flag());
    for (const auto& alias : option.flag_aliases) flags += fmt::format(", `{}`", alias);
    std::string type(type_name(option.type));
    if (option.type == OptionType::choice) {
      type.clear();
      for (const auto& c : option.choices) type += (type.empty() ? "" : " \\| ") + c;
    }
    const auto value = option.read(defaults);
    out += fmt::format("| `{}` | {} | `{}` | {} | `{}` | {} |\n", option.key, flags,
                       option.env_name(), type, value.empty() ? "\"\"" : value, option.help);
  }
  return out;
}

}  // namespace switchboard::core
