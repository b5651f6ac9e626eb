#include "runtime/backend/sim/sim_backend.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/backend/peer_link.h"
#include "runtime/backend/socket_link.h"
#include "runtime/device_table.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

// What the CUDA backend allocates besides the stage's own buffers.
constexpr int64_t kGemmWorkspaceBytes = int64_t{32} << 20;
constexpr int64_t kAssumedSms = 132;  // for the attention partials' size
constexpr float kPeak = 8.0f;         // the logit of the simulated token
// A hop to the next GPU (NCCL over PCIe 4.0 x16, as a conservative stand-in
// for NVLink): its bytes at this rate add to the sending step.
constexpr double kPeerLinkBandwidth = 25e9;
constexpr int kHopTimeoutMs = 30'000;  // as the CUDA backend's

std::string FormatGiB(int64_t bytes) {
  return absl::StrFormat("%.2f GiB", static_cast<double>(bytes) / (1 << 30));
}

// Address space without memory: touching it faults, which would be a bug.
class SimBuffer : public Buffer {
 public:
  SimBuffer(void* data, int64_t bytes, int64_t* used) : data_(data), bytes_(bytes), used_(used) {}
  ~SimBuffer() override {
    munmap(data_, static_cast<size_t>(std::max<int64_t>(bytes_, 1)));
    *used_ -= bytes_;
  }
  void* data() const override { return data_; }
  int64_t bytes() const override { return bytes_; }

 private:
  void* data_;
  int64_t bytes_;
  int64_t* used_;
};

uint32_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<uint32_t>(x & 0xFFFFFF);  // exact in a float
}

// "SIM-" and 16 random hex digits: distinct per simulated device.
std::string NewUuid() {
  std::random_device random;
  return absl::StrFormat("SIM-%08x%08x", random(), random());
}

class SimBackend final : public Backend {
 public:
  SimBackend(DeviceModel model, DType act, int64_t limit)
      : model_(std::move(model)),
        act_(act),
        elem_(static_cast<double>(DTypeSize(act))),
        limit_(limit),
        label_(absl::StrCat("sim:", model_.name, " (", model_.label, ", simulated)")),
        uuid_(NewUuid()) {}

  absl::Status Init() {
    auto ws = Allocate(kGemmWorkspaceBytes, "cuBLASLt workspace");
    if (!ws.ok()) return ws.status();
    fixed_.push_back(std::move(*ws));
    return absl::OkStatus();
  }

  std::string_view name() const override { return "sim"; }
  int threads() const override { return 1; }
  DType activation_dtype() const override { return act_; }

  MemoryReport Memory() const override {
    MemoryReport r;
    r.device = label_;
    r.uuid = uuid_;
    r.total_bytes = model_.memory_bytes;
    r.used_bytes = used_;
    r.free_bytes = model_.memory_bytes - used_;
    r.limit_bytes = limit_;
    return r;
  }

  absl::StatusOr<std::unique_ptr<Buffer>> Allocate(int64_t bytes, std::string_view what) override {
    if (used_ + bytes > limit_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          label_, ": ", std::string(what), " needs ", FormatGiB(bytes), " but only ",
          FormatGiB(limit_ - used_), " of this worker's ", FormatGiB(limit_),
          " device budget are left (", FormatGiB(used_),
          " already allocated); lower the KV cache or batch size, or give the stage fewer "
          "layers"));
    }
    void* p = mmap(nullptr, static_cast<size_t>(std::max<int64_t>(bytes, 1)), PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      return absl::ResourceExhaustedError(absl::StrCat(label_, ": no address space for ",
                                                       std::string(what), " (", FormatGiB(bytes),
                                                       "): ", std::strerror(errno)));
    }
    used_ += bytes;
    return std::unique_ptr<Buffer>(new SimBuffer(p, bytes, &used_));
  }

  absl::StatusOr<Weight> PrepareWeight(const Weight& host, std::string_view name) override {
    Weight w = host;
    w.dtype = act_;
    auto buffer = Allocate(w.bytes(), absl::StrCat("tensor ", std::string(name)));
    if (!buffer.ok()) return buffer.status();
    w.data = (*buffer)->data();
    fixed_.push_back(std::move(*buffer));
    return w;
  }

  absl::Status ReserveScratch(const StepLimits& l) override {
    hidden_ = l.hidden;
    const int64_t items = 4 * kAssumedSms + l.max_rows * l.num_heads;
    auto attention = Allocate(items * (l.head_dim + 2) * 4, "attention workspace");
    if (!attention.ok()) return attention.status();
    fixed_.push_back(std::move(*attention));
    if (l.vocab > 0) return ReserveLogits(l.max_logits_rows * l.vocab);
    return absl::OkStatus();
  }

  // The group moves each row's signature (one f32) where NCCL would move the
  // row; the time is the whole row's at kPeerLinkBandwidth.
  absl::Status JoinPeerGroup(const PeerGroup& group) override {
    LeavePeerGroup();
    auto comm = SocketCommunicator::Join(group, sizeof(float), label_);
    if (!comm.ok()) return comm.status();
    auto link = PeerLink::Join(std::move(*comm), group, kHopTimeoutMs, label_);
    if (!link.ok()) return link.status();
    link_.Set(std::move(*link));
    return absl::OkStatus();
  }

  void LeavePeerGroup() override { link_.Take().reset(); }  // aborts it
  void AbortPeerGroup() override { link_.Abort(); }

  void RecvFromPeer(void* dst, int64_t count, int peer) override {
    PeerLink* link = link_.get();
    if (link == nullptr) return Backend::RecvFromPeer(dst, count, peer);
    peer_in_.assign(static_cast<size_t>(hidden_ > 0 ? count / hidden_ : 0), 0.0f);
    Record(link->Recv(peer_in_.data(), static_cast<int64_t>(peer_in_.size()), peer));
  }

  void SendToPeer(const void* src, int64_t count, int peer) override {
    PeerLink* link = link_.get();
    if (link == nullptr) return Backend::SendToPeer(src, count, peer);
    link_seconds_ += static_cast<double>(count) * elem_ / kPeerLinkBandwidth;
    EndStep();
    peer_out_.assign(sig_.begin(), sig_.end());
    Record(link->Send(peer_out_.data(), static_cast<int64_t>(peer_out_.size()), peer));
  }

  absl::Status TakeError() override {
    absl::Status s = error_;
    error_ = absl::OkStatus();
    return s;
  }

  void Upload(const float* host, int64_t count, void*) override {
    // A hidden state from the previous stage: its rows' signatures.
    const int64_t rows = hidden_ > 0 ? count / hidden_ : 0;
    for (int64_t r = 0; r < rows && r < static_cast<int64_t>(sig_.size()); ++r) {
      sig_[r] = static_cast<uint32_t>(host[r * hidden_]);
    }
    bytes_ += static_cast<double>(count) * elem_;
  }

  void UploadEmbedded(const float*, std::span<const int32_t> ids, int64_t cols, void*) override {
    SignRows(ids);  // as Embed would: the token ids sign the rows
    bytes_ += static_cast<double>(ids.size() * cols) * elem_;
  }

  absl::Status Download(const void*, int64_t count, float* host) override {
    if (count > 0) {
      std::fill(host, host + count, 0.0f);
      const int64_t rows = hidden_ > 0 ? count / hidden_ : 0;
      for (int64_t r = 0; r < rows && r < static_cast<int64_t>(sig_.size()); ++r) {
        host[r * hidden_] = static_cast<float>(sig_[r]);
      }
    }
    bytes_ += static_cast<double>(count) * elem_;
    EndStep();
    return TakeError();
  }

  void GatherRows(const void*, std::span<const int64_t> rows, int64_t cols, void*) override {
    gathered_.assign(rows.begin(), rows.end());
    bytes_ += 2.0 * static_cast<double>(rows.size() * cols) * elem_;
  }

  void BeginStep(const StepLayout& layout) override {
    // The last step's send has had its header delivered since; it ends (or
    // its deadline passes, a broken hop) before its buffer is reused.
    PeerLink* link = link_.get();
    if (link != nullptr && link->send_pending()) Record(link->WaitSend());
    start_ = Clock::now();
    bytes_ = 0;
    flops_ = 0;
    link_seconds_ = 0;
    chunks_.assign(layout.chunks.begin(), layout.chunks.end());
    positions_.assign(static_cast<size_t>(layout.rows), 0);
    for (const AttentionChunk& c : chunks_) {
      for (int64_t i = 0; i < c.num_tokens; ++i) positions_[c.row_begin + i] = c.start_pos + i;
    }
    sig_.assign(static_cast<size_t>(layout.rows), 0);
    gathered_.clear();
    if (layout.peer_recv && link != nullptr && link->recv_pending()) {
      Record(link->WaitRecv());
      for (size_t r = 0; r < sig_.size() && r < peer_in_.size(); ++r) {
        sig_[r] = static_cast<uint32_t>(peer_in_[r]);
      }
    }
  }

  void Linear(const void*, int64_t m, const Weight& w, const Weight* bias, void*) override {
    Matmul(m, w);
    if (bias != nullptr) bytes_ += static_cast<double>(bias->bytes());
  }

  absl::Status Logits(const void*, int64_t m, const Weight& w, float* host_out) override {
    Matmul(m, w);
    bytes_ += static_cast<double>(m * w.rows) * 4;  // f32 to the host
    std::fill(host_out, host_out + m * w.rows, 0.0f);
    for (int64_t i = 0; i < m; ++i) host_out[i * w.rows + Token(i, w.rows)] = kPeak;
    EndStep();
    return TakeError();
  }

  absl::Status Argmax(const void*, int64_t m, const Weight& w, int32_t* host_ids) override {
    Matmul(m, w);
    for (int64_t i = 0; i < m; ++i) host_ids[i] = Token(i, w.rows);
    EndStep();
    return TakeError();
  }

  void RmsNorm(const void*, int64_t m, int64_t n, const Weight& w, float, void*) override {
    bytes_ += 2.0 * static_cast<double>(m * n) * elem_ + static_cast<double>(w.bytes());
  }
  void AddRmsNorm(void*, const void*, int64_t m, int64_t n, const Weight& w, float,
                  void*) override {
    bytes_ += 4.0 * static_cast<double>(m * n) * elem_ + static_cast<double>(w.bytes());
  }
  void Embed(std::span<const int32_t> ids, const Weight& table, void*) override {
    SignRows(ids);
    bytes_ += 2.0 * static_cast<double>(ids.size() * table.cols) * elem_;
  }
  void SiluMul(void*, const void*, int64_t count) override {
    bytes_ += 3.0 * static_cast<double>(count) * elem_;
  }
  void Add(void*, const void*, int64_t count) override {
    bytes_ += 3.0 * static_cast<double>(count) * elem_;
  }
  void Rope(void*, int64_t heads, int64_t head_dim) override {
    bytes_ += 2.0 * static_cast<double>(positions_.size() * heads * head_dim) * elem_;
  }
  void WriteKv(const void*, const void*, const KvLayerView& kv) override {
    bytes_ += 4.0 * static_cast<double>(positions_.size() * kv.kv_dim) * elem_;
  }
  void Attention(const void*, const KvLayerView& kv, const AttentionShape& shape, void*) override {
    for (const AttentionChunk& c : chunks_) {
      const double keys = static_cast<double>(c.start_pos + c.num_tokens);
      bytes_ += keys * 2.0 * static_cast<double>(kv.kv_dim) * elem_;
      // Scores and the weighted sum: 2 FLOPs each per query, key and dim.
      flops_ += 4.0 * static_cast<double>(c.num_tokens) * keys *
                static_cast<double>(shape.num_heads * shape.head_dim);
    }
    bytes_ +=
        2.0 * static_cast<double>(positions_.size() * shape.num_heads * shape.head_dim) * elem_;
  }

  StepTiming Timing() const override {
    std::lock_guard<std::mutex> lock(timing_mu_);
    return timing_;
  }

 private:
  void SignRows(std::span<const int32_t> ids) {
    for (size_t r = 0; r < ids.size() && r < sig_.size(); ++r) {
      sig_[r] = Mix(static_cast<uint64_t>(static_cast<uint32_t>(ids[r])) + 1);
    }
  }

  void Matmul(int64_t m, const Weight& w) {
    bytes_ += static_cast<double>(w.bytes()) + static_cast<double>(m * (w.rows + w.cols)) * elem_;
    flops_ += 2.0 * static_cast<double>(m) * static_cast<double>(w.rows * w.cols);
  }

  // The simulated token of head row i: a hash of its row's signature and position.
  int32_t Token(int64_t i, int64_t vocab) const {
    const int64_t row = i < static_cast<int64_t>(gathered_.size()) ? gathered_[i] : i;
    const uint64_t sig = row < static_cast<int64_t>(sig_.size()) ? sig_[row] : 0;
    const uint64_t pos = row < static_cast<int64_t>(positions_.size()) ? positions_[row] : 0;
    return static_cast<int32_t>(Mix((sig << 24) ^ (pos * 0x9E3779B97F4A7C15ULL)) %
                                static_cast<uint64_t>(std::max<int64_t>(vocab, 1)));
  }

  absl::Status ReserveLogits(int64_t count) {
    const int64_t bytes = count * 2 + count / std::max<int64_t>(1, hidden_) * 4;
    if (logits_ != nullptr && logits_->bytes() >= bytes) return absl::OkStatus();
    logits_.reset();
    auto b = Allocate(bytes, "logits and argmax");
    if (!b.ok()) return b.status();
    logits_ = std::move(*b);
    return absl::OkStatus();
  }

  void Record(const absl::Status& s) {
    if (error_.ok() && !s.ok()) error_ = s;
  }

  void EndStep() {
    const double modelled = bytes_ / model_.bandwidth + flops_ / model_.flops + link_seconds_;
    std::this_thread::sleep_until(start_ + std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(modelled)));
    const double achieved = std::chrono::duration<double>(Clock::now() - start_).count();
    std::lock_guard<std::mutex> lock(timing_mu_);
    ++timing_.steps;
    timing_.modelled_seconds += modelled;
    timing_.achieved_seconds += achieved;
  }

  const DeviceModel model_;
  const DType act_;
  const double elem_;
  const int64_t limit_;
  const std::string label_;
  const std::string uuid_;  // each simulated device is its own GPU
  int64_t used_ = 0;
  std::vector<std::unique_ptr<Buffer>> fixed_;  // weights, workspaces
  std::unique_ptr<Buffer> logits_;
  int64_t hidden_ = 0;
  // The step in progress.
  Clock::time_point start_;
  double bytes_ = 0, flops_ = 0, link_seconds_ = 0;
  absl::Status error_;  // the step's first transfer error
  std::vector<AttentionChunk> chunks_;
  std::vector<int64_t> positions_, gathered_;
  std::vector<uint32_t> sig_;
  mutable std::mutex timing_mu_;
  StepTiming timing_;
  PeerLinkSlot link_;
  std::vector<float> peer_in_, peer_out_;  // row signatures from / to the neighbours
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeSimBackend(const BackendOptions& options,
                                                        DType weights_dtype) {
  const std::string name = options.device.substr(4);  // after "sim:"
  DeviceModel model;
  if (name == "custom") {
    if (options.sim_memory_bytes <= 0 || !(options.sim_bandwidth > 0) || !(options.sim_flops > 0)) {
      return absl::InvalidArgumentError(
          "device \"sim:custom\": needs its memory, bandwidth and FLOP/s (--sim-memory, "
          "--sim-bandwidth, --sim-flops)");
    }
    model.name = "custom";
    model.label = "custom";
  } else {
    absl::StatusOr<DeviceModel> known = FindDevice(name);
    if (!known.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("device \"", options.device, "\": ", known.status().message()));
    }
    model = *known;
  }
  if (options.sim_memory_bytes > 0) model.memory_bytes = options.sim_memory_bytes;
  if (options.sim_bandwidth > 0) model.bandwidth = options.sim_bandwidth;
  if (options.sim_flops > 0) model.flops = options.sim_flops;
  // As on CUDA: f16 checkpoints run in f16, everything else in bf16; the
  // budget is the limit given, or the memory less the reserve.
  const DType act = weights_dtype == DType::kF16 ? DType::kF16 : DType::kBF16;
  int64_t limit = options.memory_limit_bytes;
  if (limit <= 0) limit = model.memory_bytes - options.reserve_bytes;
  if (limit <= 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "device \"", options.device, "\": ", FormatGiB(model.memory_bytes), " less the ",
        FormatGiB(options.reserve_bytes), " reserve leaves nothing for the stage"));
  }
  auto backend = std::make_unique<SimBackend>(model, act, limit);
  if (absl::Status st = backend->Init(); !st.ok()) return st;
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace strata
