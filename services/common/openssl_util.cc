#include "services/common/openssl_util.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace strata::openssl {

std::string LastError() {
  const unsigned long e = ERR_get_error();
  if (e == 0) return "no detail";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

absl::StatusOr<std::string> ReadFile(const std::string& flag, const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

absl::StatusOr<X509Ptr> ReadCert(const std::string& flag, const std::string& path) {
  auto text = ReadFile(flag, path);
  if (!text.ok()) return text.status();
  BioPtr bio(BIO_new_mem_buf(text->data(), static_cast<int>(text->size())));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", path, " holds no PEM certificate (", LastError(), ")"));
  }
  return cert;
}

absl::StatusOr<PkeyPtr> ReadKey(const std::string& flag, const std::string& path) {
  auto text = ReadFile(flag, path);
  if (!text.ok()) return text.status();
  BioPtr bio(BIO_new_mem_buf(text->data(), static_cast<int>(text->size())));
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, ": ", path, " holds no unencrypted PEM private key (", LastError(), ")"));
  }
  return key;
}

// The strata identity in a certificate's SAN URIs, if any.
}  // namespace strata::openssl
