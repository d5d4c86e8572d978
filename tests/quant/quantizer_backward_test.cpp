// Backward passes: gradients of learnable parameters against finite differences where the
// quantizer is differentiable, and the straight-through-estimator rule, checked explicitly
// against a reference written here, where it is not.

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/quant/quantizer.hpp"
#include "quant_test_util.hpp"

namespace bitmix::quant {
namespace {

using testing::gaussian;

// L = sum_i c_i Q(x)_i with the quantizer as it is (evaluation mode: no state update).
double loss(Quantizer& q, const Tensor& x, const Tensor& c) {
  const Tensor y = q.forward(x);
  double sum = 0.0;
  for (int64_t i = 0; i < x.numel(); ++i) sum += static_cast<double>(c[i]) * static_cast<double>(y[i]);
  return sum;
}

// Central difference of loss() with respect to element `index` of a parameter.
double finite_difference(Quantizer& q, Parameter& p, int64_t index, const Tensor& x, const Tensor& c, float h) {
  const float saved = p.value[index];
  p.value[index] = saved + h;
  const double up = loss(q, x, c);
  p.value[index] = saved - h;
  const double down = loss(q, x, c);
  p.value[index] = saved;
  const double step = static_cast<double>(saved + h) - static_cast<double>(saved - h);
  return (up - down) / step;
}

TEST(QuantizerBackward, LsqStepGradientMatchesFiniteDifferencesWhereClipped) {
  // Where x / s is outside [-Q_N, Q_P] the output is -Q_N s or Q_P s: differentiable in s with
  // derivative -Q_N or Q_P. LSQ scales the step gradient by g = 1 / sqrt(N Q_P).
  Quantizer q(weight_spec(QuantizerKind::lsq, 3));  // Q_N = 4, Q_P = 3
  Parameter& step = *q.parameters()[0];
  const float lo[] = {-2.0f}, hi[] = {1.5f};
  q.set_range(lo, hi);  // step 0.5: the grid spans [-2, 1.5]
  q.set_training(false);
  const Tensor x({6}, {3.0f, -4.0f, 2.5f, -2.8f, 10.0f, -7.0f});
  const Tensor c({6}, {0.3f, -1.2f, 0.7f, 2.0f, -0.4f, 0.9f});
  q.backward(x, c);
  const double g = 1.0 / std::sqrt(6.0 * 3.0);
  const double fd = finite_difference(q, step, 0, x, c, 1e-3f);
  EXPECT_NEAR(static_cast<double>(step.grad[0]), g * fd, 1e-4);
  EXPECT_NEAR(fd, 3 * 0.3 - 4 * -1.2 + 3 * 0.7 - 4 * 2.0 + 3 * -0.4 - 4 * 0.9, 1e-3);
}

TEST(QuantizerBackward, LsqInsideTheRangeFollowsTheSteRule) {
  // Inside, LSQ differentiates round() as the identity: dQ/ds = round(v) - v, dQ/dx = 1.
  // Per-channel 4-bit weights, each channel with its own step and its own N.
  Quantizer q(weight_spec(QuantizerKind::lsq, 4, Granularity::per_channel, 3));
  const Tensor x = gaussian({3, 50}, 5, 0.2f);
  const Tensor c = gaussian({3, 50}, 6, 1.0f);
  q.forward(x);  // initializes the steps from x
  Parameter& step = *q.parameters()[0];
  const Tensor gx = q.backward(x, c);
  for (int64_t ch = 0; ch < 3; ++ch) {
    const double s = step.value[ch];
    double expected = 0.0;
    for (int64_t i = ch * 50; i < (ch + 1) * 50; ++i) {
      const double v = static_cast<double>(x[i]) / s;
      const double ds = v <= -8.0 ? -8.0 : (v >= 7.0 ? 7.0 : std::nearbyint(v) - v);
      expected += ds * static_cast<double>(c[i]);
      EXPECT_EQ(gx[i], (v > -8.0 && v < 7.0) ? c[i] : 0.0f) << "element " << i;
    }
    expected /= std::sqrt(50.0 * 7.0);
    EXPECT_NEAR(static_cast<double>(step.grad[ch]), expected, 1e-5) << "channel " << ch;
  }
}

TEST(QuantizerBackward, LsqActivationsScaleByFeaturesPerExample) {
  // N_F is the number of features of one example (the LSQ paper), not of the whole batch.
  Quantizer q(activation_spec(QuantizerKind::lsq, 2));  // unsigned: Q_N = 0, Q_P = 3
  const float lo[] = {0.0f}, hi[] = {3.0f};
  q.set_range(lo, hi);  // step 1
  const Tensor x({4, 5}, {-1.0f, 0.0f, 0.4f, 1.6f, 2.5f,  3.0f, 7.0f, 0.2f, 1.0f, -3.0f,
                          2.2f,  0.8f, 5.0f, 1.4f, 0.6f,  0.1f, 2.9f, 4.4f, 1.5f, 0.5f});
  const Tensor c = Tensor::full({4, 5}, 1.0f);
  const Tensor gx = q.backward(x, c);
  double expected = 0.0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = x[i];
    expected += v <= 0.0 ? 0.0 : (v >= 3.0 ? 3.0 : std::nearbyint(v) - v);
    EXPECT_EQ(gx[i], (v > 0.0 && v < 3.0) ? 1.0f : 0.0f) << "element " << i;
  }
  EXPECT_NEAR(static_cast<double>(q.parameters()[0]->grad[0]), expected / std::sqrt(5.0 * 3.0), 1e-5);
}

TEST(QuantizerBackward, LsqOneBitStepGradient) {
  // Levels +-s: dQ/ds = sign(v) - v inside |v| < 1, sign(v) outside; g = 1 / sqrt(N).
  Quantizer q(weight_spec(QuantizerKind::lsq, 1));
  const float lo[] = {-0.5f}, hi[] = {0.5f};
  q.set_range(lo, hi);  // step 0.5
  const Tensor x({4}, {0.1f, -0.3f, 0.9f, -2.0f});
  const Tensor c({4}, {1.0f, 2.0f, 3.0f, 4.0f});
  const Tensor gx = q.backward(x, c);
  const double expected = (1.0 * (1 - 0.2) + 2.0 * (-1 + 0.6) + 3.0 * 1 + 4.0 * -1) / std::sqrt(4.0);
  EXPECT_NEAR(static_cast<double>(q.parameters()[0]->grad[0]), expected, 1e-6);
  testing::expect_values(gx, {1.0f, 2.0f, 0.0f, 0.0f}, "lsq w1 dx");
  // Where clipped the function is +-s: finite differences agree.
  q.zero_grad();
  const Tensor far({3}, {3.0f, -4.0f, 5.0f});
  const Tensor cf({3}, {0.5f, 1.5f, -2.0f});
  q.backward(far, cf);
  q.set_training(false);
  const double fd = finite_difference(q, *q.parameters()[0], 0, far, cf, 1e-3f);
  EXPECT_NEAR(static_cast<double>(q.parameters()[0]->grad[0]), fd / std::sqrt(3.0), 1e-4);
}

TEST(QuantizerBackward, PactAlphaGradientMatchesFiniteDifferencesAboveAlpha) {
  // Where x >= alpha the output is alpha: dQ/dalpha = 1 (finite differences agree).
  Quantizer q(activation_spec(QuantizerKind::pact, 3));
  Parameter& alpha = *q.parameters()[0];
  alpha.value[0] = 2.0f;
  const Tensor x({4}, {2.5f, 3.0f, 9.0f, 2.2f});
  const Tensor c({4}, {0.5f, -1.0f, 2.0f, 0.25f});
  q.backward(x, c);
  const double fd = finite_difference(q, alpha, 0, x, c, 1e-2f);
  EXPECT_NEAR(static_cast<double>(alpha.grad[0]), fd, 1e-4);
  EXPECT_NEAR(fd, 1.75, 1e-4);
}

TEST(QuantizerBackward, PactSteRuleBelowAlpha) {
  // Below alpha the output is round(x / s) s: PACT's rule gives alpha no gradient there, and x
  // the gradient 1 on [0, alpha).
  Quantizer q(activation_spec(QuantizerKind::pact, 2));
  q.parameters()[0]->value[0] = 3.0f;
  const Tensor x({6}, {-1.0f, 0.0f, 0.7f, 2.9f, 3.0f, 4.0f});
  const Tensor c({6}, {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f});
  const Tensor gx = q.backward(x, c);
  testing::expect_values(gx, {0.0f, 2.0f, 3.0f, 4.0f, 0.0f, 0.0f}, "pact dx");
  EXPECT_FLOAT_EQ(q.parameters()[0]->grad[0], 11.0f);  // x = 3 and x = 4
}

// The DoReFa weight surrogate with rounding replaced by the identity: t / max|t|, t = tanh(w).
double dorefa_surrogate_loss(const std::vector<double>& w, const Tensor& c, int64_t begin, int64_t end) {
  double m = 0.0;
  for (int64_t i = begin; i < end; ++i) m = std::max(m, std::fabs(std::tanh(w[static_cast<std::size_t>(i)])));
  double sum = 0.0;
  for (int64_t i = begin; i < end; ++i) sum += static_cast<double>(c[i]) * std::tanh(w[static_cast<std::size_t>(i)]) / m;
  return sum;
}

TEST(QuantizerBackward, DorefaWeightGradientIsTheTanhMaxSurrogate) {
  // Per channel, including the gradient that flows through max|tanh(w)| to the largest weight.
  Quantizer q(weight_spec(QuantizerKind::dorefa, 3, Granularity::per_channel, 2));
  const Tensor w = gaussian({2, 20}, 7, 0.6f);
  const Tensor c = gaussian({2, 20}, 8, 1.0f);
  const Tensor gx = q.backward(w, c);
  std::vector<double> wd(w.data(), w.data() + w.numel());
  for (int64_t ch = 0; ch < 2; ++ch) {
    for (int64_t i = ch * 20; i < (ch + 1) * 20; ++i) {
      const double h = 1e-5;
      const double saved = wd[static_cast<std::size_t>(i)];
      wd[static_cast<std::size_t>(i)] = saved + h;
      const double up = dorefa_surrogate_loss(wd, c, ch * 20, (ch + 1) * 20);
      wd[static_cast<std::size_t>(i)] = saved - h;
      const double down = dorefa_surrogate_loss(wd, c, ch * 20, (ch + 1) * 20);
      wd[static_cast<std::size_t>(i)] = saved;
      EXPECT_NEAR(static_cast<double>(gx[i]), (up - down) / (2 * h), 2e-4) << "element " << i;
    }
  }
}

TEST(QuantizerBackward, ClippedSteForRangeQuantizers) {
  // uniform / symmetric: dQ/dx = 1 inside the grid's range, 0 where clipped.
  Quantizer q(activation_spec(QuantizerKind::uniform, 2));
  const float lo[] = {-0.5f}, hi[] = {1.0f};
  q.set_range(lo, hi);
  const Tensor x({6}, {-0.6f, -0.5f, 0.0f, 0.9f, 1.0f, 1.1f});
  const Tensor c = Tensor::full({6}, 2.0f);
  testing::expect_values(q.backward(x, c), {0.0f, 2.0f, 2.0f, 2.0f, 2.0f, 0.0f}, "uniform dx");
  EXPECT_TRUE(q.parameters().empty());

  // SAWB: 1 where |w| <= alpha (the top level), 0 beyond; alpha is a statistic, not learned.
  Quantizer s(weight_spec(QuantizerKind::sawb, 2));
  const Tensor w({8}, {1.0f, -1.0f, 2.0f, -2.0f, 0.5f, -0.5f, 3.0f, -3.0f});  // alpha = 2.535
  testing::expect_values(s.backward(w, Tensor::full({8}, 1.0f)), {1, 1, 1, 1, 1, 1, 0, 0}, "sawb dx");

  // Power of two: 1 up to the largest level (here 1), 0 beyond.
  Quantizer p(weight_spec(QuantizerKind::pot, 3));
  const Tensor v({3}, {1.2f, -0.3f, 1.0f});  // max 1.2 -> top level 1
  testing::expect_values(p.backward(v, Tensor::full({3}, 1.0f)), {0, 1, 1}, "pot dx");

  // DoReFa activations: 1 on [0, 1].
  Quantizer d(activation_spec(QuantizerKind::dorefa, 4));
  const Tensor a({4}, {-0.1f, 0.0f, 1.0f, 1.5f});
  testing::expect_values(d.backward(a, Tensor::full({4}, 1.0f)), {0, 1, 1, 0}, "dorefa a dx");
}

TEST(QuantizerBackward, IdentitySteForBinaryTernaryAndFloat) {
  const Tensor w({4}, {0.3f, -5.0f, 0.0f, 1e-4f});
  const Tensor c({4}, {1.0f, -2.0f, 3.0f, -4.0f});
  for (const QuantizerSpec& spec : {weight_spec(QuantizerKind::binary, 1), weight_spec(QuantizerKind::ternary, 2),
                                    weight_spec(QuantizerKind::dorefa, 1),
                                    weight_spec(QuantizerKind::float_bypass, kFloatBits)}) {
    Quantizer q(spec);
    testing::expect_bitwise_equal(q.backward(w, c), c, describe(spec));
  }
}

TEST(QuantizerBackward, AccumulateScalesInputAndParameterGradients) {
  // backward_accumulate(weight) adds weight times what backward() computes, to dL/dx and to the
  // parameter gradients: what mixing candidates with strengths needs.
  const Tensor x = gaussian({2, 3, 4, 4}, 9, 1.0f);
  const Tensor c = gaussian(x.shape(), 10, 1.0f);
  for (const QuantizerSpec& spec : {activation_spec(QuantizerKind::lsq, 3, true), activation_spec(QuantizerKind::pact, 2),
                                    weight_spec(QuantizerKind::dorefa, 2, Granularity::per_channel, 2)}) {
    SCOPED_TRACE(describe(spec));
    Quantizer plain(spec), mixed(spec);
    plain.forward(x);
    mixed.forward(x);
    const Tensor g = plain.backward(x, c);
    Tensor acc = Tensor::full(x.shape(), 1.0f);
    mixed.backward_accumulate(x, c, 0.25f, acc);
    for (int64_t i = 0; i < x.numel(); ++i) ASSERT_NEAR(acc[i], 1.0f + 0.25f * g[i], 1e-6f) << i;
    for (std::size_t p = 0; p < plain.parameters().size(); ++p)
      for (int64_t j = 0; j < plain.parameters()[p]->grad.numel(); ++j)
        EXPECT_NEAR(mixed.parameters()[p]->grad[j], 0.25f * plain.parameters()[p]->grad[j], 1e-5f);
    // In place: the gradient buffer may be the output gradient itself.
    Quantizer again(spec);
    again.forward(x);
    Tensor in_place = c;
    again.backward(x, in_place, in_place);
    testing::expect_bitwise_equal(in_place, g, "in place");
  }
}

TEST(QuantizerBackward, MixingCandidatesAsTheEbsSearchDoes) {
  // One meta-weight, one LSQ quantizer per candidate bitwidth, outputs mixed with strengths p_k:
  // y = sum_k p_k Q_k(W). y is linear in p, so dL/dp_k = <dL/dy, Q_k(W)> (dot_output) must match
  // finite differences exactly up to rounding; dL/dW and the steps' gradients are the p-weighted
  // sums of the candidates' own backward passes.
  const Tensor w = gaussian({8, 3, 3, 3}, 12, 0.1f);
  const Tensor c = gaussian(w.shape(), 13, 1.0f);
  std::vector<Quantizer> candidates;
  for (int bits : {2, 3, 4}) candidates.emplace_back(weight_spec(QuantizerKind::lsq, bits, Granularity::per_channel, 8));
  const std::vector<float> p = {0.2f, 0.5f, 0.3f};
  const auto mixture_loss = [&](const std::vector<float>& strengths) {
    Tensor y = Tensor::zeros(w.shape());
    for (std::size_t k = 0; k < candidates.size(); ++k) candidates[k].forward_accumulate(w, strengths[k], y);
    double sum = 0.0;
    for (int64_t i = 0; i < y.numel(); ++i) sum += static_cast<double>(c[i]) * static_cast<double>(y[i]);
    return sum;
  };
  mixture_loss(p);  // initializes the steps
  Tensor gw = Tensor::zeros(w.shape());
  for (std::size_t k = 0; k < candidates.size(); ++k) {
    candidates[k].backward_accumulate(w, c, p[k], gw);
    std::vector<float> up = p, down = p;
    up[k] += 1e-2f;
    down[k] -= 1e-2f;
    const double fd = (mixture_loss(up) - mixture_loss(down)) / (static_cast<double>(up[k]) - static_cast<double>(down[k]));
    EXPECT_NEAR(candidates[k].dot_output(w, c), fd, 1e-4 * (1.0 + std::fabs(fd))) << "candidate " << k;
  }
  Tensor expected = Tensor::zeros(w.shape());
  for (std::size_t k = 0; k < candidates.size(); ++k) {
    Quantizer alone(candidates[k].spec());
    alone.parameters()[0]->value = candidates[k].parameters()[0]->value;
    alone.buffers()[0]->value[0] = 1.0f;
    const Tensor g = alone.backward(w, c);
    for (int64_t i = 0; i < w.numel(); ++i) expected[i] += p[k] * g[i];
    for (int64_t ch = 0; ch < 8; ++ch)
      EXPECT_NEAR(candidates[k].parameters()[0]->grad[ch], p[k] * alone.parameters()[0]->grad[ch], 1e-5f);
  }
  for (int64_t i = 0; i < w.numel(); ++i) ASSERT_NEAR(gw[i], expected[i], 1e-6f) << i;
}

TEST(QuantizerBackward, ShapesAreChecked) {
  Quantizer q(activation_spec(QuantizerKind::lsq, 4));
  const Tensor x({2, 3});
  EXPECT_THROW(q.backward(x, Tensor({3, 2})), ShapeError);
  Tensor wrong({5});
  EXPECT_THROW(q.backward_accumulate(x, Tensor({2, 3}), 1.0f, wrong), ShapeError);
  EXPECT_THROW(q.forward_accumulate(x, 1.0f, wrong), ShapeError);
}

}  // namespace
}  // namespace bitmix::quant
