// UUID text round-trips and rejection of malformed text.
#include "switchboard/wire/uuid.hpp"

#include <gtest/gtest.h>

namespace switchboard {
namespace {

TEST(Uuid, ParsesAndFormatsCanonicalText) {
  const auto id = Uuid::parse("0123ABCD-4567-89ab-cdef-0123456789AB");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->to_string(), "0123abcd-4567-89ab-cdef-0123456789ab");
  EXPECT_EQ(id->bytes[0], 0x01);
  EXPECT_EQ(id->bytes[15], 0xab);
}

TEST(Uuid, RejectsMalformedText) {
  EXPECT_FALSE(Uuid::parse(""));
  EXPECT_FALSE(Uuid::parse("0123abcd-4567-89ab-cdef-0123456789a"));
  EXPECT_FALSE(Uuid::parse("0123abcd-4567-89ab-cdef-0123456789abc"));
  EXPECT_FALSE(Uuid::parse("0123abcd+4567-89ab-cdef-0123456789ab"));
  EXPECT_FALSE(Uuid::parse("0123abcg-4567-89ab-cdef-0123456789ab"));
  EXPECT_FALSE(Uuid::parse("0123abcd4567-89ab-cdef-0123456789ab-"));
}

TEST(Uuid, RandomIsVersion4AndDistinct) {
  const auto a = Uuid::random();
  const auto b = Uuid::random();
  EXPECT_NE(a, b);
  EXPECT_FALSE(a.is_nil());
  EXPECT_EQ(a.bytes[6] >> 4, 4);
  EXPECT_EQ(a.bytes[8] & 0xC0, 0x80);
  EXPECT_EQ(Uuid::parse(a.to_string()), a);
}

TEST(Uuid, NilIsNil) { EXPECT_TRUE(Uuid{}.is_nil()); }

}  // namespace
}  // namespace switchboard
