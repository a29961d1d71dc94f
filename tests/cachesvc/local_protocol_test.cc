// The local data plane's wire format (cachesvc/local_protocol.h, docs/local.md): byte-exact
// frames, and readers that fail cleanly on short input.
#include "cachesvc/local_protocol.h"

#include <gtest/gtest.h>

#include <string>

namespace cachesvc::local {
namespace {

std::string Hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

TEST(LocalProtocolTest, AFrameIsItsLengthThenLittleEndianFields) {
  Writer w;
  w.U32(kRelease).U32(2).U64(0x0102030405060708).U64(9);
  EXPECT_EQ(Hex(w.Finish()),
            "18000000"            // body length 24
            "04000000"            // RELEASE
            "02000000"            // two ids
            "0807060504030201"    // id 1
            "0900000000000000");  // id 2
}

TEST(LocalProtocolTest, ALeaseIsFortyEightBytesInItsDocumentedOrder) {
  Writer w = ReplyHeader(0, "");
  w.U32(1);
  PutLease(w, Lease{.lease_id = 7,
                    .offset = 0x200000,
                    .length = 262144,
                    .checksum = 0xaabbccddeeff0011,
                    .layout_fingerprint = 0x1234,
                    .codec = 3});
  const std::string frame = w.Finish();
  ASSERT_EQ(frame.size(), 4 + 12 + 4 + kLeaseBytes);
  EXPECT_EQ(Hex(frame.substr(16)),
            "01000000"
            "0700000000000000"
            "0000200000000000"
            "0000040000000000"
            "1100ffeeddccbbaa"
            "3412000000000000"
            "03000000"
            "00000000");
  Reader r(std::string_view(frame).substr(4));
  EXPECT_EQ(*r.U32(), kReply);
  EXPECT_EQ(*r.U32(), 0u);  // OK
  EXPECT_EQ(*r.U32(), 0u);  // no message
  EXPECT_EQ(*r.U32(), 1u);
  auto lease = GetLease(r);
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(lease->lease_id, 7u);
  EXPECT_EQ(lease->offset, 0x200000u);
  EXPECT_EQ(lease->length, 262144u);
  EXPECT_EQ(lease->checksum, 0xaabbccddeeff0011u);
  EXPECT_EQ(lease->layout_fingerprint, 0x1234u);
  EXPECT_EQ(lease->codec, 3u);
  EXPECT_EQ(r.remaining(), 0u);
}

TEST(LocalProtocolTest, AnErrorReplyCarriesItsCodeAndACutMessage) {
  const std::string frame = ReplyHeader(5, std::string(1000, 'x')).Finish();
  Reader r(std::string_view(frame).substr(4));
  EXPECT_EQ(*r.U32(), kReply);
  EXPECT_EQ(*r.U32(), 5u);  // NOT_FOUND
  EXPECT_EQ(*r.U32(), kMaxMessage);
  EXPECT_EQ(r.Bytes(kMaxMessage)->size(), kMaxMessage);
  EXPECT_EQ(r.remaining(), 0u);
}

TEST(LocalProtocolTest, ReadingPastTheEndFailsAndStaysFailed) {
  Reader r(std::string_view("\x01\x02\x03", 3));
  EXPECT_FALSE(r.U32().has_value());
  EXPECT_FALSE(r.Bytes(1).has_value());  // the 3 bytes are not handed out after a failure
  EXPECT_EQ(r.remaining(), 0u);
  const std::string short_lease(kLeaseBytes - 1, '\0');
  Reader lease_reader(short_lease);
  EXPECT_FALSE(GetLease(lease_reader).has_value());
}

}  // namespace
}  // namespace cachesvc::local
