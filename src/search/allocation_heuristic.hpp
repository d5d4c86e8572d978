#pragma once
// Incumbent heuristics of the allocation solver (allocation_heuristic.cpp).

#include <vector>

#include "bitmix/search/allocation.hpp"

namespace bitmix::search::detail {

// Moves `choice` onto the budgets greedily (each step the option change that removes the most
// relative excess per unit of objective added). Returns whether every budget is then met.
bool repair_choice(const AllocationProblem& problem, std::vector<int>& choice);

// Local search from a feasible choice: best single-layer moves, then improving two-layer moves,
// until none is left; every budget stays met.
void improve_choice(const AllocationProblem& problem, std::vector<int>& choice);

}  // namespace bitmix::search::detail
