#include "services/gateway/session_client.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "services/common/log.h"
#include "services/common/server.h"

namespace strata {

SessionClient::SessionClient(std::string coordinator, int resubmit_ms,
                             const TransportSecurity* security)
    : coordinator_(std::move(coordinator)),
      resubmit_ms_(resubmit_ms),
      channel_(Dial(coordinator_, security)),
      stub_(v1::Coordinator::NewStub(channel_)) {}

SessionClient::~SessionClient() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
    if (link_ != nullptr) link_->context->TryCancel();
  }
  cv_.notify_all();
  if (reader_.joinable()) reader_.join();
  if (writer_.joinable()) writer_.join();
}

absl::Status SessionClient::Connect(int timeout_ms) {
  if (!WaitConnected(channel_, timeout_ms)) {
    return absl::UnavailableError(absl::StrCat(
        "the coordinator at ", coordinator_, " is unreachable after ", timeout_ms / 1000.0, " s"));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    absl::Status st = OpenLocked();
    if (!st.ok()) return st;
  }
  reader_ = std::thread([this] { ReadLoop(); });
  writer_ = std::thread([this] { WriteLoop(); });
  return absl::OkStatus();
}

absl::Status SessionClient::OpenLocked() {
  auto link = std::make_shared<Link>();
  link->context = std::make_unique<grpc::ClientContext>();
  link->stream = stub_->Session(link->context.get());
  if (link->stream == nullptr) return absl::UnavailableError("session: cannot open the stream");
  link_ = std::move(link);
  outbox_.clear();  // what was queued for a broken stream is resubmitted or moot
  return absl::OkStatus();
}

void SessionClient::WriteLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return closing_ || (link_ != nullptr && !outbox_.empty()); });
    if (closing_) return;
    const std::shared_ptr<Link> link = link_;
    const v1::GatewayMessage msg = std::move(outbox_.front());
    outbox_.pop_front();
    lock.unlock();
    const bool written = link->stream->Write(msg);
    lock.lock();
    // A write fails only on a broken stream: end it, so the reader sees the
    // break and resubmits what is open.
    if (!written && link == link_) link->context->TryCancel();
  }
}

void SessionClient::ReadLoop() {
  while (true) {
    std::shared_ptr<Link> link;
    {
      std::lock_guard<std::mutex> lock(mu_);
      link = link_;
    }
    v1::SessionEvents batch;
    while (link != nullptr && link->stream->Read(&batch)) {
      for (const v1::SessionEvent& event : batch.events()) {
        std::shared_ptr<Sink> sink;
        {
          std::lock_guard<std::mutex> lock(mu_);
          auto it = open_.find(event.request_id());
          if (it != open_.end()) {
            sink = it->second.sink;
            it->second.streamed.insert(it->second.streamed.end(), event.token_ids().begin(),
                                       event.token_ids().end());
            if (event.finish() != v1::FINISH_REASON_UNSPECIFIED || event.error_code() != 0) {
              open_.erase(it);  // the coordinator is done with it
            }
          }
        }
        if (sink != nullptr) (*sink)(event);
      }
    }
    // The session ended (the coordinator restarted or the connection broke).
    // Reconnect and resubmit every open request with the tokens it already
    // streamed as part of its prompt: it continues where it was, with the
    // same positions and seed, so the client sees a pause and nothing else.
    std::vector<std::pair<std::shared_ptr<Sink>, v1::SessionEvent>> failed;
    std::unique_lock<std::mutex> lock(mu_);
    link_.reset();
    outbox_.clear();
    if (closing_) return;
    Log(absl::StrCat("session with the coordinator at ", coordinator_, " broke; reconnecting (",
                     open_.size(), " request(s) to resubmit)"));
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(resubmit_ms_);
    bool reopened = false;
    while (!closing_ && std::chrono::steady_clock::now() < give_up) {
      cv_.wait_for(lock, std::chrono::milliseconds(50));
      if (closing_) return;
      if (channel_->GetState(true) == GRPC_CHANNEL_READY && OpenLocked().ok()) {
        reopened = true;
        break;
      }
    }
    if (closing_) return;
    for (auto it = open_.begin(); it != open_.end();) {
      Open& o = it->second;
      v1::GatewayMessage msg;
      *msg.mutable_submit() = o.submit;
      v1::Submit* again = msg.mutable_submit();
      again->mutable_prompt_ids()->Add(o.streamed.begin(), o.streamed.end());
      again->set_max_tokens(o.submit.max_tokens() - static_cast<uint32_t>(o.streamed.size()));
      if (reopened && again->max_tokens() > 0) {
        outbox_.push_back(std::move(msg));
        ++it;
        continue;
      }
      v1::SessionEvent lost;
      lost.set_request_id(it->first);
      lost.set_error_code(grpc::StatusCode::UNAVAILABLE);
      lost.set_error(absl::StrCat("the session with the coordinator at ", coordinator_,
                                  " broke and could not be resumed"));
      failed.emplace_back(o.sink, std::move(lost));
      it = open_.erase(it);
    }
    if (reopened) {
      Log(absl::StrCat("session with the coordinator at ", coordinator_, " resumed; ", open_.size(),
                       " request(s) resubmitted"));
    }
    lock.unlock();
    cv_.notify_all();
    for (auto& [sink, event] : failed) (*sink)(event);
  }
}

absl::StatusOr<uint64_t> SessionClient::Submit(v1::Submit submit, Sink sink) {
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (link_ == nullptr) {
      return absl::UnavailableError(
          absl::StrCat("no session with the coordinator at ", coordinator_));
    }
    id = next_id_++;
    submit.set_request_id(id);
    open_[id] = {submit, {}, std::make_shared<Sink>(std::move(sink))};
    // Should the stream break before this goes out, the reconnect
    // resubmits it from open_.
    outbox_.emplace_back();
    *outbox_.back().mutable_submit() = std::move(submit);
  }
  cv_.notify_all();
  return id;
}

void SessionClient::Cancel(uint64_t request_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (open_.erase(request_id) == 0 || link_ == nullptr) return;
    outbox_.emplace_back();
    outbox_.back().mutable_cancel()->set_request_id(request_id);
  }
  cv_.notify_all();
}

void SessionClient::Forget(uint64_t request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  open_.erase(request_id);
}

}  // namespace strata
