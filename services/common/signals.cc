#include "services/common/signals.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace strata {
namespace {

std::mutex g_mu;
std::condition_variable g_cv;
bool g_requested = false;

void SignalLoop(sigset_t set) {
  while (true) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    {
      std::lock_guard<std::mutex> lock(g_mu);
      if (g_requested) _exit(128 + sig);  // second signal: stop now
      g_requested = true;
    }
    g_cv.notify_all();
  }
}

}  // namespace

void InstallShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread(SignalLoop, set).detach();
}

bool ShutdownRequested() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_requested;
}

bool WaitForShutdown(int timeout_ms) {
  std::unique_lock<std::mutex> lock(g_mu);
  if (timeout_ms < 0) {
    g_cv.wait(lock, [] { return g_requested; });
  } else {
    g_cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), [] { return g_requested; });
  }
  return g_requested;
}

void RequestShutdown() {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_requested = true;
  }
  g_cv.notify_all();
}

}  // namespace strata
