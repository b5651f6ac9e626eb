// Transport security of one process: mutual TLS on the internal plane
// (coordinator, workers, the gateway's session), server-only TLS and API
// keys on the public plane.
//
// Every internal certificate is signed by the cluster CA and names its holder
// in a SAN URI, spiffe://strata/ROLE/NAME (ROLE: coordinator, worker,
// gateway, operator). A server built with mutual TLS accepts only peers
// whose chain ends at the CA; each handler then asks PeerIdentity() who
// called and authorises by role (and, for workers, by name).
//
// Certificates and keys are read from files that are watched: replacing the
// files (a Kubernetes Secret update, `strata certs` run again) rotates them
// without a restart; connections made after the refresh use the new ones.
//
// TransportSecurity is immutable after construction and thread-safe.
#ifndef STRATA_SERVICES_COMMON_TLS_H_
#define STRATA_SERVICES_COMMON_TLS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strata {

enum class Role { kNone, kCoordinator, kWorker, kGateway, kOperator };

// Who holds a certificate. kNone: no certificate (an insecure connection).
struct Identity {
  Role role = Role::kNone;
  std::string name;
};

const char* RoleName(Role role);
// "spiffe://strata/worker/worker-0" and back; errors name the part.
std::string IdentityUri(Role role, absl::string_view name);
absl::StatusOr<Identity> ParseIdentityUri(absl::string_view uri);
// "worker worker-0", "insecure peer".
std::string DescribeIdentity(const Identity& id);

// Three PEM files: this process's certificate chain, its key, the CA that
// signs every peer. All empty: no TLS.
struct TlsFiles {
  std::string cert, key, ca;
  bool empty() const { return cert.empty() && key.empty() && ca.empty(); }
};

// How often watched certificate files are read again.
inline constexpr unsigned kTlsRefreshSeconds = 10;

class TransportSecurity {
 public:
  // Mutual TLS from `files` (all three required), checked now: each file
  // readable PEM, the key matching the certificate, the certificate signed by
  // the CA and naming its holder. `flag_prefix` names the flags in errors
  // ("tls" -> --tls-cert). No files: an insecure transport.
  static absl::StatusOr<std::shared_ptr<const TransportSecurity>> Mutual(
      const TlsFiles& files, const std::string& flag_prefix = "tls");
  // Mutual(files), and the certificate must be `role`'s (for a process
  // that is that role): "--tls-cert: F is a gateway certificate, not a
  // worker's".
  static absl::StatusOr<std::shared_ptr<const TransportSecurity>> MutualAs(const TlsFiles& files,
                                                                           Role role);
  // Server-only TLS for the public plane: a certificate and key, no client
  // certificates asked for. No files: plaintext.
  static absl::StatusOr<std::shared_ptr<const TransportSecurity>> ServerOnly(
      const std::string& cert, const std::string& key, const std::string& flag_prefix);
  static std::shared_ptr<const TransportSecurity> Insecure();

  bool secure() const { return secure_; }
  // Whether servers require (and verify) a client certificate.
  bool mutual() const { return mutual_; }
  // The identity in this process's own certificate (kNone when insecure).
  const Identity& self() const { return self_; }
  // The files it was made from (empty when insecure).
  const TlsFiles& files() const { return files_; }

  std::shared_ptr<grpc::ServerCredentials> ServerCredentials() const;
  std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials() const;

 private:
  TransportSecurity() = default;
  bool secure_ = false, mutual_ = false;
  TlsFiles files_;
  Identity self_;
};

// The caller of a call, from its client certificate (kNone without one).
Identity PeerIdentity(const grpc::ServerContextBase& context);
// OK when `security` does not authenticate peers (an insecure cluster), or
// the caller holds one of `roles`; otherwise PERMISSION_DENIED naming the
// call and the caller.
absl::Status Authorize(const grpc::ServerContextBase& context, const TransportSecurity& security,
                       std::initializer_list<Role> roles, absl::string_view call);

// Constant-time comparison of two secrets of any length (compares digests).
bool SecretsEqual(absl::string_view a, absl::string_view b);
// 32 random bytes, hex: a per-session or per-hop token.
std::string RandomToken();

// Public-plane API keys: one per line in a file (blank lines and # comments
// skipped). Check() is constant-time in the key's content.
class ApiKeys {
 public:
  static absl::StatusOr<ApiKeys> FromFile(const std::string& path);
  // OK, or UNAUTHENTICATED: no `authorization: Bearer KEY` metadata, or an
  // unknown key.
  absl::Status Check(const grpc::ServerContextBase& context) const;
  absl::Status CheckHeader(absl::string_view authorization) const;
  size_t size() const { return digests_.size(); }

 private:
  std::vector<std::string> digests_;  // SHA-256 of each key
};

}  // namespace strata

#endif  // STRATA_SERVICES_COMMON_TLS_H_
