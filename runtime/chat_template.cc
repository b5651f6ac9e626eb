#include "runtime/chat_template.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"
#include "runtime/tokenizer/unicode.h"

namespace strata {
namespace {

bool PythonSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

std::string TokenText(const Json* v) {
  if (v == nullptr) return "";
  if (v->is_string()) return v->string_value();
  if (const Json* c = v->Find("content"); c != nullptr && c->is_string()) return c->string_value();
  return "";
}

absl::Status CheckRole(const ChatMessage& m, size_t i, std::initializer_list<const char*> roles) {
  for (const char* r : roles) {
    if (m.role == r) return absl::OkStatus();
  }
  std::string allowed;
  for (const char* r : roles) absl::StrAppend(&allowed, allowed.empty() ? "" : ", ", r);
  return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].role: \"", m.role,
                                                 "\" is not one of ", allowed, " for this model"));
}

}  // namespace

const char* ChatFormatName(ChatFormat format) {
  switch (format) {
    case ChatFormat::kChatMl:
      return "chatml";
    case ChatFormat::kLlama2:
      return "llama2";
    case ChatFormat::kLlama3:
      return "llama3";
    case ChatFormat::kHunyuan:
      return "hunyuan";
  }
  return "?";
}

std::string PythonStrip(const std::string& text) {
  const std::vector<unicode::Char> chars = unicode::Decode(text);
  size_t begin = 0, end = chars.size() - 1;  // the last entry is the sentinel
  while (begin < end && PythonSpace(chars[begin].cp)) ++begin;
  while (end > begin && PythonSpace(chars[end - 1].cp)) --end;
  return text.substr(chars[begin].offset, chars[end].offset - chars[begin].offset);
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromModelDir(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "tokenizer_config.json").string();
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(
        absl::StrCat(model_dir, ": no tokenizer_config.json, so no chat template"));
  }
  ASSIGN_OR_RETURN(Json config, ReadJsonFile(path));
  return FromConfig(config, path);
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromConfig(const Json& config,
                                                      const std::string& where) {
  const Json* t = config.Find("chat_template");
  if (t == nullptr || !t->is_string() || t->string_value().empty()) {
    return absl::NotFoundError(absl::StrCat(where, ": no chat_template; send a prompt instead"));
  }
  const std::string& text = t->string_value();
  ChatTemplate result;
  result.bos_ = TokenText(config.Find("bos_token"));
  result.eos_ = TokenText(config.Find("eos_token"));
  if (text.find("<|im_start|>") != std::string::npos) {
    result.format_ = ChatFormat::kChatMl;
    // The default system prompt: the text the template writes after
    // "<|im_start|>system\n" up to "<|im_end|>" when none is given.
    const std::string open = "'<|im_start|>system\\n";
    for (size_t at = text.find(open); at != std::string::npos; at = text.find(open, at + 1)) {
      const size_t from = at + open.size();
      const size_t to = text.find("<|im_end|>", from);
      if (to != std::string::npos && text.compare(from, 1, "'") != 0 &&
          text.substr(from, to - from).find('\'') == std::string::npos) {
        result.default_system_ = text.substr(from, to - from);
        break;
      }
    }
  } else if (text.find("<|start_header_id|>") != std::string::npos) {
    result.format_ = ChatFormat::kLlama3;
  } else if (text.find("[INST]") != std::string::npos) {
    result.format_ = ChatFormat::kLlama2;
  } else if (text.find("hy_User") != std::string::npos) {
    result.format_ = ChatFormat::kHunyuan;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(where,
                     ": chat_template is not one Strata renders (ChatML/Qwen2.5, Llama 2 [INST], "
                     "Llama 3 headers, Hunyuan)"));
  }
  return result;
}

absl::StatusOr<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                 bool add_generation_prompt) const {
  if (messages.empty()) return absl::InvalidArgumentError("messages: empty");
  std::string out;
  switch (format_) {
    case ChatFormat::kChatMl: {
      // Qwen2.5: the first message's system prompt, or the default one.
      if (messages[0].role == "system") {
        absl::StrAppend(&out, "<|im_start|>system\n", messages[0].content, "<|im_end|>\n");
      } else if (!default_system_.empty()) {
        absl::StrAppend(&out, "<|im_start|>system\n", default_system_, "<|im_end|>\n");
      }
      for (size_t i = 0; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        RETURN_IF_ERROR(CheckRole(m, i, {"system", "user", "assistant", "tool"}));
        if (m.role == "system" && i == 0) continue;
        if (m.role == "tool") {  // consecutive tool results share one user turn
          if (i == 0 || messages[i - 1].role != "tool") out += "<|im_start|>user";
          absl::StrAppend(&out, "\n<tool_response>\n", m.content, "\n</tool_response>");
          if (i + 1 == messages.size() || messages[i + 1].role != "tool") out += "<|im_end|>\n";
          continue;
        }
        absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
      }
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    }
    case ChatFormat::kLlama3: {
      // Every turn's content trimmed; BOS text first; the assistant header
      // always closes the prompt (the template has no switch for it).
      for (size_t i = 0; i < messages.size(); ++i) {
        if (messages[i].role.empty())
          return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].role: empty"));
        absl::StrAppend(&out, i == 0 ? bos_ : "", "<|start_header_id|>", messages[i].role,
                        "<|end_header_id|>\n\n", PythonStrip(messages[i].content), "<|eot_id|>");
      }
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    }
    case ChatFormat::kLlama2: {
      size_t first = 0;
      std::string system;
      if (messages[0].role == "system") {
        system = messages[0].content;
        first = 1;
      }
      for (size_t i = first; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        const bool want_user = (i - first) % 2 == 0;
        if (m.role != (want_user ? "user" : "assistant")) {
          return absl::InvalidArgumentError(
              absl::StrCat("messages[", i, "].role: \"", m.role,
                           "\"; this model's turns must alternate user/assistant/user/..."));
        }
        std::string content = m.content;
        if (i == first && first == 1) {
          content = absl::StrCat("<<SYS>>\n", system, "\n<</SYS>>\n\n", m.content);
        }
        if (want_user) {
          absl::StrAppend(&out, bos_, "[INST] ", PythonStrip(content), " [/INST]");
        } else {
          absl::StrAppend(&out, " ", PythonStrip(content), " ", eos_);
        }
      }
      return out;
    }
    case ChatFormat::kHunyuan: {
      out = hunyuan::kBegin;
      size_t first = 0;
      if (messages[0].role == "system") {
        absl::StrAppend(&out, messages[0].content, hunyuan::kSystemEnd);
        first = 1;
      }
      for (size_t i = first; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        RETURN_IF_ERROR(CheckRole(m, i, {"user", "assistant"}));
        if (m.role == "user") {
          absl::StrAppend(&out, hunyuan::kUser, m.content);
        } else {
          absl::StrAppend(&out, hunyuan::kAssistant, m.content, hunyuan::kEnd);
        }
      }
      if (add_generation_prompt) out += hunyuan::kAssistant;
      return out;
    }
  }
  return absl::InternalError("unknown chat format");
}

}  // namespace strata
