// The coordinator process: registry of workers, placement, the layer map and
// its epoch, and the scheduler that drives the pipeline. RunCoordinator()
// serves until SIGINT/SIGTERM, then drains: new requests are refused with
// UNAVAILABLE, running ones finish (or end CANCELLED at the drain deadline).
//
// Failover: a worker whose attach stream breaks (process died) or whose
// heartbeats stop (hung) is lost. The coordinator bumps the epoch, re-plans
// over the workers still there (halving the KV budget while the layers do
// not fit), reloads them, and replays every running sequence on the new map;
// clients see a pause, not an error. A worker that registers later (a new
// one, or a lost one after a back-off that doubles with each failure) is
// taken in by the same re-plan. While no map fits, new requests get
// UNAVAILABLE naming what is missing; running ones wait.
#ifndef STRATA_SERVICES_COORDINATOR_COORDINATOR_H_
#define STRATA_SERVICES_COORDINATOR_COORDINATOR_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "services/common/tls.h"

namespace strata {

struct CoordinatorOptions {
  std::string listen = "127.0.0.1:0";          // host:port; port 0 picks a free port
  std::string address_file;                    // "grpc-address metrics-address" once listening
  std::string metrics_listen = "127.0.0.1:0";  // /metrics over HTTP; empty = none
  std::string health_listen;        // plaintext grpc.health.v1 only, for probes; empty = none
  std::string model_dir;            // as the workers see it (shared storage)
  int workers = 1;                  // start serving once this many registered
  int startup_timeout_ms = 60'000;  // for registration and for loading
  std::string layers;               // manual split "0-9,10-21"; empty = planner
  // Pipeline replicas: 0 = as the layout search (layout.h) chooses (CPU
  // workers of one host: one pipeline; CPU workers beside GPUs only when the
  // GPUs cannot hold the model); 1 = one pipeline over every worker; N = N
  // replicas of (workers / N) stages.
  int replicas = 0;
  int64_t max_sequences = 16;  // concurrency: the KV budget on every worker
  // On GPUs (simulated or not): each worker's KV cache takes what its budget
  // (capacity less reserve: --memory-fraction) leaves, with max_sequences
  // full contexts as the cap; admission follows the smallest stage's cache.
  bool kv_from_memory = true;
  int64_t max_context = 0;         // tokens per sequence; 0 = model's, capped at 8192
  int64_t max_batch_tokens = 512;  // prompt tokens per step (the prefill chunk)
  // Decode tokens a step carries beside a full prefill chunk (SchedulerOptions);
  // -1: min(max_sequences, max_batch_tokens).
  int64_t max_decode_rows = -1;
  int max_inflight_steps = 0;  // micro-batches in the pipeline; 0 = one per stage
  // The load the layout search plans for: mean prompt and completion
  // lengths (both, or 0: decode steps alone). See LayoutOptions.
  int64_t plan_prompt_tokens = 0;
  int64_t plan_output_tokens = 0;
  int drain_timeout_ms = 30'000;
  int heartbeat_ms = 200;           // how often workers report
  int heartbeat_timeout_ms = 1000;  // a worker silent this long is lost (hung, SIGSTOP)
  TlsFiles tls;                     // mutual TLS with the cluster CA; empty = plaintext
  // Abuse limits of the internal plane.
  int registrations_per_minute = 120;  // attach attempts taken (as a burst too); more wait
  int admit_delay_ms = 1000;           // a worker joins the map once attached this long
  int prune_after_ms = 300'000;        // a lost worker outside the map is forgotten after
  int64_t max_queued = 4096;           // requests waiting for a KV slot, over all gateways
  // Step watchdog: a step not back within max(min, factor x recent p99) is
  // blamed on the stage holding it, which is planned out.
  int step_watchdog_ms = 5000;
  double step_watchdog_factor = 20;
};

absl::Status RunCoordinator(const CoordinatorOptions& options);

// The decode rows a step carries beside its prompt chunk, -1 resolved.
int64_t DecodeRows(const CoordinatorOptions& options);
// The rows of a step at most, which the workers' workspaces are sized for.
inline int64_t StepRows(const CoordinatorOptions& options) {
  return options.max_batch_tokens + DecodeRows(options);
}

}  // namespace strata

#endif  // STRATA_SERVICES_COORDINATOR_COORDINATOR_H_
