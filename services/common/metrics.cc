#include "services/common/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <thread>

#include "absl/strings/str_cat.h"
#include "services/common/server.h"

namespace strata {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen) {
  auto m = std::unique_ptr<MetricsServer>(new MetricsServer());
  m->registry_ = std::make_shared<prometheus::Registry>();
  // civetweb takes "host:port"; prometheus-cpp reports failures by throwing,
  // which must not leave this module.
  try {
    m->exposer_ = std::make_unique<prometheus::Exposer>(listen, 2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("--metrics-listen: cannot serve metrics on ", listen, ": ", e.what()));
  }
  m->exposer_->RegisterCollectable(m->registry_);
  const std::vector<int> ports = m->exposer_->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(absl::StrCat("--metrics-listen: nothing bound at ", listen));
  }
  m->address_ = absl::StrCat(HostOf(listen), ":", ports[0]);
  return m;
}

void MetricsServer::Add(std::shared_ptr<prometheus::Collectable> collectable) {
  exposer_->RegisterCollectable(collectable);
  collectables_.push_back(std::move(collectable));
}

MetricsServer::~MetricsServer() {
  // civetweb's stop waits for its listener's poll, which wakes every 2 s; a
  // connection wakes it at once, so poke it until the exposer is gone.
  std::atomic<bool> stopped{false};
  std::thread poke([&] {
    const size_t colon = address_.rfind(':');
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(std::atoi(address_.substr(colon + 1).c_str())));
    if (inet_pton(AF_INET, address_.substr(0, colon).c_str(), &addr.sin_addr) != 1) return;
    while (!stopped) {
      const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd >= 0) {
        connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
        close(fd);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  exposer_.reset();
  stopped = true;
  poke.join();
}

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
          0.5,    1,     2.5,    5,     10,   30,    60,   120};
}

prometheus::Histogram::BucketBoundaries CountBuckets() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192};
}

std::string ModelLabel(const std::string& model_dir) {
  std::string m = model_dir;
  while (!m.empty() && m.back() == '/') m.pop_back();
  const size_t slash = m.rfind('/');
  return slash == std::string::npos ? m : m.substr(slash + 1);
}

}  // namespace strata
