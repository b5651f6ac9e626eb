// A fork-join pool for data-parallel kernels: ParallelFor splits [0, n) into
// one contiguous range per thread, runs them (the caller takes the first
// range) and returns when all are done. Workers spin briefly before sleeping,
// so the hundreds of small regions of a decode step pay microseconds, not a
// futex round trip each. One ParallelFor at a time (not reentrant).
#ifndef STRATA_RUNTIME_BACKEND_CPU_THREAD_POOL_H_
#define STRATA_RUNTIME_BACKEND_CPU_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace strata {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return size_; }
  // fn(begin, end, thread_index) over a split of [0, n) where every range
  // boundary is a multiple of `grain` (except n itself).
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn);
  // The burst of work is over (a step ended): idle workers sleep now instead
  // of spinning, leaving the cores to other processes (the next stage of a
  // pipeline on the same machine). The next ParallelFor wakes them.
  void Rest() { resting_.store(true, std::memory_order_release); }

 private:
  void WorkerLoop(int index);

  const int size_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> resting_{false};
  std::atomic<bool> stop_{false};
  // The current job; written before generation_ is bumped.
  const std::function<void(int64_t, int64_t, int)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t grain_ = 1;
};

// Number of CPUs this process may run on.
int AvailableCores();

}  // namespace strata

#endif  // STRATA_RUNTIME_BACKEND_CPU_THREAD_POOL_H_
