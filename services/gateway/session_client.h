// The gateway's end of its session with the coordinator: one bidi stream that
// carries every request of this gateway. Submit() registers a request with
// its sink; one reader thread hands each SessionEvent to the sink of its
// request (never under the client's lock, so a sink may call Cancel). When the stream breaks (say
// the coordinator restarted) the client reconnects and resubmits every unfinished request with the
// tokens already streamed appended to its prompt, so it continues instead of starting over; a
// request fails with UNAVAILABLE only when no session comes back within `resubmit_ms`.
//
// Submit() and Cancel() never wait on the network: they queue the message
// for a writer thread. They run on gRPC's callback threads (a reactor's
// OnCancel, its method handler), where a blocking Write can starve the very
// threads that would complete it. Thread-safe.
#ifndef STRATA_SERVICES_GATEWAY_SESSION_CLIENT_H_
#define STRATA_SERVICES_GATEWAY_SESSION_CLIENT_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "services/common/tls.h"
#include "strata/v1/coordinator.grpc.pb.h"

namespace strata {

class SessionClient {
 public:
  // Receives a request's events on the reader thread; the last one carries
  // a finish reason or an error. Must not block.
  using Sink = std::function<void(const v1::SessionEvent&)>;

  // `security`: mutual TLS to the coordinator (null: plaintext).
  SessionClient(std::string coordinator, int resubmit_ms,
                const TransportSecurity* security = nullptr);
  ~SessionClient();

  // Opens the session; fails if the coordinator is unreachable in time.
  absl::Status Connect(int timeout_ms);
  // Sends the submission; returns the request_id assigned to it.
  absl::StatusOr<uint64_t> Submit(v1::Submit submit, Sink sink);
  // Cancels on the coordinator and forgets the request.
  void Cancel(uint64_t request_id);
  // Forgets a finished request.
  void Forget(uint64_t request_id);
  v1::Coordinator::Stub& stub() { return *stub_; }

 private:
  // One session stream. Shared so that the reader and the writer each keep
  // the stream they use alive while the other replaces it.
  struct Link {
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<grpc::ClientReaderWriter<v1::GatewayMessage, v1::SessionEvents>> stream;
  };

  absl::Status OpenLocked();
  void ReadLoop();
  void WriteLoop();

  const std::string coordinator_;
  const int resubmit_ms_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;

  std::mutex mu_;  // guards the fields below
  std::condition_variable cv_;
  std::shared_ptr<Link> link_;             // null while reconnecting
  std::deque<v1::GatewayMessage> outbox_;  // for link_, in order
  struct Open {
    v1::Submit submit;              // as first sent
    std::vector<int32_t> streamed;  // tokens received since
    std::shared_ptr<Sink> sink;
  };
  std::map<uint64_t, Open> open_;
  uint64_t next_id_ = 1;
  bool closing_ = false;
  std::thread reader_;
  std::thread writer_;
};

}  // namespace strata

#endif  // STRATA_SERVICES_GATEWAY_SESSION_CLIENT_H_
