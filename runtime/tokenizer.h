// Text <-> token ids. `Tokenizer` is the interface every tokenizer family
// implements (SentencePiece now; byte-level BPE next); `LoadTokenizer` picks
// the implementation from the files in a model folder. Tokenizers are
// immutable after loading and safe to use from many threads.
// `IncrementalDetokenizer` turns a stream of generated ids into text deltas
// that never split a UTF-8 character; one instance per sequence, not
// thread-safe.
#ifndef STRATA_RUNTIME_TOKENIZER_H_
#define STRATA_RUNTIME_TOKENIZER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace strata {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Encodes `text`; prepends BOS when `add_bos` and the tokenizer has one.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                      bool add_bos) const = 0;
  // Decodes a whole sequence, skipping control tokens (BOS, EOS, ...).
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  // The bytes token `id` contributes to running text: "" for control tokens
  // and for ids past the tokenizer's vocabulary (models often pad their
  // embedding past it). A byte-fallback piece is one raw byte, possibly part
  // of a multi-byte character.
  virtual std::string TokenBytes(int32_t id) const = 0;
  // Whether decoding strips the space that encoding put before the first word.
  virtual bool StripsLeadingSpace() const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  // Whether Encode callers should add BOS by default (tokenizer_config.json).
  virtual bool add_bos_by_default() const = 0;
  // The most bytes of input text one token can stand for (its longest piece
  // or control-token text, times 4 where normalisation may shrink the text),
  // and whether the tokenizer may drop whitespace altogether.
  virtual int64_t MaxInputBytesPerToken() const = 0;
  virtual bool CollapsesWhitespace() const { return false; }

  // A lower bound on the tokens Encode(text) gives (BOS not counted), from
  // one pass over the bytes and no allocation: so a prompt that cannot fit a
  // context is refused before it is tokenized.
  int64_t MinTokens(std::string_view text) const;
};

// A control or added token as it may be written in text ("<s>", "<|im_end|>").
struct TokenText {
  std::string text;
  int32_t id;
};

// Finds control-token texts in a text: the longest one starting at a given
// byte, through a table of candidates by first byte.
class TokenTextMatcher {
 public:
  explicit TokenTextMatcher(std::vector<TokenText> tokens);
  // The longest token text at `text[at...]`, or nullptr.
  const TokenText* Match(std::string_view text, size_t at) const;
  size_t longest() const { return tokens_.empty() ? 0 : tokens_[0].text.size(); }

 private:
  std::vector<TokenText> tokens_;               // longest first
  std::vector<std::vector<uint32_t>> by_byte_;  // first byte -> indices into tokens_
};

// Encodes `text` whose control tokens are written out: each longest match
// becomes its id, and every stretch between them is encoded by `encode`,
// which appends to its vector. For Tokenizer implementations.
absl::Status EncodeAroundTokenTexts(
    std::string_view text, const TokenTextMatcher& tokens,
    const std::function<absl::Status(std::string_view, std::vector<int32_t>*)>& encode,
    std::vector<int32_t>* ids);

// Decodes `ids` through an IncrementalDetokenizer starting at the text's
// beginning: the Decode of every Tokenizer implementation.
std::string DecodeIncrementally(const Tokenizer& tokenizer, const std::vector<int32_t>& ids);

// Loads the tokenizer of a Hugging Face model folder: `tokenizer.model`
// (SentencePiece) with the options of `tokenizer_config.json` when present.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir);

// Trains a SentencePiece BPE model (Llama-style options: identity
// normalisation, byte fallback, split digits, ids unk=0 bos=1 eos=2) on
// `sentences`, single-threaded so the result is deterministic. Returns the
// serialized `tokenizer.model` bytes.
absl::StatusOr<std::string> TrainSentencePieceBpe(const std::vector<std::string>& sentences,
                                                  int vocab_size);

class IncrementalDetokenizer {
 public:
  // `at_text_start`: the first token begins the text (no prompt before it), so
  // its leading space is dropped as the tokenizer's Decode would.
  IncrementalDetokenizer(const Tokenizer& tokenizer, bool at_text_start);

  // Adds one token; returns the text that became complete (possibly empty).
  std::string Push(int32_t id);
  // Ends the stream: bytes of an unfinished character become U+FFFD.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool strip_next_space_;
  std::string pending_;  // bytes of a character not yet complete
};

// Length of the longest prefix of `bytes` that is whole UTF-8 characters, with
// invalid bytes replaced by U+FFFD in `*out`. Exposed for tests.
size_t TakeCompleteUtf8(std::string_view bytes, std::string* out);

}  // namespace strata

#endif  // STRATA_RUNTIME_TOKENIZER_H_
