// `strata render`: a model's chat template applied to a conversation, as the
// gateway applies it, for debugging a template.
//
//   strata render --model DIR --messages FILE.json [--tools FILE.json]
//                 [--kwargs JSON] [--no-generation-prompt] [--ids]
//
// FILE.json holds OpenAI-style messages ([{"role", "content", ...}]; extra
// fields such as tool_calls reach the template as they are). Prints the
// prompt text; with --ids, the token ids it encodes to (special tokens the
// template writes become their ids, and no BOS is added beyond the
// template's), one line.
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "runtime/chat_template.h"
#include "runtime/status_macros.h"
#include "runtime/tokenizer.h"
#include "tools/commands.h"
#include "tools/flags.h"

namespace strata {
namespace {

absl::StatusOr<nlohmann::ordered_json> ReadJsonArg(const std::string& flag,
                                                   const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--", flag, ": cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  try {
    return nlohmann::ordered_json::parse(text.str());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", path, ": ", e.what()));
  }
}

}  // namespace

absl::Status RenderCommand(const std::vector<std::string>& args) {
  std::string model, messages_path, tools_path, kwargs_text;
  bool no_generation_prompt = false, ids = false;
  FlagSet f;
  f.String("model", &model, "model folder (required)");
  f.String("messages", &messages_path, "a JSON file with the messages (required)");
  f.String("tools", &tools_path, "a JSON file with tool definitions (OpenAI's `tools`)");
  f.String("kwargs", &kwargs_text,
           "extra template variables as a JSON object, e.g. "
           "'{\"enable_thinking\": false}'");
  f.Bool("no-generation-prompt", &no_generation_prompt, "do not open the assistant's turn");
  f.Bool("ids", &ids, "print the token ids instead of the text");
  bool stop = false;
  RETURN_IF_ERROR(
      ParseOrHelp(f, args, "usage: strata render --model DIR --messages FILE.json [flags]", &stop));
  if (stop) return absl::OkStatus();
  if (model.empty()) return absl::InvalidArgumentError("--model: required");
  if (messages_path.empty()) return absl::InvalidArgumentError("--messages: required");
  ASSIGN_OR_RETURN(nlohmann::ordered_json messages, ReadJsonArg("messages", messages_path));
  if (!messages.is_array()) {
    return absl::InvalidArgumentError("--messages: " + messages_path + ": must be a JSON array");
  }
  std::vector<ChatMessage> chat;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--messages: ", messages_path, ": [", i, "].role: required, a string"));
    }
    ChatMessage message{m["role"].get<std::string>(), ""};
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (it.key() == "role") continue;
      if (it.key() == "content" && it.value().is_string()) {
        message.content = it.value().get<std::string>();
      } else {
        message.extra[it.key()] = it.value();
      }
    }
    chat.push_back(std::move(message));
  }
  ChatOptions options;
  options.add_generation_prompt = !no_generation_prompt;
  if (!tools_path.empty()) {
    ASSIGN_OR_RETURN(options.tools, ReadJsonArg("tools", tools_path));
    if (!options.tools.is_array()) {
      return absl::InvalidArgumentError("--tools: " + tools_path + ": must be a JSON array");
    }
  }
  if (!kwargs_text.empty()) {
    try {
      options.kwargs = nlohmann::ordered_json::parse(kwargs_text);
    } catch (const nlohmann::json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("--kwargs: ", e.what()));
    }
    if (!options.kwargs.is_object()) {
      return absl::InvalidArgumentError("--kwargs: must be a JSON object");
    }
  }
  ASSIGN_OR_RETURN(ChatTemplate chat_template, ChatTemplate::FromModelDir(model));
  ASSIGN_OR_RETURN(std::string text, chat_template.Render(chat, options));
  if (!ids) {
    std::cout << text;
    std::cout.flush();
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(auto tokenizer, LoadTokenizer(model));
  ASSIGN_OR_RETURN(std::vector<int32_t> encoded, tokenizer->Encode(text, /*add_bos=*/false));
  for (size_t i = 0; i < encoded.size(); ++i) std::cout << (i ? " " : "") << encoded[i];
  std::cout << "\n";
  return absl::OkStatus();
}

}  // namespace strata
