// The gateway's OpenAI-compatible HTTP API, on Boost.Beast: asynchronous
// HTTP/1.1 with keep-alive (optionally TLS), a few I/O threads and no thread
// per connection or stream. Routes:
//   POST /v1/completions, POST /v1/chat/completions  (JSON or SSE streams)
//   GET  /v1/models, GET /v1/models/{id}
//   POST /tokenize, POST /detokenize                  (vLLM's shapes)
//   GET  /health (200 while serving, 503 draining), GET /version
// Requests go through the same RequestStream as gRPC ones. API keys (when
// the gateway has them) are required on all but /health and /version. A
// client that disconnects mid-stream cancels its request, which frees its KV
// on every worker. Thread-safe; Shutdown() stops accepting and closes every
// connection.
#ifndef STRATA_SERVICES_GATEWAY_HTTP_SERVER_H_
#define STRATA_SERVICES_GATEWAY_HTTP_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "services/common/tls.h"
#include "services/gateway/openai.h"

namespace strata {

class GatewayService;

struct HttpOptions {
  std::string listen;    // host:port; port 0 picks one
  int threads = 2;       // I/O threads
  int64_t max_body = 0;  // request bodies above it get 413
  openai::ModelCard model;
  std::string version;  // GET /version, and the start of system_fingerprint
  // The public port's TLS (server certificate only); null or insecure: plain.
  std::shared_ptr<const TransportSecurity> security;
};

class HttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpOptions& options,
                                                           GatewayService* service);
  ~HttpServer();
  const std::string& address() const;
  void Shutdown();

  struct Impl;  // the io_context, acceptor and TLS context (http_server.cc)

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata

#endif  // STRATA_SERVICES_GATEWAY_HTTP_SERVER_H_
