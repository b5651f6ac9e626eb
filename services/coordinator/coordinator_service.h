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
      grpc::ServerReaderWriter<v1::SessionEvent, v1::GatewayMessage>* stream) override;
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
  // Set once a peer group failed to form: every later map uses gRPC hops.
  std::atomic<bool> peer_transport_disabled_{false};
  void PumpLoop();
  void ControlLoop();
  // Bumps the epoch, re-plans over the eligible workers, loads and resumes.
  // Returns false when no map could be formed (the cluster stays unavailable).
  bool Rebuild(const std::string& cause, bool startup, absl::Status* error);
  // Plans over `workers` and loads the map as `epoch`; shrinks the KV budget
  // while the layers do not fit. On a load failure names the worker.
  // `stage0_token` receives the hop token of the coordinator's own stream.
  absl::Status PlanAndLoad(uint64_t epoch, std::vector<WorkerRecord> workers, v1::LayerMap* map,
                           std::string* failed_worker, std::string* stage0_token);
  void LoseWorkerLocked(WorkerRecord& w, const std::string& cause);
  bool InMapLocked(const std::string& id) const;
  // serving | standby | backoff | lost | drained, as GetModelInfo reports it.
  const char* StateLocked(const WorkerRecord& w, Clock::time_point now) const;
  std::string DescribeMapLocked() const;
  std::set<std::string> EligibleLocked(Clock::time_point now) const;
  void HandleResult(const std::string& worker_id, const v1::StepResult& result);
  void HandleHeartbeatLocked(WorkerRecord& w, const v1::Heartbeat& heartbeat);
  // Whether a re-plan is due: a worker of the map is gone, or a new one may
  // join. Standbys that left are dropped from planned_ without one.
  bool NeedsReplanLocked(Clock::time_point now);
  // Blames and cuts off the stage holding a step past its deadline.
  void CheckStepWatchdogLocked(Clock::time_point now);
  void PruneLocked(Clock::time_point now);
  void HandleSubmit(uint64_t session, const v1::Submit& submit);
  v1::ModelInfo ModelInfoLocked() const;
  void UpdateGaugesLocked();

  const CoordinatorOptions options_;
  const std::shared_ptr<const TransportSecurity> security_;
  const ModelConfig config_;
  const int64_t max_context_;
  CoordinatorMetrics* const metrics_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  WorkerRegistry registry_;
  std::unique_ptr<Scheduler> scheduler_;
  v1::LayerMap map_;               // empty stages: no map (starting or unavailable)
  std::set<std::string> planned_;  // the eligible workers the last re-plan saw
  bool force_rebuild_ = false;     // a transport error in the current epoch
  std::string unavailable_reason_;
  uint64_t failovers_ = 0;
  v1::FailoverEvent last_failover_;
  bool serving_ = false, draining_ = false, stopping_ = false;
  bool started_ = false;           // the first map formed (admission delays apply after)
  bool failover_pending_ = false;  // the next re-plan replaces a lost stage
  Clock::time_point serving_since_;
  StepStats steps_;  // guarded by mu_

  GatewaySessions sessions_;
  Stage0Link stage0_;  // the pump writes it, Rebuild replaces it
  std::thread pump_, control_;
};

}  // namespace strata

#endif  // STRATA_SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_
