#include "runtime/tool_calls.h"

#include <nlohmann/json.hpp>

namespace strata {
namespace {

using nlohmann::json;

constexpr char kHermesOpen[] = "<tool_call>";
constexpr char kHermesClose[] = "</tool_call>";
constexpr char kPythonTag[] = "<|python_tag|>";
constexpr char kMistralTag[] = "[TOOL_CALLS]";

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

size_t SkipSpace(const std::string& s, size_t at = 0) {
  while (at < s.size() && IsSpace(s[at])) ++at;
  return at;
}

// The longest suffix of `text` that is a proper prefix of `marker`.
size_t PartialMarker(const std::string& text, const std::string& marker) {
  for (size_t n = std::min(text.size(), marker.size() - 1); n > 0; --n) {
    if (text.compare(text.size() - n, n, marker, 0, n) == 0) return n;
  }
  return 0;
}

// {"name": str, <args_key>: object or JSON-object string} as a call.
bool ToCall(const json& j, const char* args_key, const char* alt_key, ParsedToolCall* out) {
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) return false;
  const json* args = nullptr;
  if (j.contains(args_key)) {
    args = &j[args_key];
  } else if (alt_key != nullptr && j.contains(alt_key)) {
    args = &j[alt_key];
  }
  json object = json::object();
  if (args != nullptr) {
    if (args->is_string()) {
      try {
        object = json::parse(args->get<std::string>());
      } catch (const json::exception&) {
        return false;
      }
    } else {
      object = *args;
    }
  }
  if (!object.is_object()) return false;
  out->name = j["name"].get<std::string>();
  out->arguments = object.dump(-1, ' ', false, json::error_handler_t::replace);
  return true;
}

bool ParseJson(const std::string& text, json* out) {
  try {
    *out = json::parse(text);
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

}  // namespace

const char* ToolCallFormatName(ToolCallFormat format) {
  switch (format) {
    case ToolCallFormat::kHermes:
      return "hermes";
    case ToolCallFormat::kLlama3Json:
      return "llama3_json";
    case ToolCallFormat::kMistral:
      return "mistral";
    default:
      return "none";
  }
}

ToolCallFormat DetectToolCallFormat(const std::string& t) {
  if (t.find(kHermesOpen) != std::string::npos) return ToolCallFormat::kHermes;
  if (t.find(kMistralTag) != std::string::npos) return ToolCallFormat::kMistral;
  if (t.find(kPythonTag) != std::string::npos ||
      (t.find("<|start_header_id|>") != std::string::npos &&
       t.find("\"parameters\"") != std::string::npos)) {
    return ToolCallFormat::kLlama3Json;
  }
  return ToolCallFormat::kNone;
}

ToolCallOutput ParseToolCalls(ToolCallFormat format, const std::string& text) {
  ToolCallOutput out;
  out.content = text;
  switch (format) {
    case ToolCallFormat::kHermes: {
      const size_t first = text.find(kHermesOpen);
      if (first == std::string::npos) return out;
      std::vector<ParsedToolCall> calls;
      for (size_t at = first; at != std::string::npos; at = text.find(kHermesOpen, at)) {
        at += sizeof(kHermesOpen) - 1;
        size_t end = text.find(kHermesClose, at);
        const std::string body =
            text.substr(at, end == std::string::npos ? std::string::npos : end - at);
        json j;
        ParsedToolCall call;
        if (!ParseJson(body, &j) || !ToCall(j, "arguments", "parameters", &call)) return out;
        calls.push_back(std::move(call));
        if (end == std::string::npos) break;
        at = end + sizeof(kHermesClose) - 1;
      }
      out.content = text.substr(0, first);
      out.calls = std::move(calls);
      return out;
    }
    case ToolCallFormat::kLlama3Json: {
      size_t at = SkipSpace(text);
      if (text.compare(at, sizeof(kPythonTag) - 1, kPythonTag) == 0) at += sizeof(kPythonTag) - 1;
      at = SkipSpace(text, at);
      if (at >= text.size() || text[at] != '{') return out;
      // One object, or several joined by ';'.
      std::vector<ParsedToolCall> calls;
      json j;
      if (ParseJson(text.substr(at), &j)) {
        ParsedToolCall call;
        if (!ToCall(j, "parameters", "arguments", &call)) return out;
        calls.push_back(std::move(call));
      } else {
        size_t from = at;
        while (from < text.size()) {
          size_t semi = text.find(';', from);
          // A ';' inside a string would split wrongly: then the parts fail to parse.
          const std::string part =
              text.substr(from, semi == std::string::npos ? std::string::npos : semi - from);
          ParsedToolCall call;
          if (!ParseJson(part, &j) || !ToCall(j, "parameters", "arguments", &call)) return out;
          calls.push_back(std::move(call));
          if (semi == std::string::npos) break;
          from = SkipSpace(text, semi + 1);
        }
      }
      out.content.clear();
      out.calls = std::move(calls);
      return out;
    }
    case ToolCallFormat::kMistral: {
      size_t tag = text.find(kMistralTag);
      size_t at = 0;
      std::string content;
      if (tag != std::string::npos) {
        content = text.substr(0, tag);
        at = tag + sizeof(kMistralTag) - 1;
      } else {
        // The tag is a special token a detokenizer may drop: a reply that is
        // a JSON array of calls is one too.
        at = SkipSpace(text);
        if (at >= text.size() || text[at] != '[') return out;
      }
      json j;
      if (!ParseJson(text.substr(at), &j) || !j.is_array() || j.empty()) return out;
      std::vector<ParsedToolCall> calls;
      for (const json& c : j) {
        ParsedToolCall call;
        if (!ToCall(c, "arguments", "parameters", &call)) return out;
        calls.push_back(std::move(call));
      }
      out.content = content;
      out.calls = std::move(calls);
      return out;
    }
    case ToolCallFormat::kNone:
      return out;
  }
  return out;
}

size_t ShowableToolText(ToolCallFormat format, const std::string& text) {
  switch (format) {
    case ToolCallFormat::kHermes: {
      const size_t at = text.find(kHermesOpen);
      if (at != std::string::npos) return at;
      return text.size() - PartialMarker(text, kHermesOpen);
    }
    case ToolCallFormat::kMistral: {
      const size_t tag = text.find(kMistralTag);
      if (tag != std::string::npos) return tag;
      const size_t first = SkipSpace(text);
      if (first == text.size() || text[first] == '[') return 0;
      return text.size() - PartialMarker(text, kMistralTag);
    }
    case ToolCallFormat::kLlama3Json: {
      const size_t first = SkipSpace(text);
      if (first == text.size()) return 0;
      const std::string rest = text.substr(first);
      if (rest[0] == '{' ||
          rest.compare(0, std::min(rest.size(), sizeof(kPythonTag) - 1), kPythonTag, 0,
                       std::min(rest.size(), sizeof(kPythonTag) - 1)) == 0) {
        return 0;
      }
      return text.size();
    }
    case ToolCallFormat::kNone:
      return text.size();
  }
  return text.size();
}

}  // namespace strata
