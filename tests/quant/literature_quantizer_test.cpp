// SYQ and DSConv weight quantizers: forward and export against values computed by hand, the
// backward against the paper's rule and (for SYQ's learned scale, which the output depends on
// smoothly) finite differences.

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/quant/quantizer.hpp"
#include "quant_test_util.hpp"

namespace bitmix::quant {
namespace {

using testing::expect_values;
using testing::gaussian;

std::vector<int32_t> codes_of(const Quantizer& q, const Tensor& x) { return q.quantize(x).codes; }

double weighted_sum(Quantizer& q, const Tensor& x, const Tensor& c) {
  const Tensor y = q.forward(x);
  double s = 0.0;
  for (int64_t i = 0; i < x.numel(); ++i) s += static_cast<double>(c[i]) * static_cast<double>(y[i]);
  return s;
}

TEST(Syq, BinaryForwardIsTheLearnedScaleTimesTheSign) {
  Quantizer q(weight_spec(QuantizerKind::syq, 1, Granularity::per_channel, 2));
  // Channel 0: mean|w| = (0.5 + 1.5 + 0 + 2) / 4 = 1; channel 1: (0.1 + 0.3 + 0.2 + 0.2) / 4 = 0.2.
  const Tensor x({2, 4}, {0.5f, -1.5f, 0.0f, 2.0f, -0.1f, 0.3f, 0.2f, -0.2f});
  expect_values(q.forward(x), {1.0f, -1.0f, 1.0f, 1.0f, -0.2f, 0.2f, 0.2f, -0.2f}, "initialized scale");
  Parameter& scale = *q.parameters()[0];
  EXPECT_EQ(scale.name, "scale");
  EXPECT_FLOAT_EQ(scale.value[1], 0.2f);
  // The scale is learned: after initialization the forward uses its value, not mean|w|.
  scale.value[0] = 0.75f;
  expect_values(q.forward(x), {0.75f, -0.75f, 0.75f, 0.75f, -0.2f, 0.2f, 0.2f, -0.2f}, "set scale");
  EXPECT_EQ(codes_of(q, x), (std::vector<int32_t>{1, -1, 1, 1, -1, 1, 1, -1}));
  const QuantParams p = q.params(x);
  EXPECT_EQ(p.encoding, CodeEncoding::odd_levels);
  EXPECT_EQ(p.code_bits, 1);
  EXPECT_EQ(p.scales, (std::vector<float>{0.75f, 0.2f}));
  EXPECT_EQ(q.params().scales, p.scales);  // binary: no data-dependent threshold
}

TEST(Syq, TernaryDeadZoneIsFivePercentOfTheLargestWeight) {
  Quantizer q(weight_spec(QuantizerKind::syq, 2));
  // max|w| = 2, eta = 0.1: 0.09 and -0.1 fall in the dead zone (|w| > eta is strict).
  // Initial scale = mean|w| over |w| > eta = (2 + 0.5 + 0.11 + 1.39) / 4 = 1.
  const Tensor x({6}, {2.0f, -0.5f, 0.09f, -0.1f, 0.11f, -1.39f});
  expect_values(q.forward(x), {1.0f, -1.0f, 0.0f, 0.0f, 1.0f, -1.0f}, "ternary");
  EXPECT_EQ(codes_of(q, x), (std::vector<int32_t>{1, -1, 0, 0, 1, -1}));
  EXPECT_EQ(q.params(x).encoding, CodeEncoding::twos_complement);
  EXPECT_EQ(q.params(x).code_bits, 2);
  EXPECT_THROW(q.params(), ArgumentError);  // the threshold needs the weights
}

TEST(Syq, BackwardScalesTheNonzeroLevelsAndSumsTheScaleGradient) {
  Quantizer q(weight_spec(QuantizerKind::syq, 2, Granularity::per_channel, 2));
  const Tensor x({2, 4}, {2.0f, -0.05f, -1.0f, 0.5f, 0.4f, -0.01f, 0.3f, -0.2f});
  q.forward(x);
  Parameter& scale = *q.parameters()[0];
  scale.value[0] = 0.8f;
  scale.value[1] = 0.25f;
  const Tensor g({2, 4}, {0.5f, -2.0f, 1.0f, 3.0f, -1.0f, 4.0f, 2.0f, 0.5f});
  scale.zero_grad();
  const Tensor gx = q.backward(x, g);
  // Channel 0: eta = 0.1, levels (1, 0, -1, 1); channel 1: eta = 0.02, levels (1, 0, 1, -1).
  expect_values(gx, {0.8f * 0.5f, -2.0f, 0.8f * 1.0f, 0.8f * 3.0f, 0.25f * -1.0f, 4.0f, 0.25f * 2.0f, 0.25f * 0.5f},
                "dL/dw");
  EXPECT_FLOAT_EQ(scale.grad[0], 0.5f - 1.0f + 3.0f);
  EXPECT_FLOAT_EQ(scale.grad[1], -1.0f + 2.0f - 0.5f);
  // The output is linear in the scale: the gradient equals the finite difference exactly.
  const Tensor c = gaussian({2, 4}, 3);
  scale.zero_grad();
  q.backward(x, c);
  for (int64_t k = 0; k < 2; ++k) {
    const float saved = scale.value[k];
    scale.value[k] = saved + 0.01f;
    const double up = weighted_sum(q, x, c);
    scale.value[k] = saved - 0.01f;
    const double down = weighted_sum(q, x, c);
    scale.value[k] = saved;
    EXPECT_NEAR(static_cast<double>(scale.grad[k]), (up - down) / 0.02, 1e-4) << "channel " << k;
  }
  // backward_accumulate adds weight times the same gradients.
  Tensor acc = Tensor::full(x.shape(), 1.0f);
  scale.zero_grad();
  q.backward_accumulate(x, g, 0.5f, acc);
  EXPECT_FLOAT_EQ(acc[0], 1.0f + 0.5f * 0.8f * 0.5f);
  EXPECT_FLOAT_EQ(acc[1], 1.0f + 0.5f * -2.0f);
  EXPECT_FLOAT_EQ(scale.grad[0], 0.5f * 2.5f);
}

TEST(Syq, RefusesMoreThanTwoBitsAndActivations) {
  EXPECT_THROW(validate(weight_spec(QuantizerKind::syq, 3)), ArgumentError);
  EXPECT_THROW(validate(activation_spec(QuantizerKind::syq, 2)), ArgumentError);
}

TEST(DsConv, OneBlockPerOutputChannelIsMaxScaledCodesWithTheLeastSquaresShift) {
  // 3-bit codes in [-4, 3]; channel 0: max|w| = 0.6, s0 = 0.2: codes round(w / 0.2).
  QuantizerSpec spec = weight_spec(QuantizerKind::dsconv, 3, Granularity::per_channel, 1);
  Quantizer q(spec);
  const Tensor x({1, 2, 2}, {0.6f, -0.25f, 0.1f, 0.33f});
  // w / s0 = (3, -1.25, 0.5, 1.65) -> codes (3, -1, 0, 2) (0.5 rounds to even).
  EXPECT_EQ(codes_of(q, x), (std::vector<int32_t>{3, -1, 0, 2}));
  // xi = sum(w q) / sum(q^2) = (1.8 + 0.25 + 0 + 0.66) / (9 + 1 + 0 + 4) = 2.71 / 14.
  const float xi = static_cast<float>((0.6 * 3 + 0.25 + 0.33 * 2) / 14.0);
  const QuantParams p = q.params(x);
  ASSERT_EQ(p.scales.size(), 1u);
  EXPECT_NEAR(p.scales[0], xi, 1e-7);
  EXPECT_EQ(p.encoding, CodeEncoding::twos_complement);
  EXPECT_EQ(p.code_bits, 3);
  expect_values(q.forward(x), {3 * p.scales[0], -p.scales[0], 0.0f, 2 * p.scales[0]}, "forward = xi * q");
}

TEST(DsConv, BlocksOfInputChannelsGetTheirOwnShift) {
  // [O = 2, I = 4, 1, 2], block 2: four groups of 2 x 1 x 2 = 4 contiguous weights.
  QuantizerSpec spec = weight_spec(QuantizerKind::dsconv, 4, Granularity::per_channel, 2);
  spec.block_size = 2;
  Quantizer q(spec);
  Tensor x({2, 4, 1, 2});
  const float pattern[] = {1.0f, 3.0f, 5.0f, 8.0f};
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = 0.01f * pattern[i % 4] * static_cast<float>(1 + i / 4);
  const QuantizedTensor e = q.quantize(x);
  ASSERT_EQ(e.params.groups(), 4);
  // Group m (1-based) is (1, 3, 5, 8) * 0.01 m: s0 = 0.08 m / 7, codes round(7 k / 8) = (1, 3, 4, 7),
  // xi = 0.01 m (1 + 9 + 20 + 56) / (1 + 9 + 16 + 49) = 0.01 m * 86 / 75.
  const std::vector<int32_t> expected = {1, 3, 4, 7};
  for (int64_t g = 0; g < 4; ++g) {
    for (int64_t k = 0; k < 4; ++k)
      EXPECT_EQ(e.codes[static_cast<std::size_t>(4 * g + k)], expected[static_cast<std::size_t>(k)]) << g << " " << k;
    EXPECT_NEAR(e.params.scales[static_cast<std::size_t>(g)], 0.01 * static_cast<double>(g + 1) * 86.0 / 75.0, 1e-8);
  }
  testing::expect_bitwise_equal(e.dequantize(), q.forward(x), "export == forward");
  // A block size that does not divide the input channels is refused, naming both.
  spec.block_size = 3;
  Quantizer bad(spec);
  try {
    bad.forward(x);
    ADD_FAILURE() << "expected a ShapeError";
  } catch (const ShapeError& err) {
    EXPECT_NE(std::string(err.what()).find("block size 3"), std::string::npos) << err.what();
  }
}

TEST(DsConv, BackwardIsTheStraightThroughEstimator) {
  QuantizerSpec spec = weight_spec(QuantizerKind::dsconv, 2, Granularity::per_channel, 3);
  Quantizer q(spec);
  const Tensor x = gaussian({3, 4, 3, 3}, 7, 0.1f);
  const Tensor g = gaussian({3, 4, 3, 3}, 8);
  testing::expect_bitwise_equal(q.backward(x, g), g, "every weight lies inside the max-scaled range");
  EXPECT_TRUE(q.parameters().empty());
}

TEST(DsConv, RefusesPerTensorAndOneBit) {
  EXPECT_THROW(validate(weight_spec(QuantizerKind::dsconv, 4)), ArgumentError);
  EXPECT_THROW(validate(weight_spec(QuantizerKind::dsconv, 1, Granularity::per_channel, 2)), ArgumentError);
  QuantizerSpec spec = weight_spec(QuantizerKind::dsconv, 4, Granularity::per_channel, 2);
  spec.block_size = 0;
  EXPECT_THROW(validate(spec), ArgumentError);
}

}  // namespace
}  // namespace bitmix::quant
