#include "thread_pool.h"

#include <chrono>

namespace lp {

ThreadPool::ThreadPool(int threads) : n_(threads < 1 ? 1 : threads) {
  for (int i = 1; i < n_; i++) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_++;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_task(int index) {
  if (chunked_) {
    int64_t per = (task_n_ + n_ - 1) / n_;
    int64_t b = per * index, e = b + per < task_n_ ? b + per : task_n_;
    if (b < e) (*chunk_fn_)(index, b, e);
    return;
  }
  // Dynamic scheduling: items can differ in cost (attention rows of different lengths).
  for (;;) {
    int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i >= task_n_) break;
    (*fn_)(i);
  }
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Spin for a short while: the next parallel region of the step usually follows within microseconds.
    // Yielding while spinning keeps a busy machine (more runnable threads than cores) from
    // starving the thread we are waiting for.
    auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
    for (int i = 0; generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_until; i++) {
      if (i > 64) std::this_thread::yield();
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load() != seen; });
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_) return;
    run_task(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

// Publishes the task set up by the caller, works on it, and waits until every worker is done.
void ThreadPool::dispatch(int64_t n, bool chunked) {
  chunked_ = chunked;
  task_n_ = n;
  next_ = 0;
  pending_ = n_ - 1;
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  run_task(0);
  for (int i = 0; pending_.load(std::memory_order_acquire) > 0; i++) {
    if (i > 64) std::this_thread::yield();
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t)>& fn, int64_t work) {
  if (n <= 0) return;
  if (n_ == 1 || n == 1 || work < kMinParallelWork) {
    for (int64_t i = 0; i < n; i++) fn(i);
    return;
  }
  fn_ = &fn;
  dispatch(n, false);
}

void ThreadPool::parallel_chunks(int64_t n, const std::function<void(int, int64_t, int64_t)>& fn, int64_t work) {
  if (n <= 0) return;
  if (n_ == 1 || work < kMinParallelWork) {
    fn(0, 0, n);
    return;
  }
  chunk_fn_ = &fn;
  dispatch(n, true);
}

}  // namespace lp
