// One Generate stream of the gateway, as a gRPC callback reactor over a
// RequestGroup (one RequestStream per choice). Nothing waits or polls: the call is woken by its
// request's responses (from the session's reader thread), by its own writes completing and by the
// client's cancellation (on gRPC's threads). One write is in flight at a time; responses that
// arrive meanwhile queue under mu_. Lock order: the RequestStream's lock, then mu_; the call never
// calls into its stream while holding mu_.
#ifndef STRATA_SERVICES_GATEWAY_GENERATE_CALL_H_
#define STRATA_SERVICES_GATEWAY_GENERATE_CALL_H_

#include <grpcpp/grpcpp.h>

#include <deque>
#include <memory>
#include <mutex>
#include <optional>

#include "services/gateway/request_group.h"

namespace strata {

class GatewayService;

class GenerateCall final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  GenerateCall(GatewayService* service, grpc::CallbackServerContext* context);
  // Authenticates, parses and starts the request; any refusal finishes the
  // call at once.
  void Begin(const grpc::ByteBuffer& wire);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  void Queue(const v1::GenerateResponse& response);
  void End(const grpc::Status& status);
  void WriteNextLocked();

  GatewayService* const service_;
  grpc::CallbackServerContext* const context_;
  std::unique_ptr<RequestGroup> group_;

  std::mutex mu_;
  std::deque<grpc::ByteBuffer> queue_;
  bool writing_ = false;
  std::optional<grpc::Status> final_;  // set once the call is to finish
  bool finish_called_ = false;
};

}  // namespace strata

#endif  // STRATA_SERVICES_GATEWAY_GENERATE_CALL_H_
