#include "bench/load_gen.h"

#include <algorithm>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "services/common/server.h"
#include "strata/v1/generation.grpc.pb.h"

namespace strata {

double Load::decode_tokens_per_s() const {
  double sum = 0;
  for (double ms : itl_ms) sum += ms;
  return sum > 0 ? static_cast<double>(itl_ms.size()) / (sum / 1000.0) : 0;
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

std::vector<int32_t> PromptIds(int64_t n, int64_t vocab) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>(3 + (i * 7919) % (vocab - 3)));
  return ids;
}

Load RunLoad(const std::string& gateway, int concurrency, int requests, int64_t max_tokens,
             const std::vector<int32_t>& prompt) {
  std::vector<Load> per(concurrency);
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < concurrency; ++c) {
    threads.emplace_back([&, c] {
      auto stub = v1::Generation::NewStub(Dial(gateway));
      for (int r = 0; r < requests; ++r) {
        v1::GenerateRequest req;
        req.mutable_prompt_tokens()->mutable_ids()->Add(prompt.begin(), prompt.end());
        req.set_max_tokens(static_cast<uint32_t>(max_tokens));
        req.set_ignore_eos(true);
        req.mutable_sampling()->set_seed(c * 1000 + r);
        grpc::ClientContext ctx;
        const auto start = Clock::now();
        auto last = start;
        bool first = true;
        auto reader = stub->Generate(&ctx, req);
        v1::GenerateResponse resp;
        while (reader->Read(&resp)) {
          if (!resp.has_delta() || resp.delta().token_ids_size() == 0) continue;
          const auto now = Clock::now();
          (first ? per[c].ttft_ms : per[c].itl_ms).push_back(Ms(now - (first ? start : last)));
          first = false;
          last = now;
          per[c].tokens += resp.delta().token_ids_size();
        }
        if (!reader->Finish().ok()) ++per[c].failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  Load all;
  all.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  for (const Load& l : per) {
    all.ttft_ms.insert(all.ttft_ms.end(), l.ttft_ms.begin(), l.ttft_ms.end());
    all.itl_ms.insert(all.itl_ms.end(), l.itl_ms.begin(), l.itl_ms.end());
    all.tokens += l.tokens;
    all.failures += l.failures;
  }
  return all;
}

absl::StatusOr<std::vector<int>> IntList(const std::string& flag, const std::string& text) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": \"", text, "\" is not a list of positive integers"));
    }
    out.push_back(v);
  }
  return out;
}

}  // namespace strata
