// Pre-tokenizers of the byte-level BPE families, written by hand: their split
// regexes use look-ahead, which RE2 lacks, and approximating them would
// change token ids. Each function reproduces, match for match, what a
// backtracking regex engine's find-all returns for the family's pattern:
//   kGpt2    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   kCl100k  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
//            | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+   (GPT-4, Llama 3)
//   kQwen2   as kCl100k with \p{N} (one digit) for \p{N}{1,3}      (Qwen2, Hunyuan)
//   kO200k   GPT-4o's pattern, which splits words at case changes
#ifndef STRATA_RUNTIME_TOKENIZER_PRETOKENIZER_H_
#define STRATA_RUNTIME_TOKENIZER_PRETOKENIZER_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace strata {

enum class SplitPattern { kGpt2, kCl100k, kQwen2, kO200k };

// The family whose regex `pattern` is (as written in tokenizer.json or a
// tiktoken definition); nullopt for any other pattern.
std::optional<SplitPattern> RecognizeSplitPattern(std::string_view pattern);
const char* SplitPatternName(SplitPattern pattern);
// The family's regex, as tokenizer.json and tiktoken definitions write it.
std::string_view SplitPatternRegex(SplitPattern pattern);

// Splits `text` into consecutive pieces (their concatenation is `text`).
std::vector<std::string_view> PreTokenize(SplitPattern pattern, std::string_view text);

}  // namespace strata

#endif  // STRATA_RUNTIME_TOKENIZER_PRETOKENIZER_H_
