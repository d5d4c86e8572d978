#pragma once
// The one thread pool of bitmix. Every parallel loop in the library runs on it, so one setting
// (set_num_threads, the --threads flag, or BITMIX_NUM_THREADS) controls all of them.
//
// Work is split statically: parallel_for(n, ...) gives thread k the chunk
// [k*n/T, (k+1)*n/T). The partition depends only on n and the thread count, so any result
// that depends on it (e.g. the order of a reduction) is the same from run to run.
// A parallel call made from inside a parallel region runs serially on the calling thread.
// A child made by fork() gets a pool of its own (same size) on its first parallel call.

#include <cstdint>
#include <utility>

namespace bitmix {

// Hardware threads reported by the OS (at least 1).
int hardware_threads();
// BITMIX_NUM_THREADS if set to a positive integer, otherwise hardware_threads().
// Throws ArgumentError if BITMIX_NUM_THREADS is set to something else.
int default_num_threads();
// The number of threads parallel calls use (including the calling thread).
int num_threads();
// Resizes the pool; n <= 0 restores default_num_threads(). Not to be called from a worker.
void set_num_threads(int n);
// True on a thread that is running a task of the pool.
bool in_parallel_region();

namespace detail {
using ParallelTask = void (*)(void* context, int thread_index, int thread_count);
void parallel_run_impl(ParallelTask task, void* context, int max_threads);
}  // namespace detail

// Calls fn(thread_index, thread_count) once on each of `thread_count` threads, the caller
// being thread 0, and returns when all are done. thread_count = min(num_threads(), max_threads).
// The first exception thrown by any call is rethrown here.
template <typename Fn>
void parallel_run(Fn&& fn, int max_threads = 1 << 30) {
  auto trampoline = [](void* context, int thread_index, int thread_count) {
    (*static_cast<std::remove_reference_t<Fn>*>(context))(thread_index, thread_count);
  };
  detail::parallel_run_impl(trampoline, const_cast<void*>(static_cast<const void*>(&fn)), max_threads);
}

// Calls fn(begin, end) on disjoint contiguous chunks covering [0, n), each at least `grain`
// items long (except when n < grain), at most one chunk per thread.
template <typename Fn>
void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t max_chunks = (n + grain - 1) / grain;
  const int max_threads = max_chunks > (1 << 30) ? (1 << 30) : static_cast<int>(max_chunks);
  parallel_run(
      [&](int thread_index, int thread_count) {
        const int64_t begin = n * thread_index / thread_count;
        const int64_t end = n * (thread_index + 1) / thread_count;
        if (begin < end) fn(begin, end);
      },
      max_threads);
}

template <typename Fn>
void parallel_for(int64_t n, Fn&& fn) {
  parallel_for(n, 1, std::forward<Fn>(fn));
}

}  // namespace bitmix
