// The coordinator's stream into stage 0 of the current map: opened by a
// rebuild with the epoch's hop token, written by the pump (one step per
// message), closed when the map changes. Close() cancels first, so a write
// blocked on a hung stage 0 returns. Thread-safe.
#ifndef STRATA_SERVICES_COORDINATOR_STAGE0_LINK_H_
#define STRATA_SERVICES_COORDINATOR_STAGE0_LINK_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <mutex>
#include <string>

#include "services/common/tls.h"
#include "services/coordinator/scheduler.h"
#include "strata/v1/worker.grpc.pb.h"

namespace strata {

// The wire form of a planned step for `epoch` (`msg` is reused by the pump).
void StepToProto(const PlannedStep& step, uint64_t epoch, v1::Step* msg);

class Stage0Link {
 public:
  explicit Stage0Link(std::shared_ptr<const TransportSecurity> security)
      : security_(std::move(security)) {}
  ~Stage0Link() { Close(); }

  void Open(const std::string& address, const std::string& hop_token);
  void Close();
  // False when there is no stream or it broke.
  bool Write(const v1::Step& step);

 private:
  const std::shared_ptr<const TransportSecurity> security_;
  std::mutex mu_;  // the stream, held across a write
  std::unique_ptr<v1::Worker::Stub> stub_;
  std::unique_ptr<grpc::ClientContext> context_;
  v1::ForwardSummary summary_;
  std::unique_ptr<grpc::ClientWriter<v1::Step>> writer_;
  std::mutex cancel_mu_;  // never held across a write
  grpc::ClientContext* cancel_ = nullptr;
};

}  // namespace strata

#endif  // STRATA_SERVICES_COORDINATOR_STAGE0_LINK_H_
