// gateway_bench: many concurrent streams through one gateway.
//
// Starts a local cluster (`strata up`'s processes, mutual TLS inside) and,
// for each concurrency in --streams, opens that many Generate streams at
// once from this process (gRPC callback reactors: no thread per stream here
// either), each --max-tokens greedy tokens of one of four prompts, EOS
// ignored. Every stream must end with the tokens of the single-process run of
// its prompt, or be refused RESOURCE_EXHAUSTED (the gateway's --max-pending);
// anything else is counted as a failure. Reports output tokens/s, stream
// latency p50/p99, and the throughput at each concurrency relative to the
// first. Then sends one --huge-prompt-mb prompt and reports how long the
// refusal took and how much the gateway's resident memory grew.
//
// Prints one JSON object per line, then a summary on stderr.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench_main.h"
#include "runtime/config.h"
#include "runtime/generate.h"
#include "runtime/status_macros.h"
#include "runtime/tokenizer.h"
#include "services/common/server.h"
#include "strata/v1/generation.grpc.pb.h"
#include "tools/flags.h"
#include "tools/launcher.h"
#include "tools/model_maker.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

const char* const kPrompts[] = {"The old lighthouse keeper", "Once upon a time",
                                "In the morning the harbour", "She opened the door"};

double Pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

// One stream, read by a callback reactor; Done() when it finished.
class Stream final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  Stream(v1::Generation::Stub* stub, const v1::GenerateRequest& request,
         std::atomic<int>* remaining, std::mutex* mu, std::condition_variable* cv)
      : remaining_(remaining), mu_(mu), cv_(cv) {
    start_ = Clock::now();
    stub->async()->Generate(&context_, &request, this);
    StartRead(&response_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    if (response_.has_delta()) {
      tokens_.insert(tokens_.end(), response_.delta().token_ids().begin(),
                     response_.delta().token_ids().end());
    }
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& status) override {
    status_ = status;
    seconds_ = std::chrono::duration<double>(Clock::now() - start_).count();
    std::lock_guard<std::mutex> lock(*mu_);
    if (--*remaining_ == 0) cv_->notify_all();
  }
  const grpc::Status& status() const { return status_; }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  double seconds() const { return seconds_; }

 private:
  grpc::ClientContext context_;
  v1::GenerateResponse response_;
  std::vector<int32_t> tokens_;
  grpc::Status status_;
  Clock::time_point start_;
  double seconds_ = 0;
  std::atomic<int>* remaining_;
  std::mutex* mu_;
  std::condition_variable* cv_;
};

struct Outcome {
  int streams = 0, completed = 0, refused = 0, failed = 0, mismatched = 0;
  int64_t tokens = 0;
  double seconds = 0;
  std::vector<double> latency_s;
};

Outcome RunStreams(v1::Generation::Stub* stub, int streams, int max_tokens,
                   const std::vector<std::vector<int32_t>>& want) {
  std::atomic<int> remaining{streams};
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<Stream>> calls;
  const auto t0 = Clock::now();
  for (int i = 0; i < streams; ++i) {
    v1::GenerateRequest r;
    r.set_prompt(kPrompts[i % 4]);
    r.set_max_tokens(max_tokens);
    r.set_ignore_eos(true);
    calls.push_back(std::make_unique<Stream>(stub, r, &remaining, &mu, &cv));
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return remaining == 0; });
  }
  Outcome o;
  o.streams = streams;
  o.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  for (int i = 0; i < streams; ++i) {
    const Stream& s = *calls[i];
    if (s.status().ok()) {
      ++o.completed;
      o.tokens += static_cast<int64_t>(s.tokens().size());
      o.latency_s.push_back(s.seconds());
      if (s.tokens() != want[i % 4]) ++o.mismatched;
    } else if (s.status().error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++o.refused;
    } else {
      ++o.failed;
      if (o.failed == 1) {
        std::fprintf(stderr, "gateway_bench: stream %d: %s\n", i,
                     s.status().error_message().c_str());
      }
    }
  }
  return o;
}

absl::Status Run(int argc, char** argv) {
  std::string model, strata = STRATA_BINARY, streams_list = "50,200,500";
  int64_t max_tokens = 16, workers = 2, max_pending = 256, max_sequences = 64, huge_mb = 100;
  FlagSet flags;
  flags.String("model", &model, "model folder (default: the embedded default model)");
  flags.String("streams", &streams_list, "concurrent streams to measure (50,200,500)");
  flags.Int("max-tokens", &max_tokens, "tokens per stream (16)");
  flags.Int("workers", &workers, "pipeline stages (2)");
  flags.Int("max-pending", &max_pending, "the gateway's queue bound (256)");
  flags.Int("max-sequences", &max_sequences, "sequences in the running batch (64)");
  flags.Int("huge-prompt-mb", &huge_mb, "size of the prompt that must be refused (100)");
  flags.String("strata", &strata, "the strata executable");
  RETURN_IF_ERROR(flags.Parse(std::vector<std::string>(argv + 1, argv + argc)));
  std::vector<int> counts;
  for (absl::string_view part : absl::StrSplit(streams_list, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 1) {
      return absl::InvalidArgumentError(absl::StrCat("--streams: bad value \"", part, "\""));
    }
    counts.push_back(v);
  }
  if (model.empty()) {
    ASSIGN_OR_RETURN(model, DefaultModelDir());
  }

  // The single-process tokens of each prompt.
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model));
  ASSIGN_OR_RETURN(auto tokenizer, LoadTokenizer(model));
  StageOptions so;
  so.max_sequences = 1;
  ASSIGN_OR_RETURN(auto pipeline, LocalPipeline::Load(model, config, {}, so));
  std::vector<std::vector<int32_t>> want;
  for (const char* p : kPrompts) {
    GenerateRequest g;
    ASSIGN_OR_RETURN(g.prompt_ids, tokenizer->Encode(p, tokenizer->add_bos_by_default()));
    g.max_tokens = max_tokens;
    g.ignore_eos = true;
    ASSIGN_OR_RETURN(GenerateResult r, Generate(*pipeline, g, [](int32_t) {}));
    want.push_back(r.tokens);
  }

  UpOptions up;
  up.binary = strata;
  up.model_dir = model;
  up.workers = static_cast<int>(workers);
  up.max_pending = static_cast<int>(max_pending);
  up.max_sequences = max_sequences;
  LocalCluster cluster;
  RETURN_IF_ERROR(cluster.Start(up));
  auto stub = v1::Generation::NewStub(Dial(cluster.gateway()));
  RunStreams(stub.get(), 4, 4, want);  // warm up

  std::string summary = "streams  done  refused  failed  wrong  tok/s    p50 s   p99 s  vs first\n";
  double first_tps = 0;
  for (int n : counts) {
    const Outcome o = RunStreams(stub.get(), n, static_cast<int>(max_tokens), want);
    const double tps = o.tokens / o.seconds;
    if (first_tps == 0) first_tps = tps;
    std::printf(
        "{\"bench\": \"gateway_streams\", \"streams\": %d, \"max_tokens\": %lld, \"completed\": "
        "%d, \"refused\": %d, \"failed\": %d, \"mismatched\": %d, \"output_tokens_per_s\": %.1f, "
        "\"latency_p50_s\": %.3f, \"latency_p99_s\": %.3f, \"throughput_vs_first\": %.3f}\n",
        n, static_cast<long long>(max_tokens), o.completed, o.refused, o.failed, o.mismatched, tps,
        Pct(o.latency_s, 0.5), Pct(o.latency_s, 0.99), tps / first_tps);
    absl::StrAppendFormat(&summary, "%7d %5d %8d %7d %6d %7.0f %7.3f %7.3f %8.2f\n", n, o.completed,
                          o.refused, o.failed, o.mismatched, tps, Pct(o.latency_s, 0.5),
                          Pct(o.latency_s, 0.99), tps / first_tps);
  }

  // The huge prompt: how fast it is refused, and what it costs the gateway.
  int gateway_pid = -1;
  for (absl::string_view line : absl::StrSplit(cluster.AddressLines(), '\n')) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() >= 3 && f[0] == "gateway") (void)absl::SimpleAtoi(f[2], &gateway_pid);
  }
  const int64_t rss_before = ResidentKiB(gateway_pid);
  v1::GenerateRequest huge;
  huge.set_prompt(std::string(static_cast<size_t>(huge_mb) << 20, 'a'));
  huge.set_max_tokens(1);
  grpc::ClientContext ctx;
  const auto t0 = Clock::now();
  auto reader = stub->Generate(&ctx, huge);
  v1::GenerateResponse ignored;
  while (reader->Read(&ignored)) {
  }
  const grpc::Status st = reader->Finish();
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  const int64_t rss_after = ResidentKiB(gateway_pid);
  std::printf(
      "{\"bench\": \"gateway_huge_prompt\", \"prompt_mb\": %lld, \"code\": \"%s\", "
      "\"refused_ms\": %.1f, \"gateway_rss_growth_mib\": %.1f}\n",
      static_cast<long long>(huge_mb),
      st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED
          ? "RESOURCE_EXHAUSTED"
          : std::to_string(st.error_code()).c_str(),
      ms, (rss_after - rss_before) / 1024.0);
  absl::StrAppendFormat(&summary, "%lld MB prompt: code %d after %.1f ms; gateway RSS %+.1f MiB\n",
                        static_cast<long long>(huge_mb), st.error_code(), ms,
                        (rss_after - rss_before) / 1024.0);
  std::fputs(summary.c_str(), stderr);
  return cluster.Stop();
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  return strata::BenchMain("gateway_bench", strata::Run, argc, argv);
}
