#include "services/gateway/gateway_service.h"

#include <cctype>
#include <chrono>
#include <random>

#include "absl/strings/str_cat.h"
#include "runtime/sampler.h"
#include "runtime/status_macros.h"
#include "services/common/convert.h"
#include "services/common/server.h"
#include "services/common/wire.h"
#include "services/gateway/generate_call.h"

namespace strata {
namespace {

constexpr int kMaxStops = 16;
constexpr size_t kMaxStopBytes = 256;
constexpr uint32_t kDefaultMaxTokens = 64;
constexpr size_t kMaxRequestIdBytes = 256;
constexpr int kMaxMessages = 4096;

// OUT_OF_RANGE when `text` cannot fit the context whatever it encodes to.
absl::Status CheckTextBytes(const char* field, std::string_view text, const Tokenizer& tokenizer,
                            int64_t context) {
  const int64_t at_least = tokenizer.MinTokens(text);
  if (at_least < context) return absl::OkStatus();
  return absl::OutOfRangeError(absl::StrCat(field, ": ", text.size(), " bytes make at least ",
                                            at_least, " tokens, which do not fit the context of ",
                                            context,
                                            " tokens (at least one must remain to generate)"));
}

absl::StatusOr<nlohmann::ordered_json> ParseJsonField(const std::string& field,
                                                      const std::string& text) {
  try {
    return nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": not valid JSON: ", e.what()));
  }
}

}  // namespace

absl::StatusOr<ChatConversation> ChatFromProto(const v1::Conversation& conversation) {
  ChatConversation chat;
  chat.options.add_generation_prompt =
      !conversation.has_add_generation_prompt() || conversation.add_generation_prompt();
  for (int i = 0; i < conversation.messages_size(); ++i) {
    const v1::ChatMessage& m = conversation.messages(i);
    ChatMessage message{m.role(), m.content()};
    if (!m.tool_calls_json().empty()) {
      const std::string field = absl::StrCat("messages[", i, "].tool_calls");
      ASSIGN_OR_RETURN(nlohmann::ordered_json calls, ParseJsonField(field, m.tool_calls_json()));
      if (!calls.is_array()) return absl::InvalidArgumentError(field + ": must be an array");
      // Arguments sent as a JSON string reach the template as the object,
      // as vLLM and transformers' own examples give them.
      for (auto& call : calls) {
        if (!call.is_object())
          return absl::InvalidArgumentError(field + ": each call must be an object");
        auto fn = call.find("function");
        if (fn == call.end() || !fn->is_object()) continue;
        auto args = fn->find("arguments");
        if (args == fn->end() || !args->is_string()) continue;
        try {
          nlohmann::ordered_json parsed = nlohmann::ordered_json::parse(args->get<std::string>());
          if (parsed.is_object()) *args = std::move(parsed);
        } catch (const nlohmann::json::exception&) {
        }
      }
      message.extra["tool_calls"] = std::move(calls);
    }
    if (!m.tool_call_id().empty()) message.extra["tool_call_id"] = m.tool_call_id();
    if (!m.name().empty()) message.extra["name"] = m.name();
    chat.messages.push_back(std::move(message));
  }
  if (!conversation.tools_json().empty()) {
    ASSIGN_OR_RETURN(chat.options.tools,
                     ParseJsonField("messages.tools", conversation.tools_json()));
    if (!chat.options.tools.is_array()) {
      return absl::InvalidArgumentError("messages.tools: must be an array of tool definitions");
    }
    for (size_t i = 0; i < chat.options.tools.size(); ++i) {
      const auto& t = chat.options.tools[i];
      const bool ok = t.is_object() && t.contains("function") && t["function"].is_object() &&
                      t["function"].contains("name") && t["function"]["name"].is_string();
      if (!ok) {
        return absl::InvalidArgumentError(
            absl::StrCat("messages.tools[", i,
                         "]: must be {\"type\": \"function\", \"function\": {\"name\": ...}}"));
      }
    }
  }
  if (!conversation.template_kwargs_json().empty()) {
    ASSIGN_OR_RETURN(chat.options.kwargs, ParseJsonField("messages.template_kwargs",
                                                         conversation.template_kwargs_json()));
    if (!chat.options.kwargs.is_object()) {
      return absl::InvalidArgumentError("messages.template_kwargs: must be a JSON object");
    }
    for (const char* reserved : {"messages", "tools", "documents", "add_generation_prompt"}) {
      if (chat.options.kwargs.contains(reserved)) {
        return absl::InvalidArgumentError(
            absl::StrCat("messages.template_kwargs: may not set \"", reserved, "\""));
      }
    }
  }
  return chat;
}

uint64_t FreshSeed() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng() >> 11;
}

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
  if (request.request_id().size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("request_id: at most ", kMaxRequestIdBytes,
                                                   " bytes, got ", request.request_id().size()));
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
  if (!request.sampling().has_seed()) submit.mutable_sampling()->set_seed(FreshSeed());
  submit.set_ignore_eos(request.ignore_eos());
  if (request.stop_token_ids_size() > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop_token_ids: at most 64, got ", request.stop_token_ids_size()));
  }
  for (int i = 0; i < request.stop_token_ids_size(); ++i) {
    const int32_t t = request.stop_token_ids(i);
    if (t < 0 || t >= model.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("stop_token_ids[", i, "]: ", t,
                                                     " is outside the vocabulary [0, ",
                                                     model.vocab_size, ")"));
    }
  }
  submit.mutable_stop_token_ids()->CopyFrom(request.stop_token_ids());
  if (request.min_tokens() > max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("min_tokens: ", request.min_tokens(),
                                                   " is more than max_tokens ", max_tokens));
  }
  submit.set_min_tokens(request.min_tokens());
  if (request.has_logprobs()) {
    if (request.logprobs() < 0 || request.logprobs() > 20) {
      return absl::InvalidArgumentError(
          absl::StrCat("logprobs: must be in [0, 20], got ", request.logprobs()));
    }
    submit.set_logprobs(request.logprobs());
  }
  if (request.has_prompt_logprobs()) {
    if (request.prompt_logprobs() < 0 || request.prompt_logprobs() > 20) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt_logprobs: must be in [0, 20], got ", request.prompt_logprobs()));
    }
    submit.set_prompt_logprobs(request.prompt_logprobs());
  }

  std::vector<int32_t> ids;
  switch (request.input_case()) {
    case v1::GenerateRequest::kPrompt: {
      const bool bos = request.has_add_bos() ? request.add_bos() : tokenizer.add_bos_by_default();
      RETURN_IF_ERROR(CheckTextBytes("prompt", request.prompt(), tokenizer, model.context));
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
      if (request.messages().messages_size() > kMaxMessages) {
        return absl::InvalidArgumentError(absl::StrCat("messages: at most ", kMaxMessages, ", got ",
                                                       request.messages().messages_size()));
      }
      ASSIGN_OR_RETURN(ChatConversation chat, ChatFromProto(request.messages()));
      auto text = model.chat->Render(chat.messages, chat.options);
      if (!text.ok()) {
        // The template's raise_exception() stays FAILED_PRECONDITION (HTTP 400).
        return absl::Status(absl::IsFailedPrecondition(text.status())
                                ? absl::StatusCode::kFailedPrecondition
                                : absl::StatusCode::kInvalidArgument,
                            absl::StrCat("messages: ", text.status().message()));
      }
      RETURN_IF_ERROR(CheckTextBytes("messages", *text, tokenizer, model.context));
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
                               ServedModel model, SessionClient* session, GatewayMetrics* metrics,
                               const ApiKeys* api_keys)
    : options_(options),
      tokenizer_(std::move(tokenizer)),
      model_(model),
      session_(session),
      metrics_(metrics),
      api_keys_(api_keys) {}

int64_t GatewayService::MaxRequestBytes(const Tokenizer& tokenizer, int64_t context) {
  // The longest prompt that can still fit, the stop strings, a chat's
  // framing and token ids as varints, with room to spare.
  const int64_t prompt = tokenizer.MaxInputBytesPerToken() * context;
  const int64_t ids = 6 * context;
  return std::min<int64_t>(std::max(prompt, ids) + (kMaxStops * kMaxStopBytes) + (64 << 10),
                           kMaxMessageBytes);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* GatewayService::Generate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  auto* call = new GenerateCall(this, context);
  call->Begin(*request);
  return call;
}

grpc::ServerUnaryReactor* GatewayService::Tokenize(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* wire,
                                                   grpc::ByteBuffer* reply) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto run = [&]() -> absl::Status {
    if (api_keys_ != nullptr) RETURN_IF_ERROR(api_keys_->Check(*context));
    v1::TokenizeRequest request;
    RETURN_IF_ERROR(ParseRequest(*wire, &request));
    const int64_t at_least = tokenizer_->MinTokens(request.text());
    if (at_least > model_.context) {
      return absl::OutOfRangeError(absl::StrCat("text: ", request.text().size(),
                                                " bytes make at least ", at_least,
                                                " tokens, past the context of ", model_.context));
    }
    const bool bos = request.has_add_bos() ? request.add_bos() : tokenizer_->add_bos_by_default();
    auto ids = tokenizer_->Encode(request.text(), bos);
    if (!ids.ok())
      return absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message()));
    v1::TokenizeResponse response;
    for (int32_t id : *ids) {
      response.add_token_ids(id);
      response.add_pieces(tokenizer_->TokenBytes(id));
    }
    *reply = Serialize(response);
    return absl::OkStatus();
  };
  reactor->Finish(ToGrpcStatus(run()));
  return reactor;
}

v1::ModelInfo PublicModelInfo(const v1::ModelInfo& internal) {
  v1::ModelInfo info = internal;
  info.set_model(ModelLabel(internal.model()));
  for (v1::StageInfo& s : *info.mutable_layer_map()->mutable_stages()) s.clear_address();
  for (v1::LayerMap& replica : *info.mutable_replicas()) {
    for (v1::StageInfo& s : *replica.mutable_stages()) s.clear_address();
  }
  for (v1::WorkerHealth& w : *info.mutable_workers()) w.clear_address();
  return info;
}

grpc::ServerUnaryReactor* GatewayService::GetModelInfo(grpc::CallbackServerContext* context,
                                                       const v1::GetModelInfoRequest*,
                                                       v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (api_keys_ != nullptr) {
    if (absl::Status st = api_keys_->Check(*context); !st.ok()) {
      reactor->Finish(ToGrpcStatus(st));
      return reactor;
    }
  }
  // Asked of the coordinator without holding a thread: the reply finishes
  // the call.
  struct Pending {
    grpc::ClientContext context;
    v1::GetClusterInfoRequest request;
    v1::ClusterInfo info;
  };
  auto pending = std::make_shared<Pending>();
  pending->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  session_->stub().async()->GetClusterInfo(
      &pending->context, &pending->request, &pending->info,
      [reactor, response, pending](grpc::Status st) {
        if (!st.ok()) {
          reactor->Finish(
              grpc::Status(grpc::StatusCode::UNAVAILABLE,
                           absl::StrCat("the coordinator did not answer: ", st.error_message())));
          return;
        }
        *response = PublicModelInfo(pending->info.model());
        reactor->Finish(grpc::Status::OK);
      });
  return reactor;
}

}  // namespace strata
