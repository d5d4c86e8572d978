// Projection onto the PSD cone by a symmetric eigendecomposition (Eigen's self-adjoint solver).
#include <fmt/format.h>

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <limits>

#include "bitmix/core/error.hpp"
#include "bitmix/search/allocation.hpp"

namespace bitmix::search {

PsdProjection project_psd(std::span<const double> matrix, int64_t n) {
  if (n < 1 || static_cast<int64_t>(matrix.size()) != n * n)
    throw ArgumentError(fmt::format("PSD projection: {} entries for a {}x{} matrix", matrix.size(), n, n));
  for (double v : matrix)
    if (!std::isfinite(v)) throw ArgumentError("PSD projection: the matrix has a non-finite entry");
  Eigen::MatrixXd a(n, n);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < n; ++c)
      a(r, c) = 0.5 * (matrix[static_cast<std::size_t>(r * n + c)] + matrix[static_cast<std::size_t>(c * n + r)]);
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(a);
  if (eig.info() != Eigen::Success) throw ArgumentError("PSD projection: the eigendecomposition did not converge");
  Eigen::VectorXd values = eig.eigenvalues();
  PsdProjection out;
  out.min_eigenvalue = std::numeric_limits<double>::infinity();
  for (Eigen::Index i = 0; i < values.size(); ++i) out.min_eigenvalue = std::min(out.min_eigenvalue, values(i));
  double removed2 = 0;
  for (Eigen::Index i = 0; i < values.size(); ++i)
    if (values(i) < 0) {
      removed2 += values(i) * values(i);
      values(i) = 0;
      ++out.negative_eigenvalues;
    }
  out.matrix.assign(static_cast<std::size_t>(n * n), 0.0);
  if (out.negative_eigenvalues == 0) {
    // Already PSD: return sym(A) itself rather than a rounded reconstruction of it.
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < n; ++c) out.matrix[static_cast<std::size_t>(r * n + c)] = a(r, c);
    return out;
  }
  const Eigen::MatrixXd& v = eig.eigenvectors();
  const Eigen::MatrixXd result = v * values.asDiagonal() * v.transpose();
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = r; c < n; ++c)  // the upper triangle mirrored: exactly symmetric
      out.matrix[static_cast<std::size_t>(r * n + c)] = out.matrix[static_cast<std::size_t>(c * n + r)] = result(r, c);
  out.removed = std::sqrt(removed2);
  const double norm = a.norm();
  out.relative_removed = norm > 0 ? out.removed / norm : 0.0;
  return out;
}

}  // namespace bitmix::search
