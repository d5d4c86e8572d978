// Incumbents for the allocation solver: greedy repair onto the budgets and local search with
// single-layer and two-layer moves. A good first incumbent lets the branch-and-bound prune from
// the start; optimality never depends on it.
#include <cmath>
#include <limits>

#include "search/allocation_heuristic.hpp"

namespace bitmix::search::detail {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The choice with its per-budget costs and, per option s, F[s] = the interaction of s with the
// options currently chosen in the other layers, so a move's objective change costs O(1).
class State {
 public:
  State(const AllocationProblem& p, std::vector<int>& choice) : p_(p), choice_(choice), n_(p.size()) {
    for (int64_t i = 0; i < p.layers(); ++i) off_.push_back(p.offset(i));
    layer_of_.resize(static_cast<std::size_t>(n_));
    for (std::size_t i = 0; i < off_.size(); ++i)
      for (int b = 0; b < p.option_counts[i]; ++b) layer_of_[static_cast<std::size_t>(off_[i] + b)] = static_cast<int>(i);
    cost_.assign(p.budgets.size(), 0.0);
    for (std::size_t k = 0; k < p.budgets.size(); ++k) cost_[k] = p.budget_cost(k, choice);
    field_.assign(static_cast<std::size_t>(n_), 0.0);
    if (!p.quadratic.empty())
      for (std::size_t j = 0; j < choice.size(); ++j) add_field(static_cast<int>(j), choice[j], +1);
  }

  double unary(int64_t s) const {
    double u = p_.linear.empty() ? 0.0 : p_.linear[static_cast<std::size_t>(s)];
    if (!p_.quadratic.empty()) u += p_.quadratic[static_cast<std::size_t>(s * n_ + s)];
    return u;
  }
  double pair(int64_t r, int64_t s) const {
    return p_.quadratic.empty() ? 0.0 : 2.0 * p_.quadratic[static_cast<std::size_t>(r * n_ + s)];
  }
  int64_t at(int layer, int option) const { return off_[static_cast<std::size_t>(layer)] + option; }
  // Objective change of moving one layer.
  double delta1(int i, int b) const {
    const int64_t now = at(i, choice_[static_cast<std::size_t>(i)]), to = at(i, b);
    return unary(to) - unary(now) + field_[static_cast<std::size_t>(to)] - field_[static_cast<std::size_t>(now)];
  }
  // Objective change of moving two different layers together.
  double delta2(int i, int b, int k, int c) const {
    const int64_t i0 = at(i, choice_[static_cast<std::size_t>(i)]), i1 = at(i, b);
    const int64_t k0 = at(k, choice_[static_cast<std::size_t>(k)]), k1 = at(k, c);
    return delta1(i, b) + delta1(k, c) + pair(i1, k1) - pair(i1, k0) - pair(i0, k1) + pair(i0, k0);
  }
  bool fits(int i, int b, int k = -1, int c = 0) const {
    for (std::size_t q = 0; q < cost_.size(); ++q) {
      const auto& cost = p_.budgets[q].cost;
      double total = cost_[q] + cost[static_cast<std::size_t>(i)][static_cast<std::size_t>(b)] -
                     cost[static_cast<std::size_t>(i)][static_cast<std::size_t>(choice_[static_cast<std::size_t>(i)])];
      if (k >= 0)
        total += cost[static_cast<std::size_t>(k)][static_cast<std::size_t>(c)] -
                 cost[static_cast<std::size_t>(k)][static_cast<std::size_t>(choice_[static_cast<std::size_t>(k)])];
      if (total > p_.budgets[q].cap) return false;
    }
    return true;
  }
  void move(int i, int b) {
    for (std::size_t q = 0; q < cost_.size(); ++q) {
      const auto& row = p_.budgets[q].cost[static_cast<std::size_t>(i)];
      cost_[q] += row[static_cast<std::size_t>(b)] - row[static_cast<std::size_t>(choice_[static_cast<std::size_t>(i)])];
    }
    if (!p_.quadratic.empty()) {
      add_field(i, choice_[static_cast<std::size_t>(i)], -1);
      add_field(i, b, +1);
    }
    choice_[static_cast<std::size_t>(i)] = b;
  }
  // Sum over budgets of the relative excess over the cap (0 when feasible).
  double excess() const {
    double e = 0;
    for (std::size_t q = 0; q < cost_.size(); ++q)
      e += std::max(0.0, cost_[q] - p_.budgets[q].cap) / std::max(std::abs(p_.budgets[q].cap), 1e-300);
    return e;
  }
  double excess_after(int i, int b) const {
    double e = 0;
    for (std::size_t q = 0; q < cost_.size(); ++q) {
      const auto& row = p_.budgets[q].cost[static_cast<std::size_t>(i)];
      const double c = cost_[q] + row[static_cast<std::size_t>(b)] - row[static_cast<std::size_t>(choice_[static_cast<std::size_t>(i)])];
      e += std::max(0.0, c - p_.budgets[q].cap) / std::max(std::abs(p_.budgets[q].cap), 1e-300);
    }
    return e;
  }

 private:
  void add_field(int j, int b, double sign) {
    const int64_t r = at(j, b);
    for (int64_t s = 0; s < n_; ++s)
      if (layer_of_[static_cast<std::size_t>(s)] != j) field_[static_cast<std::size_t>(s)] += sign * pair(r, s);
  }

  const AllocationProblem& p_;
  std::vector<int>& choice_;
  int64_t n_;
  std::vector<int64_t> off_;
  std::vector<int> layer_of_;
  std::vector<double> cost_, field_;
};

}  // namespace

bool repair_choice(const AllocationProblem& p, std::vector<int>& choice) {
  State state(p, choice);
  const int L = static_cast<int>(p.layers());
  for (int step = 0; step < 100 * L && state.excess() > 0; ++step) {
    // The move that removes the most excess per unit of objective it adds.
    const double e0 = state.excess();
    int best_i = -1, best_b = 0;
    double best_score = kInf;
    for (int i = 0; i < L; ++i)
      for (int b = 0; b < p.option_counts[static_cast<std::size_t>(i)]; ++b) {
        if (b == choice[static_cast<std::size_t>(i)]) continue;
        const double gain = e0 - state.excess_after(i, b);
        if (gain <= 0) continue;
        const double score = state.delta1(i, b) / gain;
        if (score < best_score) {
          best_score = score;
          best_i = i;
          best_b = b;
        }
      }
    if (best_i < 0) return false;
    state.move(best_i, best_b);
  }
  return state.excess() == 0;
}

void improve_choice(const AllocationProblem& p, std::vector<int>& choice) {
  State state(p, choice);
  const int L = static_cast<int>(p.layers());
  auto K = [&](int i) { return p.option_counts[static_cast<std::size_t>(i)]; };
  // A relative threshold keeps rounding from cycling between equal choices.
  double scale = 0;
  for (int64_t s = 0; s < p.size(); ++s) scale = std::max(scale, std::abs(state.unary(s)));
  const double eps = 1e-12 * (scale + 1e-300);
  for (int pass = 0; pass < 1000; ++pass) {
    bool moved = false;
    for (int i = 0; i < L; ++i) {
      int best_b = -1;
      double best = -eps;
      for (int b = 0; b < K(i); ++b) {
        if (b == choice[static_cast<std::size_t>(i)] || !state.fits(i, b)) continue;
        const double d = state.delta1(i, b);
        if (d < best) {
          best = d;
          best_b = b;
        }
      }
      if (best_b >= 0) {
        state.move(i, best_b);
        moved = true;
      }
    }
    if (moved) continue;
    // Two layers at once: trade bits between layers under a binding budget.
    for (int i = 0; i < L && !moved; ++i)
      for (int k = i + 1; k < L && !moved; ++k)
        for (int b = 0; b < K(i) && !moved; ++b) {
          if (b == choice[static_cast<std::size_t>(i)]) continue;
          for (int c = 0; c < K(k); ++c) {
            if (c == choice[static_cast<std::size_t>(k)]) continue;
            if (state.delta2(i, b, k, c) < -eps && state.fits(i, b, k, c)) {
              state.move(i, b);
              state.move(k, c);
              moved = true;
              break;
            }
          }
        }
    if (!moved) return;
  }
}

}  // namespace bitmix::search::detail
