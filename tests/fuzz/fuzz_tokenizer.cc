// Tokenizer files as a model folder ships them. STRATA_FUZZ_TOKENIZER picks
// the file the bytes become (a build of this source per file):
//   tokenizer.json         (a Hugging Face byte-level BPE tokenizer)
//   vocab.tiktoken         (tiktoken ranks, with a fixed tokenizer_config.json)
//   tokenizer_config.json  (beside a valid tokenizer.json)
// A loader gives a status; a tokenizer that loads must encode and decode.
#include <cstdint>
#include <string>

#include "runtime/tokenizer.h"
#include "runtime/tokenizer/bpe_trainer.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

const std::string& ValidTokenizerJson() {
  static const std::string* json = [] {
    const strata::BpeVocabulary vocab = strata::TrainByteLevelBpe(
        {"The old lighthouse keeper watched the sea.", "it's late, 12345 ships.", "中文文本"}, 40,
        strata::SplitPattern::kQwen2);
    return new std::string(
        strata::HfTokenizerJson(vocab, strata::SplitPattern::kQwen2, true, {}).Dump());
  }();
  return *json;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = strata::fuzz::ScratchDir();
  const std::string file = STRATA_FUZZ_TOKENIZER;
  strata::fuzz::Clear(dir);
  strata::fuzz::WriteFile(dir, file, data, size);
  if (file == "vocab.tiktoken") {
    strata::fuzz::WriteFile(dir, "tokenizer_config.json",
                            R"({"bos_token": "<|endoftext|>", "added_tokens_decoder": {}})");
  } else if (file == "tokenizer_config.json") {
    strata::fuzz::WriteFile(dir, "tokenizer.json", ValidTokenizerJson());
  }
  auto tokenizer = strata::LoadTokenizer(dir);
  if (!tokenizer.ok()) return 0;
  const std::string text = "The keeper <|endoftext|> 中文 \xF0\x9F\xA6\x9C!";
  auto ids = (*tokenizer)->Encode(text, true);
  if (ids.ok()) (void)(*tokenizer)->Decode(*ids);
  (void)(*tokenizer)->MinTokens(text);
  for (int32_t id : {-1, 0, 1, (*tokenizer)->vocab_size() - 1, (*tokenizer)->vocab_size()}) {
    (void)(*tokenizer)->TokenBytes(id);
  }
  return 0;
}
