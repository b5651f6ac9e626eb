// The step watchdog's arithmetic, as pure functions: how long a step may
// stay in the pipeline, and which stage holds one that did not come back.
// The coordinator calls them from its control thread; a stage that keeps
// heartbeating but never finishes a step (a wedged GPU, a deadlock) is blamed
// and planned out as if it had died, and its sequences are replayed.
#ifndef STRATA_SERVICES_COORDINATOR_WATCHDOG_H_
#define STRATA_SERVICES_COORDINATOR_WATCHDOG_H_

#include <cstdint>
#include <string>
#include <vector>

namespace strata {

struct WatchdogOptions {
  int64_t min_ms = 5000;  // no step is blamed sooner
  double factor = 20;     // a step may take this many times the recent p99
};

// max(min_ms, factor x the p99 of `recent_latency_us`) in milliseconds.
int64_t StepDeadlineMs(const WatchdogOptions& options, std::vector<double> recent_latency_us);

// What a stage last reported (in its heartbeat) about the steps of this epoch.
struct StageProgress {
  std::string worker_id;
  uint64_t last_received = 0;  // the last step read from its Forward stream
  uint64_t last_done = 0;      // the last step it finished (forwarded or reported)
};

// The stage to blame for `step_id` not coming back: the first, in pipeline
// order, that has not finished it (it is computing it, or never got it from
// the hop before). When every stage reports it done, the result was lost on
// the way back: the last stage. -1 for no stages.
int BlameStage(const std::vector<StageProgress>& stages, uint64_t step_id);

}  // namespace strata

#endif  // STRATA_SERVICES_COORDINATOR_WATCHDOG_H_
