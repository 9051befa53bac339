// Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/) from the codec's
// encoders and the gateway's messages, so the seeds follow the protocol as the code defines it.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "seed_frames.hpp"
#include "switchboard/v1/switchboard.pb.h"

namespace {

namespace fs = std::filesystem;
using namespace switchboard;
using namespace switchboard::wire;
using Buffer = std::vector<std::uint8_t>;

void write(const fs::path& dir, const std::string& name, const Buffer& bytes) {
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

/// fuzz_frame_decoder input: split point (u16), configuration byte, stream.
Buffer decoder_input(std::uint16_t split, std::uint8_t config, const Buffer& stream) {
  Buffer out{static_cast<std::uint8_t>(split >> 8), static_cast<std::uint8_t>(split), config};
  out.insert(out.end(), stream.begin(), stream.end());
  return out;
}

void frame_decoder_seeds(const fs::path& dir) {
  Buffer all;
  for (const auto& [name, frame] : seeds::client_frames()) {
    write(dir, name, decoder_input(static_cast<std::uint16_t>(frame.size() / 2), 0x06, frame));
    all.insert(all.end(), frame.begin(), frame.end());
  }
  for (const auto& [name, frame] : seeds::relay_frames()) {
    write(dir, name, decoder_input(5, 0x01, frame));
    all.insert(all.end(), frame.begin(), frame.end());
  }
  write(dir, "all-split-13", decoder_input(13, 0x04, all));
  write(dir, "all-split-mid-block-1",
        decoder_input(static_cast<std::uint16_t>(all.size() / 2), 0x00, all));
  for (const auto& [name, bytes] : seeds::bad_streams())
    write(dir, name, decoder_input(7, 0x00, bytes));
}

template <typename Message>
Buffer mapping_input(std::uint8_t kind, const Message& message) {
  Buffer out{kind};
  const auto bytes = message.SerializeAsString();
  out.insert(out.end(), bytes.begin(), bytes.end());
  return out;
}

void grpc_mapping_seeds(const fs::path& dir) {
  namespace pb = switchboard::v1;
  const std::string channel = seeds::channel().to_string();
  const std::string peer = seeds::peer().to_string();

  pb::RespondRequest join;
  join.mutable_join()->set_channel(channel);
  join.mutable_join()->set_peer_id(peer);
  write(dir, "respond-join", mapping_input(0, join));
  pb::RespondRequest end;
  end.mutable_end()->set_request_id(3);
  end.mutable_end()->set_status(pb::STATUS_APPLICATION);
  end.mutable_end()->set_app_code(42);
  end.mutable_end()->set_message("application said no");
  write(dir, "respond-end", mapping_input(0, end));
  pb::RespondRequest cancel;
  cancel.mutable_cancel()->set_id(3);
  cancel.mutable_cancel()->set_status(pb::STATUS_SLOW_CONSUMER);
  write(dir, "respond-cancel", mapping_input(0, cancel));
  pb::RespondRequest chunk;
  chunk.mutable_chunk()->set_request_id(3);
  chunk.mutable_chunk()->set_data("response");
  chunk.mutable_chunk()->set_last(true);
  write(dir, "respond-chunk", mapping_input(0, chunk));

  pb::SendRequest send;
  send.mutable_open()->set_channel(channel);
  send.mutable_open()->set_target(peer);
  send.mutable_open()->set_idle_timeout_ms(500);
  (*send.mutable_open()->mutable_metadata())["content-type"] = "text/plain";
  (*send.mutable_open()->mutable_metadata())["trace"] = "abc";
  send.mutable_open()->set_data("hello");
  write(dir, "send-open", mapping_input(1, send));
  pb::SendRequest send_any;
  send_any.mutable_open()->set_channel(channel);
  write(dir, "send-open-any", mapping_input(1, send_any));
  pb::SendRequest send_chunk;
  send_chunk.mutable_chunk()->set_data("more");
  write(dir, "send-chunk-first", mapping_input(1, send_chunk));
  pb::SendRequest send_bad;
  send_bad.mutable_open()->set_channel("not-a-uuid");
  write(dir, "send-open-bad-channel", mapping_input(1, send_bad));

  pb::BroadcastRequest broadcast;
  broadcast.mutable_open()->set_channel(channel);
  broadcast.mutable_open()->set_sender_peer_id(peer);
  (*broadcast.mutable_open()->mutable_metadata())["k"] = "v";
  broadcast.mutable_open()->set_data("to everyone");
  write(dir, "broadcast-open", mapping_input(2, broadcast));

  // Regressions: metadata a native peer's OPEN cannot carry, and an out-of-range status.
  pb::SendRequest many_entries;
  many_entries.mutable_open()->set_channel(channel);
  for (int i = 0; i <= 64; ++i) {
    (*many_entries.mutable_open()->mutable_metadata())["k" + std::to_string(i)] = "v";
  }
  write(dir, "regression-send-open-65-metadata-entries", mapping_input(1, many_entries));
  pb::BroadcastRequest big_entry;
  big_entry.mutable_open()->set_channel(channel);
  (*big_entry.mutable_open()->mutable_metadata())["big"] = std::string(1000, 'x');
  write(dir, "regression-broadcast-open-metadata-over-1024-bytes", mapping_input(2, big_entry));
  pb::RespondRequest wrapped_status;
  wrapped_status.mutable_end()->set_request_id(1);
  wrapped_status.mutable_end()->set_status(static_cast<pb::Status>(65537));
  write(dir, "regression-respond-end-status-65537", mapping_input(0, wrapped_status));

  pb::WatchPeersRequest watch;
  watch.set_channel(channel);
  write(dir, "watch-peers", mapping_input(3, watch));
  write(dir, "garbage", {1, 0xFF, 0xFF, 0xFF, 0x0F, 0x12, 0x00});
}

/// fuzz_session input: flags, then [selector][length][bytes] chunks (see fuzz_session.cpp).
class SessionInput {
public:
  explicit SessionInput(std::uint8_t flags) : bytes_{flags} {}
  SessionInput& chunk(int client, const Buffer& data) {
    for (std::size_t at = 0; at < data.size() || at == 0; at += 255) {
      const auto n = std::min<std::size_t>(255, data.size() - at);
      bytes_.push_back(static_cast<std::uint8_t>(client));
      bytes_.push_back(static_cast<std::uint8_t>(n));
      bytes_.insert(bytes_.end(), data.begin() + static_cast<long>(at),
                    data.begin() + static_cast<long>(at + n));
      if (n == 0) break;
    }
    return *this;
  }
  const Buffer& bytes() const { return bytes_; }

private:
  Buffer bytes_;
};

void session_seeds(const fs::path& dir) {
  const Uuid client_a = seeds::fixed_uuid(0xA0);
  const Uuid client_b = seeds::fixed_uuid(0xB0);
  constexpr std::uint8_t kHelloA = 1, kClientB = 2, kHelloB = 4;

  // A request from A to B and B's answer on the relay's stream 2.
  Open to_b;
  to_b.kind = StreamKind::to_peer;
  to_b.peer = client_b;
  to_b.metadata = {{"k", "v"}};
  write(dir, "request-response",
        SessionInput(kHelloA | kClientB | kHelloB)
            .chunk(0, seeds::frame([&](Buffer& b) {
                     append_open(b, 1, to_b, seeds::text("ping"), false);
                     append_data(b, 1, seeds::text(" more"), true);
                   }))
            .chunk(1, seeds::frame([](Buffer& b) {
                     append_window(b, 2, 4096);
                     append_data(b, 2, seeds::text("pong"), true);
                   }))
            .chunk(0, seeds::frame([](Buffer& b) { append_window(b, 1, 4096); }))
            .bytes());
  // A request to any responder, ended by the responder with an application error.
  Open to_any;
  to_any.kind = StreamKind::to_any;
  to_any.deadline_ms = 1000;
  write(dir, "request-app-error",
        SessionInput(kHelloA | kClientB | kHelloB)
            .chunk(0, seeds::frame([&](Buffer& b) { append_open(b, 1, to_any, {}, true); }))
            .chunk(1, seeds::frame([](Buffer& b) {
                     append_end(b, 2, End{Status::application, 9, 0, 0, "nope"});
                   }))
            .bytes());
  // A broadcast from A that B receives; then A resets a second stream.
  Open broadcast;
  broadcast.kind = StreamKind::broadcast;
  write(dir, "broadcast",
        SessionInput(kHelloA | kClientB | kHelloB)
            .chunk(0, seeds::frame([&](Buffer& b) {
                     append_open(b, 1, broadcast, seeds::text("all"), true);
                     append_open(b, 3, to_b, {}, false);
                     append_reset(b, 3, Reset{Status::cancelled, 0, "changed my mind"});
                   }))
            .chunk(1, seeds::frame([](Buffer& b) { append_reset(b, 2, Reset{}); }))
            .bytes());
  // A's own HELLO in two pieces, then each client frame on its own.
  const Buffer hello_a = seeds::frame([&](Buffer& b) {
    auto hello = seeds::hello(true);
    hello.peer_id = client_a;
    append_hello(b, hello);
  });
  write(dir, "hello-split",
        SessionInput(0)
            .chunk(0, Buffer(hello_a.begin(), hello_a.begin() + 20))
            .chunk(0, Buffer(hello_a.begin() + 20, hello_a.end()))
            .bytes());
  for (const auto& [name, frame] : seeds::client_frames()) {
    write(dir, "after-hello-" + name, SessionInput(kHelloA).chunk(0, frame).bytes());
  }
  for (const auto& [name, bytes] : seeds::bad_streams()) {
    write(dir, "first-" + name, SessionInput(kClientB).chunk(0, bytes).bytes());
  }
  write(dir, "hello-twice", SessionInput(kHelloA).chunk(0, hello_a).bytes());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const fs::path root = argv[1];
  frame_decoder_seeds(root / "fuzz_frame_decoder");
  grpc_mapping_seeds(root / "fuzz_grpc_mapping");
  session_seeds(root / "fuzz_session");
  return 0;
}
