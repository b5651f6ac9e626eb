// The placement planner against brute force, on heterogeneous devices, with
// memory limits, manual splits and bad input.
#include "services/coordinator/planner.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/config.h"
#include "runtime/json.h"
#include "tests/test_util.h"
#include "tools/model_maker.h"

namespace strata {
namespace {

constexpr int64_t kMiB = 1 << 20;

PlanInput Uniform(int layers, int64_t layer_bytes, std::vector<DeviceSpec> devices) {
  PlanInput in;
  in.layer_bytes.assign(layers, layer_bytes);
  in.embedding_bytes = 2 * layer_bytes;
  in.final_norm_bytes = 4096;
  in.lm_head_bytes = 2 * layer_bytes;
  in.kv_bytes_per_layer = layer_bytes / 4;
  in.workspace_bytes = 8 * kMiB;
  in.devices = std::move(devices);
  return in;
}

// The slowest stage of the best split, by trying every split.
double BruteForce(const PlanInput& in) {
  const int d = static_cast<int>(in.devices.size());
  const int64_t n = static_cast<int64_t>(in.layer_bytes.size());
  double best = std::numeric_limits<double>::infinity();
  std::vector<int64_t> ends(d);
  std::function<void(int, int64_t)> rec = [&](int dev, int64_t begin) {
    if (dev == d - 1) {
      ends[dev] = n;
      std::vector<std::pair<int64_t, int64_t>> ranges;
      int64_t b = 0;
      for (int64_t e : ends) {
        ranges.emplace_back(b, e);
        b = e;
      }
      auto plan = PlanFromRanges(in, ranges);
      if (plan.ok()) best = std::min(best, plan->bottleneck);
      return;
    }
    for (int64_t e = begin + 1; e <= n - (d - 1 - dev); ++e) {
      ends[dev] = e;
      rec(dev + 1, e);
    }
  };
  rec(0, 0);
  return best;
}

TEST(PlannerTest, MatchesBruteForceOnRandomSmallCases) {
  std::mt19937 rng(7);
  int hosted = 0;  // cases that fit only with the embedding table in host memory
  for (int trial = 0; trial < 200; ++trial) {
    const int layers = 2 + static_cast<int>(rng() % 9);
    const int devices = 1 + static_cast<int>(rng() % std::min(4, layers));
    PlanInput in;
    for (int l = 0; l < layers; ++l) in.layer_bytes.push_back((1 + rng() % 50) * kMiB);
    in.embedding_bytes = (1 + rng() % 40) * kMiB;
    in.lm_head_bytes = (rng() % 2) * (1 + rng() % 40) * kMiB;
    in.tied_embeddings = in.lm_head_bytes == 0;
    in.final_norm_bytes = 4096;
    in.kv_bytes_per_layer = (rng() % 8) * kMiB;
    in.workspace_bytes = kMiB;
    for (int d = 0; d < devices; ++d) {
      in.devices.push_back({absl::StrCat("d", d), static_cast<int64_t>(60 + rng() % 400) * kMiB,
                            static_cast<int64_t>(rng() % 10) * kMiB, 0.5 + (rng() % 4) * 0.5});
    }
    double expect = BruteForce(in);
    auto plan = PlanPlacement(in);
    if (expect == std::numeric_limits<double>::infinity() && in.tied_embeddings && devices > 1) {
      // Then the first stage may keep the table in host memory.
      PlanInput host = in;
      host.host_embedding = true;
      expect = BruteForce(host);
      if (expect != std::numeric_limits<double>::infinity()) {
        ASSERT_TRUE(plan.ok()) << "trial " << trial << ": " << plan.status();
        EXPECT_TRUE(plan->host_embedding) << "trial " << trial;
        EXPECT_DOUBLE_EQ(plan->bottleneck, expect) << "trial " << trial;
        ++hosted;
        continue;
      }
    }
    if (expect == std::numeric_limits<double>::infinity()) {
      EXPECT_FALSE(plan.ok()) << "trial " << trial;
      EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
      continue;
    }
    EXPECT_FALSE(plan->host_embedding) << "trial " << trial;
    ASSERT_TRUE(plan.ok()) << "trial " << trial << ": " << plan.status();
    EXPECT_DOUBLE_EQ(plan->bottleneck, expect) << "trial " << trial;
    // Contiguous, complete, every stage within its device's memory.
    int64_t next = 0;
    for (const StagePlan& s : plan->stages) {
      EXPECT_EQ(s.begin, next);
      EXPECT_GT(s.end, s.begin);
      EXPECT_LE(s.need_bytes, s.usable_bytes);
      next = s.end;
    }
    EXPECT_EQ(next, layers);
    // Deterministic.
    auto again = PlanPlacement(in);
    ASSERT_TRUE(again.ok());
    for (size_t i = 0; i < plan->stages.size(); ++i) {
      EXPECT_EQ(again->stages[i].end, plan->stages[i].end);
    }
  }
  EXPECT_GT(hosted, 0);
}

TEST(PlannerTest, FasterDeviceTakesMoreLayers) {
  PlanInput in =
      Uniform(12, 100 * kMiB, {{"fast", 64LL << 30, 0, 2.0}, {"slow", 64LL << 30, 0, 1.0}});
  auto plan = PlanPlacement(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const int64_t fast = plan->stages[0].end - plan->stages[0].begin;
  const int64_t slow = plan->stages[1].end - plan->stages[1].begin;
  EXPECT_GT(fast, slow);
}

// Speed counts wherever the fast device sits: here last, where the LM head
// already weighs on it.
TEST(PlannerTest, AFasterLastDeviceStillTakesMoreLayers) {
  PlanInput in =
      Uniform(12, 100 * kMiB, {{"slow", 64LL << 30, 0, 1.0}, {"fast", 64LL << 30, 0, 3.0}});
  auto plan = PlanPlacement(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_GT(plan->stages[1].end - plan->stages[1].begin,
            plan->stages[0].end - plan->stages[0].begin);
}

// What a stage needs is its weights, its layers' KV budget and the
// workspace, exactly.
TEST(PlannerTest, NeedIsWeightsPlusKvPlusWorkspace) {
  PlanInput in = Uniform(6, 100 * kMiB, {{"a", 64LL << 30, 0, 1.0}, {"b", 64LL << 30, 0, 1.0}});
  auto plan = PlanFromRanges(in, {{0, 2}, {2, 6}});
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (const StagePlan& s : plan->stages) {
    EXPECT_EQ(s.kv_bytes, (s.end - s.begin) * in.kv_bytes_per_layer);
    EXPECT_EQ(s.need_bytes, s.weight_bytes + s.kv_bytes + in.workspace_bytes);
  }
  EXPECT_EQ(plan->stages[0].weight_bytes, 2 * 100 * kMiB + in.embedding_bytes);
  EXPECT_EQ(plan->stages[1].weight_bytes, 4 * 100 * kMiB + in.final_norm_bytes + in.lm_head_bytes);
}

TEST(PlannerTest, SmallDeviceIsLimitedByMemory) {
  // Device 1 can hold only two layers plus its KV and workspace.
  PlanInput in = Uniform(8, 100 * kMiB, {{"big", 8LL << 30, 0, 1.0}, {"small", 0, 0, 1.0}});
  in.lm_head_bytes = 0;
  in.final_norm_bytes = 0;
  in.devices[1].capacity_bytes = 2 * (100 + 25) * kMiB + in.workspace_bytes + kMiB;
  auto plan = PlanPlacement(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->stages[1].end - plan->stages[1].begin, 2);
  EXPECT_NE(plan->stages[0].reason.find("layer 6"), std::string::npos) << plan->stages[0].reason;
}

// A device whose usable memory equals a stage's need to the byte holds the
// stage; one byte less and the plan does not fit.
TEST(PlannerTest, AnExactFitIsTakenAndOneByteLessIsNot) {
  PlanInput in = Uniform(6, 100 * kMiB, {{"gpu0", 64LL << 30, kMiB, 1.0}});
  auto roomy = PlanPlacement(in);
  ASSERT_TRUE(roomy.ok()) << roomy.status();
  const int64_t need = roomy->stages[0].need_bytes;
  in.devices[0].capacity_bytes = need + kMiB;  // usable = capacity - reserve = need
  auto exact = PlanPlacement(in);
  ASSERT_TRUE(exact.ok()) << exact.status();
  EXPECT_EQ(exact->stages[0].need_bytes, exact->stages[0].usable_bytes);
  EXPECT_TRUE(PlanFromRanges(in, {{0, 6}}).ok());
  in.devices[0].capacity_bytes -= 1;
  EXPECT_FALSE(PlanPlacement(in).ok());
  EXPECT_FALSE(PlanFromRanges(in, {{0, 6}}).ok());

  // Two devices, the second sized exactly for the last two layers and the head.
  PlanInput two = Uniform(6, 100 * kMiB, {{"a", 64LL << 30, 0, 1.0}, {"b", 64LL << 30, 0, 1.0}});
  auto split = PlanFromRanges(two, {{0, 4}, {4, 6}});
  ASSERT_TRUE(split.ok()) << split.status();
  two.devices[1].capacity_bytes = split->stages[1].need_bytes;
  EXPECT_TRUE(PlanFromRanges(two, {{0, 4}, {4, 6}}).ok());
  two.devices[1].capacity_bytes -= 1;
  EXPECT_FALSE(PlanFromRanges(two, {{0, 4}, {4, 6}}).ok());

  // When nothing fits, the report marks the overloaded device, not the one
  // that fits exactly (two layers on two devices: one split only).
  PlanInput pair = Uniform(2, 100 * kMiB, {{"a", 64LL << 30, 0, 1.0}, {"b", 64LL << 30, 0, 1.0}});
  auto one_each = PlanFromRanges(pair, {{0, 1}, {1, 2}});
  ASSERT_TRUE(one_each.ok()) << one_each.status();
  pair.devices[0].capacity_bytes = one_each->stages[0].need_bytes - 1;
  pair.devices[1].capacity_bytes = one_each->stages[1].need_bytes;
  auto none = PlanPlacement(pair);
  ASSERT_FALSE(none.ok());
  const std::string msg(none.status().message());
  const size_t line_b = msg.find("device 1 (b)");
  ASSERT_NE(line_b, std::string::npos) << msg;
  EXPECT_NE(msg.substr(0, line_b).find("does not fit"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("<-- does not fit", line_b), std::string::npos) << msg;
}

TEST(PlannerTest, DoesNotFitListsEveryDevice) {
  PlanInput in = Uniform(
      8, 1024 * kMiB, {{"gpu0", 3LL << 30, 512 * kMiB, 1.0}, {"gpu1", 3LL << 30, 512 * kMiB, 1.0}});
  auto plan = PlanPlacement(in);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string msg(plan.status().message());
  EXPECT_NE(msg.find("device 0 (gpu0)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("device 1 (gpu1)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not fit"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2.50 GiB"), std::string::npos) << msg;  // usable = 3 GiB - 512 MiB
}

TEST(PlannerTest, ManualRangesAreValidated) {
  auto ranges = ParseLayerRanges("0-9,10-21", 22);
  ASSERT_TRUE(ranges.ok());
  EXPECT_EQ(*ranges, (std::vector<std::pair<int64_t, int64_t>>{{0, 10}, {10, 22}}));
  for (const char* bad : {"0-9,11-21", "0-9", "0-9,10-22", "1-21", "0-x", "5-3,4-21", ""}) {
    auto r = ParseLayerRanges(bad, 22);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("layers"), std::string::npos) << r.status();
  }
  PlanInput in = Uniform(4, 100 * kMiB, {{"a", 1LL << 30, 0, 1}, {"b", 1LL << 30, 0, 1}});
  EXPECT_FALSE(PlanFromRanges(in, {{0, 4}}).ok());  // one range, two devices
  in.devices[0].capacity_bytes = 200 * kMiB;
  auto overfull = PlanFromRanges(in, {{0, 3}, {3, 4}});
  ASSERT_FALSE(overfull.ok());
  EXPECT_NE(overfull.status().message().find("device 0 (a)"), std::string::npos);
}

TEST(PlannerTest, BadDevicesAndSizes) {
  EXPECT_FALSE(PlanPlacement(Uniform(2, kMiB, {})).ok());
  EXPECT_FALSE(PlanPlacement(Uniform(2, kMiB, {{"a", kMiB << 10, 0, 0}})).ok());
  auto too_many = PlanPlacement(
      Uniform(2, kMiB, {{"a", 1LL << 30, 0, 1}, {"b", 1LL << 30, 0, 1}, {"c", 1LL << 30, 0, 1}}));
  ASSERT_FALSE(too_many.ok());
  EXPECT_NE(too_many.status().message().find("only 2 decoder layers"), std::string::npos);
  EXPECT_EQ(*ParseBytes("24GiB"), 24LL << 30);
  EXPECT_EQ(*ParseBytes("1.5GB"), 1500000000LL);
  EXPECT_EQ(*ParseBytes("512MiB"), 512LL << 20);
  EXPECT_EQ(*ParseBytes("4096"), 4096);
  for (const char* bad : {"", "GiB", "-1GiB", "12XB", "abc"})
    EXPECT_FALSE(ParseBytes(bad).ok()) << bad;
}

TEST(PlannerTest, DeviceMapNamesEveryModule) {
  auto plan = PlanPlacement(Uniform(4, kMiB, {{"a", 1LL << 30, 0, 1}, {"b", 1LL << 30, 0, 1}}));
  ASSERT_TRUE(plan.ok());
  const std::string map = FormatDeviceMap(*plan);
  EXPECT_EQ(map.find("{\"model.embed_tokens\": 0, \"model.layers.0\": 0"), 0u) << map;
  EXPECT_NE(map.find("\"lm_head\": 1}"), std::string::npos) << map;
}

// `strata plan` on a generated checkpoint: the map, the reasons, and the
// does-not-fit report.
TEST(PlanCommandTest, PrintsTheMapAndExplainsFailures) {
  const std::string& model = testing::TestModel("llama");
  std::string out;
  ASSERT_EQ(testing::RunCommand(std::string(STRATA_BINARY) + " plan --model " + model +
                                    " --devices 1GiB,1GiB,512MiB --speeds 1,1,0.5",
                                &out),
            0)
      << out;
  EXPECT_NE(out.find("device_map = {\"model.embed_tokens\": 0"), std::string::npos) << out;
  EXPECT_NE(out.find("last stage"), std::string::npos) << out;
  ASSERT_NE(
      testing::RunCommand(
          std::string(STRATA_BINARY) + " plan --model " + model + " --devices 100KiB,100KiB", &out),
      0);
  EXPECT_NE(out.find("does not fit"), std::string::npos) << out;
  EXPECT_NE(out.find("device 1 (device1)"), std::string::npos) << out;
  EXPECT_EQ(testing::RunCommand(std::string(STRATA_BINARY) + " plan --model " + model +
                                    " --devices 1GiB,1GiB --layers 0-1,3-3",
                                &out),
            2)
      << out;
  EXPECT_NE(out.find("should start at layer 2"), std::string::npos) << out;
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// Bytes of every tensor in a model folder, read from the safetensors headers
// by this test's own parser (8-byte length, JSON header, data_offsets).
int64_t CheckpointTensorBytes(const std::string& dir) {
  int64_t total = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    uint64_t n = 0;
    in.read(reinterpret_cast<char*>(&n), 8);
    std::string header(n, '\0');
    in.read(header.data(), static_cast<std::streamsize>(n));
    auto json = ParseJson(header, entry.path().string());
    EXPECT_TRUE(json.ok()) << json.status();
    int64_t end = 0;  // of the data section
    for (const auto& [name, t] : json->object()) {
      if (name == "__metadata__") continue;
      const auto& off = t.Find("data_offsets")->array();
      total += off[1].int_value() - off[0].int_value();
      end = std::max(end, off[1].int_value());
    }
    // The file holds exactly the header and the data (sparse or not).
    EXPECT_EQ(std::filesystem::file_size(entry.path()), 8 + n + static_cast<uint64_t>(end));
  }
  return total;
}

// The published shapes: the planner accounts for exactly the bytes their
// checkpoints hold, which are the models' published parameter counts in bf16.
TEST(PlannerTest, PublishedShapesAccountForEveryCheckpointByte) {
  struct Shape {
    const char* flavour;
    const char* size;
    int64_t params;  // Qwen2.5-3B: 3.09B; HY-MT1.5-1.8B: 1.79B (tied embeddings)
  };
  for (const Shape& s : {Shape{"qwen2", "qwen2.5-3b", 3085938688},
                         Shape{"hunyuan-dense", "hy-mt1.5-1.8b", 1791080448}}) {
    const std::string dir = testing::FreshDir(s.size);
    ModelSpec spec;
    spec.flavour = s.flavour;
    spec.size = s.size;
    spec.init = "zeros";  // sparse: the sizes without the disk space
    spec.shards = 2;
    ASSERT_TRUE(MakeModel(spec, dir).ok());
    auto config = LoadModelConfig(dir);
    ASSERT_TRUE(config.ok()) << config.status();
    auto input = PlanInputForModel(dir, *config, {{"d0", int64_t{64} << 30}}, {});
    ASSERT_TRUE(input.ok()) << input.status();
    int64_t planned = input->embedding_bytes + input->final_norm_bytes + input->lm_head_bytes;
    for (int64_t b : input->layer_bytes) planned += b;
    EXPECT_EQ(planned, CheckpointTensorBytes(dir)) << s.size;
    EXPECT_EQ(planned, 2 * s.params) << s.size;
    EXPECT_TRUE(input->tied_embeddings) << s.size;
    // On one device the stage holds the checkpoint once (the tied head is the
    // embedding, not a copy).
    auto plan = PlanPlacement(*input);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->stages[0].weight_bytes, planned) << s.size;
  }
}

}  // namespace
}  // namespace strata
