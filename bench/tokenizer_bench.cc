// Encode and decode throughput of a model folder's tokenizer (SentencePiece,
// tokenizer.json or tiktoken) on a text: the embedded corpus by default,
// repeated to --megabytes. Prints one JSON object, then a summary line.
//   ./build/bench/tokenizer_bench --model DIR [--text FILE] [--megabytes 8]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_main.h"
#include "runtime/status_macros.h"
#include "runtime/tokenizer.h"
#include "tools/flags.h"
#include "tools/model_maker.h"

namespace strata {
namespace {

absl::Status Run(int argc, char** argv) {
  std::string model, text_file;
  int64_t megabytes = 8;
  FlagSet flags;
  flags.String("model", &model, "model folder whose tokenizer to measure (required)");
  flags.String("text", &text_file, "UTF-8 text to encode (default: the embedded corpus)");
  flags.Int("megabytes", &megabytes, "text size, the input repeated (8)");
  RETURN_IF_ERROR(flags.Parse(std::vector<std::string>(argv + 1, argv + argc)));
  if (model.empty()) return absl::InvalidArgumentError("--model: required");
  if (megabytes < 1 || megabytes > 1024) return absl::InvalidArgumentError("--megabytes: 1..1024");
  std::string unit = EmbeddedCorpus();
  if (!text_file.empty()) {
    std::ifstream in(text_file, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("--text: cannot read ", text_file));
    std::stringstream ss;
    ss << in.rdbuf();
    unit = ss.str();
  }
  ASSIGN_OR_RETURN(auto tokenizer, LoadTokenizer(model));
  // Encode line by line, as requests arrive, over the repeated text.
  std::vector<std::string> lines = absl::StrSplit(unit, '\n', absl::SkipEmpty());
  const int64_t target = megabytes << 20;
  int64_t bytes = 0, tokens = 0;
  std::vector<std::vector<int32_t>> encoded;
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  while (bytes < target) {
    for (const std::string& line : lines) {
      ASSIGN_OR_RETURN(auto ids, tokenizer->Encode(line, false));
      bytes += static_cast<int64_t>(line.size());
      tokens += static_cast<int64_t>(ids.size());
      if (encoded.size() < lines.size()) encoded.push_back(std::move(ids));
    }
  }
  const double encode_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const auto t1 = Clock::now();
  int64_t decoded = 0;
  for (int64_t done = 0; done < target;) {
    for (const auto& ids : encoded) {
      const std::string text = tokenizer->Decode(ids);
      decoded += static_cast<int64_t>(ids.size());
      done += static_cast<int64_t>(text.size());
    }
  }
  const double decode_s = std::chrono::duration<double>(Clock::now() - t1).count();
  std::printf(
      "{\"model\": \"%s\", \"bytes\": %lld, \"tokens\": %lld, \"bytes_per_token\": %.2f, "
      "\"encode_mb_per_s\": %.2f, \"encode_tokens_per_s\": %.0f, \"decode_tokens_per_s\": %.0f}\n",
      model.c_str(), static_cast<long long>(bytes), static_cast<long long>(tokens),
      static_cast<double>(bytes) / static_cast<double>(tokens), bytes / encode_s / 1e6,
      tokens / encode_s, decoded / decode_s);
  std::fprintf(stderr, "%s: encode %.1f MB/s (%.2f M tokens/s), decode %.2f M tokens/s\n",
               model.c_str(), bytes / encode_s / 1e6, tokens / encode_s / 1e6,
               decoded / decode_s / 1e6);
  return absl::OkStatus();
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  return strata::BenchMain("tokenizer_bench", strata::Run, argc, argv);
}
