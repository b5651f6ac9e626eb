#include "services/gateway/gateway.h"

#include <chrono>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "runtime/json.h"
#include "runtime/status_macros.h"
#include "runtime/tokenizer.h"
#include "services/common/log.h"
#include "services/common/metrics.h"
#include "services/common/server.h"
#include "services/common/signals.h"
#include "services/gateway/gateway_service.h"
#include "services/gateway/http_server.h"
#include "services/gateway/session_client.h"

namespace strata {

absl::Status RunGateway(const GatewayOptions& options) {
  SetLogName("gateway");
  if (options.coordinator.empty()) return absl::InvalidArgumentError("--coordinator: required");
  if (options.max_pending < 1) return absl::InvalidArgumentError("--max-pending: must be positive");
  ASSIGN_OR_RETURN(std::shared_ptr<const TransportSecurity> internal,
                   TransportSecurity::MutualAs(options.tls, Role::kGateway));
  ASSIGN_OR_RETURN(
      std::shared_ptr<const TransportSecurity> public_tls,
      TransportSecurity::ServerOnly(options.public_tls_cert, options.public_tls_key, "public-tls"));
  std::optional<ApiKeys> api_keys;
  if (!options.api_key_file.empty()) {
    ASSIGN_OR_RETURN(api_keys, ApiKeys::FromFile(options.api_key_file));
    Log(absl::StrCat(api_keys->size(), " API key(s) from ", options.api_key_file));
  }
  SessionClient session(options.coordinator, options.resubmit_timeout_ms, internal.get());
  RETURN_IF_ERROR(session.Connect(options.connect_timeout_ms));

  // The served model (context, vocabulary, folder) comes from the coordinator.
  v1::ClusterInfo info;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(options.connect_timeout_ms));
    RETURN_IF_ERROR(FromGrpcStatus(session.stub().GetClusterInfo(&ctx, {}, &info)));
  }
  const std::string model_dir =
      options.model_dir.empty() ? info.model().model() : options.model_dir;
  ASSIGN_OR_RETURN(auto tokenizer, LoadTokenizer(model_dir));
  ServedModel model{info.model().context_length(), info.model().vocab_size(),
                    ChatTemplate::FromModelDir(model_dir)};
  if (!model.chat.ok())
    Log(absl::StrCat("messages requests refused: ", model.chat.status().message()));

  std::unique_ptr<MetricsServer> metrics;
  std::unique_ptr<GatewayMetrics> gateway_metrics;
  if (!options.metrics_listen.empty()) {
    ASSIGN_OR_RETURN(metrics, MetricsServer::Start(options.metrics_listen));
    gateway_metrics = std::make_unique<GatewayMetrics>(metrics->registry(), ModelLabel(model_dir));
  }
  const int64_t max_request = GatewayService::MaxRequestBytes(*tokenizer, model.context);
  GatewayService service(options, std::move(tokenizer), model, &session, gateway_metrics.get(),
                         api_keys ? &*api_keys : nullptr);
  ServerOptions server_options;
  server_options.listen = options.listen;
  server_options.health_listen = options.health_listen;
  server_options.security = public_tls;
  server_options.max_message_bytes = static_cast<int>(max_request);
  ASSIGN_OR_RETURN(auto server, Server::Start({&service}, server_options));
  server->SetServing(true);
  Log(absl::StrCat(
      "listening on ", server->address(), public_tls->secure() ? " (TLS)" : " (plaintext)",
      api_keys ? ", API keys required" : "", "; requests up to ", max_request >> 10,
      " KiB; coordinator ", options.coordinator, "; tokenizer of ", model_dir,
      metrics ? absl::StrCat("; metrics at http://", metrics->address(), "/metrics") : ""));
  std::unique_ptr<HttpServer> http;
  if (!options.http_listen.empty()) {
    HttpOptions ho;
    ho.listen = options.http_listen;
    ho.security = public_tls;
    ho.version = kStrataVersion;
    // JSON may spell a byte of the prompt as six ("\u00e9"): room for that.
    ho.max_body = std::min<int64_t>(6 * max_request, int64_t{64} << 20);
    std::string name_or_path;
    if (auto config = ReadJsonFile(model_dir + "/config.json"); config.ok()) {
      if (const Json* n = config->Find("_name_or_path"); n != nullptr && n->is_string()) {
        name_or_path = n->string_value();
      }
    }
    ho.model.id = options.served_model_name.empty()
                      ? openai::DefaultServedName(model_dir, name_or_path)
                      : options.served_model_name;
    ho.model.context = model.context;
    ho.model.created = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
    ASSIGN_OR_RETURN(http, HttpServer::Start(ho, &service));
    Log(absl::StrCat("OpenAI-compatible HTTP API at ",
                     public_tls->secure() ? "https://" : "http://", http->address(),
                     "/v1 (model \"", ho.model.id, "\")"));
  }
  if (!options.address_file.empty()) {
    RETURN_IF_ERROR(
        WriteAddressFile(options.address_file,
                         absl::StrCat(server->address(), " ", metrics ? metrics->address() : "-",
                                      http ? " " + http->address() : "")));
  }

  WaitForShutdown(-1);
  Log(absl::StrCat("draining ", service.pending(), " request(s)"));
  server->SetServing(false);
  service.SetDraining();
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(options.drain_timeout_ms);
  while (service.pending() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (http) http->Shutdown();
  server->Shutdown(1000);
  Log("stopped");
  return absl::OkStatus();
}

}  // namespace strata
