#pragma once
// Finite-difference gradient checking for the nn tests.
//
// The scalar checked is L = sum_i y_i * r_i for a fixed random projection r, accumulated in
// double. Central differences (L(x + eps) - L(x - eps)) / (2 eps) are exact for maps that are
// linear in the perturbed value (convolution, linear, pooling) up to float rounding of the few
// outputs that change, and O(eps^2) off for smooth non-linear maps (batch norm). The tolerance
// is |analytic - numeric| <= atol + rtol * |numeric|, with atol scaled by the largest gradient
// of the tensor, which absorbs the float rounding of the forward (about 1e-7 relative per
// changed output, divided by 2 eps).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "bitmix/core/rng.hpp"
#include "bitmix/core/tensor.hpp"

namespace bitmix::nn::testing {

inline Tensor random_tensor(const Shape& shape, Rng& rng, float lo = -1.0f, float hi = 1.0f) {
  Tensor t(shape);
  for (float& v : t.values()) v = rng.uniform(lo, hi);
  return t;
}

inline double projected(const Tensor& y, const Tensor& r) {
  double sum = 0;
  for (int64_t i = 0; i < y.numel(); ++i) sum += double{y[i]} * double{r[i]};
  return sum;
}

struct GradCheckOptions {
  float eps = 1e-2f;
  double rtol = 1e-2;
  double atol = 2e-3;     // relative to max(1, largest |gradient|)
  int max_elements = 60;  // checked elements per tensor (spread evenly)
};

// Compares `analytic` (dL/dvalue) with central differences of `loss` with respect to `value`,
// which `loss` reads (it is perturbed in place and restored).
inline void expect_gradient(const std::string& what, Tensor& value, const Tensor& analytic,
                            const std::function<double()>& loss, const GradCheckOptions& options = {}) {
  ASSERT_EQ(value.shape(), analytic.shape()) << what;
  double max_grad = 1.0;
  for (float g : analytic.values()) max_grad = std::max(max_grad, double{std::abs(g)});
  const int64_t n = value.numel();
  const int64_t step = std::max<int64_t>(1, n / options.max_elements);
  int failures = 0;
  for (int64_t i = 0; i < n; i += step) {
    const float saved = value[i];
    value[i] = saved + options.eps;
    const double plus = loss();
    value[i] = saved - options.eps;
    const double minus = loss();
    value[i] = saved;
    const double numeric = (plus - minus) / (2.0 * double{options.eps});
    const double got = analytic[i];
    const double tolerance = options.atol * max_grad + options.rtol * std::abs(numeric);
    if (std::abs(got - numeric) > tolerance && ++failures <= 5)
      ADD_FAILURE() << what << "[" << i << "]: analytic " << got << ", numeric " << numeric << " (tolerance "
                    << tolerance << ")";
  }
  EXPECT_EQ(failures, 0) << what << ": " << failures << " elements off";
}

}  // namespace bitmix::nn::testing
