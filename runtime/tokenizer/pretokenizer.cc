#include "runtime/tokenizer/pretokenizer.h"

#include "runtime/tokenizer/unicode.h"

namespace strata {
namespace {

using unicode::Char;

constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kCl100kRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kO200kRegex =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The characters of one text, with the category tests the matchers use.
// Indices run over characters; the sentinel at size() has no category.
class Text {
 public:
  explicit Text(std::string_view text) : chars_(unicode::Decode(text)) {}
  size_t size() const { return chars_.size() - 1; }
  uint32_t offset(size_t i) const { return chars_[i].offset; }
  char32_t at(size_t i) const { return i < size() ? chars_[i].cp : unicode::kInvalid; }
  bool letter(size_t i) const { return i < size() && unicode::IsLetter(chars_[i].cp); }
  bool number(size_t i) const { return i < size() && unicode::IsNumber(chars_[i].cp); }
  bool space(size_t i) const { return i < size() && unicode::IsWhitespace(chars_[i].cp); }
  bool newline(size_t i) const { return at(i) == '\r' || at(i) == '\n'; }
  // [^\s\p{L}\p{N}]
  bool other(size_t i) const { return i < size() && !space(i) && !letter(i) && !number(i); }
  // [^\r\n\p{L}\p{N}]
  bool prefix(size_t i) const { return i < size() && !newline(i) && !letter(i) && !number(i); }
  bool upper(size_t i) const { return i < size() && unicode::IsUpperOrOther(chars_[i].cp); }
  bool lower(size_t i) const { return i < size() && unicode::IsLowerOrOther(chars_[i].cp); }

  // End of the run from `i` of characters satisfying `test`.
  template <typename Test>
  size_t Run(size_t i, Test test) const {
    while (test(i)) ++i;
    return i;
  }

 private:
  std::vector<Char> chars_;
};

// Simple case folding of the contraction letters: ſ (U+017F) folds to s.
bool FoldsTo(char32_t c, char lower) {
  if (c == static_cast<char32_t>(lower) || c == static_cast<char32_t>(lower - 'a' + 'A')) {
    return true;
  }
  return lower == 's' && c == 0x17F;
}

// 's|'t|'re|'ve|'m|'ll|'d at `i` (case-insensitive if `fold`): its length or 0.
size_t Contraction(const Text& t, size_t i, bool fold) {
  if (t.at(i) != '\'') return 0;
  auto is = [&](size_t k, char c) {
    return fold ? FoldsTo(t.at(k), c) : t.at(k) == static_cast<char32_t>(c);
  };
  if (is(i + 1, 's') || is(i + 1, 't') || is(i + 1, 'm') || is(i + 1, 'd')) return 2;
  if ((is(i + 1, 'r') && is(i + 2, 'e')) || (is(i + 1, 'v') && is(i + 2, 'e')) ||
      (is(i + 1, 'l') && is(i + 2, 'l'))) {
    return 3;
  }
  return 0;
}

// \s*[\r\n]+ | \s+(?!\S) | \s+ at a whitespace character `i`: the end.
size_t Whitespace(const Text& t, size_t i, bool newline_alternative) {
  const size_t end = t.Run(i, [&](size_t k) { return t.space(k); });
  if (newline_alternative) {
    // \s* backs off from the end of the run to its last newline.
    for (size_t k = end; k > i; --k) {
      if (t.newline(k - 1)) return k;
    }
  }
  if (end == t.size() || end - i == 1) return end;  // \s+(?!\S) at the end, or \s+
  return end - 1;                                   // leave the last space to prefix the next word
}

size_t MatchGpt2(const Text& t, size_t i) {
  if (const size_t n = Contraction(t, i, /*fold=*/false)) return i + n;
  const size_t s = t.at(i) == ' ' ? i + 1 : i;  // " ?"
  if (t.letter(s)) return t.Run(s, [&](size_t k) { return t.letter(k); });
  if (t.number(s)) return t.Run(s, [&](size_t k) { return t.number(k); });
  if (t.other(s)) return t.Run(s, [&](size_t k) { return t.other(k); });
  if (t.space(i)) return Whitespace(t, i, /*newline_alternative=*/false);
  return i + 1;
}

// The alternatives after the words, shared by the cl100k and o200k families:
// \p{N}{1,max} | " ?[^\s\p{L}\p{N}]+[\r\n]*" (o200k: [\r\n/]*) |
// \s*[\r\n]+ | \s+(?!\S) | \s+
size_t NumbersPunctuationSpaces(const Text& t, size_t i, size_t max_digits, bool slash) {
  if (t.number(i)) {
    size_t k = i;
    while (k - i < max_digits && t.number(k)) ++k;
    return k;
  }
  const size_t s = t.at(i) == ' ' && t.other(i + 1) ? i + 1 : i;
  if (t.other(s)) {
    const size_t k = t.Run(s, [&](size_t j) { return t.other(j); });
    return t.Run(k, [&](size_t j) { return t.newline(j) || (slash && t.at(j) == '/'); });
  }
  if (t.space(i)) return Whitespace(t, i, /*newline_alternative=*/true);
  return i + 1;
}

size_t MatchCl100k(const Text& t, size_t i, size_t max_digits) {
  if (const size_t n = Contraction(t, i, /*fold=*/true)) return i + n;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (t.prefix(i) && t.letter(i + 1)) return t.Run(i + 1, [&](size_t k) { return t.letter(k); });
  if (t.letter(i)) return t.Run(i, [&](size_t k) { return t.letter(k); });
  // \p{N}{1,max}
  return NumbersPunctuationSpaces(t, i, max_digits, /*slash=*/false);
}

// o200k's word alternatives from `s`, with U and W its two letter classes;
// the end, or 0 when it does not match.
// First: U* W+ contraction? (U* gives back characters until W+ can start).
size_t O200kMixedWord(const Text& t, size_t s) {
  const size_t upper_end = t.Run(s, [&](size_t k) { return t.upper(k); });
  for (size_t k = upper_end + 1; k > s; --k) {
    if (t.lower(k - 1)) {
      const size_t end = t.Run(k - 1, [&](size_t j) { return t.lower(j); });
      return end + Contraction(t, end, /*fold=*/true);
    }
  }
  return 0;
}
// Second: U+ W* contraction?
size_t O200kUpperWord(const Text& t, size_t s) {
  const size_t upper_end = t.Run(s, [&](size_t k) { return t.upper(k); });
  if (upper_end == s) return 0;
  const size_t end = t.Run(upper_end, [&](size_t j) { return t.lower(j); });
  return end + Contraction(t, end, /*fold=*/true);
}

size_t MatchO200k(const Text& t, size_t i) {
  // Each word alternative tries with the optional prefix character first,
  // then without it; the first alternative's two tries precede the second's.
  for (auto word : {O200kMixedWord, O200kUpperWord}) {
    if (t.prefix(i)) {
      if (const size_t end = word(t, i + 1)) return end;
    }
    if (const size_t end = word(t, i)) return end;
  }
  return NumbersPunctuationSpaces(t, i, 3, /*slash=*/true);
}

}  // namespace

std::optional<SplitPattern> RecognizeSplitPattern(std::string_view pattern) {
  if (pattern == kGpt2Regex) return SplitPattern::kGpt2;
  if (pattern == kCl100kRegex) return SplitPattern::kCl100k;
  if (pattern == kQwen2Regex) return SplitPattern::kQwen2;
  if (pattern == kO200kRegex) return SplitPattern::kO200k;
  return std::nullopt;
}

std::string_view SplitPatternRegex(SplitPattern pattern) {
  switch (pattern) {
    case SplitPattern::kGpt2:
      return kGpt2Regex;
    case SplitPattern::kCl100k:
      return kCl100kRegex;
    case SplitPattern::kQwen2:
      return kQwen2Regex;
    case SplitPattern::kO200k:
      return kO200kRegex;
  }
  return "";
}

const char* SplitPatternName(SplitPattern pattern) {
  switch (pattern) {
    case SplitPattern::kGpt2:
      return "gpt2";
    case SplitPattern::kCl100k:
      return "cl100k";
    case SplitPattern::kQwen2:
      return "qwen2";
    case SplitPattern::kO200k:
      return "o200k";
  }
  return "?";
}

std::vector<std::string_view> PreTokenize(SplitPattern pattern, std::string_view text) {
  const Text t(text);
  std::vector<std::string_view> pieces;
  for (size_t i = 0; i < t.size();) {
    size_t end = 0;
    switch (pattern) {
      case SplitPattern::kGpt2:
        end = MatchGpt2(t, i);
        break;
      case SplitPattern::kCl100k:
        end = MatchCl100k(t, i, 3);
        break;
      case SplitPattern::kQwen2:
        end = MatchCl100k(t, i, 1);
        break;
      case SplitPattern::kO200k:
        end = MatchO200k(t, i);
        break;
    }
    if (end <= i) end = i + 1;  // every character belongs to some piece
    pieces.push_back(text.substr(t.offset(i), t.offset(end) - t.offset(i)));
    i = end;
  }
  return pieces;
}

}  // namespace strata
