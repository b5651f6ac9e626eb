// One generation request's life in the gateway, whatever the transport
// (gRPC reactor, HTTP/SSE): validate and tokenize, take a place in the
// gateway's queue, submit over the session, and turn the coordinator's
// events into text deltas (stop sequences applied, UTF-8 never split) and one
// `finished` message, counting every metric once.
//
// The transport gives two callbacks. `emit` receives each response in
// order; `end` the final status, once, after the last response. Both are
// called with the stream's lock held, from the session's reader thread or
// from the caller of Begin()/Cancel(), so they must not block: queue and
// wake the transport. After Close() (or destruction) neither is called again.
// Thread-safe.
#ifndef STRATA_SERVICES_GATEWAY_REQUEST_STREAM_H_
#define STRATA_SERVICES_GATEWAY_REQUEST_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "runtime/tokenizer.h"
#include "runtime/tool_calls.h"
#include "services/gateway/stop_matcher.h"
#include "strata/v1/coordinator.pb.h"
#include "strata/v1/generation.pb.h"

namespace strata {

class GatewayService;

class RequestStream {
 public:
  using Emit = std::function<void(const v1::GenerateResponse&)>;
  using End = std::function<void(const grpc::Status&)>;

  RequestStream(GatewayService* service, Emit emit, End end);
  ~RequestStream();  // Close()

  // Validates and submits `request`. A refusal (draining, invalid, queue
  // full, no session) calls `end` before returning.
  void Begin(const v1::GenerateRequest& request);
  // The client went away or cancelled: the coordinator drops the request and
  // `end` gets CANCELLED (counted as `outcome`), unless it ended already.
  void Cancel(const char* outcome, const std::string& why);
  // No more callbacks; the request is released upstream if still open.
  void Close();

  // The choice this stream is (stamped on its responses); before Begin.
  void set_index(uint32_t index) { index_ = index; }
  // The submitted prompt's token ids (valid after a successful Begin).
  const std::vector<int32_t>& prompt_ids() const { return prompt_ids_; }

 private:
  using Clock = std::chrono::steady_clock;
  // The session's sink reaches the stream through this; Close() empties it.
  struct Mailbox {
    std::mutex mu;
    RequestStream* stream = nullptr;
  };

  void OnEvent(const v1::SessionEvent& event);
  void FinishLocked(const grpc::Status& status, const char* outcome, const char* finish = "none");
  void SendFinishedLocked(v1::FinishReason reason);
  // Gives back this request's place under --max-pending (once).
  void ReleasePlaceLocked();
  // With tools: what of `text` (the next shown text) may go out now; at the
  // `end`, parses the calls into tool_calls_ and releases held content.
  std::string HoldToolText(const std::string& text, bool end);

  GatewayService* const service_;
  const Clock::time_point start_ = Clock::now();
  const std::shared_ptr<Mailbox> mailbox_ = std::make_shared<Mailbox>();

  std::mutex mu_;
  Emit emit_;
  End end_;
  bool ended_ = false;
  bool counted_pending_ = false;
  uint64_t id_ = 0;             // the session's request id (0: not submitted)
  bool upstream_done_ = false;  // the coordinator finished or forgot the request
  std::string request_id_;
  uint64_t seed_ = 0;
  uint64_t map_epoch_ = 0;  // of the last tokens
  uint32_t index_ = 0;
  // With tools: the completion's text (after stop sequences), of which the
  // first tool_shown_ bytes went out; the rest is held until the end shows
  // whether it is a tool call.
  ToolCallFormat tool_format_ = ToolCallFormat::kNone;
  std::string tool_text_;
  size_t tool_shown_ = 0;
  std::vector<ParsedToolCall> tool_calls_;
  std::vector<int32_t> prompt_ids_;
  int completion_ = 0;
  bool admitted_ = false;
  double ttft_ = -1;
  Clock::time_point last_token_;
  std::optional<StopMatcher> matcher_;
  std::optional<IncrementalDetokenizer> detok_;
};

}  // namespace strata

#endif  // STRATA_SERVICES_GATEWAY_REQUEST_STREAM_H_
