// Read-only access to a Hugging Face safetensors checkpoint: one
// `model.safetensors`, or shards listed by `model.safetensors.index.json`.
//
// Opening reads only the index; a shard's header is read and validated, and the
// shard memory-mapped, the first time one of its tensors is requested, so a
// worker that asks only for its own layers never maps other shards (and never
// touches other layers' pages of a shared shard). Every error names the file
// and, where there is one, the tensor. A Checkpoint is not thread-safe for
// concurrent Get() calls; the returned TensorViews stay valid, and may be read
// from any thread, for the Checkpoint's lifetime.
#ifndef STRATA_RUNTIME_CHECKPOINT_H_
#define STRATA_RUNTIME_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/dtype.h"

namespace strata {

struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // inside the mapped file; unaligned in general
  size_t nbytes = 0;
  int64_t numel() const;
};

std::string ShapeString(const std::vector<int64_t>& shape);  // "[5632, 2048]"

class SafetensorsFile;

class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);
  ~Checkpoint();

  bool Has(const std::string& name) const { return tensor_file_.count(name) > 0; }
  // The tensor, checked against `expected_shape` (skip the check with {});
  // an error unless its dtype is a float one.
  absl::StatusOr<TensorView> Get(const std::string& name,
                                 const std::vector<int64_t>& expected_shape);
  // The same for any dtype (the I32 and F8_E4M3 parts of quantized weights).
  absl::StatusOr<TensorView> GetRaw(const std::string& name,
                                    const std::vector<int64_t>& expected_shape);
  // Shards mapped so far (for tests of selective loading).
  std::vector<std::string> MappedFiles() const;

 private:
  Checkpoint() = default;
  absl::StatusOr<SafetensorsFile*> Shard(const std::string& file);

  std::string dir_;
  std::map<std::string, std::string> tensor_file_;  // tensor name -> shard file name
  std::map<std::string, std::unique_ptr<SafetensorsFile>> shards_;
};

// Writes a safetensors file (used by the test-model generator and tests).
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  // With `bytes` empty: this many zero bytes, left as a hole in the file
  // (sparse), for checkpoints that only need their shapes.
  uint64_t zero_bytes = 0;
};
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors);

}  // namespace strata

#endif  // STRATA_RUNTIME_CHECKPOINT_H_
