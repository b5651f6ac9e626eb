// The placement planner: which contiguous run of decoder layers each device
// holds. Pure functions over plain structs; no I/O except
// PlanInputForModel, which reads checkpoint headers (never tensor data).
//
// A stage's time is the bytes it reads per decode step (its layers, plus the
// final norm and LM head on the last stage) divided by its device's speed;
// decode is bound by weight bandwidth. A stage's memory is its weights, its
// share of the KV budget (target concurrency x context, per layer) and the
// device's activation workspace; it must fit the device's capacity minus its
// reserve. The plan minimises the slowest stage under those limits, exactly
// (dynamic programming over cut points), with ties broken towards earlier
// cuts so the same input always gives the same plan.
#ifndef STRATA_SERVICES_COORDINATOR_PLANNER_H_
#define STRATA_SERVICES_COORDINATOR_PLANNER_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/config.h"

namespace strata {

struct DeviceSpec {
  std::string name;  // "gpu0", "cpu", a worker id
  int64_t capacity_bytes = 0;
  int64_t reserve_bytes = 0;  // kept free
  double speed = 1.0;         // relative throughput (> 0)
  // For the layout search's step model (0: derived from `speed`, as a
  // device of 100 GB/s and 100 TFLOP/s times the speed).
  double bandwidth = 0;  // memory bandwidth, bytes/s
  double flops = 0;      // dense bf16 FLOP/s
};

struct PlanInput {
  std::vector<int64_t> layer_bytes;  // weights of each decoder layer
  int64_t embedding_bytes = 0;       // first stage
  int64_t final_norm_bytes = 0;      // last stage
  int64_t lm_head_bytes = 0;         // last stage; 0 when tied to the embedding
  bool tied_embeddings = false;      // the last stage then maps the embedding too
  // The first stage (when not also the last) keeps the embedding table in
  // host memory and gathers a step's rows there: no device bytes for it.
  bool host_embedding = false;
  int64_t kv_bytes_per_layer = 0;   // KV budget of one layer (concurrency x context)
  int64_t workspace_bytes = 0;      // activations, per device
  std::vector<DeviceSpec> devices;  // in pipeline order
  // For the layout search (layout.h): the step model's FLOPs and KV reads.
  std::vector<int64_t> layer_params;  // parameters of each decoder layer
  int64_t lm_head_params = 0;         // the last stage's head (vocab x hidden)
  int64_t kv_token_bytes = 0;         // K and V of one token in one layer
  int64_t context = 0;                // tokens per sequence the KV is sized for
  int64_t hidden_size = 0;            // activations sent per token between stages
  int64_t attention_width = 0;        // query heads x head size (prefill attention FLOPs)
  int64_t activation_bytes = 4;       // per element of a hidden state sent on (bf16 on GPUs: 2)
  // Activations one row reads and writes through one layer: each matrix's
  // input and output, the norms, the gated MLP's product, RoPE and the KV
  // write (a prompt chunk's hundreds of rows make this a fifth of a layer's
  // traffic beside its weights).
  int64_t layer_row_bytes = 0;
  int64_t max_batch_tokens = 512;  // tokens a step carries at most
};

struct StagePlan {
  int device = 0;
  int64_t begin = 0, end = 0;  // layers [begin, end)
  int64_t weight_bytes = 0;    // everything the stage maps
  int64_t kv_bytes = 0;
  int64_t need_bytes = 0;    // weights + KV + workspace
  int64_t usable_bytes = 0;  // capacity - reserve
  double time = 0;           // bytes read per step / speed
  std::string reason;        // why the stage ends where it does
};

struct Plan {
  std::vector<StagePlan> stages;
  double bottleneck = 0;        // the slowest stage's time
  bool host_embedding = false;  // stage 0 keeps the embedding table in host memory
};

// The optimal plan; FAILED_PRECONDITION listing, per device, what the least
// overloaded split would need and what the device has when nothing fits.
absl::StatusOr<Plan> PlanPlacement(const PlanInput& input);
// A hand-made plan (`--layers`), validated against the same limits.
absl::StatusOr<Plan> PlanFromRanges(const PlanInput& input,
                                    const std::vector<std::pair<int64_t, int64_t>>& ranges);

// "0-9,10-21" -> {[0,10), [10,22)}; every layer exactly once, in order.
absl::StatusOr<std::vector<std::pair<int64_t, int64_t>>> ParseLayerRanges(const std::string& spec,
                                                                          int64_t num_layers);
// "24GiB", "512MiB", "1.5GB", "1073741824" -> bytes.
absl::StatusOr<int64_t> ParseBytes(const std::string& text);
std::string FormatBytes(int64_t bytes);

// The plan as a table with each cut's reason, and as an hf_device_map-style
// JSON object ({"model.embed_tokens": 0, "model.layers.0": 0, ...}).
std::string FormatPlan(const Plan& plan, const PlanInput& input);
std::string FormatDeviceMap(const Plan& plan);

struct BudgetOptions {
  int64_t concurrency = 16;      // sequences the KV budget must hold
  int64_t context = 0;           // tokens per sequence; 0 = the model's (capped at 8192)
  int64_t kv_element_bytes = 4;  // f32 on CPU, 2 for bf16 on GPU
  int64_t max_batch_tokens = 512;
  int64_t decode_rows = 0;  // a step's decode rows beside its prompt chunk (workspace)
};
// PlanInput for the checkpoint in `model_dir` (headers only) and `devices`.
absl::StatusOr<PlanInput> PlanInputForModel(const std::string& model_dir, const ModelConfig& config,
                                            const std::vector<DeviceSpec>& devices,
                                            const BudgetOptions& budget);

}  // namespace strata

#endif  // STRATA_SERVICES_COORDINATOR_PLANNER_H_
