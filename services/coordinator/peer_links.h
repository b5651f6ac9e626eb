// Which hops of a pipeline map carry hidden states by a peer transport (NCCL
// between CUDA devices, a socket between simulated ones): pure planning over
// the stages' devices, in pipeline order. A hop i -> i+1 uses it when both
// workers have the same transport, they run on the same host, and their GPUs
// differ (two workers sharing one GPU keep gRPC). The workers on such hops
// form one peer group of one transport (the first linked hop's), ranked in
// pipeline order.
#ifndef STRATA_SERVICES_COORDINATOR_PEER_LINKS_H_
#define STRATA_SERVICES_COORDINATOR_PEER_LINKS_H_

#include <string>
#include <vector>

namespace strata {

struct PeerCandidate {
  std::string host;
  std::string gpu_uuid;
  std::string transport;  // "nccl", "socket", or empty: none
};

struct PeerLinks {
  std::vector<int> rank;   // per stage: its rank in the group, or -1
  std::vector<bool> send;  // per stage: its output goes to the next stage by NCCL
  int size = 0;            // members of the group; 0 when no hop uses a peer transport
  std::string transport;   // the group's: "nccl" or "socket"
  bool recv(size_t stage) const { return stage > 0 && send[stage - 1]; }
};

PeerLinks PlanPeerLinks(const std::vector<PeerCandidate>& stages);

}  // namespace strata

#endif  // STRATA_SERVICES_COORDINATOR_PEER_LINKS_H_
