#pragma once
// Reparametrization messages of the allocation solver's lower bound (allocation_solver.cpp).

#include <cstdint>
#include <span>
#include <vector>

#include "bitmix/search/allocation.hpp"

namespace bitmix::search::detail {

// Improves the messages msg[s * L + j] (the share m_{j->l}(c) of the pair (j, l) given to
// option s = (l, c)) and recomputes residual[j * L + l] = min_{b,c} [2 Q_(j,b),(l,c) −
// m_{l->j}(b) − m_{j->l}(c)] for the unary terms theta (one per option; the problem's own terms
// plus the budgets' prices), over the pairs of `layers` only (the free layers of a node: the
// messages of other pairs are neither read nor written), for at most `max_sweeps` sweeps.
// `offsets` holds each layer's first flat option. The problem must have a quadratic term.
void optimize_pair_messages(const AllocationProblem& problem, std::span<const int64_t> offsets,
                            std::span<const double> theta, std::vector<double>& msg, std::vector<double>& residual,
                            std::span<const int> layers, int max_sweeps);

}  // namespace bitmix::search::detail
