// The peer-hop protocol (runtime/backend/peer_link.h) against an in-memory
// communicator. NCCL itself cannot run without a GPU, so FakeWorld models
// the two NCCL facts the protocol depends on:
//   - a pair of ranks connects lazily: an enqueue between two ranks that are
//     not connected yet stays in progress until the peer enqueued its half
//     (NCCL's runtime connection needs both sides inside NCCL);
//   - a send completes only once the peer posted the matching receive.
// It also checks how each communicator is used: no call may overlap Abort()
// or follow it, which with NCCL would touch a freed communicator.
// The workers' order is reproduced with threads: a stage enqueues its send
// and returns, then the worker forwards the step header; the next worker
// posts its receive when the header arrives.
#include "runtime/backend/peer_link.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <queue>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace strata {
namespace {

class FakeWorld {
 public:
  struct Transfer {
    const void* src = nullptr;
    void* dst = nullptr;
    int64_t count = 0;
    bool done = false;
  };
  using Pair = std::pair<int, int>;  // (sender, receiver)

  // Queues one half of a transfer on `pair`; matches it with the other half
  // if that is queued already (copying the data) and marks the pair connected.
  void Post(Pair pair, std::shared_ptr<Transfer> t, bool is_send) {
    std::lock_guard<std::mutex> lock(mu_);
    (is_send ? sends_ : recvs_)[pair].push_back(std::move(t));
    auto& s = sends_[pair];
    auto& r = recvs_[pair];
    while (!s.empty() && !r.empty()) {
      connected_.insert(pair);
      std::memcpy(
          r.front()->dst, s.front()->src,
          static_cast<size_t>(std::min(s.front()->count, r.front()->count)) * sizeof(float));
      s.front()->done = r.front()->done = true;
      s.pop_front();
      r.pop_front();
    }
  }
  bool Connected(Pair pair) {
    std::lock_guard<std::mutex> lock(mu_);
    return connected_.count(pair) > 0;
  }
  bool Done(const std::shared_ptr<Transfer>& t) {
    std::lock_guard<std::mutex> lock(mu_);
    return t->done;
  }

 private:
  std::mutex mu_;
  std::map<Pair, std::deque<std::shared_ptr<Transfer>>> sends_, recvs_;
  std::set<Pair> connected_;
};

class FakeCommunicator : public Communicator {
 public:
  FakeCommunicator(FakeWorld* world, int rank, std::atomic<int>* misuse)
      : world_(world), rank_(rank), misuse_(misuse) {}

  absl::Status Enqueue(const PeerTransfer& t) override {
    Call call(this);
    const int op = static_cast<int>(t.op);
    last_[op].clear();
    in_progress_.clear();
    auto post = [&](FakeWorld::Pair pair, const void* src, void* dst, bool is_send) {
      auto x = std::make_shared<FakeWorld::Transfer>();
      x->src = src;
      x->dst = dst;
      x->count = t.count;
      if (!world_->Connected(pair)) in_progress_.push_back(pair);
      world_->Post(pair, x, is_send);
      last_[op].push_back(x);
    };
    switch (t.op) {
      case PeerOp::kSend:
        post({rank_, t.to}, t.src, nullptr, true);
        break;
      case PeerOp::kRecv:
        post({t.from, rank_}, nullptr, t.dst, false);
        break;
      case PeerOp::kWarmUp:
        if (t.from >= 0) post({t.from, rank_}, nullptr, &scratch_[1], false);
        if (t.to >= 0) post({rank_, t.to}, &scratch_[0], nullptr, true);
        break;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<bool> Enqueued() override {
    Call call(this);
    for (const FakeWorld::Pair& pair : in_progress_) {
      if (!world_->Connected(pair)) return false;
    }
    in_progress_.clear();
    return true;
  }

  absl::StatusOr<bool> Finished(PeerOp op) override {
    Call call(this);
    for (const auto& t : last_[static_cast<int>(op)]) {
      if (!world_->Done(t)) return false;
    }
    return true;
  }

  void Abort() override {
    if (in_call_.load() != 0) misuse_->fetch_add(1);  // aborted under a call
    aborted_.store(true);
  }

 private:
  // Marks a call in progress; one that comes after Abort() is misuse. Each
  // call lingers a little so that an unguarded Abort() would overlap it.
  struct Call {
    explicit Call(FakeCommunicator* c) : c(c) {
      if (c->aborted_.load()) c->misuse_->fetch_add(1);
      c->in_call_.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    ~Call() { c->in_call_.fetch_sub(1); }
    FakeCommunicator* c;
  };

  FakeWorld* world_;
  int rank_;
  std::atomic<int>* misuse_;
  std::atomic<int> in_call_{0};
  std::atomic<bool> aborted_{false};
  std::vector<std::shared_ptr<FakeWorld::Transfer>> last_[3];
  std::vector<FakeWorld::Pair> in_progress_;
  float scratch_[2] = {1.0f, 0.0f};
};

// The gRPC stream between two workers: step headers, in order.
class HeaderChannel {
 public:
  void Write(int step) {
    std::lock_guard<std::mutex> lock(mu_);
    q_.push(step);
    cv_.notify_all();
  }
  int Read() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !q_.empty(); });
    const int step = q_.front();
    q_.pop();
    return step;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::queue<int> q_;
};

class PeerLinkTest : public ::testing::Test {
 protected:
  PeerLink::Options OptionsFor(int rank, int size, int transfer_timeout_ms = 10'000) {
    PeerLink::Options o;
    o.rank = rank;
    o.size = size;
    o.join_timeout_ms = 10'000;
    o.transfer_timeout_ms = transfer_timeout_ms;
    o.label = "fake:" + std::to_string(rank);
    return o;
  }
  std::unique_ptr<Communicator> Comm(int rank) {
    return std::make_unique<FakeCommunicator>(&world_, rank, &misuse_);
  }
  // Joins `size` ranks at once, as the workers of one epoch's Load do.
  std::vector<std::unique_ptr<PeerLink>> JoinAll(int size, int transfer_timeout_ms = 10'000) {
    std::vector<std::unique_ptr<PeerLink>> links(size);
    std::vector<absl::Status> status(size);
    std::vector<std::thread> threads;
    for (int r = 0; r < size; ++r) {
      threads.emplace_back([&, r] {
        auto link = PeerLink::Join(Comm(r), OptionsFor(r, size, transfer_timeout_ms));
        status[r] = link.status();
        if (link.ok()) links[r] = std::move(*link);
      });
    }
    for (auto& t : threads) t.join();
    for (int r = 0; r < size; ++r) EXPECT_TRUE(status[r].ok()) << "rank " << r << ": " << status[r];
    return links;
  }

  FakeWorld world_;
  std::atomic<int> misuse_{0};
};

TEST_F(PeerLinkTest, WithoutAWarmUpTheFirstEnqueueWaitsForItsPeer) {
  // What the fake models, and why the old protocol deadlocked: the sender
  // waited for its first enqueue before forwarding the header, and the
  // receiver posts its half only when that header arrives.
  FakeCommunicator sender(&world_, 0, &misuse_), receiver(&world_, 1, &misuse_);
  std::vector<float> out(4, 1.5f), in(4, 0.0f);
  PeerTransfer send;
  send.op = PeerOp::kSend;
  send.src = out.data();
  send.count = 4;
  send.to = 1;
  ASSERT_TRUE(sender.Enqueue(send).ok());
  for (int i = 0; i < 100; ++i) {
    EXPECT_FALSE(*sender.Enqueued()) << "the pair connected with one side only";
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  PeerTransfer recv;
  recv.op = PeerOp::kRecv;
  recv.dst = in.data();
  recv.count = 4;
  recv.from = 0;
  ASSERT_TRUE(receiver.Enqueue(recv).ok());
  EXPECT_TRUE(*sender.Enqueued());
  EXPECT_TRUE(*sender.Finished(PeerOp::kSend));
  EXPECT_EQ(in, out);
}

TEST_F(PeerLinkTest, TheFirstHopOfAnEpochCarriesItsDataThroughAThreeStagePipeline) {
  auto links = JoinAll(3);
  ASSERT_EQ(links.size(), 3u);
  for (const auto& l : links) ASSERT_NE(l, nullptr);
  constexpr int kSteps = 5, kCount = 64;
  HeaderChannel hop01, hop12;
  std::vector<absl::Status> errors(3);
  std::vector<std::vector<float>> received(kSteps);
  auto check = [&](int rank, absl::Status s) {
    if (!s.ok() && errors[rank].ok()) errors[rank] = s;
  };
  std::thread first([&] {
    std::vector<float> x(kCount);
    for (int step = 0; step < kSteps; ++step) {
      check(0, links[0]->WaitSend());  // BeginStep: the buffer's next use
      for (int i = 0; i < kCount; ++i) x[i] = step * 1000.0f + i;
      check(0, links[0]->Send(x.data(), kCount, 1));  // the stage returns...
      hop01.Write(step);                              // ...then the header goes
    }
    check(0, links[0]->WaitSend());
  });
  std::thread middle([&] {
    std::vector<float> x(kCount);
    for (int step = 0; step < kSteps; ++step) {
      EXPECT_EQ(hop01.Read(), step);
      check(1, links[1]->WaitSend());
      check(1, links[1]->Recv(x.data(), kCount, 0));
      // On a GPU the stream orders the layers after the receive; here the
      // host waits for it in their place.
      check(1, links[1]->WaitRecv());
      for (float& v : x) v += 0.5f;
      check(1, links[1]->Send(x.data(), kCount, 2));
      hop12.Write(step);
    }
    check(1, links[1]->WaitSend());
  });
  std::thread last([&] {
    for (int step = 0; step < kSteps; ++step) {
      EXPECT_EQ(hop12.Read(), step);
      received[step].assign(kCount, -1.0f);
      check(2, links[2]->Recv(received[step].data(), kCount, 1));
      check(2, links[2]->WaitRecv());  // Download/Logits
    }
  });
  first.join();
  middle.join();
  last.join();
  for (int r = 0; r < 3; ++r) EXPECT_TRUE(errors[r].ok()) << "rank " << r << ": " << errors[r];
  for (int step = 0; step < kSteps; ++step) {
    for (int i = 0; i < kCount; ++i) {
      ASSERT_EQ(received[step][i], step * 1000.0f + i + 0.5f)
          << "step " << step << " element " << i;
    }
  }
  EXPECT_EQ(misuse_.load(), 0);
}

TEST_F(PeerLinkTest, ASendReturnsBeforeItsReceiverPostsAndIsWaitedForLater) {
  auto links = JoinAll(2);
  ASSERT_NE(links[0], nullptr);
  ASSERT_NE(links[1], nullptr);
  std::vector<float> out(8, 2.0f), in(8, 0.0f);
  ASSERT_TRUE(links[0]->Send(out.data(), 8, 1).ok());
  EXPECT_TRUE(links[0]->send_pending());
  EXPECT_EQ(in[0], 0.0f);  // nothing moved: the receiver has not posted
  ASSERT_TRUE(links[1]->Recv(in.data(), 8, 0).ok());
  EXPECT_TRUE(links[0]->WaitSend().ok());
  EXPECT_TRUE(links[1]->WaitRecv().ok());
  EXPECT_FALSE(links[0]->send_pending());
  EXPECT_EQ(in, out);
}

TEST_F(PeerLinkTest, AReceiveWhosePeerNeverSendsIsABrokenHopAndAbortsTheGroup) {
  auto links = JoinAll(2, /*transfer_timeout_ms=*/100);
  ASSERT_NE(links[1], nullptr);
  std::vector<float> in(8, 0.0f);
  ASSERT_TRUE(links[1]->Recv(in.data(), 8, 0).ok());
  const absl::Status s = links[1]->WaitRecv();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("broken hop"), std::string::npos) << s;
  EXPECT_NE(s.message().find("fake:1"), std::string::npos) << s;
  EXPECT_TRUE(links[1]->aborted());
  // Every later transfer fails at once, without touching the communicator.
  EXPECT_EQ(links[1]->Recv(in.data(), 8, 0).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(misuse_.load(), 0);
}

TEST_F(PeerLinkTest, AJoinWhoseNeighbourNeverComesTimesOut) {
  PeerLink::Options o = OptionsFor(0, 2);
  o.join_timeout_ms = 100;
  auto link = PeerLink::Join(Comm(0), o);
  ASSERT_FALSE(link.ok());
  EXPECT_EQ(link.status().code(), absl::StatusCode::kUnavailable) << link.status();
  EXPECT_NE(link.status().message().find("warm-up"), std::string::npos) << link.status();
  EXPECT_EQ(misuse_.load(), 0);
}

TEST_F(PeerLinkTest, AbortFromAnotherThreadEndsAStuckWaitAndNeverOverlapsACall) {
  // Load and DropAssignment abort the group without the step lock, while
  // the step thread polls; with NCCL, an abort under a call frees the
  // communicator that call is using.
  for (int round = 0; round < 40; ++round) {
    FakeWorld world;
    std::atomic<int> misuse{0};
    std::vector<std::unique_ptr<PeerLink>> links(2);
    std::thread peer([&] {
      auto l =
          PeerLink::Join(std::make_unique<FakeCommunicator>(&world, 0, &misuse), OptionsFor(0, 2));
      if (l.ok()) links[0] = std::move(*l);
    });
    auto self = PeerLink::Join(std::make_unique<FakeCommunicator>(&world, 1, &misuse),
                               OptionsFor(1, 2, /*transfer_timeout_ms=*/60'000));
    peer.join();
    ASSERT_TRUE(self.ok()) << self.status();
    std::vector<float> in(4);
    ASSERT_TRUE((*self)->Recv(in.data(), 4, 0).ok());
    absl::Status waited;
    std::thread step([&] { waited = (*self)->WaitRecv(); });
    std::this_thread::sleep_for(std::chrono::microseconds(200 + 137 * round));
    (*self)->Abort();
    step.join();
    EXPECT_EQ(waited.code(), absl::StatusCode::kUnavailable) << waited;
    EXPECT_NE(waited.message().find("aborted"), std::string::npos) << waited;
    EXPECT_EQ(misuse.load(), 0) << "round " << round;
  }
}

}  // namespace
}  // namespace strata
