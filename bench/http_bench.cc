// http_bench: the OpenAI-compatible HTTP API (SSE) against the gRPC API of
// the same gateway, in one run on one local cluster.
//
// For each concurrency in --concurrency, that many client threads each run
// --requests streamed completions of --max-tokens greedy tokens (EOS
// ignored), first over gRPC, then over HTTP/SSE. Reports time to first
// token, inter-token latency p50/p99 (between consecutive token-carrying
// events as the client receives them) and output tokens/s, and HTTP's ITL
// p50 relative to gRPC's.
//
// Prints one JSON object per line, then a summary on stderr.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench_main.h"
#include "runtime/status_macros.h"
#include "services/common/server.h"
#include "strata/v1/generation.grpc.pb.h"
#include "tools/flags.h"
#include "tools/launcher.h"
#include "tools/model_maker.h"
#include "tools/sse_client.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

const char* const kPrompts[] = {"The old lighthouse keeper", "Once upon a time",
                                "In the morning the harbour", "She opened the door"};

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

struct Timing {
  std::vector<double> ttft_ms, itl_ms;
  int64_t tokens = 0;
  int failures = 0;
  void Add(const Timing& o) {
    ttft_ms.insert(ttft_ms.end(), o.ttft_ms.begin(), o.ttft_ms.end());
    itl_ms.insert(itl_ms.end(), o.itl_ms.begin(), o.itl_ms.end());
    tokens += o.tokens;
    failures += o.failures;
  }
};

// Records one token-carrying event at `now`.
void Tick(Timing* t, Clock::time_point start, Clock::time_point* last, bool* first, int tokens,
          Clock::time_point now) {
  (*first ? t->ttft_ms : t->itl_ms).push_back(Ms(now - (*first ? start : *last)));
  *first = false;
  *last = now;
  t->tokens += tokens;
}

Timing GrpcStream(v1::Generation::Stub& stub, const std::string& prompt, int max_tokens) {
  Timing t;
  v1::GenerateRequest req;
  req.set_prompt(prompt);
  req.set_max_tokens(max_tokens);
  req.set_ignore_eos(true);
  grpc::ClientContext ctx;
  const auto start = Clock::now();
  auto last = start;
  bool first = true;
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
    if (resp.has_delta() && resp.delta().token_ids_size() > 0) {
      Tick(&t, start, &last, &first, resp.delta().token_ids_size(), Clock::now());
    }
  }
  if (!reader->Finish().ok()) ++t.failures;
  return t;
}

Timing HttpStream(const std::string& address, const std::string& model, const std::string& prompt,
                  int max_tokens) {
  Timing t;
  const json body = {{"model", model},          {"prompt", prompt},   {"max_tokens", max_tokens},
                     {"temperature", 0},        {"ignore_eos", true}, {"stream", true},
                     {"return_token_ids", true}};
  const auto start = Clock::now();
  auto last = start;
  bool first = true;
  const SseReply reply = PostSse(
      address, "/v1/completions", body.dump(), "", [&](const json& e, Clock::time_point at) {
        if (e.contains("choices") && !e["choices"].empty()) {
          const int n = static_cast<int>(e["choices"][0]["token_ids"].size());
          if (n > 0) Tick(&t, start, &last, &first, n, at);
        }
        return true;
      });
  if (reply.status != 200 || !reply.done) ++t.failures;
  return t;
}

struct Row {
  std::string api;
  int concurrency;
  Timing t;
  double seconds;
};

absl::Status Run(int argc, char** argv) {
  std::string model, strata = STRATA_BINARY, conc_list = "1,64";
  int64_t requests = 4, max_tokens = 64, workers = 2;
  FlagSet flags;
  flags.String("model", &model, "model folder (default: the embedded default model)");
  flags.String("concurrency", &conc_list, "client streams to measure (1,64)");
  flags.Int("requests", &requests, "completions per client (4)");
  flags.Int("max-tokens", &max_tokens, "tokens per completion (64)");
  flags.Int("workers", &workers, "pipeline stages (2)");
  flags.String("strata", &strata, "the strata executable");
  RETURN_IF_ERROR(flags.Parse(std::vector<std::string>(argv + 1, argv + argc)));
  std::vector<int> counts;
  for (absl::string_view part : absl::StrSplit(conc_list, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 1) {
      return absl::InvalidArgumentError(absl::StrCat("--concurrency: bad value \"", part, "\""));
    }
    counts.push_back(v);
  }
  if (model.empty()) {
    ASSIGN_OR_RETURN(model, DefaultModelDir());
  }
  UpOptions up;
  up.binary = strata;
  up.model_dir = model;
  up.workers = static_cast<int>(workers);
  up.max_sequences = std::max<int64_t>(16, *std::max_element(counts.begin(), counts.end()));
  up.http_listen = "127.0.0.1:0";
  LocalCluster cluster;
  RETURN_IF_ERROR(cluster.Start(up));
  std::string name = model;
  while (!name.empty() && name.back() == '/') name.pop_back();
  name = name.substr(name.rfind('/') + 1);
  auto stub = v1::Generation::NewStub(Dial(cluster.gateway()));
  GrpcStream(*stub, kPrompts[0], 4);  // warm up both paths
  HttpStream(cluster.http(), name, kPrompts[0], 4);

  std::vector<Row> rows;
  for (int c : counts) {
    for (const char* api : {"grpc", "http"}) {
      std::vector<Timing> per(c);
      std::vector<std::thread> threads;
      const auto t0 = Clock::now();
      for (int i = 0; i < c; ++i) {
        threads.emplace_back([&, i] {
          auto own = v1::Generation::NewStub(Dial(cluster.gateway()));
          for (int r = 0; r < requests; ++r) {
            const char* prompt = kPrompts[(i + r) % 4];
            per[i].Add(
                std::string(api) == "grpc"
                    ? GrpcStream(*own, prompt, static_cast<int>(max_tokens))
                    : HttpStream(cluster.http(), name, prompt, static_cast<int>(max_tokens)));
          }
        });
      }
      for (auto& t : threads) t.join();
      Row row{api, c, {}, std::chrono::duration<double>(Clock::now() - t0).count()};
      for (const Timing& t : per) row.t.Add(t);
      rows.push_back(row);
    }
  }
  std::string summary =
      "api   streams  tok/s     TTFT p50 ms  ITL p50 / p99 ms   failures  ITL p50 vs gRPC\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    const double itl50 = Pct(r.t.itl_ms, 0.5);
    const double grpc_itl50 = r.api == "http" ? Pct(rows[i - 1].t.itl_ms, 0.5) : itl50;
    std::printf(
        "{\"bench\": \"http_vs_grpc\", \"api\": \"%s\", \"streams\": %d, \"requests\": %lld, "
        "\"output_tokens_per_s\": %.1f, \"ttft_p50_ms\": %.3f, \"itl_p50_ms\": %.3f, "
        "\"itl_p99_ms\": %.3f, \"failures\": %d, \"itl_p50_vs_grpc\": %.3f}\n",
        r.api.c_str(), r.concurrency, static_cast<long long>(requests) * r.concurrency,
        r.t.tokens / r.seconds, Pct(r.t.ttft_ms, 0.5), itl50, Pct(r.t.itl_ms, 0.99), r.t.failures,
        itl50 / grpc_itl50);
    absl::StrAppendFormat(&summary, "%-5s %7d %8.0f %11.3f %9.3f / %-8.3f %6d %12.3f\n", r.api,
                          r.concurrency, r.t.tokens / r.seconds, Pct(r.t.ttft_ms, 0.5), itl50,
                          Pct(r.t.itl_ms, 0.99), r.t.failures, itl50 / grpc_itl50);
  }
  std::fputs(summary.c_str(), stderr);
  return cluster.Stop();
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) { return strata::BenchMain("http_bench", strata::Run, argc, argv); }
