// The layout search: how many pipeline replicas (R) of how many stages (S)
// serve the most tokens per second on a set of devices, and each replica's
// layer cuts.
//
// The step model. A stage that holds layers [b, e) on a device runs one
// micro-batch of m decoding sequences in
//
//   (weights read + m x (KV read + activations)) / bandwidth
//     + 2 x params x m / FLOP/s + hop
//
// where the KV read is the layers' K and V over `read_context_fraction` of the
// context, the activations are what one row moves through the layers
// (PlanInput::layer_row_bytes), and the hop is a fixed cost plus the micro-batch's activations
// over the link (the last stage's hop returns tokens only). A replica keeps S
// micro-batches in flight, so it holds m x S sequences and delivers m tokens
// every slowest-stage time.
//
// With a load to plan for (`prompt_tokens` P and `output_tokens` O, the
// requests' mean lengths), a stage's cost is its time per m completed tokens
// instead: m / O requests. A step carries a prompt chunk of up to
// T = max_batch_tokens tokens and decode tokens beside it (the scheduler's
// max_decode_rows), so a request takes max(P / T, (O - 1) / m) steps; each
// reads the stage's weights once, and on the last stage the LM head when it
// samples (every step while the request decodes). Every prompt and decode row
// is multiplied by the stage's parameters, attends to the keys before it and
// crosses the hop. So the cuts balance the load's real mix: on long prompts
// in big chunks the head, a large read but few FLOPs, weighs less than on
// decode.
//
// The search is exact under that model: for every S, the devices form
// floor(N / S) consecutive groups in their given order; for every micro-batch
// size on a fixed grid, each group's cuts minimise the slowest stage (the
// planner's min-max split); a group's throughput is the best over the grid,
// the layout's is the sum over its groups that fit, and the best S wins (ties
// to fewer stages: fewer hops). Devices left out are spares.
#ifndef STRATA_SERVICES_COORDINATOR_LAYOUT_H_
#define STRATA_SERVICES_COORDINATOR_LAYOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/coordinator/planner.h"

namespace strata {

struct LayoutOptions {
  int replicas = 0;              // forced when > 0 (with `stages`)
  int stages = 0;                // forced when > 0
  int64_t max_sequences = 1024;  // a replica's sequences in flight, at most
  double hop_seconds = 150e-6;   // fixed cost of one hop
  // Activations between stages, bytes/s: a PCIe 4.0 x16 link between GPUs
  // of one host, as NCCL (and the simulated GPUs' socket group) moves them.
  double link_bandwidth = 25e9;
  double read_context_fraction = 0.5;  // a decode step reads this share of the context
  // The load planned for, as its requests' mean prompt and completion
  // lengths (both > 0), or 0 and 0: decode steps alone.
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  // A tied-embedding model's group of several devices that does not fit may
  // keep the embedding table in host memory on its first stage.
  bool allow_host_embedding = true;
};

struct ReplicaPlan {
  std::vector<int> devices;  // indices into PlanInput::devices, in pipeline order
  Plan plan;                 // StagePlan::device indexes PlanInput::devices
  int64_t micro_batch = 0;   // sequences per micro-batch of the model
  int64_t in_flight = 0;     // micro_batch x stages
  int64_t kv_sequences = 0;  // full-context sequences the memory left over holds
  double step_seconds = 0;   // the slowest stage's cost for one micro-batch (StageSeconds)
  double tokens_per_second = 0;
  bool host_embedding = false;  // stage 0 keeps the embedding table in host memory
};

struct LayoutCandidate {
  int stages = 0;
  int replicas = 0;  // groups that fit
  double tokens_per_second = 0;
  std::string verdict;  // chosen, or why it lost
};

struct Layout {
  int stages = 0;
  std::vector<ReplicaPlan> replicas;
  std::vector<int> spares;  // devices no replica uses
  double tokens_per_second = 0;
  std::vector<LayoutCandidate> candidates;       // every S weighed, by S
  int64_t prompt_tokens = 0, output_tokens = 0;  // the load planned for (0: decode only)
};

// The best layout (or the forced one); FAILED_PRECONDITION naming what does
// not fit when no replica of any size fits, INVALID_ARGUMENT for bad input.
absl::StatusOr<Layout> PlanLayout(const PlanInput& input, const LayoutOptions& options);

// The step model's pieces, shared with the brute-force tests and the
// simulated devices. StageSeconds: a stage's cost for one micro-batch (per
// micro_batch completed tokens with a load to plan for); RequestSeconds: its
// time for one request of the planned load.
double StageSeconds(const PlanInput& input, const DeviceSpec& device, int64_t begin, int64_t end,
                    int64_t micro_batch, const LayoutOptions& options);
double RequestSeconds(const PlanInput& input, const DeviceSpec& device, int64_t begin, int64_t end,
                      int64_t micro_batch, const LayoutOptions& options);
int64_t StageNeedBytes(const PlanInput& input, int64_t begin, int64_t end, int64_t sequences);
// Micro-batch sizes tried: 1, 2, 3, 4, 6, 8, 12, ... and `cap` itself.
std::vector<int64_t> MicroBatchGrid(int64_t cap);
// The device's bandwidth and FLOP/s, derived from `speed` where unset.
double DeviceBandwidth(const DeviceSpec& device);
double DeviceFlops(const DeviceSpec& device);

// The chosen layout, each replica's stages with their reasons, and the
// candidates with their modelled throughput.
std::string FormatLayout(const Layout& layout, const PlanInput& input);

}  // namespace strata

#endif  // STRATA_SERVICES_COORDINATOR_LAYOUT_H_
