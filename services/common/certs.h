// Making a cluster's certificates (`strata certs`, `strata up`): a CA and,
// signed by it, one certificate per identity, with OpenSSL. See tls.h for
// how processes use them.
#ifndef STRATA_SERVICES_COMMON_CERTS_H_
#define STRATA_SERVICES_COMMON_CERTS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "services/common/tls.h"

namespace strata {

struct CertRequest {
  Role role;
  std::string name;  // also the file name stem
};

// Writes ca.crt and ca.key (EC P-256; an existing pair in `out_dir` is
// reused, so new certificates chain to the CA processes already trust) and
// NAME.crt / NAME.key for each request: the SAN URI of its identity, and DNS
// or IP SANs for `hosts` (localhost and 127.0.0.1 always). Keys are 0600;
// files are renamed into place, so a process watching them never reads half
// of one.
absl::Status MakeCertificates(const std::string& out_dir, const std::vector<CertRequest>& certs,
                              const std::vector<std::string>& hosts, int valid_days);
// The identities of a cluster: coordinator, gateway, operator, worker-0..N-1.
std::vector<CertRequest> ClusterCertRequests(int workers);

}  // namespace strata

#endif  // STRATA_SERVICES_COMMON_CERTS_H_
