#include "runtime/backend/cuda/nccl_link.h"

#include <dlfcn.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/backend/cuda/shared_library.h"

namespace strata {
namespace cuda {
namespace {

struct NcclApi {
#define STRATA_NCCL_FN(name) decltype(&::name) name = nullptr;
  STRATA_NCCL_FN(ncclGetUniqueId)
  STRATA_NCCL_FN(ncclGetErrorString)
  STRATA_NCCL_FN(ncclCommInitRankConfig)
  STRATA_NCCL_FN(ncclCommGetAsyncError)
  STRATA_NCCL_FN(ncclCommAbort)
  STRATA_NCCL_FN(ncclSend)
  STRATA_NCCL_FN(ncclRecv)
  STRATA_NCCL_FN(ncclGroupStart)
  STRATA_NCCL_FN(ncclGroupEnd)
#undef STRATA_NCCL_FN
};

absl::StatusOr<const NcclApi*> LoadNccl() {
  static std::once_flag once;
  static NcclApi api;
  static absl::Status status;
  std::call_once(once, [] {
    absl::StatusOr<void*> opened =
        OpenSharedLibrary("NCCL", "STRATA_NCCL_LIBRARY", {"libnccl.so.2", STRATA_NCCL_BUILD_PATH});
    if (!opened.ok()) {
      status = opened.status();
      return;
    }
    void* lib = *opened;
#define STRATA_NCCL_RESOLVE(name)                                        \
  api.name = reinterpret_cast<decltype(api.name)>(dlsym(lib, #name));    \
  if (api.name == nullptr) {                                             \
    status = absl::FailedPreconditionError("NCCL library lacks " #name); \
    return;                                                              \
  }
    STRATA_NCCL_RESOLVE(ncclGetUniqueId)
    STRATA_NCCL_RESOLVE(ncclGetErrorString)
    STRATA_NCCL_RESOLVE(ncclCommInitRankConfig)
    STRATA_NCCL_RESOLVE(ncclCommGetAsyncError)
    STRATA_NCCL_RESOLVE(ncclCommAbort)
    STRATA_NCCL_RESOLVE(ncclSend)
    STRATA_NCCL_RESOLVE(ncclRecv)
    STRATA_NCCL_RESOLVE(ncclGroupStart)
    STRATA_NCCL_RESOLVE(ncclGroupEnd)
#undef STRATA_NCCL_RESOLVE
  });
  if (!status.ok()) return status;
  return &api;
}

ncclDataType_t NcclType(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return ncclFloat16;
    case DType::kF32:
      return ncclFloat32;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kI32:
    case DType::kF8E4M3:
      break;  // never an activation dtype
  }
  return ncclBfloat16;
}

std::string CudaErrorText(cudaError_t e) {
  return absl::StrCat(cudaGetErrorName(e), ": ", cudaGetErrorString(e));
}

int OpIndex(PeerOp op) { return static_cast<int>(op); }

}  // namespace

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Join(const PeerGroup& group,
                                                                         DType dtype,
                                                                         cudaStream_t stream,
                                                                         const std::string& label) {
  auto api = LoadNccl();
  if (!api.ok()) return api.status();
  if (group.unique_id.size() != sizeof(ncclUniqueId)) {
    return absl::InvalidArgumentError(absl::StrCat("peer group id: ", group.unique_id.size(),
                                                   " bytes, an ncclUniqueId has ",
                                                   sizeof(ncclUniqueId)));
  }
  if (group.size < 2 || group.rank < 0 || group.rank >= group.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("peer group: rank ", group.rank, " of ", group.size));
  }
  ncclUniqueId id;
  std::memcpy(&id, group.unique_id.data(), sizeof(id));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so a member that never comes can be waited for, then aborted
  ncclComm_t comm = nullptr;
  const ncclResult_t r = (*api)->ncclCommInitRankConfig(&comm, group.size, id, group.rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    if (comm != nullptr) (*api)->ncclCommAbort(comm);
    return absl::UnavailableError(absl::StrCat(label, ": joining peer group as rank ", group.rank,
                                               " of ", group.size, ": ",
                                               (*api)->ncclGetErrorString(r)));
  }
  auto self = std::unique_ptr<NcclCommunicator>(new NcclCommunicator(comm, dtype, stream));
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(group.timeout_ms);
  for (;;) {
    absl::StatusOr<bool> done = self->CallDone();
    if (!done.ok()) {
      return absl::UnavailableError(absl::StrCat(label, ": joining peer group as rank ", group.rank,
                                                 " of ", group.size, ": ",
                                                 done.status().message()));
    }
    if (*done) break;
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          label, ": joining peer group as rank ", group.rank, " of ", group.size,
          " did not finish within ", group.timeout_ms, " ms"));  // the destructor aborts it
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  for (cudaEvent_t& e : self->done_) {
    const cudaError_t c = cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
    if (c != cudaSuccess) {
      return absl::InternalError(absl::StrCat(label, ": cudaEventCreate: ", CudaErrorText(c)));
    }
  }
  const cudaError_t c = cudaMalloc(&self->scratch_, 2 * sizeof(float));
  if (c != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(
        absl::StrCat(label, ": the peer group's warm-up scratch: ", CudaErrorText(c)));
  }
  return self;
}

NcclCommunicator::~NcclCommunicator() {
  Abort();
  for (cudaEvent_t e : done_) {
    if (e != nullptr) cudaEventDestroy(e);
  }
  if (scratch_ != nullptr) cudaFree(scratch_);
}

void NcclCommunicator::Abort() {
  if (comm_ == nullptr) return;
  (*LoadNccl())->ncclCommAbort(comm_);  // also ends its kernels still on the stream
  comm_ = nullptr;
}

absl::StatusOr<bool> NcclCommunicator::CallDone() {
  const NcclApi* api = *LoadNccl();
  if (comm_ == nullptr) return absl::UnavailableError("the communicator was aborted");
  ncclResult_t state = ncclSuccess;
  const ncclResult_t q = api->ncclCommGetAsyncError(comm_, &state);
  const ncclResult_t r = q != ncclSuccess ? q : state;
  if (r == ncclInProgress) return false;
  if (r != ncclSuccess) return absl::UnavailableError(api->ncclGetErrorString(r));
  return true;
}

absl::Status NcclCommunicator::Enqueue(const PeerTransfer& t) {
  const NcclApi* api = *LoadNccl();
  if (comm_ == nullptr) return absl::UnavailableError("the communicator was aborted");
  const ncclDataType_t type = NcclType(dtype_);
  ncclResult_t r = ncclSuccess;
  switch (t.op) {
    case PeerOp::kSend:
      r = api->ncclSend(t.src, static_cast<size_t>(t.count), type, t.to, comm_, stream_);
      break;
    case PeerOp::kRecv:
      r = api->ncclRecv(t.dst, static_cast<size_t>(t.count), type, t.from, comm_, stream_);
      break;
    case PeerOp::kWarmUp: {
      // One group, so both neighbours' connections form in one go.
      char* scratch = static_cast<char*>(scratch_);
      r = api->ncclGroupStart();
      if (r == ncclSuccess && t.from >= 0) {
        r = api->ncclRecv(scratch + DTypeSize(dtype_), 1, type, t.from, comm_, stream_);
      }
      if (r == ncclSuccess && t.to >= 0) r = api->ncclSend(scratch, 1, type, t.to, comm_, stream_);
      const ncclResult_t end = api->ncclGroupEnd();
      if (r == ncclSuccess) r = end;
      break;
    }
  }
  if (r != ncclSuccess && r != ncclInProgress)
    return absl::UnavailableError(api->ncclGetErrorString(r));
  record_[OpIndex(t.op)] = true;
  return absl::OkStatus();
}

absl::StatusOr<bool> NcclCommunicator::Enqueued() {
  absl::StatusOr<bool> done = CallDone();
  if (!done.ok() || !*done) return done;
  // Only now are the transfers on the stream: mark where they end.
  for (int op = 0; op < 3; ++op) {
    if (!record_[op]) continue;
    record_[op] = false;
    const cudaError_t e = cudaEventRecord(done_[op], stream_);
    if (e != cudaSuccess)
      return absl::InternalError(absl::StrCat("cudaEventRecord: ", CudaErrorText(e)));
  }
  return true;
}

absl::StatusOr<bool> NcclCommunicator::Finished(PeerOp op) {
  absl::StatusOr<bool> enqueued = Enqueued();
  if (!enqueued.ok() || !*enqueued) return enqueued;
  const cudaError_t e = cudaEventQuery(done_[OpIndex(op)]);
  if (e == cudaErrorNotReady) return false;
  if (e != cudaSuccess) return absl::InternalError(CudaErrorText(e));
  // A transfer the peer broke off shows as the communicator's error.
  return CallDone();
}

}  // namespace cuda

absl::StatusOr<std::string> NewPeerGroupId() {
  auto api = cuda::LoadNccl();
  if (!api.ok()) return api.status();
  ncclUniqueId id;
  const ncclResult_t r = (*api)->ncclGetUniqueId(&id);
  if (r != ncclSuccess) {
    return absl::UnavailableError(absl::StrCat("ncclGetUniqueId: ", (*api)->ncclGetErrorString(r)));
  }
  return std::string(reinterpret_cast<const char*>(&id), sizeof(id));
}

bool NcclTransportAvailable(const std::string& device, std::string* why) {
  if (device == "cpu") {
    *why = "a CPU worker";
    return false;
  }
  auto probe = ProbeDevice(device);
  if (!probe.ok()) {
    *why = std::string(probe.status().message());
    return false;
  }
  auto api = cuda::LoadNccl();
  if (!api.ok()) {
    *why = std::string(api.status().message());
    return false;
  }
  return true;
}

}  // namespace strata
