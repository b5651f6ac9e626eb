#include "services/coordinator/coordinator_service.h"

#include <algorithm>
#include <cctype>
#include <future>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "runtime/status_macros.h"
#include "services/common/convert.h"
#include "services/common/log.h"
#include "services/common/server.h"
#include "services/coordinator/layout.h"

namespace strata {
namespace {

constexpr int kHeartbeatMs = 1000;

// "worker-2" < "worker-10": compare the text, then a trailing number by value.
bool NaturalLess(const std::string& a, const std::string& b) {
  auto split = [](const std::string& s) {
    size_t i = s.size();
    while (i > 0 && std::isdigit(static_cast<unsigned char>(s[i - 1]))) --i;
    return std::make_pair(s.substr(0, i), s.substr(i));
  };
  auto [pa, na] = split(a);
  auto [pb, nb] = split(b);
  if (pa != pb) return pa < pb;
  if (na.size() != nb.size()) return na.size() < nb.size();
  return na < nb;
}

}  // namespace

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

std::unique_ptr<Scheduler> CoordinatorService::NewScheduler() const {
  SchedulerOptions so;
  so.max_sequences = options_.max_sequences;
  so.max_batch_tokens = options_.max_batch_tokens;
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
  cv_.notify_all();
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
  cv_.notify_all();
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
        cv_.notify_all();
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
  cv_.notify_all();
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
  w.load_done = heartbeat.load_done_bytes();
  w.load_total = heartbeat.load_total_bytes();
  w.load_rate = heartbeat.load_bytes_per_second();
  Replica* r = ReplicaOfLocked(w.id);
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
  {
    std::lock_guard<std::mutex> lock(mu_);
    Replica* r = ReplicaOfLocked(worker_id);
    if (r == nullptr || result.epoch() != r->map.epoch() || !r->serving) return;
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
  cv_.notify_all();
  for (const auto& [session, event] : prompt_events) sessions_.Send(session, event);
  sessions_.Deliver(std::move(out), /*admitted=*/false, &logprobs, result.epoch());
}

grpc::Status CoordinatorService::Session(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::SessionEvent, v1::GatewayMessage>* stream) {
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
      cv_.notify_all();
    }
  }
  sessions_.Close(id);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& r : replicas_) r->scheduler->CancelSession(id);
  cv_.notify_all();
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
      cv_.notify_all();
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

std::set<std::string> CoordinatorService::EligibleLocked(Clock::time_point now) const {
  return registry_.Eligible([this](const std::string& id) { return InMapLocked(id); }, started_,
                            now);
}

std::set<std::string> CoordinatorService::EligibleForLocked(const Replica& r,
                                                            Clock::time_point now) const {
  std::set<std::string> eligible = EligibleLocked(now);
  if (!fixed_layout()) return eligible;
  std::set<std::string> mine;
  for (const std::string& id : r.members) {
    if (eligible.count(id) > 0) mine.insert(id);
  }
  return mine;
}

void CoordinatorService::AssignSparesLocked(Clock::time_point now) {
  if (!fixed_layout()) return;
  // Members the registry forgot are gone for good.
  for (auto& r : replicas_) {
    std::erase_if(r->members,
                  [&](const std::string& id) { return registry_.workers().count(id) == 0; });
  }
  std::set<std::string> spares = EligibleLocked(now);
  for (const auto& r : replicas_) {
    for (const std::string& id : r->members) spares.erase(id);
  }
  const std::set<std::string> eligible = EligibleLocked(now);
  for (auto& r : replicas_) {
    if (spares.empty()) return;
    // A member that is lost or backing off gives its place to a spare.
    std::vector<std::string> out;
    for (const std::string& id : r->members) {
      if (eligible.count(id) == 0) out.push_back(id);
    }
    int64_t short_of = stages_per_replica_ - static_cast<int64_t>(r->members.size() - out.size());
    for (auto it = spares.begin(); it != spares.end() && short_of > 0; --short_of) {
      if (!out.empty()) {
        r->members.erase(out.back());
        out.pop_back();
      }
      Log(absl::StrCat("spare worker ", *it, " joins replica ", r->index));
      r->members.insert(*it);
      it = spares.erase(it);
    }
  }
}

void CoordinatorService::HandOverLocked(Replica& from) {
  Replica* to = AdmitToLocked();
  if (to == nullptr || to == &from) return;
  std::vector<Scheduler::Sequence> moved = from.scheduler->TakeAll();
  if (moved.empty()) return;
  Log(absl::StrCat("replica ", from.index, " has no map: its ", moved.size(),
                   " sequence(s) continue on replica ", to->index));
  to->scheduler->Adopt(std::move(moved));
  cv_.notify_all();
}

absl::Status CoordinatorService::PlanAndLoad(Replica& r, uint64_t epoch,
                                             std::vector<WorkerRecord> workers, v1::LayerMap* map,
                                             std::string* failed_worker,
                                             std::string* stage0_token) {
  if (workers.empty()) return absl::UnavailableError("no worker is attached");
  std::sort(workers.begin(), workers.end(),
            [](const WorkerRecord& a, const WorkerRecord& b) { return NaturalLess(a.id, b.id); });
  std::vector<DeviceSpec> devices;
  for (const WorkerRecord& w : workers) {
    devices.push_back({absl::StrCat(w.id, "/", w.device.name()), w.device.capacity_bytes(),
                       w.device.reserve_bytes(), w.device.speed() > 0 ? w.device.speed() : 1.0});
  }
  // The planned KV budget; halved while the layers do not fit (a degraded
  // map serves fewer sequences at once rather than none).
  int64_t budget_sequences = options_.max_sequences;
  Plan plan;
  PlanInput input;
  while (true) {
    BudgetOptions budget;
    budget.concurrency = budget_sequences;
    budget.context = max_context_;
    budget.max_batch_tokens = options_.max_batch_tokens;
    ASSIGN_OR_RETURN(input, PlanInputForModel(options_.model_dir, config_, devices, budget));
    absl::StatusOr<Plan> planned;
    if (options_.layers.empty() || fixed_layout()) {
      planned = PlanPlacement(input);
    } else {
      auto ranges = ParseLayerRanges(options_.layers, config_.num_layers);
      if (!ranges.ok()) return ranges.status();
      if (ranges->size() != workers.size()) {
        return absl::FailedPreconditionError(
            absl::StrCat("--layers gives ", ranges->size(), " stages but ", workers.size(),
                         " worker(s) are attached; a manual split cannot be re-planned"));
      }
      planned = PlanFromRanges(input, *ranges);
    }
    if (planned.ok()) {
      plan = *std::move(planned);
      break;
    }
    if (planned.status().code() != absl::StatusCode::kFailedPrecondition || budget_sequences == 1) {
      return planned.status();
    }
    budget_sequences /= 2;
  }

  map->Clear();
  map->set_epoch(epoch);
  for (const StagePlan& s : plan.stages) {
    const WorkerRecord& w = workers[s.device];
    v1::StageInfo* info = map->add_stages();
    info->set_stage(s.device);
    info->set_worker_id(w.id);
    info->set_address(w.address);
    info->set_layer_begin(static_cast<int32_t>(s.begin));
    info->set_layer_end(static_cast<int32_t>(s.end));
    info->set_embeds(s.begin == 0);
    info->set_samples(s.end == config_.num_layers);
    info->set_weight_bytes(s.weight_bytes);
    info->set_kv_bytes(s.kv_bytes);
    info->set_device(w.device.name());
    info->set_reason(s.reason);
  }

  // Hops between distinct GPUs of one host carry hidden states by NCCL; this
  // process hosts the group's bootstrap. Without NCCL every hop stays gRPC.
  std::vector<PeerCandidate> candidates;
  for (const v1::StageInfo& s : map->stages()) {
    const v1::Device& d = workers[s.stage()].device;
    candidates.push_back({d.host(), d.uuid(), d.peer_transport()});
  }
  PeerLinks links = PlanPeerLinks(candidates);
  std::string peer_group_id;
  if (links.size > 0 && !peer_transport_disabled_) {
    auto id = NewPeerGroupId();
    if (id.ok()) {
      peer_group_id = *std::move(id);
      Log(absl::StrCat("epoch ", epoch, ": ", links.size, " workers move hidden states by NCCL"));
    } else {
      Log(absl::StrCat("hops stay on gRPC: ", id.status().message()));
      peer_transport_disabled_ = true;
    }
  }

  // Load every stage at once; each returns when its layers are in memory.
  struct LoadOutcome {
    absl::Status status;
    std::string worker;
  };
  std::vector<std::future<LoadOutcome>> loads;
  // hop_tokens[i] admits the stream into stage i (from the coordinator for 0).
  std::vector<std::string> hop_tokens;
  for (int i = 0; i < map->stages_size(); ++i) hop_tokens.push_back(RandomToken());
  *stage0_token = hop_tokens[0];
  for (int i = 0; i < map->stages_size(); ++i) {
    v1::LoadRequest req;
    const v1::StageInfo& s = map->stages(i);
    req.set_epoch(epoch);
    req.set_model_dir(options_.model_dir);
    req.set_layer_begin(s.layer_begin());
    req.set_layer_end(s.layer_end());
    req.set_stage(i);
    if (i + 1 < map->stages_size()) req.set_next_address(map->stages(i + 1).address());
    req.set_max_batch_tokens(options_.max_batch_tokens);
    req.set_max_context(max_context_);
    req.set_max_sequences(budget_sequences);
    req.set_session_token(workers[s.stage()].session_token);
    req.set_upstream_token(hop_tokens[i]);
    if (i + 1 < map->stages_size()) req.set_downstream_token(hop_tokens[i + 1]);
    if (i > 0) req.set_upstream_worker_id(map->stages(i - 1).worker_id());
    if (!peer_group_id.empty() && links.rank[i] >= 0) {
      req.set_peer_group_id(peer_group_id);
      req.set_peer_rank(links.rank[i]);
      req.set_peer_group_size(links.size);
      req.set_send_to_peer(links.send[i]);
      req.set_recv_from_peer(links.recv(i));
    }
    // A worker that cannot reach its next stage points at that stage.
    const std::string next_worker =
        i + 1 < map->stages_size() ? map->stages(i + 1).worker_id() : std::string();
    loads.push_back(std::async(std::launch::async, [req, s, next_worker, this]() -> LoadOutcome {
      auto stub = v1::Worker::NewStub(Dial(s.address(), security_.get()));
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(options_.startup_timeout_ms));
      v1::LoadResponse resp;
      absl::Status st = FromGrpcStatus(stub->Load(&ctx, req, &resp));
      if (!st.ok()) {
        return {absl::Status(st.code(), absl::StrCat("loading layers ", req.layer_begin(), "-",
                                                     req.layer_end() - 1, " on ", s.worker_id(),
                                                     " at ", s.address(), ": ", st.message())),
                st.code() == absl::StatusCode::kUnavailable && !next_worker.empty() &&
                        absl::StrContains(st.message(), "next stage")
                    ? next_worker
                    : s.worker_id()};
      }
      Log(absl::StrFormat("%s loaded layers [%d, %d) for epoch %d in %.3f s (%s)", s.worker_id(),
                          req.layer_begin(), req.layer_end(), req.epoch(), resp.load_seconds(),
                          FormatBytes(resp.weight_bytes())));
      return {absl::OkStatus(), s.worker_id()};
    }));
  }
  absl::Status first_error;
  bool peer_failure = false;
  for (auto& f : loads) {
    LoadOutcome o = f.get();
    peer_failure |= absl::StrContains(o.status.message(), kPeerGroupError);
    if (first_error.ok() && !o.status.ok()) {
      first_error = o.status;
      *failed_worker = o.worker;
    }
  }
  if (peer_failure) {
    // No worker is to blame for a group that did not form; plan again over gRPC.
    Log(absl::StrCat("NCCL peer group failed; hops use gRPC from now on: ", first_error.message()));
    peer_transport_disabled_ = true;
    failed_worker->clear();
  }
  RETURN_IF_ERROR(first_error);
  std::lock_guard<std::mutex> lock(mu_);
  if (budget_sequences != r.scheduler->max_sequences()) {
    Log(absl::StrCat("KV budget now ", budget_sequences, " sequences (was ",
                     r.scheduler->max_sequences(), ")",
                     fixed_layout() ? absl::StrCat(" on replica ", r.index) : ""));
    r.scheduler->SetMaxSequences(budget_sequences);
  }
  return absl::OkStatus();
}

std::string CoordinatorService::DescribeMap() const {
  std::lock_guard<std::mutex> lock(mu_);
  return DescribeMapLocked();
}

std::string CoordinatorService::DescribeMapLocked() const {
  std::string out;
  for (const auto& r : replicas_) {
    if (fixed_layout()) {
      absl::StrAppend(&out, "replica ", r->index, ", ");
      if (r->map.stages_size() == 0) {
        absl::StrAppend(&out, "no map: ", r->unavailable_reason, "\n");
        continue;
      }
    }
    absl::StrAppend(&out, "layer map, epoch ", r->map.epoch(), ":\n");
    for (const auto& s : r->map.stages()) {
      absl::StrAppendFormat(&out, "  stage %d  %-10s %-21s layers %d-%d  %s\n", s.stage(),
                            s.worker_id(), s.address(), s.layer_begin(), s.layer_end() - 1,
                            s.reason());
    }
  }
  return out;
}

void CoordinatorService::ChooseLayoutLocked() {
  const int requested = options_.replicas;
  if (requested == 1) return;  // one pipeline over every worker
  std::vector<std::string> ids;
  for (const std::string& id : EligibleLocked(Clock::now())) ids.push_back(id);
  std::sort(ids.begin(), ids.end(), NaturalLess);
  if (ids.size() < 2) return;
  std::vector<DeviceSpec> devices;
  for (const std::string& id : ids) {
    const v1::Device& d = registry_.workers().at(id).device;
    DeviceSpec spec{absl::StrCat(id, "/", d.name()), d.capacity_bytes(), d.reserve_bytes(),
                    d.speed() > 0 ? d.speed() : 1.0};
    devices.push_back(spec);
  }
  int replicas = requested, stages = 0;
  std::string why;
  if (requested == 0) {
    // The layout search decides.
    BudgetOptions budget;
    budget.concurrency = options_.max_sequences;
    budget.context = max_context_;
    budget.max_batch_tokens = options_.max_batch_tokens;
    absl::StatusOr<PlanInput> input =
        PlanInputForModel(options_.model_dir, config_, devices, budget);
    LayoutOptions lo;
    lo.max_sequences = options_.max_sequences;
    absl::StatusOr<Layout> layout =
        input.ok() ? PlanLayout(*input, lo) : absl::StatusOr<Layout>(input.status());
    if (!layout.ok()) {
      Log(absl::StrCat("layout search: ", layout.status().message(), "; one pipeline"));
      return;
    }
    replicas = static_cast<int>(layout->replicas.size());
    stages = layout->stages;
    why =
        absl::StrFormat(" (the layout search: %.0f tokens/s modelled)", layout->tokens_per_second);
  } else {
    stages = static_cast<int>(ids.size()) / requested;
    if (stages < 1) {
      Log(absl::StrCat("--replicas ", requested, " with ", ids.size(),
                       " worker(s): one replica per worker"));
      replicas = static_cast<int>(ids.size());
      stages = 1;
    }
  }
  if (replicas <= 1) return;
  stages_per_replica_ = stages;
  while (static_cast<int>(replicas_.size()) < replicas) {
    replicas_.push_back(std::make_unique<Replica>(static_cast<int>(replicas_.size()), security_));
    replicas_.back()->scheduler = NewScheduler();
  }
  for (int r = 0; r < replicas; ++r) {
    for (int k = 0; k < stages; ++k) replicas_[r]->members.insert(ids[r * stages + k]);
  }
  Log(absl::StrCat("layout: ", replicas, " replica(s) x ", stages, " stage(s)", why,
                   ids.size() > static_cast<size_t>(replicas * stages)
                       ? absl::StrCat("; ", ids.size() - replicas * stages, " spare(s)")
                       : ""));
}

absl::Status CoordinatorService::Start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ChooseLayoutLocked();
  }
  for (auto& r : replicas_) {
    absl::Status error;
    if (!Rebuild(*r, "startup", /*startup=*/true, &error)) return error;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    started_ = true;
  }
  for (auto& r : replicas_) {
    Replica* replica = r.get();
    r->pump = std::thread([this, replica] { PumpLoop(replica); });
  }
  control_ = std::thread([this] { ControlLoop(); });
  return absl::OkStatus();
}

bool CoordinatorService::Rebuild(Replica& r, const std::string& cause, bool startup,
                                 absl::Status* error) {
  const auto started = Clock::now();
  const std::string who = fixed_layout() ? absl::StrCat("replica ", r.index, ": ") : "";
  while (true) {
    std::vector<WorkerRecord> workers;
    uint64_t epoch = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      r.serving = false;
      r.force_rebuild = false;
      epoch = ++last_epoch_;
      r.scheduler->Rewind();
      r.steps.ForgetInFlight();
      r.planned = EligibleForLocked(r, Clock::now());
      for (const std::string& id : r.planned) workers.push_back(registry_.workers().at(id));
    }
    r.stage0.Close();
    if (!startup) {
      Log(absl::StrCat(who, "re-planning as epoch ", epoch, " over ", workers.size(),
                       " worker(s): ", cause));
    }
    v1::LayerMap map;
    std::string failed, stage0_token;
    const bool peers_were_enabled = !peer_transport_disabled_;
    absl::Status st = PlanAndLoad(r, epoch, workers, &map, &failed, &stage0_token);
    std::lock_guard<std::mutex> lock(mu_);
    if (!st.ok() && peers_were_enabled && peer_transport_disabled_) continue;
    if (!st.ok() && !startup && EligibleForLocked(r, Clock::now()) != r.planned) {
      continue;  // a worker left (or came) while loading: that explains it; plan again
    }
    if (!st.ok() && !failed.empty() && !startup) {
      // A worker that cannot load its range (or that its predecessor cannot
      // reach) counts as failed; plan without it.
      auto it = registry_.workers().find(failed);
      if (it != registry_.workers().end()) {
        if (it->second.context != nullptr) it->second.context->TryCancel();
        LoseWorkerLocked(it->second, absl::StrCat("it failed to load: ", st.message()));
      }
      continue;
    }
    if (st.ok() && EligibleForLocked(r, Clock::now()) != r.planned && !startup) {
      continue;  // membership changed while loading: plan again
    }
    if (!st.ok()) {
      *error = st;
      r.map.clear_stages();
      r.map.set_epoch(epoch);
      r.unavailable_reason = std::string(st.message());
      Log(absl::StrCat(who, "no layer map: ", st.message(),
                       fixed_layout() ? "; its sequences move to a serving replica"
                                      : "; new requests get UNAVAILABLE, running ones wait for a "
                                        "worker"));
      if (fixed_layout()) HandOverLocked(r);
      return false;
    }
    r.map = map;
    r.unavailable_reason.clear();
    const std::string first = r.map.stages(0).address();
    if (options_.max_inflight_steps == 0) {
      r.scheduler->set_max_inflight_steps(r.map.stages_size());
    }
    if (!startup && r.failover_pending) {
      // Only a re-plan that replaced a lost stage (or a broken hop) is a
      // failover; a worker joining or a standby leaving is not.
      ++failovers_;
      r.failover_pending = false;
      if (metrics_ != nullptr) {
        metrics_->failovers.Increment();
        metrics_->replan_seconds.Observe(
            std::chrono::duration<double>(Clock::now() - started).count());
      }
      if (last_failover_.detected_unix_us() != 0 && last_failover_.map_ready_unix_us() == 0) {
        last_failover_.set_map_ready_unix_us(absl::ToUnixMicros(absl::Now()));
        last_failover_.set_epoch(epoch);
      }
    }
    // Open stage 0 without mu_ (the pump may be waiting on a write), then serve.
    mu_.unlock();
    r.stage0.Open(first, stage0_token);
    mu_.lock();
    r.serving = true;
    if (!startup) started_ = true;
    r.serving_since = Clock::now();
    cv_.notify_all();
    if (!startup) Log(DescribeMapLocked());
    return true;
  }
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

bool CoordinatorService::NeedsReplanLocked(Replica& r, Clock::time_point now) {
  const std::set<std::string> eligible = EligibleForLocked(r, now);
  auto in_map = [&](const std::string& id) {
    for (const auto& s : r.map.stages()) {
      if (s.worker_id() == id) return true;
    }
    return false;
  };
  for (const std::string& id : eligible) {
    if (r.planned.count(id) == 0) return true;  // one to take in
  }
  for (const std::string& id : r.planned) {
    if (eligible.count(id) == 0 && in_map(id)) return true;  // a stage gone
  }
  // A replica without a map tries again once it has a worker.
  if (r.map.stages_size() == 0 && !r.unavailable_reason.empty() && !eligible.empty() &&
      eligible != r.planned) {
    return true;
  }
  // Standbys that left change nothing that serves: forget them quietly.
  for (auto it = r.planned.begin(); it != r.planned.end();) {
    it = eligible.count(*it) == 0 ? r.planned.erase(it) : std::next(it);
  }
  return false;
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
      cv_.wait(lock, [&] {
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
  cv_.notify_all();
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
