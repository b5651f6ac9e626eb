#include "services/gateway/session_client.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "services/common/log.h"
#include "services/common/server.h"

namespace strata {

std::deque<v1::SessionEvent> SessionClient::Inbox::Take(int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return !events_.empty(); });
  std::deque<v1::SessionEvent> out;
  out.swap(events_);
  return out;
}

void SessionClient::Inbox::Put(v1::SessionEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(event));
  }
  cv_.notify_one();
}

SessionClient::SessionClient(std::string coordinator)
    : coordinator_(std::move(coordinator)),
      channel_(Dial(coordinator_)),
      stub_(v1::Coordinator::NewStub(channel_)) {}

SessionClient::~SessionClient() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }
  cv_.notify_all();
  if (reader_.joinable()) reader_.join();
}

absl::Status SessionClient::Connect(int timeout_ms) {
  if (!WaitConnected(channel_, timeout_ms)) {
    return absl::UnavailableError(absl::StrCat("the coordinator at ", coordinator_,
                                               " is unreachable after ", timeout_ms / 1000.0,
                                               " s"));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    absl::Status st = OpenLocked();
    if (!st.ok()) return st;
  }
  reader_ = std::thread([this] { ReadLoop(); });
  return absl::OkStatus();
}

absl::Status SessionClient::OpenLocked() {
  context_ = std::make_unique<grpc::ClientContext>();
  stream_ = stub_->Session(context_.get());
  if (stream_ == nullptr) return absl::UnavailableError("session: cannot open the stream");
  return absl::OkStatus();
}

void SessionClient::ReadLoop() {
  while (true) {
    grpc::ClientReaderWriter<v1::GatewayMessage, v1::SessionEvent>* stream;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stream = stream_.get();
    }
    v1::SessionEvent event;
    while (stream != nullptr && stream->Read(&event)) {
      std::shared_ptr<Inbox> inbox;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = inboxes_.find(event.request_id());
        if (it != inboxes_.end()) inbox = it->second;
      }
      if (inbox != nullptr) inbox->Put(std::move(event));
    }
    // The session ended: fail what was open, then reconnect unless closing.
    std::unique_lock<std::mutex> lock(mu_);
    for (auto& [id, inbox] : inboxes_) {
      v1::SessionEvent lost;
      lost.set_request_id(id);
      lost.set_error_code(grpc::StatusCode::UNAVAILABLE);
      lost.set_error(absl::StrCat("the session with the coordinator at ", coordinator_,
                                  " broke"));
      inbox->Put(std::move(lost));
    }
    inboxes_.clear();
    if (closing_) return;
    Log(absl::StrCat("session with the coordinator at ", coordinator_, " broke; reconnecting"));
    stream_.reset();
    while (!closing_) {
      cv_.wait_for(lock, std::chrono::milliseconds(500));
      if (closing_) return;
      if (channel_->GetState(true) == GRPC_CHANNEL_READY && OpenLocked().ok()) break;
    }
    if (closing_) return;
  }
}

absl::StatusOr<std::shared_ptr<SessionClient::Inbox>> SessionClient::Submit(v1::Submit submit,
                                                                            uint64_t* request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stream_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("no session with the coordinator at ", coordinator_));
  }
  const uint64_t id = next_id_++;
  submit.set_request_id(id);
  auto inbox = std::make_shared<Inbox>();
  inboxes_[id] = inbox;
  v1::GatewayMessage msg;
  *msg.mutable_submit() = std::move(submit);
  if (!stream_->Write(msg)) {
    inboxes_.erase(id);
    return absl::UnavailableError(
        absl::StrCat("the session with the coordinator at ", coordinator_, " is closed"));
  }
  *request_id = id;
  return inbox;
}

void SessionClient::Cancel(uint64_t request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (inboxes_.erase(request_id) == 0 || stream_ == nullptr) return;
  v1::GatewayMessage msg;
  msg.mutable_cancel()->set_request_id(request_id);
  stream_->Write(msg);
}

void SessionClient::Forget(uint64_t request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  inboxes_.erase(request_id);
}

}  // namespace strata
