// The socket communicator (runtime/backend/socket_link.h) under the PeerLink
// protocol: real Unix-domain sockets between threads, and between processes
// for a peer killed by a real signal.
#include "runtime/backend/socket_link.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <future>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

PeerGroup Group(const std::string& id, int rank, int size, int timeout_ms = 5'000) {
  PeerGroup g;
  g.unique_id = id;
  g.rank = rank;
  g.size = size;
  g.timeout_ms = timeout_ms;
  return g;
}

// Joins the socket group and runs PeerLink's warm-up on it.
absl::StatusOr<std::unique_ptr<PeerLink>> JoinLink(const PeerGroup& g, int transfer_ms = 5'000) {
  auto comm = SocketCommunicator::Join(g, sizeof(float), absl::StrCat("rank ", g.rank));
  if (!comm.ok()) return comm.status();
  return PeerLink::Join(std::move(*comm), g, transfer_ms, absl::StrCat("rank ", g.rank));
}

// Joins every rank of a `size`-member group, each from its own thread.
std::vector<std::unique_ptr<PeerLink>> JoinAll(const std::string& id, int size) {
  std::vector<std::future<absl::StatusOr<std::unique_ptr<PeerLink>>>> joins;
  for (int r = size - 1; r >= 0; --r) {  // the last first: connects must wait for listeners
    joins.push_back(
        std::async(std::launch::async, [&id, r, size] { return JoinLink(Group(id, r, size)); }));
  }
  std::vector<std::unique_ptr<PeerLink>> links(size);
  for (int i = 0; i < size; ++i) {
    auto link = joins[i].get();
    EXPECT_TRUE(link.ok()) << link.status();
    if (link.ok()) links[size - 1 - i] = std::move(*link);
  }
  return links;
}

TEST(SocketLinkTest, IdsAreRandomAndTellThemselvesFromNcclIds) {
  const std::string a = NewSocketPeerGroupId();
  const std::string b = NewSocketPeerGroupId();
  EXPECT_NE(a, b);
  EXPECT_TRUE(IsSocketPeerGroupId(a));
  EXPECT_FALSE(IsSocketPeerGroupId(std::string(128, '\0')));  // an ncclUniqueId's size
  auto joined = SocketCommunicator::Join(Group(std::string(128, '\0'), 0, 2), 4, "sim:a100-40gb");
  ASSERT_FALSE(joined.ok());
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(joined.status().message().find("sim:a100-40gb"), std::string::npos);
  // A rank outside the group, a group of one, elements of no size.
  for (const auto& [rank, size, bytes] :
       std::vector<std::tuple<int, int, int64_t>>{{2, 2, 4}, {-1, 2, 4}, {0, 1, 4}, {0, 2, 0}}) {
    auto bad = SocketCommunicator::Join(Group(a, rank, size), bytes, "sim:a100-40gb");
    ASSERT_FALSE(bad.ok()) << rank << " of " << size;
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
    EXPECT_NE(bad.status().message().find("peer group rank"), std::string::npos) << bad.status();
  }
}

TEST(SocketLinkTest, StepsFlowThroughAThreeRankPipelineInOrder) {
  const std::string id = NewSocketPeerGroupId();
  auto links = JoinAll(id, 3);
  ASSERT_EQ(links.size(), 3u);
  for (const auto& l : links) ASSERT_NE(l, nullptr);
  // Each step: rank 0 sends, rank 1 receives, adds 1 and sends on, rank 2
  // receives; sends are waited for only at the next step, as a stage does.
  for (int step = 0; step < 20; ++step) {
    const int64_t n = 1 + step * 97;  // sizes vary step to step
    std::vector<float> a(n), b(n), c(n);
    for (int64_t i = 0; i < n; ++i) a[i] = static_cast<float>(step * 1000 + i);
    ASSERT_TRUE(links[0]->Send(a.data(), n, 1).ok());
    ASSERT_TRUE(links[1]->Recv(b.data(), n, 0).ok());
    ASSERT_TRUE(links[1]->WaitRecv().ok());
    for (float& x : b) x += 1;
    ASSERT_TRUE(links[1]->Send(b.data(), n, 2).ok());
    ASSERT_TRUE(links[2]->Recv(c.data(), n, 1).ok());
    absl::Status got = links[2]->WaitRecv();
    ASSERT_TRUE(got.ok()) << got;
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(c[i], a[i] + 1) << "step " << step << " row " << i;
  }
  // A send too big for the socket's buffer finishes once the peer reads it.
  const int64_t big = int64_t{4} << 20;
  std::vector<float> x(big, 3.0f), y(big);
  ASSERT_TRUE(links[0]->Send(x.data(), big, 1).ok());
  ASSERT_TRUE(links[1]->Recv(y.data(), big, 0).ok());
  std::thread receiver([&] { EXPECT_TRUE(links[1]->WaitRecv().ok()); });
  EXPECT_TRUE(links[0]->WaitSend().ok());
  receiver.join();
  EXPECT_EQ(y[big - 1], 3.0f);
}

TEST(SocketLinkTest, AStrangerWithoutTheSecretIsTurnedAwayAndTheRankStillJoins) {
  const std::string id = NewSocketPeerGroupId();
  auto rank1 = std::async(std::launch::async, [&id] { return JoinLink(Group(id, 1, 2)); });
  // Knowing the public name (any local process can list abstract sockets),
  // a stranger connects and claims rank 0 with a wrong secret.
  const std::string name = id.substr(id.size() - 32, 16);
  const std::string path = absl::StrCat("strata-peer-", absl::BytesToHexString(name), "-1");
  sockaddr_un a = {};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path + 1, path.data(), path.size());
  const socklen_t length =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + path.size());
  int stranger = -1;
  for (int i = 0; i < 2000 && stranger < 0; ++i) {
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&a), length) == 0) {
      stranger = fd;
    } else {
      close(fd);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  ASSERT_GE(stranger, 0) << "rank 1 never listened";
  const std::string wrong(16 + 4, '\0');
  ASSERT_EQ(send(stranger, wrong.data(), wrong.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(wrong.size()));
  timeval wait = {.tv_sec = 5, .tv_usec = 0};
  ASSERT_EQ(setsockopt(stranger, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait)), 0);
  char byte = 0;
  EXPECT_EQ(recv(stranger, &byte, 1, 0), 0) << "the stranger's connection stays open";
  close(stranger);

  auto rank0 = JoinLink(Group(id, 0, 2));
  ASSERT_TRUE(rank0.ok()) << rank0.status();
  auto link1 = rank1.get();
  ASSERT_TRUE(link1.ok()) << link1.status();
  float v = 42, w = 0;
  ASSERT_TRUE((*rank0)->Send(&v, 1, 1).ok());
  ASSERT_TRUE((*link1)->Recv(&w, 1, 0).ok());
  ASSERT_TRUE((*link1)->WaitRecv().ok());
  EXPECT_EQ(w, 42);
}

TEST(SocketLinkTest, ARankThatNeverComesFailsTheJoinAtItsDeadline) {
  const auto start = Clock::now();
  auto link = JoinLink(Group(NewSocketPeerGroupId(), 1, 2, 300));
  ASSERT_FALSE(link.ok());
  EXPECT_EQ(link.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(link.status().message().find("rank 0 did not connect"), std::string::npos)
      << link.status();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
}

TEST(SocketLinkTest, AMismatchedCountIsABrokenHop) {
  auto links = JoinAll(NewSocketPeerGroupId(), 2);
  ASSERT_NE(links[1], nullptr);
  std::vector<float> a(8), b(6);
  ASSERT_TRUE(links[0]->Send(a.data(), 8, 1).ok());
  ASSERT_TRUE(links[1]->Recv(b.data(), 6, 0).ok());
  const absl::Status got = links[1]->WaitRecv();
  EXPECT_EQ(got.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(got.message().find("sent 8 elements where 6 were expected"), std::string::npos) << got;
  EXPECT_TRUE(links[1]->aborted());
}

TEST(SocketLinkTest, OneSidedMembersLinkOnlyTheirRealHop) {
  // Ranks 1 and 2 of a group whose hop 1 -> 2 is not linked (another host):
  // rank 1 only receives, rank 2 only sends; neither waits for the other.
  const std::string id = NewSocketPeerGroupId();
  auto make = [&id](int rank, bool recv, bool send) {
    PeerGroup g = Group(id, rank, 4, 2'000);
    g.recv_from_prev = recv;
    g.send_to_next = send;
    return std::async(std::launch::async, [g] { return JoinLink(g); });
  };
  auto r0 = make(0, false, true), r1 = make(1, true, false);
  auto r2 = make(2, false, true), r3 = make(3, true, false);
  for (auto* f : {&r0, &r1, &r2, &r3}) {
    auto link = f->get();
    EXPECT_TRUE(link.ok()) << link.status();
  }
}

TEST(SocketLinkTest, APeerKilledBySigkillBreaksTheHopAtOnce) {
  const std::string id = NewSocketPeerGroupId();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Rank 0 in its own process: joins, sends one step, then waits to die.
    auto link = JoinLink(Group(id, 0, 2));
    if (!link.ok()) _exit(2);
    float v = 7;
    if (!(*link)->Send(&v, 1, 1).ok() || !(*link)->WaitSend().ok()) _exit(3);
    pause();
    _exit(0);
  }
  auto link = JoinLink(Group(id, 1, 2), /*transfer_ms=*/60'000);
  ASSERT_TRUE(link.ok()) << link.status();
  float got = 0;
  ASSERT_TRUE((*link)->Recv(&got, 1, 0).ok());
  ASSERT_TRUE((*link)->WaitRecv().ok());
  EXPECT_EQ(got, 7);
  // The next step's receive is posted; then its sender dies.
  ASSERT_TRUE((*link)->Recv(&got, 1, 0).ok());
  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  const auto start = Clock::now();
  const absl::Status broken = (*link)->WaitRecv();
  EXPECT_EQ(broken.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(broken.message().find("broken hop"), std::string::npos) << broken;
  EXPECT_NE(broken.message().find("rank 0 closed the connection"), std::string::npos) << broken;
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5)) << "waited for the deadline";
}

}  // namespace
}  // namespace strata
