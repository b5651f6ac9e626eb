#include "services/gateway/request_stream.h"

#include <cctype>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "services/common/server.h"
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

RequestStream::RequestStream(GatewayService* service, Emit emit, End end)
    : service_(service), emit_(std::move(emit)), end_(std::move(end)) {
  mailbox_->stream = this;
}

RequestStream::~RequestStream() { Close(); }

void RequestStream::Close() {
  {
    std::lock_guard<std::mutex> lock(mailbox_->mu);
    mailbox_->stream = nullptr;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (id_ != 0 && !upstream_done_) service_->session_->Cancel(id_);
  upstream_done_ = true;
  ended_ = true;
  emit_ = nullptr;
  end_ = nullptr;
  ReleasePlaceLocked();
}

void RequestStream::ReleasePlaceLocked() {
  if (!counted_pending_) return;
  counted_pending_ = false;
  service_->pending_.fetch_sub(1);
  if (service_->metrics_ != nullptr) service_->metrics_->queue_length.Set(service_->pending_);
}

void RequestStream::Begin(const v1::GenerateRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ended_) return;  // cancelled before it began
  GatewayService& s = *service_;
  request_id_ = request.request_id();
  if (s.draining_) {
    return FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the gateway is draining"),
                        "rejected");
  }
  absl::StatusOr<v1::Submit> submit = ValidateAndTokenize(request, *s.tokenizer_, s.model_);
  if (!submit.ok()) return FinishLocked(ToGrpcStatus(submit.status()), "invalid");
  prompt_ids_.assign(submit->prompt_ids().begin(), submit->prompt_ids().end());
  if (request.has_messages() && !request.messages().tools_json().empty() && s.model_.chat.ok()) {
    tool_format_ = s.model_.chat->tool_call_format();
  }
  seed_ = submit->sampling().seed();
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
    s.metrics_->prompt_tokens.Increment(static_cast<double>(prompt_ids_.size()));
  }
  matcher_.emplace(std::vector<std::string>(request.stop().begin(), request.stop().end()));
  detok_.emplace(*s.tokenizer_, /*at_text_start=*/false);
  std::shared_ptr<Mailbox> mailbox = mailbox_;
  absl::StatusOr<uint64_t> id =
      s.session_->Submit(*std::move(submit), [mailbox](const v1::SessionEvent& event) {
        std::lock_guard<std::mutex> lock(mailbox->mu);
        if (mailbox->stream != nullptr) mailbox->stream->OnEvent(event);
      });
  if (!id.ok()) return FinishLocked(ToGrpcStatus(id.status()), "error");
  id_ = *id;
}

void RequestStream::OnEvent(const v1::SessionEvent& e) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ended_) return;
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
  *delta->mutable_logprobs() = e.logprobs();
  *delta->mutable_prompt_logprobs() = e.prompt_logprobs();
  if (e.epoch() != 0) map_epoch_ = e.epoch();
  delta->set_map_epoch(map_epoch_);
  delta->set_index(index_);
  const bool last = e.finish() != v1::FINISH_REASON_UNSPECIFIED;
  if (last) text += detok_->Flush();
  std::string shown = matcher_->Push(text);
  if (last && !matcher_->matched()) shown += matcher_->Flush();
  if (tool_format_ != ToolCallFormat::kNone)
    shown = HoldToolText(shown, last || matcher_->matched());
  delta->set_text(shown);
  if ((delta->token_ids_size() > 0 || !shown.empty() || delta->prompt_logprobs_size() > 0) &&
      emit_) {
    emit_(response);
  }
  if (matcher_->matched()) {
    SendFinishedLocked(v1::FINISH_REASON_STOP_SEQUENCE);  // cancels upstream
  } else if (last) {
    upstream_done_ = true;
    SendFinishedLocked(e.finish());
  }
}

std::string RequestStream::HoldToolText(const std::string& text, bool end) {
  tool_text_ += text;
  size_t show = ShowableToolText(tool_format_, tool_text_);
  if (end) {
    ToolCallOutput parsed = ParseToolCalls(tool_format_, tool_text_);
    tool_calls_ = std::move(parsed.calls);
    // No calls: everything held is content after all; calls: the content
    // before them (already shown, as it came before the first call).
    show = tool_calls_.empty() ? tool_text_.size() : parsed.content.size();
  }
  if (show <= tool_shown_) return "";
  std::string out = tool_text_.substr(tool_shown_, show - tool_shown_);
  tool_shown_ = show;
  return out;
}

void RequestStream::SendFinishedLocked(v1::FinishReason reason) {
  v1::GenerateResponse response;
  v1::Finished* f = response.mutable_finished();
  if (!tool_calls_.empty()) {
    reason = v1::FINISH_REASON_TOOL_CALLS;
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    for (const ParsedToolCall& call : tool_calls_) {
      v1::ToolCall* t = f->add_tool_calls();
      t->set_id(absl::StrFormat("call_%016x%08x", rng(), static_cast<uint32_t>(rng())));
      t->set_name(call.name);
      t->set_arguments(call.arguments);
    }
  }
  f->set_reason(reason);
  f->set_prompt_tokens(static_cast<uint32_t>(prompt_ids_.size()));
  f->set_completion_tokens(completion_);
  f->set_time_to_first_token_seconds(std::max(0.0, ttft_));
  f->set_request_id(request_id_);
  f->set_seed(seed_);
  f->set_map_epoch(map_epoch_);
  f->set_index(index_);
  if (matcher_->matched()) f->set_stop_sequence(matcher_->matched_stop());
  if (emit_) emit_(response);
  if (GatewayMetrics* metrics = service_->metrics_; metrics != nullptr) {
    metrics->duration.Observe(std::chrono::duration<double>(Clock::now() - start_).count());
  }
  FinishLocked(grpc::Status::OK, "ok", FinishName(reason).c_str());
}

void RequestStream::Cancel(const char* outcome, const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, why), outcome);
}

void RequestStream::FinishLocked(const grpc::Status& status, const char* outcome,
                                 const char* finish) {
  if (ended_) return;
  ended_ = true;
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
  // The place in the gateway's queue frees as the request ends, not when
  // gRPC is done with the call: a client that cancels and retries at once
  // finds it free.
  ReleasePlaceLocked();
  if (end_) end_(status);
}

}  // namespace strata
