#include "services/worker/worker.h"

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"
#include "services/common/log.h"
#include "services/common/server.h"
#include "services/common/signals.h"
#include "services/worker/worker_service.h"
#include "strata/v1/coordinator.grpc.pb.h"

namespace strata {
namespace {

int64_t PhysicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : int64_t{16} << 30;
}

}  // namespace

absl::Status RunWorker(const WorkerOptions& in) {
  WorkerOptions options = in;
  if (options.id.empty()) options.id = absl::StrCat("worker-", getpid());
  SetLogName(options.id);
  if (options.coordinator.empty()) return absl::InvalidArgumentError("--coordinator: required");
  if (options.capacity_bytes <= 0) options.capacity_bytes = PhysicalMemoryBytes();
  if (options.reserve_bytes < 0) options.reserve_bytes = options.capacity_bytes / 10;
  if (!(options.speed > 0)) return absl::InvalidArgumentError("--speed: must be positive");

  // The attach stream carries step results from the service's threads and
  // heartbeats from ours; gRPC allows one writer at a time.
  std::mutex attach_mu;
  grpc::ClientReaderWriter<v1::WorkerMessage, v1::CoordinatorMessage>* attach = nullptr;
  Server* server_ptr = nullptr;
  std::mutex server_mu;
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
      });
  ServerOptions server_options;
  server_options.listen = options.listen;
  ASSIGN_OR_RETURN(auto server, Server::Start({&service}, server_options));
  {
    std::lock_guard<std::mutex> lock(server_mu);
    server_ptr = server.get();
  }
  const std::string advertise = options.advertise.empty() ? server->address() : options.advertise;
  Log(absl::StrCat("listening on ", server->address(), "; coordinator ", options.coordinator));
  if (!options.address_file.empty()) {
    RETURN_IF_ERROR(WriteAddressFile(options.address_file, server->address()));
  }

  auto channel = Dial(options.coordinator);
  if (!WaitConnected(channel, options.connect_timeout_ms)) {
    return absl::UnavailableError(absl::StrCat("the coordinator at ", options.coordinator,
                                               " is unreachable after ",
                                               options.connect_timeout_ms / 1000.0, " s"));
  }
  auto stub = v1::Coordinator::NewStub(channel);
  grpc::ClientContext context;
  auto stream = stub->Attach(&context);
  v1::WorkerMessage reg;
  reg.mutable_register_()->set_worker_id(options.id);
  reg.mutable_register_()->set_address(advertise);
  v1::Device* device = reg.mutable_register_()->mutable_device();
  device->set_name(options.device);
  device->set_capacity_bytes(options.capacity_bytes);
  device->set_reserve_bytes(options.reserve_bytes);
  device->set_speed(options.speed);
  v1::CoordinatorMessage reply;
  if (!stream->Write(reg) || !stream->Read(&reply)) {
    return FromGrpcStatus(stream->Finish()).ok()
               ? absl::UnavailableError("register: the coordinator closed the stream")
               : absl::UnavailableError(
                     absl::StrCat("register: ", stream->Finish().error_message()));
  }
  if (reply.has_rejected()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the coordinator rejected this worker: ", reply.rejected().reason()));
  }
  const int heartbeat_ms = std::max(100, reply.registered().heartbeat_ms());
  {
    std::lock_guard<std::mutex> lock(attach_mu);
    attach = stream.get();
  }
  Log(absl::StrCat("registered as ", options.id, " (", advertise, ")"));

  std::atomic<bool> coordinator_gone{false}, stopping{false};
  std::thread reader([&] {
    v1::CoordinatorMessage msg;
    while (stream->Read(&msg)) {
    }
    if (!stopping) coordinator_gone = true;
    RequestShutdown();
  });
  std::thread heartbeat([&] {
    while (!WaitForShutdown(heartbeat_ms)) {
      v1::WorkerMessage msg;
      msg.mutable_heartbeat();
      std::lock_guard<std::mutex> lock(attach_mu);
      if (attach == nullptr || !attach->Write(msg)) break;
    }
  });

  WaitForShutdown(-1);
  Log(coordinator_gone ? "the coordinator went away; stopping" : "shutdown requested; stopping");
  stopping = true;
  service.SetDraining();
  context.TryCancel();
  reader.join();
  heartbeat.join();
  {
    std::lock_guard<std::mutex> lock(attach_mu);
    attach = nullptr;
  }
  server->Shutdown(500);
  {
    std::lock_guard<std::mutex> lock(server_mu);
    server_ptr = nullptr;
  }
  if (coordinator_gone) {
    return absl::UnavailableError(
        absl::StrCat("the coordinator at ", options.coordinator, " went away"));
  }
  return absl::OkStatus();
}

}  // namespace strata
