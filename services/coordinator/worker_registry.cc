#include "services/coordinator/worker_registry.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "services/common/log.h"
#include "services/coordinator/layout.h"

namespace strata {

WorkerRegistry::WorkerRegistry(const CoordinatorOptions& options)
    : options_(options),
      registration_tokens_(options.registrations_per_minute),
      registration_refill_(Clock::now()) {}

std::optional<WorkerRegistry::Refusal> WorkerRegistry::Register(
    const v1::Register& reg, const Identity& peer, bool mutual, bool draining,
    grpc::ServerContext* context, const std::string& session_token, Clock::time_point now) {
  auto it = workers_.find(reg.worker_id());
  if (reg.worker_id().empty() || reg.address().empty()) {
    return Refusal{grpc::StatusCode::FAILED_PRECONDITION,
                   "register: worker_id and address are required"};
  }
  if (mutual && peer.name != reg.worker_id()) {
    return Refusal{grpc::StatusCode::PERMISSION_DENIED,
                   absl::StrCat("register: worker_id \"", reg.worker_id(),
                                "\" is not the name in the worker's certificate (",
                                DescribeIdentity(peer), ")")};
  }
  if (!TakeRegistration(now)) {
    return Refusal{grpc::StatusCode::RESOURCE_EXHAUSTED,
                   absl::StrCat("register: more than ", options_.registrations_per_minute,
                                " registrations a minute; try again shortly")};
  }
  if (draining) {
    return Refusal{grpc::StatusCode::FAILED_PRECONDITION, "register: the coordinator is draining"};
  }
  if (it != workers_.end() && it->second.connected) {
    return Refusal{grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("register: worker id \"", reg.worker_id(),
                                "\" is already attached from ", it->second.address)};
  }
  // New, or back after a loss: failures (and their back-off) are kept.
  WorkerRecord& w = workers_[reg.worker_id()];
  w.id = reg.worker_id();
  w.address = reg.address();
  w.device = reg.device();
  w.connected = true;
  w.draining = false;
  w.context = context;
  w.last_heard = w.attached_at = now;
  w.session_token = session_token;
  w.progress = {w.id, 0, 0};
  w.heartbeat_epoch = 0;
  return std::nullopt;
}

WorkerRecord* WorkerRegistry::Owned(const std::string& id, const grpc::ServerContext* context) {
  auto it = workers_.find(id);
  return it != workers_.end() && it->second.context == context ? &it->second : nullptr;
}

WorkerRecord* WorkerRegistry::Find(const std::string& id) {
  auto it = workers_.find(id);
  return it != workers_.end() ? &it->second : nullptr;
}

bool WorkerRegistry::Lose(WorkerRecord& w, Clock::time_point now) {
  if (!w.connected) return false;
  w.connected = false;
  w.context = nullptr;
  w.lost_at = now;
  ++w.failures;
  const int64_t backoff_ms =
      w.failures <= 1 ? 0 : std::min<int64_t>(30'000, 500LL << (w.failures - 1));
  w.backoff_until = now + std::chrono::milliseconds(backoff_ms);
  return true;
}

const char* WorkerRegistry::State(const WorkerRecord& w, bool in_map, Clock::time_point now) {
  if (!w.connected) return w.draining ? "drained" : "lost";
  if (now < w.backoff_until) return "backoff";
  return in_map ? "serving" : "standby";
}

std::set<std::string> WorkerRegistry::Eligible(
    const std::function<bool(const std::string&)>& in_map, bool started,
    Clock::time_point now) const {
  std::set<std::string> out;
  for (const auto& [id, w] : workers_) {
    // A worker joining a serving cluster waits a moment, so one that
    // registers and vanishes at once never costs a re-plan.
    const bool settled_in =
        !started || in_map(id) ||
        now - w.attached_at >= std::chrono::milliseconds(options_.admit_delay_ms);
    if (w.connected && !w.draining && now >= w.backoff_until && settled_in) out.insert(id);
  }
  return out;
}

void WorkerRegistry::Prune(const std::function<bool(const std::string&)>& keep,
                           Clock::time_point now) {
  for (auto it = workers_.begin(); it != workers_.end();) {
    const WorkerRecord& w = it->second;
    if (!w.connected && !keep(w.id) &&
        now - w.lost_at > std::chrono::milliseconds(options_.prune_after_ms)) {
      Log(absl::StrCat("forgot worker ", w.id, ": lost for more than ",
                       options_.prune_after_ms / 1000.0, " s"));
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
}

bool WorkerRegistry::TakeRegistration(Clock::time_point now) {
  const double per_ms = options_.registrations_per_minute / 60'000.0;
  const double elapsed_ms =
      std::chrono::duration<double, std::milli>(now - registration_refill_).count();
  registration_refill_ = now;
  registration_tokens_ = std::min<double>(options_.registrations_per_minute,
                                          registration_tokens_ + elapsed_ms * per_ms);
  if (registration_tokens_ < 1) return false;
  registration_tokens_ -= 1;
  return true;
}

bool IsCpuDevice(const v1::Device& d) { return d.name() == "cpu"; }

std::vector<DeviceSpec> PlannerDevices(
    const std::vector<std::pair<std::string, v1::Device>>& workers) {
  bool cpu = false, gpu = false;
  std::map<std::string, int> cpus_of_host;
  for (const auto& [id, d] : workers) {
    (IsCpuDevice(d) ? cpu : gpu) = true;
    if (IsCpuDevice(d)) ++cpus_of_host[d.host()];
  }
  const bool by_bandwidth = cpu && gpu;
  std::vector<DeviceSpec> specs;
  for (const auto& [id, d] : workers) {
    DeviceSpec spec{absl::StrCat(id, "/", d.name()), d.capacity_bytes(), d.reserve_bytes(),
                    d.speed() > 0 ? d.speed() : 1.0};
    spec.bandwidth = d.bandwidth();  // 0: from the speed
    spec.flops = d.flops();
    if (by_bandwidth && IsCpuDevice(d)) {
      const double share = 1.0 / cpus_of_host[d.host()];
      spec.bandwidth *= share;
      spec.flops *= share;
    }
    if (by_bandwidth && spec.bandwidth > 0) spec.speed = spec.bandwidth / DeviceBandwidth({});
    specs.push_back(spec);
  }
  return specs;
}

}  // namespace strata
