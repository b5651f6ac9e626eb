// The CUDA implementation of Backend: weights and activations in bf16 (f16
// for f16 checkpoints) in device memory, every op enqueued on one stream,
// GEMMs through cuBLASLt and the rest through the kernels in this folder.
//
// Memory: every device allocation (weights, workspaces, KV cache, cuBLASLt
// scratch, step staging) goes through one accounted allocator with a limit
// fixed at start (options.memory_limit_bytes, or the device's free memory
// less options.reserve_bytes); passing it is a RESOURCE_EXHAUSTED error that
// names the allocation, never a failure later in a step.
//
// Errors of enqueued work (a failed launch, a device fault) are kept and
// returned by the next Download() or Logits().
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/cuda/gemm.h"
#include "runtime/backend/cuda/kernels.h"
#include "runtime/backend/cuda/nccl_link.h"
#include "runtime/backend/peer_link.h"

namespace strata {
namespace {

constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;
// A flash-decoding split covers at least this many key positions.
constexpr int64_t kMinSplitKeys = 128;
// How long a hop's NCCL send or receive may take before it counts as broken.
constexpr int kHopTimeoutMs = 30'000;

std::string CudaErrorText(cudaError_t e) {
  return absl::StrCat(cudaGetErrorName(e), ": ", cudaGetErrorString(e));
}

std::string FormatGiB(int64_t bytes) {
  return absl::StrFormat("%.2f GiB", static_cast<double>(bytes) / (1 << 30));
}

// The device memory of one backend, with its accounting.
class DeviceArena {
 public:
  DeviceArena(int device, std::string label, int64_t limit)
      : device_(device), label_(std::move(label)), limit_(limit) {}
  int64_t used() const { return used_; }
  int64_t limit() const { return limit_; }

  absl::StatusOr<void*> Allocate(int64_t bytes, const std::string& what) {
    if (used_ + bytes > limit_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          label_, ": ", what, " needs ", FormatGiB(bytes), " but only ", FormatGiB(limit_ - used_),
          " of this worker's ", FormatGiB(limit_), " device budget are left (", FormatGiB(used_),
          " already allocated); lower the KV cache or batch size, or give the stage fewer "
          "layers"));
    }
    cudaSetDevice(device_);
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, static_cast<size_t>(std::max<int64_t>(bytes, 1)));
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear it: an allocation failure is not sticky
      return absl::ResourceExhaustedError(absl::StrCat(label_, ": cudaMalloc of ", FormatGiB(bytes),
                                                       " for ", what,
                                                       " failed: ", CudaErrorText(e)));
    }
    used_ += bytes;
    return p;
  }
  void Free(void* p, int64_t bytes) {
    cudaSetDevice(device_);
    cudaFree(p);
    used_ -= bytes;
  }

 private:
  int device_;
  std::string label_;
  int64_t limit_;
  int64_t used_ = 0;
};

class DeviceBuffer : public Buffer {
 public:
  DeviceBuffer(DeviceArena* arena, void* data, int64_t bytes)
      : arena_(arena), data_(data), bytes_(bytes) {}
  ~DeviceBuffer() override { arena_->Free(data_, bytes_); }
  void* data() const override { return data_; }
  int64_t bytes() const override { return bytes_; }

 private:
  DeviceArena* arena_;
  void* data_;
  int64_t bytes_;
};

// Page-locked host memory, so copies to and from the device run async.
class PinnedBuffer {
 public:
  ~PinnedBuffer() { Release(); }
  char* data() const { return data_; }
  int64_t bytes() const { return bytes_; }
  // Grows to at least `bytes`; the old contents are dropped. The caller has
  // synchronised with any copy still reading or writing the old memory.
  absl::Status Reserve(int64_t bytes, const std::string& what) {
    if (bytes <= bytes_) return absl::OkStatus();
    Release();
    const int64_t size = std::max<int64_t>(bytes, int64_t{1} << 20);
    void* p = nullptr;
    const cudaError_t e = cudaMallocHost(&p, static_cast<size_t>(size));
    if (e != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(absl::StrCat("cudaMallocHost of ", size, " bytes for ",
                                                       what, " failed: ", CudaErrorText(e)));
    }
    data_ = static_cast<char*>(p);
    bytes_ = size;
    return absl::OkStatus();
  }

 private:
  void Release() {
    if (data_ != nullptr) cudaFreeHost(data_);
    data_ = nullptr;
    bytes_ = 0;
  }
  char* data_ = nullptr;
  int64_t bytes_ = 0;
};

int64_t Align(int64_t bytes) { return (bytes + 255) / 256 * 256; }

std::string FormatUuid(const cudaUUID_t& uuid) {
  const auto* b = reinterpret_cast<const unsigned char*>(uuid.bytes);
  std::string s = "GPU-";
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    absl::StrAppend(&s, absl::Hex(b[i], absl::kZeroPad2));
  }
  return s;
}

class CudaBackend : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<Backend>> Create(const BackendOptions& options, int device,
                                                         DType act) {
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
      return absl::FailedPreconditionError(
          absl::StrCat("device \"", options.device, "\": ", CudaErrorText(e)));
    }
    cudaDeviceProp prop{};
    e = cudaGetDeviceProperties(&prop, device);
    if (e != cudaSuccess) {
      return absl::FailedPreconditionError(
          absl::StrCat("device \"", options.device, "\": ", CudaErrorText(e)));
    }
    size_t free_bytes = 0, total_bytes = 0;
    e = cudaMemGetInfo(&free_bytes, &total_bytes);
    if (e != cudaSuccess) {
      return absl::FailedPreconditionError(
          absl::StrCat("device \"", options.device, "\": ", CudaErrorText(e)));
    }
    const std::string label = absl::StrCat("cuda:", device, " (", prop.name, ")");
    int64_t limit = options.memory_limit_bytes;
    if (limit <= 0) limit = static_cast<int64_t>(free_bytes) - options.reserve_bytes;
    if (limit <= 0) {
      return absl::ResourceExhaustedError(
          absl::StrCat(label, ": ", FormatGiB(static_cast<int64_t>(free_bytes)), " free of ",
                       FormatGiB(static_cast<int64_t>(total_bytes)), ", less the ",
                       FormatGiB(options.reserve_bytes), " reserve, leaves nothing for the stage"));
    }
    auto backend = std::unique_ptr<CudaBackend>(new CudaBackend(device, act, label, limit));
    backend->sm_count_ = prop.multiProcessorCount;
    const char* attention_env = std::getenv("STRATA_CUDA_ATTENTION");
    backend->attention_v2_ = options.cuda_attention == "v2";
    if (attention_env != nullptr && *attention_env != '\0') {
      const std::string chosen = attention_env;
      if (chosen != "v1" && chosen != "v2") {
        return absl::InvalidArgumentError(
            absl::StrCat("STRATA_CUDA_ATTENTION=\"", chosen, "\": expected v1 or v2"));
      }
      backend->attention_v2_ = chosen == "v2";
    }
    const char* graphs_env = std::getenv("STRATA_CUDA_GRAPHS");
    backend->graphs_enabled_ =
        options.cuda_graphs && !(graphs_env != nullptr && std::string(graphs_env) == "0");
    backend->uuid_ = FormatUuid(prop.uuid);
    e = cudaStreamCreateWithFlags(&backend->stream_, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
      return absl::FailedPreconditionError(
          absl::StrCat(label, ": cannot create a stream: ", CudaErrorText(e)));
    }
    auto ws = backend->Allocate(kGemmWorkspaceBytes, "cuBLASLt workspace");
    if (!ws.ok()) return ws.status();
    backend->gemm_workspace_ = std::move(*ws);
    auto gemm = cuda::Gemm::Create(backend->gemm_workspace_->data(), kGemmWorkspaceBytes);
    if (!gemm.ok()) return gemm.status();
    backend->gemm_ = std::move(*gemm);
    return std::unique_ptr<Backend>(std::move(backend));
  }

  ~CudaBackend() override {
    cudaSetDevice(device_);
    link_.Take().reset();  // aborts transfers a stream sync would otherwise wait on forever
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    DropGraphs();
    gemm_.reset();
    weights_.clear();
    dequant_.reset();
    step_device_.reset();
    attention_workspace_.reset();
    logits_device_.reset();
    gemm_workspace_.reset();
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  std::string_view name() const override { return name_; }
  int threads() const override { return 1; }
  DType activation_dtype() const override { return act_; }

  MemoryReport Memory() const override {
    MemoryReport r;
    r.device = label_;
    r.uuid = uuid_;
    cudaSetDevice(device_);
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) cudaGetLastError();
    r.total_bytes = static_cast<int64_t>(total_bytes);
    r.free_bytes = static_cast<int64_t>(free_bytes);
    r.used_bytes = arena_.used();
    r.limit_bytes = arena_.limit();
    return r;
  }

  absl::StatusOr<std::unique_ptr<Buffer>> Allocate(int64_t bytes, std::string_view what) override {
    auto p = arena_.Allocate(bytes, std::string(what));
    if (!p.ok()) return p.status();
    return std::unique_ptr<Buffer>(new DeviceBuffer(&arena_, *p, bytes));
  }

  absl::StatusOr<Weight> PrepareWeight(const Weight& host, std::string_view name) override {
    if (host.quant != QuantFormat::kNone) return PrepareQuantized(host, name);
    Weight w = host;
    w.dtype = act_;
    const int64_t count = host.rows * host.cols;
    const void* source = host.data;
    std::vector<uint16_t> converted;
    if (host.dtype != act_) {
      converted.resize(static_cast<size_t>(count));
      for (int64_t i = 0; i < count; ++i)
        converted[i] = FromF32(ElementAsF32(host.dtype, host.data, i));
      source = converted.data();
    }
    auto buffer = Allocate(w.bytes(), absl::StrCat("tensor ", std::string(name)));
    if (!buffer.ok()) return buffer.status();
    const cudaError_t e = cudaMemcpy((*buffer)->data(), source, static_cast<size_t>(w.bytes()),
                                     cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
      return absl::InternalError(absl::StrCat(label_, ": copying tensor ", std::string(name),
                                              " to the device: ", CudaErrorText(e)));
    }
    w.data = (*buffer)->data();
    weights_.push_back(std::move(*buffer));
    return w;
  }

  // A packed weight's codes, scales, offsets and permutation, copied as they
  // are into one device buffer; prefill-sized batches dequantize into
  // `dequant_`, sized here for the largest such weight.
  absl::StatusOr<Weight> PrepareQuantized(const Weight& host, std::string_view name) {
    Weight w = host;
    const int64_t groups = host.groups();
    const int64_t code_bytes = Align(host.code_bytes());
    const int64_t scale_bytes = Align(host.rows * groups * 4);
    const int64_t offset_bytes = host.offsets != nullptr ? scale_bytes : 0;
    const int64_t perm_bytes = host.perm != nullptr ? Align(host.cols * 4) : 0;
    auto buffer = Allocate(
        code_bytes + scale_bytes + offset_bytes + perm_bytes,
        absl::StrCat("tensor ", std::string(name), " (", QuantFormatName(host.quant), ")"));
    if (!buffer.ok()) return buffer.status();
    char* base = static_cast<char*>((*buffer)->data());
    struct Part {
      const void* src;
      int64_t bytes, at;
    };
    const Part parts[] = {
        {host.data, host.code_bytes(), 0},
        {host.scales, host.rows * groups * 4, code_bytes},
        {host.offsets, offset_bytes > 0 ? host.rows * groups * 4 : 0, code_bytes + scale_bytes},
        {host.perm, perm_bytes > 0 ? host.cols * 4 : 0, code_bytes + scale_bytes + offset_bytes}};
    for (const Part& p : parts) {
      if (p.bytes == 0) continue;
      const cudaError_t e =
          cudaMemcpy(base + p.at, p.src, static_cast<size_t>(p.bytes), cudaMemcpyHostToDevice);
      if (e != cudaSuccess) {
        return absl::InternalError(absl::StrCat(label_, ": copying tensor ", std::string(name),
                                                " to the device: ", CudaErrorText(e)));
      }
    }
    w.data = base;
    w.scales = reinterpret_cast<const float*>(base + code_bytes);
    w.offsets = offset_bytes > 0 ? reinterpret_cast<const float*>(base + code_bytes + scale_bytes)
                                 : nullptr;
    w.perm = perm_bytes > 0
                 ? reinterpret_cast<const int32_t*>(base + code_bytes + scale_bytes + offset_bytes)
                 : nullptr;
    weights_.push_back(std::move(*buffer));
    const int64_t dequant_bytes = host.rows * host.cols * 2;
    if (dequant_ == nullptr || dequant_->bytes() < dequant_bytes) {
      dequant_.reset();
      auto scratch = Allocate(dequant_bytes, "dequantization scratch (one quantized weight)");
      if (!scratch.ok()) return scratch.status();
      dequant_ = std::move(*scratch);
    }
    return w;
  }

  static cuda::QuantDevice AsQuantDevice(const Weight& w) {
    cuda::QuantDevice q;
    q.format = w.quant;
    q.rows = w.rows;
    q.cols = w.cols;
    q.group_size = w.group_size;
    q.codes = static_cast<const uint8_t*>(w.data);
    q.scales = w.scales;
    q.offsets = w.offsets;
    q.perm = w.perm;
    return q;
  }

  void Upload(const float* host, int64_t count, void* dst) override {
    const int64_t bytes = count * 2;
    if (!Record(ReserveIo(bytes))) return;
    auto* staged = reinterpret_cast<uint16_t*>(io_pinned_.data());
    for (int64_t i = 0; i < count; ++i) staged[i] = FromF32(host[i]);
    if (Replaying()) return;  // the graph copies the staged rows
    Check(cudaMemcpyAsync(dst, staged, static_cast<size_t>(bytes), cudaMemcpyHostToDevice, stream_),
          "upload of hidden states");
  }

  absl::Status Download(const void* src, int64_t count, float* host) override {
    absl::Status status = EndStep(src, count * 2);
    if (!status.ok()) return status;
    const auto* staged = reinterpret_cast<const uint16_t*>(io_pinned_.data());
    for (int64_t i = 0; i < count; ++i) host[i] = ToF32(staged[i]);
    return absl::OkStatus();
  }

  // Copies `bytes` from `src` into the pinned staging buffer as the step's
  // last op, runs the step's graph when it has one, and waits.
  absl::Status EndStep(const void* src, int64_t bytes) {
    if (!Replaying() && Record(ReserveIo(bytes)) && bytes > 0) {
      Check(cudaMemcpyAsync(io_pinned_.data(), src, static_cast<size_t>(bytes),
                            cudaMemcpyDeviceToHost, stream_),
            "copy of the step's output to the host");
    }
    absl::Status launched = RunGraphPart();
    if (!launched.ok()) {
      Finish().IgnoreError();  // the layout copy before the capture; its errors are moot
      return launched;
    }
    return Finish();
  }

  // Ends the part of the step a graph holds: finishes a capture, and launches
  // the captured or replayed graph. kStepNotRun when nothing of it ran.
  absl::Status RunGraphPart() {
    if (graph_mode_ == GraphMode::kCapture) {
      absl::Status captured = EndCapture();
      if (!captured.ok()) return absl::AbortedError(absl::StrCat(kStepNotRun, captured.message()));
    }
    if (graph_mode_ != GraphMode::kEager) {
      graph_mode_ = GraphMode::kEager;
      auto it = graphs_.find(graph_key_);
      if (it == graphs_.end()) {  // dropped mid-step: nothing ran
        return absl::AbortedError(absl::StrCat(kStepNotRun, "the decode graph was dropped"));
      }
      Check(cudaGraphLaunch(it->second, stream_), "decode graph launch");
    }
    return absl::OkStatus();
  }

  void GatherRows(const void* src, std::span<const int64_t> rows, int64_t cols,
                  void* dst) override {
    if (rows.empty()) return;
    if (static_cast<int64_t>(rows.size()) > step_.rows) {
      Record(absl::InternalError("GatherRows: more rows than the step has"));
      return;
    }
    int32_t* staged = reinterpret_cast<int32_t*>(step_pinned_.data() + gather_offset_);
    for (size_t i = 0; i < rows.size(); ++i) staged[i] = static_cast<int32_t>(rows[i]);
    if (Replaying()) return;
    const int32_t* device_rows = UploadStepPart(gather_offset_, rows.size() * sizeof(int32_t));
    cuda::LaunchGatherRows(act_, src, device_rows, static_cast<int64_t>(rows.size()), cols, dst,
                           stream_);
    CheckLaunch("gather rows");
  }

  void BeginStep(const StepLayout& layout) override {
    cudaSetDevice(device_);
    graph_mode_ = GraphMode::kEager;
    if (unsynced_) {
      // The last step ended with an NCCL send and was not waited for; its
      // copies may still read the pinned staging this step overwrites. The
      // send's receiver has had the step header since, so the send ends (or
      // its deadline passes, a broken hop). Everything of that step precedes
      // its send on the stream.
      if (link_.get() != nullptr) {
        Record(link_.get()->WaitSend());
      } else {
        Check(cudaStreamSynchronize(stream_), "the previous step");
      }
      unsynced_ = false;
    }
    // Decode steps of a peer group use graphs too: the receive is enqueued
    // before the graph, the send after it (SendToPeer).
    bool decode = graphs_enabled_ && layout.logits_rows >= 0;
    for (const AttentionChunk& ch : layout.chunks) decode &= ch.num_tokens == 1;
    split_positions_ = layout.max_positions;
    if (decode) {
      split_positions_ = 256;
      while (split_positions_ < layout.max_positions) split_positions_ *= 2;
    }
    // [row_pos | row_table | cos | sin | ids | gather | tables]: every offset
    // depends on the rows alone, so a graph's pointers stay valid; the block
    // tables come last, with room for split_positions_ each on decode steps.
    const int64_t rows = layout.rows, half = layout.rope_half;
    int64_t table_entries = 0;
    for (const AttentionChunk& ch : layout.chunks) {
      table_entries +=
          (std::max(ch.start_pos + ch.num_tokens, decode ? split_positions_ : 0) + 15) / 16;
    }
    const int64_t pos_off = 0;
    const int64_t row_table_off = pos_off + Align(rows * 4);
    const int64_t cos_off = row_table_off + Align(rows * 4);
    const int64_t sin_off = cos_off + Align(rows * half * 4);
    ids_offset_ = sin_off + Align(rows * half * 4);
    gather_offset_ = ids_offset_ + Align(rows * 4);
    const int64_t decode_rows_off = gather_offset_ + Align(rows * 4);
    const int64_t tiles_off = decode_rows_off + Align(rows * 4);
    const int64_t tables_off = tiles_off + Align(rows * sizeof(cuda::v2::PrefillTile));
    const int64_t total = StepLayoutBytes(rows, half, table_entries);
    if (!Record(ReserveStep(total))) {
      step_ = {};
      return;
    }
    char* h = step_pinned_.data();
    auto* row_pos = reinterpret_cast<int32_t*>(h + pos_off);
    auto* row_table = reinterpret_cast<int32_t*>(h + row_table_off);
    auto* tables = reinterpret_cast<int32_t*>(h + tables_off);
    int64_t next_table = 0;
    spans_.clear();
    for (const AttentionChunk& ch : layout.chunks) {
      const int64_t blocks = (ch.start_pos + ch.num_tokens + 15) / 16;
      spans_.push_back({ch.row_begin, ch.num_tokens, ch.start_pos, next_table});
      std::copy_n(ch.block_table, blocks, tables + next_table);
      for (int64_t i = 0; i < ch.num_tokens; ++i) {
        row_pos[ch.row_begin + i] = static_cast<int32_t>(ch.start_pos + i);
        row_table[ch.row_begin + i] = static_cast<int32_t>(next_table);
      }
      next_table += blocks;
    }
    // The v2 attention's work: decode rows and prefill tiles.
    int32_t n_decode = 0, n_tiles = 0;
    if (attention_v2_) {
      cuda::v2::PlanWork(spans_.data(), static_cast<int64_t>(spans_.size()),
                         reinterpret_cast<int32_t*>(h + decode_rows_off), &n_decode,
                         reinterpret_cast<cuda::v2::PrefillTile*>(h + tiles_off), &n_tiles);
    }
    std::copy_n(layout.cos, rows * half, reinterpret_cast<float*>(h + cos_off));
    std::copy_n(layout.sin, rows * half, reinterpret_cast<float*>(h + sin_off));
    char* d = static_cast<char*>(step_device_->data());
    // Outside any graph: replays read the layout from the same device memory.
    Check(cudaMemcpyAsync(d, h, static_cast<size_t>(total), cudaMemcpyHostToDevice, stream_),
          "upload of the step layout");
    step_.row_pos = reinterpret_cast<const int32_t*>(d + pos_off);
    step_.row_table = reinterpret_cast<const int32_t*>(d + row_table_off);
    step_.tables = reinterpret_cast<const int32_t*>(d + tables_off);
    step_.cos = reinterpret_cast<const float*>(d + cos_off);
    step_.sin = reinterpret_cast<const float*>(d + sin_off);
    step_.rows = static_cast<int32_t>(rows);
    step_.half = static_cast<int32_t>(half);
    step_.decode_rows = reinterpret_cast<const int32_t*>(d + decode_rows_off);
    step_.tiles = reinterpret_cast<const cuda::v2::PrefillTile*>(d + tiles_off);
    step_.n_decode = n_decode;
    step_.n_tiles = n_tiles;
    if (decode) StartGraphStep(layout);
  }

  // Bytes of the step layout for `rows` rows and `table_entries` KV blocks.
  static int64_t StepLayoutBytes(int64_t rows, int64_t half, int64_t table_entries) {
    return 5 * Align(rows * 4) + Align(rows * static_cast<int64_t>(sizeof(cuda::v2::PrefillTile))) +
           2 * Align(rows * half * 4) + Align(table_entries * 4);
  }

  absl::Status ReserveScratch(const StepLimits& l) override {
    cudaSetDevice(device_);
    // Decode steps round the context up to a power of two (>= 256) for their
    // block tables and attention splits.
    int64_t positions = 256;
    while (positions < l.max_positions) positions *= 2;
    const int64_t tables = l.max_rows * ((positions + 15) / 16);
    absl::Status s = ReserveStep(StepLayoutBytes(l.max_rows, l.rope_half, tables));
    // Attention partials: rows * heads * splits stays below this (see Attention).
    const int64_t items = 4 * static_cast<int64_t>(sm_count_) + l.max_rows * l.num_heads;
    if (s.ok()) {
      s = ReserveDevice(&attention_workspace_, items * (l.head_dim + 2) * 4, "attention workspace");
    }
    if (s.ok() && l.vocab > 0) {
      s = ReserveDevice(&logits_device_,
                        Align(l.max_logits_rows * l.vocab * 2) + l.max_logits_rows * 4,
                        "logits and argmax");
    }
    if (s.ok()) s = ReserveIo(std::max(l.max_rows * l.hidden, l.max_logits_rows * l.vocab) * 2);
    return s;
  }

  void Linear(const void* x, int64_t m, const Weight& w, const Weight* bias, void* out) override {
    if (Replaying()) return;
    if (w.quant != QuantFormat::kNone) {
      const cuda::QuantDevice q = AsQuantDevice(w);
      if (m <= cuda::kMaxGemvRows) {
        cuda::LaunchQuantGemv(act_, x, m, q, bias ? bias->data : nullptr, out, stream_);
        CheckLaunch("quantized GEMV");
        return;
      }
      cuda::LaunchDequantize(act_, q, dequant_->data(), stream_);
      CheckLaunch("dequantization");
      Record(gemm_->Run(act_, x, m, dequant_->data(), w.rows, w.cols, bias ? bias->data : nullptr,
                        out, stream_));
      return;
    }
    Record(
        gemm_->Run(act_, x, m, w.data, w.rows, w.cols, bias ? bias->data : nullptr, out, stream_));
  }

  absl::Status Logits(const void* x, int64_t m, const Weight& w, float* host_out) override {
    const int64_t count = m * w.rows;
    if (!Replaying() && !Record(ReserveDevice(&logits_device_, count * 2, "logits"))) {
      return EndStep(nullptr, 0);  // reports the error (and ends a capture)
    }
    Linear(x, m, w, nullptr, logits_device_->data());
    return Download(logits_device_->data(), count, host_out);
  }

  absl::Status Argmax(const void* x, int64_t m, const Weight& w, int32_t* host_ids) override {
    const int64_t count = m * w.rows;
    // The ids sit after the logits, in the same buffer.
    const int64_t ids_at = Align(count * 2);
    if (!Replaying() &&
        !Record(ReserveDevice(&logits_device_, ids_at + m * 4, "logits and argmax"))) {
      return EndStep(nullptr, 0);  // reports the error (and ends a capture)
    }
    auto* ids = reinterpret_cast<int32_t*>(static_cast<char*>(logits_device_->data()) + ids_at);
    Linear(x, m, w, nullptr, logits_device_->data());
    if (!Replaying()) {
      cuda::LaunchArgmaxRows(act_, logits_device_->data(), m, w.rows, ids, stream_);
      CheckLaunch("argmax");
    }
    absl::Status status = EndStep(ids, m * 4);
    if (!status.ok()) return status;
    std::memcpy(host_ids, io_pinned_.data(), static_cast<size_t>(m) * 4);
    return absl::OkStatus();
  }

  void RmsNorm(const void* x, int64_t m, int64_t n, const Weight& weight, float eps,
               void* out) override {
    if (Replaying()) return;
    cuda::LaunchRmsNorm(act_, x, m, n, weight.data, eps, out, stream_);
    CheckLaunch("RMSNorm");
  }

  void AddRmsNorm(void* acc, const void* delta, int64_t m, int64_t n, const Weight& weight,
                  float eps, void* out) override {
    if (Replaying()) return;
    cuda::LaunchAddRmsNorm(act_, acc, delta, m, n, weight.data, eps, out, stream_);
    CheckLaunch("add + RMSNorm");
  }

  void Embed(std::span<const int32_t> ids, const Weight& table, void* out) override {
    if (ids.empty()) return;
    if (static_cast<int64_t>(ids.size()) > step_.rows) {
      Record(absl::InternalError("Embed: more ids than the step has rows"));
      return;
    }
    std::copy(ids.begin(), ids.end(),
              reinterpret_cast<int32_t*>(step_pinned_.data() + ids_offset_));
    if (Replaying()) return;
    const int32_t* device_ids = UploadStepPart(ids_offset_, ids.size() * sizeof(int32_t));
    cuda::LaunchEmbed(act_, device_ids, static_cast<int64_t>(ids.size()), table.data, table.cols,
                      out, stream_);
    CheckLaunch("embedding");
  }

  void SiluMul(void* gate, const void* up, int64_t count) override {
    if (Replaying()) return;
    cuda::LaunchSiluMul(act_, gate, up, count, stream_);
    CheckLaunch("SiLU x up");
  }

  void Add(void* acc, const void* x, int64_t count) override {
    if (Replaying()) return;
    cuda::LaunchAdd(act_, acc, x, count, stream_);
    CheckLaunch("residual add");
  }

  void Rope(void* x, int64_t heads, int64_t head_dim) override {
    if (Replaying()) return;
    cuda::LaunchRope(act_, x, step_, heads, head_dim, stream_);
    CheckLaunch("RoPE");
  }

  void WriteKv(const void* k, const void* v, const KvLayerView& kv) override {
    if (Replaying()) return;
    cuda::LaunchWriteKv(act_, k, v, step_, kv.base, kv.kv_dim, kv.block_size, stream_);
    CheckLaunch("KV write");
  }

  void Attention(const void* q, const KvLayerView& kv, const AttentionShape& shape,
                 void* out) override {
    if (step_.rows == 0 || Replaying()) return;
    if (shape.head_dim > cuda::kMaxHeadDim) {
      Record(absl::InvalidArgumentError(absl::StrCat("head_dim ", shape.head_dim,
                                                     " exceeds the CUDA attention's limit of ",
                                                     cuda::kMaxHeadDim)));
      return;
    }
    if (attention_v2_ && cuda::v2::Supported(shape.head_dim, shape.num_heads, shape.num_kv_heads)) {
      AttentionV2(q, kv, shape, out);
      return;
    }
    cuda::AttentionParams p = ParamsOf(shape, kv);
    // Split the keys only while (row, head) pairs leave multiprocessors idle.
    const int64_t pairs = static_cast<int64_t>(step_.rows) * shape.num_heads;
    const int64_t target_blocks = 4 * static_cast<int64_t>(sm_count_);
    int64_t splits = 1;
    if (pairs < target_blocks) {
      splits = std::min((split_positions_ + kMinSplitKeys - 1) / kMinSplitKeys,
                        (target_blocks + pairs - 1) / pairs);
      splits = std::max<int64_t>(splits, 1);
    }
    p.splits = static_cast<int>(splits);
    p.split_len = static_cast<int>((split_positions_ + splits - 1) / splits);
    const int64_t floats =
        cuda::AttentionWorkspaceFloats(step_.rows, shape.num_heads, splits, shape.head_dim);
    if (!Record(ReserveDevice(&attention_workspace_, floats * 4, "attention workspace"))) return;
    cuda::LaunchAttention(act_, q, kv.base, step_, p,
                          static_cast<float*>(attention_workspace_->data()), out, stream_);
    CheckLaunch("attention");
  }

  static cuda::AttentionParams ParamsOf(const AttentionShape& shape, const KvLayerView& kv) {
    cuda::AttentionParams p;
    p.num_heads = shape.num_heads;
    p.num_kv_heads = shape.num_kv_heads;
    p.head_dim = shape.head_dim;
    p.sliding_window = shape.sliding_window;
    p.scale = shape.scale;
    p.block_size = kv.block_size;
    p.kv_dim = kv.kv_dim;
    return p;
  }

  // The v2 kernels: decode rows by (row, KV head, split) blocks, the splits
  // cut from each row's own length; prefill tiles by tensor-core blocks.
  void AttentionV2(const void* q, const KvLayerView& kv, const AttentionShape& shape, void* out) {
    cuda::AttentionParams p = ParamsOf(shape, kv);
    int64_t splits = 1;
    if (step_.n_decode > 0) {
      // Split the keys only while (row, KV head) blocks leave multiprocessors
      // idle, and no further than the workspace reserved at load holds.
      const int64_t blocks = static_cast<int64_t>(step_.n_decode) * shape.num_kv_heads;
      const int64_t target_blocks = 4 * static_cast<int64_t>(sm_count_);
      if (blocks < target_blocks) {
        splits = std::min((split_positions_ + kMinSplitKeys - 1) / kMinSplitKeys,
                          (target_blocks + blocks - 1) / blocks);
      }
      const int64_t per_split =
          cuda::AttentionWorkspaceFloats(step_.n_decode, shape.num_heads, 1, shape.head_dim);
      const int64_t held = attention_workspace_ != nullptr ? attention_workspace_->bytes() / 4 : 0;
      splits = std::max<int64_t>(1, std::min(splits, held / per_split));
      if (!Record(ReserveDevice(&attention_workspace_, splits * per_split * 4,
                                "attention workspace"))) {
        return;
      }
    }
    p.splits = static_cast<int>(splits);
    cuda::LaunchAttentionV2(act_, q, kv.base, step_, p,
                            attention_workspace_ != nullptr
                                ? static_cast<float*>(attention_workspace_->data())
                                : nullptr,
                            out, stream_);
    CheckLaunch("attention (v2)");
  }

  absl::Status JoinPeerGroup(const PeerGroup& group) override {
    cudaSetDevice(device_);
    LeavePeerGroup();
    auto comm = cuda::NcclCommunicator::Join(group, act_, stream_, label_);
    if (!comm.ok()) return comm.status();
    auto link = PeerLink::Join(std::move(*comm), group, kHopTimeoutMs, label_);
    if (!link.ok()) return link.status();
    link_.Set(std::move(*link));
    return absl::OkStatus();
  }

  void LeavePeerGroup() override {
    cudaSetDevice(device_);
    link_.Take().reset();  // aborts it: pending transfers end
    unsynced_ = false;
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  }

  void AbortPeerGroup() override { link_.Abort(); }

  void SendToPeer(const void* src, int64_t count, int peer) override {
    if (link_.get() == nullptr) Backend::SendToPeer(src, count, peer);
    // The layers first (a decode graph ends here), then the send behind them.
    absl::Status ran = RunGraphPart();
    if (!ran.ok()) {
      Record(ran);  // kStepNotRun: the stage runs the step again, eagerly
      return;
    }
    Record(link_.get()->Send(src, count, peer));
  }

  void RecvFromPeer(void* dst, int64_t count, int peer) override {
    if (link_.get() == nullptr) Backend::RecvFromPeer(dst, count, peer);
    Record(link_.get()->Recv(dst, count, peer));
  }

  absl::Status TakeError() override {
    unsynced_ = true;
    const cudaError_t e = cudaStreamQuery(stream_);
    if (e != cudaSuccess && e != cudaErrorNotReady) Check(e, "step");
    absl::Status s = error_;
    error_ = absl::OkStatus();
    return s;
  }

 private:
  CudaBackend(int device, DType act, std::string label, int64_t limit)
      : device_(device),
        act_(act),
        label_(label),
        name_(absl::StrCat("cuda-", act == DType::kF16 ? "f16" : "bf16")),
        arena_(device, std::move(label), limit) {}

  uint16_t FromF32(float f) const { return act_ == DType::kF16 ? F32ToF16(f) : F32ToBf16(f); }
  float ToF32(uint16_t h) const { return act_ == DType::kF16 ? F16ToF32(h) : Bf16ToF32(h); }

  // Keeps the first error; true when `s` is OK.
  bool Record(const absl::Status& s) {
    if (!s.ok() && error_.ok()) error_ = s;
    return s.ok();
  }
  void Check(cudaError_t e, const char* what) {
    if (e != cudaSuccess)
      Record(absl::InternalError(absl::StrCat(label_, ": ", what, ": ", CudaErrorText(e))));
  }
  void CheckLaunch(const char* what) { Check(cudaGetLastError(), what); }

  void StartGraphStep(const StepLayout& layout) {
    graph_key_ = {layout.rows, static_cast<int64_t>(layout.chunks.size()),
                  layout.argmax_only ? -layout.logits_rows - 1 : layout.logits_rows,
                  split_positions_, (layout.peer_recv ? 1 : 0) | (layout.peer_send ? 2 : 0)};
    if (graphs_.count(graph_key_) > 0) {
      graph_mode_ = GraphMode::kReplay;
      return;
    }
    // The first step of a shape sizes the buffers; capture from the second.
    if (uncapturable_.count(graph_key_) > 0 || seen_.insert(graph_key_).second) return;
    if (!error_.ok()) return;  // an error waits to be reported by this step
    const cudaError_t e = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
      cudaGetLastError();
      uncapturable_.insert(graph_key_);
      return;
    }
    graph_mode_ = GraphMode::kCapture;
  }

  // Ends the capture begun by StartGraphStep and instantiates the graph.
  // On failure nothing of the step ran, and its shape runs eagerly from now.
  absl::Status EndCapture() {
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(stream_, &graph);
    graph_mode_ = GraphMode::kEager;
    absl::Status status = error_;  // an op that failed while capturing
    error_ = absl::OkStatus();
    cudaGraphExec_t exec = nullptr;
    if (e == cudaSuccess && status.ok()) e = cudaGraphInstantiate(&exec, graph, 0);
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (e != cudaSuccess || !status.ok()) {
      cudaGetLastError();
      uncapturable_.insert(graph_key_);
      return status.ok() ? absl::InternalError(absl::StrCat(
                               label_, ": capturing a decode step: ", CudaErrorText(e)))
                         : status;
    }
    graphs_[graph_key_] = exec;
    graph_mode_ = GraphMode::kCapture;  // Download launches it once now
    return absl::OkStatus();
  }

  void DropGraphs() {
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
    graphs_.clear();
  }

  // Waits for the stream and returns (and clears) the first error since the
  // last call. A receive from a peer is waited for first, with its deadline:
  // the stream could otherwise wait on a dead peer forever.
  absl::Status Finish() {
    PeerLink* link = link_.get();
    if (link != nullptr && link->recv_pending()) Record(link->WaitRecv());
    Check(cudaStreamSynchronize(stream_), "step");
    absl::Status s = error_;
    error_ = absl::OkStatus();
    return s;
  }

  // Grows a device scratch buffer; waits for enqueued work first, which may
  // still read the old one.
  absl::Status ReserveDevice(std::unique_ptr<Buffer>* buffer, int64_t bytes,
                             const std::string& what) {
    if (*buffer != nullptr && (*buffer)->bytes() >= bytes) return absl::OkStatus();
    if (graph_mode_ == GraphMode::kCapture) {
      return absl::InternalError(what + " would grow inside a graph capture");
    }
    cudaStreamSynchronize(stream_);
    DropGraphs();  // they point into the old buffer
    buffer->reset();
    auto grown = Allocate(bytes, what);
    if (!grown.ok()) return grown.status();
    *buffer = std::move(*grown);
    return absl::OkStatus();
  }
  absl::Status ReserveIo(int64_t bytes) {
    if (bytes <= io_pinned_.bytes()) return absl::OkStatus();
    if (graph_mode_ == GraphMode::kCapture) {
      return absl::InternalError("hidden-state staging would grow inside a graph capture");
    }
    cudaStreamSynchronize(stream_);
    DropGraphs();
    return io_pinned_.Reserve(bytes, "hidden-state staging");
  }
  absl::Status ReserveStep(int64_t bytes) {
    if (bytes > step_pinned_.bytes()) {
      cudaStreamSynchronize(stream_);
      DropGraphs();
      absl::Status s = step_pinned_.Reserve(bytes, "step layout staging");
      if (!s.ok()) return s;
    }
    return ReserveDevice(&step_device_, bytes, "step layout");
  }
  const int32_t* UploadStepPart(int64_t offset, size_t bytes) {
    char* d = static_cast<char*>(step_device_->data()) + offset;
    Check(cudaMemcpyAsync(d, step_pinned_.data() + offset, bytes, cudaMemcpyHostToDevice, stream_),
          "upload of step indices");
    return reinterpret_cast<const int32_t*>(d);
  }

  int device_;
  DType act_;
  std::string label_, name_, uuid_;
  int sm_count_ = 1;
  mutable DeviceArena arena_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Buffer> gemm_workspace_;
  std::unique_ptr<cuda::Gemm> gemm_;
  std::vector<std::unique_ptr<Buffer>> weights_;
  std::unique_ptr<Buffer> dequant_;  // see PrepareQuantized
  PeerLinkSlot link_;                // the step thread's; Load may Abort() it from another
  absl::Status error_;

  // The step's layout: host staging and its device copy.
  PinnedBuffer step_pinned_, io_pinned_;
  std::unique_ptr<Buffer> step_device_, attention_workspace_, logits_device_;
  cuda::StepDevice step_;
  int64_t ids_offset_ = 0, gather_offset_ = 0;
  // Positions the attention splits are cut for: the step's longest sequence,
  // rounded up to a power of two for decode steps so a graph covers many.
  int64_t split_positions_ = 0;

  // CUDA graphs of decode steps. The first step of a shape runs eagerly and
  // sizes every scratch buffer; the second is captured; later ones only stage
  // their host inputs (ids, rows, hidden states) into the pinned buffers the
  // graph copies from, then launch it. Moving any buffer drops every graph.
  enum class GraphMode { kEager, kCapture, kReplay };
  // rows, chunks, logits rows (-rows - 1 for Argmax steps), split positions,
  // peer hops (1: the hidden states arrive by NCCL, 2: they leave by NCCL)
  using GraphKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int>;
  bool Replaying() const { return graph_mode_ == GraphMode::kReplay; }
  bool graphs_enabled_ = true;
  bool attention_v2_ = false;               // STRATA_CUDA_ATTENTION=v2
  std::vector<cuda::v2::ChunkSpan> spans_;  // BeginStep's scratch
  bool unsynced_ = false;                   // the last step returned without waiting (TakeError)
  GraphMode graph_mode_ = GraphMode::kEager;
  GraphKey graph_key_;
  std::map<GraphKey, cudaGraphExec_t> graphs_;
  std::set<GraphKey> seen_, uncapturable_;
};

}  // namespace

int CudaDeviceCount(std::string* why) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    *why = CudaErrorText(e);
    return 0;
  }
  if (count == 0) *why = "no CUDA device is visible";
  return count;
}

std::vector<std::string> VisibleCudaUuids() {
  std::string why;
  std::vector<std::string> uuids;
  for (int i = 0, n = CudaDeviceCount(&why); i < n; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    uuids.push_back(FormatUuid(prop.uuid));
  }
  return uuids;
}

// The index of `device` if it names a usable device.
absl::StatusOr<int> UsableDevice(const std::string& device) {
  absl::StatusOr<int> index = ParseCudaDevice(device);
  if (!index.ok()) return index.status();
  std::string why;
  const int count = CudaDeviceCount(&why);
  if (count == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("device \"", device, "\": no usable CUDA device (", why, ")"));
  }
  if (*index >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("device \"", device, "\": only ", count, " CUDA device(s) are visible"));
  }
  return index;
}

absl::StatusOr<MemoryReport> ProbeCudaDevice(int index) {
  const std::string device = absl::StrCat("cuda:", index);
  absl::StatusOr<int> usable = UsableDevice(device);
  if (!usable.ok()) return usable.status();
  cudaDeviceProp prop{};
  size_t free_bytes = 0, total_bytes = 0;
  cudaError_t e = cudaSetDevice(index);
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, index);
  if (e == cudaSuccess) e = cudaMemGetInfo(&free_bytes, &total_bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return absl::FailedPreconditionError(
        absl::StrCat("device \"", device, "\": ", CudaErrorText(e)));
  }
  MemoryReport r;
  r.device = absl::StrCat(device, " (", prop.name, ")");
  r.uuid = FormatUuid(prop.uuid);
  r.total_bytes = static_cast<int64_t>(total_bytes);
  r.free_bytes = static_cast<int64_t>(free_bytes);
  return r;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const BackendOptions& options,
                                                         DType weights_dtype) {
  absl::StatusOr<int> usable = UsableDevice(options.device);
  if (!usable.ok()) return usable.status();
  const int index = *usable;
  DType act = options.cuda_activation_dtype;
  if (weights_dtype == DType::kBF16 || weights_dtype == DType::kF16) act = weights_dtype;
  if (act == DType::kF32) {
    return absl::InvalidArgumentError("cuda_activation_dtype: must be bf16 or f16");
  }
  return CudaBackend::Create(options, index, act);
}

}  // namespace strata
