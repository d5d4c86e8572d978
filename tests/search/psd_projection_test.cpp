// PSD projection: the result is symmetric, PSD, idempotent, unchanged when already PSD, and
// removes exactly the Frobenius norm it reports.
#include <gtest/gtest.h>

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/search/allocation.hpp"

namespace bitmix::search {
namespace {

std::vector<double> random_symmetric(Rng& rng, int64_t n) {
  std::vector<double> m(static_cast<std::size_t>(n * n));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = r; c < n; ++c)
      m[static_cast<std::size_t>(r * n + c)] = m[static_cast<std::size_t>(c * n + r)] = rng.normal();
  return m;
}

double min_eigenvalue(const std::vector<double>& m, int64_t n) {
  Eigen::MatrixXd a(n, n);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < n; ++c) a(r, c) = m[static_cast<std::size_t>(r * n + c)];
  const Eigen::VectorXd values = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(a).eigenvalues();
  double lowest = INFINITY;
  for (Eigen::Index i = 0; i < values.size(); ++i) lowest = std::min(lowest, values(i));
  return lowest;
}

double frobenius(const std::vector<double>& m) {
  double s = 0;
  for (double v : m) s += v * v;
  return std::sqrt(s);
}

TEST(PsdProjection, ResultIsSymmetricPsdAndReportsWhatWasRemoved) {
  Rng rng(3);
  for (int64_t n : {1, 2, 5, 24}) {
    const std::vector<double> a = random_symmetric(rng, n);
    const PsdProjection p = project_psd(a, n);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < n; ++c)
        EXPECT_EQ(p.matrix[static_cast<std::size_t>(r * n + c)], p.matrix[static_cast<std::size_t>(c * n + r)]);
    const double norm = frobenius(a);
    EXPECT_GE(min_eigenvalue(p.matrix, n), -1e-12 * norm) << n;
    std::vector<double> diff(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) diff[i] = p.matrix[i] - a[i];
    EXPECT_NEAR(p.removed, frobenius(diff), 1e-10 * norm) << n;
    EXPECT_NEAR(p.relative_removed, p.removed / norm, 1e-15);
    EXPECT_NEAR(p.min_eigenvalue, min_eigenvalue(a, n), 1e-10 * norm);
    if (n >= 5) {
      EXPECT_GT(p.negative_eigenvalues, 0);  // a random symmetric matrix is indefinite
    }
  }
}

TEST(PsdProjection, IsIdempotentAndKeepsPsdMatrices) {
  Rng rng(4);
  const int64_t n = 16;
  const PsdProjection once = project_psd(random_symmetric(rng, n), n);
  const PsdProjection twice = project_psd(once.matrix, n);
  const double norm = frobenius(once.matrix);
  for (std::size_t i = 0; i < once.matrix.size(); ++i) EXPECT_NEAR(twice.matrix[i], once.matrix[i], 1e-12 * norm);
  EXPECT_LE(twice.relative_removed, 1e-12);
  // G G^T + I is PSD: returned as given, bit for bit.
  std::vector<double> g(static_cast<std::size_t>(n * 3));
  for (double& v : g) v = rng.normal();
  std::vector<double> psd(static_cast<std::size_t>(n * n));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < n; ++c) {
      double s = r == c ? 1.0 : 0.0;
      for (int t = 0; t < 3; ++t) s += g[static_cast<std::size_t>(r * 3 + t)] * g[static_cast<std::size_t>(c * 3 + t)];
      psd[static_cast<std::size_t>(r * n + c)] = s;
    }
  const PsdProjection kept = project_psd(psd, n);
  EXPECT_EQ(kept.matrix, psd);
  EXPECT_EQ(kept.removed, 0);
  EXPECT_EQ(kept.negative_eigenvalues, 0);
}

TEST(PsdProjection, SymmetrizesAndRejectsBadInput) {
  // [[0, 2], [0, 0]] -> sym = [[0, 1], [1, 0]], eigenvalues +-1 -> [[.5, .5], [.5, .5]].
  const PsdProjection p = project_psd(std::vector<double>{0, 2, 0, 0}, 2);
  for (double v : p.matrix) EXPECT_NEAR(v, 0.5, 1e-15);
  EXPECT_NEAR(p.removed, 1.0, 1e-15);
  EXPECT_NEAR(p.relative_removed, 1.0 / std::sqrt(2.0), 1e-15);
  EXPECT_THROW(project_psd(std::vector<double>{1, 2, 3}, 2), ArgumentError);
  EXPECT_THROW(project_psd(std::vector<double>{1, NAN, NAN, 1}, 2), ArgumentError);
}

}  // namespace
}  // namespace bitmix::search
