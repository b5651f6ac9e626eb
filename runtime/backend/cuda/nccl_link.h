// NCCL behind PeerLink's Communicator (see runtime/backend/peer_link.h for
// the protocol). The library is opened with dlopen ($STRATA_NCCL_LIBRARY,
// libnccl.so.2, then the toolkit's copy), so processes that never use it do
// not load it. Communicators are non-blocking, so a member that never comes
// is waited for with a deadline and then aborted, never forever.
#ifndef STRATA_RUNTIME_BACKEND_CUDA_NCCL_LINK_H_
#define STRATA_RUNTIME_BACKEND_CUDA_NCCL_LINK_H_

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/peer_link.h"

namespace strata::cuda {

class NcclCommunicator : public Communicator {
 public:
  // Joins `group` on the current device, transfers of `dtype` enqueued on
  // `stream`; waits (up to group.timeout_ms) until every member joined.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Join(const PeerGroup& group, DType dtype,
                                                                cudaStream_t stream,
                                                                const std::string& label);
  ~NcclCommunicator() override;

  absl::Status Enqueue(const PeerTransfer& t) override;
  absl::StatusOr<bool> Enqueued() override;
  absl::StatusOr<bool> Finished(PeerOp op) override;
  void Abort() override;

 private:
  NcclCommunicator(ncclComm_t comm, DType dtype, cudaStream_t stream)
      : comm_(comm), dtype_(dtype), stream_(stream) {}
  // The state of the communicator's last call: true when done.
  absl::StatusOr<bool> CallDone();

  ncclComm_t comm_;
  DType dtype_;
  cudaStream_t stream_;
  // One event per PeerOp, recorded on the stream once its enqueue finished.
  cudaEvent_t done_[3] = {nullptr, nullptr, nullptr};
  bool record_[3] = {false, false, false};
  void* scratch_ = nullptr;  // the warm-up's two elements (send, receive)
};

}  // namespace strata::cuda

#endif  // STRATA_RUNTIME_BACKEND_CUDA_NCCL_LINK_H_
