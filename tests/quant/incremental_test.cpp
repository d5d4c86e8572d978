// INQ: the scheduled fraction is frozen exactly, largest magnitudes first, on power-of-two-or-zero
// codes of the given bits; frozen outputs never change while the latent weights move; export
// needs every weight frozen and then reproduces the forward exactly.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/quant/incremental.hpp"
#include "bitmix/quant/quantizer.hpp"
#include "quant_test_util.hpp"

namespace bitmix::quant {
namespace {

using testing::gaussian;

QuantizerSpec inq_spec(int bits, Granularity g, int64_t channels, int64_t numel) {
  QuantizerSpec s = weight_spec(QuantizerKind::inq, bits, g, channels);
  s.numel = numel;
  return s;
}

bool is_power_of_two_or_zero(int32_t code, int max_exponent) {
  const int32_t a = code < 0 ? -code : code;
  if (a == 0) return true;
  return (a & (a - 1)) == 0 && a <= (1 << max_exponent);
}

TEST(Inq, HandComputedFreezeOnThreeBits) {
  // 3 bits: E = 3 exponents. max|w| = 0.9 -> top level 2^0 = 1 (0.9 >= 0.75), levels
  // {0, +-1/4, +-1/2, +-1}, scale 1/4, codes {0, +-1, +-2, +-4}.
  Quantizer q(inq_spec(3, Granularity::per_tensor, 1, 6));
  Tensor w({6}, {0.9f, -0.3f, 0.05f, 0.6f, -0.14f, 0.2f});
  testing::expect_bitwise_equal(q.forward(w), w, "nothing frozen: the identity");
  // Half: the 3 largest |w| (0.9, 0.6, 0.3) are frozen at 1, 1/2 (0.6 is nearer 1/2 than 1), -1/4
  // (0.3: nearer 1/4 than 1/2).
  const InqFreezeReport r = inq_freeze(q, w, 0.5);
  EXPECT_EQ(r.newly_frozen, 3);
  EXPECT_EQ(r.frozen, 3);
  testing::expect_values(q.forward(w), {1.0f, -0.25f, 0.05f, 0.5f, -0.14f, 0.2f}, "half frozen");
  // The gradient passes only where nothing is frozen.
  const Tensor g({6}, {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f});
  testing::expect_values(q.backward(w, g), {0.0f, 0.0f, 3.0f, 0.0f, 5.0f, 6.0f}, "backward");
  EXPECT_THROW(q.quantize(w), ArgumentError);  // not all frozen
  // All: 0.2 -> 1/4; -0.14 -> -1/4 (at least half the smallest level, 1/8); 0.05 -> 0 (below 1/8).
  inq_freeze(q, w, 1.0);
  testing::expect_values(q.forward(w), {1.0f, -0.25f, 0.0f, 0.5f, -0.25f, 0.25f}, "all frozen");
  const QuantizedTensor e = q.quantize(w);
  EXPECT_EQ(e.codes, (std::vector<int32_t>{4, -1, 0, 2, -1, 1}));
  EXPECT_EQ(e.params.scales, std::vector<float>{0.25f});
  EXPECT_EQ(e.params.code_bits, 4);
  testing::expect_bitwise_equal(e.dequantize(), q.forward(w), "export == forward");
}

TEST(Inq, FreezesExactlyTheScheduledFractionLargestFirstAndFrozenWeightsNeverMove) {
  const int64_t channels = 4;
  Tensor w = gaussian({channels, 8, 3, 3}, 5, 0.1f);
  const int64_t n = w.numel();
  Quantizer q(inq_spec(4, Granularity::per_channel, channels, n));
  const int max_exponent = (1 << 3) - 2;  // codes up to 2^(E-1), E = 7
  std::vector<float> frozen_outputs(static_cast<std::size_t>(n), NAN);
  std::vector<bool> was_frozen(static_cast<std::size_t>(n), false);
  Rng rng(9);
  for (double fraction : {0.5, 0.75, 0.875, 1.0}) {
    // The weights not frozen yet, by magnitude, before this step.
    std::vector<float> unfrozen_magnitudes;
    for (int64_t i = 0; i < n; ++i)
      if (!was_frozen[static_cast<std::size_t>(i)]) unfrozen_magnitudes.push_back(std::fabs(w[i]));
    std::sort(unfrozen_magnitudes.rbegin(), unfrozen_magnitudes.rend());
    const InqFreezeReport r = inq_freeze(q, w, fraction);
    const auto expected = static_cast<int64_t>(std::floor(fraction * static_cast<double>(n) + 0.5));
    EXPECT_EQ(r.frozen, expected) << fraction;
    EXPECT_DOUBLE_EQ(inq_frozen_fraction(q), static_cast<double>(static_cast<float>(fraction)));
    // Frozen now = gradient blocked.
    const Tensor gx = q.backward(w, Tensor::full(w.shape(), 1.0f));
    int64_t frozen_count = 0;
    float smallest_new = INFINITY;
    for (int64_t i = 0; i < n; ++i) {
      const bool frozen = gx[i] == 0.0f;
      frozen_count += frozen ? 1 : 0;
      if (frozen && !was_frozen[static_cast<std::size_t>(i)]) smallest_new = std::min(smallest_new, std::fabs(w[i]));
      ASSERT_FALSE(was_frozen[static_cast<std::size_t>(i)] && !frozen) << "weight " << i << " thawed";
    }
    EXPECT_EQ(frozen_count, expected);
    // The newly frozen ones are the largest of those that were free.
    const int64_t fresh = r.newly_frozen;
    if (fresh > 0 && fresh < static_cast<int64_t>(unfrozen_magnitudes.size())) {
      EXPECT_GE(smallest_new, unfrozen_magnitudes[static_cast<std::size_t>(fresh)]);
    }
    // Frozen outputs are bit-identical to what they were when frozen.
    const Tensor y = q.forward(w);
    for (int64_t i = 0; i < n; ++i) {
      if (gx[i] != 0.0f) continue;
      auto& saved = frozen_outputs[static_cast<std::size_t>(i)];
      if (was_frozen[static_cast<std::size_t>(i)]) {
        ASSERT_TRUE(testing::bitwise_equal(y[i], saved)) << "weight " << i << " moved";
      }
      saved = y[i];
      was_frozen[static_cast<std::size_t>(i)] = true;
    }
    // "Retraining": the latent weights move, frozen ones included (weight decay, momentum).
    for (int64_t i = 0; i < n; ++i) w[i] += rng.normal(0.0f, 0.02f);
  }
  const QuantizedTensor e = q.quantize(w);
  for (int32_t c : e.codes) ASSERT_TRUE(is_power_of_two_or_zero(c, max_exponent)) << c;
  EXPECT_EQ(e.params.code_bits, 8);
  testing::expect_bitwise_equal(e.dequantize(), q.forward(w), "export == forward");
  // Every scale is a power of two (the grid of the first freeze).
  for (float s : e.params.scales) {
    int exponent = 0;
    EXPECT_EQ(std::frexp(s, &exponent), 0.5f) << s;
  }
}

TEST(Inq, RefusesBadFractionsAndOtherKinds) {
  Quantizer q(inq_spec(3, Granularity::per_tensor, 1, 4));
  const Tensor w({4}, {0.1f, 0.2f, -0.3f, 0.4f});
  EXPECT_THROW(inq_freeze(q, w, 1.5), ArgumentError);
  inq_freeze(q, w, 0.75);
  EXPECT_THROW(inq_freeze(q, w, 0.5), ArgumentError);  // frozen weights stay frozen
  EXPECT_THROW(inq_freeze(q, Tensor({5}), 1.0), ShapeError);
  Quantizer lsq(weight_spec(QuantizerKind::lsq, 3));
  EXPECT_THROW(inq_freeze(lsq, w, 0.5), ArgumentError);
  EXPECT_THROW(inq_frozen_fraction(lsq), ArgumentError);
  EXPECT_THROW(validate(weight_spec(QuantizerKind::inq, 7)), ArgumentError);
}

TEST(Inq, CheckpointStateIsItsBuffers) {
  // The frozen set, codes, grid and fraction are buffers: copying them restores the quantizer.
  Quantizer a(inq_spec(3, Granularity::per_tensor, 1, 6));
  Tensor w({6}, {0.9f, -0.3f, 0.05f, 0.6f, -0.14f, 0.2f});
  inq_freeze(a, w, 0.5);
  Quantizer b(inq_spec(3, Granularity::per_tensor, 1, 6));
  ASSERT_EQ(a.buffers().size(), b.buffers().size());
  for (std::size_t i = 0; i < a.buffers().size(); ++i) {
    ASSERT_EQ(a.buffers()[i]->value.shape(), b.buffers()[i]->value.shape()) << a.buffers()[i]->name;
    b.buffers()[i]->value = a.buffers()[i]->value;
  }
  testing::expect_bitwise_equal(b.forward(w), a.forward(w), "restored");
}

}  // namespace
}  // namespace bitmix::quant
