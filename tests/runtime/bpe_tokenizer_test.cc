// Byte-level BPE without the npm references: the pre-tokenizers on cases
// worked out by hand from the regexes, a trained vocabulary in both file
// formats, and malformed files (each error names the file and the field).
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/json.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer/bpe_trainer.h"
#include "runtime/tokenizer/pretokenizer.h"
#include "tests/test_util.h"

namespace strata {
namespace {

std::vector<std::string> Split(SplitPattern p, std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view piece : PreTokenize(p, text)) out.emplace_back(piece);
  return out;
}

using V = std::vector<std::string>;

TEST(PreTokenizerTest, Cl100kFamily) {
  const auto cl = SplitPattern::kCl100k;
  EXPECT_EQ(Split(cl, "Hello world"), (V{"Hello", " world"}));
  // \s+(?!\S) leaves the last space to the word after it.
  EXPECT_EQ(Split(cl, "  hi"), (V{" ", " hi"}));
  // \s*[\r\n]+ ends at the run's last newline.
  EXPECT_EQ(Split(cl, "a\n\n  b"), (V{"a", "\n\n", " ", " b"}));
  EXPECT_EQ(Split(cl, "x \n y"), (V{"x", " \n", " y"}));
  EXPECT_EQ(Split(cl, "end  "), (V{"end", "  "}));
  EXPECT_EQ(Split(cl, "12345"), (V{"123", "45"}));
  EXPECT_EQ(Split(SplitPattern::kQwen2, "12345"), (V{"1", "2", "3", "4", "5"}));
  // Case-insensitive contractions; punctuation takes one leading space and
  // trailing newlines.
  EXPECT_EQ(Split(cl, "I'M HE'LL"), (V{"I", "'M", " HE", "'LL"}));
  EXPECT_EQ(Split(cl, "ok !!\n\nx"), (V{"ok", " !!\n\n", "x"}));
  // A non-letter, non-newline character prefixes a word.
  EXPECT_EQ(Split(cl, "(word)"), (V{"(word", ")"}));
  EXPECT_EQ(Split(cl, "中文 テスト"), (V{"中文", " テスト"}));
}

TEST(PreTokenizerTest, Gpt2AndO200k) {
  // GPT-2's contractions are case-sensitive.
  EXPECT_EQ(Split(SplitPattern::kGpt2, "don't DON'T"), (V{"don", "'t", " DON", "'", "T"}));
  EXPECT_EQ(Split(SplitPattern::kGpt2, "a 123"), (V{"a", " 123"}));
  // o200k splits at case changes and keeps a contraction with its word.
  const auto o = SplitPattern::kO200k;
  EXPECT_EQ(Split(o, "HelloWorld"), (V{"Hello", "World"}));
  EXPECT_EQ(Split(o, "don't"), (V{"don't"}));
  EXPECT_EQ(Split(o, "HTTPServer"), (V{"HTTPServer"}));
  EXPECT_EQ(Split(o, "ALL CAPS"), (V{"ALL", " CAPS"}));
  EXPECT_EQ(Split(o, "a/b/\n"), (V{"a", "/b", "/\n"}));
}

TEST(PreTokenizerTest, PiecesAlwaysConcatenateToTheText) {
  const std::string text = "Mixed 中English文\t\ttext123数字 'S\r\n\r\n  😀\xff\xfe end";
  for (auto p :
       {SplitPattern::kGpt2, SplitPattern::kCl100k, SplitPattern::kQwen2, SplitPattern::kO200k}) {
    std::string joined;
    for (const std::string& piece : Split(p, text)) joined += piece;
    EXPECT_EQ(joined, text) << SplitPatternName(p);
    EXPECT_EQ(RecognizeSplitPattern(SplitPatternRegex(p)), p);
  }
  EXPECT_FALSE(RecognizeSplitPattern("\\w+"));
}

// A model folder with a trained vocabulary in one of the two formats.
class TrainedTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::vector<std::string> texts = {"The old lighthouse keeper watched the sea.",
                                            "The keeper said: it's late, 12345 ships.",
                                            "中文文本和更多的中文", "line one\nline two\n"};
    vocab_ = new BpeVocabulary(TrainByteLevelBpe(texts, 80, SplitPattern::kQwen2));
  }
  static std::vector<SpecialToken> Specials() {
    const int n = static_cast<int>(vocab_->tokens.size());
    return {{"<|endoftext|>", n}, {"<|im_start|>", n + 1}, {"<|im_end|>", n + 2}};
  }
  static std::string HfFolder(const Json& tokenizer_json) {
    const std::string dir = testing::FreshDir("bpe_hf");
    testing::WriteFile(dir + "/tokenizer.json", tokenizer_json.Dump());
    return dir;
  }
  static std::string TiktokenFolder(const std::string& ranks, const std::string& config) {
    const std::string dir = testing::FreshDir("bpe_tiktoken");
    testing::WriteFile(dir + "/vocab.tiktoken", ranks);
    testing::WriteFile(dir + "/tokenizer_config.json", config);
    return dir;
  }
  // The error of loading the trained tokenizer.json with `from` replaced by `to`.
  static std::string EditedHfError(const std::string& from, const std::string& to) {
    std::string text = HfTokenizerJson(*vocab_, SplitPattern::kQwen2, true, Specials()).Dump();
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at == std::string::npos) return "";
    text.replace(at, from.size(), to);
    const std::string dir = testing::FreshDir("bpe_bad");
    testing::WriteFile(dir + "/tokenizer.json", text);
    return Error(dir);
  }
  static std::string Error(const std::string& dir) {
    auto t = LoadTokenizer(dir);
    EXPECT_FALSE(t.ok()) << dir;
    return t.ok() ? "" : std::string(t.status().message());
  }
  static BpeVocabulary* vocab_;
};
BpeVocabulary* TrainedTokenizerTest::vocab_ = nullptr;

TEST_F(TrainedTokenizerTest, BothFormatsRoundTripAndSplitSpecialTokens) {
  ASSERT_GT(vocab_->merges.size(), 50u);  // of 80 asked; the corpus runs out of pairs
  ASSERT_LE(vocab_->merges.size(), 80u);
  const std::string hf =
      HfFolder(HfTokenizerJson(*vocab_, SplitPattern::kQwen2, /*nfc=*/true, Specials()));
  std::string decoder = "{";
  for (const SpecialToken& s : Specials()) {
    absl::StrAppend(&decoder, decoder.size() > 1 ? "," : "", "\"", s.id, "\": {\"content\": \"",
                    s.content, "\", \"special\": true}");
  }
  const std::string tk = TiktokenFolder(
      TiktokenRanks(*vocab_), "{\"added_tokens_decoder\": " + decoder +
                                  "}, \"bos_token\": \"<|endoftext|>\", \"add_bos_token\": true}");
  for (const std::string& dir : {hf, tk}) {
    auto t = LoadTokenizer(dir);
    ASSERT_TRUE(t.ok()) << t.status();
    const Tokenizer& tok = **t;
    EXPECT_EQ(tok.vocab_size(), static_cast<int>(vocab_->tokens.size()) + 3);
    const std::string text = "The keeper watched 中文 ships! 😀\n\nnew";
    auto ids = tok.Encode(text, /*add_bos=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_LT(ids->size(), text.size()) << dir;  // merges applied
    EXPECT_EQ(tok.Decode(*ids), text) << dir;
    // Special tokens are split out whole and skipped by decoding.
    auto chat = tok.Encode("<|im_start|>user\nhi<|im_end|>", false);
    ASSERT_TRUE(chat.ok());
    EXPECT_EQ(chat->front(), Specials()[1].id);
    EXPECT_EQ(chat->back(), Specials()[2].id);
    EXPECT_EQ(tok.Decode(*chat), "user\nhi");
  }
  // tokenizer_config.json's BOS applies to the tiktoken folder.
  auto t = LoadTokenizer(tk);
  EXPECT_TRUE((*t)->add_bos_by_default());
  EXPECT_EQ((*t)->bos_id(), Specials()[0].id);
  EXPECT_EQ((*(*t)->Encode("x", true))[0], Specials()[0].id);
}

// MinTokens never exceeds what Encode gives (the gateway refuses prompts
// by it before tokenizing), with and without a normalizer, special tokens
// and text the vocabulary has never seen.
TEST_F(TrainedTokenizerTest, MinTokensIsALowerBound) {
  std::string long_text;
  for (int i = 0; i < 100; ++i) long_text += "the harbour at dawn, 1234 ";
  const std::vector<std::string> texts = {"",
                                          "a",
                                          "  ",
                                          long_text,
                                          "<|im_start|>user\nhi<|im_end|>",
                                          "東京 🦜",
                                          "e\xCC\x81\xCC\x81 \xEF\xBC\xA1",
                                          std::string(3000, 'z')};
  for (bool nfc : {false, true}) {
    auto t =
        LoadTokenizer(HfFolder(HfTokenizerJson(*vocab_, SplitPattern::kQwen2, nfc, Specials())));
    ASSERT_TRUE(t.ok()) << t.status();
    for (const std::string& text : texts) {
      auto ids = (*t)->Encode(text, false);
      ASSERT_TRUE(ids.ok());
      EXPECT_LE((*t)->MinTokens(text), static_cast<int64_t>(ids->size())) << text.substr(0, 30);
    }
    EXPECT_GT((*t)->MinTokens(long_text), 10);
  }
}

TEST_F(TrainedTokenizerTest, NfcNormalisesBeforeSplitting) {
  auto t = LoadTokenizer(HfFolder(HfTokenizerJson(*vocab_, SplitPattern::kQwen2, true, {})));
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*(*t)->Encode("caf\xC3\xA9", false), *(*t)->Encode("cafe\xCC\x81", false));
  EXPECT_EQ((*t)->Decode(*(*t)->Encode("cafe\xCC\x81", false)), "caf\xC3\xA9");
}

// model.ignore_merges (Llama 3's tokenizer sets it): a piece that is itself
// a vocabulary token encodes as that token, even where no merge builds it;
// without it, the merges decide.
TEST_F(TrainedTokenizerTest, IgnoreMergesTakesAWholeVocabularyToken) {
  const std::string text = HfTokenizerJson(*vocab_, SplitPattern::kQwen2, true, Specials()).Dump();
  const int32_t id = static_cast<int32_t>(vocab_->tokens.size()) + 3;  // after the specials
  const size_t vocab_at = text.find("\"vocab\":{");
  const size_t dropout_at = text.find("\"dropout\":null");
  ASSERT_NE(vocab_at, std::string::npos);
  ASSERT_NE(dropout_at, std::string::npos);
  for (bool ignore : {false, true}) {
    std::string edited = text;
    edited.insert(vocab_at + 9, absl::StrCat("\"qzxj\":", id, ","));
    edited.insert(dropout_at, absl::StrCat("\"ignore_merges\":", ignore ? "true" : "false", ","));
    const std::string dir = testing::FreshDir("bpe_ignore_merges");
    testing::WriteFile(dir + "/tokenizer.json", edited);
    auto t = LoadTokenizer(dir);
    ASSERT_TRUE(t.ok()) << t.status();
    auto ids = (*t)->Encode("qzxj", false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    if (ignore) {
      EXPECT_EQ(*ids, std::vector<int32_t>{id});
    } else {
      EXPECT_GT(ids->size(), 1u);
    }
    EXPECT_EQ((*t)->Decode(*ids), "qzxj");
  }
}

// Ids and ranks are bounded by what the file describes before anything is
// sized by them: each of these crashed the process (bad_alloc, length_error).
TEST_F(TrainedTokenizerTest, HugeIdsAndRanksAreRefusedNotAllocated) {
  const auto& hf = EditedHfError;
  // A vocabulary id of 2^30.
  std::string e = hf("\"vocab\":{", "\"vocab\":{\"qzxj\":1073741824,");
  EXPECT_NE(e.find("model.vocab[\"qzxj\"] is 1073741824"), std::string::npos) << e;
  EXPECT_NE(e.find("tokenizer.json"), std::string::npos) << e;
  // An added token's id of 2^30.
  const std::string first_added = absl::StrCat("\"id\":", Specials()[0].id);
  e = hf(first_added, "\"id\":1073741824");
  EXPECT_NE(e.find("added_tokens entry"), std::string::npos) << e;
  // A tiktoken rank of 2^30, and an added_tokens_decoder id of 2^31 - 1.
  const std::string ranks = TiktokenRanks(*vocab_);
  e = Error(TiktokenFolder(ranks + "cXp4ag== 1073741824\n", "{}"));
  EXPECT_NE(e.find("rank 1073741824 is not below"), std::string::npos) << e;
  EXPECT_NE(e.find("vocab.tiktoken:"), std::string::npos) << e;
  e = Error(TiktokenFolder(
      ranks, R"({"added_tokens_decoder": {"2147483647": {"content": "<x>", "special": true}}})"));
  EXPECT_NE(e.find("added_tokens_decoder[\"2147483647\"]"), std::string::npos) << e;
}

TEST_F(TrainedTokenizerTest, MalformedFilesAreRefusedByName) {
  const auto& with = EditedHfError;
  std::string e = with("\"type\":\"BPE\"", "\"type\":\"Unigram\"");
  EXPECT_NE(e.find("tokenizer.json: model.type must be \"BPE\""), std::string::npos) << e;
  e = with("\"Regex\":\"", "\"Regex\":\"\\\\w+|");
  EXPECT_NE(e.find("tokenizer.json: pre_tokenizer pattern"), std::string::npos) << e;
  e = with("\"merges\":[\"", "\"merges\":[\"nosuchtoken ");
  EXPECT_NE(e.find("model.merges[0]"), std::string::npos) << e;
  e = with("\"type\":\"NFC\"", "\"type\":\"Lowercase\"");
  EXPECT_NE(e.find("tokenizer.json: normalizer"), std::string::npos) << e;
  e = with("\"added_tokens\":[{\"content\"", "\"added_tokens\":[{\"contents\"");
  EXPECT_NE(e.find("added_tokens entry"), std::string::npos) << e;
  e = with("\"lstrip\":false", "\"lstrip\":true");
  EXPECT_NE(e.find("added_tokens \"<|endoftext|>\": lstrip is not supported"), std::string::npos)
      << e;
  e = with("\"dropout\":null", "\"dropout\":null,\"continuing_subword_prefix\":\"##\"");
  EXPECT_NE(e.find("model.continuing_subword_prefix is not supported"), std::string::npos) << e;

  const std::string ranks = TiktokenRanks(*vocab_);
  e = Error(TiktokenFolder(ranks + "not-base64! 7\n", "{}"));
  EXPECT_NE(e.find("vocab.tiktoken:" + std::to_string(vocab_->tokens.size() + 1) +
                   ": expected \"<base64 token> <rank>\""),
            std::string::npos)
      << e;
  e = Error(TiktokenFolder(ranks + "QUJD 5\n", "{}"));
  EXPECT_NE(e.find("rank 5 repeats"), std::string::npos) << e;
  e = Error(TiktokenFolder(ranks, "{\"pat_str\": \"\\\\w+\"}"));
  EXPECT_NE(e.find("tokenizer_config.json: pat_str"), std::string::npos) << e;
  const std::string two = TiktokenFolder(ranks, "{}");
  testing::WriteFile(two + "/other.tiktoken", ranks);
  EXPECT_NE(Error(two).find("more than one *.tiktoken"), std::string::npos);
  EXPECT_NE(Error(testing::FreshDir("empty")).find("no tokenizer"), std::string::npos);
}

}  // namespace
}  // namespace strata
