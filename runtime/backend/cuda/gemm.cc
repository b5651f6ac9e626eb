#include "runtime/backend/cuda/gemm.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/backend/cuda/shared_library.h"

namespace strata::cuda {
namespace {

// The cuBLASLt entry points Gemm uses, resolved from the dlopen'ed library.
// Their types come from cublasLt.h.
struct LtApi {
#define STRATA_LT_FN(name) decltype(&::name) name = nullptr;
  STRATA_LT_FN(cublasLtCreate)
  STRATA_LT_FN(cublasLtDestroy)
  STRATA_LT_FN(cublasLtGetStatusName)
  STRATA_LT_FN(cublasLtGetStatusString)
  STRATA_LT_FN(cublasLtMatmulDescCreate)
  STRATA_LT_FN(cublasLtMatmulDescDestroy)
  STRATA_LT_FN(cublasLtMatmulDescSetAttribute)
  STRATA_LT_FN(cublasLtMatrixLayoutCreate)
  STRATA_LT_FN(cublasLtMatrixLayoutDestroy)
  STRATA_LT_FN(cublasLtMatmulPreferenceCreate)
  STRATA_LT_FN(cublasLtMatmulPreferenceDestroy)
  STRATA_LT_FN(cublasLtMatmulPreferenceSetAttribute)
  STRATA_LT_FN(cublasLtMatmulAlgoGetHeuristic)
  STRATA_LT_FN(cublasLtMatmul)
#undef STRATA_LT_FN
};

// Loads the library once per process; the handle is never closed.
absl::StatusOr<const LtApi*> LoadLt() {
  static std::once_flag once;
  static LtApi api;
  static absl::Status status;
  std::call_once(once, [] {
    absl::StatusOr<void*> opened = OpenSharedLibrary(
        "cuBLASLt", "STRATA_CUBLASLT_LIBRARY", {"libcublasLt.so.13", STRATA_CUBLASLT_BUILD_PATH});
    if (!opened.ok()) {
      status = opened.status();
      return;
    }
    void* lib = *opened;
#define STRATA_LT_RESOLVE(name)                                              \
  api.name = reinterpret_cast<decltype(api.name)>(dlsym(lib, #name));        \
  if (api.name == nullptr) {                                                 \
    status = absl::FailedPreconditionError("cuBLASLt library lacks " #name); \
    return;                                                                  \
  }
    STRATA_LT_RESOLVE(cublasLtCreate)
    STRATA_LT_RESOLVE(cublasLtDestroy)
    STRATA_LT_RESOLVE(cublasLtGetStatusName)
    STRATA_LT_RESOLVE(cublasLtGetStatusString)
    STRATA_LT_RESOLVE(cublasLtMatmulDescCreate)
    STRATA_LT_RESOLVE(cublasLtMatmulDescDestroy)
    STRATA_LT_RESOLVE(cublasLtMatmulDescSetAttribute)
    STRATA_LT_RESOLVE(cublasLtMatrixLayoutCreate)
    STRATA_LT_RESOLVE(cublasLtMatrixLayoutDestroy)
    STRATA_LT_RESOLVE(cublasLtMatmulPreferenceCreate)
    STRATA_LT_RESOLVE(cublasLtMatmulPreferenceDestroy)
    STRATA_LT_RESOLVE(cublasLtMatmulPreferenceSetAttribute)
    STRATA_LT_RESOLVE(cublasLtMatmulAlgoGetHeuristic)
    STRATA_LT_RESOLVE(cublasLtMatmul)
#undef STRATA_LT_RESOLVE
  });
  if (!status.ok()) return status;
  return &api;
}

const LtApi* lt = nullptr;  // set by Gemm::Create before any other use

absl::Status LtError(cublasStatus_t s, const std::string& what) {
  return absl::InternalError(absl::StrCat("cuBLASLt ", what, ": ", lt->cublasLtGetStatusName(s),
                                          " (", lt->cublasLtGetStatusString(s), ")"));
}

#define STRATA_LT(call, what)                        \
  do {                                               \
    cublasStatus_t strata_lt_status = (call);        \
    if (strata_lt_status != CUBLAS_STATUS_SUCCESS) { \
      return LtError(strata_lt_status, what);        \
    }                                                \
  } while (0)

}  // namespace

// Row-major out[m, n] = x[m, k] · w[n, k]ᵀ is, in cuBLASLt's column-major
// terms, D[n, m] = op(A)[n, k] · B[k, m] with A = w read as a k × n matrix
// and transposed, B = x read as a k × m matrix, and D = out as n × m.
struct Gemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (d != nullptr) lt->cublasLtMatrixLayoutDestroy(d);
    if (b != nullptr) lt->cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) lt->cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) lt->cublasLtMatmulDescDestroy(desc);
  }
};

absl::StatusOr<std::unique_ptr<Gemm>> Gemm::Create(void* workspace, size_t workspace_bytes) {
  auto api = LoadLt();
  if (!api.ok()) return api.status();
  lt = *api;
  cublasLtHandle_t handle = nullptr;
  STRATA_LT(lt->cublasLtCreate(&handle), "create handle");
  return std::unique_ptr<Gemm>(new Gemm(handle, workspace, workspace_bytes));
}

Gemm::Gemm(cublasLtHandle_t handle, void* workspace, size_t workspace_bytes)
    : handle_(handle), workspace_(workspace), workspace_bytes_(workspace_bytes) {}

Gemm::~Gemm() {
  plans_.clear();
  lt->cublasLtDestroy(handle_);
}

absl::StatusOr<Gemm::Plan*> Gemm::PlanFor(const Key& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second.get();
  const auto [dtype_int, m, n, k, has_bias] = key;
  const cudaDataType_t type =
      static_cast<DType>(dtype_int) == DType::kF16 ? CUDA_R_16F : CUDA_R_16BF;
  const std::string shape = absl::StrCat("[", m, ", ", k, "] x [", n, ", ", k, "]^T");
  auto plan = std::make_unique<Plan>();
  STRATA_LT(lt->cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
            "matmul descriptor for " + shape);
  const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
  STRATA_LT(lt->cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose,
                                               sizeof(transpose)),
            "TRANSA");
  STRATA_LT(lt->cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &keep,
                                               sizeof(keep)),
            "TRANSB");
  if (has_bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    STRATA_LT(lt->cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                 &epilogue, sizeof(epilogue)),
              "bias epilogue");
    STRATA_LT(lt->cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                 &type, sizeof(type)),
              "bias type");
  }
  STRATA_LT(lt->cublasLtMatrixLayoutCreate(&plan->a, type, k, n, k), "layout of the weight");
  STRATA_LT(lt->cublasLtMatrixLayoutCreate(&plan->b, type, k, m, k), "layout of the input");
  STRATA_LT(lt->cublasLtMatrixLayoutCreate(&plan->d, type, n, m, n), "layout of the output");

  cublasLtMatmulPreference_t pref = nullptr;
  STRATA_LT(lt->cublasLtMatmulPreferenceCreate(&pref), "preference");
  const uint64_t ws = workspace_bytes_;
  cublasStatus_t st = lt->cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = lt->cublasLtMatmulAlgoGetHeuristic(handle_, plan->desc, plan->a, plan->b, plan->d, plan->d,
                                            pref, 1, &result, &found);
  }
  lt->cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS) return LtError(st, "heuristic for " + shape);
  if (found == 0) {
    return absl::InternalError(absl::StrCat("cuBLASLt has no algorithm for ", shape));
  }
  plan->algo = result.algo;
  Plan* raw = plan.get();
  plans_.emplace(key, std::move(plan));
  return raw;
}

absl::Status Gemm::Run(DType dtype, const void* x, int64_t m, const void* w, int64_t n, int64_t k,
                       const void* bias, void* out, cudaStream_t stream) {
  if (m == 0) return absl::OkStatus();
  auto plan = PlanFor(Key{static_cast<int>(dtype), m, n, k, bias != nullptr});
  if (!plan.ok()) return plan.status();
  if (bias != nullptr) {
    STRATA_LT(lt->cublasLtMatmulDescSetAttribute((*plan)->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                 &bias, sizeof(bias)),
              "bias pointer");
  }
  const float alpha = 1.0f, beta = 0.0f;
  STRATA_LT(lt->cublasLtMatmul(handle_, (*plan)->desc, &alpha, w, (*plan)->a, x, (*plan)->b, &beta,
                               out, (*plan)->d, out, (*plan)->d, &(*plan)->algo, workspace_,
                               workspace_bytes_, stream),
            absl::StrCat("matmul [", m, ", ", k, "] x [", n, ", ", k, "]^T"));
  return absl::OkStatus();
}

}  // namespace strata::cuda
