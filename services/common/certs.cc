#include "services/common/certs.h"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "services/common/openssl_util.h"

namespace strata {

using openssl::LastError;
using openssl::PkeyPtr;
using openssl::ReadCert;
using openssl::ReadKey;
using openssl::X509Ptr;

std::vector<CertRequest> ClusterCertRequests(int workers) {
  std::vector<CertRequest> out = {{Role::kCoordinator, "coordinator"},
                                  {Role::kGateway, "gateway"},
                                  {Role::kOperator, "operator"}};
  for (int i = 0; i < workers; ++i) out.push_back({Role::kWorker, absl::StrCat("worker-", i)});
  return out;
}

namespace {

absl::StatusOr<PkeyPtr> NewKey() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (key == nullptr) return absl::InternalError(absl::StrCat("EC key: ", LastError()));
  return key;
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate extension ", OBJ_nid2sn(nid), "=", value, ": ", LastError()));
  }
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return absl::OkStatus();
}

// A certificate for `key`, signed by (issuer, issuer_key); self-signed when
// issuer is null.
absl::StatusOr<X509Ptr> NewCert(const std::string& common_name, EVP_PKEY* key, X509* issuer,
                                EVP_PKEY* issuer_key, int valid_days,
                                const std::vector<std::pair<int, std::string>>& extensions) {
  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof(serial));
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);  // tolerate clock skew
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(valid_days) * 86400);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("strata"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509* signer = issuer != nullptr ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  for (const auto& [nid, value] : extensions) {
    absl::Status st = AddExtension(cert.get(), signer, nid, value);
    if (!st.ok()) return st;
  }
  if (X509_sign(cert.get(), issuer_key != nullptr ? issuer_key : key, EVP_sha256()) == 0) {
    return absl::InternalError(absl::StrCat("signing ", common_name, ": ", LastError()));
  }
  return cert;
}

absl::Status WritePem(const std::string& path, X509* cert, EVP_PKEY* key) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
  if (key != nullptr) fchmod(fileno(f), 0600);
  const int ok = cert != nullptr
                     ? PEM_write_X509(f, cert)
                     : PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  const bool closed = std::fclose(f) == 0;
  if (ok != 1 || !closed) return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
  // Renamed into place, so a process watching the file never reads half of it.
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot write ", path, ": ", ec.message()));
  return absl::OkStatus();
}

bool LooksLikeIp(const std::string& host) {
  return !host.empty() && (host.find(':') != std::string::npos ||
                           host.find_first_not_of("0123456789.") == std::string::npos);
}

}  // namespace

absl::Status MakeCertificates(const std::string& out_dir, const std::vector<CertRequest>& certs,
                              const std::vector<std::string>& hosts, int valid_days) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("--out: cannot create ", out_dir));
  const std::string ca_cert_path = out_dir + "/ca.crt", ca_key_path = out_dir + "/ca.key";
  // An existing CA is reused, so new certificates (more workers, a rotation)
  // chain to the CA every process already trusts.
  PkeyPtr ca_key;
  X509Ptr ca;
  if (std::filesystem::exists(ca_cert_path) && std::filesystem::exists(ca_key_path)) {
    auto c = ReadCert("out", ca_cert_path);
    if (!c.ok()) return c.status();
    auto k = ReadKey("out", ca_key_path);
    if (!k.ok()) return k.status();
    ca = *std::move(c);
    ca_key = *std::move(k);
  } else {
    auto k = NewKey();
    if (!k.ok()) return k.status();
    ca_key = *std::move(k);
    auto c = NewCert("strata cluster CA", ca_key.get(), nullptr, nullptr, valid_days,
                     {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                      {NID_key_usage, "critical,keyCertSign,cRLSign"},
                      {NID_subject_key_identifier, "hash"}});
    if (!c.ok()) return c.status();
    ca = *std::move(c);
    if (absl::Status st = WritePem(ca_key_path, nullptr, ca_key.get()); !st.ok()) return st;
    if (absl::Status st = WritePem(ca_cert_path, ca.get(), nullptr); !st.ok()) return st;
  }
  std::vector<std::string> sans = {"DNS:localhost", "IP:127.0.0.1"};
  for (const std::string& h : hosts) {
    if (h.empty() || h == "localhost" || h == "127.0.0.1") continue;
    if (h.find_first_of(" ,\t\n") != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("--hosts: \"", h, "\" is not a host name"));
    }
    sans.push_back(absl::StrCat(LooksLikeIp(h) ? "IP:" : "DNS:", h));
  }
  for (const CertRequest& r : certs) {
    auto key = NewKey();
    if (!key.ok()) return key.status();
    const std::string san =
        absl::StrCat("URI:", IdentityUri(r.role, r.name), ",", absl::StrJoin(sans, ","));
    auto cert = NewCert(r.name, key->get(), ca.get(), ca_key.get(), valid_days,
                        {{NID_basic_constraints, "critical,CA:FALSE"},
                         {NID_key_usage, "critical,digitalSignature,keyEncipherment"},
                         {NID_ext_key_usage, "serverAuth,clientAuth"},
                         {NID_subject_alt_name, san},
                         {NID_authority_key_identifier, "keyid"}});
    if (!cert.ok()) return cert.status();
    if (absl::Status st = WritePem(out_dir + "/" + r.name + ".key", nullptr, key->get()); !st.ok())
      return st;
    if (absl::Status st = WritePem(out_dir + "/" + r.name + ".crt", cert->get(), nullptr); !st.ok())
      return st;
  }
  return absl::OkStatus();
}

}  // namespace strata
