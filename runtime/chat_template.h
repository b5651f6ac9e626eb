// A model's chat template, run as written: the Jinja `chat_template` of its
// tokenizer_config.json (or chat_template.jinja beside it) is parsed once
// and rendered per request by Strata's Jinja interpreter (runtime/jinja),
// with the variables transformers' apply_chat_template passes: `messages`,
// `add_generation_prompt`, `tools`, `documents`, the special tokens of the
// config (bos_token, eos_token, ...) and any extra keyword arguments
// (chat_template_kwargs, e.g. enable_thinking). A config may carry several
// named templates (a list of {name, template}); as transformers, `tool_use`
// is taken when tools are given and it exists, else `default`.
#ifndef STRATA_RUNTIME_CHAT_TEMPLATE_H_
#define STRATA_RUNTIME_CHAT_TEMPLATE_H_

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/jinja/template.h"
#include "runtime/json.h"
#include "runtime/tool_calls.h"

namespace strata {

// Hunyuan's control tokens (fullwidth bars, U+2581 for spaces), as its
// template writes them and its tokenizer_config.json declares them.
namespace hunyuan {
inline constexpr char kBegin[] =
    "<\xEF\xBD\x9Chy_begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
inline constexpr char kEnd[] =  // end of an assistant turn (EOS)
    "<\xEF\xBD\x9Chy_place\xE2\x96\x81holder\xE2\x96\x81no\xE2\x96\x81"
    "2\xEF\xBD\x9C>";
inline constexpr char kSystemEnd[] =
    "<\xEF\xBD\x9Chy_place\xE2\x96\x81holder\xE2\x96\x81no\xE2\x96\x81"
    "3\xEF\xBD\x9C>";
inline constexpr char kUser[] = "<\xEF\xBD\x9Chy_User\xEF\xBD\x9C>";
inline constexpr char kAssistant[] = "<\xEF\xBD\x9Chy_Assistant\xEF\xBD\x9C>";
}  // namespace hunyuan

struct ChatMessage {
  std::string role;  // system | developer | user | assistant | tool
  std::string content;
  // Other fields the template may read (tool_calls, tool_call_id, name,
  // content as parts, ...): they are added to the message's dict, and a
  // "content" here replaces the string above.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

struct ChatOptions {
  bool add_generation_prompt = true;
  nlohmann::ordered_json tools;      // null: none; else a list of tool definitions
  nlohmann::ordered_json documents;  // null: none
  // Extra variables (chat_template_kwargs), e.g. {"enable_thinking": false}.
  nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();
  // strftime_now(); null: the local time now.
  jinja::Interpreter::Clock clock;
};

class ChatTemplate {
 public:
  // From a model folder: chat_template.jinja if present, else the
  // chat_template of tokenizer_config.json (whose special tokens are used
  // either way). NotFound when there is none; InvalidArgument naming the
  // file, line and column when the template does not parse.
  static absl::StatusOr<ChatTemplate> FromModelDir(const std::string& model_dir);
  static absl::StatusOr<ChatTemplate> FromConfig(const Json& tokenizer_config,
                                                 const std::string& where);

  // The prompt text. A template's raise_exception() is FAILED_PRECONDITION
  // with its message; other errors INVALID_ARGUMENT.
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     const ChatOptions& options) const;
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt) const {
    ChatOptions options;
    options.add_generation_prompt = add_generation_prompt;
    return Render(messages, options);
  }

  // The named templates, in the config's order ("default" for a single one).
  std::vector<std::string> names() const;
  // The format its model writes tool calls in (from the templates' text).
  ToolCallFormat tool_call_format() const { return tool_format_; }

 private:
  std::map<std::string, jinja::Template> templates_;
  std::vector<std::string> order_;
  jinja::Dict special_tokens_;
  std::string where_;
  ToolCallFormat tool_format_ = ToolCallFormat::kNone;
};

// Python's str.strip() (Jinja's `trim` and `.strip()`): removes leading and
// trailing characters that Python's str.isspace() accepts.
std::string PythonStrip(const std::string& text);

}  // namespace strata

#endif  // STRATA_RUNTIME_CHAT_TEMPLATE_H_
