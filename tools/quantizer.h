// Writes quantized checkpoints in the published formats (runtime/quant.h
// reads them): a float checkpoint's linear layers quantized round-to-nearest,
// everything else (embeddings, norms, biases, the LM head) copied as it is,
// and config.json given the format's quantization_config. `strata quantize`
// and `strata make-model --quant` use it.
#ifndef STRATA_TOOLS_QUANTIZER_H_
#define STRATA_TOOLS_QUANTIZER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace strata {

struct QuantizeSpec {
  // gptq-int4 | gptq-int8 | awq-int4 | fp8 (quant_method fp8, 128x128 block
  // scales) | fp8-tensor | fp8-channel (compressed-tensors, one scale per
  // tensor / per output row).
  std::string method;
  // Input columns per scale (GPTQ, AWQ); -1 for GPTQ's per channel.
  int64_t group_size = 128;
  bool desc_act = false;  // GPTQ act order: groups over columns by falling norm
  bool sym = true;        // GPTQ
};

std::vector<std::string> QuantizeMethods();

// Whether `method` is one of QuantizeMethods(); an error naming the flag if not.
absl::Status CheckQuantizeSpec(const QuantizeSpec& spec);

// Reads the float checkpoint in `in_dir`, writes the quantized one (one
// model.safetensors, config.json, and every other file of `in_dir` copied)
// into `out_dir`.
absl::Status QuantizeCheckpoint(const std::string& in_dir, const std::string& out_dir,
                                const QuantizeSpec& spec);

}  // namespace strata

#endif  // STRATA_TOOLS_QUANTIZER_H_
