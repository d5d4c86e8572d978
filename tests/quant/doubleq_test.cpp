// DoubleQ: level one is max-scaled 8-bit symmetric; level two is exactly the power of two nearest
// each level-one code (checked against a brute-force search over the levels), exported exactly.

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/quant/quantizer.hpp"
#include "quant_test_util.hpp"

namespace bitmix::quant {
namespace {

using testing::gaussian;

// Level-one code of w as the forward computes it: q = round(clamp(w * (1 / s))), s = max|w| / 127.
std::vector<float> level_one_codes(const float* w, int64_t n) {
  float max_abs = 0.0f;
  for (int64_t i = 0; i < n; ++i) max_abs = std::max(max_abs, std::fabs(w[i]));
  const float inv = 1.0f / (max_abs / 127.0f);
  std::vector<float> q(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) q[static_cast<std::size_t>(i)] = std::nearbyint(std::clamp(w[i] * inv, -127.0f, 127.0f));
  return q;
}

// The level nearest |q| among 0 and 2^(8 - E), ..., 2^7 (ties to the larger; 0 only below half
// the smallest), by exhaustive comparison.
float nearest_level(float q, int exponents) {
  const float a = std::fabs(q);
  float best = 0.0f;
  float best_distance = a;
  for (int j = 8 - exponents; j <= 7; ++j) {
    const float level = std::ldexp(1.0f, j);
    const float d = std::fabs(a - level);
    if (d < best_distance || (d == best_distance && level > best)) {
      best = level;
      best_distance = d;
    }
  }
  return q < 0.0f ? -best : best;
}

TEST(DoubleQ, LevelOneIsMaxScaledEightBit) {
  Quantizer q(weight_spec(QuantizerKind::doubleq, 8));
  const Tensor w({4}, {1.27f, -0.5f, 0.01f, 0.005f});  // s = 0.01
  const QuantizedTensor e = q.quantize(w);
  EXPECT_EQ(e.codes, (std::vector<int32_t>{127, -50, 1, 0}));  // 0.5 rounds to even: 0
  EXPECT_NEAR(e.params.scales[0], 0.01f, 1e-9);
  EXPECT_EQ(e.params.code_bits, 8);
  testing::expect_bitwise_equal(e.dequantize(), q.forward(w), "level one");
}

TEST(DoubleQ, LevelTwoIsTheNearestPowerOfTwoOfEachLevelOneCode) {
  for (int bits : {2, 3, 4}) {
    const int exponents = (1 << (bits - 1)) - 1;
    for (Granularity g : {Granularity::per_tensor, Granularity::per_channel}) {
      const int64_t channels = 3;
      Quantizer q(weight_spec(QuantizerKind::doubleq, bits, g, g == Granularity::per_channel ? channels : 1));
      const Tensor w = gaussian({channels, 4, 3, 3}, 17 + static_cast<uint64_t>(bits), 0.1f);
      const QuantizedTensor e = q.quantize(w);
      const int64_t groups = g == Granularity::per_channel ? channels : 1;
      const int64_t per_group = w.numel() / groups;
      ASSERT_EQ(e.params.groups(), groups);
      EXPECT_EQ(e.params.code_bits, exponents + 1);
      for (int64_t k = 0; k < groups; ++k) {
        const std::vector<float> q8 = level_one_codes(w.data() + k * per_group, per_group);
        // scale = s * 2^(8 - E) with s = max|w| / 127.
        float max_abs = 0.0f;
        for (int64_t i = 0; i < per_group; ++i) max_abs = std::max(max_abs, std::fabs(w[k * per_group + i]));
        EXPECT_EQ(e.params.scales[static_cast<std::size_t>(k)], std::ldexp(max_abs / 127.0f, 8 - exponents));
        for (int64_t i = 0; i < per_group; ++i) {
          const int32_t code = e.codes[static_cast<std::size_t>(k * per_group + i)];
          const float expected = nearest_level(q8[static_cast<std::size_t>(i)], exponents);
          ASSERT_EQ(std::ldexp(static_cast<float>(code), 8 - exponents), expected)
              << bits << " bits, group " << k << " element " << i << " level-one code " << q8[static_cast<std::size_t>(i)];
        }
      }
      testing::expect_bitwise_equal(e.dequantize(), q.forward(w), "level two: export == forward");
      // The identity STE.
      const Tensor grad = gaussian(w.shape(), 3);
      testing::expect_bitwise_equal(q.backward(w, grad), grad, "backward");
    }
  }
}

TEST(DoubleQ, RefusesBitsWithoutALevel) {
  for (int bits : {1, 5, 6, 7}) EXPECT_THROW(validate(weight_spec(QuantizerKind::doubleq, bits)), ArgumentError) << bits;
  EXPECT_THROW(validate(activation_spec(QuantizerKind::doubleq, 8)), ArgumentError);
}

}  // namespace
}  // namespace bitmix::quant
