// A fork-join pool for the forward pass: the calling thread takes part, workers spin briefly
// between the many small parallel regions of one step and then sleep, so an idle engine costs
// no CPU.
#pragma once
#include <atomic>
#include <cstdint>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lp {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  int size() const { return n_; }
  // Calls fn(i) for i in [0, n), spread over all threads; returns when every call has finished.
  // `work` estimates the whole job's cost in multiply-adds: below kMinParallelWork waking the
  // other threads costs more than it saves, so the calling thread does it alone.
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn, int64_t work = INT64_MAX);
  // Calls fn(thread_index, begin, end) once per thread over contiguous chunks of [0, n).
  void parallel_chunks(int64_t n, const std::function<void(int, int64_t, int64_t)>& fn, int64_t work = INT64_MAX);
  static constexpr int64_t kMinParallelWork = 1 << 15;

 private:
  void worker(int index);
  void dispatch(int64_t n, bool chunked);
  void run_task(int index);

  int n_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<bool> stop_{false};
  int64_t task_n_ = 0;
  bool chunked_ = false;
  const std::function<void(int64_t)>* fn_ = nullptr;
  const std::function<void(int, int64_t, int64_t)>* chunk_fn_ = nullptr;
};

}  // namespace lp
