// The exact branch-and-bound of allocation.hpp. Why our own and not CBC on a linearisation:
// the exact linearisation of x^T Q x needs one variable y_ij per pair of options of different
// layers (about 95,000 for ResNet-56 with 8 options) plus their constraints, and its LP
// relaxation is solved at every node; the bound below is the same kind of relaxation (the
// "star" bound of quadratic assignment, Gilmore-Lawler style) computed in O(n) per node from
// incrementally updated arrays, with the budgets handled by Lagrange multipliers, and needs no
// new dependency. tests/search/allocation_solver_test.cpp checks it against enumeration.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>

#include "bitmix/core/error.hpp"
#include "bitmix/search/allocation.hpp"
#include "search/allocation_heuristic.hpp"
#include "search/pair_messages.hpp"

namespace bitmix::search {

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kInf = std::numeric_limits<double>::infinity();

class BranchAndBound {
 public:
  BranchAndBound(const AllocationProblem& problem, const SolverOptions& options)
      : p_(problem), options_(options), L_(static_cast<int>(problem.layers())), n_(problem.size()),
        B_(static_cast<int>(problem.budgets.size())) {
    build();
  }

  AllocationSolution run();

 private:
  struct Frame {
    std::vector<double> a, h;  // per flat option: exact interactions with fixed layers, free-pair bound
    double fixed = 0;
    double rest = 0;  // sum of the pair residuals r_jl over pairs of free layers
    std::vector<double> fixed_cost;
    std::vector<double> lambda;
    std::vector<int> free;       // layers not fixed yet
    std::vector<double> min_rest;  // per budget: cheapest cost of the free layers
  };

  void build();
  void optimize_messages(const std::vector<double>& lambda);

  double root_frame(Frame& root);
  double q(int64_t r, int64_t c) const { return p_.quadratic.empty() ? 0.0 : p_.quadratic[static_cast<std::size_t>(r * n_ + c)]; }
  double bound(Frame& f);
  double lagrangian(const Frame& f, const std::vector<double>& lambda, std::vector<double>* subgrad) const;
  void dfs(int depth);
  int branch_layer(const Frame& f) const;
  void consider(const std::vector<int>& choice);
  std::vector<int> heuristic_start() const;
  bool feasible(const std::vector<int>& choice) const;
  bool out_of_limits();

  const AllocationProblem& p_;
  SolverOptions options_;
  int L_;
  int64_t n_;
  int B_;
  std::vector<int64_t> off_;
  std::vector<int> order_;                  // branching order of layers
  std::vector<double> unary_;               // Q_pp + l_p
  // Reparametrization of the pair terms: msg_[s * L + j] is the share m_{j->l}(c) of the pair
  // (j, l) given to option s = (l, c) while both layers are free; residual_[j * L + l] =
  // min_{b,c} [2 Q_(j,b),(l,c) - m_{l->j}(b) - m_{j->l}(c)]. Any messages give a valid bound;
  // optimize_messages() makes it tight at the root.
  std::vector<double> msg_;
  std::vector<double> residual_;
  std::vector<std::vector<double>> cost_;   // [budget][flat]
  std::vector<std::vector<double>> min_cost_;  // [budget][layer]: the layer's cheapest cost
  double tol_ = 0;                          // rounding allowance of the bound
  std::vector<Frame> frames_;
  std::vector<int> current_;                // choice being built (per layer)
  std::vector<int> best_;
  double best_value_ = kInf;
  int64_t nodes_ = 0;
  bool stopped_ = false;
  SolveStatus status_ = SolveStatus::optimal;
  Clock::time_point start_;
};

void BranchAndBound::build() {
  off_.resize(static_cast<std::size_t>(L_));
  for (int i = 0; i < L_; ++i) off_[static_cast<std::size_t>(i)] = p_.offset(i);
  unary_.assign(static_cast<std::size_t>(n_), 0.0);
  for (int64_t r = 0; r < n_; ++r)
    unary_[static_cast<std::size_t>(r)] = q(r, r) + (p_.linear.empty() ? 0.0 : p_.linear[static_cast<std::size_t>(r)]);
  auto K = [&](int i) { return p_.option_counts[static_cast<std::size_t>(i)]; };
  msg_.assign(static_cast<std::size_t>(n_ * L_), 0.0);
  residual_.assign(static_cast<std::size_t>(L_ * L_), 0.0);
  double scale = 0;
  for (double u : unary_) scale += std::abs(u);
  std::vector<double> score(static_cast<std::size_t>(L_), 0.0);
  for (int j = 0; j < L_; ++j) {
    double lo = kInf, hi = -kInf;
    for (int b = 0; b < K(j); ++b) {
      lo = std::min(lo, unary_[static_cast<std::size_t>(off_[static_cast<std::size_t>(j)] + b)]);
      hi = std::max(hi, unary_[static_cast<std::size_t>(off_[static_cast<std::size_t>(j)] + b)]);
    }
    score[static_cast<std::size_t>(j)] += hi - lo;
  }
  if (!p_.quadratic.empty()) {
    for (int j = 0; j < L_; ++j)
      for (int i = 0; i < L_; ++i) {
        if (i == j) continue;
        double pair_max = 0;
        for (int b = 0; b < K(j); ++b)
          for (int c = 0; c < K(i); ++c) {
            const double v = 2.0 * q(off_[static_cast<std::size_t>(j)] + b, off_[static_cast<std::size_t>(i)] + c);
            pair_max = std::max(pair_max, std::abs(v));
            if (i > j) scale += std::abs(v);
          }
        score[static_cast<std::size_t>(j)] += pair_max;
      }
    // With zero messages the residual of a pair is its smallest entry.
    for (int j = 0; j < L_; ++j)
      for (int l = j + 1; l < L_; ++l) {
        double res = kInf;
        for (int b = 0; b < K(j); ++b)
          for (int c = 0; c < K(l); ++c)
            res = std::min(res, 2.0 * q(off_[static_cast<std::size_t>(j)] + b, off_[static_cast<std::size_t>(l)] + c));
        residual_[static_cast<std::size_t>(j * L_ + l)] = residual_[static_cast<std::size_t>(l * L_ + j)] = res;
      }
  }
  tol_ = 1e-12 * (scale + 1e-300) + 1e-300;
  cost_.assign(static_cast<std::size_t>(B_), std::vector<double>(static_cast<std::size_t>(n_)));
  for (int k = 0; k < B_; ++k)
    for (int i = 0; i < L_; ++i)
      for (int b = 0; b < K(i); ++b)
        cost_[static_cast<std::size_t>(k)][static_cast<std::size_t>(off_[static_cast<std::size_t>(i)] + b)] =
            p_.budgets[static_cast<std::size_t>(k)].cost[static_cast<std::size_t>(i)][static_cast<std::size_t>(b)];
  // Fixed (single-option) layers first, then the layers whose choice moves the objective most:
  // deciding them early makes the bound of the rest tight soonest.
  order_.resize(static_cast<std::size_t>(L_));
  std::iota(order_.begin(), order_.end(), 0);
  std::stable_sort(order_.begin(), order_.end(), [&](int x, int y) {
    if ((K(x) == 1) != (K(y) == 1)) return K(x) == 1;
    return score[static_cast<std::size_t>(x)] > score[static_cast<std::size_t>(y)];
  });
  min_cost_.assign(static_cast<std::size_t>(B_), std::vector<double>(static_cast<std::size_t>(L_), 0.0));
  for (int k = 0; k < B_; ++k)
    for (int j = 0; j < L_; ++j) {
      double m = kInf;
      for (int b = 0; b < K(j); ++b)
        m = std::min(m, cost_[static_cast<std::size_t>(k)][static_cast<std::size_t>(off_[static_cast<std::size_t>(j)] + b)]);
      min_cost_[static_cast<std::size_t>(k)][static_cast<std::size_t>(j)] = m;
    }
}

bool BranchAndBound::feasible(const std::vector<int>& choice) const {
  for (int k = 0; k < B_; ++k)
    if (p_.budget_cost(static_cast<std::size_t>(k), choice) > p_.budgets[static_cast<std::size_t>(k)].cap) return false;
  return true;
}

void BranchAndBound::consider(const std::vector<int>& choice) {
  if (!feasible(choice)) return;
  const double value = p_.objective(choice);
  if (value < best_value_) {
    best_value_ = value;
    best_ = choice;
  }
}

// sum over free layers of min_b (a + h + lambda . cost) - lambda . remaining; the subgradient
// (cost of the minimizers minus remaining, per budget) when asked.
double BranchAndBound::lagrangian(const Frame& f, const std::vector<double>& lambda,
                                  std::vector<double>* subgrad) const {
  double total = f.fixed + f.rest;
  if (subgrad != nullptr) subgrad->assign(static_cast<std::size_t>(B_), 0.0);
  for (int k = 0; k < B_; ++k) {
    const double remaining = p_.budgets[static_cast<std::size_t>(k)].cap - f.fixed_cost[static_cast<std::size_t>(k)];
    total -= lambda[static_cast<std::size_t>(k)] * remaining;
    if (subgrad != nullptr) (*subgrad)[static_cast<std::size_t>(k)] -= remaining;
  }
  for (int j : f.free) {
    const int64_t base = off_[static_cast<std::size_t>(j)];
    double m = kInf;
    int64_t arg = base;
    for (int b = 0; b < p_.option_counts[static_cast<std::size_t>(j)]; ++b) {
      const auto r = static_cast<std::size_t>(base + b);
      double v = f.a[r] + f.h[r];
      for (int k = 0; k < B_; ++k) v += lambda[static_cast<std::size_t>(k)] * cost_[static_cast<std::size_t>(k)][r];
      if (v < m) {
        m = v;
        arg = base + b;
      }
    }
    total += m;
    if (subgrad != nullptr)
      for (int k = 0; k < B_; ++k)
        (*subgrad)[static_cast<std::size_t>(k)] += cost_[static_cast<std::size_t>(k)][static_cast<std::size_t>(arg)];
  }
  return total;
}

// Maximizes the Lagrangian over each multiplier in turn (it is concave and piecewise linear in
// each): bisection on the sign of the subgradient. Any lambda >= 0 gives a valid bound, so the
// search precision affects only how much is pruned, never the answer.
double BranchAndBound::bound(Frame& f) {
  std::vector<double> sub;
  double best = lagrangian(f, f.lambda, &sub);
  const int sweeps = B_ > 1 ? 2 : 1;
  for (int s = 0; s < sweeps; ++s)
    for (int k = 0; k < B_; ++k) {
      std::vector<double> lam = f.lambda;
      const auto kk = static_cast<std::size_t>(k);
      lam[kk] = 0;
      double at_zero = lagrangian(f, lam, &sub);
      if (sub[kk] <= 0) {  // the budget is slack at lambda_k = 0: 0 is optimal for this coordinate
        if (at_zero >= best) {
          best = at_zero;
          f.lambda = lam;
        }
        continue;
      }
      double lo = 0, hi = f.lambda[kk] > 0 ? 2 * f.lambda[kk] : 1.0;
      double value_lo = at_zero;
      for (int grow = 0; grow < 200; ++grow) {
        lam[kk] = hi;
        const double v = lagrangian(f, lam, &sub);
        if (sub[kk] <= 0) break;
        lo = hi;
        value_lo = v;
        hi *= 4;
      }
      double best_lambda = lo, best_value = value_lo;
      for (int it = 0; it < 30 && hi - lo > 1e-12 * hi; ++it) {
        const double mid = 0.5 * (lo + hi);
        lam[kk] = mid;
        const double v = lagrangian(f, lam, &sub);
        if (v > best_value) {
          best_value = v;
          best_lambda = mid;
        }
        if (sub[kk] > 0)
          lo = mid;
        else
          hi = mid;
      }
      lam[kk] = hi;
      const double v_hi = lagrangian(f, lam, nullptr);
      if (v_hi > best_value) {
        best_value = v_hi;
        best_lambda = hi;
      }
      if (best_value >= best) {
        best = best_value;
        f.lambda[kk] = best_lambda;
      }
    }
  return best;
}

bool BranchAndBound::out_of_limits() {
  if (options_.node_limit > 0 && nodes_ >= options_.node_limit) {
    status_ = SolveStatus::node_limit;
    return true;
  }
  if (options_.time_limit_seconds > 0 && (nodes_ & 255) == 0 &&
      std::chrono::duration<double>(Clock::now() - start_).count() > options_.time_limit_seconds) {
    status_ = SolveStatus::time_limit;
    return true;
  }
  return false;
}

// The free layer to branch on: a single-option layer if any, else the layer whose second-best
// option under the node's terms and multipliers lies furthest above its best, so its other
// children are the likeliest to be pruned at once (on CLADO-shaped 55 x 8 instances this cut
// the nodes 10-60x against the static order; ties go to the static order).
int BranchAndBound::branch_layer(const Frame& f) const {
  int best = f.free.front();
  double best_regret = -1;
  for (int j : f.free) {
    const int K = p_.option_counts[static_cast<std::size_t>(j)];
    if (K == 1) return j;
    double lo = kInf, second = kInf;
    for (int b = 0; b < K; ++b) {
      const auto r = static_cast<std::size_t>(off_[static_cast<std::size_t>(j)] + b);
      double v = f.a[r] + f.h[r];
      for (int k = 0; k < B_; ++k) v += f.lambda[static_cast<std::size_t>(k)] * cost_[static_cast<std::size_t>(k)][r];
      if (v < lo) {
        second = lo;
        lo = v;
      } else if (v < second) {
        second = v;
      }
    }
    if (second - lo > best_regret) {
      best_regret = second - lo;
      best = j;
    }
  }
  return best;
}

void BranchAndBound::dfs(int depth) {
  if (stopped_) return;
  ++nodes_;
  if (out_of_limits()) {
    stopped_ = true;
    return;
  }
  if (depth == L_) {
    const double before = best_value_;
    consider(current_);
    if (best_value_ < before) {  // a new incumbent: polish it too
      std::vector<int> polished = current_;
      detail::improve_choice(p_, polished);
      consider(polished);
    }
    return;
  }
  Frame& f = frames_[static_cast<std::size_t>(depth)];
  const double lb = bound(f);
  if (lb >= best_value_ + tol_) return;  // no completion can beat the incumbent
  const int j = branch_layer(f);
  const int K = p_.option_counts[static_cast<std::size_t>(j)];
  const int64_t base = off_[static_cast<std::size_t>(j)];
  // Children in order of their own term under the node's multipliers: good choices first find
  // good incumbents early.
  std::vector<std::pair<double, int>> children;
  for (int b = 0; b < K; ++b) {
    const auto r = static_cast<std::size_t>(base + b);
    bool fits = true;
    for (int k = 0; k < B_ && fits; ++k) {
      const double cap = p_.budgets[static_cast<std::size_t>(k)].cap;
      const double need = f.fixed_cost[static_cast<std::size_t>(k)] + cost_[static_cast<std::size_t>(k)][r] +
                          f.min_rest[static_cast<std::size_t>(k)] - min_cost_[static_cast<std::size_t>(k)][static_cast<std::size_t>(j)];
      fits = need <= cap + 1e-12 * (std::abs(cap) + std::abs(need));
    }
    if (!fits) continue;
    double key = f.a[r] + f.h[r];
    for (int k = 0; k < B_; ++k) key += f.lambda[static_cast<std::size_t>(k)] * cost_[static_cast<std::size_t>(k)][r];
    children.emplace_back(key, b);
  }
  std::stable_sort(children.begin(), children.end(),
                   [](const auto& x, const auto& y) { return x.first < y.first; });
  Frame& child = frames_[static_cast<std::size_t>(depth + 1)];
  for (const auto& [key, b] : children) {
    (void)key;
    const int64_t r = base + b;
    child.a = f.a;
    child.h = f.h;
    child.lambda = f.lambda;
    child.fixed = f.fixed + f.a[static_cast<std::size_t>(r)];
    child.rest = f.rest;
    child.fixed_cost = f.fixed_cost;
    child.free.clear();
    for (int l : f.free)
      if (l != j) child.free.push_back(l);
    child.min_rest = f.min_rest;
    for (int k = 0; k < B_; ++k)
      child.min_rest[static_cast<std::size_t>(k)] -= min_cost_[static_cast<std::size_t>(k)][static_cast<std::size_t>(j)];
    for (int k = 0; k < B_; ++k)
      child.fixed_cost[static_cast<std::size_t>(k)] += cost_[static_cast<std::size_t>(k)][static_cast<std::size_t>(r)];
    if (!p_.quadratic.empty()) {
      const std::vector<double>& msg = msg_;
      const std::vector<double>& residual = residual_;
      for (int l : child.free) {
        const int64_t lb_off = off_[static_cast<std::size_t>(l)];
        // The pair (j, l) is now exact in l's term: drop its reparametrized share and residual.
        child.rest -= residual[static_cast<std::size_t>(j * L_ + l)];
        for (int c = 0; c < p_.option_counts[static_cast<std::size_t>(l)]; ++c) {
          const int64_t s = lb_off + c;
          child.a[static_cast<std::size_t>(s)] += 2.0 * q(r, s);
          child.h[static_cast<std::size_t>(s)] -= msg[static_cast<std::size_t>(s * L_ + j)];
        }
      }
    }
    current_[static_cast<std::size_t>(j)] = b;
    dfs(depth + 1);
    if (stopped_) return;
  }
}

// A start for the repair: the cheapest option per layer, the cost of each budget normalized by
// its cap.
std::vector<int> BranchAndBound::heuristic_start() const {
  std::vector<int> choice(static_cast<std::size_t>(L_), 0);
  for (int i = 0; i < L_; ++i) {
    double best = kInf;
    for (int b = 0; b < p_.option_counts[static_cast<std::size_t>(i)]; ++b) {
      double v = 0;
      for (int k = 0; k < B_; ++k)
        v += cost_[static_cast<std::size_t>(k)][static_cast<std::size_t>(off_[static_cast<std::size_t>(i)] + b)] /
             std::max(std::abs(p_.budgets[static_cast<std::size_t>(k)].cap), 1e-300);
      if (v < best) {
        best = v;
        choice[static_cast<std::size_t>(i)] = b;
      }
    }
  }
  return choice;
}

// The root frame for the current messages; returns its bound (and sets its multipliers).
double BranchAndBound::root_frame(Frame& root) {
  root.a = unary_;
  root.h.assign(static_cast<std::size_t>(n_), 0.0);
  root.rest = 0;
  for (int64_t s = 0; s < n_; ++s)
    for (int j = 0; j < L_; ++j) root.h[static_cast<std::size_t>(s)] += msg_[static_cast<std::size_t>(s * L_ + j)];
  for (int j = 0; j < L_; ++j)
    for (int l = j + 1; l < L_; ++l) root.rest += residual_[static_cast<std::size_t>(j * L_ + l)];
  root.fixed = 0;
  root.fixed_cost.assign(static_cast<std::size_t>(B_), 0.0);
  root.free = order_;
  root.min_rest.assign(static_cast<std::size_t>(B_), 0.0);
  for (int k = 0; k < B_; ++k)
    for (int j = 0; j < L_; ++j)
      root.min_rest[static_cast<std::size_t>(k)] += min_cost_[static_cast<std::size_t>(k)][static_cast<std::size_t>(j)];
  return bound(root);
}

void BranchAndBound::optimize_messages(const std::vector<double>& lambda) {
  std::vector<double> theta(static_cast<std::size_t>(n_));
  for (int64_t s = 0; s < n_; ++s) {
    theta[static_cast<std::size_t>(s)] = unary_[static_cast<std::size_t>(s)];
    for (int k = 0; k < B_; ++k)
      theta[static_cast<std::size_t>(s)] += lambda[static_cast<std::size_t>(k)] * cost_[static_cast<std::size_t>(k)][static_cast<std::size_t>(s)];
  }
  detail::optimize_pair_messages(p_, off_, theta, msg_, residual_, order_, 200);
}

AllocationSolution BranchAndBound::run() {
  start_ = Clock::now();
  frames_.resize(static_cast<std::size_t>(L_ + 1));
  Frame& root = frames_[0];
  root.lambda.assign(static_cast<std::size_t>(B_), 0.0);
  for (auto& frame : frames_) frame.lambda.assign(static_cast<std::size_t>(B_), 0.0);
  current_.assign(static_cast<std::size_t>(L_), 0);
  // Messages for the root's multipliers, multipliers for the messages, twice.
  double root_bound = root_frame(root);
  if (!p_.quadratic.empty())
    for (int round = 0; round < 2; ++round) {
      optimize_messages(root.lambda);
      root_bound = root_frame(root);
    }

  std::vector<int> start = heuristic_start();
  if (detail::repair_choice(p_, start)) {
    detail::improve_choice(p_, start);
    consider(start);
  }
  const Frame& probe = root;
  // A second start: the root's Lagrangian minimizers, if they happen to be feasible.
  std::vector<int> lagr(static_cast<std::size_t>(L_), 0);
  for (int j = 0; j < L_; ++j) {
    double m = kInf;
    for (int b = 0; b < p_.option_counts[static_cast<std::size_t>(j)]; ++b) {
      const auto r = static_cast<std::size_t>(off_[static_cast<std::size_t>(j)] + b);
      double v = probe.a[r] + probe.h[r];
      for (int k = 0; k < B_; ++k) v += probe.lambda[static_cast<std::size_t>(k)] * cost_[static_cast<std::size_t>(k)][r];
      if (v < m) {
        m = v;
        lagr[static_cast<std::size_t>(j)] = b;
      }
    }
  }
  if (detail::repair_choice(p_, lagr)) {
    detail::improve_choice(p_, lagr);
    consider(lagr);
  }
  dfs(0);

  AllocationSolution solution;
  solution.nodes = nodes_;
  solution.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  solution.status = stopped_ ? status_ : SolveStatus::optimal;
  if (best_.empty()) {
    if (stopped_)
      throw ArgumentError(fmt::format("allocation: no configuration meeting the budgets found within the {} limit",
                                      to_string(status_)));
    std::string names;
    for (const AllocationBudget& b : p_.budgets) names += fmt::format("{}{} <= {} {}", names.empty() ? "" : ", ", b.name, b.cap, b.unit);
    throw ArgumentError(fmt::format("allocation: no configuration meets the budgets together ({}), though each "
                                    "alone can be met; relax one of them",
                                    names));
  }
  solution.choice = best_;
  solution.objective = p_.objective(best_);
  solution.lower_bound = solution.status == SolveStatus::optimal ? solution.objective : std::min(root_bound, solution.objective);
  return solution;
}

}  // namespace

AllocationSolution solve_allocation(const AllocationProblem& problem, const SolverOptions& options) {
  problem.validate();
  std::vector<BudgetReport> reports;
  for (const AllocationBudget& budget : problem.budgets) {
    BudgetReport r;
    r.name = budget.name;
    r.unit = budget.unit;
    r.cap = budget.cap;
    for (const auto& row : budget.cost) {
      double lo = kInf, hi = -kInf;
      for (double v : row) lo = std::min(lo, v), hi = std::max(hi, v);
      r.min_achievable += lo;
      r.max_achievable += hi;
    }
    r.always_met = r.max_achievable <= budget.cap;
    if (r.min_achievable > budget.cap)
      throw ArgumentError(fmt::format("budget '{}' of {} {} cannot be met: the smallest achievable is {} {} (every "
                                      "layer at its cheapest option)",
                                      budget.name, budget.cap, budget.unit, r.min_achievable, budget.unit));
    reports.push_back(r);
  }
  AllocationSolution solution = BranchAndBound(problem, options).run();
  for (std::size_t k = 0; k < reports.size(); ++k) reports[k].achieved = problem.budget_cost(k, solution.choice);
  solution.budgets = std::move(reports);
  return solution;
}

}  // namespace bitmix::search
