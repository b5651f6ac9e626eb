#include <algorithm>

#include "runtime/tokenizer.h"
#include "runtime/tokenizer/unicode.h"

namespace strata {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

size_t TakeCompleteUtf8(std::string_view bytes, std::string* out) {
  size_t i = 0;
  while (i < bytes.size()) {
    const unsigned char lead = static_cast<unsigned char>(bytes[i]);
    const int len = unicode::Utf8SequenceLength(lead);
    if (len == 0) {
      out->append(kReplacement);
      ++i;
      continue;
    }
    int have = 1;
    while (
        have < len && i + have < bytes.size() &&
        unicode::Utf8ValidContinuation(lead, have, static_cast<unsigned char>(bytes[i + have]))) {
      ++have;
    }
    if (have == len) {
      out->append(bytes.substr(i, len));
      i += len;
    } else if (i + have == bytes.size()) {
      break;  // a valid start of a character whose remaining bytes have not arrived
    } else {
      out->append(kReplacement);  // broken sequence: replace the bytes seen so far
      i += have;
    }
  }
  return i;
}

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool at_text_start)
    : tokenizer_(tokenizer), strip_next_space_(at_text_start && tokenizer.StripsLeadingSpace()) {}

std::string IncrementalDetokenizer::Push(int32_t id) {
  std::string bytes = tokenizer_.TokenBytes(id);
  if (bytes.empty()) return "";
  if (strip_next_space_) {
    strip_next_space_ = false;
    if (bytes[0] == ' ') bytes.erase(0, 1);
  }
  pending_ += bytes;
  std::string out;
  const size_t used = TakeCompleteUtf8(pending_, &out);
  pending_.erase(0, used);
  return out;
}

std::string IncrementalDetokenizer::Flush() {
  std::string out;
  for (size_t i = 0; i < pending_.size(); ++i) out.append(kReplacement);
  pending_.clear();
  return out;
}

int64_t Tokenizer::MinTokens(std::string_view text) const {
  int64_t counted = static_cast<int64_t>(text.size());
  if (CollapsesWhitespace()) {
    for (char c : text) counted -= (c == ' ' || c == '\t' || c == '\n' || c == '\r') ? 1 : 0;
  }
  const int64_t per_token = std::max<int64_t>(1, MaxInputBytesPerToken());
  return (counted + per_token - 1) / per_token;
}

TokenTextMatcher::TokenTextMatcher(std::vector<TokenText> tokens) : by_byte_(256) {
  std::erase_if(tokens, [](const TokenText& t) { return t.text.empty(); });
  std::stable_sort(tokens.begin(), tokens.end(), [](const TokenText& a, const TokenText& b) {
    return a.text.size() > b.text.size();
  });
  tokens_ = std::move(tokens);
  for (uint32_t i = 0; i < tokens_.size(); ++i) {
    by_byte_[static_cast<uint8_t>(tokens_[i].text[0])].push_back(i);
  }
}

const TokenText* TokenTextMatcher::Match(std::string_view text, size_t at) const {
  for (uint32_t i : by_byte_[static_cast<uint8_t>(text[at])]) {
    if (text.compare(at, tokens_[i].text.size(), tokens_[i].text) == 0) return &tokens_[i];
  }
  return nullptr;
}

absl::Status EncodeAroundTokenTexts(
    std::string_view text, const TokenTextMatcher& tokens,
    const std::function<absl::Status(std::string_view, std::vector<int32_t>*)>& encode,
    std::vector<int32_t>* ids) {
  size_t start = 0;  // of the text not yet encoded
  for (size_t i = 0; i < text.size();) {
    const TokenText* match = tokens.Match(text, i);
    if (match == nullptr) {
      ++i;
      continue;
    }
    if (i > start) {
      if (absl::Status st = encode(text.substr(start, i - start), ids); !st.ok()) return st;
    }
    ids->push_back(match->id);
    i += match->text.size();
    start = i;
  }
  if (start < text.size()) return encode(text.substr(start), ids);
  return absl::OkStatus();
}

std::string DecodeIncrementally(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  std::string text;
  IncrementalDetokenizer detok(tokenizer, /*at_text_start=*/true);
  for (int32_t id : ids) text += detok.Push(id);
  text += detok.Flush();
  return text;
}

}  // namespace strata
