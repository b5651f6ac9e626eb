// config.json's quantization_config: which published quantization format a
// checkpoint's linear layers are in (runtime/quant.h reads their tensors).
#ifndef STRATA_RUNTIME_QUANT_CONFIG_H_
#define STRATA_RUNTIME_QUANT_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/json.h"

namespace strata {

enum class QuantMethod { kNone, kGptq, kAwq, kFp8, kCompressedFp8 };

enum class Fp8Scale { kTensor, kChannel, kBlock };

// config.json's quantization_config.
struct QuantConfig {
  QuantMethod method = QuantMethod::kNone;
  int bits = 16;
  // Input columns per scale; 0 = one group over the whole input (GPTQ's
  // group_size -1, per channel).
  int64_t group_size = 0;
  bool desc_act = false;  // GPTQ
  bool sym = true;        // GPTQ
  bool gptq_v2 = false;   // GPTQ checkpoint_format "gptq_v2": zeros stored as they are
  Fp8Scale fp8_scale = Fp8Scale::kTensor;
  int64_t block_rows = 0, block_cols = 0;  // FP8 weight_block_size
  bool dynamic_activations = true;         // FP8: as the config says; computed unquantized
  std::vector<std::string> not_converted;  // modules_to_not_convert / ignore

  bool quantized() const { return method != QuantMethod::kNone; }
  // "GPTQ int4, group 128, act order", for logs and `strata inspect`.
  std::string Describe() const;
};

// Parses a quantization_config object; errors name `source` and the field.
absl::StatusOr<QuantConfig> ParseQuantConfig(const Json& json, const std::string& source);

}  // namespace strata

#endif  // STRATA_RUNTIME_QUANT_CONFIG_H_
