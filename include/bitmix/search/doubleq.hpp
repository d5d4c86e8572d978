#pragma once
// DoubleQExt's per-layer selection: which layers take DoubleQ's second level (power-of-two
// exponents of the 8-bit codes) so that the weights fit a memory budget with the least
// quantization error, solved exactly (solve_allocation, allocation.hpp).

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bitmix/search/allocation.hpp"

namespace bitmix::search {

struct DoubleQLayer {
  std::string name;
  int64_t params = 0;           // weights of the layer
  int level_two_code_bits = 8;  // storage bits of a level-two code (level one: 8)
  double error_level_one = 0;   // the layer's error at each level (docs: relative squared error)
  double error_level_two = 0;
};

struct DoubleQSelection {
  std::vector<bool> level_two;  // per layer
  double weight_bits = 0;       // sum params * storage bits of the choice
  double error = 0;             // sum of the chosen levels' errors
  SolveStatus status = SolveStatus::optimal;
};

// Minimizes sum of errors subject to sum params * bits <= budget_weight_bits. ArgumentError
// naming the budget when even every layer at level two does not fit.
DoubleQSelection select_doubleq_levels(std::span<const DoubleQLayer> layers, double budget_weight_bits);

}  // namespace bitmix::search
