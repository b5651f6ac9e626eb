// The Worker gRPC service: a Stage of the current assignment and the stream
// to the next worker. One mutex (mu_) serialises loads, steps and status, so
// the stage (not thread-safe) runs one step at a time, in stream order.
#ifndef STRATA_SERVICES_WORKER_WORKER_SERVICE_H_
#define STRATA_SERVICES_WORKER_WORKER_SERVICE_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/sampler.h"
#include "runtime/stage.h"
#include "services/common/metrics.h"
#include "services/worker/nvml.h"
#include "services/worker/worker.h"
#include "strata/v1/coordinator.pb.h"
#include "strata/v1/worker.grpc.pb.h"

namespace strata {

// The worker's Prometheus series, labelled with `worker` (and `model`
// once an assignment names it).
struct WorkerMetrics {
  WorkerMetrics(prometheus::Registry& registry, const std::string& worker);
  prometheus::Labels Labels(const std::string& model) const {
    return {{"model", model}, {"worker", worker}};
  }
  std::string worker;
  prometheus::Family<prometheus::Gauge>& layer_first;
  prometheus::Family<prometheus::Gauge>& layer_last;
  prometheus::Family<prometheus::Gauge>& layers;
  prometheus::Family<prometheus::Gauge>& weight_bytes;
  prometheus::Family<prometheus::Gauge>& kv_used;
  prometheus::Family<prometheus::Gauge>& kv_total;
  prometheus::Family<prometheus::Histogram>& step_seconds;  // phase: prefill | decode
  prometheus::Family<prometheus::Counter>& steps;
  prometheus::Family<prometheus::Counter>& rejected;
  prometheus::Family<prometheus::Counter>& received_bytes;
  prometheus::Family<prometheus::Counter>& sent_bytes;
  std::shared_ptr<GpuCollector> gpus;  // null without an NVIDIA driver
};

// The limits of a Load, refused by name before anything is allocated:
// ranges inside the model, sizes no device reaches, and a KV cache (f32) plus
// one batch of activations that fit capacity - reserve (0 capacity: no check).
// On a `budgeted` device (a GPU, simulated or not) a kv_from_memory cache
// takes what is left, so only the workspace is checked here.
absl::Status CheckLoadLimits(const v1::LoadRequest& request, const ModelConfig& config,
                             int64_t capacity_bytes, int64_t reserve_bytes, bool budgeted = false);

// The log-probability of `token` under `logits` (log-softmax of the raw
// logits) and the `top_n` most likely tokens' (highest first, ties by id).
void FillLogprobs(std::span<const float> logits, int32_t token, int top_n, v1::TokenLogprobs* out);

class WorkerService final : public v1::Worker::Service {
 public:
  // `report` sends a StepResult to the coordinator; `set_serving` flips
  // health; `metrics` may be null.
  // `security` authorises callers (null: an insecure cluster).
  WorkerService(const WorkerOptions& options, std::function<bool(const v1::StepResult&)> report,
                std::function<void(bool)> set_serving, WorkerMetrics* metrics = nullptr,
                std::shared_ptr<const TransportSecurity> security = nullptr);
  ~WorkerService() override;

  grpc::Status Load(grpc::ServerContext* context, const v1::LoadRequest* request,
                    v1::LoadResponse* response) override;
  grpc::Status Forward(grpc::ServerContext* context, grpc::ServerReader<v1::Step>* reader,
                       v1::ForwardSummary* summary) override;
  grpc::Status Release(grpc::ServerContext* context, const v1::ReleaseRequest* request,
                       v1::ReleaseResponse* response) override;
  grpc::Status GetStatus(grpc::ServerContext* context, const v1::GetStatusRequest* request,
                         v1::WorkerStatus* response) override;

  void SetDraining();
  // The secret of the current attach session (Registered.session_token);
  // Load and Release must carry it. Empty: none accepted.
  void SetSessionToken(const std::string& token);
  // Fills the heartbeat's epoch and step progress.
  void FillHeartbeat(v1::Heartbeat* heartbeat);
  // Forgets the assignment (the coordinator no longer counts on it).
  void DropAssignment();

 private:
  // Runs one step; on success either forwards it or fills `result`.
  absl::Status RunStep(v1::Step& step, v1::StepResult* result, bool* forwarded);
  // Whether `token` is the current session's (constant time).
  bool SessionTokenMatches(const std::string& token);
  // Whether a Forward stream opened by `peer` with `token` may feed this
  // stage in the current epoch. Requires mu_.
  absl::Status CheckUpstream(const Identity& peer, const std::string& token) const;
  // debug_stall_step: holds the step until its stream is cancelled.
  void StallUntilCancelled(grpc::ServerContext* context);
  // Last stage: the log-probabilities of the prompt tokens a kAll chunk
  // predicts (its rows from `first_row` of out_.logits), into `result`.
  void FillPromptLogprobs(const v1::Chunk& chunk, int64_t first_row, v1::StepResult* result) const;
  void CloseNext();
  void SetPeerStage(Stage* stage);

  const WorkerOptions options_;
  const std::shared_ptr<const TransportSecurity> security_;
  std::mutex token_mu_;
  std::string session_token_;  // guarded by token_mu_
  std::condition_variable token_cv_;
  // This epoch's hop authorisation (guarded by mu_).
  std::string upstream_token_, downstream_token_, upstream_worker_id_;
  // Step progress this epoch, for the heartbeat (the coordinator's watchdog).
  std::atomic<uint64_t> heartbeat_epoch_{0}, last_step_received_{0}, last_step_done_{0};
  // The load in progress, for the heartbeat (total 0: none).
  std::atomic<int64_t> load_done_{0}, load_total_{0};
  std::atomic<double> load_rate_{0};
  std::atomic<int64_t> steps_received_total_{0};
  std::function<bool(const v1::StepResult&)> report_;
  std::function<void(bool)> set_serving_;
  WorkerMetrics* const metrics_;
  std::string model_label_;
  struct StepSeries {
    prometheus::Histogram* prefill_seconds = nullptr;
    prometheus::Histogram* decode_seconds = nullptr;
    prometheus::Counter* steps = nullptr;
    prometheus::Counter* received = nullptr;
    prometheus::Counter* sent = nullptr;
    prometheus::Gauge* kv_used = nullptr;
  } step_series_;  // bound at Load; null without metrics

  std::mutex mu_;
  v1::WorkerState state_ = v1::WORKER_STATE_STARTING;
  uint64_t epoch_ = 0;
  std::string error_;
  uint64_t steps_ = 0;
  double busy_seconds_ = 0;  // in RunStep
  uint64_t rejected_steps_ = 0;
  std::unique_ptr<Stage> stage_;
  std::string next_address_;
  std::unique_ptr<v1::Worker::Stub> next_stub_;
  std::unique_ptr<grpc::ClientContext> next_context_;
  v1::ForwardSummary next_summary_;
  std::unique_ptr<grpc::ClientWriter<v1::Step>> next_;
  // The downstream call, to cancel a write blocked on a hung next stage
  // without holding mu_ (which the blocked step holds).
  std::mutex next_cancel_mu_;
  grpc::ClientContext* next_cancel_ = nullptr;
  // The stage while it is in an NCCL peer group, so Load can abort a step
  // stuck on a dead peer without mu_. Guarded by next_cancel_mu_.
  Stage* peer_stage_ = nullptr;
  // This epoch's NCCL hops (see LoadRequest).
  bool recv_from_peer_ = false;
  bool send_to_peer_ = false;
  int peer_rank_ = -1;
  std::string loaded_key_;  // model, range and limits of the loaded stage
  // Last stage: every token each sequence has fed (for the repetition penalty).
  std::map<uint64_t, std::vector<int32_t>> history_;
  Sampler sampler_;
  StageBatch batch_;
  StageOutput out_;
  std::vector<float> hidden_in_;
  std::vector<float> banned_row_;  // a logits row with min_tokens' bans applied
};

}  // namespace strata

#endif  // STRATA_SERVICES_WORKER_WORKER_SERVICE_H_
