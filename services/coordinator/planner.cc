#include "services/coordinator/planner.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "runtime/checkpoint.h"
#include "runtime/model_layout.h"
#include "runtime/status_macros.h"
#include "services/coordinator/plan_costs.h"

namespace strata {
namespace {

using plan_detail::Costs;
using plan_detail::kInf;
using plan_detail::MinMaxSplit;

Plan BuildPlan(const Costs& c, const std::vector<int64_t>& ends) {
  Plan plan;
  int64_t b = 0;
  for (size_t d = 0; d < ends.size(); ++d) {
    StagePlan s;
    s.device = static_cast<int>(d);
    s.begin = b;
    s.end = ends[d];
    s.weight_bytes = c.weight_bytes(s.begin, s.end);
    s.kv_bytes = c.kv_bytes(s.begin, s.end);
    s.need_bytes = c.need(s.begin, s.end);
    s.usable_bytes = c.usable(s.device);
    s.time = c.time(s.device, s.begin, s.end);
    plan.bottleneck = std::max(plan.bottleneck, s.time);
    plan.stages.push_back(s);
    b = s.end;
  }
  // Why each stage ends where it does: what taking one more layer would cost.
  for (size_t d = 0; d < plan.stages.size(); ++d) {
    StagePlan& s = plan.stages[d];
    const std::string slowest = s.time == plan.bottleneck ? " (the slowest stage)" : "";
    if (s.end == c.num_layers()) {
      s.reason = "last stage: holds the final norm, the LM head and the sampler" + slowest;
      continue;
    }
    const int64_t next = s.end;
    if (c.need(s.begin, next + 1) > s.usable_bytes) {
      s.reason = absl::StrCat("memory: with layer ", next, " it would need ",
                              FormatBytes(c.need(s.begin, next + 1)), " of ",
                              FormatBytes(s.usable_bytes), " usable", slowest);
    } else if (c.time(s.device, s.begin, next + 1) > plan.bottleneck) {
      s.reason = absl::StrFormat(
          "balance: with layer %d it would read %s per step, slower "
          "than the slowest stage%s",
          next, FormatBytes(c.read_bytes(s.begin, next + 1)), slowest);
    } else {
      s.reason = absl::StrCat("free: layer ", next,
                              " could sit on either side without changing the slowest stage; "
                              "the earliest cut is kept",
                              slowest);
    }
  }
  return plan;
}

absl::Status CheckInput(const PlanInput& in) {
  if (in.devices.empty()) return absl::InvalidArgumentError("devices: at least one is needed");
  for (size_t d = 0; d < in.devices.size(); ++d) {
    const DeviceSpec& dev = in.devices[d];
    if (!(dev.speed > 0) || !std::isfinite(dev.speed)) {
      return absl::InvalidArgumentError(
          absl::StrCat("device ", d, " (", dev.name, "): speed must be positive, got ", dev.speed));
    }
    if (dev.capacity_bytes <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("device ", d, " (", dev.name, "): capacity must be positive"));
    }
  }
  if (static_cast<int64_t>(in.devices.size()) > static_cast<int64_t>(in.layer_bytes.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat(in.devices.size(), " devices but the model has only ", in.layer_bytes.size(),
                     " decoder layers: every device must hold at least one; use fewer devices"));
  }
  return absl::OkStatus();
}

std::string DeviceLine(const Costs& c, int d, int64_t b, int64_t e) {
  const DeviceSpec& dev = c.in.devices[d];
  const bool fits = c.need(b, e) <= c.usable(d);
  return absl::StrFormat(
      "  device %d (%s): layers %d-%d need %s (weights %s + KV %s + workspace %s); it has %s "
      "(%s capacity - %s reserve)%s",
      d, dev.name, b, e - 1, FormatBytes(c.need(b, e)), FormatBytes(c.weight_bytes(b, e)),
      FormatBytes(c.kv_bytes(b, e)), FormatBytes(c.in.workspace_bytes), FormatBytes(c.usable(d)),
      FormatBytes(dev.capacity_bytes), FormatBytes(dev.reserve_bytes),
      fits ? "" : "  <-- does not fit");
}

}  // namespace

absl::StatusOr<Plan> PlanPlacement(const PlanInput& input) {
  RETURN_IF_ERROR(CheckInput(input));
  const Costs c(input);
  const int devices = static_cast<int>(input.devices.size());
  double best = 0;
  std::vector<int64_t> ends = MinMaxSplit(
      devices, c.num_layers(),
      [&](int d, int64_t b, int64_t e) {
        return c.need(b, e) <= c.usable(d) ? c.time(d, b, e) : kInf;
      },
      &best);
  if (!ends.empty()) return BuildPlan(c, ends);
  if (input.tied_embeddings && !input.host_embedding && devices > 1) {
    // The table in host memory frees the first device of it (the last one
    // holds it anyway, as the head): perhaps that fits.
    PlanInput host = input;
    host.host_embedding = true;
    if (absl::StatusOr<Plan> plan = PlanPlacement(host); plan.ok()) {
      plan->host_embedding = true;
      plan->stages[0].reason = absl::StrCat(
          "embedding table in host memory (the layers fit the devices only without it); ",
          plan->stages[0].reason);
      return plan;
    }
  }

  // Nothing fits: show the split that overloads its worst device least.
  double overload = 0;
  ends = MinMaxSplit(
      devices, c.num_layers(), [&](int d, int64_t b, int64_t e) { return c.load(d, b, e); },
      &overload);
  int64_t total_need = 0, total_usable = 0;
  for (int d = 0; d < devices; ++d) total_usable += std::max<int64_t>(0, c.usable(d));
  std::string lines;
  int64_t b = 0;
  for (int d = 0; d < devices && !ends.empty(); ++d) {
    total_need += c.need(b, ends[d]);
    absl::StrAppend(&lines, "\n", DeviceLine(c, d, b, ends[d]));
    b = ends[d];
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "the model does not fit on ", devices, " device(s): the least overloaded split needs ",
      FormatBytes(total_need), " in all and the devices have ", FormatBytes(total_usable),
      " usable; per device:", lines,
      "\nadd devices, lower the KV budget (concurrency or context), or raise capacity"));
}

absl::StatusOr<Plan> PlanFromRanges(const PlanInput& input,
                                    const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  RETURN_IF_ERROR(CheckInput(input));
  if (ranges.size() != input.devices.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("layers: ", ranges.size(), " ranges for ", input.devices.size(), " devices"));
  }
  const Costs c(input);
  std::vector<int64_t> ends;
  std::string overfull;
  for (size_t d = 0; d < ranges.size(); ++d) {
    if (c.need(ranges[d].first, ranges[d].second) > c.usable(static_cast<int>(d))) {
      absl::StrAppend(&overfull, "\n",
                      DeviceLine(c, static_cast<int>(d), ranges[d].first, ranges[d].second));
    }
    ends.push_back(ranges[d].second);
  }
  if (!overfull.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("layers: the requested split does not fit:", overfull));
  }
  Plan plan = BuildPlan(c, ends);
  for (StagePlan& s : plan.stages) s.reason = "set by hand (--layers)";
  return plan;
}

absl::StatusOr<std::vector<std::pair<int64_t, int64_t>>> ParseLayerRanges(const std::string& spec,
                                                                          int64_t num_layers) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  int64_t expect = 0;
  for (absl::string_view part : absl::StrSplit(spec, ',')) {
    std::vector<std::string> ends = absl::StrSplit(part, '-');
    int64_t lo = 0, hi = 0;
    if (ends.size() != 2 || !absl::SimpleAtoi(ends[0], &lo) || !absl::SimpleAtoi(ends[1], &hi)) {
      return absl::InvalidArgumentError(
          absl::StrCat("layers: \"", std::string(part), "\" is not a range like 0-9"));
    }
    if (lo != expect) {
      return absl::InvalidArgumentError(
          absl::StrCat("layers: range \"", std::string(part), "\" should start at layer ", expect));
    }
    if (hi < lo || hi >= num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("layers: range \"", std::string(part),
                                                     "\" is empty or past the last layer (",
                                                     num_layers - 1, ")"));
    }
    ranges.emplace_back(lo, hi + 1);
    expect = hi + 1;
  }
  if (expect != num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layers: the ranges end at layer ", expect - 1,
                                                   " but the model has ", num_layers, " layers (0-",
                                                   num_layers - 1, ")"));
  }
  return ranges;
}

absl::StatusOr<int64_t> ParseBytes(const std::string& text) {
  struct Unit {
    const char* suffix;
    double scale;
  };
  static constexpr Unit kUnits[] = {{"TiB", 1099511627776.0},
                                    {"GiB", 1073741824.0},
                                    {"MiB", 1048576.0},
                                    {"KiB", 1024.0},
                                    {"TB", 1e12},
                                    {"GB", 1e9},
                                    {"MB", 1e6},
                                    {"KB", 1e3},
                                    {"B", 1.0}};
  absl::string_view number(text);
  double scale = 1;
  for (const Unit& u : kUnits) {
    if (absl::ConsumeSuffix(&number, u.suffix)) {
      scale = u.scale;
      break;
    }
  }
  double value = 0;
  if (!absl::SimpleAtod(number, &value) || !(value > 0) || !std::isfinite(value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" is not a size like 24GiB, 512MiB or 1.5GB"));
  }
  return static_cast<int64_t>(std::llround(value * scale));
}

std::string FormatBytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (std::abs(b) >= 1073741824.0) return absl::StrFormat("%.2f GiB", b / 1073741824.0);
  if (std::abs(b) >= 1048576.0) return absl::StrFormat("%.2f MiB", b / 1048576.0);
  if (std::abs(b) >= 1024.0) return absl::StrFormat("%.1f KiB", b / 1024.0);
  return absl::StrCat(bytes, " B");
}

std::string FormatPlan(const Plan& plan, const PlanInput& input) {
  std::string out;
  for (const StagePlan& s : plan.stages) {
    absl::StrAppendFormat(
        &out, "stage %d  %-10s layers %3d-%-3d  weights %10s  KV %10s  need %10s of %10s  %s\n",
        s.device, input.devices[s.device].name, s.begin, s.end - 1, FormatBytes(s.weight_bytes),
        FormatBytes(s.kv_bytes), FormatBytes(s.need_bytes), FormatBytes(s.usable_bytes), s.reason);
  }
  return out;
}

std::string FormatDeviceMap(const Plan& plan) {
  std::string out = "{";
  auto add = [&](const std::string& name, int device) {
    if (out.size() > 1) out += ", ";
    absl::StrAppend(&out, "\"", name, "\": ", device);
  };
  add("model.embed_tokens", plan.stages.front().device);
  for (const StagePlan& s : plan.stages) {
    for (int64_t l = s.begin; l < s.end; ++l) add(absl::StrCat("model.layers.", l), s.device);
  }
  add("model.norm", plan.stages.back().device);
  add("lm_head", plan.stages.back().device);
  return out + "}";
}

absl::StatusOr<PlanInput> PlanInputForModel(const std::string& model_dir, const ModelConfig& config,
                                            const std::vector<DeviceSpec>& devices,
                                            const BudgetOptions& budget) {
  ASSIGN_OR_RETURN(auto checkpoint, Checkpoint::Open(model_dir));
  ASSIGN_OR_RETURN(ModelBytes bytes, MeasureModel(config, *checkpoint));
  PlanInput in;
  in.layer_bytes = bytes.layer_bytes;
  in.embedding_bytes = bytes.embedding_bytes;
  in.final_norm_bytes = bytes.final_norm_bytes;
  in.lm_head_bytes = bytes.lm_head_bytes;
  in.tied_embeddings = config.tie_word_embeddings;
  const int64_t context =
      budget.context > 0 ? budget.context : std::min<int64_t>(config.max_position_embeddings, 8192);
  in.kv_bytes_per_layer =
      budget.concurrency * context * 2 * config.kv_dim() * budget.kv_element_bytes;
  // f32 activations of one full batch: residual, norm, q/k/v, attention,
  // projection, gate and up (the stage's workspaces), plus logits rows for
  // every sequence of a decode step (at least 64, as the stage reserves).
  const int64_t per_token = 3 * config.hidden_size + config.q_dim() * 2 + config.kv_dim() * 2 +
                            config.intermediate_size * 2;
  in.workspace_bytes = (budget.max_batch_tokens + budget.decode_rows) * per_token * 4 +
                       config.vocab_size * 4 * std::max<int64_t>(64, budget.concurrency);
  in.devices = devices;
  for (int64_t l = 0; l < config.num_layers; ++l) {
    int64_t params = 0;
    for (const TensorSpec& t : LayerTensors(config, l)) {
      int64_t n = 1;
      for (int64_t d : t.shape) n *= d;
      params += n;
    }
    in.layer_params.push_back(params);
  }
  in.lm_head_params = config.vocab_size * config.hidden_size;
  in.kv_token_bytes = 2 * config.kv_dim() * budget.kv_element_bytes;
  in.context = context;
  in.hidden_size = config.hidden_size;
  in.attention_width = config.q_dim();
  in.activation_bytes = budget.kv_element_bytes;  // the activations' type is the cache's
  int64_t row_elements = 0;
  for (const TensorSpec& t : LayerTensors(config, 0)) {
    if (IsLinearWeight(t)) row_elements += t.shape[0] + t.shape[1];  // read in, write out
  }
  // Two residual adds with their norms (read two, write two), the gate's
  // product (read two, write one), RoPE on q and k, K and V written.
  row_elements += 8 * config.hidden_size + 3 * config.intermediate_size +
                  2 * (config.q_dim() + config.kv_dim()) + 2 * config.kv_dim();
  in.layer_row_bytes = row_elements * in.activation_bytes;
  in.max_batch_tokens = budget.max_batch_tokens;
  return in;
}

}  // namespace strata
