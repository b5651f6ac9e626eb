// What a CPU worker tells the layout search about itself: the memory
// bandwidth and the arithmetic rate its own kernels reach on this machine,
// measured at start rather than looked up (there is no table of CPUs).
#ifndef STRATA_RUNTIME_BACKEND_CPU_THROUGHPUT_H_
#define STRATA_RUNTIME_BACKEND_CPU_THROUGHPUT_H_

#include <string>

#include "absl/status/statusor.h"

namespace strata {

struct CpuThroughput {
  double bandwidth = 0;  // bytes/s the backend's threads read memory at
  double flops = 0;      // FLOP/s of a 128-token Linear
  std::string backend;   // the backend measured, with its kernel set ("cpu-amx-bf16")
  double seconds = 0;    // what measuring took, setup included
  // CachedCpuThroughput: the file the figures were read from (cached) or
  // written to.
  std::string cache_file;
  bool cached = false;
};

// Measures with the CPU backend of `threads` threads (0: every core) and the
// kernel set `kernels` (as MakeCpuBackend): the best of three reads of a
// 256 MiB buffer by as many threads for the bandwidth (the figure a GPU's
// data sheet gives, which decode approaches); a 2048 x 2048 bf16 matrix times
// 128 tokens, the best of two, for the FLOP/s. About 0.2 s with AVX-512 or
// AMX on two cores, a second with the portable kernels.
absl::StatusOr<CpuThroughput> MeasureCpuThroughput(int threads, const std::string& kernels = "");

// The same figures, measured once per machine and then read back: from
// `cache_dir`/cpu-throughput/KEY, the key naming the CPU model, its logical
// CPUs, the threads and the kernel set. Many workers starting at once on
// one host then measure once, not each competing with the others for the
// cores. Delete the file to measure again.
absl::StatusOr<CpuThroughput> CachedCpuThroughput(int threads, const std::string& kernels,
                                                  const std::string& cache_dir);

// Strata's cache folder: $STRATA_HOME, else $XDG_CACHE_HOME/strata, else
// ~/.cache/strata, else /tmp/strata. The embedded default model lives there too.
std::string StrataCacheHome();

}  // namespace strata

#endif  // STRATA_RUNTIME_BACKEND_CPU_THROUGHPUT_H_
