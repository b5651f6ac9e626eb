#include "runtime/tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <queue>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"
#include "runtime/tokenizer/unicode.h"

namespace strata {
namespace {

// Token ids may leave gaps (reserved special tokens) past the entries a file
// lists, but no more than this: every id is bounded by what the file can
// describe before anything is sized by it.
constexpr int64_t kReservedIdGap = 1024;

// GPT-2's reversible byte <-> printable character map: printable Latin-1
// bytes stand for themselves, the other 68 bytes for U+0100 onwards.
struct ByteAlphabet {
  std::array<char32_t, 256> to_char{};
  absl::flat_hash_map<char32_t, uint8_t> to_byte;
  ByteAlphabet() {
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      to_char[b] = printable ? static_cast<char32_t>(b) : next++;
      to_byte[to_char[b]] = static_cast<uint8_t>(b);
    }
  }
};
const ByteAlphabet& Alphabet() {
  static const ByteAlphabet* alphabet = new ByteAlphabet();
  return *alphabet;
}

// A vocabulary token written in GPT-2's alphabet, as raw bytes.
std::optional<std::string> UnmapBytes(std::string_view token) {
  std::string out;
  for (const unicode::Char& c : unicode::Decode(token)) {
    if (c.offset == token.size()) break;
    auto it = Alphabet().to_byte.find(c.cp);
    if (it == Alphabet().to_byte.end()) return std::nullopt;
    out.push_back(static_cast<char>(it->second));
  }
  return out;
}

enum class Normalizer { kNone, kNfc, kNfkc };

struct AddedToken {
  std::string content;
  int32_t id;
  bool special;  // a control token: skipped when decoding
};

std::vector<TokenText> ToTokenTexts(const std::vector<AddedToken>& added) {
  std::vector<TokenText> out;
  for (const AddedToken& a : added) out.push_back({a.content, a.id});
  return out;
}

class BpeTokenizer final : public Tokenizer {
 public:
  struct Options {
    std::optional<SplitPattern> split;  // none: a segment is one piece
    Normalizer normalizer = Normalizer::kNone;
    bool add_prefix_space = false;
    bool ignore_merges = false;  // a piece that is a token is not merged
    bool rank_merges = false;    // tiktoken: merge by the rank of the result
    std::optional<int32_t> bos;
    bool add_bos = false;
  };

  BpeTokenizer(Options options, std::vector<std::string> token_bytes,
               absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges,
               std::vector<AddedToken> added)
      : options_(std::move(options)),
        tokens_(std::move(token_bytes)),
        merges_(std::move(merges)),
        added_(ToTokenTexts(added)) {
    for (size_t id = 0; id < tokens_.size(); ++id) {
      if (!tokens_[id].empty()) by_bytes_.emplace(tokens_[id], static_cast<int32_t>(id));
    }
    for (int b = 0; b < 256; ++b) {
      auto it = by_bytes_.find(std::string(1, static_cast<char>(b)));
      byte_ids_[b] = it == by_bytes_.end() ? -1 : it->second;
    }
    control_.assign(tokens_.size(), false);
    for (const AddedToken& a : added) {
      if (a.id >= static_cast<int32_t>(tokens_.size())) {
        tokens_.resize(a.id + 1);
        control_.resize(a.id + 1, false);
      }
      tokens_[a.id] = a.content;
      control_[a.id] = a.special;
    }
    size_t longest = 1;
    for (const std::string& t : tokens_) longest = std::max(longest, t.size());
    // NFC/NFKC may shrink text (NFKC: up to 4 bytes to 1) before it is split.
    max_input_bytes_ =
        static_cast<int64_t>(longest) * (options_.normalizer == Normalizer::kNone ? 1 : 4);
  }

  int64_t MaxInputBytesPerToken() const override { return max_input_bytes_; }

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> ids;
    if (add_bos && options_.bos) ids.push_back(*options_.bos);
    RETURN_IF_ERROR(EncodeAroundTokenTexts(
        text, added_,
        [this](std::string_view segment, std::vector<int32_t>* out) {
          return EncodeSegment(segment, out);
        },
        &ids));
    return ids;
  }

  std::string Decode(const std::vector<int32_t>& ids) const override {
    return DecodeIncrementally(*this, ids);
  }

  std::string TokenBytes(int32_t id) const override {
    if (id < 0 || id >= static_cast<int32_t>(tokens_.size()) || control_[id]) return "";
    return tokens_[id];
  }
  bool StripsLeadingSpace() const override { return false; }
  int32_t vocab_size() const override { return static_cast<int32_t>(tokens_.size()); }
  std::optional<int32_t> bos_id() const override { return options_.bos; }
  bool add_bos_by_default() const override { return options_.add_bos && options_.bos; }

 private:
  absl::Status EncodeSegment(std::string_view segment, std::vector<int32_t>* ids) const {
    if (segment.empty()) return absl::OkStatus();
    std::string normal;
    const bool ascii = std::all_of(segment.begin(), segment.end(),
                                   [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    if (ascii) {
      // ASCII text is already in every normal form.
    } else if (options_.normalizer == Normalizer::kNfc) {
      ASSIGN_OR_RETURN(normal, unicode::ToNfc(segment));
      segment = normal;
    } else if (options_.normalizer == Normalizer::kNfkc) {
      ASSIGN_OR_RETURN(normal, unicode::ToNfkc(segment));
      segment = normal;
    }
    std::string prefixed;
    if (options_.add_prefix_space && segment.front() != ' ') {
      prefixed.reserve(segment.size() + 1);
      prefixed.push_back(' ');
      prefixed.append(segment);
      segment = prefixed;
    }
    if (!options_.split) return EncodePiece(segment, ids);
    for (std::string_view piece : PreTokenize(*options_.split, segment)) {
      RETURN_IF_ERROR(EncodePiece(piece, ids));
    }
    return absl::OkStatus();
  }

  // The id of merging `left` and `right`, and its priority (lower first).
  std::optional<std::pair<int32_t, int32_t>> Merge(int32_t left, int32_t right) const {
    if (options_.rank_merges) {
      auto it = by_bytes_.find(absl::StrCat(tokens_[left], tokens_[right]));
      if (it == by_bytes_.end()) return std::nullopt;
      return std::make_pair(it->second, it->second);
    }
    auto it = merges_.find((static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right));
    if (it == merges_.end()) return std::nullopt;
    return it->second;
  }

  // Byte-pair merging of one piece: repeatedly merge the adjacent pair of
  // lowest rank (leftmost first), through a heap over a linked list.
  absl::Status EncodePiece(std::string_view piece, std::vector<int32_t>* ids) const {
    if (piece.empty()) return absl::OkStatus();
    if (options_.ignore_merges || options_.rank_merges) {
      if (auto it = by_bytes_.find(absl::string_view(piece.data(), piece.size()));
          it != by_bytes_.end()) {
        ids->push_back(it->second);
        return absl::OkStatus();
      }
    }
    struct Part {
      int32_t id;
      int prev, next;
    };
    std::vector<Part> parts(piece.size());
    for (size_t i = 0; i < piece.size(); ++i) {
      const int32_t id = byte_ids_[static_cast<uint8_t>(piece[i])];
      if (id < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer: the vocabulary has no token for byte 0x",
                         absl::Hex(static_cast<uint8_t>(piece[i]), absl::kZeroPad2)));
      }
      parts[i] = {id, static_cast<int>(i) - 1, i + 1 < piece.size() ? static_cast<int>(i) + 1 : -1};
    }
    struct Candidate {
      int32_t rank;
      int left;
      int32_t left_id, right_id, merged;
      bool operator>(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : left > o.left;
      }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
    auto offer = [&](int left) {
      if (left < 0 || parts[left].next < 0) return;
      const int right = parts[left].next;
      if (auto m = Merge(parts[left].id, parts[right].id)) {
        heap.push({m->first, left, parts[left].id, parts[right].id, m->second});
      }
    };
    for (size_t i = 0; i + 1 < piece.size(); ++i) offer(static_cast<int>(i));
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      Part& left = parts[c.left];
      if (left.id != c.left_id || left.next < 0 || parts[left.next].id != c.right_id) {
        continue;  // stale: one side merged since
      }
      const int gone = left.next;
      left.id = c.merged;
      left.next = parts[gone].next;
      if (left.next >= 0) parts[left.next].prev = c.left;
      parts[gone].id = -1;
      offer(left.prev);
      offer(c.left);
    }
    for (int i = 0; i >= 0; i = parts[i].next) ids->push_back(parts[i].id);
    return absl::OkStatus();
  }

  Options options_;
  std::vector<std::string> tokens_;  // id -> bytes
  std::vector<bool> control_;        // id -> special added token
  absl::flat_hash_map<std::string, int32_t> by_bytes_;
  std::array<int32_t, 256> byte_ids_{};
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (rank, merged id)
  TokenTextMatcher added_;
  int64_t max_input_bytes_ = 1;
};

// The string of a token field of tokenizer_config.json: "x" or {"content": "x"}.
std::optional<std::string> TokenString(const Json* v) {
  if (v == nullptr) return std::nullopt;
  if (v->is_string()) return v->string_value();
  if (const Json* c = v->Find("content"); c != nullptr && c->is_string()) return c->string_value();
  return std::nullopt;
}

// BOS from tokenizer_config.json, looked up among the added tokens.
void ApplyConfig(const Json& config, const std::vector<AddedToken>& added,
                 BpeTokenizer::Options* options) {
  if (config.is_null()) return;
  if (auto bos = TokenString(config.Find("bos_token"))) {
    for (const AddedToken& a : added) {
      if (a.content == *bos) options->bos = a.id;
    }
  }
  if (const Json* v = config.Find("add_bos_token"); v != nullptr && v->is_bool()) {
    options->add_bos = v->bool_value();
  }
}

absl::StatusOr<Normalizer> ParseNormalizer(const Json* n, const std::string& path) {
  if (n == nullptr || n->is_null()) return Normalizer::kNone;
  const Json* type = n->Find("type");
  const std::string t = type != nullptr && type->is_string() ? type->string_value() : "";
  if (t == "NFC") return Normalizer::kNfc;
  if (t == "NFKC") return Normalizer::kNfkc;
  if (t == "Sequence") {
    const Json* list = n->Find("normalizers");
    if (list != nullptr && list->is_array() && list->array().empty()) return Normalizer::kNone;
    if (list != nullptr && list->is_array() && list->array().size() == 1) {
      return ParseNormalizer(&list->array()[0], path);
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": normalizer ", n->Dump(), " is not supported (NFC, NFKC or none)"));
}

// Fills the split pattern and prefix-space option from the pre-tokenizer.
absl::Status ParsePreTokenizer(const Json* p, const std::string& path,
                               BpeTokenizer::Options* options) {
  if (p == nullptr || p->is_null()) return absl::OkStatus();
  auto unsupported = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": pre_tokenizer ", why, " is not supported: ", p->Dump().substr(0, 300)));
  };
  const Json* type = p->Find("type");
  const std::string t = type != nullptr && type->is_string() ? type->string_value() : "";
  if (t == "Sequence") {
    const Json* list = p->Find("pretokenizers");
    if (list == nullptr || !list->is_array()) return unsupported("Sequence without pretokenizers");
    for (const Json& item : list->array()) RETURN_IF_ERROR(ParsePreTokenizer(&item, path, options));
    return absl::OkStatus();
  }
  if (t == "ByteLevel") {
    if (const Json* v = p->Find("add_prefix_space"); v != nullptr && v->is_bool()) {
      options->add_prefix_space = v->bool_value();
    }
    const Json* regex = p->Find("use_regex");
    if (regex == nullptr || (regex->is_bool() && regex->bool_value())) {
      if (options->split) return unsupported("with two split patterns");
      options->split = SplitPattern::kGpt2;
    }
    return absl::OkStatus();
  }
  if (t == "Split") {
    const Json* pattern = p->Find("pattern");
    const Json* regex = pattern != nullptr ? pattern->Find("Regex") : nullptr;
    const Json* behavior = p->Find("behavior");
    const Json* invert = p->Find("invert");
    if (regex == nullptr || !regex->is_string()) return unsupported("Split without a Regex");
    if (behavior == nullptr || !behavior->is_string() || behavior->string_value() != "Isolated" ||
        (invert != nullptr && invert->is_bool() && invert->bool_value())) {
      return unsupported("Split other than Isolated");
    }
    const auto family = RecognizeSplitPattern(regex->string_value());
    if (!family) {
      return unsupported(absl::StrCat("pattern ", regex->string_value(),
                                      " (known: the GPT-2, cl100k/Llama 3, Qwen2, o200k ones)"));
    }
    if (options->split) return unsupported("with two split patterns");
    options->split = *family;
    return absl::OkStatus();
  }
  return unsupported(absl::StrCat("type ", t));
}

}  // namespace

std::string ByteLevelSpelling(std::string_view bytes) {
  std::string out;
  for (char b : bytes) unicode::AppendUtf8(Alphabet().to_char[static_cast<uint8_t>(b)], &out);
  return out;
}

bool IsByteLevelBpe(const Json& tokenizer) {
  auto byte_level = [](const Json* p, auto& self) -> bool {
    if (p == nullptr || !p->is_object()) return false;
    const Json* type = p->Find("type");
    if (type != nullptr && type->is_string() && type->string_value() == "ByteLevel") return true;
    for (const char* list : {"pretokenizers", "decoders"}) {
      if (const Json* items = p->Find(list); items != nullptr && items->is_array()) {
        for (const Json& item : items->array()) {
          if (self(&item, self)) return true;
        }
      }
    }
    return false;
  };
  return byte_level(tokenizer.Find("pre_tokenizer"), byte_level) ||
         byte_level(tokenizer.Find("decoder"), byte_level);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfBpeTokenizer(const Json& tokenizer,
                                                              const std::string& path,
                                                              const Json& tokenizer_config) {
  const Json* model = tokenizer.Find("model");
  const Json* type = model != nullptr ? model->Find("type") : nullptr;
  if (type == nullptr || !type->is_string() || type->string_value() != "BPE") {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": model.type must be \"BPE\" (byte-level BPE); got ",
                     type != nullptr ? type->Dump() : "nothing"));
  }
  BpeTokenizer::Options options;
  ASSIGN_OR_RETURN(options.normalizer, ParseNormalizer(tokenizer.Find("normalizer"), path));
  RETURN_IF_ERROR(ParsePreTokenizer(tokenizer.Find("pre_tokenizer"), path, &options));
  if (const Json* v = model->Find("ignore_merges"); v != nullptr && v->is_bool()) {
    options.ignore_merges = v->bool_value();
  }
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const Json* v = model->Find(affix);
    if (v != nullptr && v->is_string() && !v->string_value().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": model.", affix, " is not supported by byte-level BPE"));
    }
  }

  const Json* vocab = model->Find("vocab");
  if (vocab == nullptr || !vocab->is_object() || vocab->object().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": model.vocab is missing or empty"));
  }
  // Ids are bounded by what the file describes (its vocabulary entries and
  // added tokens, with room for reserved gaps) before anything is sized by
  // them: an id of 2^30 would otherwise allocate gigabytes.
  const Json* added_list = tokenizer.Find("added_tokens");
  const int64_t id_limit = static_cast<int64_t>(vocab->object().size()) +
                           (added_list != nullptr && added_list->is_array()
                                ? static_cast<int64_t>(added_list->array().size())
                                : 0) +
                           kReservedIdGap;
  std::vector<std::string> tokens;
  absl::flat_hash_map<absl::string_view, int32_t> ids;  // vocabulary string -> id
  for (const auto& [token, id] : vocab->object()) {
    if (!id.is_integer() || id.int_value() < 0 || id.int_value() >= id_limit) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": model.vocab[\"", token, "\"] is ", id.Dump(), ", not an id below ",
                       id_limit, " (the file's vocabulary and added tokens describe no more)"));
    }
    auto bytes = UnmapBytes(token);
    if (!bytes) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": model.vocab token \"", token,
                                                     "\" is outside the byte-level alphabet"));
    }
    const auto i = static_cast<size_t>(id.int_value());
    if (i >= tokens.size()) tokens.resize(i + 1);
    tokens[i] = std::move(*bytes);
    ids[token] = static_cast<int32_t>(i);
  }

  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges;
  const Json* merge_list = model->Find("merges");
  if (merge_list == nullptr || !merge_list->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": model.merges is missing"));
  }
  merges.reserve(merge_list->array().size());
  int32_t rank = 0;
  for (const Json& m : merge_list->array()) {
    std::string left, right;
    if (m.is_string()) {  // "a b"
      const size_t space = m.string_value().find(' ', 1);
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": model.merges[", rank, "] \"",
                                                       m.string_value(), "\" is not \"a b\""));
      }
      left = m.string_value().substr(0, space);
      right = m.string_value().substr(space + 1);
    } else if (m.is_array() && m.array().size() == 2 && m.array()[0].is_string() &&
               m.array()[1].is_string()) {  // ["a", "b"]
      left = m.array()[0].string_value();
      right = m.array()[1].string_value();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": model.merges[", rank, "] is malformed"));
    }
    auto l = ids.find(left), r = ids.find(right), lr = ids.find(left + right);
    if (l == ids.end() || r == ids.end() || lr == ids.end()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": model.merges[", rank, "] \"", left,
                                                     " ", right,
                                                     "\" uses a token not in the vocab"));
    }
    merges.emplace((static_cast<uint64_t>(l->second) << 32) | static_cast<uint32_t>(r->second),
                   std::make_pair(rank, lr->second));
    ++rank;
  }

  std::vector<AddedToken> added;
  if (const Json* list = tokenizer.Find("added_tokens"); list != nullptr && list->is_array()) {
    for (const Json& a : list->array()) {
      const Json* id = a.Find("id");
      const Json* content = a.Find("content");
      if (id == nullptr || !id->is_integer() || content == nullptr || !content->is_string() ||
          id->int_value() < 0 || id->int_value() >= id_limit) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": added_tokens entry ", a.Dump().substr(0, 200),
            " is malformed (it needs a string content and an id below ", id_limit, ")"));
      }
      for (const char* flag : {"lstrip", "rstrip", "single_word"}) {
        const Json* v = a.Find(flag);
        if (v != nullptr && v->is_bool() && v->bool_value()) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": added_tokens \"", content->string_value(), "\": ", flag,
                           " is not supported (tokens match their exact text)"));
        }
      }
      const Json* special = a.Find("special");
      added.push_back({content->string_value(), static_cast<int32_t>(id->int_value()),
                       special != nullptr && special->is_bool() && special->bool_value()});
    }
  }
  // A TemplateProcessing post-processor that starts with a special token
  // adds it as BOS.
  if (const Json* post = tokenizer.Find("post_processor"); post != nullptr && post->is_object()) {
    const Json* single = post->Find("single");
    if (single != nullptr && single->is_array() && !single->array().empty()) {
      if (const Json* st = single->array()[0].Find("SpecialToken")) {
        if (auto name = TokenString(st->Find("id"))) {
          for (const AddedToken& a : added) {
            if (a.content == *name) options.bos = a.id, options.add_bos = true;
          }
        }
      }
    }
  }
  ApplyConfig(tokenizer_config, added, &options);
  return std::make_unique<BpeTokenizer>(std::move(options), std::move(tokens), std::move(merges),
                                        std::move(added));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTiktokenTokenizer(const std::string& path,
                                                                 const Json& tokenizer_config,
                                                                 SplitPattern pattern) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(std::move(line));
  // A rank is bounded by the lines the file has (ranks are dense), before
  // anything is sized by it.
  const int64_t rank_limit = static_cast<int64_t>(lines.size()) + kReservedIdGap;
  std::vector<std::string> tokens;
  for (int number = 1; number <= static_cast<int>(lines.size()); ++number) {
    std::string& line = lines[number - 1];
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    int64_t rank = -1;
    std::string bytes;
    if (space == std::string::npos || !absl::SimpleAtoi(line.substr(space + 1), &rank) ||
        !absl::Base64Unescape(line.substr(0, space), &bytes) || bytes.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", number, ": expected \"<base64 token> <rank>\""));
    }
    if (rank < 0 || rank >= rank_limit) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", number, ": rank ", rank,
                                                     " is not below ", rank_limit,
                                                     " (the file has ", lines.size(), " lines)"));
    }
    if (static_cast<size_t>(rank) >= tokens.size()) tokens.resize(rank + 1);
    if (!tokens[rank].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", number, ": rank ", rank, " repeats"));
    }
    tokens[rank] = std::move(bytes);
  }
  if (tokens.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no tokens"));

  BpeTokenizer::Options options;
  options.split = pattern;
  options.rank_merges = true;
  std::vector<AddedToken> added;
  if (!tokenizer_config.is_null()) {
    if (const Json* pat = tokenizer_config.Find("pat_str"); pat != nullptr && pat->is_string()) {
      const auto family = RecognizeSplitPattern(pat->string_value());
      if (!family) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.json: pat_str ",
                                                       pat->string_value(), " is not supported"));
      }
      options.split = *family;
    }
    if (const Json* decoder = tokenizer_config.Find("added_tokens_decoder");
        decoder != nullptr && decoder->is_object()) {
      // Added ids follow the ranks, with room for reserved gaps.
      const int64_t id_limit = static_cast<int64_t>(tokens.size()) +
                               static_cast<int64_t>(decoder->object().size()) + kReservedIdGap;
      for (const auto& [key, entry] : decoder->object()) {
        int32_t id = -1;
        auto content = TokenString(&entry);
        if (!absl::SimpleAtoi(key, &id) || id < 0 || id >= id_limit || !content) {
          return absl::InvalidArgumentError(
              absl::StrCat("tokenizer_config.json: added_tokens_decoder[\"", key,
                           "\"] is malformed (it needs a content and an id below ", id_limit, ")"));
        }
        const Json* special = entry.Find("special");
        added.push_back(
            {*content, id, special == nullptr || !special->is_bool() || special->bool_value()});
      }
    }
  }
  ApplyConfig(tokenizer_config, added, &options);
  return std::make_unique<BpeTokenizer>(
      std::move(options), std::move(tokens),
      absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>>(), std::move(added));
}

}  // namespace strata
