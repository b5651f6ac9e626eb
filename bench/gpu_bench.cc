// GPU engine benchmark: prefill tokens/s and decode tokens/s at several batch
// sizes for one stage holding the whole model on a CUDA device, and the weight
// bandwidth batch-1 decode achieves as a fraction of the device's measured
// copy bandwidth (cudaMemcpy device-to-device, bytes read + written).
// Prints one JSON object on stdout and a summary on stderr;
// bench/gpu_compare.sh runs it beside Hugging Face transformers' generate().
//
//   gpu_bench --model DIR [--device cuda:0] [--batches 1,8,32] [--prompt-tokens 128]
//             [--decode-tokens 64] [--prefill-tokens 512]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench_main.h"
#include "runtime/config.h"
#include "runtime/model_layout.h"
#include "runtime/stage.h"
#include "runtime/status_macros.h"
#include "tools/flags.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Best of several device-to-device copies of 1 GiB, counting bytes read and
// written.
absl::StatusOr<double> CopyGBps(int device) {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaSetDevice(device) != cudaSuccess || cudaMalloc(&a, bytes) != cudaSuccess ||
      cudaMalloc(&b, bytes) != cudaSuccess) {
    return absl::ResourceExhaustedError("cannot allocate 2 GiB for the copy-bandwidth probe");
  }
  cudaMemset(a, 1, bytes);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  double best = 0;
  for (int pass = 0; pass < 8; ++pass) {
    cudaEventRecord(start);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    if (pass > 0) best = std::max(best, 2.0 * bytes / (ms / 1e3) / 1e9);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(a);
  cudaFree(b);
  return best;
}

std::vector<int32_t> Prompt(int64_t n, int64_t vocab, int salt) {
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 7919 + salt * 104729) % vocab);
  return ids;
}

int32_t Argmax(const float* row, int64_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

absl::Status Run(int argc, char** argv) {
  std::string model, device = "cuda:0", batches_flag = "1,8,32";
  int64_t prompt_tokens = 128, decode_tokens = 64, prefill_tokens = 512;
  FlagSet flags;
  flags.String("model", &model, "model folder (required)");
  flags.String("device", &device, "cuda or cuda:N (cuda:0)");
  flags.String("batches", &batches_flag, "decode batch sizes (1,8,32)");
  flags.Int("prompt-tokens", &prompt_tokens, "prompt of every decoding sequence (128)");
  flags.Int("decode-tokens", &decode_tokens, "decode steps per batch size (64)");
  flags.Int("prefill-tokens", &prefill_tokens, "tokens of the measured prefill (512)");
  RETURN_IF_ERROR(flags.Parse(std::vector<std::string>(argv + 1, argv + argc)));
  if (model.empty()) return absl::InvalidArgumentError("--model: required");
  if (prompt_tokens < 1 || decode_tokens < 3 || prefill_tokens < 1) {
    return absl::InvalidArgumentError(
        "--prompt-tokens and --prefill-tokens must be positive, --decode-tokens at least 3");
  }
  std::vector<int64_t> batches;
  for (absl::string_view b : absl::StrSplit(batches_flag, ',')) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(b, &v) || v < 1 || v > 1024) {
      return absl::InvalidArgumentError(
          absl::StrCat("--batches: bad size \"", std::string(b), "\""));
    }
    batches.push_back(v);
  }
  const int64_t max_batch = *std::max_element(batches.begin(), batches.end());
  ASSIGN_OR_RETURN(const int device_index, ParseCudaDevice(device));
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model));

  StageOptions options;
  options.device = device;
  options.max_batch_tokens = std::max({prefill_tokens, prompt_tokens, max_batch});
  options.max_sequences = max_batch;
  options.max_context = std::max(prefill_tokens, prompt_tokens + decode_tokens) + 16;
  ASSIGN_OR_RETURN(auto stage, Stage::Load(model, config, 0, config.num_layers, options));
  const MemoryReport memory = stage->memory();
  ASSIGN_OR_RETURN(const double copy_gbps, CopyGBps(device_index));

  // Prefill: one warm-up, then the measured pass.
  StageOutput out;
  auto prefill = [&](uint64_t seq, int64_t tokens) -> absl::StatusOr<double> {
    StageBatch b;
    b.chunks.push_back({.seq_id = seq,
                        .start_pos = 0,
                        .num_tokens = tokens,
                        .token_ids = Prompt(tokens, config.vocab_size, static_cast<int>(seq)),
                        .logits = LogitsMode::kLast});
    const auto t0 = Clock::now();
    RETURN_IF_ERROR(stage->Run(b, &out));
    return Seconds(t0, Clock::now());
  };
  RETURN_IF_ERROR(prefill(1'000'000, prefill_tokens).status());
  stage->Free(1'000'000);
  ASSIGN_OR_RETURN(const double prefill_s, prefill(1'000'001, prefill_tokens));
  stage->Free(1'000'001);

  // Bytes a decode step must read, in the device's dtype: every layer, the
  // final norm and the LM head (the embedding table is read one row a token).
  int64_t step_params = 0;
  auto numel = [](const TensorSpec& t) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    return n;
  };
  for (int64_t l = 0; l < config.num_layers; ++l) {
    for (const TensorSpec& t : LayerTensors(config, l)) step_params += numel(t);
  }
  step_params += numel(FinalNormTensor(config)) + config.vocab_size * config.hidden_size;
  const int64_t step_bytes =
      step_params * static_cast<int64_t>(DTypeSize(stage->backend().activation_dtype()));
  struct Row {
    int64_t batch;
    double tokens_per_s, step_ms;
  };
  std::vector<Row> rows;
  for (int64_t batch : batches) {
    StageBatch step;
    for (int64_t s = 0; s < batch; ++s) {
      RETURN_IF_ERROR(prefill(s, prompt_tokens).status());
      step.chunks.push_back({.seq_id = static_cast<uint64_t>(s),
                             .start_pos = prompt_tokens,
                             .num_tokens = 1,
                             .token_ids = {Argmax(out.logits.data(), out.vocab_size)},
                             .logits = LogitsMode::kLast});
    }
    std::vector<double> seconds;
    for (int64_t i = 0; i < decode_tokens; ++i) {
      const auto t0 = Clock::now();
      RETURN_IF_ERROR(stage->Run(step, &out));
      seconds.push_back(Seconds(t0, Clock::now()));
      for (int64_t s = 0; s < batch; ++s) {
        step.chunks[s].start_pos += 1;
        step.chunks[s].token_ids[0] =
            Argmax(out.logits.data() + out.logits_row[s] * out.vocab_size, out.vocab_size);
      }
    }
    for (int64_t s = 0; s < batch; ++s) stage->Free(static_cast<uint64_t>(s));
    // The first step of a shape builds its GEMM plans and sizes its buffers,
    // the second records its CUDA graph; leave both out.
    double total = 0;
    for (size_t i = 2; i < seconds.size(); ++i) total += seconds[i];
    const double steps = static_cast<double>(seconds.size() - 2);
    rows.push_back({batch, batch * steps / total, total / steps * 1e3});
  }

  const Row& b1 = rows.front();
  const double decode_gbps = step_bytes / (b1.step_ms / 1e3) / 1e9;
  std::string decode_json;
  for (const Row& r : rows) {
    absl::StrAppend(&decode_json, decode_json.empty() ? "" : ",",
                    absl::StrFormat("{\"batch\":%d,\"tokens_per_second\":%.2f,\"step_ms\":%.4f}",
                                    r.batch, r.tokens_per_s, r.step_ms));
  }
  absl::PrintF(
      "{\"bench\":\"gpu\",\"engine\":\"strata\",\"model\":\"%s\",\"device\":\"%s\","
      "\"backend\":\"%s\",\"layers\":%lld,\"hidden\":%lld,\"weight_bytes_read_per_step\":%lld,"
      "\"device_bytes_allocated\":%lld,\"copy_gbps\":%.1f,\"prefill_tokens\":%lld,"
      "\"prefill_tokens_per_second\":%.1f,\"decode\":[%s],\"batch1_weight_gbps\":%.1f,"
      "\"batch1_fraction_of_copy_bandwidth\":%.4f}\n",
      model, memory.device, std::string(stage->backend().name()),
      static_cast<long long>(config.num_layers), static_cast<long long>(config.hidden_size),
      static_cast<long long>(step_bytes), static_cast<long long>(memory.used_bytes), copy_gbps,
      static_cast<long long>(prefill_tokens), prefill_tokens / prefill_s, decode_json, decode_gbps,
      decode_gbps / copy_gbps);
  std::fprintf(stderr, "gpu_bench on %s (%s): prefill %.0f tok/s (%lld tokens)\n",
               memory.device.c_str(), std::string(stage->backend().name()).c_str(),
               prefill_tokens / prefill_s, static_cast<long long>(prefill_tokens));
  for (const Row& r : rows) {
    std::fprintf(stderr, "  decode batch %3lld: %9.1f tok/s  (%.3f ms/step)\n",
                 static_cast<long long>(r.batch), r.tokens_per_s, r.step_ms);
  }
  std::fprintf(stderr,
               "  batch-1 weight bandwidth %.0f GB/s = %.1f%% of the measured copy bandwidth "
               "(%.0f GB/s)\n",
               decode_gbps, 100 * decode_gbps / copy_gbps, copy_gbps);
  return absl::OkStatus();
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) { return strata::BenchMain("gpu_bench", strata::Run, argc, argv); }
