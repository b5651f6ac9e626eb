#include "services/coordinator/coordinator.h"

#include "absl/strings/str_cat.h"
#include "runtime/config.h"
#include "runtime/status_macros.h"
#include "services/common/log.h"
#include "services/common/metrics.h"
#include "services/common/server.h"
#include "services/common/signals.h"
#include "services/coordinator/coordinator_service.h"
#include "services/coordinator/scheduler.h"

namespace strata {

int64_t DecodeRows(const CoordinatorOptions& options) {
  return SchedulerOptions::DefaultDecodeRows(options.max_decode_rows, options.max_sequences,
                                             options.max_batch_tokens);
}

absl::Status RunCoordinator(const CoordinatorOptions& options) {
  SetLogName("coordinator");
  if (options.model_dir.empty()) return absl::InvalidArgumentError("--model: required");
  if (options.workers < 1) return absl::InvalidArgumentError("--workers: must be at least 1");
  if (options.max_sequences < 1 || options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError("--max-sequences and --max-batch-tokens must be positive");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const TransportSecurity> security,
                   TransportSecurity::MutualAs(options.tls, Role::kCoordinator));
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(options.model_dir));
  if (options.max_context < 0 || options.max_context > config.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-context: must be in [0, ", config.max_position_embeddings, "]"));
  }

  std::unique_ptr<MetricsServer> metrics;
  std::unique_ptr<CoordinatorMetrics> coordinator_metrics;
  if (!options.metrics_listen.empty()) {
    ASSIGN_OR_RETURN(metrics, MetricsServer::Start(options.metrics_listen));
    coordinator_metrics =
        std::make_unique<CoordinatorMetrics>(metrics->registry(), ModelLabel(options.model_dir));
  }
  CoordinatorService service(options, config, coordinator_metrics.get(), security);
  ServerOptions server_options;
  server_options.listen = options.listen;
  server_options.health_listen = options.health_listen;
  server_options.security = security;
  ASSIGN_OR_RETURN(auto server, Server::Start({&service}, server_options));
  Log(absl::StrCat(
      "listening on ", server->address(), "; waiting for ", options.workers, " worker(s)",
      metrics ? absl::StrCat("; metrics at http://", metrics->address(), "/metrics") : ""));
  if (!options.address_file.empty()) {
    RETURN_IF_ERROR(
        WriteAddressFile(options.address_file,
                         absl::StrCat(server->address(), " ", metrics ? metrics->address() : "-")));
  }

  absl::Status st = service.WaitForWorkers(options.startup_timeout_ms);
  if (st.ok()) st = service.Start();
  if (!st.ok()) {
    server->Shutdown(0);
    return st;
  }
  Log(service.DescribeMap());
  server->SetServing(true);
  Log("serving");

  WaitForShutdown(-1);
  Log("shutdown requested");
  server->SetServing(false);
  service.Drain(options.drain_timeout_ms);
  server->Shutdown(1000);
  Log("stopped");
  return absl::OkStatus();
}

}  // namespace strata
