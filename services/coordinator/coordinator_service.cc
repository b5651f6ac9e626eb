#include "services/coordinator/coordinator_service.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "runtime/status_macros.h"
#include "services/common/convert.h"
#include "services/common/log.h"
#include "services/common/server.h"

namespace strata {

CoordinatorMetrics::CoordinatorMetrics(prometheus::Registry& r, const std::string& m)
    : model(m),
      epoch(prometheus::BuildGauge()
                .Name("strata_coordinator_map_epoch")
                .Help("Epoch of the current layer map")
                .Register(r)
                .Add({{"model", m}})),
      stages(prometheus::BuildGauge()
                 .Name("strata_coordinator_stages")
                 .Help("Stages of the current layer map (0: no map)")
                 .Register(r)
                 .Add({{"model", m}})),
      replicas(prometheus::BuildGauge()
                   .Name("strata_coordinator_replicas")
                   .Help("Pipeline replicas serving (each with its own map)")
                   .Register(r)
                   .Add({{"model", m}})),
      replica_epoch(prometheus::BuildGauge()
                        .Name("strata_coordinator_replica_epoch")
                        .Help("Epoch of each pipeline replica's layer map")
                        .Register(r)),
      replica_stages(prometheus::BuildGauge()
                         .Name("strata_coordinator_replica_stages")
                         .Help("Stages of each pipeline replica's map (0: no map)")
                         .Register(r)),
      replica_sequences(prometheus::BuildGauge()
                            .Name("strata_coordinator_replica_sequences")
                            .Help("Sequences of each replica by state: running or waiting")
                            .Register(r)),
      workers(prometheus::BuildGauge()
                  .Name("strata_coordinator_workers")
                  .Help("Known workers by state: serving, standby, backoff, lost")
                  .Register(r)),
      load_progress(prometheus::BuildGauge()
                        .Name("strata_coordinator_worker_load_progress")
                        .Help("Share of its weights a worker has read for the load in progress "
                              "(1: none in progress)")
                        .Register(r)),
      sequences(prometheus::BuildGauge()
                    .Name("strata_coordinator_sequences")
                    .Help("Sequences by state: running (holding KV) or waiting")
                    .Register(r)),
      failovers(prometheus::BuildCounter()
                    .Name("strata_coordinator_failovers_total")
                    .Help("Re-plans after the set of workers changed or a hop broke")
                    .Register(r)
                    .Add({{"model", m}})),
      replan_seconds(prometheus::BuildHistogram()
                         .Name("strata_coordinator_replan_duration_seconds")
                         .Help("From the start of a re-plan to the new map serving")
                         .Register(r)
                         .Add({{"model", m}}, LatencyBuckets())),
      queue_seconds(prometheus::BuildHistogram()
                        .Name("strata_coordinator_queue_time_seconds")
                        .Help("From submission to admission into the running batch")
                        .Register(r)
                        .Add({{"model", m}}, LatencyBuckets())),
      step_tokens(prometheus::BuildHistogram()
                      .Name("strata_coordinator_step_tokens")
                      .Help("Tokens per pipeline step")
                      .Register(r)
                      .Add({{"model", m}}, CountBuckets())),
      step_sequences(prometheus::BuildHistogram()
                         .Name("strata_coordinator_step_sequences")
                         .Help("Sequences per pipeline step (the batch size)")
                         .Register(r)
                         .Add({{"model", m}}, CountBuckets())) {}

CoordinatorService::CoordinatorService(const CoordinatorOptions& options, const ModelConfig& config,
                                       CoordinatorMetrics* metrics,
                                       std::shared_ptr<const TransportSecurity> security)
    : options_(options),
      security_(security != nullptr ? std::move(security) : TransportSecurity::Insecure()),
      config_(config),
      max_context_(options.max_context > 0
                       ? options.max_context
                       : std::min<int64_t>(config.max_position_embeddings, 8192)),
      metrics_(metrics),
      registry_(options) {
  // Replica 0 and its scheduler exist from the start, so requests that
  // arrive before the first map (say, resubmitted after a coordinator
  // restart) wait in its queue.
  replicas_.push_back(std::make_unique<Replica>(0, security_));
  replicas_[0]->scheduler = NewScheduler();
}

void CoordinatorService::NotifyAll() {
  cv_.notify_all();
  for (auto& r : replicas_) r->cv.notify_all();
}

std::unique_ptr<Scheduler> CoordinatorService::NewScheduler() const {
  SchedulerOptions so;
  so.max_sequences = options_.max_sequences;
  so.max_batch_tokens = options_.max_batch_tokens;
  so.max_decode_rows = DecodeRows(options_);
  so.max_context = max_context_;
  // One micro-batch per stage unless set; resolved once the map is known.
  so.max_inflight_steps = options_.max_inflight_steps > 0 ? options_.max_inflight_steps : 1;
  for (int64_t e : config_.eos_token_ids) so.eos_ids.push_back(static_cast<int32_t>(e));
  return std::make_unique<Scheduler>(so);
}

CoordinatorService::~CoordinatorService() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  NotifyAll();
  for (auto& r : replicas_) {
    if (r->pump.joinable()) r->pump.join();
  }
  if (control_.joinable()) control_.join();
}

grpc::Status CoordinatorService::Attach(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) {
  if (absl::Status st = Authorize(*context, *security_, {Role::kWorker}, "Coordinator.Attach");
      !st.ok()) {
    return ToGrpcStatus(st);
  }
  v1::WorkerMessage msg;
  if (!stream->Read(&msg)) return grpc::Status::OK;
  if (!msg.has_register_()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "attach: the first message must be `register`");
  }
  const v1::Register reg = msg.register_();  // a copy: msg is reused below
  const std::string session_token = RandomToken();
  const Identity peer = PeerIdentity(*context);
  std::optional<WorkerRegistry::Refusal> refusal;
  {
    std::lock_guard<std::mutex> lock(mu_);
    refusal = registry_.Register(reg, peer, security_->mutual(), draining_, context, session_token,
                                 Clock::now());
  }
  v1::CoordinatorMessage reply;
  if (refusal.has_value()) {
    Log(refusal->reason);
    reply.mutable_rejected()->set_reason(refusal->reason);
    stream->Write(reply);
    return grpc::Status(refusal->code, refusal->reason);
  }
  Log(absl::StrCat("worker ", reg.worker_id(), " registered from ", reg.address(), " (",
                   reg.device().name(), ", ", FormatBytes(reg.device().capacity_bytes()), ")"));
  NotifyAll();
  reply.mutable_registered()->set_heartbeat_ms(options_.heartbeat_ms);
  reply.mutable_registered()->set_session_token(session_token);
  stream->Write(reply);

  while (stream->Read(&msg)) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      WorkerRecord* w = registry_.Owned(reg.worker_id(), context);
      if (w == nullptr) break;  // cut off
      w->last_heard = Clock::now();
      if (msg.has_heartbeat()) HandleHeartbeatLocked(*w, msg.heartbeat());
      if (msg.has_drain() && !w->draining) {
        w->draining = true;
        Log(absl::StrCat("worker ", reg.worker_id(), " is draining; planning it out"));
        NotifyAll();
      }
    }
    if (msg.has_result()) HandleResult(reg.worker_id(), msg.result());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (WorkerRecord* w = registry_.Owned(reg.worker_id(), context)) {
      LoseWorkerLocked(*w,
                       "its attach stream ended (the process exited or the "
                       "connection broke)");
    }
  }
  NotifyAll();
  return grpc::Status::OK;
}

CoordinatorService::Replica* CoordinatorService::ReplicaOfLocked(const std::string& id) const {
  for (const auto& r : replicas_) {
    for (const auto& s : r->map.stages()) {
      if (s.worker_id() == id) return r.get();
    }
  }
  return nullptr;
}

bool CoordinatorService::InMapLocked(const std::string& id) const {
  return ReplicaOfLocked(id) != nullptr;
}

const char* CoordinatorService::StateLocked(const WorkerRecord& w, Clock::time_point now) const {
  return WorkerRegistry::State(w, InMapLocked(w.id), now);
}

void CoordinatorService::LoseWorkerLocked(WorkerRecord& w, const std::string& cause) {
  if (!registry_.Lose(w, Clock::now())) return;
  Replica* r = ReplicaOfLocked(w.id);
  Log(absl::StrCat("worker ", w.id, " at ", w.address, " lost: ", cause,
                   r != nullptr && !draining_
                       ? (fixed_layout() ? absl::StrCat("; replica ", r->index, " fails over")
                                         : std::string("; failing over"))
                       : ""));
  if (r != nullptr && !draining_) {
    last_failover_.Clear();
    last_failover_.set_worker_id(w.id);
    last_failover_.set_cause(cause);
    last_failover_.set_detected_unix_us(absl::ToUnixMicros(absl::Now()));
    r->serving = false;  // its pump stops at once; the control thread rebuilds it
    r->failover_pending = true;
  }
}

void CoordinatorService::HandleHeartbeatLocked(WorkerRecord& w, const v1::Heartbeat& heartbeat) {
  w.heartbeat_epoch = heartbeat.epoch();
  w.progress.last_received = heartbeat.last_step_received();
  w.progress.last_done = heartbeat.last_step_done();
  Replica* r = ReplicaOfLocked(w.id);
  // Progress counts only while a Load to it is under way (a heartbeat sent
  // before the load ended may arrive after it).
  w.load_done = w.loading ? heartbeat.load_done_bytes() : 0;
  w.load_total = w.loading ? heartbeat.load_total_bytes() : 0;
  w.load_rate = w.loading ? heartbeat.load_bytes_per_second() : 0;
  if (r == nullptr || !r->serving || heartbeat.epoch() == r->map.epoch()) return;
  // A stage of the map holding another epoch than the map's was loaded by
  // someone else (or lost its assignment): the pipeline through it is not
  // this map any more. An older epoch is tolerated for a few heartbeats,
  // since one sent before its Load finished may arrive after.
  const bool foreign = heartbeat.epoch() > last_epoch_;
  const bool stale = Clock::now() - r->serving_since >
                     std::chrono::milliseconds(5 * std::max(options_.heartbeat_ms, 20));
  if (!foreign && !stale) return;
  Log(absl::StrCat("worker ", w.id, " holds epoch ", heartbeat.epoch(), " but the map is epoch ",
                   r->map.epoch(), foreign ? " (an epoch this coordinator never assigned)" : "",
                   "; planning again"));
  r->force_rebuild = true;
  r->failover_pending = true;
  r->serving = false;
}

void CoordinatorService::HandleResult(const std::string& worker_id, const v1::StepResult& result) {
  std::vector<Emission> out;
  std::map<uint64_t, v1::TokenLogprobs> logprobs;
  std::vector<std::pair<uint64_t, v1::SessionEvent>> prompt_events;  // by session
  Replica* r = nullptr;
  bool draining = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    r = ReplicaOfLocked(worker_id);
    if (r == nullptr || result.epoch() != r->map.epoch() || !r->serving) return;
    draining = draining_;
    const v1::LayerMap& map = r->map;
    // Tokens come from the map's last stage only; a failure from any stage of it.
    const bool last = map.stages(map.stages_size() - 1).worker_id() == worker_id;
    if (!last && result.error_code() == 0) {
      Log(absl::StrCat("ignored a result for step ", result.step_id(), " from ", worker_id,
                       ", which is not the last stage of epoch ", map.epoch()));
      return;
    }
    Scheduler* scheduler = r->scheduler.get();
    double compute = 0;
    for (uint32_t us : result.compute_us()) compute += us;
    r->steps.Done(result.step_id(), compute, result.error_code() == 0, Clock::now());
    if (result.error_code() == grpc::StatusCode::UNAVAILABLE ||
        result.error_code() == grpc::StatusCode::CANCELLED) {
      // A hop broke (a worker died or was cut off): not the requests' fault.
      // Rebuild the pipeline and replay; the lost worker is detected apart.
      Log(absl::StrCat("step ", result.step_id(), ": ", result.error(), "; rebuilding"));
      r->force_rebuild = true;
      r->failover_pending = true;
      r->serving = false;
    } else if (result.error_code() != 0) {
      const absl::Status error(static_cast<absl::StatusCode>(result.error_code()), result.error());
      Log(absl::StrCat("step ", result.step_id(), " failed: ", error.ToString()));
      out = scheduler->OnStepFailed(result.step_id(), error);
    } else {
      // The prompt's log-probabilities first: they precede its first token,
      // which may also end the sequence.
      for (const v1::PromptLogprobs& p : result.prompt_logprobs()) {
        const auto target =
            scheduler->TakePromptLogprobs(p.seq_id(), p.first_position(), p.logprobs_size());
        if (!target.has_value()) continue;
        v1::SessionEvent event;
        event.set_request_id(target->request_id);
        event.set_epoch(result.epoch());
        for (int64_t i = target->skip; i < target->skip + target->count; ++i) {
          *event.add_prompt_logprobs() = p.logprobs(static_cast<int>(i));
        }
        prompt_events.emplace_back(target->session, std::move(event));
      }
      std::vector<std::pair<uint64_t, int32_t>> tokens;
      tokens.reserve(result.tokens_size());
      for (const auto& t : result.tokens()) {
        tokens.emplace_back(t.seq_id(), t.token_id());
        if (t.has_logprobs()) logprobs[t.seq_id()] = t.logprobs();
      }
      out = scheduler->OnResult(result.step_id(), tokens);
    }
  }
  // Only this replica's pump has a new step to send (a drain waits on cv_).
  r->cv.notify_one();
  if (draining) NotifyAll();
  for (const auto& [session, event] : prompt_events) sessions_.Send(session, event);
  sessions_.Deliver(std::move(out), /*admitted=*/false, &logprobs, result.epoch());
}

grpc::Status CoordinatorService::Session(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::SessionEvents, v1::GatewayMessage>* stream) {
  if (absl::Status st = Authorize(*context, *security_, {Role::kGateway}, "Coordinator.Session");
      !st.ok()) {
    return ToGrpcStatus(st);
  }
  const uint64_t id = sessions_.Open(stream);
  v1::GatewayMessage msg;
  while (stream->Read(&msg)) {
    if (msg.has_submit()) {
      HandleSubmit(id, msg.submit());
    } else if (msg.has_cancel()) {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& r : replicas_) r->scheduler->Cancel(id, msg.cancel().request_id());
      NotifyAll();
    }
  }
  sessions_.Close(id);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& r : replicas_) r->scheduler->CancelSession(id);
  NotifyAll();
  return grpc::Status::OK;
}

CoordinatorService::Replica* CoordinatorService::AdmitToLocked() const {
  Replica* best = nullptr;
  int64_t best_free = 0;
  for (const auto& r : replicas_) {
    if (!r->serving) continue;
    const Scheduler& s = *r->scheduler;
    const int64_t free = s.max_sequences() - s.running() - s.queued();
    if (best == nullptr || free > best_free) {
      best = r.get();
      best_free = free;
    }
  }
  return best;
}

void CoordinatorService::HandleSubmit(uint64_t session, const v1::Submit& submit) {
  absl::StatusOr<SequenceSpec> spec = SpecFromSubmit(session, submit, config_, max_context_);
  absl::Status error = spec.status();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (error.ok() && draining_) error = absl::UnavailableError("the cluster is draining");
    int64_t queued = 0;
    for (const auto& r : replicas_) queued += r->scheduler->queued();
    if (error.ok() && queued >= options_.max_queued) {
      error = absl::ResourceExhaustedError(absl::StrCat(
          "queue full: ", queued, " requests wait for a KV slot (the coordinator's --max-queued)"));
    }
    Replica* target = AdmitToLocked();
    if (error.ok() && target == nullptr) {
      // No replica serves: wait in one that is being built; refuse when
      // none can be.
      for (const auto& r : replicas_) {
        if (r->unavailable_reason.empty()) {
          target = r.get();
          break;
        }
      }
      if (target == nullptr) {
        error = absl::UnavailableError(
            absl::StrCat("no layer map fits the workers left: ", replicas_[0]->unavailable_reason));
      }
    }
    if (error.ok()) {
      target->scheduler->Submit(*std::move(spec));
      target->cv.notify_one();
      return;
    }
  }
  sessions_.Refuse(session, submit.request_id(), error);
}

grpc::Status CoordinatorService::GetClusterInfo(grpc::ServerContext* context,
                                                const v1::GetClusterInfoRequest* request,
                                                v1::ClusterInfo* response) {
  if (absl::Status st = Authorize(*context, *security_, {Role::kGateway, Role::kOperator},
                                  "Coordinator.GetClusterInfo");
      !st.ok()) {
    return ToGrpcStatus(st);
  }
  std::lock_guard<std::mutex> lock(mu_);
  *response->mutable_model() = ModelInfoLocked();
  bool serving = false;
  int64_t running = 0, queued = 0;
  for (const auto& r : replicas_) {
    serving = serving || r->serving;
    running += r->scheduler->running();
    queued += r->scheduler->queued();
  }
  response->set_serving(serving && !draining_);
  response->set_running(static_cast<int32_t>(running));
  response->set_queued(static_cast<int32_t>(queued));
  *response->mutable_last_failover() = last_failover_;
  // The pipeline statistics are replica 0's (each replica has the same shape).
  const Replica& first = *replicas_[0];
  first.steps.Fill(first.map.stages_size(), response->mutable_stats());
  if (request->reset_stats()) {
    for (auto& r : replicas_) r->steps.ResetWindow();
  }
  return grpc::Status::OK;
}

v1::ModelInfo CoordinatorService::ModelInfoLocked() const {
  v1::ModelInfo info;
  info.set_model(options_.model_dir);
  info.set_architecture(config_.architecture);
  info.set_num_layers(static_cast<int32_t>(config_.num_layers));
  info.set_context_length(max_context_);
  info.set_vocab_size(static_cast<int32_t>(config_.vocab_size));
  info.set_hidden_size(static_cast<int32_t>(config_.hidden_size));
  for (int64_t e : config_.eos_token_ids) info.add_eos_token_ids(static_cast<int32_t>(e));
  info.set_bos_token_id(static_cast<int32_t>(config_.bos_token_id.value_or(-1)));
  *info.mutable_layer_map() = replicas_[0]->map;
  for (const auto& r : replicas_) *info.add_replicas() = r->map;
  info.set_failovers(failovers_);
  info.set_unavailable_reason(replicas_[0]->unavailable_reason);
  const auto now = Clock::now();
  for (const auto& [id, w] : registry_.workers()) {
    v1::WorkerHealth* h = info.add_workers();
    h->set_worker_id(id);
    h->set_address(w.address);
    h->set_failures(w.failures);
    h->set_state(StateLocked(w, now));
    h->set_load_done_bytes(w.load_done);
    h->set_load_total_bytes(w.load_total);
    h->set_load_bytes_per_second(w.load_rate);
  }
  return info;
}

absl::Status CoordinatorService::WaitForWorkers(int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  auto connected = [&] {
    return std::count_if(registry_.workers().begin(), registry_.workers().end(),
                         [](const auto& w) { return w.second.connected; });
  };
  const bool all = cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                [&] { return connected() >= options_.workers; });
  if (all) return absl::OkStatus();
  std::string seen;
  for (const auto& [id, w] : registry_.workers()) {
    if (w.connected) absl::StrAppend(&seen, seen.empty() ? "" : ", ", id, " at ", w.address);
  }
  return absl::DeadlineExceededError(absl::StrFormat(
      "startup: %d of %d workers registered within %.1f s (registered: %s); start the missing "
      "workers with --coordinator pointing here, or lower --workers",
      connected(), options_.workers, timeout_ms / 1000.0, seen.empty() ? "none" : seen));
}

void CoordinatorService::UpdateGaugesLocked() {
  if (metrics_ == nullptr) return;
  int stages = 0, replicas = 0;
  int64_t running = 0, waiting = 0;
  for (const auto& r : replicas_) {
    stages += r->map.stages_size();
    replicas += r->serving ? 1 : 0;
    running += r->scheduler->running();
    waiting += r->scheduler->queued();
    const std::string index = std::to_string(r->index);
    const std::string& m = metrics_->model;
    metrics_->replica_epoch.Add({{"model", m}, {"replica", index}})
        .Set(static_cast<double>(r->map.epoch()));
    metrics_->replica_stages.Add({{"model", m}, {"replica", index}}).Set(r->map.stages_size());
    metrics_->replica_sequences.Add({{"model", m}, {"replica", index}, {"state", "running"}})
        .Set(static_cast<double>(r->scheduler->running()));
    metrics_->replica_sequences.Add({{"model", m}, {"replica", index}, {"state", "waiting"}})
        .Set(static_cast<double>(r->scheduler->queued()));
  }
  metrics_->epoch.Set(static_cast<double>(last_epoch_));
  metrics_->stages.Set(stages);
  metrics_->replicas.Set(replicas);
  std::map<std::string, int> by_state = {
      {"serving", 0}, {"standby", 0}, {"backoff", 0}, {"lost", 0}, {"drained", 0}};
  const auto now = Clock::now();
  for (const auto& [id, w] : registry_.workers()) {
    ++by_state[StateLocked(w, now)];
    metrics_->load_progress.Add({{"model", metrics_->model}, {"worker", id}})
        .Set(w.load_total > 0 ? static_cast<double>(w.load_done) / static_cast<double>(w.load_total)
                              : 1.0);
  }
  for (const auto& [state, n] : by_state) {
    metrics_->workers.Add({{"model", metrics_->model}, {"state", state}}).Set(n);
  }
  metrics_->sequences.Add({{"model", metrics_->model}, {"state", "running"}})
      .Set(static_cast<double>(running));
  metrics_->sequences.Add({{"model", metrics_->model}, {"state", "waiting"}})
      .Set(static_cast<double>(waiting));
}

void CoordinatorService::ControlLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::milliseconds(20));
    UpdateGaugesLocked();
    if (stopping_ || draining_) continue;
    const auto now = Clock::now();
    // Heartbeat deadlines: a worker that says nothing is hung or stopped.
    for (auto& [id, w] : registry_.workers()) {
      if (w.connected &&
          now - w.last_heard > std::chrono::milliseconds(options_.heartbeat_timeout_ms)) {
        if (w.context != nullptr) w.context->TryCancel();
        LoseWorkerLocked(w, absl::StrCat("no heartbeat for ", options_.heartbeat_timeout_ms,
                                         " ms (hung or stopped)"));
      }
    }
    for (auto& r : replicas_) CheckStepWatchdogLocked(*r, now);
    PruneLocked(now);
    AssignSparesLocked(now);
    std::vector<Replica*> due;
    for (auto& r : replicas_) {
      if (NeedsReplanLocked(*r, now) || r->force_rebuild) due.push_back(r.get());
    }
    // A draining worker that no map uses any more may go: end its stream.
    for (auto& [id, w] : registry_.workers()) {
      if (!due.empty() || !w.draining || !w.connected) continue;
      if (!InMapLocked(id) && w.context != nullptr) {
        Log(absl::StrCat("worker ", id, " drained: released"));
        w.context->TryCancel();
        w.context = nullptr;
        w.connected = false;
        w.lost_at = now;
      }
    }
    // Re-plan each replica whose usable workers differ from those of its last
    // plan (a loss, a re-admission, a back-off that ran out, a drain) or whose
    // hop broke; the other replicas serve on meanwhile.
    for (Replica* r : due) {
      lock.unlock();
      absl::Status error;
      Rebuild(*r, r->force_rebuild ? "a hop of the pipeline broke" : "the set of workers changed",
              /*startup=*/false, &error);
      lock.lock();
      if (stopping_ || draining_) break;
    }
  }
}

void CoordinatorService::PruneLocked(Clock::time_point now) {
  // A lost worker a map, a plan or a replica's membership still names is kept.
  registry_.Prune(
      [this](const std::string& id) {
        for (const auto& r : replicas_) {
          if (r->planned.count(id) > 0) return true;
        }
        return InMapLocked(id);
      },
      now);
}

void CoordinatorService::CheckStepWatchdogLocked(Replica& r, Clock::time_point now) {
  const auto oldest = r.steps.Oldest();
  if (!r.serving || !oldest.has_value() || r.map.stages_size() == 0) return;
  const auto [step_id, sent_at] = *oldest;
  const auto age_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - sent_at).count();
  if (age_ms < options_.step_watchdog_ms) return;
  std::vector<double> latency = r.steps.Latencies();
  const WatchdogOptions wo{options_.step_watchdog_ms, options_.step_watchdog_factor};
  const int64_t deadline_ms = StepDeadlineMs(wo, std::move(latency));
  if (age_ms < deadline_ms) return;
  std::vector<StageProgress> progress;
  for (const v1::StageInfo& s : r.map.stages()) {
    auto it = registry_.workers().find(s.worker_id());
    progress.push_back(it != registry_.workers().end() ? it->second.progress
                                                       : StageProgress{s.worker_id(), 0, 0});
  }
  const int blamed = BlameStage(progress, step_id);
  const StageProgress& p = progress[blamed];
  auto it = registry_.workers().find(p.worker_id);
  const std::string cause = absl::StrFormat(
      "step watchdog: step %d has been in the pipeline for %d ms (deadline %d ms); stage %d "
      "last received step %d and finished step %d",
      step_id, age_ms, deadline_ms, blamed, p.last_received, p.last_done);
  if (it == registry_.workers().end() || !it->second.connected) {
    r.force_rebuild = true;
    r.failover_pending = true;
    r.serving = false;
    Log(cause);
    return;
  }
  if (it->second.context != nullptr) it->second.context->TryCancel();
  LoseWorkerLocked(it->second, cause);
}

void CoordinatorService::PumpLoop(Replica* r) {
  v1::Step msg;
  while (true) {
    std::optional<PlannedStep> step;
    std::vector<Scheduler::Admission> admitted;
    uint64_t epoch = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      r->cv.wait(lock, [&] {
        if (stopping_) return true;
        if (!r->serving) return false;
        step = r->scheduler->NextStep();
        return step.has_value();
      });
      if (stopping_) break;
      const auto now = Clock::now();
      r->steps.Sent(step->step_id, now);
      epoch = r->map.epoch();
      admitted = r->scheduler->TakeAdmissions();
      if (metrics_ != nullptr) {
        for (const auto& a : admitted) {
          metrics_->queue_seconds.Observe(std::chrono::duration<double>(now - a.submitted).count());
        }
        int64_t tokens = 0;
        for (const PlannedChunk& c : step->chunks)
          tokens += static_cast<int64_t>(c.token_ids.size());
        if (!step->chunks.empty()) {
          metrics_->step_tokens.Observe(static_cast<double>(tokens));
          metrics_->step_sequences.Observe(static_cast<double>(step->chunks.size()));
        }
      }
    }
    // Tell each admitted request's gateway (its queue-time metric).
    std::vector<Emission> notices;
    for (const auto& a : admitted) {
      notices.push_back({a.session, a.request_id, {}, Finish::kNone, absl::OkStatus()});
    }
    if (!notices.empty()) sessions_.Deliver(std::move(notices), /*admitted=*/true);
    StepToProto(*step, epoch, &msg);
    const bool written = r->stage0.Write(msg);
    if (!written) {
      std::lock_guard<std::mutex> lock(mu_);
      if (r->serving && r->map.epoch() == epoch) {
        Log("the stream to stage 0 broke; rebuilding");
        r->force_rebuild = true;
        r->serving = false;
      }
    }
  }
}

void CoordinatorService::Drain(int timeout_ms) {
  // Every replica is done: idle, or without a pipeline to finish on.
  auto all = [&](auto done) {
    for (const auto& r : replicas_) {
      if (!done(*r)) return false;
    }
    return true;
  };
  {
    std::unique_lock<std::mutex> lock(mu_);
    draining_ = true;
    int64_t open = 0;
    for (const auto& r : replicas_) open += r->scheduler->running() + r->scheduler->queued();
    Log(absl::StrCat("draining: ", open, " request(s) to finish"));
    cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
      return all([](const Replica& r) { return r.scheduler->idle() || !r.serving; });
    });
  }
  std::vector<Emission> cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& r : replicas_) {
      std::vector<Emission> more = r->scheduler->CancelAll();
      cancelled.insert(cancelled.end(), more.begin(), more.end());
    }
  }
  if (!cancelled.empty()) Log(absl::StrCat("drain deadline: cancelled ", cancelled.size()));
  sessions_.Deliver(std::move(cancelled));
  {
    // Give in-flight steps a moment to come back so their KV is dropped.
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(2), [&] {
      return all([](const Replica& r) { return r.scheduler->inflight_steps() == 0 || !r.serving; });
    });
    stopping_ = true;
  }
  NotifyAll();
  for (auto& r : replicas_) {
    if (r->pump.joinable()) r->pump.join();
  }
  if (control_.joinable()) control_.join();
  for (auto& r : replicas_) r->stage0.Close();
  // End the workers' attach streams so the server stops without waiting out
  // its grace period for them.
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, w] : registry_.workers()) {
    if (w.context != nullptr) w.context->TryCancel();
  }
}

}  // namespace strata
