// The hidden-state hop between GPUs of one map epoch, as a protocol over a
// small point-to-point communicator: NCCL on GPUs (cuda/nccl_link.cc), an
// in-memory one in tests (tests/runtime/peer_link_test.cc), because NCCL
// cannot run without a GPU and the ordering below is what must be right.
//
// NCCL connects a pair of ranks lazily, on their first transfer, and that
// connection needs both sides inside NCCL at once; a send also cannot finish
// before its peer posted the matching receive. A worker forwards the step
// header over gRPC only after its stage returns, and the next worker posts
// its receive only once that header arrives. So:
//
//  1. Join: every member joins the communicator and runs one grouped warm-up
//     exchange with its neighbours (receive from rank - 1, send to rank + 1)
//     and waits for it, while all members are inside Join together. No later
//     transfer needs its peer to connect.
//  2. Send and Recv only enqueue (waiting, with a deadline, for the enqueue
//     itself, which a non-blocking communicator may report as in progress).
//     The sender does not wait for its send: its worker forwards the header
//     at once, and the send is waited for at the start of the next step,
//     where its buffer is used again (WaitSend). The receiver waits for its
//     receive before reading the step's output (WaitRecv).
//  3. Every wait has a deadline; one that passes aborts the communicator and
//     fails with UNAVAILABLE "broken hop", as a dead worker's hop does.
//  4. Abort() may come from any thread (a Load freeing a step stuck on a dead
//     peer). Every call on the communicator holds mu_, which Abort takes too,
//     so the communicator is never aborted under a call nor used after it;
//     waits sleep between polls without holding mu_.
//
// Thread safety: Abort() from any thread; everything else from the step
// thread only.
#ifndef STRATA_RUNTIME_BACKEND_PEER_LINK_H_
#define STRATA_RUNTIME_BACKEND_PEER_LINK_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"

namespace strata {

// The GPUs of one pipeline map epoch that move hidden states by NCCL (or,
// simulated, by socket): rank r sends its stage's output to rank r + 1. The
// coordinator makes the id (NewPeerGroupId, NewSocketPeerGroupId) and hands
// each member its rank.
struct PeerGroup {
  std::string unique_id;  // an ncclUniqueId's bytes, or a socket group's id
  int rank = 0;
  int size = 0;
  int timeout_ms = 30'000;  // for every member to join
  // Which neighbours this member exchanges with: the previous rank's output
  // arrives here, this one's goes to the next rank. A pipeline whose linked
  // hops are not contiguous has members linked on one side only.
  bool recv_from_prev = true;
  bool send_to_next = true;
};

enum class PeerOp { kSend, kRecv, kWarmUp };

// One transfer to enqueue. kWarmUp receives from `from` (if >= 0) and sends
// to `to` (if >= 0) as one group, on the communicator's own scratch.
struct PeerTransfer {
  PeerOp op = PeerOp::kSend;
  const void* src = nullptr;  // kSend
  void* dst = nullptr;        // kRecv
  int64_t count = 0;          // elements of the communicator's dtype
  int to = -1;                // kSend, kWarmUp
  int from = -1;              // kRecv, kWarmUp
};

// What PeerLink needs of a communicator. Not thread-safe: PeerLink
// serialises every call, Abort included.
class Communicator {
 public:
  virtual ~Communicator() = default;
  // Starts enqueueing `t` on the communicator's stream. The enqueue may still
  // be in progress on return (NCCL's non-blocking mode): see Enqueued().
  virtual absl::Status Enqueue(const PeerTransfer& t) = 0;
  // True once no enqueue is in progress; an error when one failed.
  virtual absl::StatusOr<bool> Enqueued() = 0;
  // True once the last transfer of `op` has completed (its data moved).
  virtual absl::StatusOr<bool> Finished(PeerOp op) = 0;
  // Ends every pending transfer; no call follows.
  virtual void Abort() = 0;
};

class PeerLink {
 public:
  struct Options {
    int rank = 0;
    int size = 0;
    int join_timeout_ms = 30'000;      // the warm-up, with every member
    int transfer_timeout_ms = 30'000;  // an enqueue, a send or a receive
    std::string label;                 // names the device in errors
    bool recv_from_prev = true;        // the warm-up's neighbours (see PeerGroup)
    bool send_to_next = true;
  };
  // Runs the warm-up exchange with the neighbours of options.rank on `comm`
  // (which has joined its group) and waits for it.
  static absl::StatusOr<std::unique_ptr<PeerLink>> Join(std::unique_ptr<Communicator> comm,
                                                        const Options& options);
  // The same for a member of `group`, every transfer with its own deadline.
  static absl::StatusOr<std::unique_ptr<PeerLink>> Join(std::unique_ptr<Communicator> comm,
                                                        const PeerGroup& group,
                                                        int transfer_timeout_ms,
                                                        const std::string& label);
  ~PeerLink();
  PeerLink(const PeerLink&) = delete;
  PeerLink& operator=(const PeerLink&) = delete;

  // Enqueue (not wait for) a transfer of `count` elements with rank `peer`.
  absl::Status Send(const void* src, int64_t count, int peer);
  absl::Status Recv(void* dst, int64_t count, int peer);
  // Waits for the last send / receive, if one is pending.
  absl::Status WaitSend();
  absl::Status WaitRecv();
  bool send_pending() const { return send_pending_; }
  bool recv_pending() const { return recv_pending_; }

  // Aborts the communicator; pending and later transfers fail. Any thread.
  void Abort();
  bool aborted() const;
  int rank() const { return options_.rank; }

 private:
  PeerLink(std::unique_ptr<Communicator> comm, const Options& options)
      : comm_(std::move(comm)), options_(options) {}
  // Polls `done` (called under mu_) until it is true, it fails, the link is
  // aborted or `timeout_ms` passes (then aborts: a broken hop).
  template <typename Poll>
  absl::Status WaitFor(Poll done, const std::string& what, int timeout_ms);
  absl::Status Start(const PeerTransfer& t, const std::string& what, int timeout_ms);
  // Send or Recv: waits for the last transfer of its direction, then starts.
  absl::Status Transfer(const PeerTransfer& t, const std::string& what);

  mutable std::mutex mu_;
  std::unique_ptr<Communicator> comm_ ABSL_GUARDED_BY(mu_);
  bool aborted_ ABSL_GUARDED_BY(mu_) = false;
  const Options options_;
  bool send_pending_ = false;  // step thread only
  bool recv_pending_ = false;
};

// A backend's current PeerLink. The step thread calls get() and uses the
// link, and replaces it (Set, Take); another thread may only Abort() it.
// Set, Take and Abort hold one lock, so an abort never meets a link being
// freed.
class PeerLinkSlot {
 public:
  PeerLink* get() const { return link_.get(); }
  void Set(std::unique_ptr<PeerLink> link);
  std::unique_ptr<PeerLink> Take();
  void Abort();

 private:
  std::mutex mu_;
  std::unique_ptr<PeerLink> link_;  // written under mu_
};

}  // namespace strata

#endif  // STRATA_RUNTIME_BACKEND_PEER_LINK_H_
