// OpenSSL helpers shared by tls.cc and certs.cc (internal to
// services/common): owning pointers, the last error as text, and PEM files
// read with errors that name the flag and file.
#ifndef STRATA_SERVICES_COMMON_OPENSSL_UTIL_H_
#define STRATA_SERVICES_COMMON_OPENSSL_UTIL_H_

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace strata::openssl {

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct StoreFree {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};
struct StoreCtxFree {
  void operator()(X509_STORE_CTX* s) const { X509_STORE_CTX_free(s); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;

// The last OpenSSL error as text (and clears it).
std::string LastError();
absl::StatusOr<std::string> ReadFile(const std::string& flag, const std::string& path);
absl::StatusOr<X509Ptr> ReadCert(const std::string& flag, const std::string& path);
absl::StatusOr<PkeyPtr> ReadKey(const std::string& flag, const std::string& path);

}  // namespace strata::openssl

#endif  // STRATA_SERVICES_COMMON_OPENSSL_UTIL_H_
