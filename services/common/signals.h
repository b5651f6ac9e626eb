// SIGINT / SIGTERM as an event: Install() blocks both signals in the calling
// thread (call it first in main, before any thread starts, so every thread
// inherits the mask) and starts a thread that waits for them with sigwait.
// A second signal while draining exits the process at once.
#ifndef STRATA_SERVICES_COMMON_SIGNALS_H_
#define STRATA_SERVICES_COMMON_SIGNALS_H_

namespace strata {

void InstallShutdownSignals();
// True once SIGINT or SIGTERM arrived (or RequestShutdown was called).
bool ShutdownRequested();
// Waits up to `timeout_ms` (< 0: forever); returns ShutdownRequested().
bool WaitForShutdown(int timeout_ms);
void RequestShutdown();

}  // namespace strata

#endif  // STRATA_SERVICES_COMMON_SIGNALS_H_
