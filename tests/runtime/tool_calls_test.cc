// Tool-call parsing on fixed model outputs of each format, the format each
// real template teaches, and how much of a streaming reply may be shown.
#include "runtime/tool_calls.h"

#include <nlohmann/json.hpp>

#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace strata {
namespace {

TEST(ToolCallsTest, HermesBlocksAsQwenWritesThem) {
  const ToolCallOutput out = ParseToolCalls(
      ToolCallFormat::kHermes,
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
      "\"Paris\", \"unit\": \"celsius\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"search\", "
      "\"arguments\": {\"query\": \"tides 日本\"}}\n</tool_call>");
  ASSERT_EQ(out.calls.size(), 2u);
  EXPECT_EQ(out.content, "Let me check.\n");
  EXPECT_EQ(out.calls[0].name, "get_weather");
  EXPECT_EQ(out.calls[0].arguments, R"({"city":"Paris","unit":"celsius"})");
  EXPECT_EQ(out.calls[1].arguments, R"({"query":"tides 日本"})");
  // An unclosed last block (generation stopped at </tool_call>'s token) still counts.
  EXPECT_EQ(
      ParseToolCalls(ToolCallFormat::kHermes, "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n")
          .calls.size(),
      1u);
  // Arguments given as a JSON string are read as the object.
  EXPECT_EQ(
      ParseToolCalls(ToolCallFormat::kHermes,
                     "<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}</tool_call>")
          .calls[0]
          .arguments,
      R"({"a":1})");
  // Not JSON, or no name: plain content.
  for (const char* text :
       {"<tool_call>{not json}</tool_call>", "<tool_call>{\"arguments\": {}}</tool_call>",
        "no calls here", "<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>"}) {
    const ToolCallOutput plain = ParseToolCalls(ToolCallFormat::kHermes, text);
    EXPECT_TRUE(plain.calls.empty()) << text;
    EXPECT_EQ(plain.content, text);
  }
}

TEST(ToolCallsTest, Llama3JsonWithParameters) {
  ToolCallOutput out =
      ParseToolCalls(ToolCallFormat::kLlama3Json,
                     "  {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Brest\"}}");
  ASSERT_EQ(out.calls.size(), 1u);
  EXPECT_EQ(out.content, "");
  EXPECT_EQ(out.calls[0].arguments, R"({"city":"Brest"})");
  out = ParseToolCalls(ToolCallFormat::kLlama3Json,
                       "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", "
                       "\"parameters\": {\"x\": 2}}");
  ASSERT_EQ(out.calls.size(), 2u);
  EXPECT_EQ(out.calls[1].name, "b");
  out = ParseToolCalls(ToolCallFormat::kLlama3Json, "The weather is fine {really}.");
  EXPECT_TRUE(out.calls.empty());
  EXPECT_EQ(out.content, "The weather is fine {really}.");
}

TEST(ToolCallsTest, MistralToolCallsArray) {
  ToolCallOutput out = ParseToolCalls(
      ToolCallFormat::kMistral,
      "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}, "
      "{\"name\": \"search\", \"arguments\": {\"query\": \"fjords\"}}]");
  ASSERT_EQ(out.calls.size(), 2u);
  EXPECT_EQ(out.content, "");
  EXPECT_EQ(out.calls[0].arguments, R"({"city":"Oslo"})");
  // The special token decoded away: the bare array is the calls.
  out = ParseToolCalls(ToolCallFormat::kMistral,
                       " [{\"name\": \"f\", \"arguments\": {\"k\": true}}]");
  ASSERT_EQ(out.calls.size(), 1u);
  EXPECT_EQ(out.calls[0].arguments, R"({"k":true})");
  EXPECT_TRUE(ParseToolCalls(ToolCallFormat::kMistral, "[1, 2] is a list").calls.empty());
}

TEST(ToolCallsTest, EachRealTemplateTeachesItsFormat) {
  const std::string root = std::string(STRATA_SOURCE_DIR) + "/tests/reference/templates/";
  auto format_of = [&](const std::string& name) {
    const auto config = nlohmann::json::parse(testing::ReadFile(root + name + ".json"));
    std::string source;
    if (config["chat_template"].is_array()) {
      for (const auto& t : config["chat_template"]) source += t["template"].get<std::string>();
    } else {
      source = config["chat_template"].get<std::string>();
    }
    return DetectToolCallFormat(source);
  };
  EXPECT_EQ(format_of("qwen2_5"), ToolCallFormat::kHermes);
  EXPECT_EQ(format_of("qwen3"), ToolCallFormat::kHermes);
  EXPECT_EQ(format_of("mistral_nemo"), ToolCallFormat::kMistral);
  EXPECT_EQ(format_of("llama3_2"), ToolCallFormat::kLlama3Json);
  EXPECT_EQ(format_of("gemma3"), ToolCallFormat::kNone);
}

TEST(ToolCallsTest, StreamingHoldsBackWhereACallMayBegin) {
  EXPECT_EQ(ShowableToolText(ToolCallFormat::kHermes, "Hello <tool"), 6u);
  EXPECT_EQ(ShowableToolText(ToolCallFormat::kHermes, "Hello <tool_call>{\"na"), 6u);
  EXPECT_EQ(ShowableToolText(ToolCallFormat::kHermes, "a < b"), 5u);
  EXPECT_EQ(ShowableToolText(ToolCallFormat::kLlama3Json, "  {\"name"), 0u);
  EXPECT_EQ(ShowableToolText(ToolCallFormat::kLlama3Json, "<|python"), 0u);
  EXPECT_EQ(ShowableToolText(ToolCallFormat::kLlama3Json, "Sure, {x}"), 9u);
  EXPECT_EQ(ShowableToolText(ToolCallFormat::kMistral, "[TOOL_"), 0u);
  EXPECT_EQ(ShowableToolText(ToolCallFormat::kMistral, "ok [TOOL_CALLS]["), 3u);
  EXPECT_EQ(ShowableToolText(ToolCallFormat::kNone, "<tool_call>"), 11u);
}

}  // namespace
}  // namespace strata
