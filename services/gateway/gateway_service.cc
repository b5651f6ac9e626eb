#include "services/gateway/gateway_service.h"

#include <cctype>
#include <chrono>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "runtime/sampler.h"
#include "services/common/convert.h"
#include "services/common/server.h"
#include "services/gateway/stop_matcher.h"

namespace strata {
namespace {

constexpr int kMaxStops = 16;
constexpr size_t kMaxStopBytes = 256;
constexpr uint32_t kDefaultMaxTokens = 64;
// How often a streaming handler looks for client cancellation between events.
constexpr int kPollMs = 2;

v1::FinishReason FinishOf(const v1::SessionEvent& e) { return e.finish(); }

}  // namespace

absl::StatusOr<v1::Submit> ValidateAndTokenize(const v1::GenerateRequest& request,
                                               const Tokenizer& tokenizer,
                                               const ServedModel& model) {
  if (request.stop_size() > kMaxStops) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop: at most ", kMaxStops, " sequences, got ", request.stop_size()));
  }
  for (int i = 0; i < request.stop_size(); ++i) {
    const std::string& s = request.stop(i);
    if (s.empty() || s.size() > kMaxStopBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop[", i, "]: must be 1 to ", kMaxStopBytes, " bytes, got ", s.size()));
    }
  }
  v1::Submit submit;
  const uint32_t max_tokens = request.has_max_tokens() ? request.max_tokens() : kDefaultMaxTokens;
  if (max_tokens == 0) return absl::InvalidArgumentError("max_tokens: must be positive");
  submit.set_max_tokens(max_tokens);
  const SamplingParams sampling = SamplingFromProto(request.sampling());
  if (absl::Status st = ValidateSamplingParams(sampling); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.", st.message()));
  }
  *submit.mutable_sampling() = SamplingToProto(sampling);
  submit.set_ignore_eos(request.ignore_eos());

  std::vector<int32_t> ids;
  switch (request.input_case()) {
    case v1::GenerateRequest::kPrompt: {
      const bool bos = request.has_add_bos() ? request.add_bos() : tokenizer.add_bos_by_default();
      auto encoded = tokenizer.Encode(request.prompt(), bos);
      if (!encoded.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("prompt: ", encoded.status().message()));
      }
      ids = std::move(*encoded);
      break;
    }
    case v1::GenerateRequest::kPromptTokens:
      ids.assign(request.prompt_tokens().ids().begin(), request.prompt_tokens().ids().end());
      for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= model.vocab_size) {
          return absl::InvalidArgumentError(absl::StrCat("prompt_tokens.ids[", i, "]: ", ids[i],
                                                         " is outside the vocabulary [0, ",
                                                         model.vocab_size, ")"));
        }
      }
      break;
    case v1::GenerateRequest::kMessages: {
      if (!model.chat.ok()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "messages: this model has no usable chat template: ", model.chat.status().message()));
      }
      std::vector<ChatMessage> messages;
      for (const v1::ChatMessage& m : request.messages().messages()) {
        messages.push_back({m.role(), m.content()});
      }
      const bool open = !request.messages().has_add_generation_prompt() ||
                        request.messages().add_generation_prompt();
      auto text = model.chat->Render(messages, open);
      if (!text.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("messages: ", text.status().message()));
      }
      auto encoded = tokenizer.Encode(*text, /*add_bos=*/false);
      if (!encoded.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("messages: ", encoded.status().message()));
      }
      ids = std::move(*encoded);
      break;
    }
    case v1::GenerateRequest::INPUT_NOT_SET:
      return absl::InvalidArgumentError("prompt: required (set prompt, prompt_tokens or messages)");
  }
  if (ids.empty()) return absl::InvalidArgumentError("prompt: encodes to no tokens");
  if (static_cast<int64_t>(ids.size()) >= model.context) {
    return absl::OutOfRangeError(absl::StrCat("prompt: ", ids.size(),
                                              " tokens do not fit the context of ", model.context,
                                              " tokens (at least one must remain to generate)"));
  }
  submit.mutable_prompt_ids()->Add(ids.begin(), ids.end());
  return submit;
}

GatewayMetrics::GatewayMetrics(prometheus::Registry& r, const std::string& model_name)
    : model(model_name),
      requests(prometheus::BuildCounter()
                   .Name("strata_gateway_requests_total")
                   .Help("Generate calls by outcome and finish reason")
                   .Register(r)),
      queue_length(prometheus::BuildGauge()
                       .Name("strata_gateway_queue_length")
                       .Help("Requests in flight through this gateway (queued or generating)")
                       .Register(r)
                       .Add({{"model", model_name}})),
      queue_time(prometheus::BuildHistogram()
                     .Name("strata_gateway_queue_time_seconds")
                     .Help("From the request's arrival to its admission by the coordinator "
                           "(a KV slot in the running batch)")
                     .Register(r)
                     .Add({{"model", model_name}}, LatencyBuckets())),
      ttft(prometheus::BuildHistogram()
               .Name("strata_gateway_time_to_first_token_seconds")
               .Help("From the request's arrival to its first generated token")
               .Register(r)
               .Add({{"model", model_name}}, LatencyBuckets())),
      inter_token(prometheus::BuildHistogram()
                      .Name("strata_gateway_inter_token_latency_seconds")
                      .Help("Between consecutive generated tokens of a stream")
                      .Register(r)
                      .Add({{"model", model_name}}, LatencyBuckets())),
      duration(prometheus::BuildHistogram()
                   .Name("strata_gateway_request_duration_seconds")
                   .Help("From arrival to the final message, for completed requests")
                   .Register(r)
                   .Add({{"model", model_name}}, LatencyBuckets())),
      prompt_tokens(prometheus::BuildCounter()
                        .Name("strata_gateway_prompt_tokens_total")
                        .Help("Prompt tokens of admitted requests")
                        .Register(r)
                        .Add({{"model", model_name}})),
      completion_tokens(prometheus::BuildCounter()
                            .Name("strata_gateway_completion_tokens_total")
                            .Help("Tokens streamed to clients")
                            .Register(r)
                            .Add({{"model", model_name}})) {}

prometheus::Counter& GatewayMetrics::Request(const std::string& outcome,
                                             const std::string& finish_reason) {
  return requests.Add({{"model", model}, {"outcome", outcome}, {"finish_reason", finish_reason}});
}

GatewayService::GatewayService(const GatewayOptions& options, std::unique_ptr<Tokenizer> tokenizer,
                               ServedModel model, SessionClient* session, GatewayMetrics* metrics)
    : options_(options),
      tokenizer_(std::move(tokenizer)),
      model_(model),
      session_(session),
      metrics_(metrics) {}

grpc::Status GatewayService::Generate(grpc::ServerContext* context,
                                      const v1::GenerateRequest* request,
                                      grpc::ServerWriter<v1::GenerateResponse>* writer) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto count = [&](const char* outcome, const char* finish = "none") {
    if (metrics_ != nullptr) metrics_->Request(outcome, finish).Increment();
  };
  if (draining_) {
    count("rejected");
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the gateway is draining");
  }
  absl::StatusOr<v1::Submit> submit = ValidateAndTokenize(*request, *tokenizer_, model_);
  if (!submit.ok()) {
    count("invalid");
    return ToGrpcStatus(submit.status());
  }
  const int prompt_tokens = submit->prompt_ids_size();
  if (pending_.fetch_add(1) >= options_.max_pending) {
    pending_.fetch_sub(1);
    count("rejected");
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("queue full: ", options_.max_pending,
                                     " requests are already in flight through this gateway "
                                     "(--max-pending); retry later"));
  }
  if (metrics_ != nullptr) {
    metrics_->queue_length.Set(pending_);
    metrics_->prompt_tokens.Increment(prompt_tokens);
  }
  absl::Cleanup release = [&] {
    pending_.fetch_sub(1);
    if (metrics_ != nullptr) metrics_->queue_length.Set(pending_);
  };
  uint64_t id = 0;
  auto inbox = session_->Submit(*std::move(submit), &id);
  if (!inbox.ok()) {
    count("error");
    return ToGrpcStatus(inbox.status());
  }
  bool done = false;
  absl::Cleanup cancel = [&] {
    if (done) {
      session_->Forget(id);
    } else {
      session_->Cancel(id);
    }
  };

  std::vector<std::string> stops(request->stop().begin(), request->stop().end());
  StopMatcher matcher(std::move(stops));
  IncrementalDetokenizer detok(*tokenizer_, /*at_text_start=*/false);
  int completion = 0;
  bool admitted = false;  // queue time is observed once, even across a resubmission
  double ttft = -1;
  Clock::time_point last_token;
  v1::GenerateResponse response;
  auto finish = [&](v1::FinishReason reason) {
    response.Clear();
    v1::Finished* f = response.mutable_finished();
    f->set_reason(reason);
    f->set_prompt_tokens(prompt_tokens);
    f->set_completion_tokens(completion);
    f->set_time_to_first_token_seconds(std::max(0.0, ttft));
    f->set_request_id(request->request_id());
    if (matcher.matched()) f->set_stop_sequence(matcher.matched_stop());
    writer->Write(response);
    if (metrics_ != nullptr) {
      std::string name = v1::FinishReason_Name(reason);
      name = name.substr(std::string("FINISH_REASON_").size());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      metrics_->Request("ok", name).Increment();
      metrics_->duration.Observe(std::chrono::duration<double>(Clock::now() - start).count());
    }
    return grpc::Status::OK;
  };

  while (true) {
    std::deque<v1::SessionEvent> events = (*inbox)->Take(kPollMs);
    if (context->IsCancelled()) {
      const bool deadline = context->deadline() <= std::chrono::system_clock::now();
      count(deadline ? "deadline" : "cancelled");
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the request");
    }
    for (const v1::SessionEvent& e : events) {
      if (e.admitted()) {
        if (!admitted && metrics_ != nullptr) {
          metrics_->queue_time.Observe(std::chrono::duration<double>(Clock::now() - start).count());
        }
        admitted = true;
        continue;
      }
      if (e.error_code() != 0) {
        done = true;  // the coordinator has already forgotten it
        count("error");
        return grpc::Status(static_cast<grpc::StatusCode>(e.error_code()), e.error());
      }
      response.Clear();
      v1::Delta* delta = response.mutable_delta();
      std::string text;
      for (int32_t t : e.token_ids()) {
        const auto now = Clock::now();
        if (ttft < 0) {
          ttft = std::chrono::duration<double>(now - start).count();
          if (metrics_ != nullptr) metrics_->ttft.Observe(ttft);
        } else if (metrics_ != nullptr) {
          metrics_->inter_token.Observe(std::chrono::duration<double>(now - last_token).count());
        }
        last_token = now;
        ++completion;
        if (metrics_ != nullptr) metrics_->completion_tokens.Increment();
        delta->add_token_ids(t);
        text += detok.Push(t);
      }
      const bool last = FinishOf(e) != v1::FINISH_REASON_UNSPECIFIED;
      if (last) text += detok.Flush();
      std::string shown = matcher.Push(text);
      if (last && !matcher.matched()) shown += matcher.Flush();
      delta->set_text(shown);
      if ((delta->token_ids_size() > 0 || !shown.empty()) && !writer->Write(response)) {
        count("cancelled");
        return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      }
      if (matcher.matched()) return finish(v1::FINISH_REASON_STOP_SEQUENCE);  // cancels upstream
      if (last) {
        done = true;
        return finish(FinishOf(e));
      }
    }
  }
}

grpc::Status GatewayService::Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* request,
                                      v1::TokenizeResponse* response) {
  const bool bos = request->has_add_bos() ? request->add_bos() : tokenizer_->add_bos_by_default();
  auto ids = tokenizer_->Encode(request->text(), bos);
  if (!ids.ok()) {
    return ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message())));
  }
  for (int32_t id : *ids) {
    response->add_token_ids(id);
    response->add_pieces(tokenizer_->TokenBytes(id));
  }
  return grpc::Status::OK;
}

grpc::Status GatewayService::GetModelInfo(grpc::ServerContext* context,
                                          const v1::GetModelInfoRequest*, v1::ModelInfo* response) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::GetClusterInfoRequest req;
  v1::ClusterInfo info;
  grpc::Status st = session_->stub().GetClusterInfo(&ctx, req, &info);
  if (!st.ok()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        absl::StrCat("the coordinator did not answer: ", st.error_message()));
  }
  (void)context;
  *response = info.model();
  return grpc::Status::OK;
}

}  // namespace strata
