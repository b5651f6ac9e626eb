#include "services/common/log.h"

#include <cstdio>
#include <ctime>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace strata {
namespace {
std::mutex g_mu;
std::string g_name = "strata";
}  // namespace

void SetLogName(const std::string& name) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_name = "strata " + name;
}

void Log(const std::string& message) {
  const std::string when = absl::FormatTime("%H:%M:%E3S", absl::Now(), absl::LocalTimeZone());
  std::lock_guard<std::mutex> lock(g_mu);
  std::fprintf(stderr, "[%s %s] %s\n", g_name.c_str(), when.c_str(), message.c_str());
  std::fflush(stderr);
}

}  // namespace strata
