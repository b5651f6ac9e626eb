// The Generation gRPC service. Handlers convert at the edge and call
// ValidateAndTokenize / the session; the only shared state is the pending
// count and the draining flag (atomics) and the session (thread-safe).
// Every byte of a request is hostile: sizes are bounded before work is done
// (a prompt's bytes against the context before it is tokenized).
#ifndef STRATA_SERVICES_GATEWAY_GATEWAY_SERVICE_H_
#define STRATA_SERVICES_GATEWAY_GATEWAY_SERVICE_H_

#include <atomic>
#include <memory>

#include "absl/status/statusor.h"
#include "runtime/chat_template.h"
#include "runtime/tokenizer.h"
#include "services/common/metrics.h"
#include "services/common/tls.h"
#include "services/gateway/gateway.h"
#include "services/gateway/session_client.h"
#include "strata/v1/generation.grpc.pb.h"

namespace strata {

// What the gateway needs to know about the served model.
struct ServedModel {
  int64_t context = 0;
  int32_t vocab_size = 0;
  // The chat template, or why there is none (for `messages` requests).
  absl::StatusOr<ChatTemplate> chat = absl::NotFoundError("no chat template");
};

// A Conversation as the chat template takes it; errors name the field
// (messages[2].tool_calls, messages.tools[0], ...).
struct ChatConversation {
  std::vector<ChatMessage> messages;
  ChatOptions options;
};
absl::StatusOr<ChatConversation> ChatFromProto(const v1::Conversation& conversation);

// The request as the coordinator takes it; errors name the field.
absl::StatusOr<v1::Submit> ValidateAndTokenize(const v1::GenerateRequest& request,
                                               const Tokenizer& tokenizer,
                                               const ServedModel& model);

// A fresh sampling seed for a request that gave none: 53 random bits (exact
// as a JavaScript number), returned to the client to reproduce the run.
uint64_t FreshSeed();

// The gateway's Prometheus series (all labelled with the model).
struct GatewayMetrics {
  GatewayMetrics(prometheus::Registry& registry, const std::string& model);
  // outcome: ok | invalid | unauthenticated | rejected | cancelled |
  // deadline | error;
  // finish_reason: length | eos | stop_sequence | cancelled | none.
  prometheus::Counter& Request(const std::string& outcome, const std::string& finish_reason);

  std::string model;
  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Gauge& queue_length;
  prometheus::Histogram& queue_time;
  prometheus::Histogram& ttft;
  prometheus::Histogram& inter_token;
  prometheus::Histogram& duration;
  prometheus::Counter& prompt_tokens;
  prometheus::Counter& completion_tokens;
};

// The service's base: Generate and Tokenize take raw bytes (so invalid UTF-8
// is refused naming its field), GetModelInfo is a plain callback method.
using GenerationBase =
    v1::Generation::WithRawCallbackMethod_Generate<v1::Generation::WithRawCallbackMethod_Tokenize<
        v1::Generation::WithCallbackMethod_GetModelInfo<v1::Generation::Service>>>;

// The public Generation service on gRPC's callback API: no thread per
// stream; a stream is a reactor (GenerateCall) woken by its session events
// and by its own writes completing.
class GatewayService final : public GenerationBase {
 public:
  // `metrics` may be null (no metrics endpoint); `api_keys` null: no key
  // required.
  GatewayService(const GatewayOptions& options, std::unique_ptr<Tokenizer> tokenizer,
                 ServedModel model, SessionClient* session, GatewayMetrics* metrics,
                 const ApiKeys* api_keys = nullptr);

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

  void SetDraining() { draining_ = true; }
  bool draining() const { return draining_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ServedModel& model() const { return model_; }
  // OK, or UNAUTHENTICATED when API keys are required and the call has none
  // that is known.
  absl::Status Authenticate(const grpc::ServerContextBase& context) const {
    return api_keys_ != nullptr ? api_keys_->Check(context) : absl::OkStatus();
  }
  absl::Status AuthenticateHeader(absl::string_view authorization) const {
    return api_keys_ != nullptr ? api_keys_->CheckHeader(authorization) : absl::OkStatus();
  }
  // Counts a request that ended before it became a RequestStream.
  void Count(const char* outcome) {
    if (metrics_ != nullptr) metrics_->Request(outcome, "none").Increment();
  }
  int pending() const { return pending_; }
  // The largest request message the public port takes, from the context.
  static int64_t MaxRequestBytes(const Tokenizer& tokenizer, int64_t context);

 private:
  friend class RequestStream;
  const GatewayOptions options_;
  const std::unique_ptr<Tokenizer> tokenizer_;
  const ServedModel model_;
  SessionClient* const session_;
  GatewayMetrics* const metrics_;
  const ApiKeys* const api_keys_;
  std::atomic<int> pending_{0};
  std::atomic<bool> draining_{false};
};

// What public GetModelInfo shows of the cluster's ModelInfo: the model's
// name without its folder, and no internal address.
v1::ModelInfo PublicModelInfo(const v1::ModelInfo& internal);

}  // namespace strata

#endif  // STRATA_SERVICES_GATEWAY_GATEWAY_SERVICE_H_
