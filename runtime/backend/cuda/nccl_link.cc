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
  }
  return ncclBfloat16;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PeerComm>> PeerComm::Join(const PeerGroup& group,
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
  ncclResult_t r = (*api)->ncclCommInitRankConfig(&comm, group.size, id, group.rank, &config);
  auto peer = std::unique_ptr<PeerComm>(new PeerComm(comm, group.rank, label));
  if (r != ncclSuccess && r != ncclInProgress) {
    peer->comm_.store(nullptr);
    return absl::UnavailableError(absl::StrCat(label, ": joining peer group as rank ", group.rank,
                                               " of ", group.size, ": ",
                                               (*api)->ncclGetErrorString(r)));
  }
  absl::Status joined = peer->Settle(r, "joining the peer group", group.timeout_ms);
  if (!joined.ok()) return joined;  // the destructor aborts the half-made communicator
  return peer;
}

PeerComm::~PeerComm() { Abort(); }

void PeerComm::Abort() {
  ncclComm_t comm = comm_.exchange(nullptr);
  if (comm != nullptr) (*LoadNccl())->ncclCommAbort(comm);
}

absl::Status PeerComm::Settle(ncclResult_t r, const char* what, int timeout_ms) {
  const NcclApi* api = *LoadNccl();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (r == ncclInProgress) {
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(label_, ": ", what, " did not finish within ", timeout_ms, " ms"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
    ncclResult_t state = ncclSuccess;
    ncclComm_t comm = comm_.load();
    if (comm == nullptr) return absl::UnavailableError(label_ + ": the peer group was aborted");
    const ncclResult_t q = api->ncclCommGetAsyncError(comm, &state);
    r = q != ncclSuccess ? q : state;
  }
  if (r != ncclSuccess) {
    return absl::UnavailableError(
        absl::StrCat(label_, ": ", what, ": ", api->ncclGetErrorString(r)));
  }
  return absl::OkStatus();
}

absl::Status PeerComm::Send(const void* src, int64_t count, DType dtype, int peer,
                            cudaStream_t stream) {
  const NcclApi* api = *LoadNccl();
  ncclComm_t comm = comm_.load();
  if (comm == nullptr) return absl::UnavailableError(label_ + ": the peer group was aborted");
  return Settle(api->ncclSend(src, static_cast<size_t>(count), NcclType(dtype), peer, comm, stream),
                "NCCL send", 30'000);
}

absl::Status PeerComm::Recv(void* dst, int64_t count, DType dtype, int peer, cudaStream_t stream) {
  const NcclApi* api = *LoadNccl();
  ncclComm_t comm = comm_.load();
  if (comm == nullptr) return absl::UnavailableError(label_ + ": the peer group was aborted");
  return Settle(api->ncclRecv(dst, static_cast<size_t>(count), NcclType(dtype), peer, comm, stream),
                "NCCL receive", 30'000);
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

bool PeerTransportAvailable(const std::string& device, std::string* why) {
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
