// Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/) from the codec's
// encoders and the gateway's messages, so the seeds follow the protocol as the code defines it.
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

  pb::RespondClientMessage join;
  join.mutable_join()->set_channel(channel);
  join.mutable_join()->set_peer_id(peer);
  write(dir, "respond-join", mapping_input(0, join));
  pb::RespondClientMessage end;
  end.mutable_end()->set_request_id(3);
  end.mutable_end()->set_status(pb::APPLICATION);
  end.mutable_end()->set_app_code(42);
  end.mutable_end()->set_message("application said no");
  write(dir, "respond-end", mapping_input(0, end));
  pb::RespondClientMessage cancel;
  cancel.mutable_cancel()->set_id(3);
  cancel.mutable_cancel()->set_status(pb::SLOW_CONSUMER);
  write(dir, "respond-cancel", mapping_input(0, cancel));
  pb::RespondClientMessage chunk;
  chunk.mutable_chunk()->set_request_id(3);
  chunk.mutable_chunk()->set_data("response");
  chunk.mutable_chunk()->set_last(true);
  write(dir, "respond-chunk", mapping_input(0, chunk));

  pb::SendClientMessage send;
  send.mutable_open()->set_channel(channel);
  send.mutable_open()->set_target(peer);
  send.mutable_open()->set_idle_timeout_ms(500);
  (*send.mutable_open()->mutable_metadata())["content-type"] = "text/plain";
  (*send.mutable_open()->mutable_metadata())["trace"] = "abc";
  send.mutable_open()->set_data("hello");
  write(dir, "send-open", mapping_input(1, send));
  pb::SendClientMessage send_any;
  send_any.mutable_open()->set_channel(channel);
  write(dir, "send-open-any", mapping_input(1, send_any));
  pb::SendClientMessage send_chunk;
  send_chunk.mutable_chunk()->set_data("more");
  write(dir, "send-chunk-first", mapping_input(1, send_chunk));
  pb::SendClientMessage send_bad;
  send_bad.mutable_open()->set_channel("not-a-uuid");
  write(dir, "send-open-bad-channel", mapping_input(1, send_bad));

  pb::BroadcastClientMessage broadcast;
  broadcast.mutable_open()->set_channel(channel);
  broadcast.mutable_open()->set_sender_peer_id(peer);
  (*broadcast.mutable_open()->mutable_metadata())["k"] = "v";
  broadcast.mutable_open()->set_data("to everyone");
  write(dir, "broadcast-open", mapping_input(2, broadcast));

  pb::WatchPeersRequest watch;
  watch.set_channel(channel);
  write(dir, "watch-peers", mapping_input(3, watch));
  write(dir, "garbage", {1, 0xFF, 0xFF, 0xFF, 0x0F, 0x12, 0x00});
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
  return 0;
}
