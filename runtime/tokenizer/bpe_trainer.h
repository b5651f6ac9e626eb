// Trains a byte-level BPE vocabulary and writes it in the two formats the
// loaders read (bpe_tokenizer.h): Hugging Face tokenizer.json and tiktoken
// rank files. The model generator uses it to give Qwen2- and Hunyuan-shaped
// test checkpoints their real tokenizer formats; it is deterministic (ties
// go to the lexicographically smaller pair) so the same corpus gives the
// same files.
#ifndef STRATA_RUNTIME_TOKENIZER_BPE_TRAINER_H_
#define STRATA_RUNTIME_TOKENIZER_BPE_TRAINER_H_

#include <string>
#include <utility>
#include <vector>

#include "runtime/json.h"
#include "runtime/tokenizer/pretokenizer.h"

namespace strata {

struct BpeVocabulary {
  // Id -> bytes: the 256 single bytes first (id = byte), then each merge's
  // result in the order it was learned.
  std::vector<std::string> tokens;
  // The merges by rank, as (left id, right id).
  std::vector<std::pair<int, int>> merges;
};

// Learns `merges` merges over `texts` split by `pattern` (fewer if the
// corpus runs out of pairs).
BpeVocabulary TrainByteLevelBpe(const std::vector<std::string>& texts, int merges,
                                SplitPattern pattern);

struct SpecialToken {
  std::string content;
  int id;
};

// A tokenizer.json for `vocab`: BPE model, Split (`pattern`) + ByteLevel
// pre-tokenizer, ByteLevel decoder, NFC normalizer when `nfc`, and the
// special tokens as added tokens.
Json HfTokenizerJson(const BpeVocabulary& vocab, SplitPattern pattern, bool nfc,
                     const std::vector<SpecialToken>& specials);

// The tiktoken rank file of `vocab`: "<base64 bytes> <id>" per line.
std::string TiktokenRanks(const BpeVocabulary& vocab);

}  // namespace strata

#endif  // STRATA_RUNTIME_TOKENIZER_BPE_TRAINER_H_
