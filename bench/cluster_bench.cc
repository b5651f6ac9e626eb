// cluster_bench: a gRPC load generator against real local clusters.
//
// For each worker count it starts `strata up`-style processes (coordinator,
// workers, gateway on loopback), then for each concurrency runs that many
// client streams, each issuing `--requests` completions of `--max-tokens`
// tokens (EOS ignored) from a `--prompt-tokens`-token prompt. It reports time
// to first token, inter-token latency (p50/p99) and output tokens/s, plus the
// coordinator's per-step figures: step latency, compute inside it, and the
// per-hop overhead (latency minus compute, over stages + 1 transfers).
// The single-process baseline (`strata generate`'s path, in this process)
// gives batch-1 decode tokens/s to compare the pipeline against.
//
// Prints one JSON object per line, then a summary table on stderr.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench_main.h"
#include "bench/load_gen.h"
#include "runtime/config.h"
#include "runtime/generate.h"
#include "runtime/status_macros.h"
#include "services/common/server.h"
#include "strata/v1/coordinator.grpc.pb.h"
#include "strata/v1/generation.grpc.pb.h"
#include "tools/flags.h"
#include "tools/launcher.h"
#include "tools/model_maker.h"

namespace strata {
namespace {

absl::Status Run(int argc, char** argv) {
  std::string model, workers_list = "1,2,4", conc_list = "1,4,16", strata = STRATA_BINARY;
  int64_t requests = 2, max_tokens = 64, prompt_tokens = 32, threads = 0, inflight = 1;
  FlagSet flags;
  flags.String("model", &model, "model folder (default: the embedded default model)");
  flags.String("workers", &workers_list, "worker counts to measure (1,2,4)");
  flags.String("concurrency", &conc_list, "client streams to measure (1,4,16)");
  flags.Int("requests", &requests, "completions per stream (2)");
  flags.Int("max-tokens", &max_tokens, "tokens per completion (64)");
  flags.Int("prompt-tokens", &prompt_tokens, "prompt length (32)");
  flags.Int("threads", &threads, "CPU threads per worker and for the baseline; 0 = all cores");
  flags.String("strata", &strata, "the strata executable");
  flags.Int("max-inflight-steps", &inflight,
            "micro-batches in the pipeline; 0 = one per stage (1)");
  RETURN_IF_ERROR(flags.Parse(std::vector<std::string>(argv + 1, argv + argc)));
  ASSIGN_OR_RETURN(std::vector<int> worker_counts, IntList("workers", workers_list));
  ASSIGN_OR_RETURN(std::vector<int> concurrencies, IntList("concurrency", conc_list));
  if (requests < 1 || max_tokens < 2 || prompt_tokens < 1) {
    return absl::InvalidArgumentError(
        "--requests, --max-tokens (>= 2), --prompt-tokens: too small");
  }
  if (model.empty()) {
    ASSIGN_OR_RETURN(model, DefaultModelDir());
  }
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model));
  const std::vector<int32_t> prompt = PromptIds(prompt_tokens, config.vocab_size);

  // Single-process baseline: batch-1 decode through one stage.
  double baseline_tps = 0;
  {
    StageOptions so;
    so.threads = static_cast<int>(threads);
    so.max_sequences = 1;
    ASSIGN_OR_RETURN(auto pipeline, LocalPipeline::Load(model, config, {}, so));
    GenerateRequest req;
    req.prompt_ids = prompt;
    req.max_tokens = max_tokens;
    req.ignore_eos = true;
    double best = 0;
    for (int pass = 0; pass < 3; ++pass) {
      ASSIGN_OR_RETURN(GenerateResult r, Generate(*pipeline, req, nullptr));
      best = std::max(best, (r.tokens.size() - 1) / r.decode_seconds);
    }
    baseline_tps = best;
    std::printf(
        "{\"bench\": \"single_process\", \"model\": \"%s\", \"decode_tokens_per_s\": %.1f}\n",
        model.c_str(), baseline_tps);
  }

  std::string summary = absl::StrCat(
      "workers conc  tok/s   TTFT p50/p99 ms   ITL p50/p99 ms   step p50 us  compute p50 us  "
      "per-hop p50 us  stream decode vs 1 process\n");
  for (int w : worker_counts) {
    UpOptions up;
    up.binary = strata;
    up.model_dir = model;
    up.workers = w;
    up.threads = static_cast<int>(threads);
    up.max_inflight_steps = static_cast<int>(inflight);
    up.max_sequences = *std::max_element(concurrencies.begin(), concurrencies.end());
    LocalCluster cluster;
    RETURN_IF_ERROR(cluster.Start(up));
    auto coordinator =
        v1::Coordinator::NewStub(Dial(cluster.coordinator(), &cluster.operator_security()));
    RunLoad(cluster.gateway(), 1, 1, 8, prompt);  // warm up
    for (int c : concurrencies) {
      {
        grpc::ClientContext ctx;
        v1::GetClusterInfoRequest reset;
        reset.set_reset_stats(true);
        v1::ClusterInfo ignored;
        coordinator->GetClusterInfo(&ctx, reset, &ignored);
      }
      const Load load =
          RunLoad(cluster.gateway(), c, static_cast<int>(requests), max_tokens, prompt);
      grpc::ClientContext ctx;
      v1::ClusterInfo info;
      RETURN_IF_ERROR(FromGrpcStatus(coordinator->GetClusterInfo(&ctx, {}, &info)));
      const v1::PipelineStats& s = info.stats();
      const double tps = load.tokens / load.seconds;
      std::printf(
          "{\"bench\": \"cluster\", \"workers\": %d, \"concurrency\": %d, \"requests\": %lld, "
          "\"failures\": %d, \"output_tokens_per_s\": %.1f, \"ttft_p50_ms\": %.3f, "
          "\"ttft_p99_ms\": %.3f, \"itl_p50_ms\": %.3f, \"itl_p99_ms\": %.3f, \"steps\": %llu, "
          "\"step_latency_p50_us\": %.1f, \"compute_p50_us\": %.1f, "
          "\"per_hop_overhead_p50_us\": %.1f, \"stream_decode_tokens_per_s\": %.2f, "
          "\"stream_decode_vs_single_process\": %.3f}\n",
          w, c, static_cast<long long>(requests) * c, load.failures, tps, Pct(load.ttft_ms, 0.5),
          Pct(load.ttft_ms, 0.99), Pct(load.itl_ms, 0.5), Pct(load.itl_ms, 0.99),
          static_cast<unsigned long long>(s.steps()), s.latency_p50_us(), s.compute_p50_us(),
          s.per_hop_overhead_p50_us(), load.decode_tokens_per_s(),
          load.decode_tokens_per_s() / baseline_tps);
      std::fflush(stdout);
      absl::StrAppend(
          &summary,
          absl::StrFormat("%7d %4d %7.1f   %7.2f / %-7.2f  %6.2f / %-7.2f  %10.0f  %14.0f  "
                          "%14.1f  %5.1f%%\n",
                          w, c, tps, Pct(load.ttft_ms, 0.5), Pct(load.ttft_ms, 0.99),
                          Pct(load.itl_ms, 0.5), Pct(load.itl_ms, 0.99), s.latency_p50_us(),
                          s.compute_p50_us(), s.per_hop_overhead_p50_us(),
                          100.0 * load.decode_tokens_per_s() / baseline_tps));
      if (load.failures > 0) {
        return absl::InternalError(
            absl::StrCat(load.failures, " requests failed at ", w, " workers, concurrency ", c));
      }
    }
    RETURN_IF_ERROR(cluster.Stop());
  }
  std::fprintf(stderr, "cluster_bench: %s\nsingle process batch-1 decode: %.1f tokens/s\n%s",
               model.c_str(), baseline_tps, summary.c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  return strata::BenchMain("cluster_bench", strata::Run, argc, argv);
}
