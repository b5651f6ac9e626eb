// Several RequestStreams answered as one request: the `n` samples of a
// prompt (GenerateRequest.n, OpenAI's `n`) and OpenAI's batch of prompts.
// Choice p * n + j samples requests[p] with seed base + j, where base is the
// request's seed or a fresh one, so every choice can be reproduced alone.
// Each choice is its own sequence and is prefilled on its own (the paged KV
// cache has no copy-on-write sharing yet).
//
// Responses reach `emit` tagged with their choice's index; `end` is called
// once, after every choice has ended: OK if all finished, else the first
// failure (the other choices are then cancelled at once). Like
// RequestStream's, the callbacks run with a stream's lock held and must not
// block. Thread-safe.
//
// Locking: a failing choice cancels its siblings from inside its own end
// callback, so it takes their locks while holding its own. Only one caller
// ever does (the first failure, or Cancel()), and no other path nests stream
// locks, so this cannot deadlock.
#ifndef STRATA_SERVICES_GATEWAY_REQUEST_GROUP_H_
#define STRATA_SERVICES_GATEWAY_REQUEST_GROUP_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "services/gateway/request_stream.h"
#include "strata/v1/generation.pb.h"

namespace strata {

class GatewayService;

class RequestGroup {
 public:
  using Emit = std::function<void(int index, const v1::GenerateResponse&)>;
  using End = std::function<void(const grpc::Status&)>;
  // The most choices one request may ask for (prompts x n).
  static constexpr int kMaxChoices = 64;

  RequestGroup(GatewayService* service, Emit emit, End end);
  ~RequestGroup();  // Close()

  // Starts requests.size() x n choices, n from requests[0] (all must agree).
  // `labels[p]` names prompt p in its errors ("prompt[2]"); empty: none. A
  // refusal of any choice cancels the others and calls `end` before
  // returning.
  void Begin(const std::vector<v1::GenerateRequest>& requests,
             const std::vector<std::string>& labels = {});
  // The client went away: every open choice is cancelled.
  void Cancel(const char* outcome, const std::string& why);
  // No more callbacks; open choices are released upstream.
  void Close();

  int size() const { return static_cast<int>(streams_.size()); }
  // Choice `index`'s prompt ids (valid after its Begin succeeded).
  const std::vector<int32_t>& prompt_ids(int index) const { return streams_[index]->prompt_ids(); }
  // The seed choice j of each prompt samples with, minus j.
  uint64_t base_seed() const { return base_seed_; }

 private:
  void OnEnd(int index, const grpc::Status& status);
  void CancelAllBut(int index, const std::string& why);

  GatewayService* const service_;
  Emit emit_;
  End end_;
  std::vector<std::unique_ptr<RequestStream>> streams_;
  std::vector<std::string> labels_;  // per choice
  uint64_t base_seed_ = 0;

  std::mutex mu_;
  int open_ = 0;
  bool cancelling_ = false;  // someone is cancelling every choice
  bool ended_ = false;
  std::optional<grpc::Status> failure_;
};

}  // namespace strata

#endif  // STRATA_SERVICES_GATEWAY_REQUEST_GROUP_H_
