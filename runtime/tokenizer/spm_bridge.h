// The only door to SentencePiece. Two facts of Debian's package shape it:
// - sentencepiece_processor.h declares its own absl::string_view, which
//   clashes with Abseil's, so this header and spm_bridge.cc use no Abseil.
// - libsentencepiece.so carries its own copy of protobuf-lite and exports
//   it; in a process that also uses libprotobuf (every gRPC service) the two
//   copies interpose and the process crashes while loading. So spm_bridge.cc
//   is a separate module, libstrata_spm.so, that spm_loader.cc opens with
//   dlopen(RTLD_LOCAL | RTLD_DEEPBIND): its protobuf stays private to it.
//   The module is found through $STRATA_SPM_LIBRARY, then the path it was
//   built at, then next to the executable. RTLD_DEEPBIND also makes the
//   module see libstdc++'s own (never constructed) std::cerr rather than the
//   executable's copy, so code that logs through iostreams must not run
//   there: the trainer does, so Train() runs it in a helper process,
//   strata-spm-train ($STRATA_SPM_TRAIN, the build path, or next to the
//   executable), which links no libprotobuf.
#ifndef STRATA_RUNTIME_TOKENIZER_SPM_BRIDGE_H_
#define STRATA_RUNTIME_TOKENIZER_SPM_BRIDGE_H_

#include <memory>
#include <string>
#include <vector>

namespace strata::spm {

class Processor {
 public:
  // Both return nullptr and set *error on failure.
  static std::unique_ptr<Processor> LoadFile(const std::string& path, std::string* error);
  static std::unique_ptr<Processor> FromSerialized(const std::string& bytes, std::string* error);
  virtual ~Processor() = default;

  virtual bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const = 0;
  virtual bool Decode(const std::vector<int>& ids, std::string* text, std::string* error) const = 0;
  virtual int PieceSize() const = 0;
  virtual std::string Piece(int id) const = 0;
  virtual int PieceToId(const std::string& piece) const = 0;
  virtual bool IsByte(int id) const = 0;
  virtual bool IsControl(int id) const = 0;
  virtual bool IsUnknown(int id) const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual bool adds_dummy_prefix() const = 0;
};

// Trains a model from `sentences` with SentencePiece's trainer flags `args`
// (no --input); on success stores the serialized model proto in *model.
bool Train(const std::vector<std::string>& sentences, const std::string& args, std::string* model,
           std::string* error);

}  // namespace strata::spm

#endif  // STRATA_RUNTIME_TOKENIZER_SPM_BRIDGE_H_
