#include "runtime/backend/cpu/throughput.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/backend/backend.h"
#include "runtime/status_macros.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The best time of `runs` calls of out = x · wᵀ with m tokens.
double BestLinearSeconds(Backend& backend, const Weight& w, int64_t m, int runs) {
  std::vector<float> x(static_cast<size_t>(m * w.cols));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7) * 0.125f - 0.375f;
  std::vector<float> out(static_cast<size_t>(m * w.rows));
  double best = 0;
  for (int r = 0; r < runs; ++r) {
    const auto start = Clock::now();
    backend.Linear(x.data(), m, w, nullptr, out.data());
    const double t = Since(start);
    best = r == 0 ? t : std::min(best, t);
  }
  return best;
}

// A prepared bf16 matrix of rows x cols with every page written (a matrix
// of untouched pages would read the kernel's zero page, not memory).
absl::StatusOr<Weight> Bf16Matrix(Backend& backend, int64_t rows, int64_t cols,
                                  std::vector<uint16_t>* storage) {
  storage->resize(static_cast<size_t>(rows * cols));
  // bf16 values in [0.0039, 0.25): small, so sums stay finite.
  for (size_t i = 0; i < storage->size(); ++i) {
    (*storage)[i] = static_cast<uint16_t>(0x3b80 + (i * 2654435761u >> 20) % 0x100);
  }
  Weight w;
  w.dtype = DType::kBF16;
  w.rows = rows;
  w.cols = cols;
  w.data = storage->data();
  ASSIGN_OR_RETURN(Weight prepared, backend.PrepareWeight(w, "throughput probe"));
  return backend.PrepareMatrix(prepared, "throughput probe");
}

// Bytes/s that `threads` threads read a buffer of `bytes` at, the best of
// `runs` passes: each thread sums its share as 64-bit words (a loop the
// compiler vectorises), so nothing but the reads limits it.
double ReadBandwidth(int threads, int64_t bytes, int runs) {
  const int64_t words = bytes / 8;
  void* p = mmap(nullptr, static_cast<size_t>(bytes), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return 0;
  uint64_t* data = static_cast<uint64_t*>(p);
  // Written, so every page is memory of its own (untouched pages all read
  // the kernel's one zero page, from cache).
  for (int64_t i = 0; i < words; ++i) data[i] = static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15u;
  std::atomic<uint64_t> sink{0};
  double best = 0;
  for (int r = 0; r < runs; ++r) {
    const auto start = Clock::now();
    std::vector<std::thread> readers;
    for (int t = 0; t < threads; ++t) {
      readers.emplace_back([&, t] {
        const int64_t b = words * t / threads, e = words * (t + 1) / threads;
        uint64_t sum = 0;
        for (int64_t i = b; i < e; ++i) sum += data[i];
        sink.fetch_add(sum, std::memory_order_relaxed);
      });
    }
    for (std::thread& t : readers) t.join();
    const double s = Since(start);
    best = r == 0 ? s : std::min(best, s);
  }
  munmap(p, static_cast<size_t>(bytes));
  return static_cast<double>(words * 8) / std::max(best, 1e-9);
}

}  // namespace

absl::StatusOr<CpuThroughput> MeasureCpuThroughput(int threads, const std::string& kernels) {
  const auto start = Clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeCpuBackend(threads, kernels));
  CpuThroughput t;
  t.backend = std::string(backend->name());
  // Four times the 64 MiB most server CPUs' last-level caches stay under.
  t.bandwidth = ReadBandwidth(backend->threads(), int64_t{256} << 20, 3);
  if (!(t.bandwidth > 0)) {
    return absl::ResourceExhaustedError("measuring the memory bandwidth: no 256 MiB to read");
  }
  std::vector<uint16_t> storage;
  constexpr int64_t kN = 2048, kTokens = 128;
  ASSIGN_OR_RETURN(Weight w, Bf16Matrix(*backend, kN, kN, &storage));
  BestLinearSeconds(*backend, w, kTokens, 1);  // warms the threads and the scratch
  const double s = BestLinearSeconds(*backend, w, kTokens, 2);
  t.flops = 2.0 * kN * kN * kTokens / std::max(s, 1e-9);
  t.seconds = Since(start);
  return t;
}

std::string StrataCacheHome() {
  if (const char* h = std::getenv("STRATA_HOME"); h != nullptr && *h) return h;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg) {
    return absl::StrCat(xdg, "/strata");
  }
  if (const char* user = std::getenv("HOME"); user != nullptr && *user) {
    return absl::StrCat(user, "/.cache/strata");
  }
  return "/tmp/strata";
}

namespace {

// "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz" -> "Intel-R-Xeon-R-Platinum-8481C-..."
std::string FileSafe(const std::string& text) {
  std::string out;
  for (char ch : text) {
    const bool ok = std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_';
    if (ok) {
      out += ch;
    } else if (!out.empty() && out.back() != '-') {
      out += '-';
    }
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out.substr(0, 120);
}

std::string CpuModelName() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 1);
    }
  }
  return "unknown-cpu";
}

}  // namespace

absl::StatusOr<CpuThroughput> CachedCpuThroughput(int threads, const std::string& kernels,
                                                  const std::string& cache_dir) {
  // The kernel set and the thread count as the backend resolves them.
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> probe, MakeCpuBackend(threads, kernels));
  const std::string key =
      FileSafe(absl::StrCat(CpuModelName(), "-", std::thread::hardware_concurrency(), "cpus-",
                            probe->threads(), "threads-", std::string(probe->name())));
  const std::string backend(probe->name());
  const std::string dir = cache_dir + "/cpu-throughput";
  const std::string path = dir + "/" + key;
  probe.reset();
  {
    std::ifstream f(path);
    CpuThroughput t;
    if (f >> t.bandwidth >> t.flops && t.bandwidth > 0 && t.flops > 0) {
      t.backend = backend;
      t.cache_file = path;
      t.cached = true;
      return t;
    }
  }
  ASSIGN_OR_RETURN(CpuThroughput t, MeasureCpuThroughput(threads, kernels));
  // Written whole under a private name, then renamed: a reader never sees half.
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string tmp = absl::StrCat(path, ".", getpid());
  {
    std::ofstream f(tmp);
    f << absl::StrFormat("%.6g %.6g\n", t.bandwidth, t.flops);
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) std::filesystem::remove(tmp, ec);
  t.cache_file = path;
  return t;
}

}  // namespace strata
