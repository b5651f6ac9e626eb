// failover_bench: what a client sees when a worker dies or hangs under load.
//
// Starts a local cluster (default: 4 workers on the embedded model), keeps
// `--streams` clients busy with seeded completions, then kills one worker
// (SIGKILL, then in a second cluster SIGSTOP) and reports, from the kill:
// the time to detection and to the new map loaded and serving (from the
// coordinator's failover record), and to the first token the new map
// delivered; the longest pause a stream saw; and, against each request's
// single-process run, the tokens lost and duplicated (both must be 0).
// JSON lines on stdout, a summary on stderr.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/bench_main.h"
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

int64_t NowUs() { return absl::ToUnixMicros(absl::Now()); }

struct Outcome {
  std::vector<int64_t> token_times_after_kill;  // wall clock, microseconds
  int64_t longest_gap_us = 0;
  int64_t tokens = 0, lost = 0, duplicated = 0, mismatched = 0, failed = 0, requests = 0;
};

absl::StatusOr<std::map<uint64_t, std::vector<int32_t>>> References(
    const std::string& model, const std::vector<int32_t>& prompt, int64_t max_tokens, int seeds) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model));
  StageOptions so;
  so.max_sequences = 1;
  ASSIGN_OR_RETURN(auto pipeline, LocalPipeline::Load(model, config, {}, so));
  std::map<uint64_t, std::vector<int32_t>> out;
  for (int s = 0; s < seeds; ++s) {
    GenerateRequest r;
    r.prompt_ids = prompt;
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    r.sampling.temperature = 0.8f;
    r.sampling.seed = s;
    ASSIGN_OR_RETURN(GenerateResult g, Generate(*pipeline, r, nullptr));
    out[s] = g.tokens;
  }
  return out;
}

absl::Status Run(int argc, char** argv) {
  std::string model, strata = STRATA_BINARY;
  int64_t workers = 4, streams = 8, max_tokens = 96, delay_ms = 2, kill_after_ms = 1500,
          run_ms = 5000;
  FlagSet flags;
  flags.String("model", &model, "model folder (default: the embedded default model)");
  flags.Int("workers", &workers, "workers in the cluster (4)");
  flags.Int("streams", &streams, "client streams kept busy (8)");
  flags.Int("max-tokens", &max_tokens, "tokens per completion (96)");
  flags.Int("step-delay-ms", &delay_ms, "per-worker step delay, to make steps last (2)");
  flags.Int("kill-after-ms", &kill_after_ms, "load before the failure (1500)");
  flags.Int("run-ms", &run_ms, "total load time (5000)");
  flags.String("strata", &strata, "the strata executable");
  RETURN_IF_ERROR(flags.Parse(std::vector<std::string>(argv + 1, argv + argc)));
  if (workers < 2) return absl::InvalidArgumentError("--workers: at least 2");
  if (model.empty()) {
    ASSIGN_OR_RETURN(model, DefaultModelDir());
  }
  std::vector<int32_t> prompt;
  for (int i = 0; i < 24; ++i) prompt.push_back(5 + (i * 31) % 400);
  constexpr int kSeeds = 64;
  ASSIGN_OR_RETURN(auto refs, References(model, prompt, max_tokens, kSeeds));

  std::string summary;
  for (int sig : {SIGKILL, SIGSTOP}) {
    UpOptions up;
    up.binary = strata;
    up.model_dir = model;
    up.workers = static_cast<int>(workers);
    up.threads = 1;
    up.worker_flags = {"--debug-step-delay-ms", std::to_string(delay_ms)};
    LocalCluster cluster;
    RETURN_IF_ERROR(cluster.Start(up));
    // The victim: the middle worker.
    std::istringstream lines(cluster.AddressLines());
    std::string role, addr, metrics;
    pid_t pid = 0, victim = 0;
    const std::string victim_name = absl::StrCat("worker-", workers / 2);
    while (lines >> role >> addr >> pid >> metrics) {
      if (role == victim_name) victim = pid;
    }
    if (victim == 0) return absl::InternalError("no victim pid");

    std::atomic<int64_t> kill_us{0};
    std::atomic<bool> stop{false};
    std::mutex mu;
    Outcome out;
    std::vector<std::thread> clients;
    for (int c = 0; c < streams; ++c) {
      clients.emplace_back([&, c] {
        auto stub = v1::Generation::NewStub(Dial(cluster.gateway()));
        for (int r = 0; !stop; ++r) {
          const uint64_t seed = (c * 7 + r) % kSeeds;
          v1::GenerateRequest req;
          req.mutable_prompt_tokens()->mutable_ids()->Add(prompt.begin(), prompt.end());
          req.set_max_tokens(static_cast<uint32_t>(max_tokens));
          req.set_ignore_eos(true);
          req.mutable_sampling()->set_temperature(0.8f);
          req.mutable_sampling()->set_seed(seed);
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
          auto reader = stub->Generate(&ctx, req);
          v1::GenerateResponse resp;
          std::vector<int32_t> got;
          int64_t last = NowUs(), gap = 0;
          std::vector<int64_t> after;
          while (reader->Read(&resp)) {
            if (!resp.has_delta() || resp.delta().token_ids_size() == 0) continue;
            const int64_t now = NowUs();
            gap = std::max(gap, now - last);
            last = now;
            if (kill_us != 0 && now > kill_us) after.push_back(now);
            got.insert(got.end(), resp.delta().token_ids().begin(), resp.delta().token_ids().end());
          }
          const bool ok = reader->Finish().ok();
          const std::vector<int32_t>& ref = refs[seed];
          std::lock_guard<std::mutex> lock(mu);
          ++out.requests;
          if (!ok) {
            ++out.failed;
            continue;
          }
          out.tokens += static_cast<int64_t>(got.size());
          out.longest_gap_us = std::max(out.longest_gap_us, gap);
          out.token_times_after_kill.insert(out.token_times_after_kill.end(), after.begin(),
                                            after.end());
          if (got != ref) {
            ++out.mismatched;
            out.lost += std::max<int64_t>(0, static_cast<int64_t>(ref.size() - got.size()));
            out.duplicated += std::max<int64_t>(0, static_cast<int64_t>(got.size() - ref.size()));
          }
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kill_after_ms));
    kill_us = NowUs();
    kill(victim, sig);
    auto coordinator =
        v1::Coordinator::NewStub(Dial(cluster.coordinator(), &cluster.operator_security()));
    v1::ClusterInfo info;
    const int64_t poll_until = NowUs() + 20'000'000;
    while (NowUs() < poll_until) {
      grpc::ClientContext ctx;
      if (coordinator->GetClusterInfo(&ctx, {}, &info).ok() &&
          info.last_failover().map_ready_unix_us() != 0) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::max<int64_t>(0, run_ms - kill_after_ms)));
    stop = true;
    for (auto& t : clients) t.join();
    if (sig == SIGSTOP) kill(victim, SIGCONT);
    cluster.Stop().IgnoreError();

    const v1::FailoverEvent& f = info.last_failover();
    const double detect_ms = f.detected_unix_us() ? (f.detected_unix_us() - kill_us) / 1000.0 : -1;
    const double ready_ms = f.map_ready_unix_us() ? (f.map_ready_unix_us() - kill_us) / 1000.0 : -1;
    // The first token produced by the new map (tokens of steps that had
    // already passed the victim can still arrive before it).
    int64_t first_after = 0;
    for (int64_t t : out.token_times_after_kill) {
      if (t > f.map_ready_unix_us() && (first_after == 0 || t < first_after)) first_after = t;
    }
    const double first_ms = first_after ? (first_after - kill_us) / 1000.0 : -1;
    const char* name = sig == SIGKILL ? "SIGKILL" : "SIGSTOP";
    std::printf(
        "{\"bench\": \"failover\", \"signal\": \"%s\", \"workers\": %lld, \"streams\": %lld, "
        "\"detection_ms\": %.1f, \"map_ready_ms\": %.1f, \"first_token_after_failure_ms\": %.1f, "
        "\"longest_stream_pause_ms\": %.1f, \"requests\": %lld, \"failed_requests\": %lld, "
        "\"tokens\": %lld, \"tokens_lost\": %lld, \"tokens_duplicated\": %lld, "
        "\"mismatched_requests\": %lld, \"epoch\": %llu}\n",
        name, static_cast<long long>(workers), static_cast<long long>(streams), detect_ms, ready_ms,
        first_ms, out.longest_gap_us / 1000.0, static_cast<long long>(out.requests),
        static_cast<long long>(out.failed), static_cast<long long>(out.tokens),
        static_cast<long long>(out.lost), static_cast<long long>(out.duplicated),
        static_cast<long long>(out.mismatched), static_cast<unsigned long long>(f.epoch()));
    std::fflush(stdout);
    absl::StrAppendFormat(&summary,
                          "%-8s detection %7.1f ms  map ready %7.1f ms  first token after %7.1f "
                          "ms  longest pause %7.1f ms  requests %lld (failed %lld)  tokens %lld "
                          "lost %lld duplicated %lld\n",
                          name, detect_ms, ready_ms, first_ms, out.longest_gap_us / 1000.0,
                          static_cast<long long>(out.requests), static_cast<long long>(out.failed),
                          static_cast<long long>(out.tokens), static_cast<long long>(out.lost),
                          static_cast<long long>(out.duplicated));
  }
  std::fprintf(stderr, "failover_bench: %s, %lld workers, %lld streams\n%s", model.c_str(),
               static_cast<long long>(workers), static_cast<long long>(streams), summary.c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  return strata::BenchMain("failover_bench", strata::Run, argc, argv);
}
