// Engine benchmark: prefill and batch-1 decode throughput of the CPU runtime on
// the 1B-class bf16 model (TinyLlama-1.1B dimensions), and the weight-read
// bandwidth decode achieves as a fraction of the machine's memory bandwidth,
// measured in the same run with a STREAM-style copy on the same threads.
// With --quant, the same model's quantized versions (tools/quantizer.h,
// made once and cached beside it) are measured in the same run, in turn, and
// their decode and prefill compared with the float model's.
// Prints one JSON object per model on stdout and a summary on stderr.
//
// With --decode-batch, decode is also measured with that many sequences per
// step (each after a 16-token prompt): how far batching moves decode from
// bandwidth-bound towards compute-bound.
//
//   engine_bench [--model DIR] [--threads N] [--prompt-tokens 512] [--decode-tokens 64]
//                [--quant gptq-int8,gptq-int4] [--decode-batch 8,32]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench_main.h"
#include "runtime/backend/cpu/thread_pool.h"
#include "runtime/checkpoint.h"
#include "runtime/config.h"
#include "runtime/model_layout.h"
#include "runtime/stage.h"
#include "runtime/status_macros.h"
#include "tools/flags.h"
#include "tools/model_maker.h"
#include "tools/quantizer.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Best of several passes of c[i] = a[i] over arrays far larger than the
// caches, split across the pool's threads; counts bytes read + written, as
// STREAM's Copy does.
double StreamCopyGBps(ThreadPool& pool) {
  const int64_t n = int64_t{1} << 26;  // 64 Mi floats = 256 MiB per array
  std::vector<float> a(n, 1.0f), c(n, 0.0f);
  double best = 0;
  for (int pass = 0; pass < 6; ++pass) {
    const auto t0 = Clock::now();
    pool.ParallelFor(n, 4096, [&](int64_t b, int64_t e, int) {
      std::copy(a.data() + b, a.data() + e, c.data() + b);
    });
    const double s = Seconds(t0, Clock::now());
    if (pass > 0) best = std::max(best, 2.0 * n * sizeof(float) / s / 1e9);
  }
  if (c[n / 2] != 1.0f) std::abort();
  return best;
}

absl::StatusOr<std::string> BenchModel(std::string model) {
  if (!model.empty()) return model;
  const char* home = std::getenv("STRATA_HOME");
  const std::string root =
      home != nullptr && *home
          ? std::string(home)
          : std::string(std::getenv("HOME") ? std::getenv("HOME") : "/tmp") + "/.cache/strata";
  model = root + "/models/bench-llama-1b-bf16";
  if (!std::filesystem::exists(model + "/config.json")) {
    std::fprintf(stderr, "engine_bench: making the 1B-class bf16 model in %s\n", model.c_str());
    ModelSpec spec;
    spec.size = "1b";
    RETURN_IF_ERROR(MakeModel(spec, model + ".partial"));
    std::filesystem::rename(model + ".partial", model);
  }
  return model;
}

// The quantized version of `model` by `method`, made once beside it.
absl::StatusOr<std::string> QuantizedModel(const std::string& model, const std::string& method) {
  const std::string dir = model + "-" + method;
  if (!std::filesystem::exists(dir + "/config.json")) {
    std::fprintf(stderr, "engine_bench: quantizing %s to %s\n", model.c_str(), method.c_str());
    QuantizeSpec spec;
    spec.method = method;
    std::filesystem::remove_all(dir + ".partial");
    RETURN_IF_ERROR(QuantizeCheckpoint(model, dir + ".partial", spec));
    std::filesystem::rename(dir + ".partial", dir);
  }
  return dir;
}

struct Figures {
  std::string label;
  double prefill_tps = 0, decode_tps = 0;
};

struct Settings {
  int64_t threads = 0, prompt_tokens = 512, decode_tokens = 64;
  std::vector<int64_t> decode_batches;  // sequences per batched decode step
};

absl::StatusOr<Figures> Measure(const std::string& model, const std::string& label,
                                const Settings& settings);

absl::Status Run(int argc, char** argv) {
  std::string model;
  Settings settings;
  std::vector<std::string> quant, batches;
  FlagSet flags;
  flags.String("model", &model, "model folder (default: the generated 1B-class bf16 model)");
  flags.Int("threads", &settings.threads, "threads; 0 = all available cores");
  flags.Int("prompt-tokens", &settings.prompt_tokens, "prefill length (512)");
  flags.Int("decode-tokens", &settings.decode_tokens, "decode steps (64)");
  flags.Strings("quant", &quant,
                "also measure the model quantized by these methods (gptq-int8, gptq-int4, "
                "awq-int4, fp8, ...), comma-separated");
  flags.Strings("decode-batch", &batches,
                "also measure decode with these numbers of sequences per step, comma-separated");
  RETURN_IF_ERROR(flags.Parse(std::vector<std::string>(argv + 1, argv + argc)));
  if (settings.prompt_tokens < 1 || settings.decode_tokens < 1) {
    return absl::InvalidArgumentError("--prompt-tokens and --decode-tokens must be positive");
  }
  for (const std::string& list : batches) {
    for (absl::string_view b : absl::StrSplit(list, ',', absl::SkipEmpty())) {
      int64_t n = 0;
      if (!absl::SimpleAtoi(b, &n) || n < 1 || n > 256) {
        return absl::InvalidArgumentError(
            absl::StrCat("--decode-batch: ", std::string(b), " is not a count from 1 to 256"));
      }
      settings.decode_batches.push_back(n);
    }
  }
  ASSIGN_OR_RETURN(model, BenchModel(model));
  std::vector<Figures> all;
  ASSIGN_OR_RETURN(Figures base, Measure(model, "float", settings));
  all.push_back(base);
  std::vector<std::string> methods;
  for (const std::string& q : quant) {
    for (absl::string_view m : absl::StrSplit(q, ',', absl::SkipEmpty())) methods.emplace_back(m);
  }
  for (const std::string& method : methods) {
    QuantizeSpec check;
    check.method = method;
    RETURN_IF_ERROR(CheckQuantizeSpec(check));
    ASSIGN_OR_RETURN(std::string dir, QuantizedModel(model, method));
    ASSIGN_OR_RETURN(Figures f, Measure(dir, method, settings));
    all.push_back(f);
  }
  if (all.size() > 1) {
    std::fprintf(stderr, "engine_bench: against the float model\n");
    for (const Figures& f : all) {
      std::printf(
          "{\"bench\":\"engine_quant\",\"weights\":\"%s\",\"decode_tokens_per_s\":%.3f,"
          "\"decode_vs_float\":%.3f,\"prefill_tokens_per_s\":%.2f,"
          "\"prefill_vs_float\":%.3f}\n",
          f.label.c_str(), f.decode_tps, f.decode_tps / base.decode_tps, f.prefill_tps,
          f.prefill_tps / base.prefill_tps);
      std::fprintf(stderr, "  %-12s decode %7.2f tok/s (%.2fx)   prefill %7.1f tok/s (%.2fx)\n",
                   f.label.c_str(), f.decode_tps, f.decode_tps / base.decode_tps, f.prefill_tps,
                   f.prefill_tps / base.prefill_tps);
    }
  }
  return absl::OkStatus();
}

// Decode with `sequences` sequences per step, each after a 16-token prompt:
// output tokens per second over `steps` steps.
absl::StatusOr<double> BatchedDecode(Stage& stage, int64_t sequences, int64_t steps) {
  constexpr int64_t kPrompt = 16;
  constexpr uint64_t kFirstSeq = 1000;
  StageBatch batch;
  for (int64_t s = 0; s < sequences; ++s) {
    std::vector<int32_t> ids(kPrompt);
    for (int64_t i = 0; i < kPrompt; ++i)
      ids[i] = 1 + static_cast<int32_t>((s * 131 + i * 7919) % 31000);
    batch.chunks.push_back({.seq_id = kFirstSeq + s,
                            .start_pos = 0,
                            .num_tokens = kPrompt,
                            .token_ids = ids,
                            .logits = LogitsMode::kGreedy});
  }
  StageOutput out;
  RETURN_IF_ERROR(stage.Run(batch, &out));
  double total = 0;
  for (int64_t i = 0; i < steps; ++i) {
    for (int64_t s = 0; s < sequences; ++s) {
      SequenceChunk& c = batch.chunks[s];
      c.start_pos = kPrompt + i;
      c.num_tokens = 1;
      c.token_ids = {std::max(out.greedy[s], 0)};
    }
    const auto t0 = Clock::now();
    RETURN_IF_ERROR(stage.Run(batch, &out));
    total += Seconds(t0, Clock::now());
  }
  for (int64_t s = 0; s < sequences; ++s) stage.Free(kFirstSeq + s);
  return sequences * steps / total;
}

absl::StatusOr<Figures> Measure(const std::string& model, const std::string& label,
                                const Settings& settings) {
  const int64_t prompt_tokens = settings.prompt_tokens, decode_tokens = settings.decode_tokens;
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model));
  ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(model));
  ASSIGN_OR_RETURN(ModelBytes bytes, MeasureModel(config, *ckpt));

  int64_t most = 1;
  for (int64_t b : settings.decode_batches) most = std::max(most, b);
  StageOptions options;
  options.threads = static_cast<int>(settings.threads);
  options.max_batch_tokens = std::max(prompt_tokens, 16 * most);
  options.max_sequences = 1 + most;
  options.max_context = prompt_tokens + decode_tokens + 16;
  ASSIGN_OR_RETURN(auto stage, Stage::Load(model, config, 0, config.num_layers, options));
  const int nthreads = stage->backend().threads();
  ThreadPool pool(nthreads);
  const double copy_gbps = StreamCopyGBps(pool);

  std::vector<int32_t> prompt(prompt_tokens);
  for (int64_t i = 0; i < prompt_tokens; ++i)
    prompt[i] = 1 + static_cast<int32_t>((i * 7919) % 31000);
  StageOutput out;
  auto prefill = [&](uint64_t seq) -> absl::StatusOr<double> {
    StageBatch b;
    b.chunks.push_back({.seq_id = seq,
                        .start_pos = 0,
                        .num_tokens = prompt_tokens,
                        .token_ids = prompt,
                        .logits = LogitsMode::kLast});
    const auto t0 = Clock::now();
    RETURN_IF_ERROR(stage->Run(b, &out));
    return Seconds(t0, Clock::now());
  };
  // A first pass faults the mapped weights in; the second is measured.
  RETURN_IF_ERROR(prefill(1).status());
  stage->Free(1);
  ASSIGN_OR_RETURN(double prefill_s, prefill(2));

  StageBatch step;
  step.chunks.push_back({.seq_id = 2,
                         .start_pos = prompt_tokens,
                         .num_tokens = 1,
                         .token_ids = {0},
                         .logits = LogitsMode::kLast});
  std::vector<double> step_seconds;
  for (int64_t i = 0; i < decode_tokens; ++i) {
    step.chunks[0].start_pos = prompt_tokens + i;
    step.chunks[0].token_ids[0] = static_cast<int32_t>(
        std::max_element(out.logits.begin(), out.logits.end()) - out.logits.begin());
    const auto t0 = Clock::now();
    RETURN_IF_ERROR(stage->Run(step, &out));
    step_seconds.push_back(Seconds(t0, Clock::now()));
  }
  std::sort(step_seconds.begin(), step_seconds.end());
  double decode_total = 0;
  for (double s : step_seconds) decode_total += s;
  const double decode_tps = decode_tokens / decode_total;
  const double median_step = step_seconds[step_seconds.size() / 2];
  // Bytes one decode step must read: every layer, the final norm, the LM head
  // and one embedding row (the rest of the embedding is not touched).
  const int64_t row_bytes = bytes.embedding_bytes / config.vocab_size;
  const int64_t step_bytes = bytes.total() - bytes.embedding_bytes + row_bytes +
                             (config.tie_word_embeddings ? bytes.embedding_bytes : 0);
  const double decode_gbps = step_bytes / (decode_total / decode_tokens) / 1e9;
  const double prefill_tps = prompt_tokens / prefill_s;
  std::string batched_json;
  std::vector<std::pair<int64_t, double>> batched;
  for (int64_t b : settings.decode_batches) {
    ASSIGN_OR_RETURN(double tps, BatchedDecode(*stage, b, decode_tokens));
    batched.emplace_back(b, tps);
    absl::StrAppend(&batched_json, batched_json.empty() ? "" : ",", "{\"sequences\":", b,
                    ",\"tokens_per_s\":", absl::StrFormat("%.2f", tps), "}");
  }

  std::printf(
      "{\"bench\":\"engine\",\"model\":\"%s\",\"architecture\":\"%s\",\"dtype\":\"%s\","
      "\"quantization\":\"%s\","
      "\"weight_bytes\":%lld,\"decode_bytes_per_token\":%lld,\"threads\":%d,\"backend\":\"%s\","
      "\"stream_copy_gbps\":%.3f,\"prompt_tokens\":%lld,\"prefill_seconds\":%.4f,"
      "\"prefill_tokens_per_s\":%.2f,\"decode_tokens\":%lld,\"decode_tokens_per_s\":%.3f,"
      "\"decode_median_step_ms\":%.3f,\"decode_weight_gbps\":%.3f,"
      "\"decode_fraction_of_copy_bandwidth\":%.4f,\"batched_decode\":[%s]}\n",
      model.c_str(), config.architecture.c_str(), DTypeName(config.torch_dtype),
      config.quant.Describe().c_str(), static_cast<long long>(bytes.total()),
      static_cast<long long>(step_bytes), nthreads, std::string(stage->backend().name()).c_str(),
      copy_gbps, static_cast<long long>(prompt_tokens), prefill_s, prefill_tps,
      static_cast<long long>(decode_tokens), decode_tps, median_step * 1e3, decode_gbps,
      decode_gbps / copy_gbps, batched_json.c_str());
  std::fprintf(stderr,
               "engine_bench: %s %s%s%s, %.2f GB weights, %d threads (%s)\n"
               "  memory bandwidth (STREAM copy)  %8.2f GB/s\n"
               "  prefill (%lld tokens)           %8.1f tokens/s\n"
               "  decode (batch 1)                %8.2f tokens/s  (median step %.1f ms)\n"
               "  decode weight reads             %8.2f GB/s = %.0f%% of copy bandwidth\n",
               config.architecture.c_str(), DTypeName(config.torch_dtype),
               config.quant.quantized() ? ", " : "",
               config.quant.quantized() ? config.quant.Describe().c_str() : "", bytes.total() / 1e9,
               nthreads, std::string(stage->backend().name()).c_str(), copy_gbps,
               static_cast<long long>(prompt_tokens), prefill_tps, decode_tps, median_step * 1e3,
               decode_gbps, 100 * decode_gbps / copy_gbps);
  for (const auto& [b, tps] : batched) {
    std::fprintf(stderr, "  decode, %3lld sequences per step %8.2f tokens/s  (%.1fx batch 1)\n",
                 static_cast<long long>(b), tps, tps / decode_tps);
  }
  return Figures{label, prefill_tps, decode_tps};
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  return strata::BenchMain("engine_bench", strata::Run, argc, argv);
}
