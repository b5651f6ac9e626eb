// The chat template of tokenizer_config.json, and rendering messages with
// it: a status, never a crash, for any template and any messages.
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/chat_template.h"
#include "runtime/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  // The first line is the template; the rest are messages, role:content.
  const size_t nl = text.find('\n');
  strata::Json config =
      strata::Json::Object({{"chat_template", strata::Json::String(text.substr(0, nl))},
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
  for (bool open : {false, true}) (void)chat->Render(messages, open);
  return 0;
}
