// KV accounting under random traffic: the real scheduler drives two real
// stages of a tiny model (layers [0, 2) and [2, 4), each with its own paged
// KV cache sized for max_sequences x max_context, as the planner sizes
// workers) through random admissions, chunked prefills, decodes, up to two
// micro-batches in flight, cancellations, finishes and failover replays.
// After every step, on every stage:
//   - every position the step wrote lies in a block reserved for its sequence;
//   - the blocks held by sequences are disjoint and add up to what the free
//     list is missing, never more than the capacity;
//   - the scheduler never runs more sequences than its budget, and no stage
//     holds more;
//   - no step is refused for want of KV (the budget always fits);
// and once every sequence has ended, every block is free again.
#include <algorithm>
#include <cstdio>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/config.h"
#include "runtime/stage.h"
#include "services/coordinator/scheduler.h"
#include "tests/test_util.h"

namespace strata {
namespace {

constexpr int64_t kMaxSequences = 4, kMaxContext = 96, kBatchTokens = 24;
constexpr int kSteps = 10'000;

class KvPropertyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TestModel("llama");
    auto config = LoadModelConfig(dir_);
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *config;
    StageOptions o;
    o.threads = 1;
    o.max_batch_tokens = kBatchTokens;
    o.max_context = kMaxContext;
    o.max_sequences = kMaxSequences;
    const int64_t cut = config_.num_layers / 2;
    for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, cut}, {cut, config_.num_layers}}) {
      auto stage = Stage::Load(dir_, config_, begin, end, o);
      ASSERT_TRUE(stage.ok()) << stage.status();
      stages_.push_back(std::move(*stage));
    }
  }

  // The invariants of one stage after a step that wrote `written`
  // (sequence -> one past the last position written).
  void CheckStage(int s, const std::map<uint64_t, int64_t>& written, int64_t step) {
    const KvCache& kv = stages_[s]->kv_cache();
    for (const auto& [seq, end] : written) {
      ASSERT_TRUE(kv.Has(seq)) << "stage " << s << " step " << step << ": sequence " << seq;
      ASSERT_GE(kv.Length(seq), end) << "stage " << s << " step " << step << ": sequence " << seq;
      ASSERT_GE(static_cast<int64_t>(kv.BlockTable(seq).size()) * KvCache::kBlockSize, end)
          << "stage " << s << " step " << step << ": sequence " << seq
          << " wrote past its reserved blocks";
    }
    std::set<int32_t> held;
    int64_t count = 0;
    for (uint64_t seq : kv.SequenceIds()) {
      const auto& table = kv.BlockTable(seq);
      ASSERT_EQ(static_cast<int64_t>(table.size()), kv.BlocksNeeded(kv.Length(seq)))
          << "stage " << s << " step " << step << ": sequence " << seq;
      for (int32_t b : table) {
        ASSERT_TRUE(b >= 0 && b < kv.total_blocks()) << "block " << b;
        ASSERT_TRUE(held.insert(b).second)
            << "stage " << s << " step " << step << ": block " << b << " held twice";
      }
      count += static_cast<int64_t>(table.size());
    }
    ASSERT_EQ(count, kv.total_blocks() - kv.free_blocks()) << "stage " << s << " step " << step;
    ASSERT_LE(kv.num_sequences(), kMaxSequences) << "stage " << s << " step " << step;
  }

  // Runs `step` through both stages as the workers would (drops first), and
  // returns the sampled tokens.
  std::vector<std::pair<uint64_t, int32_t>> Run(const PlannedStep& step, int64_t index) {
    std::vector<std::pair<uint64_t, int32_t>> tokens;
    for (auto& stage : stages_) {
      for (uint64_t id : step.drops) stage->Free(id);
    }
    if (step.chunks.empty()) return tokens;
    StageBatch batch;
    std::map<uint64_t, int64_t> written;
    for (const PlannedChunk& c : step.chunks) {
      SequenceChunk chunk;
      chunk.seq_id = c.seq_id;
      chunk.start_pos = c.start_pos;
      chunk.num_tokens = static_cast<int64_t>(c.token_ids.size());
      chunk.token_ids = c.token_ids;
      chunk.logits = c.sample ? LogitsMode::kGreedy : LogitsMode::kNone;
      batch.chunks.push_back(chunk);
      written[c.seq_id] = c.start_pos + chunk.num_tokens;
    }
    StageOutput first, last;
    absl::Status s = stages_[0]->Run(batch, &first);
    EXPECT_TRUE(s.ok()) << "step " << index << ", stage 0: " << s;
    CheckStage(0, written, index);
    for (auto& c : batch.chunks) c.token_ids.clear();
    batch.hidden = first.hidden;
    s = stages_[1]->Run(batch, &last);
    EXPECT_TRUE(s.ok()) << "step " << index << ", stage 1: " << s;
    CheckStage(1, written, index);
    for (size_t c = 0; c < step.chunks.size(); ++c) {
      if (step.chunks[c].sample) tokens.emplace_back(step.chunks[c].seq_id, last.greedy[c]);
    }
    return tokens;
  }

  std::string dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<Stage>> stages_;
};

TEST_F(KvPropertyTest, RandomTrafficNeverOverrunsOrLeaksTheCache) {
  ASSERT_EQ(stages_.size(), 2u);
  SchedulerOptions options;
  options.max_sequences = kMaxSequences;
  options.max_batch_tokens = kBatchTokens;
  options.max_context = kMaxContext;
  options.max_inflight_steps = 2;
  options.eos_ids.assign(config_.eos_token_ids.begin(), config_.eos_token_ids.end());
  Scheduler scheduler(options);
  std::mt19937 rng(4242);
  std::uniform_real_distribution<double> chance(0.0, 1.0);
  std::deque<PlannedStep> pipeline;  // planned, not yet answered: FIFO like the stages
  std::set<uint64_t> open;
  uint64_t next_request = 1;
  int64_t steps = 0, replays = 0, cancels = 0, finished = 0;
  auto settle = [&](const std::vector<Emission>& emitted) {
    for (const Emission& e : emitted) {
      if (e.finish != Finish::kNone || !e.error.ok()) {
        open.erase(e.request_id);
        ++finished;
      }
    }
  };
  auto run_oldest = [&] {
    PlannedStep step = std::move(pipeline.front());
    pipeline.pop_front();
    const auto tokens = Run(step, steps++);
    settle(scheduler.OnResult(step.step_id, tokens));
  };
  for (int64_t round = 0; steps < kSteps && round < 50 * kSteps && !HasFatalFailure(); ++round) {
    if (open.size() < 9 && chance(rng) < 0.12) {
      SequenceSpec spec;
      spec.session = 1;
      spec.request_id = next_request++;
      const int64_t prompt = 1 + static_cast<int64_t>(rng() % 70);
      for (int64_t i = 0; i < prompt; ++i) {
        spec.prompt.push_back(3 + static_cast<int32_t>(rng() % (config_.vocab_size - 3)));
      }
      spec.max_tokens = 1 + static_cast<int64_t>(rng() % 40);
      spec.ignore_eos = rng() % 2 == 0;
      open.insert(spec.request_id);
      scheduler.Submit(std::move(spec));
    }
    if (!open.empty() && chance(rng) < 0.02) {
      auto it = open.begin();
      std::advance(it, rng() % open.size());
      scheduler.Cancel(1, *it);  // the coordinator tells the gateway itself
      open.erase(it);
      ++cancels;
    }
    if (chance(rng) < 0.004) {
      // Failover: in-flight steps are lost, every worker reloads (its KV is
      // gone) and the running sequences are replayed from their first token.
      pipeline.clear();
      scheduler.Rewind();
      for (auto& stage : stages_) {
        for (uint64_t id : stage->kv_cache().SequenceIds()) stage->Free(id);
        ASSERT_EQ(stage->kv_cache().free_blocks(), stage->kv_cache().total_blocks());
      }
      ++replays;
      continue;
    }
    ASSERT_LE(scheduler.running(), kMaxSequences);
    if (auto step = scheduler.NextStep()) {
      pipeline.push_back(std::move(*step));
    } else if (!pipeline.empty()) {
      run_oldest();
    }
    if (pipeline.size() == 2) run_oldest();
  }
  // Let everything finish; drops ride on the last steps.
  for (int guard = 0; guard < 100'000 && !HasFatalFailure(); ++guard) {
    if (auto step = scheduler.NextStep()) {
      pipeline.push_back(std::move(*step));
    } else if (pipeline.empty()) {
      break;
    }
    run_oldest();
  }
  EXPECT_TRUE(scheduler.idle());
  EXPECT_TRUE(open.empty()) << open.size() << " requests never finished";
  for (size_t s = 0; s < stages_.size(); ++s) {
    EXPECT_EQ(stages_[s]->kv_cache().free_blocks(), stages_[s]->kv_cache().total_blocks())
        << "stage " << s << " leaks blocks";
    EXPECT_EQ(stages_[s]->kv_cache().num_sequences(), 0) << "stage " << s;
  }
  std::printf("%lld steps, %lld replays, %lld cancellations, %lld requests ended\n",
              static_cast<long long>(steps), static_cast<long long>(replays),
              static_cast<long long>(cancels), static_cast<long long>(finished));
  // The traffic did what it was meant to.
  EXPECT_GE(steps, kSteps);
  EXPECT_GT(replays, 5);
  EXPECT_GT(cancels, 20);
  EXPECT_GT(finished, 200);
}

}  // namespace
}  // namespace strata
