// DoubleQExt's selection against exhaustive enumeration of every level assignment.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/search/doubleq.hpp"

namespace bitmix::search {
namespace {

TEST(DoubleQExt, SelectionEqualsExhaustiveEnumeration) {
  Rng rng(3);
  for (int instance = 0; instance < 40; ++instance) {
    const int n = 2 + instance % 8;
    std::vector<DoubleQLayer> layers;
    double all_one = 0, all_two = 0;
    for (int i = 0; i < n; ++i) {
      DoubleQLayer l;
      l.name = "l" + std::to_string(i);
      l.params = 10 + static_cast<int64_t>(rng.uniform() * 1000.0f);
      l.level_two_code_bits = instance % 2 == 0 ? 4 : 2;
      l.error_level_one = 0.001 * static_cast<double>(rng.uniform());
      l.error_level_two = l.error_level_one + 0.1 * static_cast<double>(rng.uniform());
      all_one += static_cast<double>(l.params) * 8;
      all_two += static_cast<double>(l.params * l.level_two_code_bits);
      layers.push_back(l);
    }
    const double cap = all_two + (all_one - all_two) * static_cast<double>(rng.uniform());
    double best = std::numeric_limits<double>::infinity();
    for (int mask = 0; mask < (1 << n); ++mask) {
      double bits = 0, error = 0;
      for (int i = 0; i < n; ++i) {
        const bool two = (mask >> i) & 1;
        bits += static_cast<double>(layers[static_cast<std::size_t>(i)].params) *
                (two ? layers[static_cast<std::size_t>(i)].level_two_code_bits : 8);
        error += two ? layers[static_cast<std::size_t>(i)].error_level_two : layers[static_cast<std::size_t>(i)].error_level_one;
      }
      if (bits <= cap) best = std::min(best, error);
    }
    const DoubleQSelection s = select_doubleq_levels(layers, cap);
    EXPECT_EQ(s.status, SolveStatus::optimal);
    EXPECT_LE(s.weight_bits, cap) << "instance " << instance;
    EXPECT_NEAR(s.error, best, 1e-12) << "instance " << instance;
  }
}

TEST(DoubleQExt, ABudgetBelowEveryLayerAtLevelTwoIsRefused) {
  const std::vector<DoubleQLayer> layers = {{"a", 100, 4, 0.0, 1.0}, {"b", 50, 4, 0.0, 2.0}};
  EXPECT_THROW(select_doubleq_levels(layers, 100 * 4 + 50 * 4 - 1), ArgumentError);
  const DoubleQSelection all_two = select_doubleq_levels(layers, 100 * 4 + 50 * 4);
  EXPECT_EQ(all_two.level_two, (std::vector<bool>{true, true}));
  // With room for one layer at 8 bits, the one whose second level costs more error keeps it.
  const DoubleQSelection one = select_doubleq_levels(layers, 100 * 4 + 50 * 8);
  EXPECT_EQ(one.level_two, (std::vector<bool>{true, false}));
}

}  // namespace
}  // namespace bitmix::search
