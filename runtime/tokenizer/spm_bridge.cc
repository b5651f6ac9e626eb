// Deliberately includes no Abseil header; see spm_bridge.h. Built as its own
// module (libstrata_spm.so), loaded by spm_loader.cc.
#include "runtime/tokenizer/spm_bridge.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

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

class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  const std::vector<std::string>& v_;
  size_t i_ = 0;
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

bool TrainImpl(const std::vector<std::string>& sentences, const std::string& args,
               std::string* model, std::string* error) {
  VectorIterator it(sentences);
  // The trainer logs its command line to stderr before it reads
  // --minloglevel; keep that out of our users' terminals.
  std::fflush(stderr);
  const int saved = ::dup(2);
  const int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (saved >= 0 && devnull >= 0) ::dup2(devnull, 2);
  auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, model);
  if (saved >= 0 && devnull >= 0) {
    std::fflush(stderr);
    ::dup2(saved, 2);
  }
  if (saved >= 0) ::close(saved);
  if (devnull >= 0) ::close(devnull);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
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
__attribute__((visibility("default"))) bool strata_spm_train(
    const std::vector<std::string>& sentences, const std::string& args, std::string* model,
    std::string* error) {
  return strata::spm::TrainImpl(sentences, args, model, error);
}
}
