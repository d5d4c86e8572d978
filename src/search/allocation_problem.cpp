// AllocationProblem: evaluation, validation, and budgets from cost models.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "bitmix/core/error.hpp"
#include "bitmix/search/allocation.hpp"

namespace bitmix::search {

std::string_view to_string(SolveStatus status) {
  switch (status) {
    case SolveStatus::optimal: return "optimal";
    case SolveStatus::node_limit: return "node_limit";
    case SolveStatus::time_limit: return "time_limit";
  }
  return "?";
}

int64_t AllocationProblem::size() const {
  int64_t n = 0;
  for (int k : option_counts) n += k;
  return n;
}

int64_t AllocationProblem::offset(int64_t layer) const {
  int64_t n = 0;
  for (int64_t i = 0; i < layer; ++i) n += option_counts[static_cast<std::size_t>(i)];
  return n;
}

double AllocationProblem::objective(std::span<const int> choice) const {
  const int64_t n = size();
  const int64_t count = layers();
  std::vector<int64_t> index(static_cast<std::size_t>(count));
  int64_t off = 0;
  for (int64_t i = 0; i < count; ++i) {
    index[static_cast<std::size_t>(i)] = off + choice[static_cast<std::size_t>(i)];
    off += option_counts[static_cast<std::size_t>(i)];
  }
  double f = 0;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t p = index[static_cast<std::size_t>(i)];
    if (!linear.empty()) f += linear[static_cast<std::size_t>(p)];
    if (quadratic.empty()) continue;
    f += quadratic[static_cast<std::size_t>(p * n + p)];
    for (int64_t j = i + 1; j < count; ++j)
      f += 2.0 * quadratic[static_cast<std::size_t>(p * n + index[static_cast<std::size_t>(j)])];
  }
  return f;
}

double AllocationProblem::budget_cost(std::size_t budget, std::span<const int> choice) const {
  const AllocationBudget& b = budgets.at(budget);
  double total = 0;
  for (std::size_t i = 0; i < option_counts.size(); ++i) total += b.cost[i][static_cast<std::size_t>(choice[i])];
  return total;
}

void AllocationProblem::validate() const {
  if (option_counts.empty()) throw ArgumentError("allocation problem: no layers");
  if (layer_names.size() != option_counts.size())
    throw ArgumentError(fmt::format("allocation problem: {} layer names for {} layers", layer_names.size(),
                                    option_counts.size()));
  for (std::size_t i = 0; i < option_counts.size(); ++i)
    if (option_counts[i] < 1)
      throw ArgumentError(fmt::format("allocation problem: layer '{}' has {} options, expected at least 1",
                                      layer_names[i], option_counts[i]));
  const int64_t n = size();
  if (!linear.empty() && static_cast<int64_t>(linear.size()) != n)
    throw ArgumentError(fmt::format("allocation problem: linear term has {} entries, expected {}", linear.size(), n));
  if (!quadratic.empty() && static_cast<int64_t>(quadratic.size()) != n * n)
    throw ArgumentError(
        fmt::format("allocation problem: quadratic term has {} entries, expected {}x{}", quadratic.size(), n, n));
  for (double v : linear)
    if (!std::isfinite(v)) throw ArgumentError("allocation problem: linear term has a non-finite entry");
  double scale = 0;
  for (double v : quadratic) {
    if (!std::isfinite(v)) throw ArgumentError("allocation problem: quadratic term has a non-finite entry");
    scale = std::max(scale, std::abs(v));
  }
  for (int64_t r = 0; r < n && !quadratic.empty(); ++r)
    for (int64_t c = r + 1; c < n; ++c) {
      const double a = quadratic[static_cast<std::size_t>(r * n + c)];
      const double b = quadratic[static_cast<std::size_t>(c * n + r)];
      if (std::abs(a - b) > 1e-9 * scale)
        throw ArgumentError(fmt::format("allocation problem: quadratic term not symmetric at ({}, {}): {} vs {}", r,
                                        c, a, b));
    }
  for (const AllocationBudget& budget : budgets) {
    if (budget.cost.size() != option_counts.size())
      throw ArgumentError(fmt::format("budget '{}': costs for {} layers, expected {}", budget.name,
                                      budget.cost.size(), option_counts.size()));
    for (std::size_t i = 0; i < option_counts.size(); ++i) {
      if (static_cast<int>(budget.cost[i].size()) != option_counts[i])
        throw ArgumentError(fmt::format("budget '{}': layer '{}' has {} costs, expected {}", budget.name,
                                        layer_names[i], budget.cost[i].size(), option_counts[i]));
      for (double v : budget.cost[i])
        if (!std::isfinite(v))
          throw ArgumentError(fmt::format("budget '{}': layer '{}' has a non-finite cost", budget.name, layer_names[i]));
    }
    if (!std::isfinite(budget.cap)) throw ArgumentError(fmt::format("budget '{}': cap is not finite", budget.name));
  }
}

AllocationBudget allocation_budget(const CostModel& model, const std::vector<std::vector<LayerBits>>& options,
                                   double cap) {
  if (options.size() != model.layers().size())
    throw ArgumentError(fmt::format("budget '{}': options for {} layers, the cost model has {}",
                                    cost_kind_name(model.kind()), options.size(), model.layers().size()));
  AllocationBudget budget;
  budget.name = std::string(cost_kind_name(model.kind()));
  budget.unit = model.kind() == CostKind::bitops ? "BitOPs" : model.kind() == CostKind::size ? "bits" : "ms";
  budget.cap = cap;
  for (std::size_t i = 0; i < options.size(); ++i) {
    std::vector<double> row;
    for (const LayerBits& bits : options[i]) row.push_back(model.layer_cost(i, bits.w_bits, bits.a_bits));
    budget.cost.push_back(std::move(row));
  }
  return budget;
}

}  // namespace bitmix::search
