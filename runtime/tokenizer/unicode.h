// The Unicode facts byte-level BPE pre-tokenizers need: UTF-8 decoding with
// byte offsets, general categories and White_Space from ICU (Debian's
// libicu, a maintained source of the Unicode Character Database), and NFC.
#ifndef STRATA_RUNTIME_TOKENIZER_UNICODE_H_
#define STRATA_RUNTIME_TOKENIZER_UNICODE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::unicode {

// One character of a UTF-8 text. A byte that starts no valid sequence is a
// character of its own with `cp` = kInvalid (it has no category).
struct Char {
  char32_t cp;
  uint32_t offset;  // byte offset in the text
};
inline constexpr char32_t kInvalid = 0xFFFFFFFF;

// The characters of `text`, plus a sentinel {kInvalid, text.size()}.
std::vector<Char> Decode(std::string_view text);
// Appends `cp` as UTF-8.
void AppendUtf8(char32_t cp, std::string* out);

// UTF-8 as RFC 3629 defines it: the length of a sequence from its lead byte
// (0 for a byte that cannot lead), and whether byte `i` (1-based) of a
// sequence may follow `lead` (no overlong forms, surrogates or code points
// past U+10FFFF).
int Utf8SequenceLength(unsigned char lead);
bool Utf8ValidContinuation(unsigned char lead, int i, unsigned char b);
// Whether `text` is entirely well-formed UTF-8; `bad_at` gets the offset of
// the first byte that is not.
bool IsValidUtf8(std::string_view text, size_t* bad_at = nullptr);

// Category tests as regex engines define \p{..} and \s.
bool IsLetter(char32_t cp);      // \p{L}
bool IsNumber(char32_t cp);      // \p{N}
bool IsMark(char32_t cp);        // \p{M}
bool IsWhitespace(char32_t cp);  // \s: the White_Space property
// o200k's classes: [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}].
bool IsUpperOrOther(char32_t cp);
bool IsLowerOrOther(char32_t cp);

// Unicode Normalization Form C (composed). Invalid UTF-8 is an error.
absl::StatusOr<std::string> ToNfc(std::string_view text);
// Form KC (compatibility composed).
absl::StatusOr<std::string> ToNfkc(std::string_view text);

}  // namespace strata::unicode

#endif  // STRATA_RUNTIME_TOKENIZER_UNICODE_H_
