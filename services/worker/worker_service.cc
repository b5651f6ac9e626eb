#include "services/worker/worker_service.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/config.h"
#include "runtime/status_macros.h"
#include "services/common/convert.h"
#include "services/common/log.h"
#include "services/common/server.h"

namespace strata {

namespace {
constexpr int kNextConnectTimeoutMs = 2000;
// Metadata of a Forward stream: the hop token of the epoch (LoadRequest).
constexpr char kHopTokenKey[] = "strata-hop-token";
// Load limits that no device of today reaches; past them a request is absurd.
constexpr int64_t kMaxLoadSequences = 65536;
constexpr int64_t kMaxLoadContext = 1 << 20;
constexpr int64_t kMaxLoadBatchTokens = 65536;
constexpr int32_t kMaxLoadThreads = 1024;
// How long a Load or Release waits for the attach session's token to arrive.
constexpr int kTokenWaitMs = 2000;

std::string MetadataValue(const grpc::ServerContext& context, const char* key) {
  auto it = context.client_metadata().find(key);
  if (it == context.client_metadata().end()) return "";
  return std::string(it->second.data(), it->second.size());
}

prometheus::Family<prometheus::Gauge>& GaugeFamily(prometheus::Registry& r, const char* name,
                                                   const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}
prometheus::Family<prometheus::Counter>& CounterFamily(prometheus::Registry& r, const char* name,
                                                       const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}
}  // namespace

WorkerMetrics::WorkerMetrics(prometheus::Registry& r, const std::string& w)
    : worker(w),
      layer_first(GaugeFamily(r, "strata_worker_layer_first", "First decoder layer held")),
      layer_last(GaugeFamily(r, "strata_worker_layer_last", "Last decoder layer held")),
      layers(GaugeFamily(r, "strata_worker_layers", "Decoder layers held")),
      weight_bytes(GaugeFamily(r, "strata_worker_weight_bytes",
                               "Bytes of weights the stage reads (layers, embedding, head)")),
      kv_used(GaugeFamily(r, "strata_worker_kv_blocks_used", "KV cache blocks in use")),
      kv_total(GaugeFamily(r, "strata_worker_kv_blocks_capacity", "KV cache blocks allocated")),
      step_seconds(prometheus::BuildHistogram()
                       .Name("strata_worker_step_duration_seconds")
                       .Help("Compute time of a step on this worker, by phase")
                       .Register(r)),
      steps(CounterFamily(r, "strata_worker_steps_total", "Steps run")),
      rejected(CounterFamily(r, "strata_worker_rejected_steps_total",
                             "Steps refused (another epoch, malformed, failed)")),
      received_bytes(CounterFamily(r, "strata_worker_received_bytes_total",
                                   "Hidden-state bytes received from the previous hop")),
      sent_bytes(CounterFamily(r, "strata_worker_sent_bytes_total",
                               "Hidden-state bytes sent to the next hop")) {}

WorkerService::WorkerService(const WorkerOptions& options,
                             std::function<bool(const v1::StepResult&)> report,
                             std::function<void(bool)> set_serving, WorkerMetrics* metrics,
                             std::shared_ptr<const TransportSecurity> security)
    : options_(options),
      security_(security != nullptr ? std::move(security) : TransportSecurity::Insecure()),
      report_(std::move(report)),
      set_serving_(std::move(set_serving)),
      metrics_(metrics) {}

WorkerService::~WorkerService() {
  std::lock_guard<std::mutex> lock(mu_);
  CloseNext();
}

void WorkerService::SetPeerStage(Stage* stage) {
  std::lock_guard<std::mutex> lock(next_cancel_mu_);
  peer_stage_ = stage;
}

void WorkerService::CloseNext() {
  {
    std::lock_guard<std::mutex> lock(next_cancel_mu_);
    next_cancel_ = nullptr;
  }
  if (next_ == nullptr) return;
  next_->WritesDone();
  next_context_->TryCancel();
  next_->Finish().IgnoreError();
  next_.reset();
  next_context_.reset();
  next_stub_.reset();
}

void WorkerService::DropAssignment() {
  {
    std::lock_guard<std::mutex> lock(next_cancel_mu_);
    if (next_cancel_ != nullptr) next_cancel_->TryCancel();
    if (peer_stage_ != nullptr) peer_stage_->AbortPeerGroup();
  }
  std::lock_guard<std::mutex> lock(mu_);
  CloseNext();
  SetPeerStage(nullptr);
  stage_.reset();
  loaded_key_.clear();
  history_.clear();
  epoch_ = 0;
  heartbeat_epoch_ = 0;
  upstream_token_.clear();
  downstream_token_.clear();
  upstream_worker_id_.clear();
  state_ = v1::WORKER_STATE_STARTING;
  set_serving_(false);
}

void WorkerService::SetSessionToken(const std::string& token) {
  {
    std::lock_guard<std::mutex> lock(token_mu_);
    session_token_ = token;
  }
  token_cv_.notify_all();
}

bool WorkerService::SessionTokenMatches(const std::string& token) {
  // The coordinator sends Registered (with the token) before its first
  // Load, but the two travel on different streams: a Load may overtake the
  // reply. So a Load waits a moment for the token it carries.
  std::unique_lock<std::mutex> lock(token_mu_);
  return token_cv_.wait_for(lock, std::chrono::milliseconds(kTokenWaitMs), [&] {
    return !session_token_.empty() && SecretsEqual(token, session_token_);
  });
}

void WorkerService::FillHeartbeat(v1::Heartbeat* heartbeat) {
  heartbeat->set_epoch(heartbeat_epoch_);
  heartbeat->set_last_step_received(last_step_received_);
  heartbeat->set_last_step_done(last_step_done_);
  heartbeat->set_load_done_bytes(load_done_);
  heartbeat->set_load_total_bytes(load_total_);
  heartbeat->set_load_bytes_per_second(load_rate_);
}

absl::Status CheckLoadLimits(const v1::LoadRequest& r, const ModelConfig& config,
                             int64_t capacity_bytes, int64_t reserve_bytes, bool budgeted) {
  auto out_of = [](const char* field, int64_t v, int64_t lo, int64_t hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("Worker.Load: ", field, " ", v, " is outside [", lo, ", ", hi, "]"));
  };
  if (r.epoch() == 0) return absl::InvalidArgumentError("Worker.Load: epoch must be positive");
  if (r.layer_begin() < 0 || r.layer_begin() >= config.num_layers)
    return out_of("layer_begin", r.layer_begin(), 0, config.num_layers - 1);
  if (r.layer_end() <= r.layer_begin() || r.layer_end() > config.num_layers)
    return out_of("layer_end", r.layer_end(), r.layer_begin() + 1, config.num_layers);
  if (r.max_sequences() < 1 || r.max_sequences() > kMaxLoadSequences)
    return out_of("max_sequences", r.max_sequences(), 1, kMaxLoadSequences);
  const int64_t context_cap = std::min(kMaxLoadContext, config.max_position_embeddings);
  if (r.max_context() < 1 || r.max_context() > context_cap)
    return out_of("max_context", r.max_context(), 1, context_cap);
  if (r.max_batch_tokens() < 1 || r.max_batch_tokens() > kMaxLoadBatchTokens)
    return out_of("max_batch_tokens", r.max_batch_tokens(), 1, kMaxLoadBatchTokens);
  if (r.threads() < 0 || r.threads() > kMaxLoadThreads)
    return out_of("threads", r.threads(), 0, kMaxLoadThreads);
  if (!r.peer_group_id().empty() && (r.peer_group_size() < 2 || r.peer_group_size() > 1024 ||
                                     r.peer_rank() < 0 || r.peer_rank() >= r.peer_group_size())) {
    return absl::InvalidArgumentError(absl::StrCat("Worker.Load: peer_rank ", r.peer_rank(),
                                                   " / peer_group_size ", r.peer_group_size(),
                                                   " do not form a group"));
  }
  // KV cache (f32, the most any backend stores) and one batch of
  // activations must fit what this worker may use; the weights are mapped.
  // In doubles: the factors are bounded, their product may not fit 64 bits.
  const int64_t layers = r.layer_end() - r.layer_begin();
  // A cache sized from memory (on a device with a budget) takes what is
  // left, so max_sequences is only its cap; the stage checks the rest.
  const double kv = r.kv_from_memory() && budgeted
                        ? 0.0
                        : static_cast<double>(r.max_sequences()) *
                              static_cast<double>(r.max_context()) * static_cast<double>(layers) *
                              2.0 * static_cast<double>(config.kv_dim()) * 4.0;
  const double per_token = 3.0 * static_cast<double>(config.hidden_size) +
                           2.0 * static_cast<double>(config.q_dim()) +
                           2.0 * static_cast<double>(config.kv_dim()) +
                           2.0 * static_cast<double>(config.intermediate_size);
  const double workspace = static_cast<double>(r.max_batch_tokens()) * per_token * 4.0;
  const double usable = static_cast<double>(capacity_bytes - std::max<int64_t>(reserve_bytes, 0));
  if (capacity_bytes > 0 && kv + workspace > usable) {
    constexpr double kMiB = 1 << 20;
    return absl::ResourceExhaustedError(absl::StrFormat(
        "Worker.Load: max_sequences %d x max_context %d over %d layers needs %.0f MiB of KV cache "
        "and %.0f MiB of workspace; this worker may use %.0f MiB",
        r.max_sequences(), r.max_context(), layers, kv / kMiB, workspace / kMiB, usable / kMiB));
  }
  return absl::OkStatus();
}

absl::Status WorkerService::CheckUpstream(const Identity& peer, const std::string& token) const {
  if (upstream_token_.empty() || !SecretsEqual(token, upstream_token_)) {
    return absl::PermissionDeniedError(
        "Worker.Forward: the stream's hop token is not this epoch's; only the previous stage of "
        "the current map may send steps");
  }
  if (!security_->mutual()) return absl::OkStatus();
  const bool ok = upstream_worker_id_.empty()
                      ? peer.role == Role::kCoordinator
                      : peer.role == Role::kWorker && peer.name == upstream_worker_id_;
  if (!ok) {
    return absl::PermissionDeniedError(absl::StrCat(
        "Worker.Forward: steps of this stage come from ",
        upstream_worker_id_.empty() ? "the coordinator" : "worker " + upstream_worker_id_,
        ", not from ", DescribeIdentity(peer)));
  }
  return absl::OkStatus();
}

void FillLogprobs(std::span<const float> logits, int32_t token, int top_n, v1::TokenLogprobs* out) {
  // log-softmax of the raw logits, the sum in double.
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max);
  const double lse = max + std::log(sum);
  out->set_logprob(static_cast<float>(logits[token] - lse));
  const int n = std::clamp<int>(top_n, 0, static_cast<int>(logits.size()));
  if (n == 0) return;
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  // Highest first; ties by the lower id, so the order is deterministic.
  auto before = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), before);
  for (int i = 0; i < n; ++i) {
    v1::TokenLogprob* alt = out->add_top();
    alt->set_token_id(ids[i]);
    alt->set_logprob(static_cast<float>(logits[ids[i]] - lse));
  }
}

void WorkerService::FillPromptLogprobs(const v1::Chunk& chunk, int64_t first_row,
                                       v1::StepResult* result) const {
  const int64_t vocab = stage_->config().vocab_size;
  const int n = chunk.token_ids_size();
  v1::PromptLogprobs* p = result->add_prompt_logprobs();
  p->set_seq_id(chunk.seq_id());
  p->set_first_position(chunk.start_pos() + 1);
  // Row i predicts the token at start_pos + i + 1.
  for (int i = 0; i < n; ++i) {
    const int32_t next = i + 1 < n                   ? chunk.token_ids(i + 1)
                         : chunk.has_next_token_id() ? chunk.next_token_id()
                                                     : -1;
    if (next < 0 || next >= vocab) break;
    FillLogprobs(std::span<const float>(out_.logits.data() + (first_row + i) * vocab, vocab), next,
                 chunk.prompt_logprobs(), p->add_logprobs());
  }
}

void WorkerService::StallUntilCancelled(grpc::ServerContext* context) {
  Log("debug: this step stalls until its stream is cancelled (--debug-stall-step)");
  while (!context->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

void WorkerService::SetDraining() {
  std::lock_guard<std::mutex> lock(mu_);
  state_ = v1::WORKER_STATE_DRAINING;
  set_serving_(false);
}

grpc::Status WorkerService::Load(grpc::ServerContext* context, const v1::LoadRequest* request,
                                 v1::LoadResponse* response) {
  const auto t0 = std::chrono::steady_clock::now();
  // A refused Load changes nothing: it is checked before any state is touched.
  if (absl::Status st = Authorize(*context, *security_, {Role::kCoordinator}, "Worker.Load");
      !st.ok()) {
    return ToGrpcStatus(st);
  }
  if (!SessionTokenMatches(request->session_token())) {
    return ToGrpcStatus(absl::PermissionDeniedError(
        "Worker.Load: session_token is not that of this worker's attach session; only the "
        "coordinator it is attached to may assign its work"));
  }
  if (!options_.model_root.empty()) {
    std::error_code ec;
    const std::string dir = std::filesystem::weakly_canonical(request->model_dir(), ec).string();
    const std::string root = std::filesystem::weakly_canonical(options_.model_root, ec).string();
    if (dir != root && !absl::StartsWith(dir, root + "/")) {
      return ToGrpcStatus(absl::PermissionDeniedError(
          absl::StrCat("Worker.Load: model_dir is outside this worker's --model-root ", root)));
    }
  }
  absl::StatusOr<ModelConfig> config = LoadModelConfig(request->model_dir());
  if (!config.ok()) return ToGrpcStatus(config.status());
  if (absl::Status st = CheckLoadLimits(*request, *config, options_.capacity_bytes,
                                        options_.reserve_bytes, options_.device != "cpu");
      !st.ok()) {
    Log(std::string(st.message()));
    return ToGrpcStatus(st);
  }
  {
    // A step may be blocked writing to a next stage that hangs, or on an NCCL
    // transfer with a peer that died, holding mu_.
    std::lock_guard<std::mutex> lock(next_cancel_mu_);
    if (next_cancel_ != nullptr) next_cancel_->TryCancel();
    if (peer_stage_ != nullptr) peer_stage_->AbortPeerGroup();
  }
  std::lock_guard<std::mutex> lock(mu_);
  state_ = v1::WORKER_STATE_LOADING;
  set_serving_(false);
  CloseNext();
  history_.clear();
  // The same range with the same limits keeps the loaded stage (its weights
  // stay mapped) and only forgets every sequence; anything else reloads.
  const std::string key = absl::StrCat(
      request->model_dir(), "|", request->layer_begin(), "|", request->layer_end(), "|",
      request->max_batch_tokens(), "|", request->max_context(), "|", request->max_sequences(), "|",
      request->threads(), "|", request->kv_from_memory(), "|", request->host_embedding());
  const bool keep = stage_ != nullptr && key == loaded_key_;
  if (keep) {
    for (uint64_t id : stage_->kv_cache().SequenceIds()) stage_->Free(id);
  } else {
    SetPeerStage(nullptr);
    stage_.reset();
    loaded_key_.clear();
  }
  auto fail = [&](const absl::Status& st) {
    state_ = v1::WORKER_STATE_FAILED;
    error_ = st.ToString();
    Log(absl::StrCat("load failed: ", error_));
    return ToGrpcStatus(st);
  };
  if (!keep) {
    StageOptions so;
    so.threads = request->threads() > 0 ? request->threads() : options_.threads;
    so.device = options_.device;
    so.sim_memory_bytes = options_.sim_memory_bytes;
    so.sim_bandwidth = options_.sim_bandwidth;
    so.sim_flops = options_.sim_flops;
    if (options_.device != "cpu") {
      so.device_memory_bytes = options_.capacity_bytes - options_.reserve_bytes;
    }
    so.max_batch_tokens = request->max_batch_tokens();
    so.max_context = request->max_context();
    so.max_sequences = request->max_sequences();
    so.kv_from_memory = request->kv_from_memory();
    so.host_embedding = request->host_embedding();
    // Every weight is read before "loaded", so the first request does not
    // pay for page faults; a long read says how far it is.
    const auto load_started = std::chrono::steady_clock::now();
    so.debug_load_rate = options_.debug_load_rate;
    auto last_log = std::make_shared<std::chrono::steady_clock::time_point>(load_started);
    so.load_progress = [this, load_started, last_log](int64_t done, int64_t total) {
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - load_started).count();
      const double rate = done / std::max(s, 1e-3);
      // The coordinator hears of it with the next heartbeat.
      const bool finished = done >= total;
      load_done_ = finished ? 0 : done;
      load_total_ = finished ? 0 : total;
      load_rate_ = finished ? 0 : rate;
      // The log: every 2 s of a load that takes longer than 2 s.
      const auto now = std::chrono::steady_clock::now();
      if (s < 2.0 || (!finished && now - *last_log < std::chrono::seconds(2))) return;
      *last_log = now;
      Log(absl::StrFormat(
          "reading weights: %.1f of %.1f MiB, %.0f MB/s, %s", done / 1048576.0, total / 1048576.0,
          rate / 1e6,
          done >= total ? "done" : absl::StrFormat("ETA %.0f s", (total - done) / rate)));
    };
    auto stage = Stage::Load(request->model_dir(), *config, request->layer_begin(),
                             request->layer_end(), so);
    if (!stage.ok()) return fail(stage.status());
    stage_ = std::move(*stage);
    loaded_key_ = key;
  }
  if (!stage_->is_last()) {
    if (request->next_address().empty()) {
      return fail(absl::InvalidArgumentError(absl::StrCat("next_address: required, layers end at ",
                                                          request->layer_end(), " of ",
                                                          config->num_layers)));
    }
    auto channel = Dial(request->next_address(), security_.get());
    // The coordinator re-plans when this fails, so do not wait long for a
    // next stage that died a moment ago.
    if (!WaitConnected(channel, std::min(options_.connect_timeout_ms, kNextConnectTimeoutMs))) {
      return fail(absl::UnavailableError(
          absl::StrCat("next stage at ", request->next_address(), " is unreachable")));
    }
    next_address_ = request->next_address();
    next_stub_ = v1::Worker::NewStub(channel);
    next_context_ = std::make_unique<grpc::ClientContext>();
    next_context_->AddMetadata(kHopTokenKey, request->downstream_token());
    next_ = next_stub_->Forward(next_context_.get(), &next_summary_);
    std::lock_guard<std::mutex> cancel_lock(next_cancel_mu_);
    next_cancel_ = next_context_.get();
  }
  // The epoch's NCCL group replaces the last one (whose communicator was
  // aborted above); without one every hop is gRPC.
  SetPeerStage(nullptr);
  recv_from_peer_ = send_to_peer_ = false;
  peer_rank_ = -1;
  if (!request->peer_group_id().empty()) {
    PeerGroup group;
    group.unique_id = request->peer_group_id();
    group.rank = request->peer_rank();
    group.size = request->peer_group_size();
    group.timeout_ms = std::min(options_.connect_timeout_ms, kNextConnectTimeoutMs * 5);
    group.recv_from_prev = request->recv_from_peer();
    group.send_to_next = request->send_to_peer();
    const absl::Status joined = stage_->JoinPeerGroup(group);
    if (!joined.ok()) {
      return fail(absl::Status(joined.code(), absl::StrCat(kPeerGroupError, joined.message())));
    }
    SetPeerStage(stage_.get());
    recv_from_peer_ = request->recv_from_peer();
    send_to_peer_ = request->send_to_peer();
    peer_rank_ = request->peer_rank();
  } else if (stage_->in_peer_group()) {
    stage_->LeavePeerGroup();
  }
  epoch_ = request->epoch();
  upstream_token_ = request->upstream_token();
  downstream_token_ = request->downstream_token();
  upstream_worker_id_ = request->upstream_worker_id();
  last_step_received_ = 0;
  last_step_done_ = 0;
  heartbeat_epoch_ = epoch_;
  state_ = v1::WORKER_STATE_READY;
  if (metrics_ != nullptr) {
    model_label_ = ModelLabel(request->model_dir());
    const prometheus::Labels l = metrics_->Labels(model_label_);
    metrics_->layer_first.Add(l).Set(request->layer_begin());
    metrics_->layer_last.Add(l).Set(request->layer_end() - 1);
    metrics_->layers.Add(l).Set(request->layer_end() - request->layer_begin());
    metrics_->weight_bytes.Add(l).Set(static_cast<double>(stage_->weight_bytes()));
    metrics_->kv_total.Add(l).Set(static_cast<double>(stage_->kv_cache().total_blocks()));
    metrics_->kv_used.Add(l).Set(0);
    if (metrics_->gpus) metrics_->gpus->SetModel(model_label_);
    // The series a step touches, looked up once here rather than per step.
    prometheus::Labels prefill = l, decode = l;
    prefill["phase"] = "prefill";
    decode["phase"] = "decode";
    step_series_ = {&metrics_->step_seconds.Add(prefill, LatencyBuckets()),
                    &metrics_->step_seconds.Add(decode, LatencyBuckets()),
                    &metrics_->steps.Add(l),
                    &metrics_->received_bytes.Add(l),
                    &metrics_->sent_bytes.Add(l),
                    &metrics_->kv_used.Add(l)};
  }
  error_.clear();
  response->set_weight_bytes(stage_->weight_bytes());
  response->set_kv_blocks(stage_->kv_cache().total_blocks());
  response->set_load_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  Log(absl::StrCat(keep ? "kept" : "loaded", " layers [", request->layer_begin(), ", ",
                   request->layer_end(), ") of ", request->model_dir(), ", epoch ", epoch_,
                   stage_->is_last() ? "; last stage" : absl::StrCat("; next ", next_address_)));
  set_serving_(true);
  return grpc::Status::OK;
}

grpc::Status WorkerService::Forward(grpc::ServerContext* context,
                                    grpc::ServerReader<v1::Step>* reader,
                                    v1::ForwardSummary* summary) {
  if (absl::Status st =
          Authorize(*context, *security_, {Role::kCoordinator, Role::kWorker}, "Worker.Forward");
      !st.ok()) {
    return ToGrpcStatus(st);
  }
  const Identity peer = PeerIdentity(*context);
  const std::string token = MetadataValue(*context, kHopTokenKey);
  v1::Step step;
  uint64_t count = 0;
  while (reader->Read(&step)) {
    ++count;
    last_step_received_ = std::max<uint64_t>(last_step_received_, step.step_id());
    if (++steps_received_total_ == options_.debug_stall_step) StallUntilCancelled(context);
    if (options_.debug_step_delay_ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(options_.debug_step_delay_ms));
    }
    v1::StepResult result;
    bool forwarded = false;
    absl::Status st;
    bool denied = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      st = CheckUpstream(peer, token);
      denied = !st.ok();
      if (!denied) {
        const auto started = std::chrono::steady_clock::now();
        st = RunStep(step, &result, &forwarded);
        busy_seconds_ +=
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      }
      if (!st.ok()) {
        ++rejected_steps_;
        error_ = st.ToString();
        if (metrics_ != nullptr) metrics_->rejected.Add(metrics_->Labels(model_label_)).Increment();
      }
    }
    // A stream that may not feed this stage ends here, and nothing of it
    // reaches the coordinator.
    if (denied) {
      Log(absl::StrCat(st.message(), " (", DescribeIdentity(peer), ")"));
      return ToGrpcStatus(st);
    }
    last_step_done_ = std::max<uint64_t>(last_step_done_, step.step_id());
    if (forwarded) continue;
    result.set_step_id(step.step_id());
    result.set_epoch(step.epoch());
    if (!st.ok()) {
      result.clear_tokens();
      result.set_error_code(static_cast<int>(st.code()));
      result.set_error(std::string(st.message()));
    }
    if (!report_(result)) Log("could not report a step result: the coordinator stream is closed");
  }
  summary->set_steps(count);
  return grpc::Status::OK;
}

absl::Status WorkerService::RunStep(v1::Step& step, v1::StepResult* result, bool* forwarded) {
  if (state_ != v1::WORKER_STATE_READY || stage_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", options_.id, " has no loaded assignment"));
  }
  if (step.epoch() != epoch_) {
    return absl::FailedPreconditionError(absl::StrCat("step ", step.step_id(), " is for epoch ",
                                                      step.epoch(), " but worker ", options_.id,
                                                      " serves epoch ", epoch_));
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t id : step.drop_seq_ids()) {
    stage_->Free(id);
    history_.erase(id);
  }
  ++steps_;
  const int n = step.chunks_size();
  batch_.chunks.resize(n);
  int64_t total = 0;
  for (int c = 0; c < n; ++c) {
    const v1::Chunk& from = step.chunks(c);
    SequenceChunk& to = batch_.chunks[c];
    to.seq_id = from.seq_id();
    to.start_pos = from.start_pos();
    to.num_tokens = from.token_ids_size();
    to.token_ids.clear();
    if (stage_->is_first()) to.token_ids.assign(from.token_ids().begin(), from.token_ids().end());
    to.logits = LogitsMode::kNone;
    if (from.has_prompt_logprobs()) {
      to.logits = LogitsMode::kAll;  // every position predicts a prompt token
    } else if (from.sample()) {
      const SamplingParams params = SamplingFromProto(from.sampling());
      // The greedy fast path needs no logits on the host; log-probabilities do.
      to.logits = IsPlainGreedy(params) && !from.has_logprobs() && from.banned_ids().empty()
                      ? LogitsMode::kGreedy
                      : LogitsMode::kLast;
    }
    total += to.num_tokens;
  }
  batch_.recv_peer = recv_from_peer_ ? peer_rank_ - 1 : -1;
  batch_.send_peer = send_to_peer_ ? peer_rank_ + 1 : -1;
  if (!stage_->is_first() && recv_from_peer_) {
    batch_.hidden = {};  // arrives by NCCL inside Run
  } else if (!stage_->is_first()) {
    const size_t floats = step.hidden().size() / sizeof(float);
    if (step.hidden().size() % sizeof(float) != 0 ||
        static_cast<int64_t>(floats) != total * stage_->config().hidden_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "step ", step.step_id(), ": hidden holds ", step.hidden().size(), " bytes; ", total,
          " tokens x hidden size ", stage_->config().hidden_size, " x 4 bytes were expected"));
    }
    hidden_in_.resize(floats);
    std::memcpy(hidden_in_.data(), step.hidden().data(), step.hidden().size());
    batch_.hidden = hidden_in_;
  } else {
    batch_.hidden = {};
  }
  if (n > 0) {
    RETURN_IF_ERROR(stage_->Run(batch_, &out_));
  } else {
    out_.hidden.clear();  // a step that only drops sequences
  }
  if (step_series_.steps != nullptr) {
    const bool prefill = total > n;  // some chunk has more than one token
    (prefill ? step_series_.prefill_seconds : step_series_.decode_seconds)
        ->Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    step_series_.steps->Increment();
    // Over a peer group the rows move in the activation dtype beside the step.
    const double peer_bytes = static_cast<double>(total * stage_->config().hidden_size *
                                                  DTypeSize(stage_->backend().activation_dtype()));
    step_series_.received->Increment(recv_from_peer_ ? peer_bytes
                                                     : static_cast<double>(step.hidden().size()));
    if (!stage_->is_last()) {
      step_series_.sent->Increment(
          send_to_peer_ ? peer_bytes : static_cast<double>(out_.hidden.size() * sizeof(float)));
    }
    const KvCache& kv = stage_->kv_cache();
    step_series_.kv_used->Set(static_cast<double>(kv.total_blocks() - kv.free_blocks()));
  }

  if (!stage_->is_last()) {
    step.set_hidden(out_.hidden.data(), out_.hidden.size() * sizeof(float));  // empty over NCCL
    step.add_compute_us(static_cast<uint32_t>(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count()));
    if (!next_->Write(step)) {
      return absl::UnavailableError(
          absl::StrCat("the stream to the next stage at ", next_address_, " broke"));
    }
    *forwarded = true;
    return absl::OkStatus();
  }
  const int64_t vocab = stage_->config().vocab_size;
  for (int c = 0; c < n; ++c) {
    const v1::Chunk& chunk = step.chunks(c);
    std::vector<int32_t>& h = history_[chunk.seq_id()];
    if (static_cast<int64_t>(h.size()) > chunk.start_pos()) h.resize(chunk.start_pos());
    h.insert(h.end(), chunk.token_ids().begin(), chunk.token_ids().end());
    const bool all_rows = chunk.has_prompt_logprobs();
    if (all_rows) FillPromptLogprobs(chunk, out_.logits_row[c], result);
    if (!chunk.sample()) continue;
    int32_t token = out_.greedy[c];
    // The last position's row (kAll holds one row per position).
    const int64_t last_row = out_.logits_row[c] + (all_rows ? chunk.token_ids_size() - 1 : 0);
    const float* row = token < 0 ? out_.logits.data() + last_row * vocab : nullptr;
    if (token < 0) {
      const SamplingParams params = SamplingFromProto(chunk.sampling());
      std::span<const float> logits(row, vocab);
      if (!chunk.banned_ids().empty()) {
        // min_tokens: these cannot come yet (the log-probabilities below
        // still describe the raw logits).
        banned_row_.assign(row, row + vocab);
        for (int32_t id : chunk.banned_ids()) {
          if (id >= 0 && id < vocab) banned_row_[id] = -std::numeric_limits<float>::infinity();
        }
        logits = banned_row_;
      }
      token = sampler_.Sample(logits, params, h, chunk.prompt_tokens(),
                              chunk.start_pos() + chunk.token_ids_size());
    }
    v1::SampledToken* t = result->add_tokens();
    t->set_seq_id(chunk.seq_id());
    t->set_token_id(token);
    if (chunk.has_logprobs() && row != nullptr) {
      FillLogprobs(std::span<const float>(row, vocab), token, chunk.logprobs(),
                   t->mutable_logprobs());
    }
  }
  *result->mutable_compute_us() = step.compute_us();
  result->add_compute_us(static_cast<uint32_t>(
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count()));
  return absl::OkStatus();
}

grpc::Status WorkerService::Release(grpc::ServerContext* context, const v1::ReleaseRequest* request,
                                    v1::ReleaseResponse* response) {
  if (absl::Status st = Authorize(*context, *security_, {Role::kCoordinator}, "Worker.Release");
      !st.ok()) {
    return ToGrpcStatus(st);
  }
  if (!SessionTokenMatches(request->session_token())) {
    return ToGrpcStatus(absl::PermissionDeniedError(
        "Worker.Release: session_token is not that of this worker's attach session"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (stage_ == nullptr) return grpc::Status::OK;
  std::vector<uint64_t> ids =
      request->all() ? stage_->kv_cache().SequenceIds()
                     : std::vector<uint64_t>(request->seq_ids().begin(), request->seq_ids().end());
  int released = 0;
  for (uint64_t id : ids) {
    released += stage_->kv_cache().Has(id) ? 1 : 0;
    stage_->Free(id);
    history_.erase(id);
  }
  response->set_released(released);
  return grpc::Status::OK;
}

grpc::Status WorkerService::GetStatus(grpc::ServerContext* context, const v1::GetStatusRequest*,
                                      v1::WorkerStatus* response) {
  if (absl::Status st = Authorize(*context, *security_, {Role::kCoordinator, Role::kOperator},
                                  "Worker.GetStatus");
      !st.ok()) {
    return ToGrpcStatus(st);
  }
  std::lock_guard<std::mutex> lock(mu_);
  response->set_worker_id(options_.id);
  response->set_state(state_);
  response->set_epoch(epoch_);
  response->set_steps(steps_);
  response->set_error(error_);
  response->set_rejected_steps(rejected_steps_);
  response->set_busy_seconds(busy_seconds_);
  if (stage_ != nullptr) {
    const KvCache& kv = stage_->kv_cache();
    response->set_layer_begin(static_cast<int32_t>(stage_->begin()));
    response->set_layer_end(static_cast<int32_t>(stage_->end()));
    for (uint64_t id : kv.SequenceIds()) response->add_seq_ids(id);
    response->set_kv_blocks_total(kv.total_blocks());
    response->set_kv_blocks_used(kv.total_blocks() - kv.free_blocks());
    response->set_weight_bytes(stage_->weight_bytes());
    const Backend::StepTiming timing = stage_->backend().Timing();
    response->set_modelled_seconds(timing.modelled_seconds);
    response->set_achieved_seconds(timing.achieved_seconds);
  }
  return grpc::Status::OK;
}

}  // namespace strata
