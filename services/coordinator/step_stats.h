// The steps in the pipeline and the timing of recent ones: when each step in
// flight was sent (the step watchdog's oldest one), and a window of
// (latency, compute) samples for GetClusterInfo's PipelineStats. Not
// thread-safe: the coordinator's lock guards it.
#ifndef STRATA_SERVICES_COORDINATOR_STEP_STATS_H_
#define STRATA_SERVICES_COORDINATOR_STEP_STATS_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "strata/v1/coordinator.pb.h"

namespace strata {

class StepStats {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kWindow = 8192;

  void Sent(uint64_t step_id, Clock::time_point at) { sent_[step_id] = at; }
  // A step's result came back: its latency and the stages' compute (µs)
  // join the window when it succeeded. Unknown steps are ignored.
  void Done(uint64_t step_id, double compute_us, bool ok, Clock::time_point now);
  // A new epoch: nothing is in flight any more.
  void ForgetInFlight() { sent_.clear(); }
  // The oldest step still in flight.
  std::optional<std::pair<uint64_t, Clock::time_point>> Oldest() const;
  std::vector<double> Latencies() const;
  // Percentiles of the window over a pipeline of `stages`.
  void Fill(int stages, v1::PipelineStats* stats) const;
  void ResetWindow();

 private:
  std::map<uint64_t, Clock::time_point> sent_;
  std::vector<std::pair<double, double>> samples_;  // (latency µs, compute µs)
  size_t next_ = 0;
};

}  // namespace strata

#endif  // STRATA_SERVICES_COORDINATOR_STEP_STATS_H_
