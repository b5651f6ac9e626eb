// One Generate stream of the gateway, as a gRPC callback reactor. Nothing
// waits or polls: the call is woken by the coordinator's events for its
// request (on the session's reader thread), by its own writes completing and
// by the client's cancellation (on gRPC's threads). One write is in flight at
// a time; events that arrive meanwhile queue. Everything it holds is guarded
// by mu_; the session's sink reaches it through a mailbox that OnDone closes
// before the call is deleted.
#ifndef STRATA_SERVICES_GATEWAY_GENERATE_CALL_H_
#define STRATA_SERVICES_GATEWAY_GENERATE_CALL_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "runtime/tokenizer.h"
#include "services/gateway/stop_matcher.h"
#include "strata/v1/coordinator.pb.h"
#include "strata/v1/generation.pb.h"

namespace strata {

class GatewayService;

class GenerateCall final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  GenerateCall(GatewayService* service, grpc::CallbackServerContext* context);
  // Authenticates, validates and submits the request; any refusal finishes
  // the call at once.
  void Begin(const grpc::ByteBuffer& wire);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  using Clock = std::chrono::steady_clock;
  struct Mailbox {
    std::mutex mu;
    GenerateCall* call = nullptr;  // null once the call is done
  };

  void OnEvent(const v1::SessionEvent& event);
  void QueueLocked(const v1::GenerateResponse& response);
  void WriteNextLocked();
  // Finishes once the queued writes are out; tells the coordinator to drop
  // the request unless it already finished there.
  void FinishLocked(const grpc::Status& status, const char* outcome, const char* finish = "none");
  void SendFinishedLocked(v1::FinishReason reason);

  GatewayService* const service_;
  grpc::CallbackServerContext* const context_;
  const Clock::time_point start_ = Clock::now();
  const std::shared_ptr<Mailbox> mailbox_ = std::make_shared<Mailbox>();

  std::mutex mu_;
  std::deque<grpc::ByteBuffer> queue_;
  bool writing_ = false;
  std::optional<grpc::Status> final_;  // set once the call is to finish
  bool finish_called_ = false;
  bool counted_pending_ = false;
  uint64_t id_ = 0;             // the session's request id (0: not submitted)
  bool upstream_done_ = false;  // the coordinator finished or forgot the request
  v1::GenerateRequest request_;
  int prompt_tokens_ = 0, completion_ = 0;
  bool admitted_ = false;
  double ttft_ = -1;
  Clock::time_point last_token_;
  std::optional<StopMatcher> matcher_;
  std::optional<IncrementalDetokenizer> detok_;
};

}  // namespace strata

#endif  // STRATA_SERVICES_GATEWAY_GENERATE_CALL_H_
