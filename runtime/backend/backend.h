// The handful of operations a decoder stage needs, behind one small interface
// with a CPU and a CUDA implementation (ggml-backend is the model):
//   - memory: Allocate() buffers the backend owns (host memory on the CPU,
//     device memory on CUDA), accounted against the device's capacity, and
//     PrepareWeight() to make a checkpoint tensor usable by the ops;
//   - copies: f32 host rows in and out of activation buffers;
//   - the decoder's ops, enqueued in order (CUDA: on one stream) and finished
//     by the next Download() or Logits(), which also report the first error
//     any op since the last report met (a failed launch, a device fault).
//
// Activation buffers hold row-major [rows, features] in activation_dtype():
// f32 on the CPU, bf16 (or f16 for f16 checkpoints) on CUDA, where reductions
// accumulate in f32. Stage code passes them as `void*` and never reads them.
//
// A step begins with BeginStep(), which tells the backend where each row of
// the batch sits (its sequence chunk, position, RoPE angles); Rope, WriteKv
// and Attention read that layout.
//
// A Backend instance is used by one stage at a time (not thread-safe); it
// parallelises each op internally.
#ifndef STRATA_RUNTIME_BACKEND_BACKEND_H_
#define STRATA_RUNTIME_BACKEND_BACKEND_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "runtime/backend/peer_link.h"  // PeerGroup
#include "runtime/dtype.h"

namespace strata {

// A row-major [rows, cols] weight matrix (or a vector when rows == 1). Its
// data is host memory for the CPU backend and device memory once prepared by
// the CUDA backend.
//
// A quantized linear layer (runtime/quant.h) has `quant` set: `data` holds its
// packed codes, and w[r, perm[j]] = scales[r, g] * code[r, j] + offsets[r, g]
// for g = j / group_size (no offsets for FP8; perm the identity when null).
struct Weight {
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
  QuantFormat quant = QuantFormat::kNone;
  int64_t group_size = 0;
  const float* scales = nullptr;   // [rows, groups]
  const float* offsets = nullptr;  // [rows, groups]
  const int32_t* perm = nullptr;   // [cols]
  // CPU, amx-bf16 kernels: the same bf16 matrix in 32-row panels of
  // k-pairs (runtime/backend/cpu/kernels.h), set by Backend::PrepareMatrix;
  // `data` keeps the row-major original for everything else.
  const uint16_t* bf16_panels = nullptr;
  int64_t groups() const { return group_size > 0 ? (cols + group_size - 1) / group_size : 0; }
  int64_t code_bytes() const {
    switch (quant) {
      case QuantFormat::kNone:
        return rows * cols * static_cast<int64_t>(DTypeSize(dtype));
      case QuantFormat::kInt4:
        return rows * cols / 2;
      case QuantFormat::kInt8:
      case QuantFormat::kFp8:
        return rows * cols;
    }
    return 0;
  }
  int64_t bytes() const {
    if (quant == QuantFormat::kNone) return code_bytes();
    return code_bytes() + rows * groups() * 4 * (offsets != nullptr ? 2 : 1) +
           (perm != nullptr ? cols * 4 : 0);
  }
};

// Memory a backend allocated; released when destroyed.
class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual void* data() const = 0;
  virtual int64_t bytes() const = 0;
};

// One sequence's part of a batch, as attention sees it.
struct AttentionChunk {
  int64_t row_begin = 0;  // first row of this chunk in the batch's q/out
  int64_t num_tokens = 0;
  int64_t start_pos = 0;  // position of the chunk's first token
  // Host copy of the sequence's KV blocks, in order; ceil((start_pos +
  // num_tokens) / block_size) entries.
  const int32_t* block_table = nullptr;
};

// A layer's paged KV storage: `num_blocks` blocks of [2][block_size][kv_dim]
// elements of the backend's activation dtype (keys, then values).
struct KvLayerView {
  void* base = nullptr;
  int64_t num_blocks = 0;
  int64_t block_size = 16;
  int64_t kv_dim = 0;
  // Element offset of (block, slot)'s key; its value is block_size * kv_dim further.
  int64_t key_offset(int32_t block, int64_t slot) const {
    return (static_cast<int64_t>(block) * 2 * block_size + slot) * kv_dim;
  }
  int64_t value_offset(int32_t block, int64_t slot) const {
    return key_offset(block, slot) + block_size * kv_dim;
  }
};

struct AttentionShape {
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t sliding_window = 0;  // 0: unbounded
  float scale = 1.0f;
};

// Where the rows of one step's batch sit. Host pointers, valid until the
// step's last op has been enqueued.
struct StepLayout {
  std::span<const AttentionChunk> chunks;  // in row order, covering rows [0, rows)
  int64_t rows = 0;
  int64_t rope_half = 0;       // head_dim / 2
  const float* cos = nullptr;  // [rows, rope_half]
  const float* sin = nullptr;  // [rows, rope_half]
  int64_t max_positions = 0;   // the longest chunk's start_pos + num_tokens
  // Rows of logits the step ends with (0 for a stage that is not the last);
  // -1 when unknown. With it, a backend may replay decode steps of the same
  // shape from a recorded graph.
  int64_t logits_rows = -1;
  bool argmax_only = false;  // the step ends with Argmax(), not Logits()
  // The hidden states arrive by RecvFromPeer (enqueued before BeginStep) /
  // leave by SendToPeer (the step's last op).
  bool peer_recv = false;
  bool peer_send = false;
};

// The message prefix of a Download()/Logits() error that means no op of the
// step ran (a graph capture failed) and the stage should run the step again;
// the backend then runs it without a graph.
inline constexpr char kStepNotRun[] = "step not run: ";

struct MemoryReport {
  std::string device;       // "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)"
  std::string uuid;         // the GPU's UUID; empty on the CPU
  int64_t total_bytes = 0;  // the device's memory
  int64_t free_bytes = 0;   // free on the device now (all processes)
  int64_t used_bytes = 0;   // allocated by this backend
  int64_t limit_bytes = 0;  // what this backend may allocate in all; 0 = no limit
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  virtual int threads() const = 0;
  virtual DType activation_dtype() const = 0;
  // A step ended: helper threads may sleep rather than spin until the next op.
  virtual void Rest() {}

  // --- memory -------------------------------------------------------------
  virtual MemoryReport Memory() const = 0;
  // `bytes` of backend memory for `what` (named in the error). Fails with
  // RESOURCE_EXHAUSTED, naming `what` and the accounted sizes, past the limit.
  virtual absl::StatusOr<std::unique_ptr<Buffer>> Allocate(int64_t bytes,
                                                           std::string_view what) = 0;
  // A checkpoint tensor (host memory, usually memory-mapped) as the ops read
  // it. The CPU uses it in place; CUDA copies it to the device, converting f32
  // to the activation dtype. The result lives as long as the backend.
  virtual absl::StatusOr<Weight> PrepareWeight(const Weight& host, std::string_view name) = 0;
  // A weight PrepareWeight returned that Linear, Logits or Argmax will
  // multiply by, laid out for those kernels as well (the CPU's amx-bf16
  // kernels add a panel copy of a bf16 matrix). The default keeps it as is.
  virtual absl::StatusOr<Weight> PrepareMatrix(const Weight& prepared, std::string_view name) {
    (void)name;
    return prepared;
  }

  // The largest step the stage will run, so a backend can size its own
  // scratch (staging, attention partials, logits) at load, where running out
  // is an error naming what did not fit, rather than growing it mid-run.
  struct StepLimits {
    int64_t max_rows = 0;       // tokens per step
    int64_t max_positions = 0;  // context per sequence
    int64_t rope_half = 0;
    int64_t num_heads = 0;
    int64_t head_dim = 0;
    int64_t hidden = 0;
    int64_t vocab = 0;  // 0 for a stage without the LM head
    // Logits rows a step usually ends with (one per sequence); a rarer step
    // with more (every position's logits) grows the scratch when it comes.
    int64_t max_logits_rows = 0;
  };
  virtual absl::Status ReserveScratch(const StepLimits&) { return absl::OkStatus(); }

  // --- copies -------------------------------------------------------------
  // dst[0, count) = host[0, count), converted to the activation dtype.
  virtual void Upload(const float* host, int64_t count, void* dst) = 0;
  // The embedding rows of `ids`, gathered on the host as f32 ([ids, cols]),
  // into dst: Embed() for a table kept in host memory.
  virtual void UploadEmbedded(const float* host, std::span<const int32_t> ids, int64_t cols,
                              void* dst) {
    Upload(host, static_cast<int64_t>(ids.size()) * cols, dst);
  }
  // host[0, count) = src[0, count) as f32; waits for every op enqueued before.
  virtual absl::Status Download(const void* src, int64_t count, float* host) = 0;
  // dst row i = src row rows[i], for rows of `cols` elements.
  virtual void GatherRows(const void* src, std::span<const int64_t> rows, int64_t cols,
                          void* dst) = 0;

  // --- one step -----------------------------------------------------------
  virtual void BeginStep(const StepLayout& layout) = 0;

  // out[m, w.rows] = x[m, w.cols] · wᵀ (+ bias[w.rows] when bias != nullptr).
  virtual void Linear(const void* x, int64_t m, const Weight& w, const Weight* bias, void* out) = 0;
  // host_out[m, w.rows] = x · wᵀ as f32: the logits (rounded to the
  // activation dtype first, as PyTorch's bf16 head does). Waits for the result.
  virtual absl::Status Logits(const void* x, int64_t m, const Weight& w, float* host_out) = 0;
  // host_ids[i] = the index of the largest of row i's logits (the first one
  // on ties), as Logits() would give them, without copying the logits out:
  // greedy decoding's sampler. Waits for the result.
  virtual absl::Status Argmax(const void* x, int64_t m, const Weight& w, int32_t* host_ids) = 0;
  // out[m, n] = x / rms(x) * weight; `weight` is a [n] vector. out may be x.
  virtual void RmsNorm(const void* x, int64_t m, int64_t n, const Weight& weight, float eps,
                       void* out) = 0;
  // acc += delta, then out = RmsNorm(acc): the residual add fused with the
  // next norm.
  virtual void AddRmsNorm(void* acc, const void* delta, int64_t m, int64_t n, const Weight& weight,
                          float eps, void* out) = 0;
  // out[i, :] = embedding row ids[i] (host ids).
  virtual void Embed(std::span<const int32_t> ids, const Weight& table, void* out) = 0;
  // gate[i] = silu(gate[i]) * up[i].
  virtual void SiluMul(void* gate, const void* up, int64_t count) = 0;
  // acc[i] += x[i].
  virtual void Add(void* acc, const void* x, int64_t count) = 0;
  // Rotates each head of x [rows, heads * head_dim] in place by the step's
  // angles, half-split (GPT-NeoX) layout.
  virtual void Rope(void* x, int64_t heads, int64_t head_dim) = 0;
  // Stores k/v rows [rows, kv_dim] of the step at their positions in the cache.
  virtual void WriteKv(const void* k, const void* v, const KvLayerView& kv) = 0;
  // Causal attention of q [rows, heads * head_dim] over each chunk's cached
  // keys and values (positions 0 .. start_pos + i, or the sliding window), into
  // out [rows, heads * head_dim].
  virtual void Attention(const void* q, const KvLayerView& kv, const AttentionShape& shape,
                         void* out) = 0;

  // --- peer transport (CUDA with NCCL) ---------------------------------------
  // Joins `group`, aborting the communicator of any group joined before;
  // returns once every member joined, or fails after group.timeout_ms.
  virtual absl::Status JoinPeerGroup(const PeerGroup&) {
    return absl::FailedPreconditionError(
        absl::StrCat("the ", std::string(name()), " backend has no peer transport"));
  }
  // Aborts the joined group's communicator (pending transfers end); a no-op
  // without one.
  virtual void LeavePeerGroup() {}
  // Thread-safe: aborts the communicator from another thread, so that a step
  // stuck on a peer that died returns (with an error). The group stays
  // joined-but-dead until Join/LeavePeerGroup.
  virtual void AbortPeerGroup() {}
  // Enqueue sending / receiving `count` activations to / from rank `peer` of
  // the joined group. Errors arrive with the next Download() or
  // TakeError(). Calling either without a group is a broken invariant.
  virtual void SendToPeer(const void* src, int64_t count, int peer);
  virtual void RecvFromPeer(void* dst, int64_t count, int peer);
  // The first error of enqueued work noticed so far, without waiting for it.
  virtual absl::Status TakeError() { return absl::OkStatus(); }

  // A simulated device's record (sim/sim_backend.h): steps run, the time its
  // model gave them and the time they took. Zero elsewhere.
  struct StepTiming {
    int64_t steps = 0;
    double modelled_seconds = 0;
    double achieved_seconds = 0;
  };
  virtual StepTiming Timing() const { return {}; }
};

// Which backend a stage runs on.
struct BackendOptions {
  // "cpu", or "cuda" / "cuda:N" for GPU N of the process's visible devices.
  std::string device = "cpu";
  int threads = 0;  // CPU threads; 0 = every core of the affinity mask
  // CUDA: the most device memory the backend may allocate; 0 = the device's
  // free memory at start minus `reserve_bytes`.
  int64_t memory_limit_bytes = 0;
  int64_t reserve_bytes = int64_t{1} << 30;  // CUDA: left free for the driver and cuBLASLt
  // CUDA: the activation dtype for f32 checkpoints (bf16 or f16 checkpoints
  // use their own).
  DType cuda_activation_dtype = DType::kBF16;
  // CUDA: the attention kernels, "v1" (flash-decoding for every row) or "v2"
  // (decode blocks per KV head group with 16-byte loads; tensor-core tiles
  // for prefill; runtime/backend/cuda/attention_v2.cu). STRATA_CUDA_ATTENTION
  // in the environment overrides it. v2 is unverified on a GPU so far.
  std::string cuda_attention = "v1";
  // CUDA: replay decode steps of a shape seen before from a CUDA graph.
  // STRATA_CUDA_GRAPHS=0 in the environment turns it off.
  bool cuda_graphs = true;
  // sim:NAME: figures that replace the device table's (every one is
  // required for sim:custom); 0 keeps the table's.
  int64_t sim_memory_bytes = 0;
  double sim_bandwidth = 0;  // bytes/s
  double sim_flops = 0;      // FLOP/s
  // CPU: the kernel set (runtime/backend/cpu/kernels.h: auto, portable,
  // avx2, avx512, amx-bf16); empty takes STRATA_CPU_KERNELS, then auto.
  std::string cpu_kernels;
};

// The CPU backend with `threads` workers (0: every core of the process's
// affinity mask) and the kernel set named by `kernels` (as
// BackendOptions::cpu_kernels). An unknown set, or one this CPU lacks, is an
// error naming where the name came from.
absl::StatusOr<std::unique_ptr<Backend>> MakeCpuBackend(int threads,
                                                        const std::string& kernels = "");

// The CUDA backend on `options.device`, or an error saying why not (built
// without CUDA, no device, device index out of range). `weights_dtype` is the
// checkpoint's dtype, which picks the activation dtype.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const BackendOptions& options,
                                                         DType weights_dtype);

// Either of the above, by options.device.
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const BackendOptions& options,
                                                     DType weights_dtype);

// A fresh ncclUniqueId for a PeerGroup of CUDA workers (a simulated device's
// group takes NewSocketPeerGroupId(), runtime/backend/socket_link.h). Its bootstrap root runs in
// this process, which must stay up while the group's members join. No GPU needed;
// FAILED_PRECONDITION when NCCL cannot be loaded ($STRATA_NCCL_LIBRARY names
// libnccl.so.2 when it is not on the loader's path).
absl::StatusOr<std::string> NewPeerGroupId();
// Whether a worker on `device` can join a PeerGroup: a simulated device (by
// socket) or a CUDA device with a loadable NCCL; `why` says why not.
bool PeerTransportAvailable(const std::string& device, std::string* why);
// The CUDA half of the above (cuda/nccl_link.cc, or no_cuda.cc).
bool NcclTransportAvailable(const std::string& device, std::string* why);
// The peer transport a worker on `device` would use, when it has one:
// "socket" for a simulated device, "nccl" otherwise. Two workers' hop is
// linked only when theirs agree.
std::string PeerTransportKind(const std::string& device);

// Whether this build has the CUDA backend, and how many devices it sees (0
// with `why` set when none is usable).
int CudaDeviceCount(std::string* why);
// The UUIDs of the CUDA devices this process sees, in CUDA's order (after
// CUDA_VISIBLE_DEVICES), formatted GPU-xxxxxxxx-...; empty without any.
std::vector<std::string> VisibleCudaUuids();

// The index N of "cuda" (0) or "cuda:N"; INVALID_ARGUMENT naming `device`
// otherwise.
absl::StatusOr<int> ParseCudaDevice(const std::string& device);

// What a worker reports to the planner before loading anything: the device's
// name, UUID, total and free memory ("cpu": physical and available memory).
// FAILED_PRECONDITION when the device is not usable.
absl::StatusOr<MemoryReport> ProbeDevice(const std::string& device);
// The same with a simulated device's figures (BackendOptions::sim_*).
absl::StatusOr<MemoryReport> ProbeDevice(const BackendOptions& options);
absl::StatusOr<MemoryReport> ProbeCudaDevice(int index);

}  // namespace strata

#endif  // STRATA_RUNTIME_BACKEND_BACKEND_H_
