// The gateways' sessions with the coordinator: each gateway holds one
// Session stream; requests come in as Submit/Cancel and their tokens go out
// as SessionEvents. This keeps the open sessions (its own lock, so
// delivering tokens never waits on the cluster's state) and turns a Submit
// into a SequenceSpec, checked again here: the gateway validated it, but the
// internal API may have other callers. Thread-safe.
#ifndef STRATA_SERVICES_COORDINATOR_GATEWAY_SESSIONS_H_
#define STRATA_SERVICES_COORDINATOR_GATEWAY_SESSIONS_H_

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/config.h"
#include "services/coordinator/scheduler.h"
#include "strata/v1/coordinator.grpc.pb.h"

namespace strata {

// The request a Submit asks for, or INVALID_ARGUMENT/OUT_OF_RANGE naming the field.
absl::StatusOr<SequenceSpec> SpecFromSubmit(uint64_t session, const v1::Submit& submit,
                                            const ModelConfig& config, int64_t max_context);

class GatewaySessions {
 public:
  using Stream = grpc::ServerReaderWriter<v1::SessionEvents, v1::GatewayMessage>;

  // A session for `stream`, until Close(); returns its id.
  uint64_t Open(Stream* stream);
  // No more writes to it (its stream is ending).
  void Close(uint64_t session);
  // Writes `event` (or a batch of them, one message) to the session, if it
  // is still open.
  void Send(uint64_t session, const v1::SessionEvent& event);
  void SendBatch(uint64_t session, const v1::SessionEvents& batch);
  // Each emission as an event to its session. `admitted` marks them as the
  // notice that the request left the queue; `logprobs` (by sequence) go
  // with the tokens of the emission that carries that sequence's id;
  // `epoch` is the map's that produced the tokens.
  void Deliver(std::vector<Emission> emissions, bool admitted = false,
               const std::map<uint64_t, v1::TokenLogprobs>* logprobs = nullptr, uint64_t epoch = 0);
  // A refused request: an event with the error.
  void Refuse(uint64_t session, uint64_t request_id, const absl::Status& error);

 private:
  struct Record {
    Stream* stream = nullptr;
    std::mutex write_mu;
    bool open = true;  // guarded by write_mu
  };
  std::mutex mu_;
  std::map<uint64_t, std::shared_ptr<Record>> sessions_;
  uint64_t next_ = 1;
};

v1::FinishReason FinishToProto(Finish f);

}  // namespace strata

#endif  // STRATA_SERVICES_COORDINATOR_GATEWAY_SESSIONS_H_
