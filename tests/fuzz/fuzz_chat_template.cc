// The chat template of tokenizer_config.json (parsed by Strata's Jinja
// interpreter), and rendering messages with it: a status, never a crash or a
// hang, for any template and any messages.
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/chat_template.h"
#include "runtime/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  // The template, then "\n---\n" and messages, one per line, role:content.
  const size_t split = text.find("\n---\n");
  const size_t nl = split == std::string::npos ? std::string::npos : split + 4;
  strata::Json config =
      strata::Json::Object({{"chat_template", strata::Json::String(text.substr(0, split))},
                            {"bos_token", strata::Json::String("<s>")},
                            {"eos_token", strata::Json::String("</s>")}});
  auto chat = strata::ChatTemplate::FromConfig(config, "tokenizer_config.json");
  if (!chat.ok()) return 0;
  std::vector<strata::ChatMessage> messages;
  size_t at = nl == std::string::npos ? text.size() : nl + 1;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(at, end - at);
    const size_t colon = line.find(':');
    messages.push_back(
        {line.substr(0, colon), colon == std::string::npos ? "" : line.substr(colon + 1)});
    at = end + 1;
  }
  strata::ChatOptions options;
  options.clock = [](const std::string&) { return std::string("1 Dec 2026"); };
  for (bool open : {false, true}) {
    options.add_generation_prompt = open;
    (void)chat->Render(messages, options);
  }
  return 0;
}
