#include "services/common/tls.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "services/common/openssl_util.h"

namespace strata {
namespace {

using openssl::LastError;
using openssl::PkeyPtr;
using openssl::ReadCert;
using openssl::ReadFile;
using openssl::ReadKey;
using openssl::StoreCtxFree;
using openssl::StoreFree;

constexpr absl::string_view kUriPrefix = "spiffe://strata/";

absl::StatusOr<Identity> CertIdentity(X509* cert) {
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  absl::Status last = absl::NotFoundError("no subject alternative name URI spiffe://strata/...");
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type != GEN_URI) continue;
    const ASN1_STRING* s = n->d.uniformResourceIdentifier;
    std::string uri(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s));
    auto id = ParseIdentityUri(uri);
    if (id.ok()) {
      GENERAL_NAMES_free(names);
      return id;
    }
    last = id.status();
  }
  if (names != nullptr) GENERAL_NAMES_free(names);
  return last;
}

Identity IdentityFromProperties(const grpc::AuthContext& auth, const char* property) {
  for (const grpc::string_ref& v : auth.FindPropertyValues(property)) {
    auto id = ParseIdentityUri(absl::string_view(v.data(), v.size()));
    if (id.ok()) return *id;
  }
  return {};
}

std::string Sha256(absl::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return std::string(reinterpret_cast<char*>(digest), sizeof(digest));
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kNone:
      return "none";
    case Role::kCoordinator:
      return "coordinator";
    case Role::kWorker:
      return "worker";
    case Role::kGateway:
      return "gateway";
    case Role::kOperator:
      return "operator";
  }
  return "none";
}

std::string IdentityUri(Role role, absl::string_view name) {
  return absl::StrCat(kUriPrefix, RoleName(role), "/", name);
}

absl::StatusOr<Identity> ParseIdentityUri(absl::string_view uri) {
  absl::string_view rest = uri;
  if (!absl::ConsumePrefix(&rest, kUriPrefix)) {
    return absl::InvalidArgumentError(
        absl::StrCat("identity URI ", uri, ": must start with ", kUriPrefix));
  }
  const size_t slash = rest.find('/');
  if (slash == absl::string_view::npos || slash + 1 == rest.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("identity URI ", uri, ": expected ", kUriPrefix, "ROLE/NAME"));
  }
  const absl::string_view role = rest.substr(0, slash), name = rest.substr(slash + 1);
  Identity id;
  for (Role r : {Role::kCoordinator, Role::kWorker, Role::kGateway, Role::kOperator}) {
    if (role == RoleName(r)) id.role = r;
  }
  if (id.role == Role::kNone) {
    return absl::InvalidArgumentError(
        absl::StrCat("identity URI ", uri, ": role \"", role,
                     "\" is not coordinator, worker, gateway or operator"));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return absl::InvalidArgumentError(
          absl::StrCat("identity URI ", uri, ": the name may hold letters, digits, - _ . only"));
    }
  }
  id.name = std::string(name);
  return id;
}

std::string DescribeIdentity(const Identity& id) {
  if (id.role == Role::kNone) return "a peer without a certificate";
  return absl::StrCat(RoleName(id.role), " ", id.name);
}

absl::StatusOr<std::shared_ptr<const TransportSecurity>> TransportSecurity::Mutual(
    const TlsFiles& files, const std::string& flag_prefix) {
  if (files.empty()) return Insecure();
  const std::string cert_flag = flag_prefix + "-cert", key_flag = flag_prefix + "-key",
                    ca_flag = flag_prefix + "-ca";
  for (const auto& [flag, value] : {std::pair{cert_flag, files.cert},
                                    std::pair{key_flag, files.key}, std::pair{ca_flag, files.ca}}) {
    if (value.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, ": required with --", cert_flag, ", --", key_flag, " and --", ca_flag,
          " (mutual TLS needs all three; give none of them, or --insecure, for a plaintext "
          "cluster)"));
    }
  }
  auto cert = ReadCert(cert_flag, files.cert);
  if (!cert.ok()) return cert.status();
  auto key = ReadKey(key_flag, files.key);
  if (!key.ok()) return key.status();
  auto ca = ReadCert(ca_flag, files.ca);
  if (!ca.ok()) return ca.status();
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "--", key_flag, ": ", files.key, " is not the key of the certificate in ", files.cert));
  }
  std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), ca->get());
  std::unique_ptr<X509_STORE_CTX, StoreCtxFree> ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), cert->get(), nullptr);
  if (X509_verify_cert(ctx.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", cert_flag, ": ", files.cert, " is not signed by the CA in ", files.ca, " (",
        X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get())), ")"));
  }
  auto self = CertIdentity(cert->get());
  if (!self.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", cert_flag, ": ", files.cert, ": ", self.status().message()));
  }
  auto out = std::shared_ptr<TransportSecurity>(new TransportSecurity());
  out->secure_ = true;
  out->mutual_ = true;
  out->files_ = files;
  out->self_ = *self;
  return out;
}

absl::StatusOr<std::shared_ptr<const TransportSecurity>> TransportSecurity::MutualAs(
    const TlsFiles& files, Role role) {
  auto security = Mutual(files);
  if (!security.ok() || !(*security)->mutual() || (*security)->self().role == role) {
    return security;
  }
  return absl::InvalidArgumentError(absl::StrCat("--tls-cert: ", files.cert, " is a ",
                                                 RoleName((*security)->self().role),
                                                 " certificate, not a ", RoleName(role), "'s"));
}

absl::StatusOr<std::shared_ptr<const TransportSecurity>> TransportSecurity::ServerOnly(
    const std::string& cert_file, const std::string& key_file, const std::string& flag_prefix) {
  if (cert_file.empty() && key_file.empty()) return Insecure();
  const std::string cert_flag = flag_prefix + "-cert", key_flag = flag_prefix + "-key";
  if (cert_file.empty() || key_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--", cert_flag, " and --", key_flag,
                                                   ": give both, or neither for plaintext"));
  }
  auto cert = ReadCert(cert_flag, cert_file);
  if (!cert.ok()) return cert.status();
  auto key = ReadKey(key_flag, key_file);
  if (!key.ok()) return key.status();
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "--", key_flag, ": ", key_file, " is not the key of the certificate in ", cert_file));
  }
  auto out = std::shared_ptr<TransportSecurity>(new TransportSecurity());
  out->secure_ = true;
  out->files_ = {cert_file, key_file, ""};
  return out;
}

std::shared_ptr<const TransportSecurity> TransportSecurity::Insecure() {
  static const auto* insecure =
      new std::shared_ptr<const TransportSecurity>(new TransportSecurity());
  return *insecure;
}

std::shared_ptr<grpc::ServerCredentials> TransportSecurity::ServerCredentials() const {
  if (!secure_) return grpc::InsecureServerCredentials();
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      files_.key, files_.cert, files_.ca, kTlsRefreshSeconds);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (mutual_) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> TransportSecurity::ChannelCredentials() const {
  if (!mutual_) return grpc::InsecureChannelCredentials();
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      files_.key, files_.cert, files_.ca, kTlsRefreshSeconds);
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(provider);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_verify_server_certs(true);
  return grpc::experimental::TlsCredentials(options);
}

Identity PeerIdentity(const grpc::ServerContextBase& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return {};
  Identity id = IdentityFromProperties(*auth, GRPC_PEER_URI_PROPERTY_NAME);
  if (id.role == Role::kNone) id = IdentityFromProperties(*auth, GRPC_X509_SAN_PROPERTY_NAME);
  return id;
}

absl::Status Authorize(const grpc::ServerContextBase& context, const TransportSecurity& security,
                       std::initializer_list<Role> roles, absl::string_view call) {
  if (!security.mutual()) return absl::OkStatus();
  const Identity peer = PeerIdentity(context);
  for (Role r : roles) {
    if (peer.role == r) return absl::OkStatus();
  }
  std::vector<std::string> names;
  for (Role r : roles) names.push_back(RoleName(r));
  return absl::PermissionDeniedError(absl::StrCat(call, ": only a ", absl::StrJoin(names, " or "),
                                                  " may call this; the caller is ",
                                                  DescribeIdentity(peer)));
}

bool SecretsEqual(absl::string_view a, absl::string_view b) {
  const std::string da = Sha256(a), db = Sha256(b);
  return CRYPTO_memcmp(da.data(), db.data(), da.size()) == 0;
}

std::string RandomToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    // Never a predictable token: the random device is the fallback.
    std::ifstream urandom("/dev/urandom", std::ios::binary);
    urandom.read(reinterpret_cast<char*>(bytes), sizeof(bytes));
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(bytes), sizeof(bytes)));
}

absl::StatusOr<ApiKeys> ApiKeys::FromFile(const std::string& path) {
  auto text = ReadFile("api-key-file", path);
  if (!text.ok()) return text.status();
  ApiKeys keys;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    if (line.size() < 16) {
      return absl::InvalidArgumentError(absl::StrCat("--api-key-file: ", path, " line ", line_no,
                                                     ": a key must have at least 16 characters"));
    }
    keys.digests_.push_back(Sha256(line));
  }
  if (keys.digests_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--api-key-file: ", path, " holds no key (one per line)"));
  }
  return keys;
}

absl::Status ApiKeys::CheckHeader(absl::string_view authorization) const {
  absl::string_view key = authorization;
  if (!absl::ConsumePrefix(&key, "Bearer ") && !absl::ConsumePrefix(&key, "bearer ")) {
    return absl::UnauthenticatedError(
        "authorization: expected \"Bearer KEY\" with an API key of this gateway");
  }
  const std::string digest = Sha256(absl::StripAsciiWhitespace(key));
  bool found = false;
  for (const std::string& d : digests_) {
    found |= CRYPTO_memcmp(d.data(), digest.data(), d.size()) == 0;  // no early exit
  }
  if (!found) return absl::UnauthenticatedError("authorization: unknown API key");
  return absl::OkStatus();
}

absl::Status ApiKeys::Check(const grpc::ServerContextBase& context) const {
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return absl::UnauthenticatedError(
        "authorization: required (metadata \"authorization: Bearer KEY\")");
  }
  return CheckHeader(absl::string_view(it->second.data(), it->second.size()));
}

}  // namespace strata
