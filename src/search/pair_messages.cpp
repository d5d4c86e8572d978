// The message optimization of the allocation solver's pair bound (allocation_solver.cpp).
#include <algorithm>
#include <cmath>
#include <limits>

#include "search/pair_messages.hpp"

namespace bitmix::search::detail {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
}

// Block coordinate ascent on the messages (the MPLP edge update of Globerson and Jaakkola
// 2007): for the pair (j, l), with A_j(b) = theta_j(b) + the messages j receives from the other
// layers, set m_{l->j}(b) = -A_j(b)/2 + min_c [theta_jl(b,c) + A_l(c)]/2 and symmetrically; the
// two layers' terms then each carry half of the pair's exact two-layer minimum, so no sweep
// lowers the bound. theta includes lambda . cost, the budgets' current prices.
void optimize_pair_messages(const AllocationProblem& problem, std::span<const int64_t> offsets, std::span<const double> theta,
                            std::vector<double>& msg, std::vector<double>& residual, std::span<const int> layers,
                            int max_sweeps) {
  const int L = static_cast<int>(problem.layers());
  const auto F = static_cast<int>(layers.size());
  const int64_t n = problem.size();
  auto q = [&](int64_t r, int64_t c) { return problem.quadratic[static_cast<std::size_t>(r * n + c)]; };
  auto K = [&](int i) { return problem.option_counts[static_cast<std::size_t>(i)]; };
  std::vector<double> H(static_cast<std::size_t>(n), 0.0);
  for (int lj : layers)
    for (int b = 0; b < K(lj); ++b) {
      const int64_t s = offsets[static_cast<std::size_t>(lj)] + b;
      for (int j : layers) H[static_cast<std::size_t>(s)] += msg[static_cast<std::size_t>(s * L + j)];
    }
  std::vector<double> Aj, Al, mj, ml;
  auto residuals_and_bound = [&]() {
    double total = 0;
    for (int jj = 0; jj < F; ++jj) {
      const int j = layers[static_cast<std::size_t>(jj)];
      double m = kInf;
      for (int b = 0; b < K(j); ++b) {
        const auto r = static_cast<std::size_t>(offsets[static_cast<std::size_t>(j)] + b);
        m = std::min(m, theta[r] + H[r]);
      }
      total += m;
      for (int ll = jj + 1; ll < F; ++ll) {
        const int l = layers[static_cast<std::size_t>(ll)];
        double res = kInf;
        for (int b = 0; b < K(j); ++b)
          for (int c = 0; c < K(l); ++c) {
            const int64_t r = offsets[static_cast<std::size_t>(j)] + b, t = offsets[static_cast<std::size_t>(l)] + c;
            res = std::min(res, 2.0 * q(r, t) - msg[static_cast<std::size_t>(r * L + l)] -
                                    msg[static_cast<std::size_t>(t * L + j)]);
          }
        residual[static_cast<std::size_t>(j * L + l)] = residual[static_cast<std::size_t>(l * L + j)] = res;
        total += res;
      }
    }
    return total;
  };
  double previous = residuals_and_bound();
  for (int sweep = 0; sweep < max_sweeps; ++sweep) {
    for (int jj = 0; jj < F; ++jj)
      for (int ll = jj + 1; ll < F; ++ll) {
        const int j = layers[static_cast<std::size_t>(jj)], l = layers[static_cast<std::size_t>(ll)];
        const int kj = K(j), kl = K(l);
        const int64_t oj = offsets[static_cast<std::size_t>(j)], ol = offsets[static_cast<std::size_t>(l)];
        Aj.resize(static_cast<std::size_t>(kj));
        Al.resize(static_cast<std::size_t>(kl));
        for (int b = 0; b < kj; ++b)
          Aj[static_cast<std::size_t>(b)] = theta[static_cast<std::size_t>(oj + b)] + H[static_cast<std::size_t>(oj + b)] -
                                            msg[static_cast<std::size_t>((oj + b) * L + l)];
        for (int c = 0; c < kl; ++c)
          Al[static_cast<std::size_t>(c)] = theta[static_cast<std::size_t>(ol + c)] + H[static_cast<std::size_t>(ol + c)] -
                                            msg[static_cast<std::size_t>((ol + c) * L + j)];
        mj.assign(static_cast<std::size_t>(kj), kInf);
        ml.assign(static_cast<std::size_t>(kl), kInf);
        for (int b = 0; b < kj; ++b)
          for (int c = 0; c < kl; ++c) {
            const double pair = 2.0 * q(oj + b, ol + c);
            mj[static_cast<std::size_t>(b)] = std::min(mj[static_cast<std::size_t>(b)], pair + Al[static_cast<std::size_t>(c)]);
            ml[static_cast<std::size_t>(c)] = std::min(ml[static_cast<std::size_t>(c)], pair + Aj[static_cast<std::size_t>(b)]);
          }
        for (int b = 0; b < kj; ++b) {
          const auto r = static_cast<std::size_t>((oj + b) * L + l);
          const double m = 0.5 * (mj[static_cast<std::size_t>(b)] - Aj[static_cast<std::size_t>(b)]);
          H[static_cast<std::size_t>(oj + b)] += m - msg[r];
          msg[r] = m;
        }
        for (int c = 0; c < kl; ++c) {
          const auto r = static_cast<std::size_t>((ol + c) * L + j);
          const double m = 0.5 * (ml[static_cast<std::size_t>(c)] - Al[static_cast<std::size_t>(c)]);
          H[static_cast<std::size_t>(ol + c)] += m - msg[r];
          msg[r] = m;
        }
      }
    const double now = residuals_and_bound();
    const bool converged = now - previous <= 1e-9 * (std::abs(now) + 1e-300);
    previous = now;
    if (converged) break;
  }
}

}  // namespace bitmix::search::detail
