// In-process generation over a pipeline of stages: the single-process
// `strata generate` (one stage) and the stage-split tests (several stages,
// hidden states handed from one to the next). The distributed pipeline of the
// services uses the same Stage and Sampler; this is the local driver.
// Not thread-safe: one Generate() at a time per pipeline.
#ifndef STRATA_RUNTIME_GENERATE_H_
#define STRATA_RUNTIME_GENERATE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/sampler.h"
#include "runtime/stage.h"

namespace strata {

class LocalPipeline {
 public:
  // `stages` must cover layers [0, num_layers) contiguously, in order.
  static absl::StatusOr<std::unique_ptr<LocalPipeline>> Create(
      std::vector<std::unique_ptr<Stage>> stages);
  // Loads `model_dir` as stages split at `cuts` (e.g. {4, 9} -> [0,4) [4,9) [9,n)).
  static absl::StatusOr<std::unique_ptr<LocalPipeline>> Load(const std::string& model_dir,
                                                              const ModelConfig& config,
                                                              const std::vector<int64_t>& cuts,
                                                              const StageOptions& options);

  // Runs `batch` through every stage; `out` holds the last stage's logits.
  absl::Status Step(const StageBatch& batch, StageOutput* out);
  void Free(uint64_t seq_id);
  const Stage& first() const { return *stages_.front(); }
  const Stage& last() const { return *stages_.back(); }
  size_t num_stages() const { return stages_.size(); }

 private:
  std::vector<std::unique_ptr<Stage>> stages_;
  StageOutput hop_;       // hidden states between stages, reused
  StageBatch hop_batch_;  // the batch as stages after the first see it, reused
};

enum class FinishReason { kLength, kEos, kContext };
const char* FinishReasonName(FinishReason r);

struct GenerateRequest {
  std::vector<int32_t> prompt_ids;
  int64_t max_tokens = 64;
  SamplingParams sampling;
  bool ignore_eos = false;
  uint64_t seq_id = 1;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (EOS included when it ended the run)
  FinishReason finish = FinishReason::kLength;
  double prefill_seconds = 0;
  double decode_seconds = 0;  // after the first generated token
};

// Validates the request (INVALID_ARGUMENT / OUT_OF_RANGE naming the field),
// prefills the prompt in chunks of the stages' batch limit, then decodes one
// token a step, calling `on_token` for each generated id as it arrives. The
// sequence's KV is freed on every stage when it returns, error or not.
absl::StatusOr<GenerateResult> Generate(LocalPipeline& pipeline, const GenerateRequest& request,
                                        const std::function<void(int32_t)>& on_token);

}  // namespace strata

#endif  // STRATA_RUNTIME_GENERATE_H_
