// config.json and generation_config.json: every field range-checked,
// whatever the JSON says. The bytes are tried as each file in turn (the
// other one valid).
#include <cstdint>
#include <string>

#include "runtime/config.h"
#include "runtime/json.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

constexpr char kConfig[] = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
  "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 256,
  "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2,
  "torch_dtype": "float32"})";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto json = strata::ParseJson(text, "config.json");
  if (json.ok()) (void)strata::ParseModelConfig(*json, "config.json");
  const std::string& dir = strata::fuzz::ScratchDir();
  strata::fuzz::Clear(dir);
  strata::fuzz::WriteFile(dir, "config.json", kConfig);
  strata::fuzz::WriteFile(dir, "generation_config.json", text);
  (void)strata::LoadModelConfig(dir);
  return 0;
}
