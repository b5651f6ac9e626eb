// Real clusters for integration tests: `strata up` (coordinator, workers and
// gateway as separate processes on loopback ports they pick at run time),
// its addresses, and stubs to talk to it. The destructor stops the cluster
// with SIGINT and, failing that, SIGKILL, so no test leaves a process behind.
#ifndef STRATA_TESTS_SERVICES_CLUSTER_UTIL_H_
#define STRATA_TESTS_SERVICES_CLUSTER_UTIL_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/sampler.h"
#include "services/common/tls.h"
#include "strata/v1/coordinator.grpc.pb.h"
#include "strata/v1/generation.grpc.pb.h"
#include "strata/v1/worker.grpc.pb.h"

namespace strata::testing {

struct ClusterAddress {
  std::string address;
  pid_t pid = -1;
  std::string metrics;  // host:port of its /metrics
};

class Cluster {
 public:
  // Runs `strata up --model MODEL --workers N EXTRA...`; fails the test (and
  // returns nullptr) when it does not come up within a minute.
  static std::unique_ptr<Cluster> Start(const std::string& model, int workers,
                                        const std::vector<std::string>& extra = {});
  ~Cluster();
  // SIGINT to `strata up`; returns its exit status (-1 if it had to be killed).
  int Stop();

  const std::string& gateway() const { return roles_.at("gateway").address; }
  const std::string& coordinator() const { return roles_.at("coordinator").address; }
  // The gateway's HTTP API (started with --http-listen).
  const std::string& http() const { return roles_.at("http").address; }
  std::vector<ClusterAddress> workers() const;
  pid_t pid_of(const std::string& role) const { return roles_.at(role).pid; }
  const std::string& metrics_of(const std::string& role) const { return roles_.at(role).metrics; }
  const std::string& log_path() const { return log_; }
  // The processes' logs (coordinator.log, worker-0.log, ...).
  std::string log_dir() const { return log_.substr(0, log_.rfind('/')) + "/logs"; }

  std::unique_ptr<v1::Generation::Stub> generation() const;
  // The coordinator as an operator (mutual TLS with the run's operator
  // certificate, unless the cluster runs --insecure).
  std::unique_ptr<v1::Coordinator::Stub> coordinator_stub() const;
  std::unique_ptr<v1::Worker::Stub> worker_stub(const std::string& address) const;
  // The run's certificates ("" for an --insecure cluster) and the operator's
  // transport.
  const std::string& cert_dir() const { return cert_dir_; }
  const TransportSecurity* security() const { return security_.get(); }
  // Sequence ids holding KV on each worker of the current maps, in pipeline
  // order, replica after replica.
  std::vector<std::vector<uint64_t>> WorkerSequences() const;
  // Waits until no worker holds KV for any sequence (true) or `timeout_ms` passes.
  bool WaitKvFree(int timeout_ms) const;
  // The coordinator's view: layer map (with addresses), epoch, worker
  // states, failovers.
  v1::ModelInfo Info() const;
  // Polls Info() until `pred` holds (true) or `timeout_ms` passes.
  bool WaitInfo(const std::function<bool(const v1::ModelInfo&)>& pred, int timeout_ms) const;
  // Starts one more `strata worker` attached to this cluster's coordinator;
  // it is stopped (SIGTERM, then SIGKILL) with the cluster.
  pid_t StartWorker(const std::string& id, const std::vector<std::string>& extra = {});

 private:
  pid_t pid_ = -1;
  int workers_ = 0;
  std::string log_;
  std::map<std::string, ClusterAddress> roles_;
  std::vector<pid_t> extra_workers_;
  std::string cert_dir_;
  std::shared_ptr<const TransportSecurity> security_;
};

struct StreamResult {
  int code = 0;  // grpc::StatusCode
  std::string message;
  std::string text;  // every choice's, in arrival order (n = 1: the completion)
  std::vector<int32_t> tokens;
  v1::Finished finished;  // the last one
  int deltas = 0;
  // By choice index (GenerateRequest.n).
  struct Choice {
    std::string text;
    std::vector<int32_t> tokens;
    std::vector<v1::Finished> finished;  // exactly one when the stream is well formed
  };
  std::map<uint32_t, Choice> choices;
};

// Runs Generate to completion (deadline `timeout_ms`, 0 = 60 s).
StreamResult Stream(v1::Generation::Stub& stub, const v1::GenerateRequest& request,
                    int timeout_ms = 0);

v1::GenerateRequest TextRequest(const std::string& prompt, int max_tokens,
                                const SamplingParams& sampling = {}, bool ignore_eos = false);

// The single-process reference: `strata generate`'s code path in-process.
struct Reference {
  std::vector<int32_t> prompt;
  std::vector<int32_t> tokens;
  std::string text;
};
Reference GenerateLocally(const std::string& model, const std::string& prompt, int max_tokens,
                          const SamplingParams& sampling = {}, bool ignore_eos = false,
                          int64_t max_context = 0, const std::string& device = "cpu");

// GET http://address/path; the body, or "" on failure.
std::string HttpGet(const std::string& address, const std::string& path);
// The value of the first sample of `name` in a Prometheus text `text` whose
// labels contain every one of `labels` (e.g. `outcome="ok"`); -1 when there
// is none.
double Sample(const std::string& text, const std::string& name,
              const std::vector<std::string>& labels = {});

}  // namespace strata::testing

#endif  // STRATA_TESTS_SERVICES_CLUSTER_UTIL_H_
