#include "services/worker/worker.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/cpu/throughput.h"
#include "runtime/device_table.h"
#include "runtime/status_macros.h"
#include "services/common/log.h"
#include "services/common/metrics.h"
#include "services/common/server.h"
#include "services/common/signals.h"
#include "services/worker/worker_service.h"
#include "strata/v1/coordinator.grpc.pb.h"

namespace strata {
namespace {}  // namespace

absl::Status RunWorker(const WorkerOptions& in) {
  WorkerOptions options = in;
  ASSIGN_OR_RETURN(std::shared_ptr<const TransportSecurity> security,
                   TransportSecurity::MutualAs(options.tls, Role::kWorker));
  if (security->mutual()) {
    // The certificate names the worker; the coordinator admits it only
    // under that name.
    if (options.id.empty()) options.id = security->self().name;
    if (options.id != security->self().name) {
      return absl::InvalidArgumentError(absl::StrCat("--id: ", options.id,
                                                     " differs from the name in --tls-cert (",
                                                     security->self().name, ")"));
    }
  }
  if (options.id.empty()) options.id = absl::StrCat("worker-", getpid());
  SetLogName(options.id);
  if (options.coordinator.empty()) return absl::InvalidArgumentError("--coordinator: required");
  // The device is probed before anything else, so a worker on a missing GPU
  // fails at start, saying why, rather than at its first Load.
  BackendOptions probe;
  probe.device = options.device;
  probe.sim_memory_bytes = options.sim_memory_bytes;
  probe.sim_bandwidth = options.sim_bandwidth;
  probe.sim_flops = options.sim_flops;
  ASSIGN_OR_RETURN(const MemoryReport device_report, ProbeDevice(probe));
  if (options.capacity_bytes <= 0) {
    options.capacity_bytes =
        options.device == "cpu" ? device_report.total_bytes : device_report.free_bytes;
  }
  if (options.memory_fraction > 0) {
    options.reserve_bytes = static_cast<int64_t>(static_cast<double>(options.capacity_bytes) *
                                                 (1 - options.memory_fraction));
  }
  if (options.reserve_bytes < 0) options.reserve_bytes = options.capacity_bytes / 10;
  Log(absl::StrCat("device ", device_report.device, ": ", device_report.total_bytes >> 20,
                   " MiB total, ", device_report.free_bytes >> 20, " MiB free; capacity ",
                   options.capacity_bytes >> 20, " MiB, reserve ", options.reserve_bytes >> 20,
                   " MiB"));
  if (!(options.speed > 0)) return absl::InvalidArgumentError("--speed: must be positive");
  // What the layout search models this device with: the table's row for a
  // simulated GPU or a CUDA GPU it knows by name ("cuda:0 (NVIDIA A100-...)").
  DeviceModel known_device;
  if (options.device.rfind("sim:", 0) == 0) {
    if (absl::StatusOr<DeviceModel> row = FindDevice(options.device.substr(4)); row.ok()) {
      known_device = *row;
    }
    if (options.sim_bandwidth > 0) known_device.bandwidth = options.sim_bandwidth;
    if (options.sim_flops > 0) known_device.flops = options.sim_flops;
  } else if (options.device != "cpu") {
    const std::string& label = device_report.device;
    const size_t open = label.find('(');
    const std::string name =
        open == std::string::npos ? label : label.substr(open + 1, label.size() - open - 2);
    if (std::optional<DeviceModel> row = MatchCudaDevice(name, device_report.total_bytes)) {
      known_device = *row;
      Log(absl::StrCat("modelled as the device table's ", row->label,
                       " (simulated: --device sim:", row->name, ")"));
    }
  }
  if (options.device == "cpu" && (options.bandwidth <= 0 || options.flops <= 0)) {
    // No table knows this CPU: measure what the stage's own kernels reach.
    // Once per machine: workers that start together would otherwise each
    // measure while competing with the others for the cores.
    ASSIGN_OR_RETURN(const CpuThroughput measured,
                     CachedCpuThroughput(options.threads, "", StrataCacheHome()));
    known_device.bandwidth = measured.bandwidth;
    known_device.flops = measured.flops;
    Log(absl::StrFormat("modelled at %.1f GB/s and %.0f GFLOP/s, %s with %s (%s)",
                        measured.bandwidth / 1e9, measured.flops / 1e9,
                        measured.cached ? "as measured before on this machine"
                                        : absl::StrFormat("measured in %.2f s", measured.seconds),
                        measured.backend, measured.cache_file));
  }
  if (options.bandwidth > 0) known_device.bandwidth = options.bandwidth;
  if (options.flops > 0) known_device.flops = options.flops;
  char hostname[256] = {};
  gethostname(hostname, sizeof(hostname) - 1);
  const std::string host = hostname;
  std::string no_peers;
  const bool peer_transport = PeerTransportAvailable(options.device, &no_peers);
  if (options.device != "cpu") {
    if (!peer_transport) {
      Log(absl::StrCat("hidden states use gRPC only: ", no_peers));
    } else if (PeerTransportKind(options.device) == "socket") {
      Log("hidden states to simulated GPUs of this host go by socket (in NCCL's place)");
    } else {
      Log("NCCL available for hidden states to GPUs of this host");
    }
  }

  // The attach stream carries step results from the service's threads and
  // heartbeats from ours; gRPC allows one writer at a time.
  std::mutex attach_mu;
  grpc::ClientReaderWriter<v1::WorkerMessage, v1::CoordinatorMessage>* attach = nullptr;
  Server* server_ptr = nullptr;
  std::mutex server_mu;
  std::unique_ptr<MetricsServer> metrics;
  std::unique_ptr<WorkerMetrics> worker_metrics;
  if (!options.metrics_listen.empty()) {
    ASSIGN_OR_RETURN(metrics, MetricsServer::Start(options.metrics_listen));
    worker_metrics = std::make_unique<WorkerMetrics>(metrics->registry(), options.id);
    std::string why;
    if (auto nvml = Nvml::Open(&why)) {
      std::vector<GpuRef> gpus = nvml->Resolve(VisibleCudaUuids(), &why);
      if (!why.empty()) Log(absl::StrCat("GPU series: left out ", why));
      worker_metrics->gpus =
          std::make_shared<GpuCollector>(std::move(nvml), options.id, std::move(gpus));
      metrics->Add(worker_metrics->gpus);
    } else {
      Log(absl::StrCat("no GPU series: ", why));
    }
  }
  WorkerService service(
      options,
      [&](const v1::StepResult& result) {
        v1::WorkerMessage msg;
        *msg.mutable_result() = result;
        std::lock_guard<std::mutex> lock(attach_mu);
        return attach != nullptr && attach->Write(msg);
      },
      [&](bool serving) {
        std::lock_guard<std::mutex> lock(server_mu);
        if (server_ptr != nullptr) server_ptr->SetServing(serving);
      },
      worker_metrics.get(), security);
  ServerOptions server_options;
  server_options.listen = options.listen;
  server_options.health_listen = options.health_listen;
  server_options.security = security;
  ASSIGN_OR_RETURN(auto server, Server::Start({&service}, server_options));
  {
    std::lock_guard<std::mutex> lock(server_mu);
    server_ptr = server.get();
  }
  const std::string advertise = options.advertise.empty() ? server->address() : options.advertise;
  Log(absl::StrCat("listening on ", server->address(), "; coordinator ", options.coordinator));
  if (metrics) Log(absl::StrCat("metrics at http://", metrics->address(), "/metrics"));
  if (!options.address_file.empty()) {
    RETURN_IF_ERROR(
        WriteAddressFile(options.address_file,
                         absl::StrCat(server->address(), " ", metrics ? metrics->address() : "-")));
  }

  // Attach, and attach again whenever the stream ends (the coordinator cut
  // this worker off, or restarted) until shutdown or the reconnect budget
  // runs out.
  auto channel = Dial(options.coordinator, security.get());
  auto stub = v1::Coordinator::NewStub(channel);
  std::atomic<bool> stopping{false};
  std::mutex context_mu;
  grpc::ClientContext* live_context = nullptr;
  std::thread canceller([&] {
    WaitForShutdown(-1);
    stopping = true;
    // Ask to be planned out first, so that no sequence is lost; the
    // coordinator ends the attach stream once the map no longer needs us.
    bool asked = false;
    {
      std::lock_guard<std::mutex> lock(attach_mu);
      v1::WorkerMessage drain;
      drain.mutable_drain();
      asked = attach != nullptr && attach->Write(drain);
    }
    if (asked) {
      Log("draining: asked the coordinator to plan this worker out");
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(options.drain_timeout_ms);
      while (std::chrono::steady_clock::now() < deadline) {
        {
          std::lock_guard<std::mutex> lock(attach_mu);
          if (attach == nullptr) break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    std::lock_guard<std::mutex> lock(context_mu);
    if (live_context != nullptr) live_context->TryCancel();
  });
  absl::Status result;
  bool ever_registered = false;
  auto give_up_at =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(options.connect_timeout_ms);
  while (!stopping) {
    const int left_ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             give_up_at - std::chrono::steady_clock::now())
                                             .count());
    if (left_ms <= 0) {
      result = absl::UnavailableError(absl::StrCat(
          ever_registered ? "the coordinator at " : "the coordinator at ", options.coordinator,
          ever_registered ? " went away and did not come back within " : " is unreachable after ",
          (ever_registered ? options.reconnect_timeout_ms : options.connect_timeout_ms) / 1000.0,
          " s"));
      break;
    }
    if (!WaitConnected(channel, std::min(left_ms, 500))) continue;
    grpc::ClientContext context;
    {
      std::lock_guard<std::mutex> lock(context_mu);
      live_context = &context;
    }
    if (stopping) context.TryCancel();
    auto stream = stub->Attach(&context);
    v1::WorkerMessage reg;
    reg.mutable_register_()->set_worker_id(options.id);
    reg.mutable_register_()->set_address(advertise);
    v1::Device* device = reg.mutable_register_()->mutable_device();
    device->set_name(options.device);
    device->set_uuid(device_report.uuid);
    device->set_host(host);
    device->set_total_bytes(device_report.total_bytes);
    device->set_free_bytes(device_report.free_bytes);
    device->set_peer_transport(peer_transport);
    device->set_capacity_bytes(options.capacity_bytes);
    device->set_reserve_bytes(options.reserve_bytes);
    device->set_speed(options.speed);
    device->set_bandwidth(known_device.bandwidth);
    device->set_flops(known_device.flops);
    v1::CoordinatorMessage reply;
    const bool answered = stream->Write(reg) && stream->Read(&reply);
    if (answered && reply.has_rejected()) {
      stream->Finish().IgnoreError();
      if (reply.rejected().reason().find("already attached") == std::string::npos) {
        result = absl::FailedPreconditionError(
            absl::StrCat("the coordinator rejected this worker: ", reply.rejected().reason()));
        break;
      }
      // Our previous stream is not yet noticed as gone; try again shortly.
      WaitForShutdown(200);
    } else if (answered) {
      ever_registered = true;
      service.SetSessionToken(reply.registered().session_token());
      const int heartbeat_ms = std::max(10, reply.registered().heartbeat_ms());
      {
        std::lock_guard<std::mutex> lock(attach_mu);
        attach = stream.get();
      }
      Log(absl::StrCat("registered as ", options.id, " (", advertise, "), heartbeat every ",
                       heartbeat_ms, " ms"));
      std::atomic<bool> session_over{false};
      std::thread heartbeat([&] {
        while (!session_over && !WaitForShutdown(heartbeat_ms)) {
          v1::WorkerMessage msg;
          service.FillHeartbeat(msg.mutable_heartbeat());
          std::lock_guard<std::mutex> lock(attach_mu);
          if (attach == nullptr || !attach->Write(msg)) break;
        }
      });
      v1::CoordinatorMessage msg;
      while (stream->Read(&msg)) {
      }
      session_over = true;
      context.TryCancel();
      heartbeat.join();
      {
        std::lock_guard<std::mutex> lock(attach_mu);
        attach = nullptr;
      }
      stream->Finish().IgnoreError();
      service.SetSessionToken("");
      if (!stopping) {
        Log("the attach stream to the coordinator ended; dropping the assignment and "
            "registering again");
        service.DropAssignment();
        give_up_at = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(options.reconnect_timeout_ms);
      }
    } else {
      stream->Finish().IgnoreError();
      WaitForShutdown(100);
    }
    std::lock_guard<std::mutex> lock(context_mu);
    live_context = nullptr;
  }

  Log(stopping ? "shutdown requested; stopping" : std::string(result.message()));
  RequestShutdown();
  canceller.join();
  service.SetDraining();
  server->Shutdown(100);
  {
    std::lock_guard<std::mutex> lock(server_mu);
    server_ptr = nullptr;
  }
  return stopping && result.ok() ? absl::OkStatus() : result;
}

}  // namespace strata
