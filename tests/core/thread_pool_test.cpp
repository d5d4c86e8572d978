#include "bitmix/core/thread_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <vector>

#include <csignal>
#include <sys/wait.h>
#include <unistd.h>

#include "bitmix/core/error.hpp"

namespace bitmix {
namespace {

class ThreadPoolTest : public ::testing::Test {
 protected:
  void TearDown() override { set_num_threads(0); }
};

TEST_F(ThreadPoolTest, ParallelForCoversRangeExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    set_num_threads(threads);
    EXPECT_EQ(num_threads(), threads);
    for (int64_t n : {0, 1, 2, 7, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
      parallel_for(n, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) hits[static_cast<std::size_t>(i)]++;
      });
      for (auto& h : hits) EXPECT_EQ(h.load(), 1);
    }
  }
}

TEST_F(ThreadPoolTest, PartitionIsDeterministic) {
  set_num_threads(3);
  auto chunks = [] {
    std::mutex m;
    std::set<std::pair<int64_t, int64_t>> result;
    parallel_for(100, [&](int64_t b, int64_t e) {
      std::lock_guard<std::mutex> lock(m);
      result.insert({b, e});
    });
    return result;
  };
  const auto first = chunks();
  EXPECT_EQ(first.size(), 3u);
  EXPECT_EQ(first, chunks());
}

TEST_F(ThreadPoolTest, GrainLimitsChunkCount) {
  set_num_threads(4);
  std::atomic<int> calls{0};
  parallel_for(10, 6, [&](int64_t, int64_t) { calls++; });
  EXPECT_EQ(calls.load(), 2);
}

TEST_F(ThreadPoolTest, RunUsesEveryThreadOnce) {
  set_num_threads(4);
  std::vector<std::atomic<int>> seen(4);
  parallel_run([&](int index, int count) {
    EXPECT_EQ(count, 4);
    seen[static_cast<std::size_t>(index)]++;
  });
  for (auto& s : seen) EXPECT_EQ(s.load(), 1);
}

TEST_F(ThreadPoolTest, NestedCallsRunSerially) {
  set_num_threads(2);
  std::atomic<int> inner_total{0};
  parallel_run([&](int, int) {
    EXPECT_TRUE(in_parallel_region());
    parallel_run([&](int index, int count) {
      EXPECT_EQ(index, 0);
      EXPECT_EQ(count, 1);
      inner_total++;
    });
  });
  EXPECT_EQ(inner_total.load(), 2);
  EXPECT_FALSE(in_parallel_region());
}

TEST_F(ThreadPoolTest, ExceptionsPropagateToCaller) {
  set_num_threads(2);
  EXPECT_THROW(parallel_run([](int index, int) {
                 if (index == 1) throw ArgumentError("worker failed");
               }),
               ArgumentError);
  // The pool still works afterwards.
  std::atomic<int> calls{0};
  parallel_run([&](int, int) { calls++; });
  EXPECT_EQ(calls.load(), 2);
}

TEST_F(ThreadPoolTest, ManyShortJobs) {
  set_num_threads(2);
  int64_t total = 0;
  for (int rep = 0; rep < 20000; ++rep) {
    std::atomic<int64_t> sum{0};
    parallel_for(64, [&](int64_t b, int64_t e) { sum += e - b; });
    total += sum.load();
  }
  EXPECT_EQ(total, 20000 * 64);
}

TEST_F(ThreadPoolTest, ForkedChildGetsAWorkingPool) {
  // The parent's workers do not exist in a child made by fork(): parallel calls there must
  // neither hang waiting for them nor run on fewer threads than the parent had.
  set_num_threads(3);
  std::atomic<int> warm{0};
  parallel_run([&](int, int) { warm.fetch_add(1); });
  ASSERT_EQ(warm.load(), 3);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::atomic<int> calls{0};
    std::atomic<int64_t> sum{0};
    parallel_run([&](int, int) { calls.fetch_add(1); });
    parallel_for(1000, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) sum.fetch_add(i);
    });
    ::_exit(calls.load() == 3 && sum.load() == 999 * 1000 / 2 && num_threads() == 3 ? 0 : 1);
  }
  int status = 0;
  pid_t done = 0;
  for (int i = 0; i < 600 && (done = ::waitpid(pid, &status, WNOHANG)) == 0; ++i) ::usleep(50000);
  if (done == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    FAIL() << "the forked child's parallel calls hung";
  }
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

}  // namespace
}  // namespace bitmix
