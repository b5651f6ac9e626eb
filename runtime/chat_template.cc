#include "runtime/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

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

// A special token as a config writes it: a string or {"content": ...}.
const std::string* TokenText(const Json& v) {
  if (v.is_string()) return &v.string_value();
  if (const Json* c = v.Find("content"); c != nullptr && c->is_string()) return &c->string_value();
  return nullptr;
}

}  // namespace

std::string PythonStrip(const std::string& text) {
  const std::vector<unicode::Char> chars = unicode::Decode(text);
  size_t begin = 0, end = chars.size() - 1;  // the last entry is the sentinel
  while (begin < end && PythonSpace(chars[begin].cp)) ++begin;
  while (end > begin && PythonSpace(chars[end - 1].cp)) --end;
  return text.substr(chars[begin].offset, chars[end].offset - chars[begin].offset);
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromModelDir(const std::string& model_dir) {
  const std::filesystem::path dir(model_dir);
  const std::string config_path = (dir / "tokenizer_config.json").string();
  Json config = Json::Object({});
  if (std::filesystem::exists(config_path)) {
    ASSIGN_OR_RETURN(config, ReadJsonFile(config_path));
  }
  const std::filesystem::path jinja_path = dir / "chat_template.jinja";
  if (std::filesystem::exists(jinja_path)) {
    std::ifstream in(jinja_path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    std::map<std::string, Json> members =
        config.is_object() ? config.object() : std::map<std::string, Json>{};
    members["chat_template"] = Json::String(text.str());
    return FromConfig(Json::Object(std::move(members)), jinja_path.string());
  }
  if (!std::filesystem::exists(config_path)) {
    return absl::NotFoundError(
        absl::StrCat(model_dir, ": no tokenizer_config.json, so no chat template"));
  }
  return FromConfig(config, config_path);
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromConfig(const Json& config,
                                                      const std::string& where) {
  const Json* t = config.Find("chat_template");
  ChatTemplate result;
  result.where_ = where;
  auto add = [&](const std::string& name, const std::string& source) -> absl::Status {
    absl::StatusOr<jinja::Template> parsed = jinja::Template::Parse(source);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": chat_template",
                                                     name == "default" ? "" : " \"" + name + "\"",
                                                     ": ", parsed.status().message()));
    }
    result.templates_.emplace(name, *std::move(parsed));
    result.order_.push_back(name);
    if (result.tool_format_ == ToolCallFormat::kNone) {
      result.tool_format_ = DetectToolCallFormat(source);
    }
    return absl::OkStatus();
  };
  if (t != nullptr && t->is_string() && !t->string_value().empty()) {
    RETURN_IF_ERROR(add("default", t->string_value()));
  } else if (t != nullptr && t->is_array()) {
    for (size_t i = 0; i < t->array().size(); ++i) {
      const Json& named = t->array()[i];
      const Json* name = named.Find("name");
      const Json* source = named.Find("template");
      if (name == nullptr || !name->is_string() || source == nullptr || !source->is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": chat_template[", i, "]: must be {\"name\": str, \"template\": str}"));
      }
      RETURN_IF_ERROR(add(name->string_value(), source->string_value()));
    }
  }
  if (result.templates_.empty()) {
    return absl::NotFoundError(absl::StrCat(where, ": no chat_template; send a prompt instead"));
  }
  // The special tokens, as transformers' special_tokens_map passes them.
  for (const auto& [key, value] : config.object()) {
    if (key.size() < 6 || key.compare(key.size() - 6, 6, "_token") != 0) continue;
    if (const std::string* text = TokenText(value)) result.special_tokens_.Set(key, *text);
  }
  if (const Json* extra = config.Find("additional_special_tokens");
      extra != nullptr && extra->is_array()) {
    jinja::List tokens;
    for (const Json& e : extra->array()) {
      if (const std::string* text = TokenText(e)) tokens.emplace_back(*text);
    }
    result.special_tokens_.Set("additional_special_tokens", jinja::Value::MakeList(tokens));
  }
  return result;
}

std::vector<std::string> ChatTemplate::names() const { return order_; }

absl::StatusOr<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                 const ChatOptions& options) const {
  const bool tools = options.tools.is_array() && !options.tools.empty();
  const char* name = tools && templates_.count("tool_use") ? "tool_use" : "default";
  auto it = templates_.find(name);
  if (it == templates_.end()) {
    if (templates_.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(where_, ": the chat templates have no \"default\" one to use"));
    }
    it = templates_.begin();
  }
  jinja::Dict vars = special_tokens_;
  jinja::List list;
  list.reserve(messages.size());
  for (const ChatMessage& m : messages) {
    jinja::Dict message;
    message.items.reserve(2 + m.extra.size());
    message.items.emplace_back(jinja::Value("role"), jinja::Value(m.role));
    message.items.emplace_back(jinja::Value("content"), jinja::Value(m.content));
    for (auto e = m.extra.begin(); e != m.extra.end(); ++e) {
      message.Set(jinja::Value(e.key()), jinja::Value::FromJson(e.value()));
    }
    list.push_back(jinja::Value::MakeDict(std::move(message)));
  }
  vars.Set("messages", jinja::Value::MakeList(std::move(list)));
  vars.Set("add_generation_prompt", options.add_generation_prompt);
  // As transformers: both always passed, None when absent.
  vars.Set("tools", jinja::Value::FromJson(options.tools));
  vars.Set("documents", jinja::Value::FromJson(options.documents));
  for (auto k = options.kwargs.begin(); k != options.kwargs.end(); ++k) {
    vars.Set(k.key(), jinja::Value::FromJson(k.value()));
  }
  absl::StatusOr<std::string> text = it->second.Render(vars, {}, options.clock);
  if (!text.ok() && !absl::IsFailedPrecondition(text.status())) {
    return absl::Status(text.status().code(),
                        absl::StrCat(where_, ": chat_template: ", text.status().message()));
  }
  return text;
}

}  // namespace strata
