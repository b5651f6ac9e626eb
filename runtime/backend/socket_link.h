// A Communicator (peer_link.h) over Unix-domain stream sockets between the
// worker processes of one host: the simulated GPUs' stand-in for NCCL, so a
// pipeline of `--device sim:NAME` workers moves its hidden states beside the
// gRPC step headers exactly as CUDA workers do, through the same PeerLink
// protocol (join, warm-up, deadlines, a broken hop on a dead peer).
//
// A group id (NewSocketPeerGroupId) is a prefix, a public name and a secret.
// Rank r listens on the abstract socket "strata-peer-<name>-<r>" when it
// receives from rank r - 1, and connects to rank r + 1's when it sends to it,
// then proves itself with the secret and its rank; a connection that does
// not is closed unanswered. The coordinator hands the id to the members over
// its TLS channel, so no other process learns the secret.
//
// Every transfer is framed by its element count, checked against the count
// the receiver expects. A send copies its elements, so the caller's buffer is
// free on return, and a writer thread moves them while the step goes on (as
// a GPU's stream would): a receiver never waits for its sender to poll.
// Receives are non-blocking reads inside Finished(), which PeerLink polls. A
// peer that closes its end fails the transfer at once.
#ifndef STRATA_RUNTIME_BACKEND_SOCKET_LINK_H_
#define STRATA_RUNTIME_BACKEND_SOCKET_LINK_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/backend/peer_link.h"

namespace strata {

// A fresh id for a socket peer group; random, distinct from any NCCL id.
std::string NewSocketPeerGroupId();
bool IsSocketPeerGroupId(std::string_view id);

class SocketCommunicator final : public Communicator {
 public:
  // Joins `group` as group.rank: listens when it receives from the previous
  // rank, connects to the next when it sends to it, and accepts the previous
  // rank's connection, all within group.timeout_ms. Elements are
  // `element_bytes` wide; `label` names the device in errors.
  static absl::StatusOr<std::unique_ptr<SocketCommunicator>> Join(const PeerGroup& group,
                                                                  int64_t element_bytes,
                                                                  std::string label);
  ~SocketCommunicator() override;

  absl::Status Enqueue(const PeerTransfer& t) override;
  absl::StatusOr<bool> Enqueued() override;
  absl::StatusOr<bool> Finished(PeerOp op) override;
  void Abort() override;

 private:
  SocketCommunicator(int rank, int64_t element_bytes, std::string label)
      : rank_(rank), element_bytes_(element_bytes), label_(std::move(label)) {}
  void Write();                    // the writer thread
  absl::StatusOr<bool> Receive();  // reads what it can of the pending receive
  void CloseAll();

  const int rank_;
  const int64_t element_bytes_;
  const std::string label_;
  int prev_fd_ = -1;  // from rank - 1
  int next_fd_ = -1;  // to rank + 1
  bool aborted_ = false;
  // The send in progress: its frame, written by writer_.
  std::thread writer_;
  std::mutex out_mu_;
  std::condition_variable out_cv_;
  std::vector<char> out_;     // guarded by out_mu_
  bool out_pending_ = false;  // a frame not yet fully written; guarded by out_mu_
  bool out_stop_ = false;     // guarded by out_mu_
  absl::Status out_error_;    // guarded by out_mu_
  // The receive in progress: the frame's header, then the elements to dst.
  bool receiving_ = false;
  char* in_dst_ = nullptr;
  int64_t in_count_ = 0;
  char in_header_[8] = {};
  size_t in_done_ = 0;  // bytes of header and elements read
  // A warm-up is a send to `to` and a receive from `from`, on this scratch.
  bool warm_up_ = false;
  std::vector<char> scratch_;
};

}  // namespace strata

#endif  // STRATA_RUNTIME_BACKEND_SOCKET_LINK_H_
