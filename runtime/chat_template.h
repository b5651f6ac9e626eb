// Chat templates as built-in renderers. A model's tokenizer_config.json
// carries a Jinja `chat_template`; Strata does not run Jinja but recognises
// which family's template it is and renders the same text in C++:
//   kChatMl   <|im_start|>role\n...<|im_end|>\n  (Qwen2/Qwen2.5, with the
//             template's default system prompt and tool messages)
//   kLlama2   <s>[INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] ... </s>
//   kLlama3   <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
//   kHunyuan  <｜hy_begin▁of▁sentence｜>...<｜hy_User｜>...<｜hy_Assistant｜>
// tests/reference/chat checks each renderer against the Jinja templates
// rendered by Jinja2 for the same conversations.
#ifndef STRATA_RUNTIME_CHAT_TEMPLATE_H_
#define STRATA_RUNTIME_CHAT_TEMPLATE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/json.h"

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
  std::string role;  // system | user | assistant | tool (ChatML)
  std::string content;
};

enum class ChatFormat { kChatMl, kLlama2, kLlama3, kHunyuan };
const char* ChatFormatName(ChatFormat format);

class ChatTemplate {
 public:
  // From a model folder's tokenizer_config.json; NotFound when it has no
  // chat_template, InvalidArgument when the template is not one Strata knows.
  static absl::StatusOr<ChatTemplate> FromModelDir(const std::string& model_dir);
  static absl::StatusOr<ChatTemplate> FromConfig(const Json& tokenizer_config,
                                                 const std::string& where);

  // The prompt text for `messages` (special tokens written out as text, as
  // the Jinja template does); `add_generation_prompt` opens the assistant's
  // turn. Errors name the offending message ("messages[2].role: ...").
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt) const;

  ChatFormat format() const { return format_; }

 private:
  ChatFormat format_ = ChatFormat::kChatMl;
  std::string bos_, eos_;
  std::string default_system_;  // ChatML: the template's system prompt when none is given
};

// Python's str.strip() (Jinja's `trim` and `.strip()`): removes leading and
// trailing characters that Python's str.isspace() accepts.
std::string PythonStrip(const std::string& text);

}  // namespace strata

#endif  // STRATA_RUNTIME_CHAT_TEMPLATE_H_
