// The gateway process: the public Generation API. It tokenizes and validates
// requests, admits them into a bounded queue, hands them to the coordinator
// over its session, and streams text deltas back with stop sequences applied.
// Stateless; run as many as you like. RunGateway() serves until SIGINT or
// SIGTERM, then drains: new requests get UNAVAILABLE, open streams finish.
#ifndef STRATA_SERVICES_GATEWAY_GATEWAY_H_
#define STRATA_SERVICES_GATEWAY_GATEWAY_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "services/common/tls.h"

namespace strata {

inline constexpr char kStrataVersion[] = "0.1.0";

struct GatewayOptions {
  std::string listen = "127.0.0.1:0";  // host:port; port 0 picks a free port
  std::string address_file;  // "grpc-address metrics-address [http-address]" once listening
  std::string metrics_listen = "127.0.0.1:0";  // /metrics over HTTP; empty = none
  std::string health_listen;  // plaintext grpc.health.v1 only, for probes; empty = none
  std::string coordinator;    // host:port (required)
  std::string model_dir;      // for the tokenizer; default: the coordinator's model
  int max_pending = 256;      // requests in flight through this gateway
  int connect_timeout_ms = 30'000;
  int drain_timeout_ms = 30'000;
  int resubmit_timeout_ms = 60'000;  // how long unfinished requests wait for a lost coordinator
  TlsFiles tls;                      // mutual TLS to the coordinator; empty = plaintext
  // The public port's own TLS (server certificate only); empty = plaintext.
  std::string public_tls_cert, public_tls_key;
  // API keys, one per line; clients send "authorization: Bearer KEY". Empty: open.
  std::string api_key_file;
  // OpenAI-compatible HTTP API (host:port; port 0 picks one); empty: none.
  std::string http_listen;
  // The model's name in the HTTP API; default: the config's _name_or_path
  // when it names a repository, else the folder's name.
  std::string served_model_name;
};

absl::Status RunGateway(const GatewayOptions& options);

}  // namespace strata

#endif  // STRATA_SERVICES_GATEWAY_GATEWAY_H_
