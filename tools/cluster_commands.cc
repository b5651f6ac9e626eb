// strata coordinator | worker | gateway | up | client | plan
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "runtime/backend/backend.h"
#include "runtime/config.h"
#include "runtime/device_table.h"
#include "runtime/status_macros.h"
#include "services/common/certs.h"
#include "services/common/server.h"
#include "services/common/signals.h"
#include "services/coordinator/coordinator.h"
#include "services/coordinator/layout.h"
#include "services/coordinator/planner.h"
#include "services/coordinator/scheduler.h"
#include "services/gateway/gateway.h"
#include "services/worker/worker.h"
#include "tools/client.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/launcher.h"
#include "tools/model_maker.h"

namespace strata {
namespace {

absl::Status ModelOrDefault(std::string* model) {
  if (!model->empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(*model, DefaultModelDir());
  return absl::OkStatus();
}

// A size flag ("24GiB"); an empty value leaves `*out` as it is.
// "a100-40gb*4" -> ("a100-40gb", 4); no "*N": 1 copy. `flag` names the
// entry in the error.
absl::Status SplitRepeat(const std::string& flag, int64_t max, std::string* item, int64_t* copies) {
  *copies = 1;
  const size_t star = item->find('*');
  if (star == std::string::npos) return absl::OkStatus();
  if (!absl::SimpleAtoi(item->substr(star + 1), copies) || *copies < 1 || *copies > max) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": \"", *item, "\" should repeat a device 1..", max, " times, like a100-40gb*4"));
  }
  item->resize(star);
  return absl::OkStatus();
}

absl::Status BytesFlag(const char* flag, const std::string& text, int64_t* out) {
  if (text.empty()) return absl::OkStatus();
  auto b = ParseBytes(text);
  if (!b.ok())
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", b.status().message()));
  *out = *b;
  return absl::OkStatus();
}

// --tls-cert, --tls-key, --tls-ca: this process's mutual TLS.
void DeclareTls(FlagSet& f, TlsFiles* tls) {
  f.String("tls-cert", &tls->cert,
           "this process's certificate (PEM), signed by the cluster CA; with --tls-key and "
           "--tls-ca turns on mutual TLS (none: plaintext)");
  f.String("tls-key", &tls->key, "its private key (PEM)");
  f.String("tls-ca", &tls->ca, "the cluster CA's certificate (PEM); peers must chain to it");
}

// --plan-prompt-tokens, --plan-output-tokens: the load the layout search
// plans for (`coordinator` and `plan`).
void DeclarePlanLoad(FlagSet& f, int64_t* prompt, int64_t* output) {
  f.Int("plan-prompt-tokens", prompt,
        "plan the layout for requests with prompts of this many tokens on average, their "
        "prefill weighed beside decode (with --plan-output-tokens; 0: decode steps alone)");
  f.Int("plan-output-tokens", output,
        "the planned requests' mean completion length (with --plan-prompt-tokens)");
}

absl::Status CheckPlanLoad(int64_t prompt, int64_t output) {
  RETURN_IF_ERROR(IntIn("plan-prompt-tokens", prompt, 0, 1 << 24));
  RETURN_IF_ERROR(IntIn("plan-output-tokens", output, 0, 1 << 24));
  if ((prompt > 0) != (output > 0)) {
    return absl::InvalidArgumentError(
        "--plan-prompt-tokens, --plan-output-tokens: give both (a load of prompts and "
        "completions) or neither");
  }
  return absl::OkStatus();
}

// The request flags shared by `client` and `up --prompt`.
struct RequestFlags {
  std::string prompt;
  int64_t max_tokens = 64, top_k = 0, seed = -1;
  double temperature = 0, top_p = 1, repetition_penalty = 1, min_p = 0;
  double presence_penalty = 0, frequency_penalty = 0;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool chat = false;
  std::string system;

  void Declare(FlagSet& f) {
    f.String("prompt", &prompt, "text to complete");
    f.Int("max-tokens", &max_tokens, "tokens to generate at most (64)");
    f.Float("temperature", &temperature, "0 = greedy (0)");
    f.Int("top-k", &top_k, "keep the k most likely tokens; 0 = off (0)");
    f.Float("top-p", &top_p, "nucleus sampling mass; 1 = off (1)");
    f.Float("min-p", &min_p, "drop tokens below min-p x the top probability; 0 = off (0)");
    f.Float("repetition-penalty", &repetition_penalty, "1 = off (1)");
    f.Float("presence-penalty", &presence_penalty, "OpenAI's, in [-2, 2]; 0 = off (0)");
    f.Float("frequency-penalty", &frequency_penalty, "OpenAI's, in [-2, 2]; 0 = off (0)");
    f.Int("seed", &seed, "sampling seed (none: the gateway draws one, printed with --stats)");
    f.Strings("stop", &stop, "a stop sequence; repeat the flag for several");
    f.Bool("ignore-eos", &ignore_eos, "keep generating past end-of-sequence");
    f.Bool("chat", &chat, "send the prompt as a user message, in the model's chat template");
    f.String("system", &system, "a system message before it (implies --chat)");
  }
  absl::StatusOr<v1::GenerateRequest> Build() const {
    RETURN_IF_ERROR(IntIn("max-tokens", max_tokens, 1, INT32_MAX));
    RETURN_IF_ERROR(IntIn("top-k", top_k, 0, INT32_MAX));
    RETURN_IF_ERROR(IntIn("seed", seed, -1, INT64_MAX));
    v1::GenerateRequest r;
    if (chat || !system.empty()) {
      v1::Conversation* c = r.mutable_messages();
      if (!system.empty()) {
        v1::ChatMessage* m = c->add_messages();
        m->set_role("system");
        m->set_content(system);
      }
      v1::ChatMessage* m = c->add_messages();
      m->set_role("user");
      m->set_content(prompt);
    } else {
      r.set_prompt(prompt);
    }
    r.set_max_tokens(static_cast<uint32_t>(max_tokens));
    r.mutable_sampling()->set_temperature(static_cast<float>(temperature));
    r.mutable_sampling()->set_top_k(static_cast<int32_t>(top_k));
    r.mutable_sampling()->set_top_p(static_cast<float>(top_p));
    r.mutable_sampling()->set_min_p(static_cast<float>(min_p));
    r.mutable_sampling()->set_repetition_penalty(static_cast<float>(repetition_penalty));
    r.mutable_sampling()->set_presence_penalty(static_cast<float>(presence_penalty));
    r.mutable_sampling()->set_frequency_penalty(static_cast<float>(frequency_penalty));
    if (seed >= 0) r.mutable_sampling()->set_seed(static_cast<uint64_t>(seed));
    r.set_ignore_eos(ignore_eos);
    for (const std::string& s : stop) r.add_stop(s);
    return r;
  }
};

}  // namespace

absl::Status CoordinatorCommand(const std::vector<std::string>& args) {
  CoordinatorOptions o;
  int64_t workers = o.workers, startup = o.startup_timeout_ms, inflight = 0,
          drain = o.drain_timeout_ms, heartbeat = o.heartbeat_ms,
          heartbeat_timeout = o.heartbeat_timeout_ms;
  FlagSet f;
  f.String("model", &o.model_dir, "model folder, as the workers see it (default: embedded model)");
  f.String("listen", &o.listen, "host:port to serve on; port 0 picks one (127.0.0.1:0)");
  f.String("address-file", &o.address_file, "write \"grpc-address metrics-address\" here");
  f.String("metrics-listen", &o.metrics_listen,
           "host:port for /metrics; port 0 picks one; empty = none (127.0.0.1:0)");
  f.String("health-listen", &o.health_listen,
           "host:port of a plaintext port serving only gRPC health, for probes that cannot "
           "speak mutual TLS (none)");
  f.Int("workers", &workers, "serve once this many workers registered (1)");
  f.Int("startup-timeout-ms", &startup, "for registration and loading (60000)");
  f.String("layers", &o.layers, "manual split, e.g. 0-9,10-21 (default: the planner)");
  int64_t replicas = o.replicas;
  f.Int("replicas", &replicas,
        "pipeline replicas: 0 = as the layout search chooses (CPU workers of one host form "
        "one pipeline; CPU workers beside GPUs join only when the GPUs cannot hold the model); "
        "1 = one pipeline over every worker; N = N replicas of workers/N stages (0)");
  f.Int("max-sequences", &o.max_sequences,
        "concurrent sequences per replica; the KV budget on CPU workers, the cap on GPUs (16)");
  std::string kv_budget = "memory";
  f.String("kv-budget", &kv_budget,
           "memory: a GPU worker's KV cache takes what its memory budget leaves (capped by "
           "--max-sequences); fixed: --max-sequences x --max-context everywhere (memory)");
  f.Int("max-context", &o.max_context, "tokens per sequence; 0 = the model's, capped at 8192");
  f.Int("max-batch-tokens", &o.max_batch_tokens, "prompt tokens per step: the prefill chunk (512)");
  f.Int("max-decode-rows", &o.max_decode_rows,
        "decode tokens a step carries beside a full prompt chunk; -1 = min(--max-sequences, "
        "--max-batch-tokens); 0 = they share --max-batch-tokens (-1)");
  f.Int("max-inflight-steps", &inflight, "micro-batches in the pipeline; 0 = one per stage");
  DeclarePlanLoad(f, &o.plan_prompt_tokens, &o.plan_output_tokens);
  f.Int("drain-timeout-ms", &drain, "how long running requests may finish on shutdown (30000)");
  f.Int("heartbeat-ms", &heartbeat, "how often workers send a heartbeat (200)");
  f.Int("heartbeat-timeout-ms", &heartbeat_timeout,
        "a worker silent this long is lost: hung or stopped (1000)");
  int64_t registrations = o.registrations_per_minute, admit = o.admit_delay_ms,
          prune = o.prune_after_ms, watchdog = o.step_watchdog_ms;
  f.Int("registrations-per-minute", &registrations,
        "worker registrations taken per minute, as a burst too; more are told to retry (120)");
  f.Int("admit-delay-ms", &admit,
        "a worker joining a serving cluster is planned in once attached this long (1000)");
  f.Int("prune-after-ms", &prune, "a lost worker outside the map is forgotten after (300000)");
  f.Int("max-queued", &o.max_queued, "requests waiting for a KV slot, over all gateways (4096)");
  f.Int("step-watchdog-ms", &watchdog,
        "a step not back within max(this, factor x recent p99) is blamed on its stage (5000)");
  f.Float("step-watchdog-factor", &o.step_watchdog_factor,
          "the step deadline as a multiple of the recent p99 step latency (20)");
  DeclareTls(f, &o.tls);
  bool stop = false;
  RETURN_IF_ERROR(ParseOrHelp(f, args, "usage: strata coordinator [flags]", &stop));
  if (stop) return absl::OkStatus();
  RETURN_IF_ERROR(IntIn("workers", workers, 1, 1024));
  RETURN_IF_ERROR(IntIn("replicas", replicas, 0, 1024));
  if (kv_budget != "memory" && kv_budget != "fixed") {
    return absl::InvalidArgumentError("--kv-budget: must be memory or fixed, got " + kv_budget);
  }
  o.kv_from_memory = kv_budget == "memory";
  if (!o.layers.empty() && replicas == 0) replicas = 1;  // a manual split is one pipeline
  if (replicas != 1 && !o.layers.empty()) {
    return absl::InvalidArgumentError("--layers: a manual split needs --replicas 1");
  }
  o.replicas = static_cast<int>(replicas);
  RETURN_IF_ERROR(IntIn("startup-timeout-ms", startup, 1, INT32_MAX));
  RETURN_IF_ERROR(IntIn("max-inflight-steps", inflight, 0, 1024));
  RETURN_IF_ERROR(IntIn("drain-timeout-ms", drain, 0, INT32_MAX));
  RETURN_IF_ERROR(IntIn("max-sequences", o.max_sequences, 1, 65536));
  RETURN_IF_ERROR(IntIn("max-batch-tokens", o.max_batch_tokens, 1, 8192));
  RETURN_IF_ERROR(IntIn("max-decode-rows", o.max_decode_rows, -1, 8192));
  RETURN_IF_ERROR(CheckPlanLoad(o.plan_prompt_tokens, o.plan_output_tokens));
  o.workers = static_cast<int>(workers);
  o.startup_timeout_ms = static_cast<int>(startup);
  o.max_inflight_steps = static_cast<int>(inflight);
  o.drain_timeout_ms = static_cast<int>(drain);
  RETURN_IF_ERROR(IntIn("heartbeat-ms", heartbeat, 10, 60'000));
  RETURN_IF_ERROR(IntIn("heartbeat-timeout-ms", heartbeat_timeout, 2 * heartbeat, INT32_MAX));
  o.heartbeat_ms = static_cast<int>(heartbeat);
  o.heartbeat_timeout_ms = static_cast<int>(heartbeat_timeout);
  RETURN_IF_ERROR(IntIn("registrations-per-minute", registrations, 1, 1'000'000));
  RETURN_IF_ERROR(IntIn("admit-delay-ms", admit, 0, INT32_MAX));
  RETURN_IF_ERROR(IntIn("prune-after-ms", prune, 0, INT32_MAX));
  RETURN_IF_ERROR(IntIn("max-queued", o.max_queued, 1, 1'000'000));
  RETURN_IF_ERROR(IntIn("step-watchdog-ms", watchdog, 100, INT32_MAX));
  if (!(o.step_watchdog_factor >= 1 && o.step_watchdog_factor <= 1e6)) {
    return absl::InvalidArgumentError("--step-watchdog-factor: must be in [1, 1e6]");
  }
  o.registrations_per_minute = static_cast<int>(registrations);
  o.admit_delay_ms = static_cast<int>(admit);
  o.prune_after_ms = static_cast<int>(prune);
  o.step_watchdog_ms = static_cast<int>(watchdog);
  RETURN_IF_ERROR(ModelOrDefault(&o.model_dir));
  return RunCoordinator(o);
}

absl::Status WorkerCommand(const std::vector<std::string>& args) {
  WorkerOptions o;
  std::string capacity, reserve, sim_memory;
  int64_t threads = 0, delay = 0, connect = o.connect_timeout_ms,
          reconnect = o.reconnect_timeout_ms, drain = o.drain_timeout_ms;
  FlagSet f;
  f.String("id", &o.id, "worker id, unique in the cluster (worker-<pid>)");
  f.String("coordinator", &o.coordinator, "host:port of the coordinator (required)");
  f.String("listen", &o.listen, "host:port to serve on; port 0 picks one (127.0.0.1:0)");
  f.String("advertise", &o.advertise, "address peers should use (default: the bound one)");
  f.String("address-file", &o.address_file, "write \"grpc-address metrics-address\" here");
  f.String("metrics-listen", &o.metrics_listen,
           "host:port for /metrics; port 0 picks one; empty = none (127.0.0.1:0)");
  f.String("health-listen", &o.health_listen,
           "host:port of a plaintext port serving only gRPC health, for probes that cannot "
           "speak mutual TLS (none)");
  f.String("device", &o.device,
           "where the stage runs: cpu, cuda, cuda:N, or sim:NAME, a simulated device of the table "
           "(sim:a100-40gb) or sim:custom (cpu)");
  f.String("capacity", &capacity,
           "memory this worker may use, e.g. 24GiB (physical memory; on cuda the free device "
           "memory)");
  f.String("reserve", &reserve, "memory kept free, e.g. 2GiB (a tenth of the capacity)");
  double fraction = 0;
  f.Float("memory-fraction", &fraction,
          "share of the capacity the stage may use, as vLLM's gpu_memory_utilization: sets "
          "--reserve to the rest (0.90 when neither is given)");
  f.Float("speed", &o.speed, "relative speed for the planner (1)");
  f.Int("threads", &threads, "CPU threads; 0 = every core (0)");
  f.Int("connect-timeout-ms", &connect, "to reach the coordinator and the next worker (30000)");
  f.Int("reconnect-timeout-ms", &reconnect,
        "how long to keep registering again after the coordinator went away (30000)");
  f.Int("drain-timeout-ms", &drain, "on SIGTERM, how long to wait to be planned out (30000)");
  f.Int("debug-step-delay-ms", &delay, "fault injection: sleep before every step (0)");
  f.String("sim-memory", &sim_memory,
           "--device sim:custom: the simulated device's memory, e.g. 24GiB (or a table "
           "device's, replaced)");
  f.Float("sim-bandwidth", &o.sim_bandwidth, "--device sim:...: memory bandwidth, bytes/s");
  f.Float("sim-flops", &o.sim_flops, "--device sim:...: dense FLOP/s");
  f.Float("bandwidth", &o.bandwidth,
          "memory bandwidth the layout search models this device with, bytes/s (a known "
          "GPU's from the device table; measured on the CPU)");
  f.Float("flops", &o.flops,
          "dense FLOP/s the layout search models this device with (a known GPU's from the "
          "device table; measured on the CPU)");
  f.Float("debug-load-rate", &o.debug_load_rate,
          "fault injection: read the weights at most this many bytes/s, a slow disk (0: off)");
  f.Int("debug-stall-step", &o.debug_stall_step,
        "fault injection: the Nth step received never finishes while heartbeats go on (0: off)");
  f.String("model-root", &o.model_root,
           "Load may only name model folders inside this one (default: any)");
  DeclareTls(f, &o.tls);
  bool stop = false;
  RETURN_IF_ERROR(
      ParseOrHelp(f, args, "usage: strata worker --coordinator HOST:PORT [flags]", &stop));
  if (stop) return absl::OkStatus();
  RETURN_IF_ERROR(BytesFlag("capacity", capacity, &o.capacity_bytes));
  RETURN_IF_ERROR(BytesFlag("reserve", reserve, &o.reserve_bytes));
  if (fraction != 0) {
    if (!(fraction > 0 && fraction <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--memory-fraction: must be in (0, 1], got ", fraction));
    }
    if (!reserve.empty()) {
      return absl::InvalidArgumentError("--memory-fraction, --reserve: give one of them");
    }
    o.memory_fraction = fraction;
  }
  RETURN_IF_ERROR(BytesFlag("sim-memory", sim_memory, &o.sim_memory_bytes));
  if (o.sim_bandwidth < 0 || o.sim_flops < 0) {
    return absl::InvalidArgumentError("--sim-bandwidth, --sim-flops: must not be negative");
  }
  if (!(o.bandwidth >= 0) || !(o.flops >= 0) || std::isinf(o.bandwidth) || std::isinf(o.flops)) {
    return absl::InvalidArgumentError("--bandwidth, --flops: must be positive (or 0: measured)");
  }
  RETURN_IF_ERROR(IntIn("threads", threads, 0, 1024));
  RETURN_IF_ERROR(IntIn("debug-step-delay-ms", delay, 0, 60'000));
  if (!(o.debug_load_rate >= 0)) {
    return absl::InvalidArgumentError("--debug-load-rate: must not be negative");
  }
  RETURN_IF_ERROR(IntIn("debug-stall-step", o.debug_stall_step, 0, INT64_MAX));
  RETURN_IF_ERROR(IntIn("connect-timeout-ms", connect, 1, INT32_MAX));
  RETURN_IF_ERROR(IntIn("reconnect-timeout-ms", reconnect, 1, INT32_MAX));
  o.reconnect_timeout_ms = static_cast<int>(reconnect);
  RETURN_IF_ERROR(IntIn("drain-timeout-ms", drain, 0, INT32_MAX));
  o.drain_timeout_ms = static_cast<int>(drain);
  o.threads = static_cast<int>(threads);
  o.debug_step_delay_ms = static_cast<int>(delay);
  o.connect_timeout_ms = static_cast<int>(connect);
  return RunWorker(o);
}

absl::Status GatewayCommand(const std::vector<std::string>& args) {
  GatewayOptions o;
  int64_t pending = o.max_pending, drain = o.drain_timeout_ms, connect = o.connect_timeout_ms;
  FlagSet f;
  f.String("coordinator", &o.coordinator, "host:port of the coordinator (required)");
  f.String("listen", &o.listen, "host:port to serve on; port 0 picks one (127.0.0.1:0)");
  f.String("address-file", &o.address_file, "write \"grpc-address metrics-address\" here");
  f.String("metrics-listen", &o.metrics_listen,
           "host:port for /metrics; port 0 picks one; empty = none (127.0.0.1:0)");
  f.String("health-listen", &o.health_listen,
           "host:port of a plaintext port serving only gRPC health, for probes that cannot "
           "speak mutual TLS (none)");
  f.String("model", &o.model_dir, "folder of the tokenizer (default: the coordinator's model)");
  f.Int("max-pending", &pending, "requests in flight through this gateway (256)");
  f.Int("connect-timeout-ms", &connect, "to reach the coordinator (30000)");
  f.Int("drain-timeout-ms", &drain, "how long open streams may finish on shutdown (30000)");
  DeclareTls(f, &o.tls);
  f.String("public-tls-cert", &o.public_tls_cert,
           "certificate (PEM) of the public port, for clients outside the cluster (none: "
           "plaintext)");
  f.String("public-tls-key", &o.public_tls_key, "its private key (PEM)");
  f.String("api-key-file", &o.api_key_file,
           "API keys, one per line: clients must send \"authorization: Bearer KEY\" (none: open)");
  f.String("http-listen", &o.http_listen,
           "host:port of the OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, "
           "/v1/models); port 0 picks one; empty = none");
  f.String("served-model-name", &o.served_model_name,
           "the model's name in the HTTP API (default: the repository name in config.json's "
           "_name_or_path, else the folder's name)");
  bool stop = false;
  RETURN_IF_ERROR(
      ParseOrHelp(f, args, "usage: strata gateway --coordinator HOST:PORT [flags]", &stop));
  if (stop) return absl::OkStatus();
  RETURN_IF_ERROR(IntIn("max-pending", pending, 1, 1'000'000));
  RETURN_IF_ERROR(IntIn("drain-timeout-ms", drain, 0, INT32_MAX));
  RETURN_IF_ERROR(IntIn("connect-timeout-ms", connect, 1, INT32_MAX));
  o.max_pending = static_cast<int>(pending);
  o.drain_timeout_ms = static_cast<int>(drain);
  o.connect_timeout_ms = static_cast<int>(connect);
  return RunGateway(o);
}

// --gpus: "all", GPU indices "0,1,3", or simulated ones "sim:a100-40gb*4"
// (several kinds comma-separated): one worker's --device each.
absl::StatusOr<std::vector<std::string>> ParseGpus(const std::string& spec) {
  std::vector<std::string> devices;
  if (spec == "all") {
    std::string why;
    const int count = CudaDeviceCount(&why);
    if (count <= 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("--gpus all: no CUDA device is visible", why.empty() ? "" : ": ", why));
    }
    for (int i = 0; i < count; ++i) devices.push_back(absl::StrCat("cuda:", i));
    return devices;
  }
  for (absl::string_view item : absl::StrSplit(spec, ',')) {
    std::string what(item);
    int64_t copies = 1;
    if (absl::StartsWith(what, "sim:")) {
      RETURN_IF_ERROR(SplitRepeat("--gpus", 64, &what, &copies));
      if (what != "sim:custom") {
        if (absl::Status st = FindDevice(what.substr(4)).status(); !st.ok()) {
          return absl::InvalidArgumentError(absl::StrCat("--gpus: ", st.message()));
        }
      }
      for (int64_t k = 0; k < copies; ++k) devices.push_back(what);
      continue;
    }
    int index = -1;
    if (!absl::SimpleAtoi(what, &index) || index < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--gpus: \"", what, "\" is not all, a GPU index (0,1,3) or sim:NAME[*N]"));
    }
    devices.push_back(absl::StrCat("cuda:", index));
  }
  if (devices.size() > 64) return absl::InvalidArgumentError("--gpus: at most 64 workers");
  return devices;
}

absl::Status UpCommand(const std::vector<std::string>& args) {
  UpOptions o;
  std::string gpus;
  RequestFlags req;
  std::string address_file, worker_flags;
  int64_t workers = o.workers, threads = 0, inflight = o.max_inflight_steps,
          pending = o.max_pending, startup = o.startup_timeout_ms;
  FlagSet f;
  f.String("model", &o.model_dir, "model folder (default: the embedded default model)");
  f.Int("workers", &workers, "worker processes, one pipeline stage each (2)");
  f.String("gpus", &gpus,
           "one worker per GPU, each with --device cuda:N: all (CUDA_VISIBLE_DEVICES honoured), "
           "indices (0,1,3), or simulated GPUs (sim:a100-40gb*4); sets --workers");
  int64_t cpu_workers = 0;
  f.Int("cpu-workers", &cpu_workers,
        "with --gpus: this many CPU workers too, which the layout search uses only when the "
        "GPUs cannot hold the model, and which otherwise stand by to replace a failed GPU (0)");
  f.String("layers", &o.layers, "manual split, e.g. 0-1,2-3 (default: the planner)");
  int64_t up_replicas = o.replicas;
  f.Int("replicas", &up_replicas,
        "pipeline replicas: 0 = as the layout search chooses (CPU workers of this host form "
        "one pipeline); 1 = one pipeline over every worker; N = N replicas (0)");
  f.Int("max-sequences", &o.max_sequences, "concurrent sequences (16)");
  f.Int("max-context", &o.max_context, "tokens per sequence; 0 = the model's, capped at 8192");
  f.Int("max-batch-tokens", &o.max_batch_tokens, "tokens per step (512)");
  f.Int("max-inflight-steps", &inflight,
        "micro-batches in the pipeline; 0 = one per stage (1: the stages share this machine)");
  f.Int("threads", &threads, "CPU threads per worker; 0 = every core (0)");
  f.Int("max-pending", &pending, "gateway queue bound (256)");
  f.Int("startup-timeout-ms", &startup, "for registration and loading (120000)");
  f.String("log-dir", &o.log_dir, "where the processes log (a new folder under /tmp)");
  f.String("address-file", &address_file, "write \"role address\" lines here once serving");
  f.String("worker-flags", &worker_flags,
           "extra flags for every worker, space-separated; {i} is the worker's index "
           "(--device cuda:{i})");
  std::string coordinator_flags, gateway_flags;
  f.String("coordinator-flags", &coordinator_flags,
           "extra flags for the coordinator, space-separated");
  f.String("gateway-flags", &gateway_flags, "extra flags for the gateway, space-separated");
  f.Bool("insecure", &o.insecure,
         "plaintext between the processes; without it they use mutual TLS with certificates "
         "made for this run in <log-dir>/certs");
  f.String("api-key-file", &o.api_key_file, "API keys the gateway requires (none: open)");
  f.String("http-listen", &o.http_listen,
           "serve the OpenAI-compatible HTTP API here too, e.g. 127.0.0.1:8000 (none)");
  req.Declare(f);
  bool stop = false;
  RETURN_IF_ERROR(ParseOrHelp(f, args,
                              "usage: strata up [--workers N] [--model DIR] [--prompt TEXT]\n"
                              "Starts a coordinator, N workers and a gateway on loopback and "
                              "serves until Ctrl-C.\nWith --prompt, streams one completion "
                              "through the cluster and stops.",
                              &stop));
  if (stop) return absl::OkStatus();
  RETURN_IF_ERROR(IntIn("workers", workers, 1, 64));
  RETURN_IF_ERROR(IntIn("threads", threads, 0, 1024));
  RETURN_IF_ERROR(IntIn("max-inflight-steps", inflight, 0, 1024));
  RETURN_IF_ERROR(IntIn("max-pending", pending, 1, 1'000'000));
  RETURN_IF_ERROR(IntIn("startup-timeout-ms", startup, 1, INT32_MAX));
  RETURN_IF_ERROR(IntIn("max-sequences", o.max_sequences, 1, 65536));
  RETURN_IF_ERROR(IntIn("max-batch-tokens", o.max_batch_tokens, 1, 8192));
  RETURN_IF_ERROR(IntIn("replicas", up_replicas, 0, 64));
  o.replicas = static_cast<int>(up_replicas);
  o.workers = static_cast<int>(workers);
  if (!gpus.empty()) {
    ASSIGN_OR_RETURN(o.worker_devices, ParseGpus(gpus));
    RETURN_IF_ERROR(
        IntIn("cpu-workers", cpu_workers, 0, 64 - static_cast<int64_t>(o.worker_devices.size())));
    for (int64_t i = 0; i < cpu_workers; ++i) o.worker_devices.push_back("cpu");
    o.workers = static_cast<int>(o.worker_devices.size());
  } else if (cpu_workers != 0) {
    return absl::InvalidArgumentError(
        "--cpu-workers: adds CPU workers beside --gpus; without GPUs, --workers N starts N CPU "
        "workers");
  }
  o.threads = static_cast<int>(threads);
  o.max_inflight_steps = static_cast<int>(inflight);
  o.max_pending = static_cast<int>(pending);
  o.startup_timeout_ms = static_cast<int>(startup);
  for (absl::string_view w : absl::StrSplit(worker_flags, ' ', absl::SkipEmpty())) {
    o.worker_flags.emplace_back(w);
  }
  for (absl::string_view w : absl::StrSplit(coordinator_flags, ' ', absl::SkipEmpty())) {
    o.coordinator_flags.emplace_back(w);
  }
  for (absl::string_view w : absl::StrSplit(gateway_flags, ' ', absl::SkipEmpty())) {
    o.gateway_flags.emplace_back(w);
  }
  absl::StatusOr<v1::GenerateRequest> request = req.Build();
  if (!request.ok()) return request.status();
  RETURN_IF_ERROR(ModelOrDefault(&o.model_dir));

  LocalCluster cluster;
  std::fprintf(stderr, "strata up: starting a coordinator, %d worker(s) and a gateway\n",
               o.workers);
  absl::Status st = cluster.Start(o);
  if (!st.ok()) {
    cluster.Stop().IgnoreError();
    return st;
  }
  std::fprintf(stderr, "strata up: serving %s; logs in %s\n", o.model_dir.c_str(),
               cluster.log_dir().c_str());
  const v1::ModelInfo& served = cluster.info().model();
  for (int r = 0; r < std::max(1, served.replicas_size()); ++r) {
    const v1::LayerMap& map = served.replicas_size() > 0 ? served.replicas(r) : served.layer_map();
    if (served.replicas_size() > 1) {
      std::fprintf(stderr, "  replica %d (epoch %llu)\n", r,
                   static_cast<unsigned long long>(map.epoch()));
    }
    for (const auto& s : map.stages()) {
      std::fprintf(stderr, "  stage %d  %-9s %-21s layers %2d-%-2d %s%s  (%s)\n", s.stage(),
                   s.worker_id().c_str(), s.address().c_str(), s.layer_begin(), s.layer_end() - 1,
                   s.embeds() ? "+embed " : "", s.samples() ? "+head" : "", s.reason().c_str());
    }
  }
  std::fprintf(stderr, "  gateway     %s   (layer map epoch %llu)\n", cluster.gateway().c_str(),
               static_cast<unsigned long long>(cluster.info().model().layer_map().epoch()));
  if (!cluster.http().empty()) {
    std::fprintf(stderr, "  HTTP        http://%s/v1 (OpenAI-compatible)\n",
                 cluster.http().c_str());
  }
  std::fprintf(stderr, "  metrics     %s\n", cluster.MetricsSummary().c_str());
  if (!address_file.empty()) {
    RETURN_IF_ERROR(WriteAddressFile(address_file, cluster.AddressLines()));
  }

  if (!req.prompt.empty()) {
    ClientOptions client;
    client.address = cluster.gateway();
    client.request = *request;
    client.stats = true;
    st = StreamCompletion(client, stdout);
    absl::Status stopped = cluster.Stop();
    return st.ok() ? stopped : st;
  }
  std::fprintf(stderr,
               "strata up: try `strata client --address %s --prompt \"...\"`; Ctrl-C "
               "stops the cluster\n",
               cluster.gateway().c_str());
  while (!WaitForShutdown(200)) {
    st = cluster.CheckChildren();
    if (!st.ok()) {
      std::fprintf(stderr, "strata up: %s\nstrata up: stopping the cluster\n",
                   std::string(st.message()).c_str());
      cluster.Stop().IgnoreError();
      return st;
    }
  }
  std::fprintf(stderr, "strata up: draining and stopping\n");
  return cluster.Stop();
}

absl::Status ClientCommand(const std::vector<std::string>& args) {
  ClientOptions o;
  RequestFlags req;
  int64_t timeout = 0;
  bool quiet = false;
  FlagSet f;
  f.String("address", &o.address, "gateway host:port (required)");
  f.Int("timeout-ms", &timeout, "deadline for the whole call; 0 = none");
  f.Bool("stats", &o.stats, "print token counts and timing to stderr");
  f.Bool("no-echo", &quiet, "do not print the prompt before the completion");
  f.String("api-key", &o.api_key, "sent as \"authorization: Bearer KEY\"");
  f.String("tls-ca", &o.tls_ca,
           "connect with TLS, trusting this CA certificate (PEM) for the gateway's (none: "
           "plaintext)");
  req.Declare(f);
  // `strata client "prompt"`: a lone positional argument is the prompt.
  // It may stand anywhere; every other word is a flag or a flag's value.
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    const bool is_flag = args[i].rfind("--", 0) == 0;
    const bool after_valued_flag =
        i > 0 && args[i - 1].rfind("--", 0) == 0 && args[i - 1].find('=') == std::string::npos &&
        args[i - 1] != "--stats" && args[i - 1] != "--no-echo" && args[i - 1] != "--ignore-eos" &&
        args[i - 1] != "--help" && args[i - 1] != "--chat" && args[i - 1] != "--insecure";
    if (!is_flag && !after_valued_flag && req.prompt.empty()) {
      req.prompt = args[i];
    } else {
      rest.push_back(args[i]);
    }
  }
  bool stop = false;
  RETURN_IF_ERROR(
      ParseOrHelp(f, rest, "usage: strata client --address HOST:PORT \"prompt\" [flags]", &stop));
  if (stop) return absl::OkStatus();
  if (o.address.empty()) return absl::InvalidArgumentError("--address: required (the gateway)");
  if (req.prompt.empty()) return absl::InvalidArgumentError("prompt: required");
  RETURN_IF_ERROR(IntIn("timeout-ms", timeout, 0, INT32_MAX));
  o.timeout_ms = static_cast<int>(timeout);
  o.echo_prompt = !quiet;
  ASSIGN_OR_RETURN(o.request, req.Build());
  return StreamCompletion(o, stdout);
}

absl::Status CertsCommand(const std::vector<std::string>& args) {
  std::string out, hosts, names;
  int64_t workers = 2, days = 365;
  FlagSet f;
  f.String("out", &out, "folder for ca.crt/ca.key and NAME.crt/NAME.key (required)");
  f.Int("workers", &workers, "worker certificates worker-0 ... worker-(N-1) (2)");
  f.String("worker-names", &names,
           "worker names instead of worker-<i>, comma-separated (e.g. the pods' names)");
  f.String("hosts", &hosts,
           "DNS names and IPs the servers are reached at, comma-separated (localhost and "
           "127.0.0.1 always)");
  f.Int("days", &days, "validity (365)");
  bool stop = false;
  RETURN_IF_ERROR(ParseOrHelp(
      f, args,
      "usage: strata certs --out DIR [--workers N] [--hosts a,b]\n"
      "Makes a cluster CA (or reuses the one in DIR) and, signed by it, certificates for the "
      "coordinator, the gateway, an operator and each worker.",
      &stop));
  if (stop) return absl::OkStatus();
  if (out.empty()) return absl::InvalidArgumentError("--out: required");
  RETURN_IF_ERROR(IntIn("workers", workers, 0, 4096));
  RETURN_IF_ERROR(IntIn("days", days, 1, 3650));
  std::vector<CertRequest> certs =
      ClusterCertRequests(names.empty() ? static_cast<int>(workers) : 0);
  for (absl::string_view n : absl::StrSplit(names, ',', absl::SkipEmpty())) {
    RETURN_IF_ERROR(ParseIdentityUri(IdentityUri(Role::kWorker, n)).status());
    certs.push_back({Role::kWorker, std::string(n)});
  }
  std::vector<std::string> host_list = absl::StrSplit(hosts, ',', absl::SkipEmpty());
  RETURN_IF_ERROR(MakeCertificates(out, certs, host_list, static_cast<int>(days)));
  std::fprintf(stderr, "strata certs: %zu certificate(s) and the CA in %s\n", certs.size(),
               out.c_str());
  return absl::OkStatus();
}

namespace {

// "a100-40gb*4,24GiB,rtx-3090": the table's devices (memory, bandwidth,
// FLOP/s) or bare capacities, each optionally repeated.
absl::StatusOr<std::vector<DeviceSpec>> ParseDevices(const std::string& list,
                                                     const std::string& speeds) {
  std::vector<DeviceSpec> specs;
  int index = 0;
  for (absl::string_view item : absl::StrSplit(list, ',')) {
    std::string what(item);
    int64_t copies = 1;
    RETURN_IF_ERROR(SplitRepeat(absl::StrCat("--devices[", index, "]"), 4096, &what, &copies));
    DeviceSpec d;
    if (absl::StatusOr<DeviceModel> known = FindDevice(what); known.ok()) {
      d.capacity_bytes = known->memory_bytes;
      d.bandwidth = known->bandwidth;
      d.flops = known->flops;
      d.name = known->name;
    } else {
      absl::StatusOr<int64_t> cap = ParseBytes(what);
      if (!cap.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--devices[", index, "]: neither a size (", cap.status().message(),
                         ") nor a device: ", known.status().message()));
      }
      d.capacity_bytes = *cap;
    }
    for (int64_t k = 0; k < copies; ++k, ++index) {
      DeviceSpec copy = d;
      copy.name = d.name.empty() ? absl::StrCat("device", index) : absl::StrCat(d.name, ".", index);
      specs.push_back(copy);
    }
  }
  std::vector<std::string> sp;
  if (!speeds.empty()) sp = absl::StrSplit(speeds, ',');
  if (!sp.empty() && sp.size() != specs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--speeds: ", sp.size(), " values for ", specs.size(), " devices"));
  }
  for (size_t i = 0; i < sp.size(); ++i) {
    if (!absl::SimpleAtod(sp[i], &specs[i].speed) || !(specs[i].speed > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--speeds[", i, "]: \"", sp[i], "\" is not a positive number"));
    }
  }
  return specs;
}

}  // namespace

absl::Status PlanCommand(const std::vector<std::string>& args) {
  std::string model, devices, speeds, reserve, layers, kv_dtype = "bf16";
  int64_t concurrency = 16, context = 0, batch = 512, replicas = 0, stages = 0,
          max_sequences = 1024;
  double fraction = 0.90;
  FlagSet f;
  f.String("model", &model, "model folder (default: the embedded default model)");
  f.String("devices", &devices,
           "devices in pipeline order: names from the device table (a100-40gb, h100-80gb, h200, "
           "l4, a10, rtx-3090, rtx-4090, rtx-a6000, a100-80gb) or capacities (24GiB), each "
           "optionally repeated: a100-40gb*4");
  f.String("speeds", &speeds, "relative speeds of capacity-only devices, e.g. 1,1,0.5 (all 1)");
  f.Float("memory-fraction", &fraction,
          "share of each device's memory Strata may use; the KV cache gets what the weights "
          "and workspace leave of it (0.90)");
  f.String("reserve", &reserve, "memory kept free on every device on top of that, e.g. 1GiB (0)");
  f.Int("replicas", &replicas, "force this many pipeline replicas (with --stages)");
  f.Int("stages", &stages, "force this many stages per replica (with --replicas)");
  f.Int("max-sequences", &max_sequences, "sequences in flight per replica, at most (1024)");
  f.String("layers", &layers,
           "check a manual split of one pipeline over every device, e.g. 0-9,10-21");
  f.Int("concurrency", &concurrency, "with --layers: sequences the KV budget must hold (16)");
  f.Int("context", &context, "tokens per sequence; 0 = the model's, capped at 8192");
  f.Int("max-batch-tokens", &batch,
        "prompt tokens per step (the prefill chunk); sizes the activation workspace (512)");
  int64_t decode_rows = -1;
  f.Int("max-decode-rows", &decode_rows,
        "decode tokens a step carries beside a full prompt chunk, in the workspace too; -1 = "
        "min(--max-sequences, --max-batch-tokens), as the coordinator (-1)");
  f.String("kv-dtype", &kv_dtype, "KV cache element type: bf16 (GPU) or f32 (CPU) (bf16)");
  int64_t plan_prompt = 0, plan_output = 0;
  DeclarePlanLoad(f, &plan_prompt, &plan_output);
  bool stop = false;
  RETURN_IF_ERROR(ParseOrHelp(
      f, args,
      "usage: strata plan --model DIR --devices a100-40gb*4 [flags]\n"
      "Chooses replicas x stages for the devices and prints each replica's layer cuts with "
      "their reasons, the KV cache the memory holds, and every layout weighed with its modelled "
      "tokens/s.",
      &stop));
  if (stop) return absl::OkStatus();
  if (devices.empty()) return absl::InvalidArgumentError("--devices: required, e.g. a100-40gb*4");
  RETURN_IF_ERROR(IntIn("concurrency", concurrency, 1, 1 << 20));
  RETURN_IF_ERROR(IntIn("context", context, 0, 1 << 24));
  RETURN_IF_ERROR(IntIn("max-batch-tokens", batch, 1, 1 << 20));
  RETURN_IF_ERROR(IntIn("replicas", replicas, 0, 4096));
  RETURN_IF_ERROR(IntIn("stages", stages, 0, 4096));
  RETURN_IF_ERROR(IntIn("max-sequences", max_sequences, 1, 1 << 20));
  RETURN_IF_ERROR(CheckPlanLoad(plan_prompt, plan_output));
  RETURN_IF_ERROR(IntIn("max-decode-rows", decode_rows, -1, 8192));
  if (!(fraction > 0 && fraction <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--memory-fraction: must be in (0, 1], got ", fraction));
  }
  if (kv_dtype != "bf16" && kv_dtype != "f32") {
    return absl::InvalidArgumentError("--kv-dtype: must be bf16 or f32, got " + kv_dtype);
  }
  int64_t reserve_bytes = 0;
  RETURN_IF_ERROR(BytesFlag("reserve", reserve, &reserve_bytes));
  ASSIGN_OR_RETURN(std::vector<DeviceSpec> specs, ParseDevices(devices, speeds));
  for (DeviceSpec& d : specs) {
    d.reserve_bytes = reserve_bytes +
                      static_cast<int64_t>(static_cast<double>(d.capacity_bytes) * (1 - fraction));
  }
  RETURN_IF_ERROR(ModelOrDefault(&model));
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model));
  BudgetOptions budget;
  budget.concurrency = concurrency;
  budget.context = context;
  budget.kv_element_bytes = kv_dtype == "bf16" ? 2 : 4;
  budget.max_batch_tokens = batch;
  budget.decode_rows = SchedulerOptions::DefaultDecodeRows(decode_rows, max_sequences, batch);
  ASSIGN_OR_RETURN(PlanInput input, PlanInputForModel(model, config, specs, budget));
  std::cout << config.architecture << ", " << config.num_layers << " layers; KV "
            << FormatBytes(input.kv_token_bytes * config.num_layers) << " per token, "
            << input.context << " tokens per sequence; workspace "
            << FormatBytes(input.workspace_bytes) << " per device; " << fraction * 100
            << "% of each device's memory\n";
  if (!layers.empty()) {
    ASSIGN_OR_RETURN(auto ranges, ParseLayerRanges(layers, config.num_layers));
    ASSIGN_OR_RETURN(Plan plan, PlanFromRanges(input, ranges));
    std::cout << FormatPlan(plan, input) << "device_map = " << FormatDeviceMap(plan) << "\n";
    return absl::OkStatus();
  }
  LayoutOptions lo;
  lo.replicas = static_cast<int>(replicas);
  lo.stages = static_cast<int>(stages);
  lo.max_sequences = max_sequences;
  lo.prompt_tokens = plan_prompt;
  lo.output_tokens = plan_output;
  ASSIGN_OR_RETURN(Layout layout, PlanLayout(input, lo));
  std::cout << FormatLayout(layout, input)
            << "device_map = " << FormatDeviceMap(layout.replicas.front().plan) << "\n";
  return absl::OkStatus();
}

}  // namespace strata
