#include "switchboard/wire/codec.hpp"

#include <gtest/gtest.h>

TEST(Codec, HeaderRoundTrip) {
  std::uint8_t buf[12];
  switchboard::wire::encode_header({switchboard::wire::FrameType::data, 1, 7, 5}, buf);
  auto r = switchboard::wire::decode_frame({buf, 12}, 1024);
  EXPECT_EQ(r.kind, switchboard::wire::DecodeResult::Kind::need_more);
  EXPECT_EQ(r.needed, 17u);
}
