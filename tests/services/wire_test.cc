// Raw requests: invalid UTF-8 is named down to the nested, repeated field.
#include "services/common/wire.h"

#include "gtest/gtest.h"
#include "strata/v1/generation.pb.h"

namespace strata {
namespace {

// Serializes as a client in another language would: protobuf's C++ code
// only logs invalid UTF-8 when writing.
std::string Wire(const v1::GenerateRequest& r) { return r.SerializeAsString(); }

TEST(WireTest, InvalidUtf8IsNamedByItsPath) {
  const std::string bad = "x\xE2\x82";  // a truncated euro sign
  v1::GenerateRequest r;
  r.set_prompt("fine");
  r.add_stop(std::string("a"));
  r.add_stop(std::string("b"));
  r.add_stop(bad);
  v1::GenerateRequest parsed;
  absl::Status st = ParseRequest(Wire(r), &parsed);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "stop[2]: not valid UTF-8 (byte 1)");

  v1::GenerateRequest chat;
  chat.mutable_messages()->add_messages()->set_content("ok");
  chat.mutable_messages()->add_messages()->set_role(bad);
  st = ParseRequest(Wire(chat), &parsed);
  EXPECT_EQ(st.message(), "messages.messages[1].role: not valid UTF-8 (byte 1)");

  v1::GenerateRequest good;
  good.set_prompt("caf\xC3\xA9");
  good.set_request_id("r-1");
  EXPECT_TRUE(ParseRequest(Wire(good), &parsed).ok());
  EXPECT_EQ(parsed.prompt(), "caf\xC3\xA9");
}

TEST(WireTest, BytesThatAreNoMessageAreRefused) {
  v1::GenerateRequest parsed;
  const absl::Status st = ParseRequest(std::string("\xFF\xFF\xFF\xFF", 4), &parsed);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("not a valid GenerateRequest"), std::string::npos) << st;
}

}  // namespace
}  // namespace strata
