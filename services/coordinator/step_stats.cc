#include "services/coordinator/step_stats.h"

#include <algorithm>

namespace strata {
namespace {

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k];
}

}  // namespace

void StepStats::Done(uint64_t step_id, double compute_us, bool ok, Clock::time_point now) {
  auto it = sent_.find(step_id);
  if (it == sent_.end()) return;
  const double latency = std::chrono::duration<double, std::micro>(now - it->second).count();
  sent_.erase(it);
  if (!ok) return;
  if (samples_.size() < kWindow) {
    samples_.emplace_back(latency, compute_us);
  } else {
    samples_[next_++ % kWindow] = {latency, compute_us};
  }
}

std::optional<std::pair<uint64_t, StepStats::Clock::time_point>> StepStats::Oldest() const {
  if (sent_.empty()) return std::nullopt;
  return *sent_.begin();
}

std::vector<double> StepStats::Latencies() const {
  std::vector<double> latency;
  latency.reserve(samples_.size());
  for (const auto& [l, c] : samples_) latency.push_back(l);
  return latency;
}

void StepStats::Fill(int stages, v1::PipelineStats* stats) const {
  std::vector<double> latency, compute, overhead;
  for (const auto& [l, c] : samples_) {
    latency.push_back(l);
    compute.push_back(c);
    overhead.push_back(l - c);
  }
  stats->set_stages(stages);
  stats->set_steps(samples_.size());
  stats->set_latency_p50_us(Percentile(latency, 0.5));
  stats->set_latency_p99_us(Percentile(latency, 0.99));
  stats->set_compute_p50_us(Percentile(compute, 0.5));
  stats->set_overhead_p50_us(Percentile(overhead, 0.5));
  stats->set_per_hop_overhead_p50_us(Percentile(overhead, 0.5) / (stages + 1));
}

void StepStats::ResetWindow() {
  samples_.clear();
  next_ = 0;
}

}  // namespace strata
