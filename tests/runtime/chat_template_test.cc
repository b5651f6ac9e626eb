// Strata's built-in chat renderers produce exactly what Jinja2 renders from
// the templates (as transformers' apply_chat_template sets Jinja up), for the
// conversations in tests/reference/chat/conversations.json: the real
// Qwen2.5 and Llama 3 templates (from the npm packages tools/test installs),
// and the Llama 2, Hunyuan and plain ChatML templates in tools/chat_templates.
#include "runtime/chat_template.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/json.h"
#include "tests/test_util.h"

namespace strata {
namespace {

const std::string kChat = std::string(STRATA_SOURCE_DIR) + "/tests/reference/chat";
// The templates the model generator writes (Llama 2 and Hunyuan transcribed
// from their published formats; a plain ChatML).
const std::string kTemplates = std::string(STRATA_SOURCE_DIR) + "/tools/chat_templates";

struct Case {
  const char* name;
  std::string source;  // tokenizer_config.json or .jinja
  ChatFormat format;
};

std::vector<Case> Cases() {
  const std::string lenml = std::string(STRATA_NODE_MODULES) + "/@lenml";
  return {
      {"qwen2_5", lenml + "/tokenizer-qwen2_5/models/tokenizer_config.json", ChatFormat::kChatMl},
      {"llama3", lenml + "/tokenizer-llama3/models/tokenizer_config.json", ChatFormat::kLlama3},
      {"llama2", kTemplates + "/llama2.jinja", ChatFormat::kLlama2},
      {"hunyuan", kTemplates + "/hunyuan.jinja", ChatFormat::kHunyuan},
      {"chatml", kTemplates + "/chatml.jinja", ChatFormat::kChatMl}};
}

Json ConfigOf(const std::string& source) {
  if (source.ends_with(".json")) return *ReadJsonFile(source);
  std::string text = testing::ReadFile(source);
  if (!text.empty() && text.back() == '\n') text.pop_back();
  return Json::Object({{"chat_template", Json::String(text)},
                       {"bos_token", Json::String("<s>")},
                       {"eos_token", Json::String("</s>")}});
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class ChatTemplateTest : public ::testing::TestWithParam<Case> {};

TEST_P(ChatTemplateTest, RendersWhatJinjaRenders) {
  const Case& c = GetParam();
  auto tmpl = ChatTemplate::FromConfig(ConfigOf(c.source), c.source);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  EXPECT_EQ(tmpl->format(), c.format);

  std::string out;
  const std::string conversations = kChat + "/conversations.json";
  ASSERT_EQ(testing::RunCommand("/usr/bin/python3 " + kChat + "/render.py '" + c.source + "' '" +
                                    conversations + "' 2>&1",
                                &out),
            0)
      << out;
  auto reference = ParseJson(out, "render.py output");
  ASSERT_TRUE(reference.ok()) << reference.status() << "\n" << out;
  auto convs = ReadJsonFile(conversations);
  ASSERT_TRUE(convs.ok());
  ASSERT_EQ(reference->array().size(), convs->array().size());
  int rendered = 0;
  for (size_t i = 0; i < convs->array().size(); ++i) {
    const Json& conv = convs->array()[i];
    std::vector<ChatMessage> messages;
    for (const Json& m : conv.Find("messages")->array()) {
      messages.push_back({m.Find("role")->string_value(), m.Find("content")->string_value()});
    }
    auto got = tmpl->Render(messages, conv.Find("add_generation_prompt")->bool_value());
    const Json& want = reference->array()[i];
    if (const Json* error = want.Find("error")) {
      EXPECT_FALSE(got.ok()) << c.name << " conversation " << i << ": Jinja raised "
                             << error->string_value() << " but Strata rendered " << *got;
      continue;
    }
    ASSERT_TRUE(got.ok()) << c.name << " conversation " << i << ": " << got.status();
    EXPECT_EQ(*got, want.Find("text")->string_value()) << c.name << " conversation " << i;
    ++rendered;
  }
  EXPECT_GE(rendered, 8) << c.name;
}

INSTANTIATE_TEST_SUITE_P(Templates, ChatTemplateTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ChatTemplateErrorsTest, NamesTheProblem) {
  auto none = ChatTemplate::FromConfig(Json::Object({}), "m/tokenizer_config.json");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find("m/tokenizer_config.json: no chat_template"),
            std::string::npos);
  auto odd = ChatTemplate::FromConfig(
      Json::Object({{"chat_template", Json::String("{{ messages[0].content }}")}}), "x");
  EXPECT_EQ(odd.status().code(), absl::StatusCode::kInvalidArgument);
  auto chatml = ChatTemplate::FromConfig(ConfigOf(kTemplates + "/chatml.jinja"), "c");
  ASSERT_TRUE(chatml.ok());
  EXPECT_FALSE(chatml->Render({}, true).ok());
  auto bad = chatml->Render({{"user", "a"}, {"wizard", "b"}}, true);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("messages[1].role: \"wizard\""), std::string::npos)
      << bad.status();
  EXPECT_EQ(PythonStrip(" \t\u3000x y\n\x1c"), "x y");
}

}  // namespace
}  // namespace strata
