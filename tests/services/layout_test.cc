// The layout search (replicas x stages) against brute force over every
// (stages, cuts, micro-batch) on random heterogeneous devices; the device
// table; and `strata plan` on the published shapes.
#include "services/coordinator/layout.h"

#include <functional>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/config.h"
#include "runtime/device_table.h"
#include "tests/test_util.h"
#include "tools/model_maker.h"

namespace strata {
namespace {

constexpr int64_t kMiB = 1 << 20;

// The best throughput of one group by trying every split and micro-batch.
double BruteGroup(const PlanInput& in, const std::vector<int>& group, const LayoutOptions& o) {
  const int s = static_cast<int>(group.size());
  const int64_t n = static_cast<int64_t>(in.layer_bytes.size());
  double best = 0;
  const int64_t cap = std::min<int64_t>(in.max_batch_tokens, o.max_sequences / s);
  if (cap < 1) return 0;
  for (int64_t m : MicroBatchGrid(cap)) {
    std::vector<int64_t> ends(s);
    std::function<void(int, int64_t)> rec = [&](int d, int64_t begin) {
      if (d == s - 1) {
        ends[d] = n;
        double slowest = 0;
        int64_t b = 0;
        for (int k = 0; k < s; ++k) {
          const DeviceSpec& dev = in.devices[group[k]];
          if (StageNeedBytes(in, b, ends[k], m * s) > dev.capacity_bytes - dev.reserve_bytes) {
            return;
          }
          slowest = std::max(slowest, StageSeconds(in, dev, b, ends[k], m, o));
          b = ends[k];
        }
        best = std::max(best, static_cast<double>(m) / slowest);
        return;
      }
      for (int64_t e = begin + 1; e <= n - (s - 1 - d); ++e) {
        ends[d] = e;
        rec(d + 1, e);
      }
    };
    rec(0, 0);
  }
  return best;
}

// The best layout's throughput: every S, its consecutive groups.
double BruteLayout(const PlanInput& in, const LayoutOptions& o) {
  const int n = static_cast<int>(in.devices.size());
  double best = 0;
  for (int s = 1; s <= std::min<int>(n, static_cast<int>(in.layer_bytes.size())); ++s) {
    double total = 0;
    for (int g = 0; (g + 1) * s <= n; ++g) {
      std::vector<int> group;
      for (int d = g * s; d < (g + 1) * s; ++d) group.push_back(d);
      total += BruteGroup(in, group, o);
    }
    best = std::max(best, total);
  }
  return best;
}

PlanInput RandomInput(std::mt19937& rng) {
  PlanInput in;
  const int layers = 2 + static_cast<int>(rng() % 7);
  for (int l = 0; l < layers; ++l) {
    in.layer_bytes.push_back((1 + rng() % 40) * kMiB);
    in.layer_params.push_back(in.layer_bytes.back() / 2);
  }
  in.embedding_bytes = (1 + rng() % 30) * kMiB;
  in.lm_head_bytes = (rng() % 2) * (1 + rng() % 30) * kMiB;
  in.tied_embeddings = in.lm_head_bytes == 0;
  in.lm_head_params = (in.tied_embeddings ? in.embedding_bytes : in.lm_head_bytes) / 2;
  in.final_norm_bytes = 4096;
  in.kv_token_bytes = 512 * (1 + rng() % 4);
  in.context = 256 * (1 + rng() % 8);
  in.hidden_size = 1024;
  in.max_batch_tokens = 64;
  in.workspace_bytes = kMiB;
  const int devices = 1 + static_cast<int>(rng() % 5);
  for (int d = 0; d < devices; ++d) {
    DeviceSpec dev;
    dev.name = absl::StrCat("d", d);
    dev.capacity_bytes = static_cast<int64_t>(40 + rng() % 300) * kMiB;
    dev.reserve_bytes = static_cast<int64_t>(rng() % 8) * kMiB;
    dev.bandwidth = (1 + rng() % 4) * 100e9;
    dev.flops = (1 + rng() % 4) * 50e12;
    in.devices.push_back(dev);
  }
  return in;
}

TEST(LayoutTest, MatchesBruteForceOverStagesCutsAndMicroBatches) {
  std::mt19937 rng(11);
  int fitted = 0, multi_replica = 0, multi_stage = 0, with_load = 0;
  // Whether the load moves any cut of a forced one-pipeline layout.
  auto layout_stages_differ = [](const PlanInput& in, LayoutOptions o) {
    o.replicas = 1;
    o.stages = static_cast<int>(std::min(in.devices.size(), in.layer_bytes.size()));
    absl::StatusOr<Layout> with = PlanLayout(in, o);
    o.prompt_tokens = o.output_tokens = 0;
    absl::StatusOr<Layout> without = PlanLayout(in, o);
    if (!with.ok() || !without.ok()) return 0;
    for (size_t i = 0; i < with->replicas[0].plan.stages.size(); ++i) {
      if (with->replicas[0].plan.stages[i].end != without->replicas[0].plan.stages[i].end) return 1;
    }
    return 0;
  };
  for (int trial = 0; trial < 150; ++trial) {
    const PlanInput in = RandomInput(rng);
    LayoutOptions o;
    o.max_sequences = 16 + static_cast<int64_t>(rng() % 200);
    o.allow_host_embedding = false;  // the brute force keeps every table on a device
    if (trial % 2 == 1) {            // half of them planned for a load with prompts
      o.prompt_tokens = 1 + static_cast<int64_t>(rng() % 300);
      o.output_tokens = 1 + static_cast<int64_t>(rng() % 100);
      with_load += layout_stages_differ(in, o);
    }
    const double expect = BruteLayout(in, o);
    absl::StatusOr<Layout> layout = PlanLayout(in, o);
    if (expect == 0) {
      EXPECT_FALSE(layout.ok()) << "trial " << trial;
      EXPECT_EQ(layout.status().code(), absl::StatusCode::kFailedPrecondition) << trial;
      continue;
    }
    ASSERT_TRUE(layout.ok()) << "trial " << trial << ": " << layout.status();
    ++fitted;
    multi_replica += layout->replicas.size() > 1;
    multi_stage += layout->stages > 1;
    EXPECT_NEAR(layout->tokens_per_second, expect, expect * 1e-9) << "trial " << trial;
    // The reported replicas add up, keep within memory and cover every layer.
    double sum = 0;
    for (const ReplicaPlan& r : layout->replicas) {
      sum += r.tokens_per_second;
      EXPECT_EQ(static_cast<int>(r.plan.stages.size()), layout->stages);
      EXPECT_EQ(r.in_flight, r.micro_batch * layout->stages);
      EXPECT_LE(r.in_flight, o.max_sequences);
      EXPECT_GE(r.kv_sequences, r.in_flight) << "the modelled sequences fit the sized cache";
      int64_t next = 0;
      for (const StagePlan& s : r.plan.stages) {
        EXPECT_EQ(s.begin, next);
        EXPECT_LE(s.need_bytes, s.usable_bytes);
        next = s.end;
      }
      EXPECT_EQ(next, static_cast<int64_t>(in.layer_bytes.size()));
    }
    EXPECT_NEAR(sum, layout->tokens_per_second, sum * 1e-12);
    EXPECT_EQ(layout->replicas.size() * layout->stages + layout->spares.size(), in.devices.size());
  }
  // The cases exercise every kind of answer.
  EXPECT_GT(fitted, 60);
  EXPECT_GT(multi_replica, 10);
  EXPECT_GT(multi_stage, 10);
  EXPECT_GT(with_load, 3) << "the load's prefill moves cuts in some cases";
}

PlanInput Uniform(int layers, int devices, int64_t capacity) {
  PlanInput in;
  in.layer_bytes.assign(layers, 100 * kMiB);
  in.layer_params.assign(layers, 50 * kMiB);
  in.embedding_bytes = 200 * kMiB;
  in.lm_head_bytes = 200 * kMiB;
  in.lm_head_params = 100 * kMiB;
  in.final_norm_bytes = 4096;
  in.kv_token_bytes = 4096;
  in.context = 4096;
  in.hidden_size = 2048;
  in.workspace_bytes = 64 * kMiB;
  for (int d = 0; d < devices; ++d) {
    in.devices.push_back({absl::StrCat("g", d), capacity, 0, 1.0, 1e12, 100e12});
  }
  return in;
}

TEST(LayoutTest, AModelThatFitsOneDeviceGetsOneReplicaPerDevice) {
  const PlanInput in = Uniform(16, 4, int64_t{16} << 30);
  auto layout = PlanLayout(in, {});
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->stages, 1);
  EXPECT_EQ(layout->replicas.size(), 4u);
  ASSERT_EQ(layout->candidates.size(), 4u);
  EXPECT_NE(layout->candidates[0].verdict.find("chosen"), std::string::npos);
  EXPECT_NE(layout->candidates[3].verdict.find("of the chosen"), std::string::npos);
}

TEST(LayoutTest, AModelTooBigForOneDeviceGetsStages) {
  // 1.8 GiB of weights on 1 GiB devices: two stages at least.
  const PlanInput in = Uniform(16, 4, int64_t{1} << 30);
  auto layout = PlanLayout(in, {});
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_GE(layout->stages, 2);
  EXPECT_NE(layout->candidates[0].verdict.find("does not fit"), std::string::npos);
}

// A tied-embedding model whose layers fit two devices only when the first
// one does not also hold the embedding table: it stays in host memory there.
TEST(LayoutTest, ATiedModelOnSmallDevicesKeepsItsEmbeddingOnTheHost) {
  // 8 layers of 100 MiB and a 400 MiB table on two 700 MiB devices: the last
  // stage holds the table as its head, so it takes at most 2 layers; the
  // first, holding the table too, at most 2 more. Without it there, 6.
  PlanInput in = Uniform(8, 2, 700 * kMiB);
  in.embedding_bytes = 400 * kMiB;
  in.lm_head_bytes = 0;
  in.tied_embeddings = true;
  in.kv_token_bytes = 256;
  LayoutOptions o;
  o.max_sequences = 2;
  o.allow_host_embedding = false;
  EXPECT_EQ(PlanLayout(in, o).status().code(), absl::StatusCode::kFailedPrecondition);
  o.allow_host_embedding = true;
  auto layout = PlanLayout(in, o);
  ASSERT_TRUE(layout.ok()) << layout.status();
  ASSERT_EQ(layout->replicas.size(), 1u);
  EXPECT_TRUE(layout->replicas[0].host_embedding);
  const StagePlan& first = layout->replicas[0].plan.stages[0];
  EXPECT_EQ(first.weight_bytes, (first.end - first.begin) * 100 * kMiB);  // no table
  EXPECT_NE(first.reason.find("host memory"), std::string::npos) << first.reason;
  // The single-pipeline planner does the same.
  in.kv_bytes_per_layer = 2 * in.context * in.kv_token_bytes;
  auto plan = PlanPlacement(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->host_embedding);
  // An untied model's table is not needed twice: nothing to gain, no change.
  in.tied_embeddings = false;
  in.lm_head_bytes = 400 * kMiB;
  EXPECT_FALSE(PlanPlacement(in).ok());
}

TEST(LayoutTest, ForcedLayoutsAndBadOptions) {
  const PlanInput in = Uniform(16, 4, int64_t{16} << 30);
  LayoutOptions o;
  o.replicas = 1;
  o.stages = 4;
  auto forced = PlanLayout(in, o);
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_EQ(forced->replicas.size(), 1u);
  EXPECT_EQ(forced->stages, 4);
  o.replicas = 1;
  o.stages = 2;
  forced = PlanLayout(in, o);
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_EQ(forced->spares.size(), 2u);
  o.replicas = 3;
  o.stages = 2;
  EXPECT_EQ(PlanLayout(in, o).status().code(), absl::StatusCode::kInvalidArgument);
  o.replicas = 2;
  o.stages = 0;
  EXPECT_NE(PlanLayout(in, o).status().message().find("both"), std::string::npos);
  // Forced onto devices too small for it.
  const PlanInput small = Uniform(16, 4, int64_t{1} << 30);
  o.replicas = 4;
  o.stages = 1;
  auto none = PlanLayout(small, o);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(none.status().message().find("only 0 replica(s)"), std::string::npos) << none.status();
}

TEST(LayoutTest, TheStepModelAddsBytesFlopsAndHops) {
  PlanInput in = Uniform(4, 1, int64_t{16} << 30);
  LayoutOptions o;
  o.hop_seconds = 1e-4;
  const DeviceSpec& dev = in.devices[0];
  // All four layers, last stage: weights + head read, KV over half the
  // context, 2 FLOPs per parameter per sequence, and one hop.
  const double bytes = 4 * 100.0 * kMiB + 200.0 * kMiB + 4096 + 8 * (4 * 4096 * 4096 * 0.5);
  const double flops = 2.0 * (4 * 50.0 * kMiB + 100.0 * kMiB) * 8;
  EXPECT_NEAR(StageSeconds(in, dev, 0, 4, 8, o), bytes / 1e12 + flops / 100e12 + 1e-4, 1e-12);
  // A stage that is not last also sends its activations (f32).
  const double first = 100.0 * kMiB + 8 * (4096 * 4096 * 0.5);
  EXPECT_NEAR(StageSeconds(in, dev, 0, 1, 8, o),
              first / 1e12 + 2.0 * 50 * kMiB * 8 / 100e12 + 1e-4 + 8.0 * 2048 * 4 / 25e9, 1e-12);
}

TEST(LayoutTest, ARequestReadsWeightsPerStepAndTheHeadWhenItSamples) {
  PlanInput in = Uniform(4, 1, int64_t{16} << 30);
  in.max_batch_tokens = 512;
  in.attention_width = 2048;
  in.layer_row_bytes = 1000;
  LayoutOptions o;
  o.hop_seconds = 1e-4;
  o.prompt_tokens = 1024;
  o.output_tokens = 4;
  const DeviceSpec& dev = in.devices[0];
  // A middle stage, one layer, decoding 8 at a time: the prompt's two
  // chunks carry its 3 decode tokens, so two steps read the layer; 1027 rows
  // write their K and V, move 1000 bytes of activations each through the
  // layer, are multiplied (2 FLOPs per parameter) and sent on;
  // the chunks read 512 and 1024 keys once each, for 512 queries each, and
  // the decode tokens 1025.5 on average (4 FLOPs per query, key and
  // attention dim).
  const double decode_keys = 3 * (1024 + 2);
  const double read_keys = 512 + 1024 + decode_keys;
  const double keys = 512.0 * 512 + 512.0 * 1024 + decode_keys;
  const double mid = (2 * 100.0 * kMiB + (1027 + read_keys) * 4096 + 1027 * 1000.0) / 1e12 +
                     (2.0 * 50 * kMiB * 1027 + 4.0 * keys * 2048) / 100e12 + 2e-4 +
                     1027.0 * 2048 * 4 / 25e9;
  EXPECT_NEAR(RequestSeconds(in, dev, 1, 2, 8, o), mid, 1e-12);
  // The last stage reads the head in both steps (both sample) and
  // multiplies the 4 sampled rows by it; it sends nothing on.
  const double last =
      (2 * (100.0 * kMiB + 200.0 * kMiB + 4096) + (1027 + read_keys) * 4096 + 1027 * 1000.0) /
          1e12 +
      (2.0 * 50 * kMiB * 1027 + 4.0 * keys * 2048 + 4 * 2.0 * 100 * kMiB) / 100e12 + 2e-4;
  EXPECT_NEAR(RequestSeconds(in, dev, 3, 4, 8, o), last, 1e-12);
  // A micro-batch of 8 completed tokens is two requests.
  EXPECT_NEAR(StageSeconds(in, dev, 1, 2, 8, o), 2 * mid, 1e-12);
  // Short prompts without decoding share a step, and its one head read.
  o.prompt_tokens = 128;
  o.output_tokens = 1;
  const double short_last =
      (0.25 * (100.0 * kMiB + 200.0 * kMiB + 4096) + (128 + 128.0) * 4096 + 128 * 1000.0) / 1e12 +
      (2.0 * 50 * kMiB * 128 + 4.0 * 128 * 128 * 2048 + 2.0 * 100 * kMiB) / 100e12 + 0.25e-4;
  EXPECT_NEAR(RequestSeconds(in, dev, 3, 4, 8, o), short_last, 1e-12);
  // Long completions: 63 decode tokens in micro-batches of 8 are 7.875
  // steps, each reading the layers and the head; the short prompt rides along.
  o.prompt_tokens = 16;
  o.output_tokens = 64;
  const double dkeys = 16.0 * 16 + 63 * (16 + 32);
  const double decode_last =
      (7.875 * (100.0 * kMiB + 200.0 * kMiB + 4096) + (79 + 16 + 63 * (16 + 32)) * 4096 +
       79 * 1000.0) /
          1e12 +
      (2.0 * 50 * kMiB * 79 + 4.0 * dkeys * 2048 + 64 * 2.0 * 100 * kMiB) / 100e12 + 7.875e-4;
  EXPECT_NEAR(RequestSeconds(in, dev, 3, 4, 8, o), decode_last, 1e-12);
}

// On decode the LM head, read whole every step, weighs as much as several
// layers, so the last stage takes few; on long prompts it is still read every
// step, but beside a whole chunk's FLOPs, and the cuts even out the layers.
TEST(LayoutTest, LongPromptsGiveTheLastStageMoreLayers) {
  PlanInput in = Uniform(32, 8, int64_t{16} << 30);
  in.embedding_bytes = 500 * kMiB;  // a tied 500 MiB table: 5 layers' bytes
  in.lm_head_bytes = 0;
  in.lm_head_params = 250 * kMiB;
  in.tied_embeddings = true;
  in.attention_width = 2048;
  in.activation_bytes = 2;
  in.kv_token_bytes = 256;  // short contexts: decode reads mostly weights
  in.context = 1040;
  LayoutOptions o;
  o.replicas = 1;
  o.stages = 8;
  o.max_sequences = 128;
  auto decode = PlanLayout(in, o);
  ASSERT_TRUE(decode.ok()) << decode.status();
  o.prompt_tokens = 1024;
  o.output_tokens = 4;
  auto prefill = PlanLayout(in, o);
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  auto last_layers = [](const Layout& l) {
    const StagePlan& s = l.replicas[0].plan.stages.back();
    return s.end - s.begin;
  };
  EXPECT_EQ(last_layers(*decode), 1);
  EXPECT_EQ(last_layers(*prefill), 4);
  auto most_layers = [](const Layout& l) {
    int64_t most = 0;
    for (const StagePlan& s : l.replicas[0].plan.stages) most = std::max(most, s.end - s.begin);
    return most;
  };
  EXPECT_EQ(most_layers(*decode), 5);
  EXPECT_EQ(most_layers(*prefill), 4);
  EXPECT_NE(FormatLayout(*prefill, in).find("planned for 1024-token prompts and 4-token"),
            std::string::npos);
  // Half a load is no load.
  o.output_tokens = 0;
  auto half = PlanLayout(in, o);
  EXPECT_EQ(half.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(half.status().message().find("prompt_tokens, output_tokens"), std::string::npos);
}

TEST(DeviceTableTest, NamesAndCudaNames) {
  auto a100 = FindDevice("A100-40GB");
  ASSERT_TRUE(a100.ok()) << a100.status();
  EXPECT_EQ(a100->name, "a100-40gb");
  EXPECT_EQ(a100->memory_bytes, int64_t{40} << 30);
  EXPECT_DOUBLE_EQ(a100->bandwidth, 1555e9);
  EXPECT_EQ(FindDevice("tpu-v5").status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(FindDevice("tpu-v5").status().message().find("rtx-4090"), std::string::npos);
  struct Case {
    const char* cuda;
    int64_t total;
    const char* want;  // "" = not in the table
  };
  for (const Case& c :
       {Case{"NVIDIA A100-SXM4-40GB", 42'505'273'344, "a100-40gb"},
        Case{"NVIDIA A100-SXM4-80GB", 85'899'345'920, "a100-80gb"},
        Case{"NVIDIA A100 80GB PCIe", 85'100'000'000, "a100-80gb"},
        Case{"NVIDIA H100 80GB HBM3", 85'520'000'000, "h100-80gb"},
        Case{"NVIDIA H200", 150'754'820'096, "h200"}, Case{"NVIDIA L4", 24'152'899'584, "l4"},
        Case{"NVIDIA A10", 24'146'608'128, "a10"},
        Case{"NVIDIA GeForce RTX 3090", 25'769'803'776, "rtx-3090"},
        Case{"NVIDIA GeForce RTX 4090", 25'757'220'864, "rtx-4090"},
        Case{"NVIDIA RTX A6000", 51'527'024'640, "rtx-a6000"},
        Case{"NVIDIA L40S", 48'000'000'000, ""}, Case{"Tesla T4", 16'000'000'000, ""}}) {
    auto got = MatchCudaDevice(c.cuda, c.total);
    EXPECT_EQ(got.has_value() ? got->name : "", c.want) << c.cuda;
  }
}

// `strata plan` on the published shapes, as a user runs it.
class PlanShapesTest : public ::testing::Test {
 protected:
  static std::string Shape(const char* flavour, const char* size) {
    const std::string dir = testing::FreshDir(size);
    ModelSpec spec;
    spec.flavour = flavour;
    spec.size = size;
    spec.init = "zeros";  // sparse: the sizes without the disk space
    EXPECT_TRUE(MakeModel(spec, dir).ok());
    return dir;
  }
  static std::string Plan(const std::string& model, const std::string& flags, int* rc) {
    std::string out;
    *rc = testing::RunCommand(std::string(STRATA_BINARY) + " plan --model " + model + " " + flags,
                              &out);
    return out;
  }
};

TEST_F(PlanShapesTest, HyMtOnFourA100sIsFourReplicas) {
  const std::string model = Shape("hunyuan-dense", "hy-mt1.5-1.8b");
  int rc = 0;
  const std::string out = Plan(model, "--devices a100-40gb*4", &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("layout: 4 replica(s) x 1 stage(s) on 4 of 4 device(s)"), std::string::npos)
      << out;
  EXPECT_NE(out.find("1 x 4"), std::string::npos) << out;
  EXPECT_NE(out.find("4 x 1"), std::string::npos) << out;
  EXPECT_NE(out.find("chosen: the most tokens per second"), std::string::npos) << out;
  // Forcing the pipeline shows its cost beside the chosen one's.
  const std::string forced = Plan(model, "--devices a100-40gb*4 --replicas 1 --stages 4", &rc);
  ASSERT_EQ(rc, 0) << forced;
  EXPECT_NE(forced.find("layout: 1 replica(s) x 4 stage(s)"), std::string::npos) << forced;
  // Planned for long prompts in 2048-token steps, the pipeline's last stage
  // takes as many layers as the others (on decode: one): the head is read
  // once per step beside a whole chunk, not once per token.
  const std::string load = Plan(model,
                                "--devices a100-40gb*8 --replicas 1 --stages 8 --context 1040 "
                                "--max-batch-tokens 2048 --plan-prompt-tokens 1024 "
                                "--plan-output-tokens 4",
                                &rc);
  ASSERT_EQ(rc, 0) << load;
  EXPECT_NE(load.find("planned for 1024-token prompts and 4-token completions"), std::string::npos)
      << load;
  EXPECT_NE(load.find("layers  28-31"), std::string::npos) << load;
}

TEST_F(PlanShapesTest, QwenThreeBillionOnTwoSmallDevicesIsOnePipeline) {
  const std::string model = Shape("qwen2", "qwen2.5-3b");
  int rc = 0;
  const std::string out = Plan(model, "--devices 4GiB,4GiB", &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("layout: 1 replica(s) x 2 stage(s)"), std::string::npos) << out;
  EXPECT_NE(out.find("does not fit"), std::string::npos) << out;  // the 1-stage candidate
  // 2 x 2 GiB cannot hold 6 GB of weights.
  const std::string small = Plan(model, "--devices 2GiB*2", &rc);
  EXPECT_NE(rc, 0) << small;
  EXPECT_NE(small.find("no layout fits"), std::string::npos) << small;
  // Bad device lists name the entry.
  const std::string bad = Plan(model, "--devices a100-40gb,warp-drive", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(bad.find("--devices[1]"), std::string::npos) << bad;
  const std::string half = Plan(model, "--devices 4GiB*2 --plan-prompt-tokens 1024", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(half.find("--plan-prompt-tokens, --plan-output-tokens"), std::string::npos) << half;
  const std::string rows = Plan(model, "--devices 4GiB*2 --max-decode-rows -2", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(rows.find("--max-decode-rows"), std::string::npos) << rows;
  const std::string fraction = Plan(model, "--devices 4GiB*2 --memory-fraction 1.5", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(fraction.find("--memory-fraction"), std::string::npos) << fraction;
}

}  // namespace
}  // namespace strata
