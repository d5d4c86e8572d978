// Several Sessions sharing one Model, each on its own thread, all running at once (and all
// using the one thread pool): every logit equals the one a single thread computed for the same
// images beforehand. ThreadSanitizer runs this too (scripts/tsan.sh).
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/runtime/session.hpp"
#include "runtime_test_util.hpp"

namespace bitmix::runtime {
namespace {

class SessionConcurrency : public ::testing::TestWithParam<int> {
 protected:
  void TearDown() override { set_num_threads(0); }
};

TEST_P(SessionConcurrency, SessionsSharingAModelOnManyThreadsMatchASingleThread) {
  set_num_threads(GetParam());  // the pool the sessions' ops share
  const testing::TestModel tm = testing::make_test_model(23);
  const Model& model = tm.model;  // one Model, shared by every Session below
  constexpr int kThreads = 4, kBatches = 6, kRounds = 3;
  Rng rng(5);
  std::vector<Tensor> inputs, expected;
  {
    Session reference(model);
    for (int i = 0; i < kBatches; ++i) {
      inputs.push_back(testing::random_images(rng, {1 + i % 3, 3, 9, 10}));
      expected.push_back(reference.run(inputs.back()));
    }
  }
  std::atomic<int> mismatches{0}, runs{0};
  std::atomic<bool> go{false};
  std::vector<std::string> first_error(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      // Half the threads keep every value (no buffer sharing): two kinds of sessions at once.
      SessionOptions options;
      options.keep_values = t % 2 == 1;
      Session session(model, options);
      while (!go.load()) std::this_thread::yield();
      for (int round = 0; round < kRounds; ++round)
        for (int k = 0; k < kBatches; ++k) {
          const int i = (k + t) % kBatches;  // every thread in its own order
          const Tensor logits = session.run(inputs[static_cast<std::size_t>(i)]);
          ++runs;
          const Tensor& want = expected[static_cast<std::size_t>(i)];
          bool same = logits.shape() == want.shape();
          for (int64_t j = 0; same && j < want.numel(); ++j) same = logits[j] == want[j];
          if (!same && mismatches.fetch_add(1) == 0)
            first_error[static_cast<std::size_t>(t)] =
                "thread " + std::to_string(t) + ", round " + std::to_string(round) + ", batch " + std::to_string(i);
        }
    });
  go.store(true);
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(runs.load(), kThreads * kRounds * kBatches);
  EXPECT_EQ(mismatches.load(), 0) << [&] {
    std::string all;
    for (const std::string& e : first_error) all += e.empty() ? "" : e + "; ";
    return all;
  }();
}

INSTANTIATE_TEST_SUITE_P(PoolThreads, SessionConcurrency, ::testing::Values(1, 2, 3));

}  // namespace
}  // namespace bitmix::runtime
