// An OpenAI HTTP body as the gateway parses it (the first byte picks
// completions or chat), then every object it would send back, serialised as
// the server does: a 400 naming a field, or the completion, its chunks and
// usage. Nothing may throw or crash, whatever the bytes.
#include <cstdint>
#include <string>

#include "services/gateway/openai.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  const strata::openai::ModelCard model{"org/model", 256, 1700000000};
  const strata::openai::ParseResult p =
      strata::openai::ParseRequest(body, (data[0] & 1) != 0, model);
  if (!p.ok) {
    (void)strata::openai::Dump(strata::openai::ErrorBody(p.error));
    return 0;
  }
  strata::openai::Completion c;
  c.id = "cmpl-1";
  c.model = model.id;
  c.text = p.request.generate.prompt();  // whatever the client sent, echoed
  c.completion_ids = {1, 2, 3};
  c.finish = strata::v1::FINISH_REASON_STOP_SEQUENCE;
  (void)strata::openai::Dump(strata::openai::CompletionBody(p.request, {c}));
  (void)strata::openai::Dump(
      strata::openai::ChunkBody(p.request, c, c.text, {4}, strata::v1::FINISH_REASON_UNSPECIFIED));
  (void)strata::openai::Dump(strata::openai::UsageChunk(p.request, {c}));
  return 0;
}
