// Quantized checkpoints as the Hugging Face ecosystem publishes them, read
// as they are:
//   - GPTQ (quant_method "gptq"): 4- or 8-bit codes packed along the input
//     dimension in int32 `qweight` [in / (32 / bits), out]; zero points packed
//     along the output dimension in `qzeros` [groups, out / (32 / bits)]
//     (stored minus one in the original format, as-is in gptq_v2); f16
//     `scales` [groups, out]; `g_idx` [in], each input column's group (not
//     monotonic with desc_act, "act order").
//     w[o, i] = scales[g_idx[i], o] * (q[i, o] - zero[g_idx[i], o]).
//   - AWQ (quant_method "awq", GEMM layout): 4-bit codes packed along the
//     output dimension, eight per int32 in the order 0 2 4 6 1 3 5 7:
//     `qweight` [in, out / 8], `qzeros` [in / group, out / 8], f16 `scales`
//     [in / group, out]. w[o, i] = scales[i / g, o] * (q[i, o] - zero[i / g, o]).
//   - FP8 E4M3 (quant_method "fp8", or "compressed-tensors" with float
//     8-bit weights): `weight` [out, in] of F8_E4M3 codes with either
//     `weight_scale_inv` per 2-D block (weight_block_size) or `weight_scale`
//     per tensor or per output channel. w = code * scale.
// Modules a config leaves unquantized (modules_to_not_convert, ignore, the
// LM head, the embeddings) keep an ordinary float `weight`.
//
// At load, every quantized linear layer is repacked (same bit width, never a
// float copy) into the one layout the kernels read, a Weight with `quant`
// set:
//   - codes row-major [out, in]: int4 as 16 bytes per 32 input columns, byte
//     j holding column j in its low nibble and column j + 16 in its high one;
//     int8 as one unsigned byte per column; FP8 as the E4M3 byte;
//   - per (row, group of `group_size` input columns): w = scale * code + offset
//     (offset = -scale * zero for the integer formats, 0 for FP8);
//   - `perm`, for GPTQ act order: the codes' column j holds input column
//     perm[j], so that each group is contiguous; x is read through it.
#ifndef STRATA_RUNTIME_QUANT_H_
#define STRATA_RUNTIME_QUANT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/backend/backend.h"
#include "runtime/checkpoint.h"
#include "runtime/quant_config.h"

namespace strata {

// The layout a linear layer's weights are read in, and its bytes.
struct QuantLayout {
  QuantFormat format = QuantFormat::kNone;
  int64_t group_size = 0;  // the packed form's (cols for per channel)
  bool perm = false;
};
int64_t PackedBytes(const QuantLayout& layout, int64_t rows, int64_t cols);

// A linear layer's repacked weights, owned on the host.
struct PackedLinear {
  QuantFormat format = QuantFormat::kNone;
  int64_t rows = 0, cols = 0, group_size = 0;
  std::vector<uint8_t> codes;
  std::vector<float> scales, offsets;  // [rows, groups]; offsets empty for FP8
  std::vector<int32_t> perm;           // empty unless act order
  int64_t checkpoint_bytes = 0;        // what its tensors take in the checkpoint
  Weight AsWeight() const;
};

// The tensors of linear layer `module` (for example
// "model.layers.3.mlp.down_proj", [rows = out, cols = in]): nullptr when the
// checkpoint holds an ordinary float `module.weight`, the packed form when it
// holds that module quantized as `config` says. Every error names the tensor
// or the config field.
absl::StatusOr<std::unique_ptr<PackedLinear>> LoadQuantizedLinear(Checkpoint& checkpoint,
                                                                  const QuantConfig& config,
                                                                  const std::string& module,
                                                                  int64_t rows, int64_t cols);

// The bytes `module` takes once loaded (packed or float) and in the
// checkpoint, without reading its data.
struct LinearBytes {
  int64_t loaded = 0;
  int64_t checkpoint = 0;
};
absl::StatusOr<LinearBytes> MeasureLinear(Checkpoint& checkpoint, const QuantConfig& config,
                                          const std::string& module, int64_t rows, int64_t cols);

// Element (row, col) of a weight in the original column order, as f32: the
// float weight's element, or a packed weight's scale * code + offset. For
// tests and slow paths.
float DequantizedAt(const Weight& w, int64_t row, int64_t col);

}  // namespace strata

#endif  // STRATA_RUNTIME_QUANT_H_
