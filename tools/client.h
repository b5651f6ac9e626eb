// A streaming client of the public Generation API: prints text deltas as they
// arrive. Used by `strata client` and by `strata up --prompt`.
#ifndef STRATA_TOOLS_CLIENT_H_
#define STRATA_TOOLS_CLIENT_H_

#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "strata/v1/generation.pb.h"

namespace strata {

struct ClientOptions {
  std::string address;  // the gateway
  v1::GenerateRequest request;
  int timeout_ms = 0;       // the call's deadline; 0 = none
  bool echo_prompt = true;  // print the prompt before the completion
  bool stats = false;       // finish reason, token counts and timing to stderr
  std::string api_key;      // "authorization: Bearer KEY"; empty: none
  std::string tls_ca;       // TLS to the gateway, trusting this CA file; empty: plaintext
};

absl::Status StreamCompletion(const ClientOptions& options, std::FILE* out);

}  // namespace strata

#endif  // STRATA_TOOLS_CLIENT_H_
