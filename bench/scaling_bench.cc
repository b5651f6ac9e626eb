// scaling_bench: does Strata keep every GPU busy? Simulated GPUs
// (`--device sim:NAME`, runtime/backend/sim/sim_backend.h) on the full shapes
// of published models (zero weights in sparse files), with the real
// coordinator, scheduler, gRPC step headers, peer-group hops (a socket in
// NCCL's place) and gateway.
//
// For each model shape, GPU kind and GPU count it serves three layouts:
//   chosen       the layout search's replicas x stages (--replicas 0);
//   pipeline     one pipeline over every GPU, --inflight-per-stage
//                micro-batches per stage in flight (--replicas 1);
//   accelerate   what `device_map="auto"` does: one pipeline, one batch in
//                flight, a fixed batch of --accelerate-batch sequences;
// and at each concurrency runs that many client streams of one completion
// each. It reports output tokens/s, TTFT and ITL p50/p99 and each GPU's busy
// fraction (time in steps / wall time), prints JSON lines and a table, and
// plots throughput against GPUs (gnuplot, when installed).
//
// --slowdown K runs every simulated GPU K times slower than its table row
// (its bandwidth and FLOP/s divided by K): the host's own work per token (the
// gRPC hops, the gateway, the clients) then has K times as long, so the
// scaling measured is the layout's rather than the host's. Throughputs are
// the slowed GPUs' own; compare ratios to one GPU. In the --scale-gpus run
// the coordinator's CPU per step is compared with the table's (unslowed)
// A100 step either way.
//
// --scale-gpus N then serves N simulated GPUs as the layout of
// --scale-replicas replicas of a --scale-layers-layer checkpoint, and
// measures the coordinator's own CPU time per step (in all, and less what it
// uses idle, measured for 2 s first), compared with one stage's and one
// replica's decode step, and the failover time with one worker killed under
// load.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench_main.h"
#include "bench/load_gen.h"
#include "runtime/config.h"
#include "runtime/device_table.h"
#include "runtime/status_macros.h"
#include "services/common/server.h"
#include "strata/v1/coordinator.grpc.pb.h"
#include "strata/v1/worker.grpc.pb.h"
#include "tools/flags.h"
#include "tools/launcher.h"
#include "tools/model_maker.h"

namespace strata {
namespace {

struct Shape {
  std::string flavour, size;
};

// The full shape with zero weights (sparse files: no disk), made once.
absl::StatusOr<std::string> ZeroShape(const std::string& cache, const Shape& shape, int layers) {
  const std::string dir =
      absl::StrCat(cache, "/zeros-", shape.size, layers > 0 ? absl::StrCat("-", layers, "l") : "");
  if (std::ifstream(dir + "/config.json").good()) return dir;
  ModelSpec spec;
  spec.flavour = shape.flavour;
  spec.size = shape.size;
  spec.init = "zeros";
  spec.layers = layers;
  RETURN_IF_ERROR(MakeModel(spec, dir));
  return dir;
}

absl::StatusOr<Shape> ParseShape(const std::string& size) {
  if (size == "qwen2.5-3b") return Shape{"qwen2", size};
  if (size == "hy-mt1.5-1.8b") return Shape{"hunyuan-dense", size};
  return absl::InvalidArgumentError(
      absl::StrCat("--shapes: \"", size, "\" is not qwen2.5-3b or hy-mt1.5-1.8b"));
}

// CPU seconds (user + system) a process has used, from /proc.
double CpuSeconds(int pid) {
  std::ifstream f(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::vector<std::string> fields = absl::StrSplit(text.substr(close + 2), ' ');
  if (fields.size() < 13) return 0;
  return (std::stod(fields[11]) + std::stod(fields[12])) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

// "role address pid metrics" lines -> role -> pid.
std::map<std::string, int> Pids(const LocalCluster& cluster) {
  std::map<std::string, int> out;
  std::istringstream lines(cluster.AddressLines());
  std::string role, address, metrics;
  int pid = 0;
  while (lines >> role >> address >> pid >> metrics) out[role] = pid;
  return out;
}

struct WorkerSample {
  double busy = 0, modelled = 0, achieved = 0;
  uint64_t steps = 0;
  int32_t layer_begin = 0;
};

std::vector<WorkerSample> SampleWorkers(const LocalCluster& cluster) {
  std::vector<WorkerSample> out;
  for (const auto& [name, address] : cluster.workers()) {
    auto stub = v1::Worker::NewStub(Dial(address, &cluster.operator_security()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::WorkerStatus st;
    WorkerSample s;
    if (stub->GetStatus(&ctx, {}, &st).ok()) {
      s = {st.busy_seconds(), st.modelled_seconds(), st.achieved_seconds(), st.steps(),
           st.layer_begin()};
    }
    out.push_back(s);
  }
  return out;
}

struct Setting {
  std::string name;  // chosen | pipeline | accelerate
  int replicas = 1;
  int inflight = 0;
  int64_t max_sequences = 0;
};

absl::Status Run(int argc, char** argv) {
  std::string shapes_list = "qwen2.5-3b,hy-mt1.5-1.8b", gpus_list = "a100-40gb,rtx-3090",
              counts_list = "1,2,4,8", conc_list = "1,16,64,256",
              layouts_list = "chosen,pipeline,accelerate", plot = "scaling.png",
              strata = STRATA_BINARY, cache;
  int64_t max_tokens = 64, prompt_tokens = 128, accelerate_batch = 8, scale_gpus = 32,
          scale_replicas = 8, scale_layers = 64, scale_concurrency = 256;
  double slowdown = 1;
  bool per_gpu = false, plan_load = true;
  int64_t inflight_per_stage = 1, max_batch_tokens = 512, requests = 1, decode_rows = -1;
  FlagSet flags;
  flags.Bool(
      "plan-load", &plan_load,
      "the chosen and pipeline layouts are planned for the load's prompt and completion "
      "lengths (--plan-prompt-tokens, --plan-output-tokens); false: for decode steps (true)");
  flags.Int("max-batch-tokens", &max_batch_tokens, "prompt tokens per step (512)");
  flags.Int("max-decode-rows", &decode_rows,
            "decode tokens a step carries beside a full prompt chunk (-1: the coordinator's "
            "default)");
  flags.Int("requests", &requests,
            "requests each client stream sends one after another (1); more measure a steadier "
            "state, with less of the burst's start and end");
  flags.Int("inflight-per-stage", &inflight_per_stage,
            "the pipeline layout's micro-batches in flight per stage (1)");
  flags.Bool("per-gpu", &per_gpu,
             "--concurrency is per GPU: N GPUs get N times the streams (saturation at every N)");
  flags.Float("slowdown", &slowdown,
              "simulated GPUs run this many times slower than their table rows (1)");
  flags.String("shapes", &shapes_list, "model shapes (qwen2.5-3b,hy-mt1.5-1.8b)");
  flags.String("gpus", &gpus_list,
               "simulated GPU kinds from the device table (a100-40gb,rtx-3090)");
  flags.String("counts", &counts_list, "GPU counts (1,2,4,8)");
  flags.String("concurrency", &conc_list, "client streams (1,16,64,256)");
  flags.String("layouts", &layouts_list, "chosen,pipeline,accelerate");
  flags.Int("max-tokens", &max_tokens, "tokens per completion (64)");
  flags.Int("prompt-tokens", &prompt_tokens, "prompt length (128)");
  flags.Int("accelerate-batch", &accelerate_batch, "the accelerate layout's fixed batch (8)");
  flags.String("plot", &plot, "PNG of throughput against GPUs (scaling.png; empty: none)");
  flags.Int("scale-gpus", &scale_gpus, "GPUs of the coordinator-cost run (32; 0: skip it)");
  flags.Int("scale-replicas", &scale_replicas, "its replicas (8)");
  flags.Int("scale-layers", &scale_layers, "its checkpoint's layers, Qwen2.5-3B's shape (64)");
  flags.Int("scale-concurrency", &scale_concurrency, "its client streams (256)");
  flags.String("cache", &cache, "where the zero-weight shapes go (~/.cache/strata/models)");
  flags.String("strata", &strata, "the strata executable");
  RETURN_IF_ERROR(flags.Parse(std::vector<std::string>(argv + 1, argv + argc)));
  if (!(slowdown >= 1) || slowdown > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("--slowdown: must be in [1, 1000], got ", slowdown));
  }
  if (inflight_per_stage < 1 || inflight_per_stage > 64) {
    return absl::InvalidArgumentError("--inflight-per-stage: must be in [1, 64]");
  }
  if (requests < 1 || requests > 10000) {
    return absl::InvalidArgumentError("--requests: must be in [1, 10000]");
  }
  if (max_batch_tokens < 1 || max_batch_tokens > 8192) {
    return absl::InvalidArgumentError("--max-batch-tokens: must be in [1, 8192]");
  }
  ASSIGN_OR_RETURN(std::vector<int> counts, IntList("counts", counts_list));
  ASSIGN_OR_RETURN(std::vector<int> concurrencies, IntList("concurrency", conc_list));
  if (cache.empty()) {
    const char* home = std::getenv("HOME");
    cache = absl::StrCat(home != nullptr ? home : "/tmp", "/.cache/strata/models");
  }
  std::vector<Shape> shapes;
  for (absl::string_view s : absl::StrSplit(shapes_list, ',', absl::SkipEmpty())) {
    ASSIGN_OR_RETURN(Shape shape, ParseShape(std::string(s)));
    shapes.push_back(shape);
  }
  std::vector<std::string> gpus = absl::StrSplit(gpus_list, ',', absl::SkipEmpty());
  for (const std::string& g : gpus) {
    if (absl::Status st = FindDevice(g).status(); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--gpus: ", st.message()));
    }
  }
  const int top_per = *std::max_element(concurrencies.begin(), concurrencies.end());
  const int64_t top =
      top_per * static_cast<int64_t>(per_gpu ? *std::max_element(counts.begin(), counts.end()) : 1);
  std::vector<Setting> settings;
  for (absl::string_view l : absl::StrSplit(layouts_list, ',', absl::SkipEmpty())) {
    if (l == "chosen") {
      settings.push_back({"chosen", 0, 0, top});
    } else if (l == "pipeline") {
      settings.push_back({"pipeline", 1, 0, top});
    } else if (l == "accelerate") {
      settings.push_back({"accelerate", 1, 1, accelerate_batch});
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--layouts: \"", l, "\" is not chosen, pipeline or accelerate"));
    }
  }
  // Every sequence's context: the prompt and its completion, in 16-token blocks.
  const int64_t context = (prompt_tokens + max_tokens + 15) / 16 * 16;

  std::string table = absl::StrFormat("%-14s %-10s %4s %-10s %5s %9s %9s %17s %17s  %s\n", "shape",
                                      "gpu", "gpus", "layout", "conc", "out tok/s", "all tok/s",
                                      "TTFT p50/p99 ms", "ITL p50/p99 ms", "busy per GPU");
  // (shape, gpu, layout) -> gpus -> tokens/s at the top concurrency.
  std::map<std::string, std::map<int, double>> curves;
  for (const Shape& shape : shapes) {
    ASSIGN_OR_RETURN(std::string model, ZeroShape(cache, shape, 0));
    ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model));
    const std::vector<int32_t> prompt = PromptIds(prompt_tokens, config.vocab_size);
    for (const std::string& gpu : gpus) {
      for (int n : counts) {
        for (const Setting& setting : settings) {
          UpOptions up;
          up.binary = strata;
          up.model_dir = model;
          up.workers = n;
          up.worker_devices.assign(n, "sim:" + gpu);
          up.replicas = setting.replicas;
          up.max_inflight_steps = setting.name == "pipeline"
                                      ? static_cast<int>(inflight_per_stage * n)
                                      : setting.inflight;
          up.max_sequences = setting.max_sequences;
          up.max_context = context;
          up.max_batch_tokens = max_batch_tokens;
          up.threads = 1;
          up.max_pending = static_cast<int>(std::max<int64_t>(up.max_pending, top));
          if (plan_load && setting.name != "accelerate") {
            up.coordinator_flags = {"--plan-prompt-tokens", absl::StrCat(prompt_tokens),
                                    "--plan-output-tokens", absl::StrCat(max_tokens)};
          }
          up.coordinator_flags.insert(up.coordinator_flags.end(),
                                      {"--max-decode-rows", absl::StrCat(decode_rows)});
          if (slowdown != 1) {
            const DeviceModel row = *FindDevice(gpu);
            up.worker_flags = {"--sim-bandwidth", absl::StrCat(row.bandwidth / slowdown),
                               "--sim-flops", absl::StrCat(row.flops / slowdown)};
          }
          LocalCluster cluster;
          absl::Status started = cluster.Start(up);
          if (!started.ok()) {
            std::printf(
                "{\"bench\": \"scaling\", \"shape\": \"%s\", \"gpu\": \"%s\", \"gpus\": %d, "
                "\"layout\": \"%s\", \"error\": \"does not start\"}\n",
                shape.size.c_str(), gpu.c_str(), n, setting.name.c_str());
            absl::StrAppend(
                &table, absl::StrFormat("%-14s %-10s %4d %-10s  does not start: %s\n", shape.size,
                                        gpu, n, setting.name, started.message().substr(0, 80)));
            cluster.Stop().IgnoreError();
            continue;
          }
          const v1::ModelInfo& info = cluster.info().model();
          const int replicas = std::max(1, info.replicas_size());
          const int stages = info.layer_map().stages_size();
          // Replica 0's stages as layer counts, e.g. "4,4,5,3".
          std::string cuts;
          for (const auto& st : info.layer_map().stages()) {
            absl::StrAppend(&cuts, cuts.empty() ? "" : ",", st.layer_end() - st.layer_begin());
          }
          RunLoad(cluster.gateway(), 1, 1, 4, prompt);  // warm up
          for (int per : concurrencies) {
            const int c = per_gpu ? per * n : per;
            const std::vector<WorkerSample> before = SampleWorkers(cluster);
            const Load load =
                RunLoad(cluster.gateway(), c, static_cast<int>(requests), max_tokens, prompt);
            const std::vector<WorkerSample> after = SampleWorkers(cluster);
            const double tps = static_cast<double>(load.tokens) / load.seconds;
            // Prompt and output tokens: what a prefill-heavy load is measured by.
            const double all_tps =
                static_cast<double>(load.tokens + (c * requests - load.failures) * prompt_tokens) /
                load.seconds;
            std::string busy, busy_json, steps_json, step_ms_json;
            double modelled = 0, achieved = 0;
            for (size_t w = 0; w < after.size(); ++w) {
              const double b = (after[w].busy - before[w].busy) / load.seconds;
              modelled += after[w].modelled - before[w].modelled;
              achieved += after[w].achieved - before[w].achieved;
              absl::StrAppendFormat(&busy, "%s%.0f%%", w ? " " : "", 100 * b);
              absl::StrAppendFormat(&busy_json, "%s%.3f", w ? ", " : "", b);
              const uint64_t st = after[w].steps - before[w].steps;
              absl::StrAppendFormat(&steps_json, "%s%llu", w ? ", " : "",
                                    static_cast<unsigned long long>(st));
              absl::StrAppendFormat(
                  &step_ms_json, "%s%.2f", w ? ", " : "",
                  st > 0 ? 1e3 * (after[w].modelled - before[w].modelled) / st : 0.0);
            }
            std::printf(
                "{\"bench\": \"scaling\", \"shape\": \"%s\", \"gpu\": \"%s\", \"gpus\": %d, "
                "\"layout\": \"%s\", \"replicas\": %d, \"stages\": %d, \"concurrency\": %d, "
                "\"slowdown\": %g, \"prompt_tokens\": %lld, \"max_batch_tokens\": %lld, "
                "\"requests_per_stream\": %lld, "
                "\"planned_for_load\": %s, \"cuts\": \"%s\", \"failures\": %d, "
                "\"output_tokens_per_s\": %.1f, \"total_tokens_per_s\": %.1f, "
                "\"ttft_p50_ms\": %.2f, "
                "\"ttft_p99_ms\": %.2f, \"itl_p50_ms\": %.2f, \"itl_p99_ms\": %.2f, "
                "\"busy\": [%s], \"steps\": [%s], \"modelled_step_ms\": [%s], "
                "\"sim_achieved_over_modelled\": %.4f}\n",
                shape.size.c_str(), gpu.c_str(), n, setting.name.c_str(), replicas, stages, c,
                slowdown, static_cast<long long>(prompt_tokens),
                static_cast<long long>(max_batch_tokens), static_cast<long long>(requests),
                plan_load && setting.name != "accelerate" ? "true" : "false", cuts.c_str(),
                load.failures, tps, all_tps, Pct(load.ttft_ms, 0.5), Pct(load.ttft_ms, 0.99),
                Pct(load.itl_ms, 0.5), Pct(load.itl_ms, 0.99), busy_json.c_str(),
                steps_json.c_str(), step_ms_json.c_str(), modelled > 0 ? achieved / modelled : 0.0);
            std::fflush(stdout);
            absl::StrAppend(&table,
                            absl::StrFormat("%-14s %-10s %4d %-10s %5d %9.1f %9.1f "
                                            "%8.1f/%-8.1f %8.2f/%-8.2f  %s (%dx%d)\n",
                                            shape.size, gpu, n, setting.name, c, tps, all_tps,
                                            Pct(load.ttft_ms, 0.5), Pct(load.ttft_ms, 0.99),
                                            Pct(load.itl_ms, 0.5), Pct(load.itl_ms, 0.99), busy,
                                            replicas, stages));
            if (per == top_per) {
              curves[absl::StrCat(shape.size, " ", gpu, " ", setting.name)][n] = tps;
            }
            if (load.failures > 0) {
              return absl::InternalError(absl::StrCat(load.failures, " requests failed"));
            }
          }
          RETURN_IF_ERROR(cluster.Stop());
        }
      }
    }
  }
  std::fprintf(stderr, "scaling_bench: %lld-token prompts, %lld tokens each\n%s",
               static_cast<long long>(prompt_tokens), static_cast<long long>(max_tokens),
               table.c_str());

  if (!plot.empty() && !curves.empty()) {
    const std::string data = plot + ".dat", script = plot + ".gp";
    std::ofstream d(data);
    std::ofstream g(script);
    g << "set terminal pngcairo size 1100,700\nset output '" << plot << "'\n"
      << "set xlabel 'simulated GPUs'\nset ylabel 'output tokens/s at concurrency " << top_per
      << (per_gpu ? " per GPU" : "") << "'\n"
      << (slowdown != 1 ? absl::StrCat("set title 'simulated GPUs ", slowdown,
                                       " times slower than their data sheets'\n")
                        : std::string())
      << "set logscale xy 2\nset key outside right\nset grid\nplot ";
    int index = 0;
    for (const auto& [label, points] : curves) {
      d << "# " << label << "\n";
      for (const auto& [n, tps] : points) d << n << " " << tps << "\n";
      d << "\n\n";
      g << (index ? ", " : "") << "'" << data << "' index " << index << " with linespoints title '"
        << label << "'";
      ++index;
    }
    g << "\n";
    d.close();
    g.close();
    const int rc = std::system(absl::StrCat("gnuplot ", script, " 2>&1").c_str());
    if (rc == 0) {
      // Intermediates: kept only when gnuplot could not draw them.
      std::remove(data.c_str());
      std::remove(script.c_str());
      std::fprintf(stderr, "plot: %s\n", plot.c_str());
    } else {
      std::fprintf(stderr, "no plot (gnuplot missing?): data and script in %s, %s\n", data.c_str(),
                   script.c_str());
    }
  }

  if (scale_gpus <= 0) return absl::OkStatus();
  // The coordinator's own cost per step, and failover, at scale.
  ASSIGN_OR_RETURN(std::string model,
                   ZeroShape(cache, {"qwen2", "qwen2.5-3b"}, static_cast<int>(scale_layers)));
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model));
  const std::vector<int32_t> prompt = PromptIds(prompt_tokens, config.vocab_size);
  UpOptions up;
  up.binary = strata;
  up.model_dir = model;
  up.workers = static_cast<int>(scale_gpus);
  up.worker_devices.assign(scale_gpus, "sim:a100-40gb");
  up.replicas = static_cast<int>(scale_replicas);
  up.max_inflight_steps = 0;
  up.max_sequences = scale_concurrency;
  up.coordinator_flags = {"--max-decode-rows", absl::StrCat(decode_rows)};
  up.max_context = context;
  up.threads = 1;
  if (slowdown != 1) {
    const DeviceModel row = *FindDevice("a100-40gb");
    up.worker_flags = {"--sim-bandwidth", absl::StrCat(row.bandwidth / slowdown), "--sim-flops",
                       absl::StrCat(row.flops / slowdown)};
  }
  up.startup_timeout_ms = 300'000;
  LocalCluster cluster;
  RETURN_IF_ERROR(cluster.Start(up));
  const std::map<std::string, int> pids = Pids(cluster);
  const int coordinator_pid = pids.at("coordinator");
  RunLoad(cluster.gateway(), 1, 1, 4, prompt);
  auto steps = [&] {
    // Every step passes its replica's first stage once.
    uint64_t n = 0;
    for (const WorkerSample& s : SampleWorkers(cluster)) n += s.layer_begin == 0 ? s.steps : 0;
    return n;
  };
  // The coordinator's CPU with no requests (heartbeats of every worker, its
  // control loop), to tell a step's own cost from what it spends anyway.
  const double idle_cpu0 = CpuSeconds(coordinator_pid);
  const auto idle_start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const double idle_rate =
      (CpuSeconds(coordinator_pid) - idle_cpu0) /
      std::chrono::duration<double>(std::chrono::steady_clock::now() - idle_start).count();
  const uint64_t steps0 = steps();
  const double cpu0 = CpuSeconds(coordinator_pid);
  const std::vector<WorkerSample> before = SampleWorkers(cluster);
  const Load load =
      RunLoad(cluster.gateway(), static_cast<int>(scale_concurrency), 1, max_tokens, prompt);
  const double cpu = CpuSeconds(coordinator_pid) - cpu0;
  const uint64_t ran = steps() - steps0;
  const std::vector<WorkerSample> after = SampleWorkers(cluster);
  double decode_model = 0;  // a decode step's modelled time on one A100 stage
  uint64_t stage_steps = 0;
  for (size_t w = 0; w < after.size(); ++w) {
    decode_model += after[w].modelled - before[w].modelled;
    stage_steps += after[w].steps - before[w].steps;
  }
  const double per_step_us = ran > 0 ? 1e6 * cpu / static_cast<double>(ran) : 0;
  const double marginal_us =
      ran > 0 ? 1e6 * std::max(0.0, cpu - idle_rate * load.seconds) / static_cast<double>(ran) : 0;
  // A stage's modelled step on an A100 of the table (the slowed one's, divided back),
  // and a replica's decode step: all of its stages.
  const double stage_step_us = stage_steps > 0 ? 1e6 * decode_model / stage_steps / slowdown : 0;
  const int replicas_run = static_cast<int>(std::max<int64_t>(1, scale_replicas));
  const double replica_step_us = stage_step_us * static_cast<double>(scale_gpus) / replicas_run;
  // Failover under load: kill one worker of the last replica.
  std::thread loader([&] {
    RunLoad(cluster.gateway(), static_cast<int>(scale_concurrency / 2), 1, max_tokens * 2, prompt);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const std::string victim = absl::StrCat("worker-", scale_gpus - 1);
  kill(pids.at(victim), SIGKILL);
  loader.join();
  auto coordinator =
      v1::Coordinator::NewStub(Dial(cluster.coordinator(), &cluster.operator_security()));
  grpc::ClientContext ctx;
  v1::ClusterInfo info;
  RETURN_IF_ERROR(FromGrpcStatus(coordinator->GetClusterInfo(&ctx, {}, &info)));
  const v1::FailoverEvent& f = info.last_failover();
  const double failover_ms = f.map_ready_unix_us() > f.detected_unix_us()
                                 ? (f.map_ready_unix_us() - f.detected_unix_us()) / 1000.0
                                 : -1;
  std::printf(
      "{\"bench\": \"scaling_coordinator\", \"gpus\": %lld, \"slowdown\": %g, \"replicas\": %d, "
      "\"layers\": %lld, "
      "\"concurrency\": %lld, \"output_tokens_per_s\": %.1f, \"steps\": %llu, "
      "\"coordinator_cpu_us_per_step\": %.1f, \"coordinator_idle_cpu_share\": %.4f, "
      "\"coordinator_step_cpu_us\": %.1f, \"stage_step_modelled_us\": %.1f, "
      "\"replica_decode_step_modelled_us\": %.1f, "
      "\"coordinator_share_of_stage_step\": %.4f, \"coordinator_share_of_decode_step\": %.4f, "
      "\"failover_ms\": %.1f, \"failures\": %d}\n",
      static_cast<long long>(scale_gpus), slowdown, info.model().replicas_size(),
      static_cast<long long>(scale_layers), static_cast<long long>(scale_concurrency),
      load.tokens / load.seconds, static_cast<unsigned long long>(ran), per_step_us, idle_rate,
      marginal_us, stage_step_us, replica_step_us,
      stage_step_us > 0 ? per_step_us / stage_step_us : 0.0,
      replica_step_us > 0 ? per_step_us / replica_step_us : 0.0, failover_ms, load.failures);
  std::fprintf(stderr,
               "%lld simulated A100s, %d replicas of a %lld-layer Qwen2.5-3B shape: %.1f tokens/s "
               "at %lld streams; coordinator %.1f us CPU per step, %.1f us less its idle %.1f%% "
               "of a core (a stage's modelled step on a table A100: %.1f us, %.1f%%; a replica's "
               "decode step: %.1f us, %.1f%%); failover of one killed worker: %.1f ms (GPUs %g "
               "times slower than the table)\n",
               static_cast<long long>(scale_gpus), info.model().replicas_size(),
               static_cast<long long>(scale_layers), load.tokens / load.seconds,
               static_cast<long long>(scale_concurrency), per_step_us, marginal_us, 100 * idle_rate,
               stage_step_us, stage_step_us > 0 ? 100 * per_step_us / stage_step_us : 0.0,
               replica_step_us, replica_step_us > 0 ? 100 * per_step_us / replica_step_us : 0.0,
               failover_ms, slowdown);
  return cluster.Stop();
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  return strata::BenchMain("scaling_bench", strata::Run, argc, argv);
}
