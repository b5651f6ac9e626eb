// The gateway's request validation (ValidateAndTokenize) at its boundaries,
// in process with the tiny model's real tokenizer: each limit's last allowed
// value passes, the first refused one fails naming the field.
#include <functional>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer.h"
#include "services/gateway/gateway_service.h"
#include "tests/test_util.h"

namespace strata {
namespace {

class GatewayValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tokenizer = LoadTokenizer(testing::TestModel("llama"));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(*tokenizer);
    model_.context = 32;
    model_.vocab_size = static_cast<int32_t>(tokenizer_->vocab_size());
  }
  v1::GenerateRequest Tokens(int count, int32_t id = 5) {
    v1::GenerateRequest r;
    r.mutable_prompt_tokens();  // set, even when empty
    for (int i = 0; i < count; ++i) r.mutable_prompt_tokens()->add_ids(id);
    return r;
  }
  // OK, or the error's code and a field name in its message.
  void ExpectRefused(const v1::GenerateRequest& r, absl::StatusCode code,
                     const std::string& field) {
    auto got = ValidateAndTokenize(r, *tokenizer_, model_);
    ASSERT_FALSE(got.ok()) << r.ShortDebugString();
    EXPECT_EQ(got.status().code(), code) << got.status();
    EXPECT_NE(got.status().message().find(field), std::string::npos) << got.status();
  }
  void ExpectOk(const v1::GenerateRequest& r) {
    auto got = ValidateAndTokenize(r, *tokenizer_, model_);
    EXPECT_TRUE(got.ok()) << r.ShortDebugString() << ": " << got.status();
  }
  std::unique_ptr<Tokenizer> tokenizer_;
  ServedModel model_;
};

TEST_F(GatewayValidationTest, ThePromptFillsTheContextLessOneToken) {
  ExpectOk(Tokens(31));
  ExpectRefused(Tokens(32), absl::StatusCode::kOutOfRange, "prompt");
  ExpectOk(Tokens(1));
  ExpectRefused(Tokens(0), absl::StatusCode::kInvalidArgument, "prompt");
  auto submit = ValidateAndTokenize(Tokens(31), *tokenizer_, model_);
  ASSERT_TRUE(submit.ok());
  EXPECT_EQ(submit->prompt_ids_size(), 31);
  EXPECT_EQ(submit->max_tokens(), 64u);  // the default
}

TEST_F(GatewayValidationTest, TokenIdsEndAtTheVocabulary) {
  ExpectOk(Tokens(3, model_.vocab_size - 1));
  ExpectOk(Tokens(3, 0));
  ExpectRefused(Tokens(3, model_.vocab_size), absl::StatusCode::kInvalidArgument,
                "prompt_tokens.ids[0]");
  ExpectRefused(Tokens(3, -1), absl::StatusCode::kInvalidArgument, "prompt_tokens.ids[0]");
}

TEST_F(GatewayValidationTest, StopSequencesUpToSixteenOfUpTo256Bytes) {
  auto r = Tokens(3);
  for (int i = 0; i < 16; ++i) r.add_stop(std::string(256, 'a' + i));
  ExpectOk(r);
  r.add_stop(std::string(1, 'x'));
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "stop");
  r = Tokens(3);
  r.add_stop(std::string(257, 'a'));
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "stop[0]");
  r = Tokens(3);
  r.add_stop("ok");
  r.add_stop("");
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "stop[1]");
}

TEST_F(GatewayValidationTest, SamplingParametersAtTheirLimits) {
  auto r = Tokens(3);
  r.mutable_sampling()->set_top_p(1.0f);
  r.mutable_sampling()->set_min_p(1.0f);
  r.mutable_sampling()->set_temperature(0.0f);
  r.mutable_sampling()->set_top_k(0);
  ExpectOk(r);
  r.mutable_sampling()->set_top_p(1.0001f);
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "sampling.top_p");
  r.mutable_sampling()->set_top_p(std::numeric_limits<float>::denorm_min());
  ExpectOk(r);
  r.mutable_sampling()->set_min_p(1.0001f);
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "sampling.min_p");
  r.mutable_sampling()->set_min_p(-0.0001f);
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "sampling.min_p");
  r.mutable_sampling()->set_min_p(0);
  r.mutable_sampling()->set_top_k(-1);
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "sampling.top_k");
  r.mutable_sampling()->set_top_k(0);
  r.mutable_sampling()->set_temperature(-0.0001f);
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "sampling.temperature");
  r.mutable_sampling()->set_temperature(0);
  r.mutable_sampling()->set_repetition_penalty(0);
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "sampling.repetition_penalty");
  r.mutable_sampling()->set_repetition_penalty(std::numeric_limits<float>::infinity());
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "sampling.repetition_penalty");
  r.mutable_sampling()->set_repetition_penalty(1e-3f);
  ExpectOk(r);
  r.mutable_sampling()->set_presence_penalty(2.5f);
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "sampling.presence_penalty");
  r.mutable_sampling()->set_presence_penalty(-2.0f);
  r.mutable_sampling()->set_frequency_penalty(std::numeric_limits<float>::quiet_NaN());
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "sampling.frequency_penalty");
  r.mutable_sampling()->set_frequency_penalty(2.0f);
  ExpectOk(r);
  r.set_prompt_logprobs(21);
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "prompt_logprobs");
  r.set_prompt_logprobs(-1);
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "prompt_logprobs");
  r.set_prompt_logprobs(0);
  ExpectOk(r);
  r.set_max_tokens(0);
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "max_tokens");
  r.set_max_tokens(1);
  ExpectOk(r);
}

TEST_F(GatewayValidationTest, ATextPromptIsTokenizedWithItsBos) {
  v1::GenerateRequest r;
  r.set_prompt("hello there");
  auto with = ValidateAndTokenize(r, *tokenizer_, model_);
  ASSERT_TRUE(with.ok()) << with.status();
  r.set_add_bos(false);
  auto without = ValidateAndTokenize(r, *tokenizer_, model_);
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_EQ(with->prompt_ids_size(), without->prompt_ids_size() + 1);
  ASSERT_TRUE(tokenizer_->bos_id().has_value());
  EXPECT_EQ(with->prompt_ids(0), *tokenizer_->bos_id());
  EXPECT_FALSE(ValidateAndTokenize(v1::GenerateRequest(), *tokenizer_, model_).ok());
  r.set_prompt("");  // no text and no BOS: nothing to generate from
  ExpectRefused(r, absl::StatusCode::kInvalidArgument, "encodes to no tokens");
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// A Conversation's tool fields as the template gets them; bad JSON or shapes
// are refused naming the field.
TEST(ChatFromProtoTest, ToolFieldsReachTheTemplateAndBadOnesAreNamed) {
  v1::Conversation c;
  c.add_messages()->set_role("user");
  v1::ChatMessage* call = c.add_messages();
  call->set_role("assistant");
  call->set_tool_calls_json(
      R"([{"type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}])");
  v1::ChatMessage* result = c.add_messages();
  result->set_role("tool");
  result->set_tool_call_id("call_1");
  result->set_content("ok");
  c.set_tools_json(R"([{"type": "function", "function": {"name": "f"}}])");
  c.set_template_kwargs_json(R"({"enable_thinking": false})");
  c.set_add_generation_prompt(false);
  auto chat = ChatFromProto(c);
  ASSERT_TRUE(chat.ok()) << chat.status();
  ASSERT_EQ(chat->messages.size(), 3u);
  // The arguments string became the object.
  EXPECT_EQ(chat->messages[1].extra["tool_calls"][0]["function"]["arguments"]["a"], 1);
  EXPECT_EQ(chat->messages[2].extra["tool_call_id"], "call_1");
  EXPECT_EQ(chat->options.tools.size(), 1u);
  EXPECT_EQ(chat->options.kwargs["enable_thinking"], false);
  EXPECT_FALSE(chat->options.add_generation_prompt);

  struct Bad {
    std::function<void(v1::Conversation*)> change;
    const char* field;
  };
  const Bad bad[] = {
      {[](v1::Conversation* x) { x->set_tools_json("[{"); }, "messages.tools"},
      {[](v1::Conversation* x) { x->set_tools_json(R"({"name": "f"})"); }, "messages.tools"},
      {[](v1::Conversation* x) { x->set_tools_json(R"([{"type": "function"}])"); },
       "messages.tools[0]"},
      {[](v1::Conversation* x) { x->mutable_messages(1)->set_tool_calls_json("{}"); },
       "messages[1].tool_calls"},
      {[](v1::Conversation* x) { x->mutable_messages(1)->set_tool_calls_json("[1]"); },
       "messages[1].tool_calls"},
      {[](v1::Conversation* x) { x->set_template_kwargs_json("[]"); }, "messages.template_kwargs"},
      {[](v1::Conversation* x) { x->set_template_kwargs_json(R"({"messages": []})"); },
       "messages.template_kwargs"},
  };
  for (const Bad& b : bad) {
    v1::Conversation x = c;
    b.change(&x);
    auto got = ChatFromProto(x);
    ASSERT_FALSE(got.ok()) << b.field;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(got.status().message().find(b.field), std::string::npos) << got.status();
  }
}

}  // namespace
}  // namespace strata
