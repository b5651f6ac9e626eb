#include "runtime/backend/peer_link.h"

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"

namespace strata {

absl::StatusOr<std::unique_ptr<PeerLink>> PeerLink::Join(std::unique_ptr<Communicator> comm,
                                                         const Options& options) {
  if (options.size < 2 || options.rank < 0 || options.rank >= options.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("peer group: rank ", options.rank, " of ", options.size));
  }
  auto link = std::unique_ptr<PeerLink>(new PeerLink(std::move(comm), options));
  PeerTransfer warm_up;
  warm_up.op = PeerOp::kWarmUp;
  warm_up.count = 1;
  warm_up.from = options.recv_from_prev && options.rank > 0 ? options.rank - 1 : -1;
  warm_up.to = options.send_to_next && options.rank + 1 < options.size ? options.rank + 1 : -1;
  const std::string what = absl::StrCat("the warm-up exchange of rank ", options.rank, " of ",
                                        options.size, " with its neighbours");
  // Every member is inside Join now, so the lazily made connections form.
  absl::Status s = link->Start(warm_up, what, options.join_timeout_ms);
  if (s.ok()) {
    s = link->WaitFor([&link] { return link->comm_->Finished(PeerOp::kWarmUp); }, what,
                      options.join_timeout_ms);
  }
  if (!s.ok()) return s;
  return link;
}

absl::StatusOr<std::unique_ptr<PeerLink>> PeerLink::Join(std::unique_ptr<Communicator> comm,
                                                         const PeerGroup& group,
                                                         int transfer_timeout_ms,
                                                         const std::string& label) {
  Options options;
  options.rank = group.rank;
  options.size = group.size;
  options.join_timeout_ms = group.timeout_ms;
  options.transfer_timeout_ms = transfer_timeout_ms;
  options.label = label;
  options.recv_from_prev = group.recv_from_prev;
  options.send_to_next = group.send_to_next;
  return Join(std::move(comm), options);
}

PeerLink::~PeerLink() { Abort(); }

void PeerLink::Abort() {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_) return;
  aborted_ = true;
  comm_->Abort();
}

bool PeerLink::aborted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return aborted_;
}

template <typename Poll>
absl::Status PeerLink::WaitFor(Poll done, const std::string& what, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    absl::StatusOr<bool> state;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (aborted_) {
        return absl::UnavailableError(
            absl::StrCat(options_.label, ": broken hop: ", what, ": the peer group was aborted"));
      }
      state = done();
    }
    if (!state.ok()) {
      Abort();
      return absl::UnavailableError(
          absl::StrCat(options_.label, ": broken hop: ", what, ": ", state.status().message()));
    }
    if (*state) return absl::OkStatus();
    if (std::chrono::steady_clock::now() > deadline) {
      Abort();  // ends the transfer on the device too, so the stream drains
      return absl::UnavailableError(absl::StrCat(options_.label, ": broken hop: ", what,
                                                 " did not finish within ", timeout_ms, " ms"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

absl::Status PeerLink::Start(const PeerTransfer& t, const std::string& what, int timeout_ms) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_) {
      return absl::UnavailableError(
          absl::StrCat(options_.label, ": broken hop: ", what, ": the peer group was aborted"));
    }
    absl::Status s = comm_->Enqueue(t);
    if (!s.ok()) {
      aborted_ = true;
      comm_->Abort();
      return absl::UnavailableError(
          absl::StrCat(options_.label, ": broken hop: ", what, ": ", s.message()));
    }
  }
  // A connected pair enqueues at once; waiting here keeps later work on the
  // stream behind the transfer.
  return WaitFor([this] { return comm_->Enqueued(); }, absl::StrCat("enqueueing ", what),
                 timeout_ms);
}

absl::Status PeerLink::Send(const void* src, int64_t count, int peer) {
  return Transfer({.op = PeerOp::kSend, .src = src, .count = count, .to = peer},
                  absl::StrCat("the send of ", count, " elements to rank ", peer));
}

absl::Status PeerLink::Recv(void* dst, int64_t count, int peer) {
  return Transfer({.op = PeerOp::kRecv, .dst = dst, .count = count, .from = peer},
                  absl::StrCat("the receive of ", count, " elements from rank ", peer));
}

absl::Status PeerLink::Transfer(const PeerTransfer& t, const std::string& what) {
  const bool send = t.op == PeerOp::kSend;
  bool& pending = send ? send_pending_ : recv_pending_;
  if (pending) {  // the last one of this direction first
    absl::Status s = send ? WaitSend() : WaitRecv();
    if (!s.ok()) return s;
  }
  absl::Status s = Start(t, what, options_.transfer_timeout_ms);
  pending = s.ok();
  return s;
}

absl::Status PeerLink::WaitSend() {
  if (!send_pending_) return absl::OkStatus();
  send_pending_ = false;
  return WaitFor([this] { return comm_->Finished(PeerOp::kSend); }, "the last send",
                 options_.transfer_timeout_ms);
}

absl::Status PeerLink::WaitRecv() {
  if (!recv_pending_) return absl::OkStatus();
  recv_pending_ = false;
  return WaitFor([this] { return comm_->Finished(PeerOp::kRecv); }, "the receive",
                 options_.transfer_timeout_ms);
}

void PeerLinkSlot::Set(std::unique_ptr<PeerLink> link) {
  std::lock_guard<std::mutex> lock(mu_);
  link_ = std::move(link);
}

std::unique_ptr<PeerLink> PeerLinkSlot::Take() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::move(link_);
}

void PeerLinkSlot::Abort() {
  std::lock_guard<std::mutex> lock(mu_);
  if (link_ != nullptr) link_->Abort();
}

}  // namespace strata
