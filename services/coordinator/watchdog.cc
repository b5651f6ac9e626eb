#include "services/coordinator/watchdog.h"

#include <algorithm>
#include <cmath>

namespace strata {

int64_t StepDeadlineMs(const WatchdogOptions& options, std::vector<double> recent_latency_us) {
  if (recent_latency_us.empty()) return options.min_ms;
  const size_t k =
      std::min(recent_latency_us.size() - 1,
               static_cast<size_t>(0.99 * static_cast<double>(recent_latency_us.size())));
  std::nth_element(recent_latency_us.begin(), recent_latency_us.begin() + k,
                   recent_latency_us.end());
  const double scaled_ms = options.factor * recent_latency_us[k] / 1000.0;
  if (!(scaled_ms < 1e12)) return options.min_ms;  // NaN or absurd: keep the floor
  return std::max<int64_t>(options.min_ms, static_cast<int64_t>(std::ceil(scaled_ms)));
}

int BlameStage(const std::vector<StageProgress>& stages, uint64_t step_id) {
  for (size_t i = 0; i < stages.size(); ++i) {
    if (stages[i].last_done < step_id) return static_cast<int>(i);
  }
  return static_cast<int>(stages.size()) - 1;
}

}  // namespace strata
