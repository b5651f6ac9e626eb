#include "services/coordinator/peer_links.h"

namespace strata {

PeerLinks PlanPeerLinks(const std::vector<PeerCandidate>& stages) {
  PeerLinks links;
  links.rank.assign(stages.size(), -1);
  links.send.assign(stages.size(), false);
  for (size_t i = 0; i + 1 < stages.size(); ++i) {
    const PeerCandidate& a = stages[i];
    const PeerCandidate& b = stages[i + 1];
    links.send[i] = a.capable && b.capable && !a.host.empty() && a.host == b.host &&
                    !a.gpu_uuid.empty() && !b.gpu_uuid.empty() && a.gpu_uuid != b.gpu_uuid;
  }
  for (size_t i = 0; i < stages.size(); ++i) {
    if (links.send[i] || links.recv(i)) links.rank[i] = links.size++;
  }
  return links;
}

}  // namespace strata
