// The coordinator's layout manager: which workers form which replica, and
// for each replica its plan, its loads, its epochs and its failover. The
// service's RPCs, pumps and control loop are in coordinator_service.cc.
#include <algorithm>
#include <future>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "runtime/backend/socket_link.h"
#include "runtime/status_macros.h"
#include "services/common/convert.h"
#include "services/common/log.h"
#include "services/common/server.h"
#include "services/coordinator/coordinator_service.h"
#include "services/coordinator/layout.h"

namespace strata {
namespace {

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

// Replicas a coordinator forms at most (each has a pump thread).
constexpr size_t kMaxReplicas = 256;

// With a load to plan for, a pipeline's cuts balance its prompts' prefill
// beside its decode (the layout search's step model) rather than only the
// bytes a decode step reads. The bytes-only plan stays where that model
// finds no split, where the cuts do not pass the same memory checks, and
// where it keeps the embedding table in host memory.
Plan CutsForLoad(const PlanInput& input, Plan by_bytes, const CoordinatorOptions& options) {
  if (by_bytes.host_embedding) return by_bytes;
  LayoutOptions lo;
  lo.replicas = 1;
  lo.stages = static_cast<int>(input.devices.size());
  lo.max_sequences = options.max_sequences;
  lo.prompt_tokens = options.plan_prompt_tokens;
  lo.output_tokens = options.plan_output_tokens;
  absl::StatusOr<Layout> layout = PlanLayout(input, lo);
  if (!layout.ok()) return by_bytes;
  const Plan& cut = layout->replicas.front().plan;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const StagePlan& s : cut.stages) ranges.emplace_back(s.begin, s.end);
  absl::StatusOr<Plan> checked = PlanFromRanges(input, ranges);
  if (!checked.ok()) return by_bytes;
  for (size_t i = 0; i < checked->stages.size(); ++i) {
    checked->stages[i].reason = absl::StrCat("planned for ", options.plan_prompt_tokens,
                                             "-token prompts: ", cut.stages[i].reason);
  }
  return *std::move(checked);
}

}  // namespace

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
  const std::set<std::string> eligible = EligibleLocked(now);
  std::set<std::string> spares = eligible;
  for (const auto& r : replicas_) {
    for (const std::string& id : r->members) spares.erase(id);
  }
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
  // Every replica is whole: spare GPUs (CPU workers stand by) enough for one
  // more replica of the same stages form it. Its pump starts now and the
  // control loop plans and loads it like any replica without a map.
  std::vector<std::string> gpus;
  for (const std::string& id : spares) {
    if (!IsCpuDevice(registry_.workers().at(id).device)) gpus.push_back(id);
  }
  std::sort(gpus.begin(), gpus.end(), NaturalLess);
  for (size_t b = 0; b + stages_per_replica_ <= gpus.size() && replicas_.size() < kMaxReplicas;
       b += stages_per_replica_) {
    auto r = std::make_unique<Replica>(static_cast<int>(replicas_.size()), security_);
    r->scheduler = NewScheduler();
    r->members.insert(gpus.begin() + b, gpus.begin() + b + stages_per_replica_);
    Log(absl::StrCat("spare worker(s) ", absl::StrJoin(r->members, ", "), " form replica ",
                     r->index));
    Replica* replica = r.get();
    replicas_.push_back(std::move(r));
    replica->pump = std::thread([this, replica] { PumpLoop(replica); });
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
  NotifyAll();
}

absl::Status CoordinatorService::PlanAndLoad(Replica& r, uint64_t epoch,
                                             std::vector<WorkerRecord> workers, v1::LayerMap* map,
                                             std::string* failed_worker,
                                             std::string* stage0_token) {
  if (workers.empty()) return absl::UnavailableError("no worker is attached");
  std::sort(workers.begin(), workers.end(),
            [](const WorkerRecord& a, const WorkerRecord& b) { return NaturalLess(a.id, b.id); });
  std::vector<std::pair<std::string, v1::Device>> named;
  for (const WorkerRecord& w : workers) named.emplace_back(w.id, w.device);
  const std::vector<DeviceSpec> devices = PlannerDevices(named);
  // The KV cache is sized from memory when every device has a budget (GPUs,
  // simulated or not): the plan then reserves one full context per stage
  // and each worker's cache takes what is left, up to --max-sequences. CPU
  // workers keep the fixed budget (their memory is the machine's).
  const bool from_memory = options_.kv_from_memory &&
                           std::all_of(workers.begin(), workers.end(), [](const WorkerRecord& w) {
                             return w.device.name() != "cpu";
                           });
  // The planned KV budget; halved while the layers do not fit (a degraded
  // map serves fewer sequences at once rather than none).
  int64_t budget_sequences = from_memory ? 1 : options_.max_sequences;
  Plan plan;
  PlanInput input;
  while (true) {
    BudgetOptions budget;
    budget.concurrency = budget_sequences;
    budget.context = max_context_;
    budget.max_batch_tokens = options_.max_batch_tokens;
    budget.decode_rows = DecodeRows(options_);
    ASSIGN_OR_RETURN(input, PlanInputForModel(options_.model_dir, config_, devices, budget));
    absl::StatusOr<Plan> planned;
    if (options_.layers.empty() || fixed_layout()) {
      planned = PlanPlacement(input);
      if (planned.ok() && options_.plan_prompt_tokens > 0 && workers.size() > 1) {
        planned = CutsForLoad(input, *std::move(planned), options_);
      }
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

  // Hops between distinct GPUs of one host carry hidden states by NCCL (this
  // process hosts the group's bootstrap), between simulated ones by socket.
  // Without a peer transport every hop stays gRPC.
  std::vector<PeerCandidate> candidates;
  for (const v1::StageInfo& s : map->stages()) {
    const v1::Device& d = workers[s.stage()].device;
    std::string transport;
    if (d.peer_transport()) transport = PeerTransportKind(d.name());
    candidates.push_back({d.host(), d.uuid(), transport});
  }
  PeerLinks links = PlanPeerLinks(candidates);
  std::string peer_group_id;
  if (links.size > 0 && !peer_transport_disabled_) {
    auto id = links.transport == "socket" ? absl::StatusOr<std::string>(NewSocketPeerGroupId())
                                          : NewPeerGroupId();
    if (id.ok()) {
      peer_group_id = *std::move(id);
      Log(absl::StrCat("epoch ", epoch, ": ", links.size, " workers move hidden states by ",
                       links.transport == "socket" ? "socket (simulated GPUs)" : "NCCL"));
    } else {
      Log(absl::StrCat("hops stay on gRPC: ", id.status().message()));
      peer_transport_disabled_ = true;
    }
  }

  // Load every stage at once; each returns when its layers are in memory.
  struct LoadOutcome {
    absl::Status status;
    std::string worker;
    int64_t kv_blocks = 0;
  };
  std::vector<std::future<LoadOutcome>> loads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const WorkerRecord& w : workers) {
      auto it = registry_.workers().find(w.id);
      if (it != registry_.workers().end()) it->second.loading = true;
    }
  }
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
    req.set_max_batch_tokens(StepRows(options_));
    req.set_max_context(max_context_);
    req.set_max_sequences(from_memory ? options_.max_sequences : budget_sequences);
    req.set_kv_from_memory(from_memory);
    req.set_host_embedding(i == 0 && plan.host_embedding);
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
      return {absl::OkStatus(), s.worker_id(), resp.kv_blocks()};
    }));
  }
  absl::Status first_error;
  bool peer_failure = false;
  // Full-context sequences the smallest cache holds.
  const int64_t blocks_per_sequence = (max_context_ + 15) / 16;
  int64_t kv_sequences = options_.max_sequences;
  for (auto& f : loads) {
    LoadOutcome o = f.get();
    if (o.status.ok()) kv_sequences = std::min(kv_sequences, o.kv_blocks / blocks_per_sequence);
    peer_failure |= absl::StrContains(o.status.message(), kPeerGroupError);
    if (first_error.ok() && !o.status.ok()) {
      first_error = o.status;
      *failed_worker = o.worker;
    }
  }
  if (peer_failure) {
    // No worker is to blame for a group that did not form; plan again over gRPC.
    Log(absl::StrCat("the peer group failed; hops use gRPC from now on: ", first_error.message()));
    peer_transport_disabled_ = true;
    failed_worker->clear();
  }
  {
    // Every Load has returned: none of them reads weights any more.
    std::lock_guard<std::mutex> lock(mu_);
    for (const WorkerRecord& w : workers) {
      auto it = registry_.workers().find(w.id);
      if (it == registry_.workers().end()) continue;
      it->second.loading = false;
      it->second.load_done = it->second.load_total = 0;
      it->second.load_rate = 0;
    }
  }
  RETURN_IF_ERROR(first_error);
  if (from_memory) budget_sequences = std::max<int64_t>(1, kv_sequences);
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
  // GPUs first, then CPU workers, each in natural order: groups are cut from
  // the front, so CPU workers are the ones left over.
  std::vector<std::string> gpus, cpus;
  for (const std::string& id : EligibleLocked(Clock::now())) {
    (IsCpuDevice(registry_.workers().at(id).device) ? cpus : gpus).push_back(id);
  }
  std::sort(gpus.begin(), gpus.end(), NaturalLess);
  std::sort(cpus.begin(), cpus.end(), NaturalLess);
  std::vector<std::string> ids = gpus;
  ids.insert(ids.end(), cpus.begin(), cpus.end());
  if (ids.size() < 2 && (gpus.empty() || requested != 0)) return;
  std::vector<std::vector<std::string>> groups;  // each replica's members
  std::string why;
  if (requested == 0) {
    std::set<std::string> cpu_hosts;
    for (const std::string& id : cpus) cpu_hosts.insert(registry_.workers().at(id).device.host());
    if (gpus.empty() && cpu_hosts.size() == 1) {
      Log("layout: the workers are CPU workers of one host, which share its cores and memory "
          "bandwidth: replicas of them would serve no faster; one pipeline");
      return;
    }
    // The layout search over `members` (in that order), `stages` > 0 forcing
    // one pipeline of that many.
    auto search = [&](const std::vector<std::string>& members,
                      int stages) -> absl::StatusOr<Layout> {
      std::vector<std::pair<std::string, v1::Device>> named;
      bool all_gpus = true;
      for (const std::string& id : members) {
        named.emplace_back(id, registry_.workers().at(id).device);
        all_gpus &= !IsCpuDevice(named.back().second);
      }
      const std::vector<DeviceSpec> devices = PlannerDevices(named);
      BudgetOptions budget;
      budget.kv_element_bytes = all_gpus ? 2 : 4;  // bf16 on GPUs, f32 on CPU workers
      budget.concurrency = options_.max_sequences;
      budget.context = max_context_;
      budget.max_batch_tokens = options_.max_batch_tokens;
      budget.decode_rows = DecodeRows(options_);
      ASSIGN_OR_RETURN(PlanInput input,
                       PlanInputForModel(options_.model_dir, config_, devices, budget));
      LayoutOptions lo;
      lo.max_sequences = options_.max_sequences;
      lo.prompt_tokens = options_.plan_prompt_tokens;
      lo.output_tokens = options_.plan_output_tokens;
      lo.replicas = stages > 0 ? 1 : 0;
      lo.stages = stages;
      return PlanLayout(input, lo);
    };
    std::vector<std::string> searched = gpus.empty() ? cpus : gpus;
    absl::StatusOr<Layout> layout = search(searched, 0);
    if (!layout.ok() && !gpus.empty() && !cpus.empty()) {
      // CPU workers beside GPUs join only when the GPUs cannot hold the
      // model, and as few as it takes: one pipeline of every GPU and then
      // CPU stages, the CPUs (modelled at their measured speed) taking the
      // layers the GPUs cannot. The others stand by to replace a failed GPU.
      Log(absl::StrCat("layout: the GPUs alone cannot hold the model (", layout.status().message(),
                       ")"));
      for (size_t k = 1; k <= cpus.size(); ++k) {
        searched = gpus;
        searched.insert(searched.end(), cpus.begin(), cpus.begin() + k);
        layout = search(searched, static_cast<int>(searched.size()));
        if (layout.ok()) {
          Log(absl::StrCat("layout: ", k, " CPU worker(s) join the ", gpus.size(), " GPU(s)"));
          break;
        }
      }
    }
    if (!layout.ok()) {
      Log(absl::StrCat("layout search: ", layout.status().message(), "; one pipeline"));
      return;
    }
    for (const ReplicaPlan& rep : layout->replicas) {
      groups.emplace_back();
      for (int d : rep.devices) groups.back().push_back(searched[d]);
    }
    why =
        absl::StrFormat(" (the layout search: %.0f tokens/s modelled)", layout->tokens_per_second);
  } else {
    int stages = static_cast<int>(ids.size()) / requested;
    if (stages < 1) {
      Log(absl::StrCat("--replicas ", requested, " with ", ids.size(),
                       " worker(s): one replica per worker"));
      stages = 1;
    }
    for (size_t b = 0; b + stages <= ids.size() && static_cast<int>(groups.size()) < requested;
         b += stages) {
      groups.emplace_back(ids.begin() + b, ids.begin() + b + stages);
    }
  }
  size_t used = 0;
  for (const auto& g : groups) used += g.size();
  // One pipeline over every worker is the plain mode, which takes in every
  // worker that joins later as one more stage. A layout the search chose for
  // GPUs stays a layout, even of one replica: GPUs that join later form
  // more replicas of it.
  if (groups.size() <= 1 && used == ids.size() && (gpus.empty() || requested != 0)) return;
  stages_per_replica_ = static_cast<int>(groups.front().size());
  while (replicas_.size() < groups.size()) {
    replicas_.push_back(std::make_unique<Replica>(static_cast<int>(replicas_.size()), security_));
    replicas_.back()->scheduler = NewScheduler();
  }
  for (size_t r = 0; r < groups.size(); ++r) {
    replicas_[r]->members.insert(groups[r].begin(), groups[r].end());
  }
  std::string spares;
  for (const std::string& id : ids) {
    const bool member = std::any_of(replicas_.begin(), replicas_.end(),
                                    [&](const auto& r) { return r->members.count(id) > 0; });
    if (!member) absl::StrAppend(&spares, spares.empty() ? "" : ", ", id);
  }
  Log(absl::StrCat("layout: ", groups.size(), " replica(s) x ", stages_per_replica_, " stage(s)",
                   why, spares.empty() ? "" : absl::StrCat("; spare(s): ", spares)));
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
    NotifyAll();
    if (!startup) Log(DescribeMapLocked());
    return true;
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

}  // namespace strata
