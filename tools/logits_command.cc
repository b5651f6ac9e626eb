// `strata logits`: greedy decoding from given token ids with every step's
// full logits written out, for parity checks against other implementations
// (tools/gpu/hf_parity.py compares it with Hugging Face transformers).
//
//   strata logits --model DIR --ids 1,2,3 [--steps 32] [--device cuda:0] --out FILE
//
// Prints {"prompt":[...],"tokens":[...],"vocab_size":V,"rows":R} on stdout and
// writes R rows of V little-endian f32 logits to FILE: the prompt's last
// position, then each generated token's.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "runtime/config.h"
#include "runtime/generate.h"
#include "runtime/status_macros.h"
#include "tools/commands.h"
#include "tools/flags.h"

namespace strata {

absl::Status LogitsCommand(const std::vector<std::string>& args) {
  std::string model, ids_flag, out_path, device = "cpu";
  int64_t steps = 32;
  FlagSet f;
  f.String("model", &model, "model folder (required)");
  f.String("ids", &ids_flag, "prompt token ids, comma-separated (required)");
  f.Int("steps", &steps, "greedy tokens to generate (32)");
  f.String("device", &device, "cpu, cuda or cuda:N (cpu)");
  f.String("out", &out_path, "file for the logits, f32 rows (required)");
  bool stop = false;
  RETURN_IF_ERROR(
      ParseOrHelp(f, args, "usage: strata logits --model DIR --ids 1,2,3 --out FILE", &stop));
  if (stop) return absl::OkStatus();
  if (model.empty()) return absl::InvalidArgumentError("--model: required");
  if (out_path.empty()) return absl::InvalidArgumentError("--out: required");
  RETURN_IF_ERROR(IntIn("steps", steps, 0, 1 << 20));
  std::vector<int32_t> prompt;
  for (absl::string_view piece : absl::StrSplit(ids_flag, ',', absl::SkipWhitespace())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(piece, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--ids: \"", std::string(piece), "\" is not a token id"));
    }
    prompt.push_back(id);
  }
  if (prompt.empty()) return absl::InvalidArgumentError("--ids: required");
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model));
  StageOptions options;
  options.device = device;
  options.max_sequences = 1;
  options.max_batch_tokens = std::max<int64_t>(512, static_cast<int64_t>(prompt.size()));
  options.max_context = static_cast<int64_t>(prompt.size()) + steps + 1;
  ASSIGN_OR_RETURN(auto pipeline, LocalPipeline::Load(model, config, {}, options));

  std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InvalidArgumentError(absl::StrCat("--out: cannot write ", out_path));
  StageBatch batch;
  batch.chunks.push_back({.seq_id = 1,
                          .start_pos = 0,
                          .num_tokens = static_cast<int64_t>(prompt.size()),
                          .token_ids = prompt});
  StageOutput result;
  std::vector<int32_t> tokens;
  for (int64_t step = 0; step <= steps; ++step) {
    RETURN_IF_ERROR(pipeline->Step(batch, &result));
    out.write(reinterpret_cast<const char*>(result.logits.data()),
              static_cast<std::streamsize>(result.logits.size() * sizeof(float)));
    if (step == steps) break;
    const int32_t next = static_cast<int32_t>(
        std::max_element(result.logits.begin(), result.logits.end()) - result.logits.begin());
    tokens.push_back(next);
    batch.chunks[0] = {.seq_id = 1,
                       .start_pos = static_cast<int64_t>(prompt.size()) + step,
                       .num_tokens = 1,
                       .token_ids = {next}};
  }
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("writing ", out_path, " failed"));
  std::printf(
      "{\"prompt\":[%s],\"tokens\":[%s],\"vocab_size\":%lld,\"rows\":%lld,\"backend\":\"%s\"}\n",
      absl::StrJoin(prompt, ",").c_str(), absl::StrJoin(tokens, ",").c_str(),
      static_cast<long long>(config.vocab_size), static_cast<long long>(steps + 1),
      std::string(pipeline->first().backend().name()).c_str());
  return absl::OkStatus();
}

}  // namespace strata
