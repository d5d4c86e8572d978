// Calibrators against brute force on known distributions: min-max and percentiles against the
// sorted sample, the MSE clip against an exhaustive search with the real quantizer, ACIQ against
// the distribution's parameters.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/quant/calibrator.hpp"
#include "quant_test_util.hpp"

namespace bitmix::quant {
namespace {

using testing::gaussian;

Tensor laplace(Shape shape, uint64_t seed, float b) {
  Tensor t(std::move(shape));
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double u = rng.uniform_double() - 0.5;  // inverse CDF
    const double sign = u < 0.0 ? -1.0 : 1.0;
    t[i] = static_cast<float>(-static_cast<double>(b) * sign * std::log(std::max(1e-300, 1.0 - 2.0 * std::fabs(u))));
  }
  return t;
}

// Exact empirical quantile of the values (linear between order statistics).
double sample_quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double position = q * static_cast<double>(v.size() - 1);
  const auto i = static_cast<std::size_t>(std::floor(position));
  const double frac = position - static_cast<double>(i);
  return i + 1 < v.size() ? v[i] * (1.0 - frac) + v[i + 1] * frac : v[i];
}

// The real quantizer's mean squared error on x with the range [lo, hi].
double actual_mse(const QuantizerSpec& spec, const Tensor& x, float lo, float hi) {
  Quantizer q(spec);
  q.set_range(std::vector<float>{lo}, std::vector<float>{hi});
  q.set_training(false);
  const Tensor y = q.forward(x);
  double sum = 0.0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double d = static_cast<double>(y[i]) - static_cast<double>(x[i]);
    sum += d * d;
  }
  return sum / static_cast<double>(x.numel());
}

TEST(Calibrator, MinMaxOverBatchesWithAGrowingRange) {
  // Batches whose ranges grow in both directions force the histogram to merge bins.
  Calibrator cal(CalibrationOptions{}, Granularity::per_channel, 3);
  double lo[3] = {INFINITY, INFINITY, INFINITY}, hi[3] = {-INFINITY, -INFINITY, -INFINITY};
  for (int batch = 0; batch < 5; ++batch) {
    const Tensor x = gaussian({3, 40}, 100 + batch, std::pow(4.0f, static_cast<float>(batch)) * 0.01f);
    for (int64_t i = 0; i < x.numel(); ++i) {
      lo[i / 40] = std::min(lo[i / 40], static_cast<double>(x[i]));
      hi[i / 40] = std::max(hi[i / 40], static_cast<double>(x[i]));
    }
    cal.observe(x);
  }
  EXPECT_EQ(cal.observed(), 600);
  Quantizer q(weight_spec(QuantizerKind::uniform, 8, Granularity::per_channel, 3));
  const std::vector<ClipRange> r = cal.ranges(q);
  for (int g = 0; g < 3; ++g) {
    EXPECT_EQ(r[static_cast<std::size_t>(g)].lo, static_cast<float>(lo[g]));
    EXPECT_EQ(r[static_cast<std::size_t>(g)].hi, static_cast<float>(hi[g]));
  }
  // A symmetric target gets [-max|x|, max|x|]; a non-negative one [0, max].
  Quantizer s(weight_spec(QuantizerKind::symmetric, 4, Granularity::per_channel, 3));
  const std::vector<ClipRange> rs = cal.ranges(s);
  EXPECT_EQ(rs[0].hi, static_cast<float>(std::max(-lo[0], hi[0])));
  EXPECT_EQ(rs[0].lo, -rs[0].hi);
  cal.apply(q);
  EXPECT_EQ(q.buffers()[0]->value[1], static_cast<float>(lo[1]));  // range_min of channel 1
}

TEST(Calibrator, PercentilesMatchTheSortedSample) {
  const Tensor x = gaussian({200000}, 7, 1.5f);
  std::vector<double> values(x.data(), x.data() + x.numel());
  std::vector<double> magnitudes(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) magnitudes[i] = std::fabs(values[i]);
  // Observed in 4 batches.
  CalibrationOptions options;
  options.method = CalibrationMethod::percentile;
  options.percentile = 99.0;
  Calibrator cal(options);
  for (int b = 0; b < 4; ++b)
    cal.observe(Tensor({50000}, std::span<const float>(x.data() + b * 50000, 50000)));

  Quantizer affine(activation_spec(QuantizerKind::uniform, 8, true));
  const ClipRange a = cal.ranges(affine)[0];
  EXPECT_NEAR(a.lo, sample_quantile(values, 0.01), 0.01);
  EXPECT_NEAR(a.hi, sample_quantile(values, 0.99), 0.01);

  Quantizer symmetric(weight_spec(QuantizerKind::symmetric, 8));
  const ClipRange s = cal.ranges(symmetric)[0];
  EXPECT_NEAR(s.hi, sample_quantile(magnitudes, 0.99), 0.01);
  EXPECT_EQ(s.lo, -s.hi);

  Quantizer pact(activation_spec(QuantizerKind::pact, 4));
  EXPECT_NEAR(cal.ranges(pact)[0].hi, sample_quantile(values, 0.99), 0.01);
}

TEST(Calibrator, MseClipIsAsGoodAsAnExhaustiveSearch) {
  // For each target, scan 1500 clip values with the real quantizer and keep the best MSE; the
  // calibrator's clip must come within 1% of it.
  const Tensor weights = gaussian({60000}, 11, 0.05f);
  const Tensor activations = testing::relu(laplace({60000}, 12, 1.0f));
  struct Case {
    QuantizerSpec spec;
    const Tensor* data;
  };
  const Case cases[] = {
      {weight_spec(QuantizerKind::symmetric, 3), &weights},
      {weight_spec(QuantizerKind::symmetric, 6), &weights},
      {weight_spec(QuantizerKind::lsq, 2), &weights},
      {activation_spec(QuantizerKind::uniform, 4), &activations},
      {activation_spec(QuantizerKind::pact, 2), &activations},
  };
  CalibrationOptions options;
  options.method = CalibrationMethod::mse;
  for (const Case& c : cases) {
    SCOPED_TRACE(describe(c.spec));
    const Tensor& x = *c.data;
    Calibrator cal(options);
    cal.observe(x);
    Quantizer target(c.spec);
    const ClipRange r = cal.ranges(target)[0];
    const float max_abs = *std::max_element(x.data(), x.data() + x.numel(), [](float p, float q) {
      return std::fabs(p) < std::fabs(q);
    });
    const bool symmetric = c.data == &weights;
    double best = INFINITY;
    for (int i = 1; i <= 1500; ++i) {
      const float a = std::fabs(max_abs) * static_cast<float>(i) / 1500.0f;
      best = std::min(best, actual_mse(c.spec, x, symmetric ? -a : 0.0f, a));
    }
    const double found = actual_mse(c.spec, x, r.lo, r.hi);
    EXPECT_LE(found, best * 1.01) << "clip [" << r.lo << ", " << r.hi << "]";
    // The histogram estimate the search minimizes agrees with the real error.
    const LevelGrid grid = target.grid_for_range(r.lo, r.hi);
    EXPECT_NEAR(cal.histogram_mse(0, grid), found, 0.03 * found);
  }
}

TEST(Calibrator, AciqClipsFollowTheDistributionScale) {
  // Laplace b = 0.5, symmetric 4-bit: alpha = 5.0286 b. Gaussian sigma = 2, 3 bits: 2.1516 sigma.
  const Tensor l = laplace({400000}, 21, 0.5f);
  CalibrationOptions options;
  options.method = CalibrationMethod::aciq_laplace;
  Calibrator laplace_cal(options);
  laplace_cal.observe(l);
  Quantizer s4(weight_spec(QuantizerKind::symmetric, 4));
  EXPECT_NEAR(laplace_cal.ranges(s4)[0].hi, 5.0286 * 0.5, 0.03 * 5.0286 * 0.5);

  const Tensor g = gaussian({400000}, 22, 2.0f);
  options.method = CalibrationMethod::aciq_gaussian;
  Calibrator gauss_cal(options);
  gauss_cal.observe(g);
  Quantizer s3(weight_spec(QuantizerKind::symmetric, 3));
  EXPECT_NEAR(gauss_cal.ranges(s3)[0].hi, 2.1516 * 2.0, 0.02 * 2.1516 * 2.0);
  // Two-sided affine: centred on the mean.
  Quantizer affine(activation_spec(QuantizerKind::uniform, 2, true));
  const ClipRange r = gauss_cal.ranges(affine)[0];
  EXPECT_NEAR(r.hi, 1.7106 * 2.0, 0.05);
  EXPECT_NEAR(r.lo, -1.7106 * 2.0, 0.05);

  // One-sided: ReLU(Laplace b = 1) on an unsigned 3-bit grid uses the 4-bit constant with
  // b = E[x | x > 0] = 1.
  options.method = CalibrationMethod::aciq_laplace;
  Calibrator relu_cal(options);
  relu_cal.observe(testing::relu(laplace({400000}, 23, 1.0f)));
  Quantizer pact(activation_spec(QuantizerKind::pact, 3));
  EXPECT_NEAR(relu_cal.ranges(pact)[0].hi, 5.0286, 0.03 * 5.0286);
}

TEST(Calibrator, ResultsDoNotDependOnTheThreadCount) {
  const Tensor x = gaussian({4, 64, 32, 32}, 31, 1.0f);
  CalibrationOptions options;
  options.method = CalibrationMethod::aciq_laplace;
  Quantizer target(activation_spec(QuantizerKind::uniform, 4, true));
  const int saved = num_threads();
  std::vector<ClipRange> results;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Calibrator cal(options);
    cal.observe(x);
    results.push_back(cal.ranges(target)[0]);
  }
  set_num_threads(saved);
  EXPECT_TRUE(testing::bitwise_equal(results[0].lo, results[1].lo));
  EXPECT_TRUE(testing::bitwise_equal(results[0].hi, results[1].hi));
}

TEST(Calibrator, BadUseIsReportedClearly) {
  CalibrationOptions bad;
  bad.percentile = 40.0;
  EXPECT_THROW(Calibrator{bad}, ArgumentError);
  bad = CalibrationOptions{};
  bad.histogram_bins = 15;
  EXPECT_THROW(Calibrator{bad}, ArgumentError);
  EXPECT_EQ(parse_calibration_method("aciq-gaussian"), CalibrationMethod::aciq_gaussian);
  EXPECT_THROW(parse_calibration_method("kl"), ArgumentError);

  Calibrator cal(CalibrationOptions{}, Granularity::per_channel, 4);
  Quantizer q(weight_spec(QuantizerKind::symmetric, 4, Granularity::per_channel, 4));
  EXPECT_THROW(cal.ranges(q), ArgumentError);                  // nothing observed
  EXPECT_THROW(cal.observe(Tensor({3, 2})), ShapeError);       // axis 0 is not the 4 channels
  cal.observe(Tensor({4, 2}, {1, 2, 3, 4, 5, NAN, INFINITY, 8}));
  EXPECT_EQ(cal.observed(), 6);
  EXPECT_EQ(cal.skipped(), 2);
  Quantizer per_tensor(weight_spec(QuantizerKind::symmetric, 4));
  EXPECT_THROW(cal.ranges(per_tensor), ArgumentError);         // 1 group vs 4
  Quantizer sawb(weight_spec(QuantizerKind::sawb, 2, Granularity::per_channel, 4));
  EXPECT_THROW(cal.ranges(sawb), ArgumentError);               // SAWB computes its own clip
  EXPECT_NO_THROW(cal.apply(q));
  EXPECT_EQ(q.params().scales[3], 8.0f / 7.0f);  // channel 3: {NaN skipped, 8}: max 8
}

}  // namespace
}  // namespace bitmix::quant
