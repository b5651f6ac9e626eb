#include "runtime/tokenizer/bpe_trainer.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/bpe_tokenizer.h"

namespace strata {

BpeVocabulary TrainByteLevelBpe(const std::vector<std::string>& texts, int merges,
                                SplitPattern pattern) {
  BpeVocabulary vocab;
  absl::flat_hash_map<std::string, int> ids;
  for (int b = 0; b < 256; ++b) {
    vocab.tokens.emplace_back(1, static_cast<char>(b));
    ids[vocab.tokens.back()] = b;
  }
  // Each distinct piece once, with its count, as a sequence of token ids.
  std::map<std::string, int64_t> counts;
  for (const std::string& text : texts) {
    for (std::string_view piece : PreTokenize(pattern, text)) ++counts[std::string(piece)];
  }
  struct Word {
    std::vector<int> ids;
    int64_t count;
  };
  std::vector<Word> words;
  for (const auto& [piece, count] : counts) {
    Word w{{}, count};
    for (char c : piece) w.ids.push_back(static_cast<uint8_t>(c));
    words.push_back(std::move(w));
  }
  std::vector<std::pair<int, int>> refused;  // pairs whose result already is a token
  while (static_cast<int>(vocab.merges.size()) < merges) {
    std::map<std::pair<int, int>, int64_t> pairs;
    for (const Word& w : words) {
      for (size_t i = 0; i + 1 < w.ids.size(); ++i) pairs[{w.ids[i], w.ids[i + 1]}] += w.count;
    }
    for (const auto& r : refused) pairs.erase(r);
    if (pairs.empty()) break;
    // Most frequent; ties to the smaller (left bytes, right bytes).
    auto best = pairs.begin();
    for (auto it = pairs.begin(); it != pairs.end(); ++it) {
      const auto key = [&](const auto& p) {
        return std::make_tuple(-p.second, vocab.tokens[p.first.first],
                               vocab.tokens[p.first.second]);
      };
      if (key(*it) < key(*best)) best = it;
    }
    const auto [left, right] = best->first;
    std::string bytes = vocab.tokens[left] + vocab.tokens[right];
    if (ids.contains(bytes)) {
      refused.push_back(best->first);
      continue;
    }
    const int id = static_cast<int>(vocab.tokens.size());
    ids[bytes] = id;
    vocab.tokens.push_back(std::move(bytes));
    vocab.merges.emplace_back(left, right);
    for (Word& w : words) {
      std::vector<int> merged;
      for (size_t i = 0; i < w.ids.size(); ++i) {
        if (i + 1 < w.ids.size() && w.ids[i] == left && w.ids[i + 1] == right) {
          merged.push_back(id);
          ++i;
        } else {
          merged.push_back(w.ids[i]);
        }
      }
      w.ids = std::move(merged);
    }
  }
  return vocab;
}

Json HfTokenizerJson(const BpeVocabulary& vocab, SplitPattern pattern, bool nfc,
                     const std::vector<SpecialToken>& specials) {
  std::map<std::string, Json> vocab_json;
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    vocab_json[ByteLevelSpelling(vocab.tokens[id])] = Json::Integer(static_cast<int64_t>(id));
  }
  std::vector<Json> merges;
  for (const auto& [l, r] : vocab.merges) {
    merges.push_back(Json::String(
        absl::StrCat(ByteLevelSpelling(vocab.tokens[l]), " ", ByteLevelSpelling(vocab.tokens[r]))));
  }
  std::vector<Json> added;
  for (const SpecialToken& s : specials) {
    added.push_back(Json::Object({{"id", Json::Integer(s.id)},
                                  {"content", Json::String(s.content)},
                                  {"single_word", Json::Bool(false)},
                                  {"lstrip", Json::Bool(false)},
                                  {"rstrip", Json::Bool(false)},
                                  {"normalized", Json::Bool(false)},
                                  {"special", Json::Bool(true)}}));
  }
  auto byte_level = [](bool use_regex) {
    return Json::Object({{"type", Json::String("ByteLevel")},
                         {"add_prefix_space", Json::Bool(false)},
                         {"trim_offsets", Json::Bool(false)},
                         {"use_regex", Json::Bool(use_regex)}});
  };
  const std::string regex(SplitPatternRegex(pattern));
  return Json::Object(
      {{"version", Json::String("1.0")},
       {"added_tokens", Json::Array(std::move(added))},
       {"normalizer", nfc ? Json::Object({{"type", Json::String("NFC")}}) : Json::Null()},
       {"pre_tokenizer",
        Json::Object({{"type", Json::String("Sequence")},
                      {"pretokenizers",
                       Json::Array({Json::Object({{"type", Json::String("Split")},
                                                  {"pattern",
                                                   Json::Object({{"Regex", Json::String(regex)}})},
                                                  {"behavior", Json::String("Isolated")},
                                                  {"invert", Json::Bool(false)}}),
                                    byte_level(false)})}})},
       {"post_processor", byte_level(false)},
       {"decoder", byte_level(false)},
       {"model", Json::Object({{"type", Json::String("BPE")},
                               {"dropout", Json::Null()},
                               {"unk_token", Json::Null()},
                               {"fuse_unk", Json::Bool(false)},
                               {"byte_fallback", Json::Bool(false)},
                               {"vocab", Json::Object(std::move(vocab_json))},
                               {"merges", Json::Array(std::move(merges))}})}});
}

std::string TiktokenRanks(const BpeVocabulary& vocab) {
  std::string out;
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    absl::StrAppend(&out, absl::Base64Escape(vocab.tokens[id]), " ", id, "\n");
  }
  return out;
}

}  // namespace strata
