// Prometheus metrics of one process: a registry that the process's service
// fills, served as text at http://<listen>/metrics. Names follow Prometheus
// conventions: `strata_` prefix, base units (seconds, bytes), `_total` for
// counters; every series carries `model` (the model folder's name), and
// worker series `worker`. Thread-safe (prometheus-cpp metrics are atomic).
#ifndef STRATA_SERVICES_COMMON_METRICS_H_
#define STRATA_SERVICES_COMMON_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strata {

class MetricsServer {
 public:
  // Serves the registry at `listen` ("host:port"; port 0 picks a free one).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen);
  ~MetricsServer();
  prometheus::Registry& registry() { return *registry_; }
  // Also serves what `collectable` reports at each scrape; kept alive here.
  void Add(std::shared_ptr<prometheus::Collectable> collectable);
  // "host:port" actually bound.
  const std::string& address() const { return address_; }

 private:
  MetricsServer() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;
};

// Latency buckets for LLM serving, in seconds: 0.5 ms to 2 min.
prometheus::Histogram::BucketBoundaries LatencyBuckets();
// Buckets for counts per step (tokens, sequences): 1 to 8192.
prometheus::Histogram::BucketBoundaries CountBuckets();
// The `model` label: the last component of the model folder.
std::string ModelLabel(const std::string& model_dir);

}  // namespace strata

#endif  // STRATA_SERVICES_COMMON_METRICS_H_
