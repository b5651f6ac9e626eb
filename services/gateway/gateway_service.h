// The Generation gRPC service. Handlers convert at the edge and call
// ValidateAndTokenize / the session; the only shared state is the pending
// count and the draining flag (atomics) and the session (thread-safe).
#ifndef STRATA_SERVICES_GATEWAY_GATEWAY_SERVICE_H_
#define STRATA_SERVICES_GATEWAY_GATEWAY_SERVICE_H_

#include <atomic>
#include <memory>

#include "absl/status/statusor.h"
#include "runtime/chat_template.h"
#include "runtime/tokenizer.h"
#include "services/common/metrics.h"
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

// The request as the coordinator takes it; errors name the field.
absl::StatusOr<v1::Submit> ValidateAndTokenize(const v1::GenerateRequest& request,
                                               const Tokenizer& tokenizer,
                                               const ServedModel& model);

// The gateway's Prometheus series (all labelled with the model).
struct GatewayMetrics {
  GatewayMetrics(prometheus::Registry& registry, const std::string& model);
  // outcome: ok | invalid | rejected | cancelled | deadline | error;
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

class GatewayService final : public v1::Generation::Service {
 public:
  // `metrics` may be null (no metrics endpoint).
  GatewayService(const GatewayOptions& options, std::unique_ptr<Tokenizer> tokenizer,
                 ServedModel model, SessionClient* session, GatewayMetrics* metrics);

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest* request,
                            v1::ModelInfo* response) override;

  void SetDraining() { draining_ = true; }
  int pending() const { return pending_; }

 private:
  const GatewayOptions options_;
  const std::unique_ptr<Tokenizer> tokenizer_;
  const ServedModel model_;
  SessionClient* const session_;
  GatewayMetrics* const metrics_;
  std::atomic<int> pending_{0};
  std::atomic<bool> draining_{false};
};

}  // namespace strata

#endif  // STRATA_SERVICES_GATEWAY_GATEWAY_SERVICE_H_
