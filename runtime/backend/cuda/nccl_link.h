// NCCL for the CUDA backend's peer transport: the library is opened with
// dlopen ($STRATA_NCCL_LIBRARY, libnccl.so.2, then the toolkit's copy), so
// processes that never use it do not load it. A PeerComm is one non-blocking
// communicator of a PeerGroup; destroying it aborts it, which also ends
// transfers still pending on its stream.
#ifndef STRATA_RUNTIME_BACKEND_CUDA_NCCL_LINK_H_
#define STRATA_RUNTIME_BACKEND_CUDA_NCCL_LINK_H_

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/backend/backend.h"

namespace strata::cuda {

class PeerComm {
 public:
  // Joins `group` on the current device; waits until every member joined.
  static absl::StatusOr<std::unique_ptr<PeerComm>> Join(const PeerGroup& group,
                                                        const std::string& label);
  ~PeerComm();
  PeerComm(const PeerComm&) = delete;
  PeerComm& operator=(const PeerComm&) = delete;

  // Enqueue a point-to-point transfer of `count` elements of `dtype` on `stream`.
  absl::Status Send(const void* src, int64_t count, DType dtype, int peer, cudaStream_t stream);
  absl::Status Recv(void* dst, int64_t count, DType dtype, int peer, cudaStream_t stream);
  int rank() const { return rank_; }
  // Aborts the communicator now; later transfers fail. Safe from any thread.
  void Abort();

 private:
  PeerComm(ncclComm_t comm, int rank, std::string label)
      : comm_(comm), rank_(rank), label_(std::move(label)) {}
  // Waits out ncclInProgress (non-blocking communicators return it).
  absl::Status Settle(ncclResult_t r, const char* what, int timeout_ms);

  std::atomic<ncclComm_t> comm_;
  int rank_;
  std::string label_;
};

}  // namespace strata::cuda

#endif  // STRATA_RUNTIME_BACKEND_CUDA_NCCL_LINK_H_
