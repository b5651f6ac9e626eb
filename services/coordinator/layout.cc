#include "services/coordinator/layout.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/status_macros.h"
#include "services/coordinator/plan_costs.h"

namespace strata {
namespace {

using plan_detail::Costs;
using plan_detail::kInf;
using plan_detail::MinMaxSplit;

constexpr double kNominalBandwidth = 100e9;  // bytes/s at speed 1
constexpr double kNominalFlops = 100e12;     // FLOP/s at speed 1

// One decode micro-batch of m sequences.
double DecodeSeconds(const Costs& c, const DeviceSpec& dev, int64_t b, int64_t e, int64_t m,
                     const LayoutOptions& o) {
  const double kv_read = static_cast<double>(c.kv_bytes_for(b, e, 1)) * o.read_context_fraction;
  const double bytes =
      static_cast<double>(c.read_bytes(b, e)) +
      static_cast<double>(m) * (kv_read + static_cast<double>((e - b) * c.in.layer_row_bytes));
  const double flops = 2.0 * static_cast<double>(c.params(b, e)) * static_cast<double>(m);
  double hop = o.hop_seconds;
  if (!c.last(e)) {
    hop += static_cast<double>(m * c.in.hidden_size * c.in.activation_bytes) / o.link_bandwidth;
  }
  return bytes / DeviceBandwidth(dev) + flops / DeviceFlops(dev) + hop;
}

// One request of the planned load: o.prompt_tokens of prompt prefilled in
// chunks of max_batch_tokens, o.output_tokens sampled, decoding in
// micro-batches of m.
double RequestSeconds(const Costs& c, const DeviceSpec& dev, int64_t b, int64_t e, int64_t m,
                      const LayoutOptions& o) {
  const PlanInput& in = c.in;
  const double p = static_cast<double>(o.prompt_tokens);
  const double out = static_cast<double>(o.output_tokens);
  const double t = static_cast<double>(std::max<int64_t>(1, in.max_batch_tokens));
  const double layers = static_cast<double>(e - b);
  // A step carries a prompt chunk and decode tokens beside it, so the
  // request's steps are its prompt's chunks or its decode micro-batches,
  // whichever are more (prompts shorter than a chunk share one).
  const double steps = std::max(p / t, (out - 1) / static_cast<double>(m));
  const double rows = p + out - 1;
  const double layer_params =
      static_cast<double>(c.params(b, e) - (c.last(e) ? in.lm_head_params : 0));
  double bytes = steps * static_cast<double>(c.read_bytes(b, e) - c.head_read_bytes(e));
  // Per layer: every row's K and V written; each prompt chunk reads the keys
  // up to its end once, for all its queries (k chunks of t: t k (k + 1) / 2
  // keys, and every query of a chunk attends to all of them); each decode
  // token reads the context so far.
  const double chunk_keys = p <= t ? p : p * (p + t) / (2 * t);
  const double query_keys = p <= t ? p * p : p * (p + t) / 2;
  const double decode_keys = (out - 1) * (p + out / 2);
  bytes += layers * (rows + chunk_keys + decode_keys) * static_cast<double>(in.kv_token_bytes);
  bytes += layers * rows * static_cast<double>(in.layer_row_bytes);
  double flops = 2.0 * layer_params * rows + layers * 4.0 * (query_keys + decode_keys) *
                                                 static_cast<double>(in.attention_width);
  double hop = steps * o.hop_seconds;
  if (c.last(e)) {
    // The head is read by every step that samples: all of them while the
    // request decodes beside its chunks; the last chunk alone otherwise.
    const double head_reads = out > 1 ? steps : std::min(1.0, p / t);
    bytes += head_reads * static_cast<double>(c.head_read_bytes(e));
    flops += 2.0 * static_cast<double>(in.lm_head_params) * out;
  } else {
    hop += rows * static_cast<double>(in.hidden_size * in.activation_bytes) / o.link_bandwidth;
  }
  return bytes / DeviceBandwidth(dev) + flops / DeviceFlops(dev) + hop;
}

// A stage's cost for one micro-batch of m: a decode step's time, or with a
// load to plan for, its time per m completed tokens, prompts included.
double Seconds(const Costs& c, const DeviceSpec& dev, int64_t b, int64_t e, int64_t m,
               const LayoutOptions& o) {
  if (o.prompt_tokens <= 0 || o.output_tokens <= 0) return DecodeSeconds(c, dev, b, e, m, o);
  return static_cast<double>(m) / static_cast<double>(o.output_tokens) *
         RequestSeconds(c, dev, b, e, m, o);
}

int64_t Need(const Costs& c, int64_t b, int64_t e, int64_t sequences) {
  return c.weight_bytes(b, e) + c.kv_bytes_for(b, e, sequences) + c.in.workspace_bytes;
}

// The best cuts of one group of devices (one replica).
struct GroupResult {
  bool fits = false;
  std::vector<int64_t> ends;
  int64_t micro_batch = 0;
  double bottleneck = 0;
  double tokens_per_second = 0;
  bool host_embedding = false;
};

GroupResult BestForGroup(const Costs& c, const std::vector<int>& group, const LayoutOptions& o) {
  const PlanInput& in = c.in;
  const int stages = static_cast<int>(group.size());
  GroupResult r;
  const int64_t cap = std::min<int64_t>(in.max_batch_tokens, o.max_sequences / stages);
  if (cap < 1) return r;
  for (int64_t m : MicroBatchGrid(cap)) {
    double bottleneck = 0;
    std::vector<int64_t> ends = MinMaxSplit(
        stages, c.num_layers(),
        [&](int d, int64_t b, int64_t e) {
          const DeviceSpec& dev = in.devices[group[d]];
          if (Need(c, b, e, m * stages) > dev.capacity_bytes - dev.reserve_bytes) return kInf;
          return Seconds(c, dev, b, e, m, o);
        },
        &bottleneck);
    if (ends.empty()) continue;
    const double tps = static_cast<double>(m) / bottleneck;
    if (tps > r.tokens_per_second) {
      r.fits = true;
      r.ends = std::move(ends);
      r.micro_batch = m;
      r.bottleneck = bottleneck;
      r.tokens_per_second = tps;
    }
  }
  return r;
}

// Same figures, same result: homogeneous groups are searched once.
std::string GroupKey(const PlanInput& in, const std::vector<int>& group) {
  std::string key;
  for (int d : group) {
    const DeviceSpec& dev = in.devices[d];
    absl::StrAppend(&key, dev.capacity_bytes, "/", dev.reserve_bytes, "/", DeviceBandwidth(dev),
                    "/", DeviceFlops(dev), ";");
  }
  return key;
}

ReplicaPlan MakeReplica(const Costs& c, const std::vector<int>& group, const GroupResult& g,
                        const LayoutOptions& o) {
  const PlanInput& in = c.in;
  ReplicaPlan r;
  r.devices = group;
  r.micro_batch = g.micro_batch;
  r.in_flight = g.micro_batch * static_cast<int64_t>(group.size());
  r.step_seconds = g.bottleneck;
  r.tokens_per_second = g.tokens_per_second;
  r.host_embedding = g.host_embedding;
  r.kv_sequences = -1;
  r.plan.bottleneck = g.bottleneck;
  const int64_t per_sequence = c.kv_bytes_for(0, 1, 1);
  int64_t b = 0;
  for (size_t d = 0; d < group.size(); ++d) {
    const DeviceSpec& dev = in.devices[group[d]];
    StagePlan s;
    s.device = group[d];
    s.begin = b;
    s.end = g.ends[d];
    s.weight_bytes = c.weight_bytes(s.begin, s.end);
    s.kv_bytes = c.kv_bytes_for(s.begin, s.end, r.in_flight);
    s.need_bytes = Need(c, s.begin, s.end, r.in_flight);
    s.usable_bytes = dev.capacity_bytes - dev.reserve_bytes;
    s.time = Seconds(c, dev, s.begin, s.end, g.micro_batch, o);
    // The cache sized from what the weights and workspace leave.
    const int64_t left = s.usable_bytes - s.weight_bytes - in.workspace_bytes;
    if (per_sequence > 0) {
      const int64_t fits = left / (per_sequence * (s.end - s.begin));
      r.kv_sequences = r.kv_sequences < 0 ? fits : std::min(r.kv_sequences, fits);
    }
    const std::string slowest = s.time == g.bottleneck ? " (the slowest stage)" : "";
    if (s.end == c.num_layers()) {
      s.reason = "last stage: holds the final norm, the LM head and the sampler" + slowest;
    } else if (Need(c, s.begin, s.end + 1, r.in_flight) > s.usable_bytes) {
      s.reason = absl::StrCat("memory: with layer ", s.end, " it would need ",
                              FormatBytes(Need(c, s.begin, s.end + 1, r.in_flight)), " of ",
                              FormatBytes(s.usable_bytes), " usable", slowest);
    } else if (Seconds(c, dev, s.begin, s.end + 1, g.micro_batch, o) > g.bottleneck) {
      s.reason = absl::StrFormat(
          "balance: with layer %d its step would take %.3f ms, more than "
          "the slowest stage's%s",
          s.end, 1e3 * Seconds(c, dev, s.begin, s.end + 1, g.micro_batch, o), slowest);
    } else {
      s.reason = absl::StrCat("free: layer ", s.end,
                              " could sit on either side without changing the slowest stage; the "
                              "earliest cut is kept",
                              slowest);
    }
    r.plan.stages.push_back(std::move(s));
    b = g.ends[d];
  }
  if (r.kv_sequences < 0) r.kv_sequences = o.max_sequences;
  return r;
}

absl::Status CheckOptions(const PlanInput& in, const LayoutOptions& o) {
  const int n = static_cast<int>(in.devices.size());
  if (o.replicas < 0 || o.stages < 0 || (o.replicas > 0) != (o.stages > 0)) {
    return absl::InvalidArgumentError(
        "replicas, stages: force both (--replicas R --stages S) or neither");
  }
  if (o.replicas > 0 && static_cast<int64_t>(o.replicas) * o.stages > n) {
    return absl::InvalidArgumentError(absl::StrCat("replicas x stages: ", o.replicas, " x ",
                                                   o.stages, " needs ", o.replicas * o.stages,
                                                   " devices; there are ", n));
  }
  if (o.stages > static_cast<int>(in.layer_bytes.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stages: ", o.stages, " stages but the model has ", in.layer_bytes.size(), " layers"));
  }
  if (o.max_sequences < 1) return absl::InvalidArgumentError("max_sequences: must be positive");
  if (o.prompt_tokens < 0 || o.output_tokens < 0 ||
      (o.prompt_tokens > 0) != (o.output_tokens > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt_tokens, output_tokens: plan for a load with both positive or neither, got ",
        o.prompt_tokens, " and ", o.output_tokens));
  }
  if (!(o.hop_seconds >= 0) || !(o.link_bandwidth > 0) || !(o.read_context_fraction >= 0)) {
    return absl::InvalidArgumentError(
        "hop_seconds, link_bandwidth, read_context_fraction: must be non-negative (bandwidth "
        "positive)");
  }
  for (size_t d = 0; d < in.devices.size(); ++d) {
    const DeviceSpec& dev = in.devices[d];
    if (dev.bandwidth < 0 || dev.flops < 0 || !std::isfinite(dev.bandwidth) ||
        !std::isfinite(dev.flops)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device ", d, " (", dev.name, "): bandwidth and FLOP/s must be positive or unset"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

double DeviceBandwidth(const DeviceSpec& device) {
  return device.bandwidth > 0 ? device.bandwidth : device.speed * kNominalBandwidth;
}

double DeviceFlops(const DeviceSpec& device) {
  return device.flops > 0 ? device.flops : device.speed * kNominalFlops;
}

std::vector<int64_t> MicroBatchGrid(int64_t cap) {
  std::vector<int64_t> grid;
  for (int64_t p = 1; p <= cap; p *= 2) {
    grid.push_back(p);
    if (p >= 2 && p + p / 2 <= cap) grid.push_back(p + p / 2);
  }
  if (!grid.empty() && grid.back() != cap) grid.push_back(cap);
  std::sort(grid.begin(), grid.end());
  grid.erase(std::unique(grid.begin(), grid.end()), grid.end());
  return grid;
}

double StageSeconds(const PlanInput& input, const DeviceSpec& device, int64_t begin, int64_t end,
                    int64_t micro_batch, const LayoutOptions& options) {
  return Seconds(Costs(input), device, begin, end, micro_batch, options);
}

double RequestSeconds(const PlanInput& input, const DeviceSpec& device, int64_t begin, int64_t end,
                      int64_t micro_batch, const LayoutOptions& options) {
  return RequestSeconds(Costs(input), device, begin, end, micro_batch, options);
}

int64_t StageNeedBytes(const PlanInput& input, int64_t begin, int64_t end, int64_t sequences) {
  return Need(Costs(input), begin, end, sequences);
}

absl::StatusOr<Layout> PlanLayout(const PlanInput& input, const LayoutOptions& options) {
  if (input.devices.empty()) return absl::InvalidArgumentError("devices: at least one is needed");
  RETURN_IF_ERROR(CheckOptions(input, options));
  const Costs c(input);
  PlanInput host_input = input;
  host_input.host_embedding = true;
  const Costs host_costs(host_input);
  const int n = static_cast<int>(input.devices.size());
  const int max_stages = std::min<int>(n, static_cast<int>(c.num_layers()));
  std::map<std::string, GroupResult> memo;
  struct Weighed {
    int stages = 0;
    std::vector<std::vector<int>> groups;  // those that fit
    std::vector<GroupResult> results;
    double tokens_per_second = 0;
  };
  std::vector<Weighed> weighed;
  for (int s = 1; s <= max_stages; ++s) {
    Weighed w;
    w.stages = s;
    for (int g = 0; (g + 1) * s <= n; ++g) {
      if (options.replicas > 0 && s == options.stages &&
          static_cast<int>(w.groups.size()) == options.replicas) {
        break;  // the forced number of replicas
      }
      std::vector<int> group;
      for (int d = g * s; d < (g + 1) * s; ++d) group.push_back(d);
      const std::string key = GroupKey(input, group);
      auto it = memo.find(key);
      if (it == memo.end()) {
        GroupResult g = BestForGroup(c, group, options);
        if (!g.fits && s > 1 && input.tied_embeddings && options.allow_host_embedding) {
          g = BestForGroup(host_costs, group, options);
          g.host_embedding = g.fits;
        }
        it = memo.emplace(key, g).first;
      }
      if (!it->second.fits) continue;
      w.groups.push_back(std::move(group));
      w.results.push_back(it->second);
      w.tokens_per_second += it->second.tokens_per_second;
    }
    weighed.push_back(std::move(w));
  }
  // The winner: the forced S, or the most tokens per second (ties: fewer stages).
  int best = -1;
  for (int i = 0; i < static_cast<int>(weighed.size()); ++i) {
    const Weighed& w = weighed[i];
    if (w.groups.empty()) continue;
    if (options.stages > 0) {
      if (w.stages == options.stages) best = i;
      continue;
    }
    if (best < 0 || w.tokens_per_second > weighed[best].tokens_per_second * (1 + 1e-12)) best = i;
  }
  if (options.stages > 0 &&
      (best < 0 || static_cast<int>(weighed[best].groups.size()) < options.replicas)) {
    const int fit = best < 0 ? 0 : static_cast<int>(weighed[best].groups.size());
    return absl::FailedPreconditionError(
        absl::StrCat("replicas x stages: only ", fit, " replica(s) of ", options.stages,
                     " stage(s) fit these devices, ", options.replicas, " were asked for"));
  }
  if (best < 0) {
    // Say why with the planner's per-device account of the longest pipeline.
    PlanInput one = input;
    one.kv_bytes_per_layer = c.kv_bytes_for(0, 1, max_stages);
    one.devices.resize(max_stages);
    absl::StatusOr<Plan> longest = PlanPlacement(one);
    return absl::FailedPreconditionError(
        absl::StrCat("no layout fits: not even one sequence per micro-batch on a pipeline of ",
                     max_stages, " stage(s); ", longest.ok() ? "" : longest.status().message()));
  }
  Layout layout;
  const Weighed& w = weighed[best];
  layout.stages = w.stages;
  layout.tokens_per_second = w.tokens_per_second;
  layout.prompt_tokens = options.prompt_tokens;
  layout.output_tokens = options.output_tokens;
  std::vector<bool> used(n, false);
  for (size_t g = 0; g < w.groups.size(); ++g) {
    const Costs& costs = w.results[g].host_embedding ? host_costs : c;
    layout.replicas.push_back(MakeReplica(costs, w.groups[g], w.results[g], options));
    if (w.results[g].host_embedding) {
      StagePlan& first = layout.replicas.back().plan.stages[0];
      first.reason = absl::StrCat(
          "embedding table in host memory (the layers fit the devices only without it); ",
          first.reason);
      layout.replicas.back().plan.host_embedding = true;
    }
    for (int d : w.groups[g]) used[d] = true;
  }
  for (int d = 0; d < n; ++d) {
    if (!used[d]) layout.spares.push_back(d);
  }
  for (const Weighed& x : weighed) {
    LayoutCandidate cand;
    cand.stages = x.stages;
    cand.replicas = static_cast<int>(x.groups.size());
    cand.tokens_per_second = x.tokens_per_second;
    if (&x == &w) {
      cand.verdict = options.stages > 0 ? "chosen (forced by --replicas/--stages)"
                                        : "chosen: the most tokens per second";
    } else if (x.groups.empty()) {
      cand.verdict = absl::StrCat("does not fit: no group of ", x.stages,
                                  " device(s) holds the model with even one sequence per "
                                  "micro-batch");
    } else if (options.stages > 0) {
      cand.verdict = "not forced";
    } else if (x.tokens_per_second == w.tokens_per_second) {
      cand.verdict = "as fast, but more stages (more hops per token)";
    } else {
      const double share = x.tokens_per_second / w.tokens_per_second;
      cand.verdict =
          absl::StrFormat("%.0f%% of the chosen: %s", 100 * share,
                          x.stages > w.stages ? "fewer replicas, and every hop costs"
                                              : "each device holds more layers, so fewer sequences "
                                                "fit and more bytes are read per token");
    }
    layout.candidates.push_back(std::move(cand));
  }
  return layout;
}

std::string FormatLayout(const Layout& layout, const PlanInput& input) {
  std::string out = absl::StrFormat(
      "layout: %d replica(s) x %d stage(s) on %d of %d device(s); modelled %.0f tokens/s at "
      "saturation\n",
      layout.replicas.size(), layout.stages,
      static_cast<int>(layout.replicas.size()) * layout.stages, input.devices.size(),
      layout.tokens_per_second);
  if (layout.prompt_tokens > 0) {
    absl::StrAppendFormat(&out,
                          "planned for %d-token prompts and %d-token completions: output tokens/s, "
                          "prefill included; cuts balance both\n",
                          layout.prompt_tokens, layout.output_tokens);
  }
  for (size_t r = 0; r < layout.replicas.size(); ++r) {
    const ReplicaPlan& rep = layout.replicas[r];
    absl::StrAppendFormat(
        &out,
        "replica %d: %d sequences in flight (micro-batch %d); KV cache for %d sequences of %d "
        "tokens (%d tokens) from the memory left; step %.3f ms; %.0f tokens/s\n",
        r, rep.in_flight, rep.micro_batch, rep.kv_sequences, input.context,
        rep.kv_sequences * input.context, 1e3 * rep.step_seconds, rep.tokens_per_second);
    for (size_t i = 0; i < rep.plan.stages.size(); ++i) {
      const StagePlan& s = rep.plan.stages[i];
      absl::StrAppendFormat(
          &out, "  stage %d  %-12s layers %3d-%-3d  weights %10s  KV %10s  need %10s of %10s  %s\n",
          i, input.devices[s.device].name, s.begin, s.end - 1, FormatBytes(s.weight_bytes),
          FormatBytes(s.kv_bytes), FormatBytes(s.need_bytes), FormatBytes(s.usable_bytes),
          s.reason);
    }
  }
  for (int d : layout.spares) {
    absl::StrAppendFormat(&out, "spare: %s (no replica of %d stage(s) is left for it)\n",
                          input.devices[d].name, layout.stages);
  }
  out += "candidates (stages x replicas, modelled tokens/s):\n";
  for (const LayoutCandidate& c : layout.candidates) {
    absl::StrAppendFormat(&out, "  %2d x %-3d %12.0f  %s\n", c.stages, c.replicas,
                          c.tokens_per_second, c.verdict);
  }
  return out;
}

}  // namespace strata
