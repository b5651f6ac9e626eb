#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "runtime/json.h"
#include "runtime/status_macros.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer/bpe_tokenizer.h"
#include "runtime/tokenizer/spm_bridge.h"

namespace strata {
namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(std::unique_ptr<spm::Processor> sp, bool add_bos)
      : sp_(std::move(sp)), add_bos_(add_bos), strips_leading_space_(sp_->adds_dummy_prefix()) {
    // Precompute each piece's bytes once; decoding is then a table lookup.
    const int n = sp_->PieceSize();
    bytes_.resize(n);
    std::vector<TokenText> controls;
    for (int id = 0; id < n; ++id) {
      bytes_[id] = ComputeBytes(id);
      if (sp_->IsControl(id) && !sp_->Piece(id).empty()) controls.push_back({sp_->Piece(id), id});
    }
    controls_ = TokenTextMatcher(std::move(controls));
    // The normalizer spec is out of reach (see spm_bridge.h), so ask the
    // model: text it does not give back unchanged is normalised (NFKC can
    // shrink a character to a quarter of its bytes) or loses whitespace.
    const std::string probe = "a \t  b\n\nc\xEF\xBC\xA1";  // fullwidth A
    std::vector<int> ids;
    std::string decoded, error;
    lossless_ =
        sp_->Encode(probe, &ids, &error) && sp_->Decode(ids, &decoded, &error) && decoded == probe;
    size_t longest = controls_.longest();
    for (const std::string& b : bytes_) longest = std::max(longest, b.size());
    max_input_bytes_ = static_cast<int64_t>(longest) * (lossless_ ? 1 : 4);
  }

  // Control tokens written as text ("<s>", "</s>", as chat templates write
  // them) become their ids, as Hugging Face's Llama tokenizer does; the text
  // between them is encoded by SentencePiece.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> out;
    if (add_bos && sp_->bos_id() >= 0) out.push_back(sp_->bos_id());
    RETURN_IF_ERROR(EncodeAroundTokenTexts(
        text, controls_,
        [this](std::string_view segment, std::vector<int32_t>* ids) {
          return EncodeText(segment, ids);
        },
        &out));
    return out;
  }

  std::string Decode(const std::vector<int32_t>& ids) const override {
    return DecodeIncrementally(*this, ids);
  }

  std::string TokenBytes(int32_t id) const override {
    if (id < 0 || id >= static_cast<int32_t>(bytes_.size())) return "";
    return bytes_[id];
  }
  bool StripsLeadingSpace() const override { return strips_leading_space_; }
  int32_t vocab_size() const override { return sp_->PieceSize(); }
  std::optional<int32_t> bos_id() const override {
    if (sp_->bos_id() < 0) return std::nullopt;
    return sp_->bos_id();
  }
  bool add_bos_by_default() const override { return add_bos_; }
  int64_t MaxInputBytesPerToken() const override { return max_input_bytes_; }
  bool CollapsesWhitespace() const override { return !lossless_; }

 private:
  absl::Status EncodeText(std::string_view text, std::vector<int32_t>* out) const {
    if (text.empty()) return absl::OkStatus();
    std::vector<int> ids;
    std::string error;
    if (!sp_->Encode(std::string(text), &ids, &error)) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer: cannot encode: ", error));
    }
    out->insert(out->end(), ids.begin(), ids.end());
    return absl::OkStatus();
  }

  std::string ComputeBytes(int id) const {
    if (sp_->IsControl(id)) return "";
    if (sp_->IsUnknown(id)) return " \xE2\x81\x87 ";  // " ⁇ ", as SentencePiece decodes <unk>
    const std::string piece = sp_->Piece(id);
    if (sp_->IsByte(id)) {  // "<0xAB>"
      return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
    }
    std::string out;
    static constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 '▁'
    for (size_t i = 0; i < piece.size();) {
      if (piece.compare(i, kSpace.size(), kSpace) == 0) {
        out.push_back(' ');
        i += kSpace.size();
      } else {
        out.push_back(piece[i++]);
      }
    }
    return out;
  }

  std::unique_ptr<spm::Processor> sp_;
  bool add_bos_;
  bool strips_leading_space_;
  std::vector<std::string> bytes_;
  TokenTextMatcher controls_{{}};
  bool lossless_ = false;
  int64_t max_input_bytes_ = 1;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir) {
  namespace fs = std::filesystem;
  Json config;  // tokenizer_config.json, null when absent
  const fs::path cfg_path = fs::path(model_dir) / "tokenizer_config.json";
  if (fs::exists(cfg_path)) {
    ASSIGN_OR_RETURN(config, ReadJsonFile(cfg_path.string()));
  }
  // Byte-level BPE: tokenizer.json (Llama 3, Qwen2, GPT-2 style), else a
  // tiktoken rank file (Hunyuan). tokenizer.json files of SentencePiece
  // models (byte-fallback BPE) come with tokenizer.model, read below.
  const fs::path hf_path = fs::path(model_dir) / "tokenizer.json";
  const fs::path spm_path = fs::path(model_dir) / "tokenizer.model";
  if (fs::exists(hf_path)) {
    ASSIGN_OR_RETURN(Json hf, ReadJsonFile(hf_path.string()));
    if (IsByteLevelBpe(hf) || !fs::exists(spm_path)) {
      return LoadHfBpeTokenizer(hf, hf_path.string(), config);
    }
  }
  if (!fs::exists(spm_path)) {
    std::vector<std::string> rank_files;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(model_dir, ec)) {
      if (entry.path().extension() == ".tiktoken") rank_files.push_back(entry.path().string());
    }
    if (rank_files.size() == 1) return LoadTiktokenTokenizer(rank_files[0], config);
    return absl::NotFoundError(absl::StrCat(
        model_dir, rank_files.empty() ? ": no tokenizer: expected tokenizer.json, tokenizer.model "
                                        "(SentencePiece) or one *.tiktoken rank file"
                                      : ": more than one *.tiktoken rank file"));
  }
  bool add_bos = true;
  if (const Json* v = config.Find("add_bos_token"); v != nullptr && v->is_bool()) {
    add_bos = v->bool_value();
  }
  std::string error;
  auto sp = spm::Processor::LoadFile(spm_path.string(), &error);
  if (sp == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(spm_path.string(), ": not a SentencePiece model: ", error));
  }
  return std::make_unique<SentencePieceTokenizer>(std::move(sp), add_bos);
}

absl::StatusOr<std::string> TrainSentencePieceBpe(const std::vector<std::string>& sentences,
                                                  int vocab_size) {
  const std::string args =
      absl::StrCat("--model_type=bpe --vocab_size=", vocab_size,
                   " --character_coverage=1.0 --byte_fallback=true --split_digits=true"
                   " --normalization_rule_name=identity --remove_extra_whitespaces=false"
                   " --add_dummy_prefix=true --allow_whitespace_only_pieces=true"
                   " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --num_threads=1"
                   " --max_sentence_length=100000 --minloglevel=2");
  std::string model, error;
  if (!spm::Train(sentences, args, &model, &error)) {
    return absl::InternalError(absl::StrCat("SentencePiece training failed: ", error));
  }
  return model;
}

}  // namespace strata
