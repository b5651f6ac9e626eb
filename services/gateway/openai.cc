#include "services/gateway/openai.h"

#include <cmath>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/tokenizer/unicode.h"
#include "services/common/metrics.h"
#include "services/gateway/request_group.h"

namespace strata::openai {
namespace {

using nlohmann::json;

// Parameters OpenAI defines that change the output and that Strata does not
// implement yet: refused by name rather than ignored. Each is allowed at its
// neutral value (null, or the value given here).
constexpr int kMaxChoices = RequestGroup::kMaxChoices;

struct Unsupported {
  const char* name;
  json neutral;
};

Error Bad(const std::string& param, const std::string& message) {
  return {400, param + ": " + message, "invalid_request_error", param, ""};
}

bool IsNeutral(const json& v, const json& neutral) {
  if (v.is_null()) return true;
  if (neutral.is_null()) return false;
  if (v.is_number() && neutral.is_number()) return v.get<double>() == neutral.get<double>();
  return v == neutral;
}

// Typed readers: absent or null leaves `*out`; a wrong type is an Error.
bool ReadNumber(const json& o, const char* key, double lo, double hi, double* out, Error* err) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return true;
  if (!it->is_number()) return *err = Bad(key, "must be a number"), false;
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi) {
    return *err = Bad(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v)), false;
  }
  *out = v;
  return true;
}

bool ReadInt(const json& o, const char* key, int64_t lo, int64_t hi, int64_t* out, Error* err) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return true;
  if (!it->is_number_integer()) return *err = Bad(key, "must be an integer"), false;
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    return *err = Bad(key, absl::StrCat("must be in [", lo, ", ", hi, "]")), false;
  }
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi) {
    return *err = Bad(key, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v)), false;
  }
  *out = v;
  return true;
}

bool ReadBool(const json& o, const char* key, bool* out, Error* err) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return true;
  if (!it->is_boolean()) return *err = Bad(key, "must be true or false"), false;
  *out = it->get<bool>();
  return true;
}

bool ReadTokenIds(const json& v, const std::string& name, v1::TokenIds* out, Error* err) {
  for (size_t i = 0; i < v.size(); ++i) {
    const json& t = v[i];
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX) {
      return *err = Bad(absl::StrCat(name, "[", i, "]"), "must be a token id (an integer >= 0)"),
             false;
    }
    out->add_ids(static_cast<int32_t>(t.get<int64_t>()));
  }
  return true;
}

// The completion prompts: a string, [ids], [string, ...] or [[ids], ...];
// each as a request holding only its input.
bool ReadPrompts(const json& o, std::vector<v1::GenerateRequest>* out, Error* err) {
  auto it = o.find("prompt");
  if (it == o.end() || it->is_null()) return *err = Bad("prompt", "required"), false;
  const json& p = *it;
  if (p.is_string()) {
    out->emplace_back().set_prompt(p.get<std::string>());
    return true;
  }
  if (!p.is_array() || p.empty()) {
    return *err = Bad("prompt", "must be a string, an array of strings or of token ids"), false;
  }
  if (p[0].is_number()) {
    return ReadTokenIds(p, "prompt", out->emplace_back().mutable_prompt_tokens(), err);
  }
  if (p.size() > static_cast<size_t>(kMaxChoices)) {
    return *err = Bad("prompt", absl::StrCat("at most ", kMaxChoices, " prompts per request, got ",
                                             p.size())),
           false;
  }
  for (size_t i = 0; i < p.size(); ++i) {
    const std::string at = absl::StrCat("prompt[", i, "]");
    if (p[i].is_string()) {
      out->emplace_back().set_prompt(p[i].get<std::string>());
    } else if (p[i].is_array() && !p[i].empty()) {
      if (!ReadTokenIds(p[i], at, out->emplace_back().mutable_prompt_tokens(), err)) return false;
    } else {
      return *err = Bad(at, "must be a string or a non-empty array of token ids"), false;
    }
  }
  return true;
}

// Chat messages: role and content (a string or text parts).
bool ReadMessages(const json& o, v1::GenerateRequest* r, Error* err) {
  auto it = o.find("messages");
  if (it == o.end() || !it->is_array() || it->empty()) {
    return *err = Bad("messages", "required: a non-empty array of messages"), false;
  }
  v1::Conversation* conv = r->mutable_messages();
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string at = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return *err = Bad(at, "must be an object"), false;
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return *err = Bad(at + ".role", "required: a string"), false;
    }
    std::string name = role->get<std::string>();
    static const std::set<std::string> kRoles = {"system", "developer", "user", "assistant",
                                                 "tool"};
    if (kRoles.count(name) == 0) {
      return *err = Bad(at + ".role",
                        "must be system, developer, user, assistant or tool, got \"" + name + "\""),
             false;
    }
    if (name == "developer") name = "system";  // OpenAI's newer name for it
    v1::ChatMessage* out = conv->add_messages();
    // An assistant's tool calls: [{id, type: function, function: {name, arguments}}].
    const bool calls = m.contains("tool_calls") && !m["tool_calls"].is_null();
    if (calls) {
      const json& tc = m["tool_calls"];
      if (name != "assistant")
        return *err = Bad(at + ".tool_calls", "only assistants make tool calls"), false;
      if (!tc.is_array()) return *err = Bad(at + ".tool_calls", "must be an array"), false;
      for (size_t k = 0; k < tc.size(); ++k) {
        const std::string ck = absl::StrCat(at, ".tool_calls[", k, "]");
        const json& c = tc[k];
        if (!c.is_object() || !c.contains("function") || !c["function"].is_object()) {
          return *err = Bad(ck + ".function", "required: an object"), false;
        }
        const json& f = c["function"];
        if (!f.contains("name") || !f["name"].is_string()) {
          return *err = Bad(ck + ".function.name", "required: a string"), false;
        }
        if (f.contains("arguments") && !f["arguments"].is_string() && !f["arguments"].is_object()) {
          return *err = Bad(ck + ".function.arguments", "must be a JSON string or an object"),
                 false;
        }
      }
      out->set_tool_calls_json(Dump(tc));
    }
    for (const char* key : {"tool_call_id", "name"}) {
      auto v = m.find(key);
      if (v == m.end() || v->is_null()) continue;
      if (!v->is_string()) return *err = Bad(at + "." + key, "must be a string"), false;
      (std::string(key) == "name" ? *out->mutable_name() : *out->mutable_tool_call_id()) =
          v->get<std::string>();
    }
    std::string text;
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      if (!calls) return *err = Bad(at + ".content", "required"), false;
    } else if (content->is_string()) {
      text = content->get<std::string>();
    } else if (content->is_array()) {
      for (size_t k = 0; k < content->size(); ++k) {
        const json& part = (*content)[k];
        const std::string pat = absl::StrCat(at, ".content[", k, "]");
        if (!part.is_object() || !part.contains("type") || part["type"] != "text") {
          return *err = Bad(pat, "only {\"type\": \"text\", \"text\": ...} parts are supported"),
                 false;
        }
        if (!part.contains("text") || !part["text"].is_string()) {
          return *err = Bad(pat + ".text", "required: a string"), false;
        }
        text += part["text"].get<std::string>();
      }
    } else {
      return *err = Bad(at + ".content", "must be a string or an array of text parts"), false;
    }
    out->set_role(name);
    out->set_content(text);
  }
  return true;
}

// Chat's tools and tool_choice: OpenAI's function definitions, rendered by
// the template; tool_choice "none" leaves them out.
bool ReadTools(const json& o, v1::Conversation* conv, Error* err) {
  std::string choice = "auto";
  if (auto c = o.find("tool_choice"); c != o.end() && !c->is_null()) {
    if (!c->is_string() || (*c != "auto" && *c != "none")) {
      *err = {400, "tool_choice: only \"auto\" and \"none\" are supported", "invalid_request_error",
              "tool_choice", "unsupported_value"};
      return false;
    }
    choice = c->get<std::string>();
  }
  auto t = o.find("tools");
  if (t == o.end() || t->is_null()) return true;
  if (!t->is_array()) return *err = Bad("tools", "must be an array of tool definitions"), false;
  for (size_t i = 0; i < t->size(); ++i) {
    const json& tool = (*t)[i];
    const std::string at = absl::StrCat("tools[", i, "]");
    if (!tool.is_object() || tool.value("type", "") != "function") {
      return *err = Bad(at + ".type", "must be \"function\""), false;
    }
    if (!tool.contains("function") || !tool["function"].is_object()) {
      return *err = Bad(at + ".function", "required: an object"), false;
    }
    const json& f = tool["function"];
    if (!f.contains("name") || !f["name"].is_string() || f["name"].get<std::string>().empty()) {
      return *err = Bad(at + ".function.name", "required: a non-empty string"), false;
    }
    if (f.contains("parameters") && !f["parameters"].is_object() && !f["parameters"].is_null()) {
      return *err = Bad(at + ".function.parameters", "must be a JSON schema object"), false;
    }
  }
  if (choice != "none" && !t->empty()) conv->set_tools_json(Dump(*t));
  return true;
}

bool ReadStop(const json& o, v1::GenerateRequest* r, Error* err) {
  auto it = o.find("stop");
  if (it == o.end() || it->is_null()) return true;
  if (it->is_string()) {
    r->add_stop(it->get<std::string>());
    return true;
  }
  if (!it->is_array()) return *err = Bad("stop", "must be a string or an array of strings"), false;
  for (size_t i = 0; i < it->size(); ++i) {
    if (!(*it)[i].is_string()) {
      return *err = Bad(absl::StrCat("stop[", i, "]"), "must be a string"), false;
    }
    r->add_stop((*it)[i].get<std::string>());
  }
  return true;
}

}  // namespace

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json ErrorBody(const Error& e) {
  return {{"error",
           {{"message", e.message},
            {"type", e.type},
            {"param", e.param.empty() ? json(nullptr) : json(e.param)},
            {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
}

Error ErrorFromStatus(int code, const std::string& message) {
  // Field-naming messages start with the field: "prompt: ...".
  const size_t colon = message.find(": ");
  const std::string param = colon == std::string::npos || message.find(' ') < colon
                                ? std::string()
                                : message.substr(0, colon);
  switch (code) {
    case 3:   // INVALID_ARGUMENT
    case 11:  // OUT_OF_RANGE
    case 9:   // FAILED_PRECONDITION
      return {400, message, "invalid_request_error", param, ""};
    case 16:  // UNAUTHENTICATED
      return {401, message, "authentication_error", "", "invalid_api_key"};
    case 7:  // PERMISSION_DENIED
      return {403, message, "permission_error", "", ""};
    case 5:  // NOT_FOUND
      return {404, message, "invalid_request_error", "", "not_found"};
    case 8:  // RESOURCE_EXHAUSTED
      return {429, message, "rate_limit_error", "", "queue_full"};
    case 14:  // UNAVAILABLE
    case 1:   // CANCELLED (the server drained)
      return {503, message, "server_error", "", "unavailable"};
    default:
      return {500, message, "server_error", "", ""};
  }
}

json ModelObject(const ModelCard& card) {
  return {{"id", card.id},
          {"object", "model"},
          {"created", card.created},
          {"owned_by", "strata"},
          {"max_model_len", card.context}};
}

json ModelList(const ModelCard& card) {
  return {{"object", "list"}, {"data", json::array({ModelObject(card)})}};
}

std::string DefaultServedName(const std::string& model_dir, const std::string& name_or_path) {
  // A repository id ("org/name" or "name"), not a local path.
  if (!name_or_path.empty() && name_or_path[0] != '/' && name_or_path[0] != '.' &&
      std::count(name_or_path.begin(), name_or_path.end(), '/') <= 1) {
    return name_or_path;
  }
  std::string dir = model_dir;
  while (!dir.empty() && dir.back() == '/') dir.pop_back();
  const size_t cache = dir.rfind("/models--");
  const size_t snapshots = dir.find("/snapshots/", cache == std::string::npos ? 0 : cache);
  if (cache != std::string::npos && snapshots != std::string::npos) {
    std::string repo = dir.substr(cache + 9, snapshots - cache - 9);  // "org--name"
    const size_t sep = repo.find("--");
    if (sep != std::string::npos) repo.replace(sep, 2, "/");
    return repo;
  }
  return ModelLabel(dir);  // the folder's name, as the metrics label it
}

ParseResult ParseRequest(const std::string& body, bool chat, const ModelCard& model) {
  ParseResult out;
  Error& err = out.error;
  json o;
  try {
    o = json::parse(body);
  } catch (const json::exception& e) {
    // nlohmann names the byte: "parse error at line 1, column 9: ...".
    out.error = {400, std::string("body: not valid JSON: ") + e.what(), "invalid_request_error",
                 "body", ""};
    return out;
  }
  if (!o.is_object()) {
    out.error = {400, "body: must be a JSON object", "invalid_request_error", "body", ""};
    return out;
  }
  Request& req = out.request;
  req.chat = chat;
  v1::GenerateRequest& r = req.generate;

  auto m = o.find("model");
  if (m == o.end() || !m->is_string()) {
    err = Bad("model", "required: a string");
    return out;
  }
  if (m->get<std::string>() != model.id) {
    err = {404,
           "model: \"" + m->get<std::string>() + "\" is not served here; this server serves \"" +
               model.id + "\"",
           "invalid_request_error", "model", "model_not_found"};
    return out;
  }
  static const Unsupported kUnsupported[] = {
      {"logit_bias", nullptr},    {"suffix", nullptr},          {"functions", nullptr},
      {"function_call", nullptr}, {"response_format", nullptr}, {"audio", nullptr},
      {"modalities", nullptr},    {"prediction", nullptr}};
  for (const Unsupported& u : kUnsupported) {
    auto it = o.find(u.name);
    if (it == o.end()) continue;
    const bool neutral = IsNeutral(*it, u.neutral) ||
                         (std::string(u.name) == "response_format" && it->is_object() &&
                          it->value("type", "") == "text") ||
                         (std::string(u.name) == "logit_bias" && it->is_object() && it->empty());
    if (!neutral) {
      err = {400, std::string(u.name) + ": not supported yet by this server",
             "invalid_request_error", u.name, "unsupported_parameter"};
      return out;
    }
  }
  // Everything else a client may send, whether Strata reads it or not.
  static const std::set<std::string> kKnown = {"model",
                                               "prompt",
                                               "messages",
                                               "max_tokens",
                                               "max_completion_tokens",
                                               "temperature",
                                               "top_p",
                                               "top_k",
                                               "min_p",
                                               "repetition_penalty",
                                               "seed",
                                               "stop",
                                               "stream",
                                               "stream_options",
                                               "echo",
                                               "ignore_eos",
                                               "user",
                                               "metadata",
                                               "store",
                                               "service_tier",
                                               "parallel_tool_calls",
                                               "return_token_ids",
                                               "add_generation_prompt",
                                               "n",
                                               "best_of",
                                               "logprobs",
                                               "top_logprobs",
                                               "logit_bias",
                                               "presence_penalty",
                                               "frequency_penalty",
                                               "suffix",
                                               "tools",
                                               "tool_choice",
                                               "functions",
                                               "function_call",
                                               "stop_token_ids",
                                               "min_tokens",
                                               "response_format",
                                               "audio",
                                               "modalities",
                                               "prediction",
                                               "reasoning_effort",
                                               "chat_template_kwargs"};
  for (auto it = o.begin(); it != o.end(); ++it) {
    if (kKnown.count(it.key()) == 0) {
      err = {400, it.key() + ": unknown parameter", "invalid_request_error", it.key(),
             "unknown_parameter"};
      return out;
    }
  }
  if (o.contains("reasoning_effort") && !o["reasoning_effort"].is_null()) {
    err = {400, "reasoning_effort: not supported by this model", "invalid_request_error",
           "reasoning_effort", "unsupported_parameter"};
    return out;
  }

  if (chat) {
    if (o.contains("prompt")) {
      err = Bad("prompt", "chat completions take `messages`, not `prompt`");
      return out;
    }
    if (!ReadMessages(o, &r, &err)) return out;
    if (!ReadTools(o, r.mutable_messages(), &err)) return out;
    if (auto k = o.find("chat_template_kwargs"); k != o.end() && !k->is_null()) {
      if (!k->is_object()) {
        err = Bad("chat_template_kwargs", "must be an object");
        return out;
      }
      r.mutable_messages()->set_template_kwargs_json(Dump(*k));
    }
    bool echo = false;
    if (!ReadBool(o, "echo", &echo, &err)) return out;
    if (echo) {
      err = {400, "echo: only completions echo their prompt", "invalid_request_error", "echo",
             "unsupported_parameter"};
      return out;
    }
    bool open = true;
    if (!ReadBool(o, "add_generation_prompt", &open, &err)) return out;
    r.mutable_messages()->set_add_generation_prompt(open);
  } else {
    if (o.contains("messages")) {
      err = Bad("messages", "completions take `prompt`; use /v1/chat/completions for messages");
      return out;
    }
    for (const char* chat_only : {"tools", "tool_choice", "chat_template_kwargs"}) {
      if (o.contains(chat_only) && !o[chat_only].is_null()) {
        err = Bad(chat_only, "is for /v1/chat/completions");
        return out;
      }
    }
    if (!ReadPrompts(o, &req.prompts, &err)) return out;
    if (!ReadBool(o, "echo", &req.echo, &err)) return out;
  }
  // n samples of each prompt; best_of only as n (every sample is returned).
  int64_t n = 1;
  if (!ReadInt(o, "n", 1, kMaxChoices, &n, &err)) return out;
  const int64_t prompts = chat ? 1 : static_cast<int64_t>(req.prompts.size());
  if (n * prompts > kMaxChoices) {
    err = Bad("n", absl::StrCat(prompts, " prompts x n = ", n * prompts, " choices; at most ",
                                kMaxChoices, " per request"));
    return out;
  }
  if (auto b = o.find("best_of"); b != o.end() && !b->is_null()) {
    if (!b->is_number_integer() || b->get<int64_t>() != n) {
      err = {400,
             absl::StrCat("best_of: only best_of = n (", n,
                          ") is supported: every sample is returned, none is ranked away"),
             "invalid_request_error", "best_of", "unsupported_value"};
      return out;
    }
  }
  if (n > 1) r.set_n(static_cast<uint32_t>(n));

  // Completions default to 16 tokens (as OpenAI's); chat to the context.
  int64_t max_tokens = chat ? model.context : 16;
  const int64_t cap = std::max<int64_t>(1, model.context);
  if (!ReadInt(o, "max_tokens", 1, cap, &max_tokens, &err)) return out;
  if (!ReadInt(o, "max_completion_tokens", 1, cap, &max_tokens, &err)) return out;
  r.set_max_tokens(static_cast<uint32_t>(max_tokens));

  double temperature = 1.0, top_p = 1.0, min_p = 0.0, repetition = 1.0;
  int64_t top_k = 0;
  if (!ReadNumber(o, "temperature", 0, 2, &temperature, &err)) return out;
  if (!ReadNumber(o, "top_p", 0, 1, &top_p, &err)) return out;
  if (o.contains("top_p") && o["top_p"].is_number() && top_p <= 0) {
    err = Bad("top_p", "must be in (0, 1]");
    return out;
  }
  if (!ReadNumber(o, "min_p", 0, 1, &min_p, &err)) return out;
  if (!ReadNumber(o, "repetition_penalty", 1e-3, 100, &repetition, &err)) return out;
  double presence = 0, frequency = 0;
  if (!ReadNumber(o, "presence_penalty", -2, 2, &presence, &err)) return out;
  if (!ReadNumber(o, "frequency_penalty", -2, 2, &frequency, &err)) return out;
  if (!ReadInt(o, "top_k", -1, INT32_MAX, &top_k, &err)) return out;
  // Any 64-bit integer (negative ones as their two's complement), since the
  // seeds this server draws are unsigned.
  uint64_t useed = 0;
  if (auto it = o.find("seed"); it != o.end() && !it->is_null()) {
    if (!it->is_number_integer()) {
      err = Bad("seed", "must be an integer");
      return out;
    }
    useed =
        it->is_number_unsigned() ? it->get<uint64_t>() : static_cast<uint64_t>(it->get<int64_t>());
    req.seed_given = true;
  }
  v1::SamplingParameters* s = r.mutable_sampling();
  s->set_temperature(static_cast<float>(temperature));
  s->set_top_p(static_cast<float>(top_p));
  s->set_min_p(static_cast<float>(min_p));
  s->set_repetition_penalty(static_cast<float>(repetition));
  s->set_presence_penalty(static_cast<float>(presence));
  s->set_frequency_penalty(static_cast<float>(frequency));
  s->set_top_k(static_cast<int32_t>(top_k < 0 ? 0 : top_k));
  if (req.seed_given) s->set_seed(useed);
  if (!ReadStop(o, &r, &err)) return out;
  bool ignore_eos = false;
  if (!ReadBool(o, "ignore_eos", &ignore_eos, &err)) return out;
  if (auto it = o.find("stop_token_ids"); it != o.end() && !it->is_null()) {
    if (!it->is_array()) {
      err = Bad("stop_token_ids", "must be an array of token ids");
      return out;
    }
    v1::TokenIds ids;
    if (!ReadTokenIds(*it, "stop_token_ids", &ids, &err)) return out;
    r.mutable_stop_token_ids()->CopyFrom(ids.ids());
  }
  int64_t min_tokens = 0;
  if (!ReadInt(o, "min_tokens", 0, cap, &min_tokens, &err)) return out;
  r.set_min_tokens(static_cast<uint32_t>(min_tokens));
  r.set_ignore_eos(ignore_eos);
  if (!ReadBool(o, "stream", &req.stream, &err)) return out;
  if (!ReadBool(o, "return_token_ids", &req.return_token_ids, &err)) return out;
  if (auto so = o.find("stream_options"); so != o.end() && !so->is_null()) {
    if (!so->is_object()) {
      err = Bad("stream_options", "must be an object");
      return out;
    }
    if (!req.stream) {
      err = Bad("stream_options", "only allowed with \"stream\": true");
      return out;
    }
    if (!ReadBool(*so, "include_usage", &req.include_usage, &err)) {
      err.param = "stream_options.include_usage";
      err.message = "stream_options." + err.message;
      return out;
    }
  }
  // Log-probabilities: completions take `logprobs: N`, chat `logprobs: true`
  // with `top_logprobs: N`.
  if (chat) {
    bool want = false;
    if (!ReadBool(o, "logprobs", &want, &err)) return out;
    int64_t top = 0;
    if (!ReadInt(o, "top_logprobs", 0, 20, &top, &err)) return out;
    if (!want && o.contains("top_logprobs") && !o["top_logprobs"].is_null()) {
      err = Bad("top_logprobs", "needs \"logprobs\": true");
      return out;
    }
    if (want) req.logprobs = static_cast<int>(top);
  } else {
    if (o.contains("top_logprobs") && !o["top_logprobs"].is_null()) {
      err = Bad("top_logprobs", "is for chat; completions take `logprobs: N`");
      return out;
    }
    int64_t n = -1;
    if (!ReadInt(o, "logprobs", 0, 20, &n, &err)) return out;
    if (n >= 0) req.logprobs = static_cast<int>(n);
  }
  if (req.logprobs >= 0) {
    r.set_logprobs(req.logprobs);
    // echo: the prompt's tokens get theirs too (OpenAI's legacy shape).
    if (req.echo) r.set_prompt_logprobs(req.logprobs);
  }
  if (auto u = o.find("user"); u != o.end() && !u->is_null() && !u->is_string()) {
    err = Bad("user", "must be a string");
    return out;
  }
  // Every prompt with the request's parameters; `generate` is the first.
  if (chat) {
    req.prompts.push_back(r);
  } else {
    for (v1::GenerateRequest& p : req.prompts) {
      v1::GenerateRequest full = r;
      if (p.has_prompt_tokens()) {
        *full.mutable_prompt_tokens() = std::move(*p.mutable_prompt_tokens());
      } else {
        full.set_prompt(std::move(*p.mutable_prompt()));
      }
      p = std::move(full);
    }
    r = req.prompts[0];
  }
  out.ok = true;
  return out;
}

std::string FinishReason(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_EOS:
    case v1::FINISH_REASON_STOP_SEQUENCE:
      return "stop";
    case v1::FINISH_REASON_TOOL_CALLS:
      return "tool_calls";
    default:
      return "abort";  // ended by the server (a drain)
  }
}

namespace {

json Usage(const Request& r, const std::vector<Completion>& choices) {
  int64_t prompt = 0, completion = 0;
  for (const Completion& c : choices) {
    if (c.index % r.n() == 0) prompt += c.prompt_tokens;  // each prompt once
    completion += c.completion_tokens;
  }
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

// OpenAI's tool_calls: [{id, type, function: {name, arguments}}] (streamed: with index).
json ToolCallsJson(const Completion& c, bool indexed) {
  json calls = json::array();
  for (size_t i = 0; i < c.tool_calls.size(); ++i) {
    const v1::ToolCall& t = c.tool_calls[i];
    json call = {{"id", t.id()},
                 {"type", "function"},
                 {"function", {{"name", t.name()}, {"arguments", t.arguments()}}}};
    if (indexed) call["index"] = i;
    calls.push_back(std::move(call));
  }
  return calls;
}

json Head(const Completion& c, const char* object) {
  return {{"id", c.id},
          {"object", object},
          {"created", c.created},
          {"model", c.model},
          {"system_fingerprint", c.fingerprint}};
}

}  // namespace

std::string TokenText(const std::string& bytes) {
  if (unicode::IsValidUtf8(bytes)) return bytes;
  std::string out = "bytes:";
  for (unsigned char c : bytes) absl::StrAppendFormat(&out, "\\x%02x", c);
  return out;
}

json LogprobsBody(const Request& r, const std::vector<LogprobEntry>& entries, size_t offset) {
  if (r.chat) {
    // The token's bytes, from its text (or its "bytes:\xNN" form).
    auto bytes = [](const std::string& t) {
      std::vector<int> b;
      if (t.rfind("bytes:", 0) == 0) {
        for (size_t i = 6; i + 3 < t.size() + 1; i += 4) {
          b.push_back(std::stoi(t.substr(i + 2, 2), nullptr, 16));
        }
        return b;
      }
      for (unsigned char ch : t) b.push_back(ch);
      return b;
    };
    json content = json::array();
    for (const LogprobEntry& e : entries) {
      json top = json::array();
      for (const auto& [t, lp] : e.top) {
        top.push_back({{"token", t}, {"logprob", lp}, {"bytes", bytes(t)}});
      }
      content.push_back({{"token", e.token},
                         {"logprob", e.logprob},
                         {"bytes", bytes(e.token)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}, {"refusal", nullptr}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  for (const LogprobEntry& e : entries) {
    tokens.push_back(e.token);
    if (e.none) {  // the prompt's first token: nothing predicts it
      token_logprobs.push_back(nullptr);
      top.push_back(nullptr);
      offsets.push_back(offset);
      offset += e.size;
      continue;
    }
    token_logprobs.push_back(e.logprob);
    json alternatives = json::object();
    for (const auto& [t, lp] : e.top) {
      if (!alternatives.contains(t)) alternatives[t] = lp;
    }
    top.push_back(alternatives);
    offsets.push_back(offset);
    offset += e.size;
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

std::string Fingerprint(const std::string& version, uint64_t map_epoch) {
  std::string f = "strata-" + version;
  if (map_epoch != 0) absl::StrAppend(&f, "-map", map_epoch);
  return f;
}

json CompletionBody(const Request& r, const std::vector<Completion>& choices) {
  json list = json::array();
  for (const Completion& c : choices) {
    json choice = {{"index", c.index},
                   {"logprobs", r.logprobs >= 0 ? LogprobsBody(r, c.logprobs, 0) : json(nullptr)},
                   {"finish_reason", FinishReason(c.finish)}};
    if (r.chat) {
      choice["message"] = {
          {"role", "assistant"},
          {"content", c.text.empty() && !c.tool_calls.empty() ? json(nullptr) : json(c.text)}};
      if (!c.tool_calls.empty()) choice["message"]["tool_calls"] = ToolCallsJson(c, false);
    } else {
      choice["text"] = c.text;
    }
    if (r.return_token_ids) {
      choice["token_ids"] = c.completion_ids;
      choice["prompt_token_ids"] = c.prompt_ids;
    }
    list.push_back(std::move(choice));
  }
  // The latest map's fingerprint: the one that finished the response.
  const Completion* latest = &choices.front();
  for (const Completion& c : choices) {
    if (c.map_epoch > latest->map_epoch) latest = &c;
  }
  const Completion& head = choices.front();
  json body = Head(*latest, r.chat ? "chat.completion" : "text_completion");
  body["choices"] = std::move(list);
  body["usage"] = Usage(r, choices);
  body["seed"] = head.seed;
  return body;
}

json ChunkBody(const Request& r, const Completion& c, const std::string& text,
               const std::vector<int32_t>& ids, v1::FinishReason finish, bool role_chunk,
               const std::vector<LogprobEntry>* logprobs) {
  // A chunk's text offsets count from where its text starts in the whole.
  const size_t offset = c.text.size() >= text.size() ? c.text.size() - text.size() : 0;
  json choice = {
      {"index", c.index},
      {"logprobs",
       r.logprobs >= 0 && logprobs != nullptr ? LogprobsBody(r, *logprobs, offset) : json(nullptr)},
      {"finish_reason",
       finish == v1::FINISH_REASON_UNSPECIFIED ? json(nullptr) : json(FinishReason(finish))}};
  if (r.chat) {
    json delta = json::object();
    if (role_chunk) delta["role"] = "assistant";
    if (role_chunk || !text.empty()) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  if (r.return_token_ids) choice["token_ids"] = ids;
  json body = Head(c, r.chat ? "chat.completion.chunk" : "text_completion");
  body["choices"] = json::array({choice});
  if (r.include_usage) body["usage"] = nullptr;
  if (finish != v1::FINISH_REASON_UNSPECIFIED) body["seed"] = c.seed;
  return body;
}

json ToolCallsChunk(const Request& r, const Completion& c) {
  json body = Head(c, "chat.completion.chunk");
  body["choices"] = json::array({{{"index", c.index},
                                  {"delta", {{"tool_calls", ToolCallsJson(c, true)}}},
                                  {"logprobs", nullptr},
                                  {"finish_reason", nullptr}}});
  if (r.include_usage) body["usage"] = nullptr;
  return body;
}

json UsageChunk(const Request& r, const std::vector<Completion>& choices) {
  json body = Head(choices.front(), r.chat ? "chat.completion.chunk" : "text_completion");
  body["choices"] = json::array();
  body["usage"] = Usage(r, choices);
  return body;
}

}  // namespace strata::openai
