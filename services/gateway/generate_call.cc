#include "services/gateway/generate_call.h"

#include "services/common/server.h"
#include "services/common/wire.h"
#include "services/gateway/gateway_service.h"

namespace strata {

GenerateCall::GenerateCall(GatewayService* service, grpc::CallbackServerContext* context)
    : service_(service),
      context_(context),
      group_(std::make_unique<RequestGroup>(
          service, [this](int, const v1::GenerateResponse& r) { Queue(r); },
          [this](const grpc::Status& st) { End(st); })) {}

void GenerateCall::Begin(const grpc::ByteBuffer& wire) {
  if (absl::Status st = service_->Authenticate(*context_); !st.ok()) {
    service_->Count("unauthenticated");
    return End(ToGrpcStatus(st));
  }
  v1::GenerateRequest request;
  if (absl::Status st = ParseRequest(wire, &request); !st.ok()) {
    service_->Count("invalid");
    return End(ToGrpcStatus(st));
  }
  group_->Begin({request});
}

void GenerateCall::Queue(const v1::GenerateResponse& response) {
  std::lock_guard<std::mutex> lock(mu_);
  if (final_.has_value()) return;
  queue_.push_back(Serialize(response));
  if (!writing_) WriteNextLocked();
}

void GenerateCall::End(const grpc::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (final_.has_value()) return;
  final_ = status;
  if (!writing_) WriteNextLocked();
}

void GenerateCall::WriteNextLocked() {
  if (!queue_.empty()) {
    writing_ = true;
    StartWrite(&queue_.front());
    return;
  }
  writing_ = false;
  if (final_.has_value() && !finish_called_) {
    finish_called_ = true;
    Finish(*final_);
  }
}

void GenerateCall::OnWriteDone(bool ok) {
  if (!ok) group_->Cancel("cancelled", "the client went away");  // calls End
  std::lock_guard<std::mutex> lock(mu_);
  queue_.pop_front();
  if (!ok) queue_.clear();
  WriteNextLocked();
}

void GenerateCall::OnCancel() {
  const bool deadline = context_->deadline() <= std::chrono::system_clock::now();
  group_->Cancel(deadline ? "deadline" : "cancelled", "the client cancelled the request");
}

void GenerateCall::OnDone() {
  group_->Close();
  delete this;
}

}  // namespace strata
