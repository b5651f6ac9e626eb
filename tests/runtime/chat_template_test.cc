// ChatTemplate (the model's Jinja template run by Strata's interpreter)
// produces exactly what Jinja2 renders (as transformers' apply_chat_template
// sets Jinja up), for the conversations in
// tests/reference/chat/conversations.json: the real Qwen2.5 and Llama 3
// templates (from the npm packages tools/test installs), and the Llama 2,
// Hunyuan and plain ChatML templates in tools/chat_templates that the model
// generator writes. Then how a template is found and chosen, the variables
// it sees, and its errors. (tests/runtime/jinja_test.cc compares the
// interpreter on many more templates.)
#include "runtime/chat_template.h"

#include <fstream>
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
};

std::vector<Case> Cases() {
  const std::string lenml = std::string(STRATA_NODE_MODULES) + "/@lenml";
  return {{"qwen2_5", lenml + "/tokenizer-qwen2_5/models/tokenizer_config.json"},
          {"llama3", lenml + "/tokenizer-llama3/models/tokenizer_config.json"},
          {"llama2", kTemplates + "/llama2.jinja"},
          {"hunyuan", kTemplates + "/hunyuan.jinja"},
          {"chatml", kTemplates + "/chatml.jinja"}};
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

Json Config(const std::string& source) {
  return Json::Object({{"chat_template", Json::String(source)},
                       {"bos_token", Json::Object({{"content", Json::String("<B>")}})},
                       {"eos_token", Json::String("<E>")},
                       {"pad_token", Json::String("<P>")}});
}

TEST(ChatTemplateErrorsTest, NamesTheProblem) {
  auto none = ChatTemplate::FromConfig(Json::Object({}), "m/tokenizer_config.json");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find("m/tokenizer_config.json: no chat_template"),
            std::string::npos);
  // A syntax error names the file, line and column.
  auto broken = ChatTemplate::FromConfig(Config("ok\n{{ messages[0].content"), "m/tc.json");
  ASSERT_EQ(broken.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(broken.status().message().find("m/tc.json: chat_template: line 2, column 1"),
            std::string::npos)
      << broken.status();
  // raise_exception(): FAILED_PRECONDITION with the template's own message.
  auto strict = ChatTemplate::FromConfig(
      Config("{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}"
             "{{ raise_exception('Only user and assistant roles are supported!') }}"
             "{% endif %}{{ m.content }}{% endfor %}"),
      "c");
  ASSERT_TRUE(strict.ok()) << strict.status();
  auto raised = strict->Render({{"user", "a"}, {"wizard", "b"}}, true);
  ASSERT_EQ(raised.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(raised.status().message(), "Only user and assistant roles are supported!");
  // A runtime error names the template and line.
  auto typed = ChatTemplate::FromConfig(Config("\n{{ messages[0].content + 1 }}"), "t.json");
  ASSERT_TRUE(typed.ok());
  auto failed = typed->Render({{"user", "a"}}, true);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find("t.json: chat_template: line 2"), std::string::npos)
      << failed.status();
  EXPECT_EQ(PythonStrip(" \t\u3000x y\n\x1c"), "x y");
}

// The variables transformers passes: special tokens (string or {content}),
// tools and documents (None when absent), extra keyword arguments.
TEST(ChatTemplateVariablesTest, AsApplyChatTemplatePassesThem) {
  auto t = ChatTemplate::FromConfig(
      Config("{{ bos_token }}|{{ eos_token }}|{{ pad_token }}|{{ tools is none }}|"
             "{{ documents is none }}|{{ enable_thinking }}|{{ add_generation_prompt }}|"
             "{{ messages[0].tool_calls[0].function.name }}|{{ messages | length }}"),
      "v");
  ASSERT_TRUE(t.ok()) << t.status();
  ChatMessage call{"assistant", ""};
  call.extra["tool_calls"] =
      nlohmann::ordered_json::parse(R"([{"type": "function", "function": {"name": "f"}}])");
  ChatOptions options;
  options.add_generation_prompt = false;
  options.kwargs["enable_thinking"] = false;
  auto text = t->Render({call, {"user", "u"}}, options);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "<B>|<E>|<P>|True|True|False|False|f|2");
}

// A list of named templates: tool_use when tools are given, else default.
TEST(ChatTemplateVariablesTest, NamedTemplatesAreChosenAsTransformersDoes) {
  const Json config = Json::Object(
      {{"chat_template",
        Json::Array({Json::Object({{"name", Json::String("default")},
                                   {"template", Json::String("plain:{{ messages[0].content }}")}}),
                     Json::Object({{"name", Json::String("tool_use")},
                                   {"template", Json::String("tools:{{ tools | length }}")}})})}});
  auto t = ChatTemplate::FromConfig(config, "named");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->names(), (std::vector<std::string>{"default", "tool_use"}));
  EXPECT_EQ(*t->Render({{"user", "hi"}}, true), "plain:hi");
  ChatOptions options;
  options.tools = nlohmann::ordered_json::parse(R"([{"type": "function"}, {"type": "function"}])");
  EXPECT_EQ(*t->Render({{"user", "hi"}}, options), "tools:2");
}

// chat_template.jinja beside tokenizer_config.json wins over its chat_template.
TEST(ChatTemplateVariablesTest, AChatTemplateJinjaFileWins) {
  const std::string dir = testing::FreshDir("chat-jinja");
  std::ofstream(dir + "/tokenizer_config.json")
      << R"({"chat_template": "config", "eos_token": "</s>"})";
  auto from_config = ChatTemplate::FromModelDir(dir);
  ASSERT_TRUE(from_config.ok()) << from_config.status();
  EXPECT_EQ(*from_config->Render({{"user", "x"}}, true), "config");
  std::ofstream(dir + "/chat_template.jinja") << "file {{ eos_token }}";
  auto from_file = ChatTemplate::FromModelDir(dir);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  EXPECT_EQ(*from_file->Render({{"user", "x"}}, true), "file </s>");
}

}  // namespace
}  // namespace strata
