// Byte-level BPE (GPT-2, Llama 3, Qwen2, Hunyuan, GPT-4/4o) from either of
// its two file formats:
//  - Hugging Face `tokenizer.json`: vocab and merges over GPT-2's
//    byte-to-unicode alphabet, added tokens, an NFC/NFKC normalizer, a Split
//    pre-tokenizer with one of the patterns of pretokenizer.h (or ByteLevel's
//    own GPT-2 regex), a TemplateProcessing post-processor's BOS;
//  - tiktoken rank files (`*.tiktoken`: a base64 token and its rank per
//    line; the rank is the id), with the special tokens of
//    tokenizer_config.json's `added_tokens_decoder`.
// Encoding splits out added tokens first (longest match), normalizes the
// text between them, pre-tokenizes it, and merges each piece's bytes by rank.
#ifndef STRATA_RUNTIME_TOKENIZER_BPE_TOKENIZER_H_
#define STRATA_RUNTIME_TOKENIZER_BPE_TOKENIZER_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/json.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer/pretokenizer.h"

namespace strata {

// From a parsed tokenizer.json (`path` names it in errors) and the folder's
// tokenizer_config.json (null when absent).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfBpeTokenizer(const Json& tokenizer,
                                                              const std::string& path,
                                                              const Json& tokenizer_config);

// From a tiktoken rank file and tokenizer_config.json (null when absent).
// The split pattern is the config's `pat_str` when present, else `pattern`
// (Qwen2's, which Hunyuan's tokenizer uses).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTiktokenTokenizer(
    const std::string& path, const Json& tokenizer_config,
    SplitPattern pattern = SplitPattern::kQwen2);

// GPT-2's byte-to-unicode spelling of raw token bytes, as tokenizer.json
// vocabularies write them ("Ġ" for a space).
std::string ByteLevelSpelling(std::string_view bytes);

// Whether a tokenizer.json describes a byte-level BPE tokenizer (its
// pre-tokenizer or decoder is ByteLevel), as opposed to SentencePiece-style
// BPE with byte fallback, which LoadTokenizer reads from tokenizer.model.
bool IsByteLevelBpe(const Json& tokenizer);

}  // namespace strata

#endif  // STRATA_RUNTIME_TOKENIZER_BPE_TOKENIZER_H_
