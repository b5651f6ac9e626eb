// The stage executor: cached decode against full recompute, stage splits
// against one stage (bit-identical), mixed batches, KV accounting, bad input.
#include "runtime/stage.h"

#include <cmath>

#include "gtest/gtest.h"
#include "runtime/generate.h"
#include "runtime/status_macros.h"
#include "tests/test_util.h"

namespace strata {
namespace {

std::vector<int32_t> Prompt(int n, int salt = 0) {
  std::vector<int32_t> ids = {1};
  for (int i = 1; i < n; ++i) ids.push_back(3 + (i * 37 + salt * 11) % 500);
  return ids;
}

ModelConfig Config(const std::string& dir) {
  auto c = LoadModelConfig(dir);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

// Greedy-decodes `steps` tokens through the pipeline, returning every step's logits.
std::vector<std::vector<float>> DecodeLogits(LocalPipeline& p, uint64_t seq,
                                             const std::vector<int32_t>& prompt, int steps) {
  std::vector<std::vector<float>> all;
  StageOutput out;
  StageBatch b;
  b.chunks.push_back({.seq_id = seq,
                      .start_pos = 0,
                      .num_tokens = static_cast<int64_t>(prompt.size()),
                      .token_ids = prompt});
  EXPECT_TRUE(p.Step(b, &out).ok());
  all.push_back(out.logits);
  for (int s = 0; s < steps; ++s) {
    const int32_t tok = static_cast<int32_t>(
        std::max_element(out.logits.begin(), out.logits.end()) - out.logits.begin());
    b.chunks[0] = {.seq_id = seq,
                   .start_pos = static_cast<int64_t>(prompt.size()) + s,
                   .num_tokens = 1,
                   .token_ids = {tok}};
    EXPECT_TRUE(p.Step(b, &out).ok());
    all.push_back(out.logits);
  }
  return all;
}

class StageFlavourTest : public ::testing::TestWithParam<std::string> {};

TEST_P(StageFlavourTest, SplitsIntoTwoThreeAndFourStagesAreBitIdentical) {
  const std::string& dir = testing::TestModel(GetParam());
  const ModelConfig config = Config(dir);
  StageOptions options;
  auto one = LocalPipeline::Load(dir, config, {}, options);
  ASSERT_TRUE(one.ok()) << one.status();
  const auto prompt = Prompt(20);
  const auto expected = DecodeLogits(**one, 1, prompt, 8);
  for (const std::vector<int64_t>& cuts :
       std::vector<std::vector<int64_t>>{{2}, {1, 3}, {1, 2, 3}}) {
    auto split = LocalPipeline::Load(dir, config, cuts, options);
    ASSERT_TRUE(split.ok()) << split.status();
    ASSERT_EQ((*split)->num_stages(), cuts.size() + 1);
    EXPECT_EQ(DecodeLogits(**split, 1, prompt, 8), expected)
        << "split into " << cuts.size() + 1 << " stages";
  }
}

// The first stage's embedding table kept in host memory (rows gathered
// there and copied in) gives the same logits, bit for bit.
TEST_P(StageFlavourTest, AnEmbeddingTableInHostMemoryChangesNothing) {
  const std::string& dir = testing::TestModel(GetParam());
  const ModelConfig config = Config(dir);
  auto plain = LocalPipeline::Load(dir, config, {2}, StageOptions{});
  ASSERT_TRUE(plain.ok()) << plain.status();
  StageOptions host;
  host.host_embedding = true;
  auto hosted = LocalPipeline::Load(dir, config, {2}, host);
  ASSERT_TRUE(hosted.ok()) << hosted.status();
  const auto prompt = Prompt(12);
  EXPECT_EQ(DecodeLogits(**hosted, 1, prompt, 6), DecodeLogits(**plain, 1, prompt, 6));
}

TEST_P(StageFlavourTest, CachedDecodeEqualsFullRecompute) {
  const std::string& dir = testing::TestModel(GetParam());
  const ModelConfig config = Config(dir);
  auto p = LocalPipeline::Load(dir, config, {}, StageOptions{});
  ASSERT_TRUE(p.ok());
  auto prompt = Prompt(14);
  const auto cached = DecodeLogits(**p, 3, prompt, 10);
  // Recompute: feed the whole sequence so far as one prefill each step.
  std::vector<int32_t> seq = prompt;
  for (size_t s = 0; s < cached.size(); ++s) {
    StageOutput out;
    StageBatch b;
    b.chunks.push_back({.seq_id = 99,
                        .start_pos = 0,
                        .num_tokens = static_cast<int64_t>(seq.size()),
                        .token_ids = seq});
    ASSERT_TRUE((*p)->Step(b, &out).ok());
    (*p)->Free(99);
    ASSERT_EQ(out.logits.size(), cached[s].size());
    for (size_t i = 0; i < out.logits.size(); ++i) {
      ASSERT_NEAR(out.logits[i], cached[s][i], 1e-4) << "step " << s << " logit " << i;
    }
    seq.push_back(static_cast<int32_t>(std::max_element(out.logits.begin(), out.logits.end()) -
                                       out.logits.begin()));
  }
}

INSTANTIATE_TEST_SUITE_P(AllFlavours, StageFlavourTest,
                         ::testing::Values("llama", "mistral", "qwen2", "hunyuan-dense"),
                         [](const auto& info) {
                           return info.param == "hunyuan-dense" ? std::string("hunyuan")
                                                                : info.param;
                         });

TEST(StageTest, MixedPrefillAndDecodeBatchMatchesSeparateRuns) {
  const std::string& dir = testing::TestModel("llama");
  const ModelConfig config = Config(dir);
  auto p = LocalPipeline::Load(dir, config, {}, StageOptions{});
  ASSERT_TRUE(p.ok());
  const auto a = Prompt(9, 1), b = Prompt(17, 2);
  const auto alone_a = DecodeLogits(**p, 10, a, 1);
  const auto alone_b = DecodeLogits(**p, 11, b, 0);
  (*p)->Free(10);
  (*p)->Free(11);
  // Sequence 20 prefills a; then one batch carries a's decode token and b's prefill.
  StageOutput out;
  StageBatch first;
  first.chunks.push_back({.seq_id = 20, .start_pos = 0, .num_tokens = 9, .token_ids = a});
  ASSERT_TRUE((*p)->Step(first, &out).ok());
  const int32_t tok = static_cast<int32_t>(std::max_element(out.logits.begin(), out.logits.end()) -
                                           out.logits.begin());
  StageBatch mixed;
  mixed.chunks.push_back({.seq_id = 20, .start_pos = 9, .num_tokens = 1, .token_ids = {tok}});
  mixed.chunks.push_back({.seq_id = 21, .start_pos = 0, .num_tokens = 17, .token_ids = b});
  ASSERT_TRUE((*p)->Step(mixed, &out).ok());
  const int64_t v = config.vocab_size;
  ASSERT_EQ(out.logits.size(), static_cast<size_t>(2 * v));
  EXPECT_EQ(std::vector<float>(out.logits.begin(), out.logits.begin() + v), alone_a[1]);
  EXPECT_EQ(std::vector<float>(out.logits.begin() + v, out.logits.end()), alone_b[0]);
}

TEST(StageTest, LoadsOnlyTheShardsOfItsLayers) {
  // 3 shards: [embed + layer 0 + part of 1], ..., [.. layer 3, norm, lm_head].
  const std::string& dir = testing::TestModel("llama", "f32", 3);
  const ModelConfig config = Config(dir);
  auto first = Stage::Load(dir, config, 0, 1, StageOptions{});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first)->mapped_files(), std::vector<std::string>{"model-00001-of-00003.safetensors"});
  auto last = Stage::Load(dir, config, 3, 4, StageOptions{});
  ASSERT_TRUE(last.ok());
  EXPECT_EQ((*last)->mapped_files(), std::vector<std::string>{"model-00003-of-00003.safetensors"});
}

// A CPU stage reads every page of its weights before Load returns, and says
// so: the last report is (total, total), the total its weight bytes.
TEST(StageTest, LoadReadsEveryWeightAndReportsProgress) {
  const std::string& dir = testing::TestModel("llama");
  const ModelConfig config = Config(dir);
  std::vector<std::pair<int64_t, int64_t>> reports;
  StageOptions options;
  options.load_progress = [&](int64_t done, int64_t total) { reports.emplace_back(done, total); };
  auto stage = Stage::Load(dir, config, 1, 3, options);
  ASSERT_TRUE(stage.ok()) << stage.status();
  ASSERT_FALSE(reports.empty());
  EXPECT_EQ(reports.back().first, (*stage)->weight_bytes());
  EXPECT_EQ(reports.back().second, (*stage)->weight_bytes());
  for (size_t i = 1; i < reports.size(); ++i) EXPECT_GE(reports[i].first, reports[i - 1].first);
  // Off: no reading, no reports.
  reports.clear();
  options.prefault = false;
  ASSERT_TRUE(Stage::Load(dir, config, 1, 3, options).ok());
  EXPECT_TRUE(reports.empty());
  // Spans of any alignment and size, including empty ones, are read whole.
  std::vector<uint8_t> buffer(3 * 4096 + 17, 1);
  const std::vector<std::pair<const void*, size_t>> spans = {
      {buffer.data() + 5, 4096 * 2},
      {buffer.data(), 0},
      {buffer.data() + 8200, buffer.size() - 8200}};
  reports.clear();
  PrefaultPages(spans, [&](int64_t done, int64_t total) { reports.emplace_back(done, total); });
  ASSERT_EQ(reports.size(), 1u);  // a short read reports once, at its end
  EXPECT_EQ(reports[0].first, static_cast<int64_t>(4096 * 2 + buffer.size() - 8200));
}

TEST(StageTest, KvBlocksAreAllocatedPerSixteenTokensAndFreed) {
  const std::string& dir = testing::TestModel("llama");
  const ModelConfig config = Config(dir);
  StageOptions options;
  options.kv_blocks = 4;
  auto stage = Stage::Load(dir, config, 0, config.num_layers, options);
  ASSERT_TRUE(stage.ok());
  StageOutput out;
  StageBatch b;
  b.chunks.push_back({.seq_id = 1, .start_pos = 0, .num_tokens = 17, .token_ids = Prompt(17)});
  ASSERT_TRUE((*stage)->Run(b, &out).ok());
  EXPECT_EQ((*stage)->kv_cache().free_blocks(), 2);
  // A second sequence needing 3 blocks does not fit; nothing changes.
  b.chunks[0] = {.seq_id = 2, .start_pos = 0, .num_tokens = 40, .token_ids = Prompt(40)};
  absl::Status full = (*stage)->Run(b, &out);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_EQ((*stage)->kv_cache().free_blocks(), 2);
  EXPECT_EQ((*stage)->SequenceLength(1), 17);
  (*stage)->Free(1);
  EXPECT_EQ((*stage)->kv_cache().free_blocks(), 4);
  EXPECT_TRUE((*stage)->Run(b, &out).ok());
}

// kGreedy returns the argmax of exactly the logits kLast returns, alone (no
// logits copied out) and beside chunks that want logits.
TEST(StageTest, GreedyChunksGetTheArgmaxOfTheirLogits) {
  const std::string& dir = testing::TestModel("qwen2");
  const ModelConfig config = Config(dir);
  auto run = [&](LogitsMode a, LogitsMode b) {
    auto stage = Stage::Load(dir, config, 0, config.num_layers, StageOptions{});
    EXPECT_TRUE(stage.ok()) << stage.status();
    StageBatch batch;
    batch.chunks.push_back(
        {.seq_id = 1, .start_pos = 0, .num_tokens = 9, .token_ids = Prompt(9, 1), .logits = a});
    batch.chunks.push_back(
        {.seq_id = 2, .start_pos = 0, .num_tokens = 5, .token_ids = Prompt(5, 2), .logits = b});
    StageOutput out;
    EXPECT_TRUE((*stage)->Run(batch, &out).ok());
    return out;
  };
  const StageOutput logits = run(LogitsMode::kLast, LogitsMode::kLast);
  auto argmax = [&](int c) {
    const float* row = logits.logits.data() + logits.logits_row[c] * logits.vocab_size;
    return static_cast<int32_t>(std::max_element(row, row + logits.vocab_size) - row);
  };
  EXPECT_EQ(logits.greedy, (std::vector<int32_t>{-1, -1}));

  const StageOutput both = run(LogitsMode::kGreedy, LogitsMode::kGreedy);
  EXPECT_TRUE(both.logits.empty());
  EXPECT_EQ(both.greedy, (std::vector<int32_t>{argmax(0), argmax(1)}));
  EXPECT_EQ(both.logits_row, (std::vector<int64_t>{-1, -1}));

  const StageOutput mixed = run(LogitsMode::kGreedy, LogitsMode::kLast);
  EXPECT_EQ(mixed.greedy, (std::vector<int32_t>{argmax(0), -1}));
  ASSERT_EQ(mixed.logits.size(), logits.logits.size());
  EXPECT_EQ(mixed.logits, logits.logits);
}

TEST(StageTest, RejectsBadBatches) {
  const std::string& dir = testing::TestModel("llama");
  const ModelConfig config = Config(dir);
  auto stage = Stage::Load(dir, config, 0, 2, StageOptions{});
  ASSERT_TRUE(stage.ok());
  StageOutput out;
  auto run = [&](SequenceChunk c) {
    StageBatch b;
    b.chunks.push_back(std::move(c));
    return (*stage)->Run(b, &out);
  };
  EXPECT_EQ(run({.seq_id = 1, .start_pos = 0, .num_tokens = 2, .token_ids = {1, 512}}).code(),
            absl::StatusCode::kInvalidArgument);  // id outside the vocabulary
  EXPECT_EQ(run({.seq_id = 1, .start_pos = 0, .num_tokens = 3, .token_ids = {1, 2}}).code(),
            absl::StatusCode::kInvalidArgument);  // fewer ids than tokens
  EXPECT_EQ(run({.seq_id = 1, .start_pos = 5, .num_tokens = 1, .token_ids = {1}}).code(),
            absl::StatusCode::kInvalidArgument);  // gap after the cached tokens
  EXPECT_EQ(run({.seq_id = 1, .start_pos = 1, .num_tokens = 1, .token_ids = {1}}).code(),
            absl::StatusCode::kInvalidArgument);  // the smallest gap: one position
  EXPECT_EQ(run({.seq_id = 1, .start_pos = 0, .num_tokens = 0, .token_ids = {}}).code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status too_long =
      run({.seq_id = 1, .start_pos = 0, .num_tokens = 300, .token_ids = Prompt(300)});
  EXPECT_EQ(too_long.code(), absl::StatusCode::kOutOfRange) << too_long;
  EXPECT_NE(too_long.message().find("context length of 256"), absl::string_view::npos);
  // A middle stage needs hidden states of the right size.
  auto middle = Stage::Load(dir, config, 1, 3, StageOptions{});
  ASSERT_TRUE(middle.ok());
  StageBatch b;
  b.chunks.push_back({.seq_id = 1, .start_pos = 0, .num_tokens = 2, .token_ids = {}});
  std::vector<float> hidden(config.hidden_size);  // one token's worth, two needed
  b.hidden = hidden;
  EXPECT_EQ((*middle)->Run(b, &out).code(), absl::StatusCode::kInvalidArgument);
  // Bad ranges.
  EXPECT_FALSE(Stage::Load(dir, config, 2, 2, StageOptions{}).ok());
  EXPECT_FALSE(Stage::Load(dir, config, 0, 5, StageOptions{}).ok());
}

TEST(GenerateTest, ValidatesTheRequest) {
  const std::string& dir = testing::TestModel("llama");
  const ModelConfig config = Config(dir);
  auto p = LocalPipeline::Load(dir, config, {}, StageOptions{});
  ASSERT_TRUE(p.ok());
  GenerateRequest r;
  r.prompt_ids = Prompt(256);
  auto too_long = Generate(**p, r, nullptr);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(too_long.status().message().find("prompt"), absl::string_view::npos);
  r.prompt_ids = Prompt(10);
  r.sampling.temperature = -1;
  auto bad = Generate(**p, r, nullptr);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("temperature"), absl::string_view::npos);
  r.sampling.temperature = 0;
  r.max_tokens = 0;
  EXPECT_EQ(Generate(**p, r, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GenerateTest, StopsAtTheContextAndReplaysIdentically) {
  const std::string& dir = testing::TestModel("qwen2");
  const ModelConfig config = Config(dir);
  auto p = LocalPipeline::Load(dir, config, {1}, StageOptions{});
  ASSERT_TRUE(p.ok());
  GenerateRequest r;
  r.prompt_ids = Prompt(250);
  r.max_tokens = 100;
  r.ignore_eos = true;
  r.sampling = {.temperature = 0.9f, .top_k = 40, .top_p = 0.9f, .seed = 42};
  std::vector<int32_t> streamed;
  auto first = Generate(**p, r, [&](int32_t t) { streamed.push_back(t); });
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->finish, FinishReason::kContext);
  EXPECT_EQ(first->tokens.size(), 6u);  // positions 250..255
  EXPECT_EQ(streamed, first->tokens);
  auto again = Generate(**p, r, nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->tokens, first->tokens);
}

// A chunk that ends exactly at the context runs; one token more is
// OUT_OF_RANGE, and the stage's KV is unchanged by the refusal.
// The whole tiny llama as one stage, one thread, batches of up to 64 tokens
// and a context of `context`; `kv_blocks` 0 sizes the cache for one sequence.
absl::StatusOr<std::unique_ptr<Stage>> WholeTinyLlama(int64_t context, int64_t kv_blocks) {
  const std::string& dir = testing::TestModel("llama");
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  StageOptions o;
  o.threads = 1;
  o.max_context = context;
  o.max_sequences = 1;
  o.max_batch_tokens = 64;
  o.kv_blocks = kv_blocks;
  return Stage::Load(dir, config, 0, config.num_layers, o);
}

TEST(StageTest, AChunkEndingAtTheContextRunsAndOnePastItIsRefused) {
  auto stage = WholeTinyLlama(/*context=*/40, /*kv_blocks=*/0);
  ASSERT_TRUE(stage.ok()) << stage.status();
  StageOutput out;
  StageBatch over;
  over.chunks.push_back(
      {.seq_id = 1, .start_pos = 0, .num_tokens = 41, .token_ids = std::vector<int32_t>(41, 5)});
  const absl::Status refused = (*stage)->Run(over, &out);
  EXPECT_EQ(refused.code(), absl::StatusCode::kOutOfRange) << refused;
  EXPECT_EQ((*stage)->kv_cache().free_blocks(), (*stage)->kv_cache().total_blocks());
  StageBatch exact;
  exact.chunks.push_back(
      {.seq_id = 1, .start_pos = 0, .num_tokens = 40, .token_ids = std::vector<int32_t>(40, 5)});
  const absl::Status ran = (*stage)->Run(exact, &out);
  EXPECT_TRUE(ran.ok()) << ran;
  EXPECT_EQ((*stage)->kv_cache().Length(1), 40);
  EXPECT_EQ((*stage)->kv_cache().free_blocks(), 0);  // 40 tokens fill the 3 blocks budgeted
}

// Reservation is all or nothing: a batch whose sequences together need more
// blocks than are free is refused whole, and no sequence's blocks change,
// even when its first chunks alone would fit.
TEST(StageTest, AReservationThatDoesNotFitChangesNothing) {
  auto stage = WholeTinyLlama(/*context=*/64, /*kv_blocks=*/4);
  ASSERT_TRUE(stage.ok()) << stage.status();
  StageOutput out;
  StageBatch first;  // sequence 1: 16 tokens, one full block
  first.chunks.push_back({.seq_id = 1,
                          .start_pos = 0,
                          .num_tokens = 16,
                          .token_ids = std::vector<int32_t>(16, 5),
                          .logits = LogitsMode::kNone});
  ASSERT_TRUE((*stage)->Run(first, &out).ok());
  const KvCache& kv = (*stage)->kv_cache();
  ASSERT_EQ(kv.free_blocks(), 3);
  // Its next token needs a second block; sequence 2's 40 tokens need three.
  StageBatch both;
  both.chunks.push_back({.seq_id = 1,
                         .start_pos = 16,
                         .num_tokens = 1,
                         .token_ids = {7},
                         .logits = LogitsMode::kNone});
  both.chunks.push_back({.seq_id = 2,
                         .start_pos = 0,
                         .num_tokens = 40,
                         .token_ids = std::vector<int32_t>(40, 5),
                         .logits = LogitsMode::kNone});
  const absl::Status s = (*stage)->Run(both, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(kv.free_blocks(), 3);
  EXPECT_EQ(kv.Length(1), 16);
  EXPECT_EQ(kv.BlockTable(1).size(), 1u);
  EXPECT_FALSE(kv.Has(2));
}

}  // namespace
}  // namespace strata
