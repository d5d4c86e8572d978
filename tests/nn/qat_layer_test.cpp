// The QAT adapter inside a layer: a Conv2d/Linear with QuantizerTransforms computes exactly what
// the plain layer computes on tensors quantized by hand, its gradients are the hand-composed
// chain (layer backward, then each quantizer's backward), the learnable parameters' gradients
// match finite differences where the function is differentiable in them, the input gradient
// follows the STE rule, and the training mode reaches the quantizers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/nn/functional.hpp"
#include "bitmix/nn/layers.hpp"
#include "bitmix/nn/quantization.hpp"
#include "nn/gradcheck.hpp"

namespace bitmix::nn {
namespace {

using quant::Granularity;
using quant::QuantizerKind;
using quant::QuantizerSpec;
using testing::projected;
using testing::random_tensor;

void expect_bitwise_equal(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  int64_t differing = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (std::memcmp(a.data() + i, b.data() + i, sizeof(float)) != 0 && ++differing <= 3)
      ADD_FAILURE() << what << "[" << i << "]: " << a[i] << " vs " << b[i];
  EXPECT_EQ(differing, 0) << what;
}

// Input activations as a quantized layer sees them: mostly post-ReLU values, some exact zeros.
Tensor activations(const Shape& shape, Rng& rng, bool with_negatives) {
  Tensor t(shape);
  for (float& v : t.values()) {
    v = rng.uniform(with_negatives ? -2.0f : -0.5f, 2.0f);
    if (!with_negatives && v < 0.0f) v = 0.0f;
  }
  return t;
}

struct Case {
  const char* name;
  QuantizerKind w_kind;
  int w_bits;
  Granularity granularity;
  QuantizerKind a_kind;
  int a_bits;
  bool signed_input;
};

class QatLayer : public ::testing::TestWithParam<Case> {};

// Conv2d: the QAT layer against the plain layer fed Q_a(x) and Q_w(w) computed by hand, forward
// and backward, bit for bit.
TEST_P(QatLayer, ConvIsThePlainLayerOnHandQuantizedTensors) {
  const Case c = GetParam();
  Rng rng(7);
  const Conv2dOptions options = Conv2dOptions::square(3, 5, 3, /*stride=*/1, /*padding=*/1, 1, /*bias=*/true);
  Conv2d qat(options, rng);
  for (float& b : qat.bias()->value.values()) b = rng.uniform(-0.1f, 0.1f);
  Conv2d plain(options, rng);
  plain.bias()->value = qat.bias()->value;

  const QuantizerSpec w_spec = quant::weight_spec(c.w_kind, c.w_bits, c.granularity, 5);
  const QuantizerSpec a_spec = quant::activation_spec(c.a_kind, c.a_bits, c.signed_input);
  qat.set_weight_transform(std::make_unique<QuantizerTransform>(w_spec));
  qat.set_input_transform(std::make_unique<QuantizerTransform>(a_spec));
  quant::Quantizer w_hand(w_spec), a_hand(a_spec);

  const Tensor x = activations({2, 3, 6, 6}, rng, c.signed_input);
  const Tensor y = qat.forward(x);

  // By hand: quantize (the first call initializes data-driven state the same way), then the
  // plain layer.
  const Tensor qx = a_hand.forward(x);
  plain.weight().value = w_hand.forward(qat.weight().value);
  const Tensor& y_ref = plain.forward(qx);
  expect_bitwise_equal(y, y_ref, std::string(c.name) + " forward");
  expect_bitwise_equal(qat.effective_weight(), plain.weight().value, std::string(c.name) + " effective weight");

  // Backward: plain layer, then each quantizer's backward.
  const Tensor dy = random_tensor(y.shape(), rng);
  qat.zero_grad();
  const Tensor dx = qat.backward(dy);
  plain.zero_grad();
  const Tensor dqx = plain.backward(dy);
  const Tensor dx_ref = a_hand.backward(x, dqx);
  const Tensor dw_ref = w_hand.backward(qat.weight().value, plain.weight().grad);
  expect_bitwise_equal(dx, dx_ref, std::string(c.name) + " input gradient");
  expect_bitwise_equal(qat.weight().grad, dw_ref, std::string(c.name) + " weight gradient");
  expect_bitwise_equal(qat.bias()->grad, plain.bias()->grad, std::string(c.name) + " bias gradient");

  // The quantizers' own parameters got the hand-computed gradients, under the adapter's names.
  auto* wt = dynamic_cast<QuantizerTransform*>(qat.weight_transform());
  auto* at = dynamic_cast<QuantizerTransform*>(qat.input_transform());
  ASSERT_NE(wt, nullptr);
  ASSERT_NE(at, nullptr);
  const auto hand_w = w_hand.parameters(), hand_a = a_hand.parameters();
  const auto got_w = wt->parameters(), got_a = at->parameters();
  ASSERT_EQ(got_w.size(), hand_w.size());
  ASSERT_EQ(got_a.size(), hand_a.size());
  for (std::size_t i = 0; i < got_w.size(); ++i) expect_bitwise_equal(got_w[i]->grad, hand_w[i]->grad, "weight quantizer grad");
  for (std::size_t i = 0; i < got_a.size(); ++i) expect_bitwise_equal(got_a[i]->grad, hand_a[i]->grad, "input quantizer grad");
}

// Linear, same comparison (fc layers see pooled post-ReLU features).
TEST_P(QatLayer, LinearIsThePlainLayerOnHandQuantizedTensors) {
  const Case c = GetParam();
  Rng rng(8);
  Linear qat(12, 4, /*bias=*/true, rng);
  Linear plain(12, 4, true, rng);
  plain.bias()->value = qat.bias()->value;
  const QuantizerSpec w_spec = quant::weight_spec(c.w_kind, c.w_bits, c.granularity, 4);
  const QuantizerSpec a_spec = quant::activation_spec(c.a_kind, c.a_bits, c.signed_input);
  qat.set_weight_transform(std::make_unique<QuantizerTransform>(w_spec));
  qat.set_input_transform(std::make_unique<QuantizerTransform>(a_spec));
  quant::Quantizer w_hand(w_spec), a_hand(a_spec);

  const Tensor x = activations({3, 12}, rng, c.signed_input);
  const Tensor y = qat.forward(x);
  const Tensor qx = a_hand.forward(x);
  plain.weight().value = w_hand.forward(qat.weight().value);
  expect_bitwise_equal(y, plain.forward(qx), std::string(c.name) + " forward");

  const Tensor dy = random_tensor(y.shape(), rng);
  qat.zero_grad();
  const Tensor dx = qat.backward(dy);
  plain.zero_grad();
  const Tensor dqx = plain.backward(dy);
  expect_bitwise_equal(dx, a_hand.backward(x, dqx), std::string(c.name) + " input gradient");
  expect_bitwise_equal(qat.weight().grad, w_hand.backward(qat.weight().value, plain.weight().grad),
                       std::string(c.name) + " weight gradient");
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, QatLayer,
    ::testing::Values(Case{"lsq_w3_pc_a4", QuantizerKind::lsq, 3, Granularity::per_channel, QuantizerKind::lsq, 4, false},
                      Case{"lsq_w8_a8_signed", QuantizerKind::lsq, 8, Granularity::per_tensor, QuantizerKind::lsq, 8, true},
                      Case{"lsq_w2_a2", QuantizerKind::lsq, 2, Granularity::per_tensor, QuantizerKind::lsq, 2, false},
                      Case{"dorefa_pact_4", QuantizerKind::dorefa, 4, Granularity::per_channel, QuantizerKind::pact, 4, false},
                      Case{"sawb_pact_2", QuantizerKind::sawb, 2, Granularity::per_channel, QuantizerKind::pact, 2, false},
                      Case{"uniform_5", QuantizerKind::uniform, 5, Granularity::per_channel, QuantizerKind::uniform, 5, false},
                      Case{"symmetric_signed_4", QuantizerKind::symmetric, 4, Granularity::per_tensor,
                           QuantizerKind::symmetric, 4, true},
                      Case{"dorefa_dorefa_3", QuantizerKind::dorefa, 3, Granularity::per_tensor, QuantizerKind::dorefa, 3, false},
                      Case{"binary_lsq", QuantizerKind::binary, 1, Granularity::per_channel, QuantizerKind::lsq, 3, false},
                      Case{"ternary_lsq", QuantizerKind::ternary, 2, Granularity::per_tensor, QuantizerKind::lsq, 2, false},
                      Case{"pot_lsq", QuantizerKind::pot, 4, Granularity::per_channel, QuantizerKind::lsq, 4, false}),
    [](const ::testing::TestParamInfo<Case>& param_info) { return std::string(param_info.param.name); });

// ---- Learnable parameters against finite differences, where the function is differentiable in
// them: LSQ's y = s * clip(round(x / s), -Q_N, Q_P) is s * Q_P (or -s * Q_N) for every element
// beyond the grid, a linear function of s; elsewhere round() makes it piecewise constant and LSQ
// uses its straight-through rule instead (tested below).

// Weights all beyond the grid: dL/ds of the layer's loss, divided by LSQ's gradient scale
// g = 1 / sqrt(N * Q_P) (N = weights per output channel), equals the finite difference.
TEST(QatGradients, LsqWeightStepMatchesFiniteDifferencesWhereClipped) {
  Rng rng(3);
  const Conv2dOptions options = Conv2dOptions::square(2, 3, 3, 1, 1);
  Conv2d conv(options, rng);
  const int bits = 3;  // Q_N = 4, Q_P = 3
  conv.set_weight_transform(
      std::make_unique<QuantizerTransform>(quant::weight_spec(QuantizerKind::lsq, bits, Granularity::per_channel, 3)));
  auto& q = dynamic_cast<QuantizerTransform&>(*conv.weight_transform());
  // |w| in [1, 2], steps of 0.1 .. 0.2: every |w| / s >= 5 > Q_P.
  for (float& w : conv.weight().value.values()) w = (rng.uniform() < 0.5f ? -1.0f : 1.0f) * rng.uniform(1.0f, 2.0f);
  Parameter& step = *q.parameters().at(0);
  ASSERT_EQ(step.name, "step");
  ASSERT_EQ(step.value.shape(), (Shape{3}));
  step.value[0] = 0.1f;
  step.value[1] = 0.15f;
  step.value[2] = 0.2f;
  q.buffers().at(0)->value.fill(1.0f);  // "initialized": keep these steps

  const Tensor x = random_tensor({2, 2, 5, 5}, rng);
  const Tensor r = random_tensor(conv.output_shape(x.shape()), rng);
  conv.zero_grad();
  conv.forward(x);
  conv.backward(r);
  const double n_per_channel = 2 * 3 * 3, q_pos = 3;
  Tensor unscaled = step.grad;
  for (float& g : unscaled.values()) g = static_cast<float>(double{g} * std::sqrt(n_per_channel * q_pos));
  testing::GradCheckOptions opts;
  opts.eps = 1e-3f;  // small enough that no weight re-enters the grid
  testing::expect_gradient("lsq weight step", step.value, unscaled, [&] { return projected(conv.forward(x), r); }, opts);
}

// Activations all beyond the grid or at zero (ReLU zeros stay zero for any s): same check for
// the activation step, whose gradient scale uses N = features per example (LSQ's N_F).
TEST(QatGradients, LsqActivationStepMatchesFiniteDifferencesWhereClipped) {
  Rng rng(4);
  Linear fc(6, 3, true, rng);
  const int bits = 2;  // unsigned: Q_P = 3
  fc.set_input_transform(std::make_unique<QuantizerTransform>(quant::activation_spec(QuantizerKind::lsq, bits)));
  auto& q = dynamic_cast<QuantizerTransform&>(*fc.input_transform());
  Parameter& step = *q.parameters().at(0);
  step.value[0] = 0.25f;
  q.buffers().at(0)->value.fill(1.0f);
  Tensor x({4, 6});
  for (float& v : x.values()) v = rng.uniform() < 0.3f ? 0.0f : rng.uniform(1.0f, 3.0f);  // v/s >= 4 > Q_P
  const Tensor r = random_tensor({4, 3}, rng);
  fc.zero_grad();
  fc.forward(x);
  fc.backward(r);
  Tensor unscaled = step.grad;
  unscaled[0] = static_cast<float>(double{unscaled[0]} * std::sqrt(6.0 * 3.0));
  testing::GradCheckOptions opts;
  opts.eps = 1e-3f;
  testing::expect_gradient("lsq activation step", step.value, unscaled, [&] { return projected(fc.forward(x), r); },
                           opts);
}

// PACT: y = alpha for x >= alpha, 0 for x <= 0; with inputs only there, L is linear in alpha and
// dL/dalpha (PACT's rule: the gradient where x >= alpha) equals the finite difference.
TEST(QatGradients, PactAlphaMatchesFiniteDifferencesWhereClipped) {
  Rng rng(5);
  Conv2d conv(Conv2dOptions::square(2, 2, 3, 1, 1), rng);
  conv.set_input_transform(std::make_unique<QuantizerTransform>(quant::activation_spec(QuantizerKind::pact, 3)));
  auto& q = dynamic_cast<QuantizerTransform&>(*conv.input_transform());
  Parameter& alpha = *q.parameters().at(0);
  ASSERT_EQ(alpha.name, "alpha");
  alpha.value[0] = 1.5f;
  Tensor x({2, 2, 4, 4});
  for (float& v : x.values()) v = rng.uniform() < 0.4f ? -rng.uniform(0.0f, 1.0f) : rng.uniform(2.0f, 4.0f);
  const Tensor r = random_tensor(conv.output_shape(x.shape()), rng);
  conv.zero_grad();
  conv.forward(x);
  conv.backward(r);
  testing::expect_gradient("pact alpha", alpha.value, alpha.grad, [&] { return projected(conv.forward(x), r); });
}

// Inside the grid the rounding has derivative 0 almost everywhere, so LSQ's input gradient is the
// straight-through rule: dL/dx = dL/dQ(x) where -Q_N < x/s < Q_P, else 0. dL/dQ(x) is the plain
// layer's input gradient at the quantized input.
TEST(QatGradients, InputGradientIsTheStraightThroughRule) {
  Rng rng(6);
  Linear fc(10, 4, false, rng);
  const int bits = 3;  // signed: Q_N = 4, Q_P = 3
  fc.set_input_transform(
      std::make_unique<QuantizerTransform>(quant::activation_spec(QuantizerKind::lsq, bits, /*signed=*/true)));
  auto& q = dynamic_cast<QuantizerTransform&>(*fc.input_transform());
  const float s = 0.5f;
  q.parameters().at(0)->value[0] = s;
  q.buffers().at(0)->value.fill(1.0f);
  const Tensor x = random_tensor({5, 10}, rng, -3.0f, 3.0f);  // v in [-6, 6]: both sides clip
  const Tensor dy = random_tensor({5, 4}, rng);
  fc.forward(x);
  const Tensor dx = fc.backward(dy);
  // By hand: Q(x) = s * clamp(nearbyint(x / s), -4, 3); the plain layer's input gradient there.
  Tensor qx(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) qx[i] = s * std::clamp(std::nearbyint(x[i] / s), -4.0f, 3.0f);
  Linear plain(10, 4, false, rng);
  plain.weight().value = fc.weight().value;
  plain.forward(qx);
  const Tensor dqx = plain.backward(dy);
  int inside = 0, outside = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float v = x[i] / s;
    const bool pass = v > -4.0f && v < 3.0f;
    (pass ? inside : outside)++;
    EXPECT_EQ(dx[i], pass ? dqx[i] : 0.0f) << "element " << i << " (x/s = " << v << ")";
  }
  EXPECT_GT(inside, 10);
  EXPECT_GT(outside, 5);
}

// ---- Modes and bypass.

TEST(QatTransform, TrainingModeReachesTheQuantizer) {
  Rng rng(9);
  Conv2d conv(Conv2dOptions::square(1, 2, 3, 1, 1), rng);
  conv.set_input_transform(std::make_unique<QuantizerTransform>(quant::activation_spec(QuantizerKind::uniform, 4)));
  auto& q = dynamic_cast<QuantizerTransform&>(*conv.input_transform());
  EXPECT_TRUE(q.quantizer().training());
  conv.eval();
  EXPECT_FALSE(q.training());
  EXPECT_FALSE(q.quantizer().training());
  // Evaluation freezes the range observer: a first forward initializes it, later ones keep it.
  conv.forward(activations({1, 1, 4, 4}, rng, false));
  const Tensor range = q.buffers().at(1)->value;  // range_max
  Tensor big = activations({1, 1, 4, 4}, rng, false);
  for (float& v : big.values()) v *= 10.0f;
  conv.forward(big);
  expect_bitwise_equal(q.buffers().at(1)->value, range, "frozen range_max");
  conv.train();
  EXPECT_TRUE(q.quantizer().training());
  conv.forward(big);
  EXPECT_GT(q.buffers().at(1)->value[0], range[0]);  // the moving average follows the data again
}

TEST(QatTransform, KindNamesAndBypass) {
  QuantizerTransform t(quant::weight_spec(QuantizerKind::sawb, 2));
  EXPECT_EQ(t.kind(), "sawb");
  EXPECT_EQ(t.spec().bits, 2);
  EXPECT_TRUE(t.parameters().empty());
  Rng rng(1);
  const Tensor w = random_tensor({4, 3}, rng);
  t.set_bypass(true);
  EXPECT_EQ(&t.forward(w), &w);
  const Tensor g = random_tensor({4, 3}, rng);
  EXPECT_EQ(&t.backward(w, g), &g);
  t.set_bypass(false);
  expect_bitwise_equal(t.forward(w), quant::Quantizer(quant::weight_spec(QuantizerKind::sawb, 2)).forward(w), "sawb");
  EXPECT_THROW(t.begin_observation({}), ArgumentError);  // sawb takes no range
  EXPECT_THROW(QuantizerTransform(quant::weight_spec(QuantizerKind::pact, 4)), ArgumentError);
}

}  // namespace
}  // namespace bitmix::nn
