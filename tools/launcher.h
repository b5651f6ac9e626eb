// `strata up`: a whole cluster as child processes on one machine. The
// coordinator, N workers and a gateway are started from this same binary,
// each on a free loopback port it picks itself and reports through an
// address file. Children die with the launcher (PR_SET_PDEATHSIG); Stop()
// drains them in order: gateway, coordinator, then workers.
// Not thread-safe; one launcher per process.
#ifndef STRATA_TOOLS_LAUNCHER_H_
#define STRATA_TOOLS_LAUNCHER_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/common/tls.h"
#include "strata/v1/coordinator.pb.h"

namespace strata {

struct UpOptions {
  std::string binary = "/proc/self/exe";  // the `strata` executable to start
  std::string model_dir;
  int workers = 2;
  std::string host = "127.0.0.1";
  std::string layers;  // manual split, passed to the coordinator
  int replicas = 0;    // pipeline replicas (0: the layout search), passed to the coordinator
  int64_t max_sequences = 16;
  int64_t max_context = 0;
  int64_t max_batch_tokens = 512;
  // One machine: the stages share its cores, so micro-batches in flight at
  // once would only compete for them. 0 = one per stage (separate devices).
  int max_inflight_steps = 1;
  int threads = 0;        // per worker; 0 = every core
  int max_pending = 256;  // gateway queue bound
  int startup_timeout_ms = 120'000;
  std::string log_dir;                    // default: a fresh folder under /tmp
  std::vector<std::string> worker_flags;  // extra flags for every worker; {i}: its index
  // One --device per worker (empty: the workers' flags decide): from --gpus.
  std::vector<std::string> worker_devices;
  // Off: mutual TLS between the processes, with a CA and certificates made
  // for this run in <log_dir>/certs. On: plaintext, and any process that
  // can reach a port can join or call it.
  bool insecure = false;
  std::string api_key_file;  // the gateway's (--api-key-file); empty: no key required
  std::string http_listen;   // the gateway's OpenAI-compatible HTTP API; empty: none
  std::vector<std::string> coordinator_flags;  // extra flags for the coordinator
  std::vector<std::string> gateway_flags;      // extra flags for the gateway
};

// A process's resident memory (VmRSS) in KiB; -1 when it cannot be read.
int64_t ResidentKiB(pid_t pid);

class LocalCluster {
 public:
  ~LocalCluster();
  // Starts everything and waits until the coordinator serves.
  absl::Status Start(const UpOptions& options);
  // Drains and stops every child; returns the first unexpected exit.
  absl::Status Stop();
  // The coordinator or gateway exited (an error naming it); a worker that
  // exited is reported on stderr and tolerated (the coordinator fails over).
  absl::Status CheckChildren();

  const std::string& gateway() const { return gateway_; }
  const std::string& http() const { return http_; }  // "" without --http-listen
  const std::string& coordinator() const { return coordinator_; }
  const std::string& log_dir() const { return log_dir_; }
  const std::vector<std::pair<std::string, std::string>>& workers() const { return worker_addrs_; }
  const v1::ClusterInfo& info() const { return info_; }
  // Where this run's certificates are ("" when insecure), and the operator's
  // transport (mutual TLS with the operator certificate, or insecure).
  const std::string& cert_dir() const { return cert_dir_; }
  const TransportSecurity& operator_security() const { return *operator_security_; }
  // One "role address pid metrics-address" line per process: gateway,
  // coordinator, worker-0...
  std::string AddressLines() const;
  // "gateway http://.../metrics, coordinator ..., worker-0 ..."
  std::string MetricsSummary() const;

 private:
  struct Child {
    std::string name;
    pid_t pid = -1;
    std::string log;
    std::string metrics = "-";  // its /metrics address
    int status = 0;
    bool exited = false;
    bool signalled = false;  // SIGTERM sent
  };
  absl::StatusOr<Child*> Spawn(const std::string& binary, const std::string& name,
                               const std::vector<std::string>& args);
  absl::StatusOr<std::string> WaitAddress(Child* child, const std::string& file, int timeout_ms);
  absl::Status ExitError(const Child& c) const;
  void StopChild(Child* c, int grace_ms);

  std::vector<Child> children_;  // reserved up front; pointers stay valid
  std::string log_dir_, gateway_, coordinator_, cert_dir_, http_;
  std::shared_ptr<const TransportSecurity> operator_security_ = TransportSecurity::Insecure();
  std::vector<std::pair<std::string, std::string>> worker_addrs_;
  v1::ClusterInfo info_;
};

}  // namespace strata

#endif  // STRATA_TOOLS_LAUNCHER_H_
