// Which pipeline hops carry hidden states by NCCL or socket, and the
// peer-group ids the coordinator hands out (NCCL's made by the real NCCL
// library, which needs no GPU).
#include "services/coordinator/peer_links.h"

#include <string>

#include "gtest/gtest.h"
#include "runtime/backend/backend.h"
#include "runtime/generate.h"
#include "runtime/stage.h"
#include "tests/test_util.h"

namespace strata {
namespace {

PeerCandidate Gpu(const std::string& host, const std::string& uuid) { return {host, uuid, "nccl"}; }
PeerCandidate Sim(const std::string& host, const std::string& uuid) {
  return {host, uuid, "socket"};
}

TEST(PeerLinksTest, DistinctGpusOfOneHostFormOneGroupInPipelineOrder) {
  const PeerLinks links = PlanPeerLinks({Gpu("a", "GPU-0"), Gpu("a", "GPU-1"), Gpu("a", "GPU-2")});
  EXPECT_EQ(links.size, 3);
  EXPECT_EQ(links.rank, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(links.send, (std::vector<bool>{true, true, false}));
  EXPECT_FALSE(links.recv(0));
  EXPECT_TRUE(links.recv(1));
  EXPECT_TRUE(links.recv(2));
}

TEST(PeerLinksTest, SharedGpusOtherHostsAndCpuWorkersKeepGrpc) {
  // 0 -> 1: one GPU shared by two workers; 1 -> 2: NCCL; 2 -> 3: another
  // host; 3 -> 4: a CPU worker; 4 -> 5: no UUID reported.
  const PeerLinks links = PlanPeerLinks({Gpu("a", "GPU-0"),
                                         Gpu("a", "GPU-0"),
                                         Gpu("a", "GPU-1"),
                                         Gpu("b", "GPU-2"),
                                         {"b", "", ""},
                                         Gpu("b", "")});
  EXPECT_EQ(links.send, (std::vector<bool>{false, true, false, false, false, false}));
  EXPECT_EQ(links.rank, (std::vector<int>{-1, 0, 1, -1, -1, -1}));
  EXPECT_EQ(links.size, 2);
  EXPECT_EQ(links.transport, "nccl");
}

TEST(PeerLinksTest, OneGroupHasOneTransport) {
  // Simulated GPUs link by socket; a CUDA GPU beside them keeps gRPC, and so
  // does a later NCCL pair once the group is a socket group.
  const PeerLinks links = PlanPeerLinks({Sim("a", "SIM-0"), Sim("a", "SIM-1"), Gpu("a", "GPU-0"),
                                         Gpu("a", "GPU-1"), Sim("a", "SIM-2")});
  EXPECT_EQ(links.transport, "socket");
  EXPECT_EQ(links.send, (std::vector<bool>{true, false, false, false, false}));
  EXPECT_EQ(links.rank, (std::vector<int>{0, 1, -1, -1, -1}));
  EXPECT_EQ(links.size, 2);
}

TEST(PeerLinksTest, OneStageOrNoCapableHopMeansNoGroup) {
  EXPECT_EQ(PlanPeerLinks({Gpu("a", "GPU-0")}).size, 0);
  EXPECT_EQ(PlanPeerLinks({}).size, 0);
  EXPECT_EQ(PlanPeerLinks({{"a", "GPU-0", ""}, Gpu("a", "GPU-1")}).size, 0);
  EXPECT_EQ(PlanPeerLinks({Sim("a", "SIM-0"), Gpu("a", "GPU-1")}).size, 0);
}

TEST(PeerLinksTest, GroupIdsComeFromNcclAndDiffer) {
  auto a = NewPeerGroupId();
  if (!a.ok()) GTEST_SKIP() << a.status();  // a build without CUDA/NCCL
  auto b = NewPeerGroupId();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->size(), 128u);  // sizeof(ncclUniqueId)
  EXPECT_NE(*a, *b);
}

TEST(PeerLinksTest, CpuStagesRefusePeerTransport) {
  std::string why;
  EXPECT_FALSE(PeerTransportAvailable("cpu", &why));
  EXPECT_FALSE(why.empty());
  const std::string& dir = testing::TestModel("llama");
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  auto stage = Stage::Load(dir, *config, 1, config->num_layers, StageOptions{});
  ASSERT_TRUE(stage.ok()) << stage.status();
  PeerGroup group;
  group.unique_id = std::string(128, '\0');
  group.size = 2;
  const absl::Status joined = (*stage)->JoinPeerGroup(group);
  EXPECT_EQ(joined.code(), absl::StatusCode::kFailedPrecondition) << joined;
  EXPECT_NE(joined.message().find("cpu"), std::string::npos) << joined;
  // Without a group, a batch that asks for a peer is refused, not run.
  StageBatch batch;
  batch.chunks.push_back({.seq_id = 1, .start_pos = 0, .num_tokens = 1, .token_ids = {}});
  batch.recv_peer = 0;
  StageOutput out;
  EXPECT_EQ((*stage)->Run(batch, &out).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace strata
