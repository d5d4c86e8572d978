// DoubleQExt's selection (bitmix/search/doubleq.hpp) as a two-option allocation problem.

#include <fmt/format.h>

#include "bitmix/core/error.hpp"
#include "bitmix/search/doubleq.hpp"

namespace bitmix::search {

DoubleQSelection select_doubleq_levels(std::span<const DoubleQLayer> layers, double budget_weight_bits) {
  if (layers.empty()) throw ArgumentError("DoubleQExt: no layers to select from");
  AllocationProblem problem;
  AllocationBudget size;
  size.name = "size";
  size.unit = "bits";
  size.cap = budget_weight_bits;
  for (const DoubleQLayer& l : layers) {
    problem.layer_names.push_back(l.name);
    problem.option_counts.push_back(2);  // option 0: level one (8 bits), option 1: level two
    problem.linear.push_back(l.error_level_one);
    problem.linear.push_back(l.error_level_two);
    size.cost.push_back({static_cast<double>(l.params) * 8.0,
                         static_cast<double>(l.params) * static_cast<double>(l.level_two_code_bits)});
  }
  problem.budgets.push_back(std::move(size));
  const AllocationSolution solution = solve_allocation(problem);
  DoubleQSelection out;
  out.status = solution.status;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const bool two = solution.choice[i] == 1;
    out.level_two.push_back(two);
    out.weight_bits += static_cast<double>(layers[i].params) * (two ? layers[i].level_two_code_bits : 8);
    out.error += two ? layers[i].error_level_two : layers[i].error_level_one;
  }
  return out;
}

}  // namespace bitmix::search
