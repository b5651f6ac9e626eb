// Tool calls in a model's output, in the format its chat template teaches it:
//   kHermes      Qwen2.5, Qwen3, Hermes: <tool_call>{"name", "arguments"}</tool_call>, any number
//   kLlama3Json  Llama 3.1/3.2: the whole reply is {"name", "parameters"} (several joined by ';'),
//                optionally after <|python_tag|>
//   kMistral     Mistral: [TOOL_CALLS] then a JSON array of {"name", "arguments"}
// The format is recognised from the template's text. An output that does
// not parse as calls is plain content, as vLLM treats it.
#ifndef STRATA_RUNTIME_TOOL_CALLS_H_
#define STRATA_RUNTIME_TOOL_CALLS_H_

#include <string>
#include <vector>

namespace strata {

enum class ToolCallFormat { kNone, kHermes, kLlama3Json, kMistral };
const char* ToolCallFormatName(ToolCallFormat format);

// The format of the calls a template's model writes (kNone: no tool support found).
ToolCallFormat DetectToolCallFormat(const std::string& template_source);

struct ParsedToolCall {
  std::string name;
  std::string arguments;  // a JSON object, as compact text
};

struct ToolCallOutput {
  std::string content;  // the text outside the calls (the whole text when there are none)
  std::vector<ParsedToolCall> calls;
};

ToolCallOutput ParseToolCalls(ToolCallFormat format, const std::string& text);

// While a completion streams: how many bytes of `text` (the completion so
// far) can be shown as content, holding back where a call begins or may
// begin. The held text is released at the end if it holds no call.
size_t ShowableToolText(ToolCallFormat format, const std::string& text);

}  // namespace strata

#endif  // STRATA_RUNTIME_TOOL_CALLS_H_
