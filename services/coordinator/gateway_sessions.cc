#include "services/coordinator/gateway_sessions.h"

#include "absl/strings/str_cat.h"
#include "runtime/sampler.h"
#include "services/common/convert.h"

namespace strata {

v1::FinishReason FinishToProto(Finish f) {
  switch (f) {
    case Finish::kNone:
      return v1::FINISH_REASON_UNSPECIFIED;
    case Finish::kLength:
      return v1::FINISH_REASON_LENGTH;
    case Finish::kEos:
      return v1::FINISH_REASON_EOS;
    case Finish::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

absl::StatusOr<SequenceSpec> SpecFromSubmit(uint64_t session, const v1::Submit& submit,
                                            const ModelConfig& config, int64_t max_context) {
  SequenceSpec spec;
  spec.session = session;
  spec.request_id = submit.request_id();
  spec.prompt.assign(submit.prompt_ids().begin(), submit.prompt_ids().end());
  spec.sampling = SamplingFromProto(submit.sampling());
  spec.max_tokens = submit.max_tokens();
  spec.ignore_eos = submit.ignore_eos();
  spec.logprobs = submit.has_logprobs() ? submit.logprobs() : -1;
  spec.stop_token_ids.assign(submit.stop_token_ids().begin(), submit.stop_token_ids().end());
  spec.min_tokens = submit.min_tokens();
  spec.prompt_logprobs = submit.has_prompt_logprobs() ? submit.prompt_logprobs() : -1;
  spec.submitted = std::chrono::steady_clock::now();
  if (absl::Status st = ValidateSamplingParams(spec.sampling); !st.ok()) return st;
  if (submit.has_logprobs() && (submit.logprobs() < 0 || submit.logprobs() > 20)) {
    return absl::InvalidArgumentError("submit: logprobs must be in [0, 20]");
  }
  if (submit.has_prompt_logprobs() &&
      (submit.prompt_logprobs() < 0 || submit.prompt_logprobs() > 20)) {
    return absl::InvalidArgumentError("submit: prompt_logprobs must be in [0, 20]");
  }
  if (spec.prompt.empty() || spec.max_tokens <= 0) {
    return absl::InvalidArgumentError("submit: prompt_ids and max_tokens must be non-empty");
  }
  if (static_cast<int64_t>(spec.prompt.size()) >= max_context) {
    return absl::OutOfRangeError(absl::StrCat("submit: prompt of ", spec.prompt.size(),
                                              " tokens does not fit the context of ", max_context));
  }
  for (int32_t t : spec.stop_token_ids) {
    if (t < 0 || t >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "submit: stop token id ", t, " is outside the vocabulary [0, ", config.vocab_size, ")"));
    }
  }
  if (spec.stop_token_ids.size() > 64 || spec.min_tokens > spec.max_tokens) {
    return absl::InvalidArgumentError(
        "submit: at most 64 stop_token_ids, and min_tokens <= max_tokens");
  }
  for (int32_t t : spec.prompt) {
    if (t < 0 || t >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "submit: token id ", t, " is outside the vocabulary [0, ", config.vocab_size, ")"));
    }
  }
  return spec;
}

uint64_t GatewaySessions::Open(Stream* stream) {
  auto record = std::make_shared<Record>();
  record->stream = stream;
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t id = next_++;
  sessions_[id] = std::move(record);
  return id;
}

void GatewaySessions::Close(uint64_t session) {
  std::shared_ptr<Record> record;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sessions_.find(session);
    if (it == sessions_.end()) return;
    record = std::move(it->second);
    sessions_.erase(it);
  }
  std::lock_guard<std::mutex> write(record->write_mu);
  record->open = false;
}

void GatewaySessions::Send(uint64_t session, const v1::SessionEvent& event) {
  v1::SessionEvents batch;
  *batch.add_events() = event;
  SendBatch(session, batch);
}

void GatewaySessions::SendBatch(uint64_t session, const v1::SessionEvents& batch) {
  std::shared_ptr<Record> record;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sessions_.find(session);
    if (it == sessions_.end()) return;
    record = it->second;
  }
  std::lock_guard<std::mutex> write(record->write_mu);
  if (record->open) record->stream->Write(batch);
}

void GatewaySessions::Deliver(std::vector<Emission> emissions, bool admitted,
                              const std::map<uint64_t, v1::TokenLogprobs>* logprobs,
                              uint64_t epoch) {
  // One message per session: its events of this step, in order.
  std::map<uint64_t, v1::SessionEvents> batches;
  for (Emission& e : emissions) {
    v1::SessionEvent& event = *batches[e.session].add_events();
    event.set_request_id(e.request_id);
    for (int32_t t : e.tokens) event.add_token_ids(t);
    if (!e.tokens.empty()) event.set_epoch(epoch);
    if (logprobs != nullptr && !e.tokens.empty()) {
      if (auto it = logprobs->find(e.seq_id); it != logprobs->end()) {
        *event.add_logprobs() = it->second;
      }
    }
    event.set_finish(FinishToProto(e.finish));
    event.set_admitted(admitted);
    if (!e.error.ok()) {
      event.set_error_code(static_cast<int>(e.error.code()));
      event.set_error(std::string(e.error.message()));
    }
  }
  for (const auto& [session, batch] : batches) SendBatch(session, batch);
}

void GatewaySessions::Refuse(uint64_t session, uint64_t request_id, const absl::Status& error) {
  v1::SessionEvent event;
  event.set_request_id(request_id);
  event.set_error_code(static_cast<int>(error.code()));
  event.set_error(std::string(error.message()));
  Send(session, event);
}

}  // namespace strata
