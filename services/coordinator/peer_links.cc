#include "services/coordinator/peer_links.h"

namespace strata {

PeerLinks PlanPeerLinks(const std::vector<PeerCandidate>& stages) {
  PeerLinks links;
  links.rank.assign(stages.size(), -1);
  links.send.assign(stages.size(), false);
  for (size_t i = 0; i + 1 < stages.size(); ++i) {
    const PeerCandidate& a = stages[i];
    const PeerCandidate& b = stages[i + 1];
    const bool linkable = !a.transport.empty() && a.transport == b.transport &&
                          (links.transport.empty() || a.transport == links.transport) &&
                          !a.host.empty() && a.host == b.host && !a.gpu_uuid.empty() &&
                          !b.gpu_uuid.empty() && a.gpu_uuid != b.gpu_uuid;
    links.send[i] = linkable;
    if (linkable) links.transport = a.transport;
  }
  for (size_t i = 0; i < stages.size(); ++i) {
    if (links.send[i] || links.recv(i)) links.rank[i] = links.size++;
  }
  return links;
}

}  // namespace strata
