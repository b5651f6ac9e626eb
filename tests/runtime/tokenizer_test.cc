#include "runtime/tokenizer.h"

#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace strata {
namespace {

const Tokenizer& Tok() {
  static auto* tok = [] {
    auto t = LoadTokenizer(testing::TestModel("llama"));
    EXPECT_TRUE(t.ok()) << t.status();
    return t->release();
  }();
  return *tok;
}

bool ValidUtf8(const std::string& s) {
  std::string out;
  return TakeCompleteUtf8(s, &out) == s.size() && out == s;
}

TEST(TokenizerTest, EncodeDecodeRoundTrips) {
  for (const std::string text :
       {"The old lighthouse keeper", "Mix 250 grams of flour, 2 eggs.", "東京は日本の首都です。",
        "rare: 🦜 ẞ ŋ — and bytes", "  two leading spaces\tand a tab\nnew line"}) {
    auto ids = Tok().Encode(text, /*add_bos=*/true);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ((*ids)[0], 1);  // BOS
    EXPECT_EQ(Tok().Decode(*ids), text);
  }
}

TEST(TokenizerTest, RareCharactersFallBackToBytes) {
  auto ids = Tok().Encode("🦜", false);  // not in the corpus: four byte pieces
  ASSERT_TRUE(ids.ok());
  int byte_pieces = 0;
  for (int32_t id : *ids) byte_pieces += Tok().TokenBytes(id).size() == 1 ? 1 : 0;
  EXPECT_GE(byte_pieces, 4);
}

TEST(DetokenizerTest, DeltasNeverSplitACharacterAndConcatenateToDecode) {
  const std::string text = "Emoji 🦜🍕 and 東京, naïve café — ẞ!";
  auto ids = Tok().Encode(text, true);
  ASSERT_TRUE(ids.ok());
  IncrementalDetokenizer detok(Tok(), /*at_text_start=*/true);
  std::string joined;
  int empty_deltas = 0;
  for (int32_t id : *ids) {
    const std::string delta = detok.Push(id);
    EXPECT_TRUE(ValidUtf8(delta)) << "delta splits a character";
    empty_deltas += delta.empty() ? 1 : 0;
    joined += delta;
  }
  joined += detok.Flush();
  EXPECT_EQ(joined, text);
  EXPECT_GT(empty_deltas, 1);  // BOS, and byte pieces waiting for the rest of a character
}

TEST(DetokenizerTest, ContinuationKeepsTheLeadingSpace) {
  auto ids = Tok().Encode("keeper wrote", false);
  ASSERT_TRUE(ids.ok());
  IncrementalDetokenizer detok(Tok(), /*at_text_start=*/false);
  std::string joined;
  for (int32_t id : *ids) joined += detok.Push(id);
  EXPECT_EQ(joined, " keeper wrote");
}

TEST(DetokenizerTest, BrokenBytesBecomeReplacementCharacters) {
  std::string out;
  EXPECT_EQ(TakeCompleteUtf8("a\xF0\x9F", &out), 1u);  // incomplete tail is held back
  EXPECT_EQ(out, "a");
  out.clear();
  EXPECT_EQ(TakeCompleteUtf8("\xF0\x9F"
                             "b",
                             &out),
            3u);  // broken: replaced, not held
  EXPECT_EQ(out,
            "\xEF\xBF\xBD"
            "b");
  out.clear();
  TakeCompleteUtf8("\xC0\xAF\xED\xA0\x80", &out);  // overlong and surrogate are invalid
  EXPECT_EQ(out.find("\xC0"), std::string::npos);
  // Ids beyond the tokenizer's vocabulary (padded embeddings) decode to nothing.
  EXPECT_EQ(Tok().TokenBytes(100000), "");
}

TEST(TokenizerTest, MissingTokenizerIsNamed) {
  auto t = LoadTokenizer(testing::FreshDir("empty"));
  EXPECT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("tokenizer.model"), absl::string_view::npos);
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// The gateway refuses a prompt by MinTokens before tokenizing it, so the
// bound must never exceed the real count, for any text. (The byte-level BPE
// tokenizers have the same test in bpe_tokenizer_test.cc.)
TEST(MinTokensTest, NeverMoreThanEncodeGives) {
  std::vector<std::string> texts = {"",
                                    "a",
                                    "The old lighthouse keeper",
                                    "    ",
                                    "\n\n\n\t",
                                    "東京は日本の首都です。",
                                    "🦜🦜🦜",
                                    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                                    "e\xCC\x81\xCC\x81 \xEF\xBC\xA1\xEF\xBC\xA2",
                                    "<s></s>"};
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += "the harbour at dawn, 1234 ";
  texts.push_back(long_text);
  texts.push_back(std::string(5000, ' '));
  EXPECT_GE(Tok().MaxInputBytesPerToken(), 1);
  for (const std::string& text : texts) {
    auto ids = Tok().Encode(text, /*add_bos=*/false);
    ASSERT_TRUE(ids.ok());
    EXPECT_LE(Tok().MinTokens(text), static_cast<int64_t>(ids->size())) << text.substr(0, 40);
  }
  // A real bound, not zero: long text needs many tokens.
  EXPECT_GT(Tok().MinTokens(long_text), 100);
}

}  // namespace
}  // namespace strata
