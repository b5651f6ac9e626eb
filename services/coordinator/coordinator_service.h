// The Coordinator gRPC service and the state behind it. The cluster's state
// (workers, the map, the scheduler) sits behind one mutex (mu_); gRPC
// handler threads, the pump thread and the control thread (heartbeat
// deadlines, re-plans) share it. Its other parts have homes of their own:
// the gateway sessions (gateway_sessions.h, their own lock: delivering
// tokens never waits on mu_), the stream into stage 0 (stage0_link.h, written
// by the pump), the step timings (step_stats.h) and the workers' records
// (worker_registry.h); the last two are guarded by mu_.
#ifndef STRATA_SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_
#define STRATA_SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "runtime/backend/backend.h"
#include "runtime/config.h"
#include "services/common/metrics.h"
#include "services/coordinator/coordinator.h"
#include "services/coordinator/gateway_sessions.h"
#include "services/coordinator/peer_links.h"
#include "services/coordinator/planner.h"
#include "services/coordinator/scheduler.h"
#include "services/coordinator/stage0_link.h"
#include "services/coordinator/step_stats.h"
#include "services/coordinator/watchdog.h"
#include "services/coordinator/worker_registry.h"
#include "strata/v1/coordinator.grpc.pb.h"
#include "strata/v1/worker.grpc.pb.h"

namespace strata {

// The coordinator's Prometheus series (all labelled with the model).
struct CoordinatorMetrics {
  CoordinatorMetrics(prometheus::Registry& registry, const std::string& model);
  std::string model;
  prometheus::Gauge& epoch;
  prometheus::Gauge& stages;
  prometheus::Gauge& replicas;  // serving
  // Per replica (label `replica`): its map's epoch and stages, and its
  // sequences by state.
  prometheus::Family<prometheus::Gauge>& replica_epoch;
  prometheus::Family<prometheus::Gauge>& replica_stages;
  prometheus::Family<prometheus::Gauge>& replica_sequences;
  prometheus::Family<prometheus::Gauge>& workers;        // by state
  prometheus::Family<prometheus::Gauge>& load_progress;  // by worker, 0..1
  prometheus::Family<prometheus::Gauge>& sequences;      // running | waiting
  prometheus::Counter& failovers;
  prometheus::Histogram& replan_seconds;
  prometheus::Histogram& queue_seconds;
  prometheus::Histogram& step_tokens;
  prometheus::Histogram& step_sequences;
};

class CoordinatorService final : public v1::Coordinator::Service {
 public:
  // `metrics` may be null (no metrics endpoint).
  // `security` authorises callers (null: an insecure cluster).
  CoordinatorService(const CoordinatorOptions& options, const ModelConfig& config,
                     CoordinatorMetrics* metrics,
                     std::shared_ptr<const TransportSecurity> security = nullptr);
  ~CoordinatorService() override;

  grpc::Status Attach(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) override;
  grpc::Status Session(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::SessionEvents, v1::GatewayMessage>* stream) override;
  grpc::Status GetClusterInfo(grpc::ServerContext* context,
                              const v1::GetClusterInfoRequest* request,
                              v1::ClusterInfo* response) override;

  // Startup, from the main thread: wait for the workers, then form the first
  // map (load and serve); failures here end the process.
  absl::Status WaitForWorkers(int timeout_ms);
  absl::Status Start();
  std::string DescribeMap() const;
  // Shutdown: refuse new requests, let running ones finish until the
  // deadline, cancel the rest, stop the threads and close the pipeline.
  void Drain(int timeout_ms);

 private:
  using Clock = std::chrono::steady_clock;
  // One pipeline of the layout: its map and epoch, its scheduler, its stream
  // into stage 0, its pump. A lost worker stops only the replica it serves;
  // the others' pumps go on.
  struct Replica {
    explicit Replica(int index, std::shared_ptr<const TransportSecurity> security)
        : index(index), stage0(std::move(security)) {}
    const int index;
    v1::LayerMap map;  // empty stages: no map (starting or unavailable)
    std::unique_ptr<Scheduler> scheduler;
    StepStats steps;
    Stage0Link stage0;  // the pump writes it, Rebuild replaces it
    // With a fixed layout (more than one replica): the workers it may use.
    std::set<std::string> members;
    std::set<std::string> planned;  // the eligible workers its last plan saw
    bool serving = false;
    bool force_rebuild = false;     // a transport error in the current epoch
    bool failover_pending = false;  // the next re-plan replaces a lost stage
    std::string unavailable_reason;
    Clock::time_point serving_since;
    std::thread pump;
    std::condition_variable cv;  // its pump waits here (with mu_)
  };

  // Set once a peer group failed to form: every later map uses gRPC hops.
  std::atomic<bool> peer_transport_disabled_{false};
  void PumpLoop(Replica* r);
  void ControlLoop();
  // Splits the attached workers into replicas (options_.replicas; 0: the
  // layout search), before the first maps.
  void ChooseLayoutLocked();
  // Bumps the epoch, re-plans the replica over its eligible workers, loads
  // and resumes. Returns false when no map could be formed (it stays
  // unavailable; with other replicas serving, its sequences move there).
  bool Rebuild(Replica& r, const std::string& cause, bool startup, absl::Status* error);
  // Plans over `workers` and loads the map as `epoch`; shrinks the KV budget
  // while the layers do not fit. On a load failure names the worker.
  // `stage0_token` receives the hop token of the coordinator's own stream.
  absl::Status PlanAndLoad(Replica& r, uint64_t epoch, std::vector<WorkerRecord> workers,
                           v1::LayerMap* map, std::string* failed_worker,
                           std::string* stage0_token);
  void LoseWorkerLocked(WorkerRecord& w, const std::string& cause);
  bool InMapLocked(const std::string& id) const;
  // The replica whose map holds worker `id` (null: none).
  Replica* ReplicaOfLocked(const std::string& id) const;
  // serving | standby | backoff | lost | drained, as GetModelInfo reports it.
  const char* StateLocked(const WorkerRecord& w, Clock::time_point now) const;
  std::string DescribeMapLocked() const;
  std::set<std::string> EligibleLocked(Clock::time_point now) const;
  // The eligible workers replica `r` plans over: all of them with one
  // replica, its members otherwise.
  std::set<std::string> EligibleForLocked(const Replica& r, Clock::time_point now) const;
  // Fixed layout: spare workers fill replicas short of stages; then spare
  // GPUs enough for a whole replica form a new one (GPUs added while serving).
  void AssignSparesLocked(Clock::time_point now);
  // Moves the sequences of a replica without a map to the serving replica
  // with the most room (none serving: they stay and wait).
  void HandOverLocked(Replica& from);
  // The serving replica a new sequence goes to (most free KV; null: none).
  Replica* AdmitToLocked() const;
  void HandleResult(const std::string& worker_id, const v1::StepResult& result);
  void HandleHeartbeatLocked(WorkerRecord& w, const v1::Heartbeat& heartbeat);
  // Whether a re-plan of `r` is due: a worker of its map is gone, or a new
  // one may join. Standbys that left are dropped from r.planned without one.
  bool NeedsReplanLocked(Replica& r, Clock::time_point now);
  // Blames and cuts off the stage holding a step of `r` past its deadline.
  void CheckStepWatchdogLocked(Replica& r, Clock::time_point now);
  void PruneLocked(Clock::time_point now);
  void HandleSubmit(uint64_t session, const v1::Submit& submit);
  v1::ModelInfo ModelInfoLocked() const;
  void UpdateGaugesLocked();
  std::unique_ptr<Scheduler> NewScheduler() const;
  // Wakes every waiter: the control loop and drains (cv_) and every pump.
  void NotifyAll();
  // The layout search placed the workers: each replica plans over its own
  // members (and spares), not over every worker.
  bool fixed_layout() const { return stages_per_replica_ > 0; }

  const CoordinatorOptions options_;
  const std::shared_ptr<const TransportSecurity> security_;
  const ModelConfig config_;
  const int64_t max_context_;
  CoordinatorMetrics* const metrics_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  WorkerRegistry registry_;
  std::vector<std::unique_ptr<Replica>> replicas_;  // at least one, from the start
  int stages_per_replica_ = 0;                      // fixed layout: S
  uint64_t last_epoch_ = 0;                         // epochs are unique over replicas
  uint64_t failovers_ = 0;
  v1::FailoverEvent last_failover_;
  bool draining_ = false, stopping_ = false;
  bool started_ = false;  // the first maps formed (admission delays apply after)

  GatewaySessions sessions_;
  std::thread control_;
};

}  // namespace strata

#endif  // STRATA_SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_
