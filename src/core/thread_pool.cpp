#include "bitmix/core/thread_pool.hpp"

#include <fmt/format.h>

#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <pthread.h>

#include "bitmix/core/error.hpp"

namespace bitmix {
namespace {

thread_local bool tl_in_parallel_region = false;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Workers spin briefly before sleeping: consecutive parallel loops (one per layer) follow each
// other within microseconds, and a condition-variable wake-up costs tens of microseconds.
constexpr int kSpinIterations = 4000;

// A job is published as one 64-bit word: generation in the high bits, thread count in the low
// 16, so a worker always reads a generation and its thread count consistently.
constexpr uint64_t kThreadBits = 16;
constexpr uint64_t kThreadMask = (uint64_t{1} << kThreadBits) - 1;

class Pool {
 public:
  explicit Pool(int threads) : size_(threads) {
    workers_.reserve(static_cast<std::size_t>(threads - 1));
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  }

  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  int size() const { return size_; }

  void run(detail::ParallelTask task, void* context, int thread_count) {
    std::lock_guard<std::mutex> run_lock(run_mutex_);  // one job at a time from user threads
    task_ = task;
    context_ = context;
    error_ = nullptr;
    remaining_.store(thread_count - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const uint64_t generation = (job_word_.load(std::memory_order_relaxed) >> kThreadBits) + 1;
      job_word_.store((generation << kThreadBits) | static_cast<uint64_t>(thread_count), std::memory_order_release);
    }
    wake_.notify_all();

    run_one(0, thread_count);

    for (int spin = 0; remaining_.load(std::memory_order_acquire) != 0 && spin < kSpinIterations; ++spin)
      cpu_relax();
    if (remaining_.load(std::memory_order_acquire) != 0) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [&] { return remaining_.load(std::memory_order_acquire) == 0; });
    }
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run_one(int index, int count) {
    tl_in_parallel_region = true;
    try {
      task_(context_, index, count);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_) error_ = std::current_exception();
    }
    tl_in_parallel_region = false;
  }

  void worker_loop(int index) {
    uint64_t seen_generation = 0;
    for (;;) {
      uint64_t word = job_word_.load(std::memory_order_acquire);
      for (int spin = 0; (word >> kThreadBits) == seen_generation && spin < kSpinIterations; ++spin) {
        cpu_relax();
        word = job_word_.load(std::memory_order_acquire);
      }
      if ((word >> kThreadBits) == seen_generation) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] {
          word = job_word_.load(std::memory_order_acquire);
          return stop_ || (word >> kThreadBits) != seen_generation;
        });
        if (stop_) return;
      }
      seen_generation = word >> kThreadBits;
      const int count = static_cast<int>(word & kThreadMask);
      if (index >= count) continue;
      run_one(index, count);
      if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);
        done_.notify_one();
      }
    }
  }

  const int size_;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::atomic<uint64_t> job_word_{0};
  std::atomic<int> remaining_{0};
  detail::ParallelTask task_ = nullptr;
  void* context_ = nullptr;
  std::mutex error_mutex_;
  std::exception_ptr error_;
  bool stop_ = false;
};

std::mutex g_pool_mutex;
std::unique_ptr<Pool> g_pool;  // guarded by g_pool_mutex for creation and resizing
// In a forked child: the parent's pool (kept reachable, never used) and its size, which the
// child's own pool takes.
Pool* g_forked_away = nullptr;
int g_size_after_fork = 0;

// fork() copies only the calling thread: a child that used the parent's pool would wait forever
// for workers that do not exist in it. The child forgets that pool (leaked, not destroyed: its
// destructor would join threads that are not there) and starts its own on first use. Holding
// g_pool_mutex across fork() keeps the child from inheriting it locked mid-resize.
void register_fork_handlers() {
  static const int registered = ::pthread_atfork([] { g_pool_mutex.lock(); }, [] { g_pool_mutex.unlock(); },
                                                 [] {
                                                   g_pool_mutex.unlock();
                                                   if (g_pool) g_size_after_fork = g_pool->size();
                                                   g_forked_away = g_pool.release();
                                                 });
  static_cast<void>(registered);
}

Pool& pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (!g_pool) {
    register_fork_handlers();
    g_pool = std::make_unique<Pool>(g_size_after_fork > 0 ? g_size_after_fork : default_num_threads());
  }
  return *g_pool;
}

}  // namespace

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int default_num_threads() {
  const char* env = std::getenv("BITMIX_NUM_THREADS");
  if (env == nullptr || *env == '\0') return hardware_threads();
  int value = 0;
  const char* end = env + std::strlen(env);
  auto [ptr, ec] = std::from_chars(env, end, value);
  if (ec != std::errc() || ptr != end || value < 1 || value > 1024)
    throw ArgumentError(fmt::format("BITMIX_NUM_THREADS='{}': expected an integer from 1 to 1024", env));
  return value;
}

int num_threads() { return pool().size(); }

void set_num_threads(int n) {
  if (tl_in_parallel_region) throw Error("set_num_threads called from inside a parallel region");
  const int threads = n <= 0 ? default_num_threads() : std::min(n, 1024);
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (g_pool && g_pool->size() == threads) return;
  register_fork_handlers();
  g_pool.reset();
  g_pool = std::make_unique<Pool>(threads);
}

bool in_parallel_region() { return tl_in_parallel_region; }

namespace detail {

void parallel_run_impl(ParallelTask task, void* context, int max_threads) {
  if (tl_in_parallel_region) {
    task(context, 0, 1);  // nested: serial on the calling thread
    return;
  }
  Pool& p = pool();
  const int count = std::max(1, std::min(p.size(), max_threads));
  if (count == 1) {
    tl_in_parallel_region = true;
    try {
      task(context, 0, 1);
    } catch (...) {
      tl_in_parallel_region = false;
      throw;
    }
    tl_in_parallel_region = false;
    return;
  }
  p.run(task, context, count);
}

}  // namespace detail
}  // namespace bitmix
