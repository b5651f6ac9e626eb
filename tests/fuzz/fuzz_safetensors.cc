// A safetensors shard from the network or a disk: its 8-byte header length,
// the JSON header and the data. Opening it and reading every tensor must give
// a status, never a crash, whatever the bytes.
#include <cstdint>

#include "runtime/checkpoint.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = strata::fuzz::ScratchDir();
  strata::fuzz::WriteFile(dir, "model.safetensors", data, size);
  auto checkpoint = strata::Checkpoint::Open(dir);
  if (!checkpoint.ok()) return 0;
  for (const char* name : {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
                           "model.layers.0.self_attn.q_proj.weight"}) {
    if ((*checkpoint)->Has(name)) (void)(*checkpoint)->Get(name, {});
  }
  return 0;
}
