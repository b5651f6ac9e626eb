// Deliberately includes no Abseil header; see spm_bridge.h. Built as its own
// module (libstrata_spm.so), loaded by spm_loader.cc.
#include "runtime/tokenizer/spm_bridge.h"

#include <sentencepiece_processor.h>

namespace strata::spm {
namespace {

class ProcessorImpl : public Processor {
 public:
  sentencepiece::SentencePieceProcessor sp;

  bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const override {
    auto status = sp.Encode(text, ids);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  bool Decode(const std::vector<int>& ids, std::string* text, std::string* error) const override {
    auto status = sp.Decode(ids, text);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  int PieceSize() const override { return sp.GetPieceSize(); }
  std::string Piece(int id) const override { return sp.IdToPiece(id); }
  int PieceToId(const std::string& piece) const override { return sp.PieceToId(piece); }
  bool IsByte(int id) const override { return sp.IsByte(id); }
  bool IsControl(int id) const override { return sp.IsControl(id); }
  bool IsUnknown(int id) const override { return sp.IsUnknown(id); }
  int bos_id() const override { return sp.bos_id(); }
  int eos_id() const override { return sp.eos_id(); }
  // The normalizer spec is not reachable without the model proto's generated
  // header, so ask the model itself: does encoding "a" start with '▁'?
  bool adds_dummy_prefix() const override {
    std::vector<std::string> pieces;
    if (!sp.Encode("a", &pieces).ok() || pieces.empty()) return false;
    return pieces[0].rfind("\xE2\x96\x81", 0) == 0;
  }
};

}  // namespace

Processor* LoadFileImpl(const std::string& path, std::string* error) {
  auto p = std::make_unique<ProcessorImpl>();
  auto status = p->sp.Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return p.release();
}

Processor* FromSerializedImpl(const std::string& bytes, std::string* error) {
  auto p = std::make_unique<ProcessorImpl>();
  auto status = p->sp.LoadFromSerializedProto(bytes);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return p.release();
}

}  // namespace strata::spm

// The module's entry points, looked up with dlsym by spm_loader.cc.
extern "C" {
__attribute__((visibility("default"))) strata::spm::Processor* strata_spm_load_file(
    const std::string& path, std::string* error) {
  return strata::spm::LoadFileImpl(path, error);
}
__attribute__((visibility("default"))) strata::spm::Processor* strata_spm_from_serialized(
    const std::string& bytes, std::string* error) {
  return strata::spm::FromSerializedImpl(bytes, error);
}
}
