// The worker process: one per device. It registers with the coordinator
// (device inventory), loads the layer run it is assigned, runs steps that
// arrive on its Forward stream and passes hidden states to the next worker;
// the last worker samples and reports token ids to the coordinator over its
// attach stream. When that stream ends (the coordinator restarted, or cut
// this worker off as hung) the worker drops its assignment and registers
// again. RunWorker() returns on SIGINT/SIGTERM, or with UNAVAILABLE when the
// coordinator stays away past the reconnect timeout. On SIGTERM it first
// asks to be planned out of the map (its sequences are replayed elsewhere),
// so a rolling restart of workers loses no request.
#ifndef STRATA_SERVICES_WORKER_WORKER_H_
#define STRATA_SERVICES_WORKER_WORKER_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "services/common/tls.h"

namespace strata {

struct WorkerOptions {
  std::string id;                              // unique in the cluster; default "worker-<pid>"
  std::string listen = "127.0.0.1:0";          // where the Worker service listens
  std::string advertise;                       // address given to peers; default: the bound one
  std::string coordinator;                     // host:port of the coordinator (required)
  std::string address_file;                    // "grpc-address metrics-address" once listening
  std::string metrics_listen = "127.0.0.1:0";  // /metrics over HTTP; empty = none
  std::string health_listen;  // plaintext grpc.health.v1 only, for probes; empty = none
  // Where the stage runs: "cpu", "cuda" or "cuda:N". On CUDA the stage's
  // weights, KV cache and workspaces must fit in capacity - reserve, which the
  // backend enforces.
  std::string device = "cpu";
  int64_t capacity_bytes = 0;         // 0: physical memory (cpu), free device memory (cuda)
  int64_t reserve_bytes = -1;         // -1: a tenth of the capacity
  double speed = 1.0;                 // relative to the other devices
  int threads = 0;                    // CPU threads; 0 = every core
  int connect_timeout_ms = 30'000;    // to reach the coordinator and the next worker
  int reconnect_timeout_ms = 30'000;  // to re-register after the coordinator cut us off
  int drain_timeout_ms = 30'000;      // on SIGTERM: how long to wait to be planned out
  int debug_step_delay_ms = 0;        // fault injection: a slow device
  double debug_load_rate = 0;         // fault injection: a slow disk (bytes/s, 0: off)
  // > 0: the reserve is the capacity's other share (overrides reserve_bytes).
  double memory_fraction = 0;
  // sim:custom (or a table device's figures replaced): memory, bytes/s, FLOP/s.
  int64_t sim_memory_bytes = 0;
  double sim_bandwidth = 0, sim_flops = 0;
  // What the layout search models this device with (bytes/s, FLOP/s); 0:
  // the device table's row for a GPU it knows, measured at start on the CPU
  // (runtime/backend/cpu/throughput.h).
  double bandwidth = 0, flops = 0;
  // Fault injection: the Nth step this process receives (1-based) never
  // finishes while heartbeats go on (a wedged GPU); it gives up only when its
  // stream is cancelled. 0 = off.
  int64_t debug_stall_step = 0;
  TlsFiles tls;            // mutual TLS with the cluster CA; empty = plaintext
  std::string model_root;  // Load may only name model folders inside it; empty = any
};

absl::Status RunWorker(const WorkerOptions& options);

}  // namespace strata

#endif  // STRATA_SERVICES_WORKER_WORKER_H_
