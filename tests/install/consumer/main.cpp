// A program outside the bitmix tree, built against the installed package.
#include <bitmix/bitmix.hpp>

#include <atomic>
#include <iostream>

int main() {
  bitmix::Tensor t({2, 3, 4, 4}, 1.5f);
  std::atomic<int64_t> count{0};
  bitmix::parallel_for(t.numel(), [&](int64_t begin, int64_t end) { count += end - begin; });
  if (count != t.numel() || t.at(1, 2, 3, 3) != 1.5f) return 1;
  try {
    t.at(2, 0, 0, 0);
    return 1;
  } catch (const bitmix::Error&) {
  }
  std::cout << bitmix::cpu_summary() << "\nconsumer ok\n";
  return 0;
}
