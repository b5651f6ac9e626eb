// The Coordinator gRPC service and the state behind it. All of the cluster's
// mutable state sits behind one mutex (mu_); gRPC handler threads and the
// pump thread (the only writer of the stage-0 stream) share it. Writes to a
// gateway session are serialised by that session's own mutex.
#ifndef STRATA_SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_
#define STRATA_SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "runtime/config.h"
#include "services/coordinator/coordinator.h"
#include "services/coordinator/planner.h"
#include "services/coordinator/scheduler.h"
#include "strata/v1/coordinator.grpc.pb.h"
#include "strata/v1/worker.grpc.pb.h"

namespace strata {

class CoordinatorService final : public v1::Coordinator::Service {
 public:
  CoordinatorService(const CoordinatorOptions& options, const ModelConfig& config);
  ~CoordinatorService() override;

  grpc::Status Attach(grpc::ServerContext* context,
                      grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream)
      override;
  grpc::Status Session(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<v1::SessionEvent, v1::GatewayMessage>* stream)
      override;
  grpc::Status GetClusterInfo(grpc::ServerContext* context, const v1::GetClusterInfoRequest* request,
                              v1::ClusterInfo* response) override;

  // Startup, from the main thread: wait for the workers, plan, load, serve.
  absl::Status WaitForWorkers(int timeout_ms);
  absl::Status PlanAndLoad();
  absl::Status StartServing();
  std::string DescribeMap() const;
  // Shutdown: refuse new requests, let running ones finish until the
  // deadline, cancel the rest, stop the pump and close the pipeline.
  void Drain(int timeout_ms);

 private:
  struct WorkerRecord {
    std::string id, address;
    v1::Device device;
    bool connected = true;
  };
  struct SessionRecord {
    grpc::ServerReaderWriter<v1::SessionEvent, v1::GatewayMessage>* stream = nullptr;
    std::mutex write_mu;
    bool open = true;  // guarded by write_mu
  };
  struct StepTiming {
    std::chrono::steady_clock::time_point sent;
  };

  void PumpLoop();
  void Deliver(std::vector<Emission> emissions);
  void HandleResult(const v1::StepResult& result);
  void HandleSubmit(uint64_t session, const v1::Submit& submit,
                    const std::shared_ptr<SessionRecord>& record);
  // The pipeline broke: every request fails with `why`; the map stops serving.
  void LosePipeline(const std::string& why);
  v1::ModelInfo ModelInfoLocked() const;

  const CoordinatorOptions options_;
  const ModelConfig config_;
  const int64_t max_context_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, WorkerRecord> workers_;
  std::map<uint64_t, std::shared_ptr<SessionRecord>> sessions_;
  uint64_t next_session_ = 1;
  std::unique_ptr<Scheduler> scheduler_;
  v1::LayerMap map_;
  PlanInput plan_input_;
  Plan plan_;
  bool serving_ = false, draining_ = false, stopping_ = false;
  std::map<uint64_t, StepTiming> sent_;
  std::vector<std::pair<double, double>> samples_;  // (latency us, compute us), a window
  size_t sample_next_ = 0;

  // The stage-0 stream; only the pump thread writes it.
  std::unique_ptr<v1::Worker::Stub> stage0_stub_;
  std::unique_ptr<grpc::ClientContext> stage0_context_;
  v1::ForwardSummary stage0_summary_;
  std::unique_ptr<grpc::ClientWriter<v1::Step>> stage0_;
  std::thread pump_;
};

}  // namespace strata

#endif  // STRATA_SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_
