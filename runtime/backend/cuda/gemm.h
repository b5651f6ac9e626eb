// The CUDA backend's GEMMs through cuBLASLt: out[m, n] = x[m, k] · w[n, k]ᵀ
// (+ bias[n]) with bf16 or f16 operands and f32 accumulation. For each shape
// the heuristic's first algorithm is looked up once and cached. Not
// thread-safe: one Gemm per backend, used from the backend's thread.
//
// libcublasLt is opened with dlopen when the first Gemm is created, not
// linked: its 94 KB of static TLS would be added to every thread a process
// starts, and Debian's civetweb (the /metrics server) starts its threads with
// 100 KB stacks, which then fail to start. $STRATA_CUBLASLT_LIBRARY overrides
// the library's path.
#ifndef STRATA_RUNTIME_BACKEND_CUDA_GEMM_H_
#define STRATA_RUNTIME_BACKEND_CUDA_GEMM_H_

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "absl/status/statusor.h"
#include "runtime/dtype.h"

namespace strata::cuda {

class Gemm {
 public:
  // `workspace` (device memory of `workspace_bytes`) is cuBLASLt's scratch.
  static absl::StatusOr<std::unique_ptr<Gemm>> Create(void* workspace, size_t workspace_bytes);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // Enqueues out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n] when bias != nullptr),
  // every tensor in `dtype`.
  absl::Status Run(DType dtype, const void* x, int64_t m, const void* w, int64_t n, int64_t k,
                   const void* bias, void* out, cudaStream_t stream);
  // Shapes whose algorithm is cached.
  size_t cached_plans() const { return plans_.size(); }

 private:
  struct Plan;
  using Key = std::tuple<int, int64_t, int64_t, int64_t, bool>;  // dtype, m, n, k, bias
  Gemm(cublasLtHandle_t handle, void* workspace, size_t workspace_bytes);
  absl::StatusOr<Plan*> PlanFor(const Key& key);

  cublasLtHandle_t handle_;
  void* workspace_;
  size_t workspace_bytes_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace strata::cuda

#endif  // STRATA_RUNTIME_BACKEND_CUDA_GEMM_H_
