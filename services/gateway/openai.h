// OpenAI's HTTP API as Strata's request, and Strata's responses as OpenAI's
// objects: pure functions over JSON (nlohmann), so the HTTP server only moves
// bytes. Request and response shapes follow the `openai` SDK's types:
// `/v1/completions` (text_completion), `/v1/chat/completions`
// (chat.completion and chat.completion.chunk), `/v1/models`, OpenAI's error
// object. A parameter that would change the output and is not supported yet
// is refused with 400 naming it, never ignored.
#ifndef STRATA_SERVICES_GATEWAY_OPENAI_H_
#define STRATA_SERVICES_GATEWAY_OPENAI_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "strata/v1/generation.pb.h"

namespace strata::openai {

// An HTTP error as OpenAI reports it: {"error": {message, type, param, code}}.
struct Error {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the offending field ("" when none)
  std::string code;   // e.g. "model_not_found" ("" when none)
};
nlohmann::json ErrorBody(const Error& error);
// JSON text whatever its strings hold: bytes that are not UTF-8 (a parse
// error quoting the client's input) become U+FFFD instead of an exception.
std::string Dump(const nlohmann::json& j);
// The HTTP status and OpenAI type for a gRPC/absl status code.
Error ErrorFromStatus(int grpc_code, const std::string& message);

// What the served model is called (GET /v1/models, and the `model` every
// request must name).
struct ModelCard {
  std::string id;
  int64_t context = 0;
  int64_t created = 0;  // unix seconds (the gateway's start)
};
nlohmann::json ModelObject(const ModelCard& card);
nlohmann::json ModelList(const ModelCard& card);
// `--served-model-name` by default: the config's `_name_or_path` when it
// names a repository, "org/name" from a Hugging Face cache path
// (models--org--name/snapshots/<hash>), else the folder's name; never a hash.
std::string DefaultServedName(const std::string& model_dir, const std::string& name_or_path);

// A completions or chat request as Strata's.
struct Request {
  // Every prompt with the request's parameters (chat: one); each gives
  // `n` choices (generate.n(), unset: 1), prompt p's j-th at index p * n + j.
  std::vector<v1::GenerateRequest> prompts;
  v1::GenerateRequest generate;  // prompts[0]
  bool chat = false;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool echo = false;              // completions: the prompt before the completion
  bool return_token_ids = false;  // extension (as vLLM's): token ids in the choices
  bool seed_given = false;        // else the server draws one and returns it
  // -1: no log-probabilities; else each token's and the top N alternatives'
  // (completions: `logprobs: N`; chat: `logprobs: true, top_logprobs: N`).
  int logprobs = -1;
  int n() const { return generate.has_n() ? static_cast<int>(generate.n()) : 1; }
};

// A generated token's log-probability with its text (the token's bytes,
// possibly part of a UTF-8 character) and the most likely alternatives'.
struct LogprobEntry {
  std::string token;  // TokenText(): the text, or "bytes:\\xNN..." when not UTF-8
  size_t size = 0;    // the token's length in bytes (for text_offset)
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;
  bool none = false;  // no log-probability (a prompt's first token): null
};
// A token's bytes as logprobs show them: the text when it is valid UTF-8,
// else "bytes:\xe2\x80" (as OpenAI writes tokens that are part of a
// character), so distinct tokens keep distinct keys.
std::string TokenText(const std::string& bytes);
// Parses a POST body; `Error` names the field. `chat` picks
// /v1/chat/completions' schema. `max_context` caps the default max_tokens.
struct ParseResult {
  bool ok = false;
  Request request;
  Error error;
};
ParseResult ParseRequest(const std::string& body, bool chat, const ModelCard& model);

// Response objects, one Completion per choice. `id` is "cmpl-..." or
// "chatcmpl-..."; `fingerprint` names the build and the layer map's epoch.
struct Completion {
  int index = 0;  // the choice
  std::string id, model, fingerprint;
  uint64_t map_epoch = 0;  // in the fingerprint
  int64_t created = 0;
  std::string text;  // the whole completion (echo included)
  std::vector<int32_t> prompt_ids, completion_ids;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  int prompt_tokens = 0, completion_tokens = 0;
  uint64_t seed = 0;                   // the sampling seed used (reproduces the run)
  std::vector<LogprobEntry> logprobs;  // one per completion token, when asked
  // echo with logprobs: one per prompt token (the first `none`).
  std::vector<LogprobEntry> prompt_logprobs;
  std::vector<v1::ToolCall> tool_calls;  // chat with tools: the calls the model made
};
std::string FinishReason(v1::FinishReason reason);  // "stop" | "length" | "abort"
// Every choice, in index order; usage counts each prompt once.
nlohmann::json CompletionBody(const Request& request, const std::vector<Completion>& choices);
// The system_fingerprint: "strata-VERSION", and "-mapEPOCH" once a layer map
// produced tokens.
std::string Fingerprint(const std::string& version, uint64_t map_epoch);
// One SSE chunk: a delta (`finish` unspecified) or the last one with its
// finish_reason; `role_chunk` is chat's opening {"role": "assistant"}.
nlohmann::json ChunkBody(const Request& request, const Completion& c, const std::string& text,
                         const std::vector<int32_t>& ids, v1::FinishReason finish,
                         bool role_chunk = false,
                         const std::vector<LogprobEntry>* logprobs = nullptr);
// A choice's `logprobs`: the legacy completions shape (tokens,
// token_logprobs, top_logprobs, text_offset from `offset`) or chat's
// (content: [{token, logprob, bytes, top_logprobs}]).
nlohmann::json LogprobsBody(const Request& request, const std::vector<LogprobEntry>& entries,
                            size_t offset);
// The chunk carrying a chat choice's tool calls, before its finish chunk.
nlohmann::json ToolCallsChunk(const Request& request, const Completion& c);
// The usage-only chunk of stream_options.include_usage.
nlohmann::json UsageChunk(const Request& request, const std::vector<Completion>& choices);

}  // namespace strata::openai

#endif  // STRATA_SERVICES_GATEWAY_OPENAI_H_
