// The workers that attached to the coordinator: each one's record (address,
// device, health, back-off, the progress its heartbeats report), the
// registration rate limit, and which workers a plan may use. The layout (the
// map, failover) is the coordinator's; this only keeps the workers. Not
// thread-safe: the coordinator's lock guards it.
#ifndef STRATA_SERVICES_COORDINATOR_WORKER_REGISTRY_H_
#define STRATA_SERVICES_COORDINATOR_WORKER_REGISTRY_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "services/common/tls.h"
#include "services/coordinator/coordinator.h"
#include "services/coordinator/planner.h"
#include "services/coordinator/watchdog.h"
#include "strata/v1/coordinator.pb.h"

namespace strata {

struct WorkerRecord {
  using Clock = std::chrono::steady_clock;
  std::string id, address;
  v1::Device device;
  bool connected = true;
  grpc::ServerContext* context = nullptr;  // its attach call, to cut a silent worker off
  Clock::time_point last_heard;
  int failures = 0;
  Clock::time_point backoff_until;
  bool draining = false;      // asked to be planned out before it exits
  std::string session_token;  // of its attach session; Load carries it
  Clock::time_point attached_at, lost_at;
  StageProgress progress;  // from its last heartbeat
  uint64_t heartbeat_epoch = 0;
  // Its load in progress, from its last heartbeat (total 0: none), while
  // the coordinator waits on a Load to it (`loading`).
  bool loading = false;
  int64_t load_done = 0, load_total = 0;
  double load_rate = 0;
};

class WorkerRegistry {
 public:
  using Clock = std::chrono::steady_clock;

  explicit WorkerRegistry(const CoordinatorOptions& options);

  struct Refusal {
    grpc::StatusCode code;
    std::string reason;
  };
  // Registers `reg` for the attach call `context` (a worker back after a loss
  // keeps its failures and back-off), or says why not: missing fields, a
  // name other than its certificate's (`mutual`), the rate limit, a
  // draining coordinator, or the id attached already.
  std::optional<Refusal> Register(const v1::Register& reg, const Identity& peer, bool mutual,
                                  bool draining, grpc::ServerContext* context,
                                  const std::string& session_token, Clock::time_point now);
  // The record of `id` while the attach call `context` still owns it (not cut off).
  WorkerRecord* Owned(const std::string& id, const grpc::ServerContext* context);
  WorkerRecord* Find(const std::string& id);
  // Marks `w` lost with a back-off that grows with its failures: 0 s, 1 s,
  // 2 s, 4 s ... 30 s. False if it was lost already.
  bool Lose(WorkerRecord& w, Clock::time_point now);
  // serving | standby | backoff | lost | drained, as GetModelInfo reports it.
  static const char* State(const WorkerRecord& w, bool in_map, Clock::time_point now);
  // The workers a plan may use: connected, not draining, past their
  // back-off, and (once the cluster has started) attached for
  // --admit-delay-ms or already in the map.
  std::set<std::string> Eligible(const std::function<bool(const std::string&)>& in_map,
                                 bool started, Clock::time_point now) const;
  // Forgets the workers lost for longer than --prune-after-ms that `keep`
  // does not hold on to.
  void Prune(const std::function<bool(const std::string&)>& keep, Clock::time_point now);

  std::map<std::string, WorkerRecord>& workers() { return workers_; }
  const std::map<std::string, WorkerRecord>& workers() const { return workers_; }

 private:
  // Takes one registration from the rate limit's bucket.
  bool TakeRegistration(Clock::time_point now);

  const CoordinatorOptions options_;
  std::map<std::string, WorkerRecord> workers_;
  double registration_tokens_ = 0;
  Clock::time_point registration_refill_;
};

bool IsCpuDevice(const v1::Device& d);

// The planner's devices for `workers` (id and device each), in order. When
// they mix GPUs and CPUs, each is planned by its memory bandwidth (their
// --speed figures mean nothing to each other), and the CPU workers of one
// host split its bandwidth and FLOP/s between them: in one pipeline they run
// at once on the same cores and memory. Otherwise by --speed, as workers of
// one kind are planned.
std::vector<DeviceSpec> PlannerDevices(
    const std::vector<std::pair<std::string, v1::Device>>& workers);

}  // namespace strata

#endif  // STRATA_SERVICES_COORDINATOR_WORKER_REGISTRY_H_
