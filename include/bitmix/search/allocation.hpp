#pragma once
// Post-training bit allocation as an optimization problem, and its exact solver.
//
// Each layer i picks one of its K_i options (a (w_bits, a_bits) pair). With x the one-hot
// indicator over all (layer, option) pairs, flat index offset(i) + b, the allocators minimize
//
//   f(x) = x^T Q x + l^T x     subject to   sum_i cost_k(i, b_i) <= cap_k   for every budget k
//
// CLADO's cross-layer model is a dense symmetric Q (docs/allocation.md derives it); the
// independent and HAWQ-style allocators are separable (Q empty or diagonal). Every budget is a
// per-(layer, option) cost with a cap: weight bits, BitOPs, average bits, latency.
//
// The solver is a depth-first branch-and-bound of our own (not a MIP library), exact: it returns
// status optimal only after every branch was either searched or proven no better than the
// incumbent. Its lower bound at a node with some layers fixed is
//   fixed part + sum over free layers j of min_b [ a_j(b) + h_j(b) + sum_k lambda_k cost_k(j, b) ]
//              - sum_k lambda_k * (cap_k - fixed cost_k)
// where a_j(b) holds j's own term plus its exact interactions with the fixed layers, h_j(b)
// bounds j's interactions with the other free layers from below (half of each pair's row
// minimum, so the pair's two halves never exceed its true value), and lambda >= 0 are Lagrange
// multipliers of the budgets, maximized per node by bisection (warm-started from the parent).
// Q need not be positive semidefinite: the bound holds for any symmetric Q.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bitmix/search/cost.hpp"

namespace bitmix::search {

// One budget: a cost for every (layer, option) and the cap their sum must not exceed.
struct AllocationBudget {
  std::string name;                       // "size", "bitops", "avg-bits", "latency": for messages
  std::string unit;                       // "bits", "BitOPs", "ms": for messages
  std::vector<std::vector<double>> cost;  // [layer][option], finite
  double cap = 0;
};

struct AllocationProblem {
  std::vector<std::string> layer_names;
  std::vector<int> option_counts;  // K_i >= 1 per layer
  // Symmetric n x n, row-major, n = total options; empty = no quadratic term. Only the entries
  // between options of different layers and the diagonal ever contribute to f.
  std::vector<double> quadratic;
  std::vector<double> linear;  // n entries, or empty
  std::vector<AllocationBudget> budgets;

  int64_t layers() const { return static_cast<int64_t>(option_counts.size()); }
  int64_t size() const;              // n
  int64_t offset(int64_t layer) const;  // flat index of (layer, option 0)
  // f of a choice (one option index per layer), summed in layer order.
  double objective(std::span<const int> choice) const;
  double budget_cost(std::size_t budget, std::span<const int> choice) const;
  // Sizes consistent, values finite, Q symmetric (to a relative 1e-9). ArgumentError naming the
  // field, layer or budget.
  void validate() const;
};

struct SolverOptions {
  // Give up (status node_limit / time_limit, best found so far) after this many nodes or
  // seconds; 0 = no limit. An exact answer never depends on these.
  int64_t node_limit = 0;
  double time_limit_seconds = 0;
};

enum class SolveStatus { optimal, node_limit, time_limit };
std::string_view to_string(SolveStatus status);

struct BudgetReport {
  std::string name;
  std::string unit;
  double cap = 0;
  double achieved = 0;        // cost of the returned choice (<= cap)
  double min_achievable = 0;  // every layer at its cheapest option
  double max_achievable = 0;  // every layer at its most expensive option
  bool always_met = false;    // max_achievable <= cap: the budget constrains nothing
};

struct AllocationSolution {
  std::vector<int> choice;  // option index per layer
  double objective = 0;
  double lower_bound = 0;   // == objective when optimal
  SolveStatus status = SolveStatus::optimal;
  int64_t nodes = 0;
  double seconds = 0;
  std::vector<BudgetReport> budgets;
};

// Solves the problem (validated first). Throws ArgumentError when a budget cannot be met even
// with every layer at its cheapest option (naming the budget, its cap and the smallest
// achievable cost), or when the budgets cannot be met together (naming them). Deterministic.
AllocationSolution solve_allocation(const AllocationProblem& problem, const SolverOptions& options = {});

// A budget from a cost model: cost(i, b) = model.layer_cost(i, options[i][b]) and the cap in
// the model's units (BitOPs, weight bits, ms; resolve_budget converts a user's Budget).
AllocationBudget allocation_budget(const CostModel& model, const std::vector<std::vector<LayerBits>>& options,
                                   double cap);

// ---- Projection onto the positive semidefinite cone.

// The nearest (in Frobenius norm) symmetric PSD matrix to sym(A) = (A + A^T) / 2: its
// eigendecomposition with the negative eigenvalues set to zero. CLADO projects its measured
// matrix so that the quadratic model is convex (noise in the pair measurements makes it
// indefinite); the solver itself does not need it.
struct PsdProjection {
  std::vector<double> matrix;     // n x n row-major, exactly symmetric
  double removed = 0;             // ||result - sym(A)||_F = sqrt(sum of the clipped eigenvalues^2)
  double relative_removed = 0;    // removed / ||sym(A)||_F (0 for a zero matrix)
  double min_eigenvalue = 0;      // of sym(A)
  int64_t negative_eigenvalues = 0;
};
// Throws ArgumentError unless `matrix` has n * n finite entries.
PsdProjection project_psd(std::span<const double> matrix, int64_t n);

}  // namespace bitmix::search
