// What the planner and the layout search share: a stage's bytes, memory and
// time from prefix sums, and the exact min-max split of layers over an
// ordered run of devices. Internal to the coordinator's planning code.
#ifndef STRATA_SERVICES_COORDINATOR_PLAN_COSTS_H_
#define STRATA_SERVICES_COORDINATOR_PLAN_COSTS_H_

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "services/coordinator/planner.h"

namespace strata::plan_detail {

inline constexpr double kInf = std::numeric_limits<double>::infinity();

// Prefix sums so any run's bytes is O(1).
struct Costs {
  explicit Costs(const PlanInput& in) : in(in) {
    prefix.assign(in.layer_bytes.size() + 1, 0);
    for (size_t i = 0; i < in.layer_bytes.size(); ++i)
      prefix[i + 1] = prefix[i] + in.layer_bytes[i];
    param_prefix.assign(in.layer_bytes.size() + 1, 0);
    for (size_t i = 0; i < in.layer_params.size() && i < in.layer_bytes.size(); ++i)
      param_prefix[i + 1] = param_prefix[i] + in.layer_params[i];
    for (size_t i = in.layer_params.size(); i < in.layer_bytes.size(); ++i)
      param_prefix[i + 1] = param_prefix[i];
  }
  int64_t num_layers() const { return static_cast<int64_t>(in.layer_bytes.size()); }
  bool first(int64_t b) const { return b == 0; }
  bool last(int64_t e) const { return e == num_layers(); }
  // Bytes the stage reads every decode step (the embedding lookup reads a few rows).
  int64_t read_bytes(int64_t b, int64_t e) const {
    return prefix[e] - prefix[b] + head_read_bytes(e);
  }
  // Of those, the final norm and LM head's (0 before the last stage).
  int64_t head_read_bytes(int64_t e) const {
    if (!last(e)) return 0;
    return in.final_norm_bytes + (in.tied_embeddings ? in.embedding_bytes : in.lm_head_bytes);
  }
  int64_t weight_bytes(int64_t b, int64_t e) const {
    int64_t bytes = prefix[e] - prefix[b];
    const bool needs_embedding =
        (first(b) && (last(e) || !in.host_embedding)) || (last(e) && in.tied_embeddings);
    if (needs_embedding) bytes += in.embedding_bytes;
    if (last(e)) bytes += in.final_norm_bytes + in.lm_head_bytes;
    return bytes;
  }
  int64_t kv_bytes(int64_t b, int64_t e) const { return (e - b) * in.kv_bytes_per_layer; }
  // The KV cache of `sequences` full contexts on layers [b, e).
  int64_t kv_bytes_for(int64_t b, int64_t e, int64_t sequences) const {
    return (e - b) * sequences * in.context * in.kv_token_bytes;
  }
  // Parameters the stage multiplies by every token (2 FLOPs each).
  int64_t params(int64_t b, int64_t e) const {
    int64_t p = param_prefix[e] - param_prefix[b];
    if (last(e)) p += in.lm_head_params;
    return p;
  }
  int64_t need(int64_t b, int64_t e) const {
    return weight_bytes(b, e) + kv_bytes(b, e) + in.workspace_bytes;
  }
  int64_t usable(int d) const {
    const DeviceSpec& dev = in.devices[d];
    return dev.capacity_bytes - dev.reserve_bytes;
  }
  double time(int d, int64_t b, int64_t e) const {
    return static_cast<double>(read_bytes(b, e)) / in.devices[d].speed;
  }
  // Memory overload of a stage: need / usable (> 1 does not fit).
  double load(int d, int64_t b, int64_t e) const {
    const int64_t u = usable(d);
    return u <= 0 ? kInf : static_cast<double>(need(b, e)) / static_cast<double>(u);
  }

  const PlanInput& in;
  std::vector<int64_t> prefix;
  std::vector<int64_t> param_prefix;
};

// Minimises max over stages of cost(d, b, e), every device taking >= 1 layer;
// returns the cut ends per device (or empty when every split costs inf).
// Ties go to the earliest cut.
template <typename CostFn>
std::vector<int64_t> MinMaxSplit(int devices, int64_t layers, const CostFn& cost, double* best) {
  // f[d][j]: best bottleneck for layers [0, j) on devices [0, d].
  std::vector<std::vector<double>> f(devices, std::vector<double>(layers + 1, kInf));
  std::vector<std::vector<int64_t>> from(devices, std::vector<int64_t>(layers + 1, -1));
  for (int64_t j = 1; j <= layers; ++j) f[0][j] = cost(0, 0, j);
  for (int d = 1; d < devices; ++d) {
    for (int64_t j = d + 1; j <= layers; ++j) {
      for (int64_t i = d; i < j; ++i) {
        const double v = std::max(f[d - 1][i], cost(d, i, j));
        if (v < f[d][j]) {
          f[d][j] = v;
          from[d][j] = i;
        }
      }
    }
  }
  *best = f[devices - 1][layers];
  if (*best == kInf) return {};
  std::vector<int64_t> ends(devices);
  int64_t j = layers;
  for (int d = devices - 1; d >= 0; --d) {
    ends[d] = j;
    j = d > 0 ? from[d][j] : 0;
  }
  return ends;
}

}  // namespace strata::plan_detail

#endif  // STRATA_SERVICES_COORDINATOR_PLAN_COSTS_H_
