// The gateway's end of its session with the coordinator: one bidi stream that
// carries every request of this gateway. Submit() registers a request and
// returns its inbox; a reader thread files each SessionEvent into the inbox
// of its request. When the stream breaks (say the coordinator restarted) the
// client reconnects and resubmits every unfinished request with the tokens
// already streamed appended to its prompt, so it continues instead of
// starting over; a request fails with UNAVAILABLE only when no session comes
// back within `resubmit_ms`. Thread-safe.
#ifndef STRATA_SERVICES_GATEWAY_SESSION_CLIENT_H_
#define STRATA_SERVICES_GATEWAY_SESSION_CLIENT_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "strata/v1/coordinator.grpc.pb.h"

namespace strata {

class SessionClient {
 public:
  class Inbox {
   public:
    // Waits up to `timeout_ms` for events; returns those that arrived.
    std::deque<v1::SessionEvent> Take(int timeout_ms);

   private:
    friend class SessionClient;
    void Put(v1::SessionEvent event);
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<v1::SessionEvent> events_;
  };

  SessionClient(std::string coordinator, int resubmit_ms);
  ~SessionClient();

  // Opens the session; fails if the coordinator is unreachable in time.
  absl::Status Connect(int timeout_ms);
  // Sends the submission (its request_id is assigned here).
  absl::StatusOr<std::shared_ptr<Inbox>> Submit(v1::Submit submit, uint64_t* request_id);
  // Cancels on the coordinator and forgets the request.
  void Cancel(uint64_t request_id);
  // Forgets a finished request.
  void Forget(uint64_t request_id);
  v1::Coordinator::Stub& stub() { return *stub_; }

 private:
  absl::Status OpenLocked();
  void ReadLoop();

  const std::string coordinator_;
  const int resubmit_ms_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;

  std::mutex mu_;  // guards the fields below and serialises writes
  std::condition_variable cv_;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::GatewayMessage, v1::SessionEvent>> stream_;
  struct Open {
    v1::Submit submit;              // as first sent
    std::vector<int32_t> streamed;  // tokens received since
    std::shared_ptr<Inbox> inbox;
  };
  std::map<uint64_t, Open> open_;
  uint64_t next_id_ = 1;
  bool closing_ = false;
  std::thread reader_;
};

}  // namespace strata

#endif  // STRATA_SERVICES_GATEWAY_SESSION_CLIENT_H_
