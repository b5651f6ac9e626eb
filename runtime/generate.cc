#include "runtime/generate.h"

#include <chrono>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"

namespace strata {

absl::StatusOr<std::unique_ptr<LocalPipeline>> LocalPipeline::Create(
    std::vector<std::unique_ptr<Stage>> stages) {
  if (stages.empty()) return absl::InvalidArgumentError("a pipeline needs at least one stage");
  int64_t expect = 0;
  for (const auto& s : stages) {
    if (s->begin() != expect) {
      return absl::InvalidArgumentError(absl::StrCat("stage [", s->begin(), ", ", s->end(),
                                                     ") does not start at layer ", expect));
    }
    expect = s->end();
  }
  if (!stages.back()->is_last()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stages end at layer ", expect, " but the model has ", stages.back()->config().num_layers));
  }
  auto p = std::unique_ptr<LocalPipeline>(new LocalPipeline());
  p->stages_ = std::move(stages);
  return p;
}

absl::StatusOr<std::unique_ptr<LocalPipeline>> LocalPipeline::Load(const std::string& model_dir,
                                                                   const ModelConfig& config,
                                                                   const std::vector<int64_t>& cuts,
                                                                   const StageOptions& options) {
  std::vector<std::unique_ptr<Stage>> stages;
  int64_t begin = 0;
  std::vector<int64_t> ends = cuts;
  ends.push_back(config.num_layers);
  for (int64_t end : ends) {
    ASSIGN_OR_RETURN(auto stage, Stage::Load(model_dir, config, begin, end, options));
    stages.push_back(std::move(stage));
    begin = end;
  }
  return Create(std::move(stages));
}

absl::Status LocalPipeline::Step(const StageBatch& batch, StageOutput* out) {
  if (stages_.size() == 1) return stages_[0]->Run(batch, out);
  // Later stages need the chunk layout but not the token ids; the member batch
  // keeps its capacity, so steady-state decode allocates nothing here.
  hop_batch_.chunks.resize(batch.chunks.size());
  for (size_t c = 0; c < batch.chunks.size(); ++c) {
    const SequenceChunk& from = batch.chunks[c];
    SequenceChunk& to = hop_batch_.chunks[c];
    to.seq_id = from.seq_id;
    to.start_pos = from.start_pos;
    to.num_tokens = from.num_tokens;
    to.logits = from.logits;
    to.token_ids.clear();
  }
  for (size_t i = 0; i < stages_.size(); ++i) {
    StageOutput* target = i + 1 == stages_.size() ? out : &hop_;
    if (i > 0) hop_batch_.hidden = hop_.hidden;
    absl::Status s = stages_[i]->Run(i == 0 ? batch : hop_batch_, target);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

void LocalPipeline::Free(uint64_t seq_id) {
  for (auto& s : stages_) s->Free(seq_id);
}

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kContext:
      return "context";
  }
  return "?";
}

absl::StatusOr<GenerateResult> Generate(LocalPipeline& pipeline, const GenerateRequest& request,
                                        const std::function<void(int32_t)>& on_token) {
  const Stage& first = pipeline.first();
  const ModelConfig& config = first.config();
  const int64_t context = first.max_context();
  if (request.prompt_ids.empty()) {
    return absl::InvalidArgumentError("prompt: must contain at least one token");
  }
  if (static_cast<int64_t>(request.prompt_ids.size()) >= context) {
    return absl::OutOfRangeError(absl::StrCat("prompt: ", request.prompt_ids.size(),
                                              " tokens do not fit the context of ", context,
                                              " tokens (at least one must remain to generate)"));
  }
  if (request.max_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens: must be positive, got ", request.max_tokens));
  }
  RETURN_IF_ERROR(ValidateSamplingParams(request.sampling));

  const uint64_t seq = request.seq_id;
  pipeline.Free(seq);
  absl::Cleanup free_kv = [&] { pipeline.Free(seq); };

  using Clock = std::chrono::steady_clock;
  GenerateResult result;
  std::vector<int32_t> history = request.prompt_ids;
  Sampler sampler;
  StageOutput out;
  StageBatch batch;
  batch.chunks.resize(1);
  SequenceChunk& chunk = batch.chunks[0];
  chunk.seq_id = seq;

  // Greedy decoding takes the argmax where the logits are computed.
  const LogitsMode head = IsPlainGreedy(request.sampling) ? LogitsMode::kGreedy : LogitsMode::kLast;
  // Prefill in chunks no larger than the stage's batch limit.
  const auto t0 = Clock::now();
  const int64_t prompt_len = static_cast<int64_t>(request.prompt_ids.size());
  const int64_t step = first.max_batch_tokens();
  for (int64_t pos = 0; pos < prompt_len; pos += step) {
    const int64_t n = std::min(step, prompt_len - pos);
    chunk.start_pos = pos;
    chunk.num_tokens = n;
    chunk.token_ids.assign(request.prompt_ids.begin() + pos, request.prompt_ids.begin() + pos + n);
    chunk.logits = pos + n == prompt_len ? head : LogitsMode::kNone;
    RETURN_IF_ERROR(pipeline.Step(batch, &out));
  }
  auto t_first = Clock::now();
  result.prefill_seconds = std::chrono::duration<double>(t_first - t0).count();

  int64_t pos = prompt_len;
  while (true) {
    const int32_t token =
        head == LogitsMode::kGreedy
            ? out.greedy[0]
            : sampler.Sample(std::span<const float>(out.logits.data(), config.vocab_size),
                             request.sampling, history, request.prompt_ids.size(), pos);
    result.tokens.push_back(token);
    history.push_back(token);
    if (on_token) on_token(token);
    if (!request.ignore_eos && config.IsEos(token)) {
      result.finish = FinishReason::kEos;
      break;
    }
    if (static_cast<int64_t>(result.tokens.size()) >= request.max_tokens) {
      result.finish = FinishReason::kLength;
      break;
    }
    // The sampled token sits at `pos`; the next one would sit at pos + 1.
    if (pos + 1 >= context) {
      result.finish = FinishReason::kContext;
      break;
    }
    chunk.start_pos = pos;
    chunk.num_tokens = 1;
    chunk.token_ids.assign(1, token);
    chunk.logits = head;
    RETURN_IF_ERROR(pipeline.Step(batch, &out));
    ++pos;
  }
  result.decode_seconds = std::chrono::duration<double>(Clock::now() - t_first).count();
  return result;
}

}  // namespace strata
