// What the three services share on the wire: a server bootstrap (health,
// reflection, keepalive, message limits), client channels with the same
// keepalive settings, and the mapping between absl::Status and grpc::Status.
//
// Keepalive is symmetric: clients ping every kKeepaliveTimeMs (also without
// active calls) and servers permit pings that often, so neither side ever
// answers the other with GOAWAY "too_many_pings".
#ifndef STRATA_SERVICES_COMMON_SERVER_H_
#define STRATA_SERVICES_COMMON_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/common/tls.h"

namespace strata {

inline constexpr int kKeepaliveTimeMs = 10'000;
inline constexpr int kKeepaliveTimeoutMs = 5'000;
// Fits the largest hidden-state batch we allow (8192 tokens x 8192 hidden
// x f32 = 256 MiB) plus its header.
inline constexpr int kMaxMessageBytes = 257 << 20;

struct ServerOptions {
  std::string listen = "127.0.0.1:0";  // host:port; port 0 = pick a free one
  int max_message_bytes = kMaxMessageBytes;
  // TLS of the listening port; null or insecure: plaintext.
  std::shared_ptr<const TransportSecurity> security;
  // A second, plaintext port that serves only grpc.health.v1 (the same
  // statuses): for probes that cannot speak mutual TLS (Kubernetes' gRPC
  // probes). Empty: none.
  std::string health_listen;
};

// The grpc.health.v1 service name that answers SERVING whenever the server
// answers at all, whatever the model's state: Kubernetes' liveness probe asks
// it, so only a wedged process is restarted, never a loading or draining one.
inline constexpr char kLivenessService[] = "strata.liveness";
// Starts the message of a worker's Load that failed because its NCCL peer
// group did not form; the coordinator then plans the epoch again over gRPC
// instead of blaming the worker.
inline constexpr char kPeerGroupError[] = "peer group: ";

// A started gRPC server with the standard health service (initially
// NOT_SERVING, but kLivenessService SERVING) and reflection. Thread-safe.
class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Start(const std::vector<grpc::Service*>& services,
                                                       const ServerOptions& options);
  ~Server();

  // "host:port" with the port actually bound.
  const std::string& address() const { return address_; }
  int port() const { return port_; }
  // The health-only port's "host:port" ("" without one).
  const std::string& health_address() const { return health_address_; }
  // Sets grpc.health.v1 status for the whole server ("") and every service.
  void SetServing(bool serving);
  // Stops accepting calls, gives running ones `grace_ms`, then cancels them.
  void Shutdown(int grace_ms);

 private:
  Server() = default;
  std::unique_ptr<grpc::Server> server_, health_server_;
  std::vector<std::string> service_names_;
  std::string address_, health_address_;
  int port_ = 0;
};

// A channel to `address` with Strata's keepalive and message limits, over
// mutual TLS when `security` has it (null: plaintext).
std::shared_ptr<grpc::Channel> Dial(const std::string& address,
                                    const TransportSecurity* security = nullptr);
// Waits until the channel is connected or `timeout_ms` passes.
bool WaitConnected(const std::shared_ptr<grpc::Channel>& channel, int timeout_ms);

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);
// Writes "address\n" to `path` atomically (for launchers that chose port 0).
absl::Status WriteAddressFile(const std::string& path, const std::string& address);
// The host part of "host:port" ("[::1]:5" -> "[::1]").
std::string HostOf(const std::string& address);

}  // namespace strata

#endif  // STRATA_SERVICES_COMMON_SERVER_H_
