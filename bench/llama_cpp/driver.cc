// The llama.cpp side of bench/llama_cpp_compare.sh: loads a GGUF file with
// llama.cpp's public C API and measures it the way engine_bench measures
// Strata (one prefill of N tokens into an empty cache, timed after a warm-up
// pass; then batch-1 decode steps after that prompt, each step one
// llama_decode of the previous greedy token). Built by the script against a
// llama.cpp source tree; not part of Strata's CMake build.
//
//   llama_cpp_driver MODEL.gguf THREADS PROMPT_TOKENS DECODE_TOKENS
//
// Prints one JSON object on stdout.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "llama.h"

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void Quiet(enum ggml_log_level level, const char* text, void*) {
  if (level >= GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

int Fail(const char* what) {
  std::fprintf(stderr, "llama_cpp_driver: %s\n", what);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5)
    return Fail("usage: llama_cpp_driver MODEL.gguf THREADS PROMPT_TOKENS DECODE_TOKENS");
  const char* path = argv[1];
  const int threads = std::atoi(argv[2]);
  const int prompt_tokens = std::atoi(argv[3]);
  const int decode_tokens = std::atoi(argv[4]);
  if (threads < 1 || prompt_tokens < 1 || decode_tokens < 1)
    return Fail("arguments must be positive");

  llama_log_set(Quiet, nullptr);
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  llama_model* model = llama_model_load_from_file(path, mp);
  if (model == nullptr) return Fail("could not load the model");
  const int vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = prompt_tokens + decode_tokens + 16;
  cp.n_batch = prompt_tokens;
  cp.n_ubatch = prompt_tokens;
  cp.n_seq_max = 1;
  cp.n_threads = threads;
  cp.n_threads_batch = threads;
  cp.no_perf = true;
  llama_context* ctx = llama_init_from_model(model, cp);
  if (ctx == nullptr) return Fail("could not create a context");

  // The same prompt ids engine_bench uses.
  std::vector<llama_token> prompt(prompt_tokens);
  for (int i = 0; i < prompt_tokens; ++i) prompt[i] = 1 + (i * 7919) % 31000 % vocab;

  auto prefill = [&]() -> double {
    llama_memory_clear(llama_get_memory(ctx), true);
    const auto t0 = Clock::now();
    if (llama_decode(ctx, llama_batch_get_one(prompt.data(), prompt_tokens)) != 0) return -1;
    llama_synchronize(ctx);
    return Since(t0);
  };
  if (prefill() < 0) return Fail("prefill failed");  // faults the weights in
  const double prefill_s = prefill();
  if (prefill_s < 0) return Fail("prefill failed");

  std::vector<double> steps;
  for (int i = 0; i < decode_tokens; ++i) {
    const float* logits = llama_get_logits_ith(ctx, -1);
    llama_token next = static_cast<llama_token>(std::max_element(logits, logits + vocab) - logits);
    const auto t0 = Clock::now();
    if (llama_decode(ctx, llama_batch_get_one(&next, 1)) != 0) return Fail("decode failed");
    llama_synchronize(ctx);
    steps.push_back(Since(t0));
  }
  double total = 0;
  for (double s : steps) total += s;
  std::sort(steps.begin(), steps.end());
  std::printf(
      "{\"engine\":\"llama.cpp\",\"threads\":%d,\"prompt_tokens\":%d,\"prefill_seconds\":%.4f,"
      "\"prefill_tokens_per_s\":%.2f,\"decode_tokens\":%d,\"decode_tokens_per_s\":%.3f,"
      "\"decode_median_step_ms\":%.3f,\"system\":\"%s\"}\n",
      threads, prompt_tokens, prefill_s, prompt_tokens / prefill_s, decode_tokens,
      decode_tokens / total, steps[steps.size() / 2] * 1e3, llama_print_system_info());
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
