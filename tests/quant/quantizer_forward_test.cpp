// Forward values of every quantizer kind on small cases computed by hand (the comments show the
// arithmetic), including ties, which must round half to even.

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/quant/quantizer.hpp"
#include "quant_test_util.hpp"

namespace bitmix::quant {
namespace {

using testing::expect_values;

std::vector<int32_t> codes_of(const Quantizer& q, const Tensor& x) { return q.quantize(x).codes; }

TEST(QuantizerForward, UniformAffineActivationRoundsHalfToEven) {
  // 2 bits, range [-0.5, 1]: scale = 1.5 / 3 = 0.5, zero point = 0 - round(-0.5 / 0.5) = 1,
  // so k = code - 1 in [-1, 2] and the levels are -0.5, 0, 0.5, 1.
  Quantizer q(activation_spec(QuantizerKind::uniform, 2));
  const float lo[] = {-0.5f}, hi[] = {1.0f};
  q.set_range(lo, hi);
  // x / 0.5 = -2, -0.6, -0.5 (tie -> 0), 0.2, 0.5 (tie -> 0), 1.5 (tie -> 2), 1.6, 6
  const Tensor x({8}, {-1.0f, -0.3f, -0.25f, 0.1f, 0.25f, 0.75f, 0.8f, 3.0f});
  expect_values(q.forward(x), {-0.5f, -0.5f, 0.0f, 0.0f, 0.0f, 1.0f, 1.0f, 1.0f}, "uniform a2");
  EXPECT_EQ(codes_of(q, x), (std::vector<int32_t>{0, 0, 1, 1, 1, 3, 3, 3}));
  const QuantParams p = q.params();
  EXPECT_EQ(p.encoding, CodeEncoding::unsigned_int);
  EXPECT_EQ(p.scales, std::vector<float>{0.5f});
  EXPECT_EQ(p.zero_points, std::vector<int32_t>{1});
}

TEST(QuantizerForward, UniformAffineWeightsAreSignedCodes) {
  // 3 bits, weights from the tensor: range [-1, 2.5] -> scale 3.5 / 7 = 0.5,
  // zero point = -4 - round(-1 / 0.5) = -2, k in [-2, 5].
  Quantizer q(weight_spec(QuantizerKind::uniform, 3));
  const Tensor x({6}, {-1.0f, 2.5f, 0.2f, 0.3f, 1.26f, -0.74f});
  // x / 0.5 = -2, 5, 0.4, 0.6, 2.52, -1.48
  expect_values(q.forward(x), {-1.0f, 2.5f, 0.0f, 0.5f, 1.5f, -0.5f}, "uniform w3");
  EXPECT_EQ(codes_of(q, x), (std::vector<int32_t>{-4, 3, -2, -1, 1, -3}));
  EXPECT_EQ(q.params(x).encoding, CodeEncoding::twos_complement);
  EXPECT_EQ(q.params(x).zero_points, std::vector<int32_t>{-2});
}

TEST(QuantizerForward, SymmetricWeightsUseTheRestrictedRange) {
  // 3 bits: levels k * a / 3 for k in [-3, 3]; a = max|x| = 1.5 -> scale 0.5.
  Quantizer q(weight_spec(QuantizerKind::symmetric, 3));
  const Tensor x({8}, {1.5f, -0.75f, 0.25f, -0.2f, 0.6f, 0.0f, -1.5f, 1.0f});
  // x / 0.5 = 3, -1.5 (tie -> -2), 0.5 (tie -> 0), -0.4, 1.2, 0, -3, 2
  expect_values(q.forward(x), {1.5f, -1.0f, 0.0f, 0.0f, 0.5f, 0.0f, -1.5f, 1.0f}, "symmetric w3");
  EXPECT_EQ(codes_of(q, x), (std::vector<int32_t>{3, -2, 0, 0, 1, 0, -3, 2}));
  const QuantParams p = q.params(x);
  EXPECT_EQ(p.min_code, -3);
  EXPECT_EQ(p.max_code, 3);
  EXPECT_EQ(p.zero_points, std::vector<int32_t>{0});
}

TEST(QuantizerForward, SymmetricActivations) {
  // Unsigned 2 bits: levels k * 3 / 3 = k for k in [0, 3] (range from the batch: max 3).
  Quantizer q(activation_spec(QuantizerKind::symmetric, 2));
  const Tensor x({6}, {-1.0f, 0.5f, 1.5f, 2.49f, 3.0f, 0.2f});
  expect_values(q.forward(x), {0.0f, 0.0f, 2.0f, 2.0f, 3.0f, 0.0f}, "symmetric a2");
  // Signed 3 bits: levels k * 1.5 / 3 for k in [-3, 3], exported as code k + 4 with zero point 4.
  Quantizer s(activation_spec(QuantizerKind::symmetric, 3, /*signed_activations=*/true));
  const Tensor y({4}, {-1.5f, -0.6f, 0.7f, 1.2f});
  expect_values(s.forward(y), {-1.5f, -0.5f, 0.5f, 1.0f}, "symmetric a3 signed");
  EXPECT_EQ(codes_of(s, y), (std::vector<int32_t>{1, 3, 5, 6}));
  EXPECT_EQ(s.params().zero_points, std::vector<int32_t>{4});
}

TEST(QuantizerForward, DorefaActivationsClipToUnitInterval) {
  // 2 bits: k = round(3 * clip(x, 0, 1)), y = k / 3.
  // 3x = -1.5, 0.3, 0.6, 1.5 (tie -> 2), 2.7, 5.1
  Quantizer q(activation_spec(QuantizerKind::dorefa, 2));
  const Tensor x({6}, {-0.5f, 0.1f, 0.2f, 0.5f, 0.9f, 1.7f});
  expect_values(q.forward(x), {0.0f, 0.0f, 1.0f / 3, 2.0f / 3, 1.0f, 1.0f}, "dorefa a2");
  EXPECT_EQ(codes_of(q, x), (std::vector<int32_t>{0, 0, 1, 2, 3, 3}));
}

TEST(QuantizerForward, DorefaWeightsFollowThePaperFormula) {
  // 2 bits: w_q = 2 round(3 r) / 3 - 1, r = tanh(w) / (2 max|tanh(w)|) + 1/2.
  //   w = 0.5: r = 0.7397, 3r = 2.219 -> 2 -> 1/3
  //   w = -1 : r = 0.1050, 3r = 0.315 -> 0 -> -1
  //   w = 0.1: r = 0.5517, 3r = 1.655 -> 2 -> 1/3
  //   w = 2  : r = 1,      3r = 3     -> 3 -> 1
  Quantizer q(weight_spec(QuantizerKind::dorefa, 2));
  const Tensor x({4}, {0.5f, -1.0f, 0.1f, 2.0f});
  expect_values(q.forward(x), {1.0f / 3, -1.0f, 1.0f / 3, 1.0f}, "dorefa w2");
  EXPECT_EQ(codes_of(q, x), (std::vector<int32_t>{1, -3, 1, 3}));  // odd levels c / 3
  EXPECT_EQ(q.params(x).encoding, CodeEncoding::odd_levels);
  // 1 bit (the paper's special case): sign(w) * E|w| = sign(w) * 0.9
  Quantizer b(weight_spec(QuantizerKind::dorefa, 1));
  expect_values(b.forward(x), {0.9f, -0.9f, 0.9f, 0.9f}, "dorefa w1");
}

TEST(QuantizerForward, PactClipsAtAlpha) {
  // alpha = 3, 2 bits: scale 1, y = round(clip(x, 0, 3)).
  Quantizer q(activation_spec(QuantizerKind::pact, 2));
  q.parameters()[0]->value[0] = 3.0f;
  const Tensor x({7}, {-1.0f, 0.4f, 0.5f, 1.5f, 2.6f, 3.0f, 10.0f});
  expect_values(q.forward(x), {0.0f, 0.0f, 0.0f, 2.0f, 3.0f, 3.0f, 3.0f}, "pact a2");
  EXPECT_EQ(q.params().scales, std::vector<float>{1.0f});
}

TEST(QuantizerForward, LsqRoundsOnTheStepGrid) {
  // 3-bit weights: Q_N = 4, Q_P = 3, step 0.5 (set_range(-2, 1.5) asks for max(1.5/3, 2/4)).
  Quantizer q(weight_spec(QuantizerKind::lsq, 3));
  const float lo[] = {-2.0f}, hi[] = {1.5f};
  q.set_range(lo, hi);
  EXPECT_EQ(q.parameters()[0]->value[0], 0.5f);
  // x / 0.5 = -6, -4.2, -1.5 (tie -> -2), 0.5 (tie -> 0), 0.52, 2.5 (tie -> 2), 3.2, 10
  const Tensor x({8}, {-3.0f, -2.1f, -0.75f, 0.25f, 0.26f, 1.25f, 1.6f, 5.0f});
  expect_values(q.forward(x), {-2.0f, -2.0f, -1.0f, 0.0f, 0.5f, 1.0f, 1.5f, 1.5f}, "lsq w3");
  EXPECT_EQ(codes_of(q, x), (std::vector<int32_t>{-4, -4, -2, 0, 1, 2, 3, 3}));
}

TEST(QuantizerForward, LsqInitializesTheStepFromTheFirstBatch) {
  // s = 2 mean|x| / sqrt(Q_P): 4-bit weights, Q_P = 7, mean|x| = 2.5.
  Quantizer q(weight_spec(QuantizerKind::lsq, 4));
  EXPECT_THROW(q.params(), ArgumentError);  // not initialized yet
  const Tensor x({4}, {1.0f, -2.0f, 3.0f, -4.0f});
  q.forward(x);
  EXPECT_FLOAT_EQ(q.parameters()[0]->value[0], static_cast<float>(5.0 / std::sqrt(7.0)));
  EXPECT_EQ(q.buffers()[0]->value[0], 1.0f);
  // A later batch does not re-initialize.
  q.forward(Tensor({2}, {100.0f, -100.0f}));
  EXPECT_FLOAT_EQ(q.parameters()[0]->value[0], static_cast<float>(5.0 / std::sqrt(7.0)));
  // Unsigned 2-bit activations: Q_P = 3; per-channel weights: one step per channel.
  Quantizer a(activation_spec(QuantizerKind::lsq, 2));
  a.forward(Tensor({2, 2}, {0.0f, 1.0f, 2.0f, 3.0f}));
  EXPECT_FLOAT_EQ(a.parameters()[0]->value[0], static_cast<float>(2.0 * 1.5 / std::sqrt(3.0)));
  Quantizer c(weight_spec(QuantizerKind::lsq, 2, Granularity::per_channel, 2));
  c.forward(Tensor({2, 2}, {1.0f, -1.0f, 3.0f, 5.0f}));
  EXPECT_FLOAT_EQ(c.parameters()[0]->value[0], 2.0f);   // 2 * 1 / sqrt(1)
  EXPECT_FLOAT_EQ(c.parameters()[0]->value[1], 8.0f);   // 2 * 4 / sqrt(1)
}

TEST(QuantizerForward, LsqOneBitWeightsAreSignTimesStep) {
  Quantizer q(weight_spec(QuantizerKind::lsq, 1));
  const Tensor x({4}, {0.5f, -1.5f, 0.0f, 2.0f});
  expect_values(q.forward(x), {1.0f, -1.0f, 1.0f, 1.0f}, "lsq w1");  // step = mean|x| = 1
  EXPECT_EQ(codes_of(q, x), (std::vector<int32_t>{1, -1, 1, 1}));
}

TEST(QuantizerForward, SawbUsesThePublishedTwoBitConstants) {
  // E|w| = 13/8, E[w^2] = 28.5/8: alpha = 3.12 sqrt(3.5625) - 2.064 * 1.625 = 2.5352...,
  // levels +-alpha/3, +-alpha; the boundary between them is at 2 alpha / 3 = 1.69.
  Quantizer q(weight_spec(QuantizerKind::sawb, 2));
  const Tensor x({8}, {1.0f, -1.0f, 2.0f, -2.0f, 0.5f, -0.5f, 3.0f, -3.0f});
  const double alpha = 3.12 * std::sqrt(28.5 / 8.0) - 2.064 * 13.0 / 8.0;
  const auto a = static_cast<float>(alpha), s = static_cast<float>(alpha / 3.0);
  expect_values(q.forward(x), {s, -s, a, -a, s, -s, a, -a}, "sawb w2");
  EXPECT_EQ(codes_of(q, x), (std::vector<int32_t>{1, -1, 3, -3, 1, -1, 3, -3}));
  // 4 bits: alpha = 12.68 rms - 12.80 E|w|, here below E|w| and so raised to E|w| = 1.
  Quantizer q4(weight_spec(QuantizerKind::sawb, 4));
  const Tensor y({4}, {1.0f, -1.0f, 1.0f, -1.0f});
  expect_values(q4.forward(y), {1.0f, -1.0f, 1.0f, -1.0f}, "sawb w4");
}

TEST(QuantizerForward, PowerOfTwoLevels) {
  // 3 bits: 3 exponents; max|x| = 0.9 is nearest 2^0, so the levels are 0, +-1/4, +-1/2, +-1.
  Quantizer q(weight_spec(QuantizerKind::pot, 3));
  const Tensor x({7}, {0.9f, -0.3f, 0.1f, 0.125f, -0.6f, 0.2f, 0.75f});
  // 0.3 -> 1/4 (below 3/8), 0.1 -> 0 (below 1/8), 0.125 -> 1/4 (tie goes up, as INQ),
  // 0.6 -> 1/2 (below 3/4), 0.2 -> 1/4, 0.75 -> 1 (tie goes up)
  expect_values(q.forward(x), {1.0f, -0.25f, 0.0f, 0.25f, -0.5f, 0.25f, 1.0f}, "pot w3");
  EXPECT_EQ(codes_of(q, x), (std::vector<int32_t>{4, -1, 0, 1, -2, 1, 4}));
  const QuantParams p = q.params(x);
  EXPECT_EQ(p.code_bits, 4);  // codes up to +-4 need 4 two's complement bits
  EXPECT_EQ(p.scales, std::vector<float>{0.25f});
  // max|x| = 0.7 is nearer 2^-1: levels 0, +-1/8, +-1/4, +-1/2.
  expect_values(q.forward(Tensor({2}, {0.7f, 0.1f})), {0.5f, 0.125f}, "pot w3 top 1/2");
}

TEST(QuantizerForward, BinaryAndTernary) {
  Quantizer b(weight_spec(QuantizerKind::binary, 1));
  const Tensor x({4}, {0.5f, -1.5f, 0.0f, 2.0f});  // alpha = mean|x| = 1, sign(0) = +1
  expect_values(b.forward(x), {1.0f, -1.0f, 1.0f, 1.0f}, "binary");
  EXPECT_EQ(b.params(x).encoding, CodeEncoding::odd_levels);
  // TWN: delta = 0.7 * mean|x| = 0.7 * 4.3 / 6 = 0.5017; alpha = mean(1, 1, 2) = 4/3.
  Quantizer t(weight_spec(QuantizerKind::ternary, 2));
  const Tensor y({6}, {1.0f, -1.0f, 0.2f, -0.1f, 2.0f, 0.0f});
  const float a = 4.0f / 3.0f;
  expect_values(t.forward(y), {a, -a, 0.0f, 0.0f, a, 0.0f}, "ternary");
  EXPECT_EQ(codes_of(t, y), (std::vector<int32_t>{1, -1, 0, 0, 1, 0}));
}

TEST(QuantizerForward, FloatBypassIsTheIdentity) {
  Quantizer q(weight_spec(QuantizerKind::float_bypass, kFloatBits));
  const Tensor x({3}, {0.123f, -4.5f, 1e-7f});
  testing::expect_bitwise_equal(q.forward(x), x, "float");
  EXPECT_THROW(q.quantize(x), ArgumentError);
}

TEST(QuantizerForward, PerChannelScalesFollowEachChannel) {
  // Symmetric 3-bit per output channel: channel 0 max 1.5 (scale 0.5), channel 1 max 3 (scale 1).
  Quantizer q(weight_spec(QuantizerKind::symmetric, 3, Granularity::per_channel, 2));
  const Tensor x({2, 3}, {1.5f, 0.7f, -0.2f, 3.0f, 0.7f, -1.6f});
  expect_values(q.forward(x), {1.5f, 0.5f, 0.0f, 3.0f, 1.0f, -2.0f}, "symmetric per channel");
  EXPECT_EQ(q.params(x).scales, (std::vector<float>{0.5f, 1.0f}));
  EXPECT_THROW(q.forward(Tensor({3, 2})), ShapeError);  // axis 0 must be the 2 channels
}

TEST(QuantizerForward, InPlaceAndAccumulate) {
  Quantizer q(weight_spec(QuantizerKind::symmetric, 3));
  Tensor x({4}, {1.5f, -0.7f, 0.2f, 0.6f});
  const Tensor expected = q.forward(x);
  Tensor y = Tensor::full({4}, 1.0f);
  q.forward_accumulate(x, 0.25f, y);  // y = 1 + Q(x) / 4
  for (int64_t i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(y[i], 1.0f + 0.25f * expected[i]);
  const Tensor g({4}, {1.0f, 2.0f, 3.0f, 4.0f});
  double dot = 0.0;
  for (int64_t i = 0; i < 4; ++i) dot += static_cast<double>(g[i]) * static_cast<double>(expected[i]);
  EXPECT_DOUBLE_EQ(q.dot_output(x, g), dot);
  q.forward(x, x);
  testing::expect_bitwise_equal(x, expected, "in place");
}

}  // namespace
}  // namespace bitmix::quant
