#include "services/gateway/request_group.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/gateway/gateway_service.h"

namespace strata {

RequestGroup::RequestGroup(GatewayService* service, Emit emit, End end)
    : service_(service), emit_(std::move(emit)), end_(std::move(end)) {}

RequestGroup::~RequestGroup() { Close(); }

void RequestGroup::Close() {
  for (auto& s : streams_) s->Close();  // waits out callbacks in progress
}

void RequestGroup::Begin(const std::vector<v1::GenerateRequest>& requests,
                         const std::vector<std::string>& labels) {
  const int64_t n = requests.empty() || !requests[0].has_n() ? 1 : requests[0].n();
  const int64_t choices = n * static_cast<int64_t>(requests.size());
  if (n < 1 || choices > kMaxChoices) {
    service_->Count("invalid");
    return end_(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                             requests.size() > 1
                                 ? absl::StrCat("n: ", requests.size(), " prompts x n = ", choices,
                                                " choices; at most ", kMaxChoices, " per request")
                                 : absl::StrCat("n: must be in [1, ", kMaxChoices, "], got ", n)));
  }
  const v1::SamplingParameters& first = requests[0].sampling();
  base_seed_ = first.has_seed() ? first.seed() : FreshSeed();

  std::vector<v1::GenerateRequest> choice_requests;
  for (size_t p = 0; p < requests.size(); ++p) {
    for (int64_t j = 0; j < n; ++j) {
      const int index = static_cast<int>(streams_.size());
      v1::GenerateRequest r = requests[p];
      r.clear_n();
      r.mutable_sampling()->set_seed(base_seed_ + static_cast<uint64_t>(j));
      choice_requests.push_back(std::move(r));
      labels_.push_back(p < labels.size() ? labels[p] : "");
      streams_.push_back(std::make_unique<RequestStream>(
          service_, [this, index](const v1::GenerateResponse& r) { emit_(index, r); },
          [this, index](const grpc::Status& st) { OnEnd(index, st); }));
      streams_.back()->set_index(static_cast<uint32_t>(index));
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = size();
  }
  for (int i = 0; i < size(); ++i) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cancelling_) break;  // a choice was refused: the rest are cancelled
    }
    streams_[i]->Begin(choice_requests[i]);
  }
}

void RequestGroup::Cancel(const char* outcome, const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelling_ = true;
  }
  for (auto& s : streams_) s->Cancel(outcome, why);
}

void RequestGroup::CancelAllBut(int index, const std::string& why) {
  for (int i = 0; i < size(); ++i) {
    if (i != index) streams_[i]->Cancel("cancelled", why);
  }
}

void RequestGroup::OnEnd(int index, const grpc::Status& status) {
  std::unique_lock<std::mutex> lock(mu_);
  --open_;
  if (!status.ok() && !failure_.has_value()) {
    // Name the prompt when there are several ("prompt[2]: 9000 tokens ...").
    std::string message = status.error_message();
    const std::string& label = labels_[index];
    if (!label.empty()) {
      message = absl::StartsWith(message, "prompt:") ? label + message.substr(6)
                                                     : absl::StrCat(label, ": ", message);
    }
    failure_ = grpc::Status(status.error_code(), message);
    if (!cancelling_ && size() > 1) {
      cancelling_ = true;
      lock.unlock();
      CancelAllBut(index, absl::StrCat("another choice of this request failed: ", message));
      lock.lock();
    }
  }
  if (open_ == 0 && !ended_) {
    ended_ = true;
    const grpc::Status final = failure_.value_or(grpc::Status::OK);
    lock.unlock();
    end_(final);
  }
}

}  // namespace strata
