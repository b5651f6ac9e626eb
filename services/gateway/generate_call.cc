#include "services/gateway/generate_call.h"

#include <cctype>

#include "absl/strings/str_cat.h"
#include "services/common/server.h"
#include "services/common/wire.h"
#include "services/gateway/gateway_service.h"

namespace strata {
namespace {

std::string FinishName(v1::FinishReason reason) {
  std::string name = v1::FinishReason_Name(reason);
  name = name.substr(std::string("FINISH_REASON_").size());
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

}  // namespace

GenerateCall::GenerateCall(GatewayService* service, grpc::CallbackServerContext* context)
    : service_(service), context_(context) {
  mailbox_->call = this;
}

void GenerateCall::Begin(const grpc::ByteBuffer& wire) {
  std::lock_guard<std::mutex> lock(mu_);
  GatewayService& s = *service_;
  if (s.draining_) {
    return FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the gateway is draining"),
                        "rejected");
  }
  if (s.api_keys_ != nullptr) {
    if (absl::Status st = s.api_keys_->Check(*context_); !st.ok()) {
      return FinishLocked(ToGrpcStatus(st), "unauthenticated");
    }
  }
  if (absl::Status st = ParseRequest(wire, &request_); !st.ok()) {
    return FinishLocked(ToGrpcStatus(st), "invalid");
  }
  absl::StatusOr<v1::Submit> submit = ValidateAndTokenize(request_, *s.tokenizer_, s.model_);
  if (!submit.ok()) return FinishLocked(ToGrpcStatus(submit.status()), "invalid");
  prompt_tokens_ = submit->prompt_ids_size();
  if (s.pending_.fetch_add(1) >= s.options_.max_pending) {
    s.pending_.fetch_sub(1);
    return FinishLocked(
        grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                     absl::StrCat("queue full: ", s.options_.max_pending,
                                  " requests are already in flight through this gateway "
                                  "(--max-pending); retry later")),
        "rejected");
  }
  counted_pending_ = true;
  if (s.metrics_ != nullptr) {
    s.metrics_->queue_length.Set(s.pending_);
    s.metrics_->prompt_tokens.Increment(prompt_tokens_);
  }
  matcher_.emplace(std::vector<std::string>(request_.stop().begin(), request_.stop().end()));
  detok_.emplace(*s.tokenizer_, /*at_text_start=*/false);
  std::shared_ptr<Mailbox> mailbox = mailbox_;
  absl::StatusOr<uint64_t> id =
      s.session_->Submit(*std::move(submit), [mailbox](const v1::SessionEvent& event) {
        std::lock_guard<std::mutex> lock(mailbox->mu);
        if (mailbox->call != nullptr) mailbox->call->OnEvent(event);
      });
  if (!id.ok()) return FinishLocked(ToGrpcStatus(id.status()), "error");
  id_ = *id;
}

void GenerateCall::OnEvent(const v1::SessionEvent& e) {
  std::lock_guard<std::mutex> lock(mu_);
  if (final_.has_value()) return;
  GatewayMetrics* metrics = service_->metrics_;
  if (e.admitted()) {
    // Queue time is observed once, even across a resubmission.
    if (!admitted_ && metrics != nullptr) {
      metrics->queue_time.Observe(std::chrono::duration<double>(Clock::now() - start_).count());
    }
    admitted_ = true;
    return;
  }
  if (e.error_code() != 0) {
    upstream_done_ = true;  // the coordinator has already forgotten it
    return FinishLocked(grpc::Status(static_cast<grpc::StatusCode>(e.error_code()), e.error()),
                        "error");
  }
  v1::GenerateResponse response;
  v1::Delta* delta = response.mutable_delta();
  std::string text;
  for (int32_t t : e.token_ids()) {
    const auto now = Clock::now();
    if (ttft_ < 0) {
      ttft_ = std::chrono::duration<double>(now - start_).count();
      if (metrics != nullptr) metrics->ttft.Observe(ttft_);
    } else if (metrics != nullptr) {
      metrics->inter_token.Observe(std::chrono::duration<double>(now - last_token_).count());
    }
    last_token_ = now;
    ++completion_;
    if (metrics != nullptr) metrics->completion_tokens.Increment();
    delta->add_token_ids(t);
    text += detok_->Push(t);
  }
  const bool last = e.finish() != v1::FINISH_REASON_UNSPECIFIED;
  if (last) text += detok_->Flush();
  std::string shown = matcher_->Push(text);
  if (last && !matcher_->matched()) shown += matcher_->Flush();
  delta->set_text(shown);
  if (delta->token_ids_size() > 0 || !shown.empty()) QueueLocked(response);
  if (matcher_->matched()) {
    SendFinishedLocked(v1::FINISH_REASON_STOP_SEQUENCE);  // cancels upstream
  } else if (last) {
    upstream_done_ = true;
    SendFinishedLocked(e.finish());
  }
}

void GenerateCall::SendFinishedLocked(v1::FinishReason reason) {
  v1::GenerateResponse response;
  v1::Finished* f = response.mutable_finished();
  f->set_reason(reason);
  f->set_prompt_tokens(prompt_tokens_);
  f->set_completion_tokens(completion_);
  f->set_time_to_first_token_seconds(std::max(0.0, ttft_));
  f->set_request_id(request_.request_id());
  if (matcher_->matched()) f->set_stop_sequence(matcher_->matched_stop());
  QueueLocked(response);
  if (GatewayMetrics* metrics = service_->metrics_; metrics != nullptr) {
    metrics->duration.Observe(std::chrono::duration<double>(Clock::now() - start_).count());
  }
  FinishLocked(grpc::Status::OK, "ok", FinishName(reason).c_str());
}

void GenerateCall::QueueLocked(const v1::GenerateResponse& response) {
  queue_.push_back(Serialize(response));
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
  std::lock_guard<std::mutex> lock(mu_);
  queue_.pop_front();
  if (!ok) {
    queue_.clear();
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"), "cancelled");
  }
  WriteNextLocked();
}

void GenerateCall::OnCancel() {
  std::lock_guard<std::mutex> lock(mu_);
  if (final_.has_value()) return;
  const bool deadline = context_->deadline() <= std::chrono::system_clock::now();
  FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the request"),
               deadline ? "deadline" : "cancelled");
}

void GenerateCall::FinishLocked(const grpc::Status& status, const char* outcome,
                                const char* finish) {
  if (final_.has_value()) return;
  final_ = status;
  GatewayService& s = *service_;
  if (s.metrics_ != nullptr) s.metrics_->Request(outcome, finish).Increment();
  if (id_ != 0) {
    if (upstream_done_) {
      s.session_->Forget(id_);
    } else {
      s.session_->Cancel(id_);
    }
    upstream_done_ = true;
  }
  if (!writing_) WriteNextLocked();
}

void GenerateCall::OnDone() {
  {
    std::lock_guard<std::mutex> lock(mailbox_->mu);
    mailbox_->call = nullptr;
  }
  if (counted_pending_) {
    service_->pending_.fetch_sub(1);
    if (service_->metrics_ != nullptr) service_->metrics_->queue_length.Set(service_->pending_);
  }
  delete this;
}

}  // namespace strata
