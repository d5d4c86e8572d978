// Packing of activations and weights: layout, round trips, serialization, validation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "bitmix/core/error.hpp"
#include "kernel_test_util.hpp"

namespace bitmix::kernels {
namespace {

using testing::all_paths;

TEST(QuantizeCode, RoundsHalfToEvenAndClamps) {
  ActivationQuant q{4, 0.5f, 3};
  // x / s = 0.5 -> 0 (even), 1.5 -> 2, 2.5 -> 2, -0.5 -> -0 -> z
  EXPECT_EQ(quantize_code(0.25f, q), 3);
  EXPECT_EQ(quantize_code(0.75f, q), 5);
  EXPECT_EQ(quantize_code(1.25f, q), 5);
  EXPECT_EQ(quantize_code(-0.25f, q), 3);
  EXPECT_EQ(quantize_code(-1.75f, q), 0);   // -3.5 -> -4 -> -1 -> 0
  EXPECT_EQ(quantize_code(-100.0f, q), 0);
  EXPECT_EQ(quantize_code(6.0f, q), 15);    // 12 + 3 = 15
  EXPECT_EQ(quantize_code(6.5f, q), 15);    // clamped
  EXPECT_EQ(quantize_code(std::numeric_limits<float>::infinity(), q), 15);
  EXPECT_EQ(quantize_code(-std::numeric_limits<float>::infinity(), q), 0);
  EXPECT_EQ(quantize_code(std::numeric_limits<float>::quiet_NaN(), q), 0);
  EXPECT_EQ(quantize_code(3e38f, ActivationQuant{8, 1e-30f, 0}), 255);
}

TEST(QuantizeCode, MatchesTheDefinitionOnRandomValues) {
  Rng rng(11);
  for (int trial = 0; trial < 20000; ++trial) {
    ActivationQuant q{1 + static_cast<int>(rng.below(8)), rng.uniform(0.01f, 2.0f), 0};
    q.zero_point = static_cast<int32_t>(rng.below(static_cast<uint64_t>(q.max_code()) + 1));
    const float x = rng.uniform(-300.0f, 300.0f);
    // Independent formulation in double: x / s is exactly rounded to float first.
    const double ratio = static_cast<double>(x / q.scale);
    const double rounded = std::nearbyint(ratio) + q.zero_point;
    const int expected = static_cast<int>(std::min<double>(std::max<double>(rounded, 0.0), q.max_code()));
    ASSERT_EQ(quantize_code(x, q), expected) << "x=" << x << " s=" << q.scale << " z=" << q.zero_point;
  }
}

TEST(QuantizeCode, ReciprocalModeMultipliesByTheFloatReciprocal) {
  // quant's range quantizers compute round(x * (1.0f / s)); the reciprocal mode reproduces that,
  // and the two modes really differ next to rounding ties (found by search, then checked).
  Rng rng(13);
  int differing = 0;
  for (int trial = 0; trial < 200000; ++trial) {
    const ActivationQuant q{8, rng.uniform(0.001f, 1.0f), static_cast<int32_t>(rng.below(256)), true};
    // half the values at the float nearest to a rounding tie, where the two modes can disagree
    const float k = static_cast<float>(static_cast<int>(rng.below(200)) - 100);
    const float x = trial % 2 ? (k + 0.5f) * q.scale : rng.uniform(-1.0f, 1.0f) * 128.0f * q.scale;
    const float inverse = 1.0f / q.scale;
    const double rounded = std::nearbyint(static_cast<double>(x * inverse)) + q.zero_point;
    const int expected = static_cast<int>(std::min<double>(std::max<double>(rounded, 0.0), 255.0));
    ASSERT_EQ(quantize_code(x, q), expected) << "x=" << x << " s=" << q.scale;
    ActivationQuant divide = q;
    divide.reciprocal = false;
    differing += quantize_code(x, divide) != quantize_code(x, q);
  }
  EXPECT_GT(differing, 0) << "no value where x / s and x * (1 / s) round apart: the test proves nothing";
}

TEST(PackedActivations, LayoutIsTheDocumentedBitStream) {
  ActivationQuant q{2, 1.0f, 1};
  PackedActivations a(1, 3, 1, 2, q, 1);  // C=3 -> 8 bits per pixel, 4 stored columns, 3 stored rows
  EXPECT_EQ(a.pixel_bits(), 8);
  EXPECT_EQ(a.stored_width(), 4);
  EXPECT_EQ(a.row_stride(), 8);
  a.set_code(0, 2, 0, 1, 2);  // plane 1 of channel 2 of pixel (0, 1): stored row 1, column 2
  // Zero point 1 = plane 0 set for every channel of every pixel, plane 1 clear.
  const uint8_t* plane0 = a.data() + a.row_offset(0, 1, 0);
  const uint8_t* plane1 = a.data() + a.row_offset(0, 1, 1);
  EXPECT_EQ(plane0[0], 0x07);
  EXPECT_EQ(plane0[1], 0x07);
  EXPECT_EQ(plane0[2], 0x03);  // channel 2 now has code 2: plane 0 clear
  EXPECT_EQ(plane1[2], 0x04);
  EXPECT_EQ(plane1[1], 0x00);
  EXPECT_EQ(a.code_at(0, 2, 0, 1), 2);
  EXPECT_EQ(a.code_at(0, 0, -1, -1), 1);  // border holds the zero point
}

TEST(PackedActivations, FromCodesRoundTripsOnEveryPath) {
  for (Isa isa : all_paths()) {
    if (!isa_available(isa)) continue;
    ScopedIsaCap cap(isa);
    Rng rng(5);
    for (int64_t c : {1, 3, 8, 63, 64, 65, 130}) {
      const int bits = 1 + static_cast<int>(rng.below(8));
      const std::vector<uint8_t> codes = testing::random_codes(rng, 2 * c * 3 * 5, bits);
      ActivationQuant q{bits, 1.0f, static_cast<int32_t>(rng.below(uint64_t{1} << bits))};
      const PackedActivations a = PackedActivations::from_codes(codes, 2, c, 3, 5, q, static_cast<int>(c % 2));
      EXPECT_EQ(a.codes(), codes) << isa_name(isa) << " C=" << c;
      if (a.border() > 0) {
        for (int64_t n = 0; n < 2; ++n)
          for (int64_t w = -a.border(); w < 5 + a.border(); ++w) EXPECT_EQ(a.code_at(n, c - 1, -1, w), q.zero_point);
      }
    }
  }
}

TEST(PackedActivations, RejectsBadArguments) {
  EXPECT_THROW(PackedActivations(1, 1, 1, 1, ActivationQuant{0, 1.0f, 0}), ArgumentError);
  EXPECT_THROW(PackedActivations(1, 1, 1, 1, ActivationQuant{9, 1.0f, 0}), ArgumentError);
  EXPECT_THROW(PackedActivations(1, 1, 1, 1, ActivationQuant{4, 0.0f, 0}), ArgumentError);
  EXPECT_THROW(PackedActivations(1, 1, 1, 1, ActivationQuant{4, std::nanf(""), 0}), ArgumentError);
  EXPECT_THROW(PackedActivations(1, 1, 1, 1, ActivationQuant{4, 1.0f, 16}), ArgumentError);
  EXPECT_THROW(PackedActivations(0, 1, 1, 1, ActivationQuant{}), ShapeError);
  EXPECT_THROW(PackedActivations(1, 1, 1, 1, ActivationQuant{}, -1), ArgumentError);
  PackedActivations a(1, 2, 2, 2, ActivationQuant{2, 1.0f, 0});
  EXPECT_THROW(a.set_code(0, 0, 0, 0, 4), ArgumentError);
  EXPECT_THROW(a.code_at(0, 2, 0, 0), ShapeError);
  EXPECT_THROW(a.code_at(0, 0, -1, 0), ShapeError);
  const std::vector<uint8_t> codes(7, 0);
  EXPECT_THROW(PackedActivations::from_codes(codes, 1, 2, 2, 2, ActivationQuant{2, 1.0f, 0}), ShapeError);
  EXPECT_THROW(quantize_pack(Tensor({2, 3}), ActivationQuant{}), ShapeError);
}

class QuantizePackPaths : public ::testing::TestWithParam<Isa> {};

TEST_P(QuantizePackPaths, EqualsElementwiseReference) {
  BITMIX_REQUIRE_PATH(GetParam());
  Rng rng(21);
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t c : {1, 3, 16, 65}) {
      Tensor x({2, c, 3, 7 + 5 * bits});  // 12 .. 47 wide: partial and several register blocks
      for (int64_t i = 0; i < x.numel(); ++i) x[i] = rng.normal(0.0f, 2.0f);
      // every 7th value next to a rounding tie, where x / s and x * (1 / s) can round apart
      for (int64_t i = 5; i < x.numel(); i += 7) x[i] = (static_cast<float>(i % 23) - 11.5f) * 0.21f;
      // exact ties, NaN and infinities go through every lane position
      x[0] = 0.5f * 0.21f;
      x[1] = std::numeric_limits<float>::quiet_NaN();
      x[2] = std::numeric_limits<float>::infinity();
      x[3] = -std::numeric_limits<float>::infinity();
      x[4] = -0.0f;
      x[x.numel() - 1] = 2.5f * 0.21f;
      ActivationQuant q{bits, 0.21f, static_cast<int32_t>(rng.below(uint64_t{1} << bits)), c % 2 == 1};
      const int border = bits % 2;
      const PackedActivations fast = quantize_pack(x, q, border);
      const PackedActivations slow = reference::quantize_pack(x, q, border);
      ASSERT_TRUE(testing::same_codes(fast, slow)) << "bits=" << bits << " C=" << c;
    }
}

INSTANTIATE_TEST_SUITE_P(Paths, QuantizePackPaths, ::testing::ValuesIn(testing::all_paths()), testing::path_name);

TEST(PackedWeights, RoundTripsCodesInBothEncodings) {
  Rng rng(3);
  for (bool depthwise : {false, true})
    for (WeightEncoding enc : {WeightEncoding::twos_complement, WeightEncoding::odd_levels})
      for (int bits = 1; bits <= 8; ++bits) {
        const int64_t in = 17 + bits * 7;
        WeightSpec spec{depthwise ? 2 * in : 17, in, 3, 2, bits, enc, depthwise};
        const std::vector<int32_t> codes = testing::random_weight_codes(rng, spec.code_count(), bits, enc);
        const PackedWeights w = PackedWeights::pack(codes, spec);
        ASSERT_EQ(w.codes(), codes);
        ASSERT_EQ(static_cast<int64_t>(w.words().size()), PackedWeights::word_count(spec));
        // channel sums from the codes themselves
        const int64_t per_oc = spec.code_count() / spec.out_channels;
        for (int64_t oc = 0; oc < spec.out_channels; ++oc) {
          int64_t sum = 0;
          for (int64_t k = 0; k < per_oc; ++k) sum += codes[static_cast<std::size_t>(oc * per_oc + k)];
          ASSERT_EQ(w.channel_sums()[static_cast<std::size_t>(oc)], sum);
        }
        // serialization round trip
        const PackedWeights back(spec, w.words());
        ASSERT_EQ(back.codes(), codes);
      }
}

TEST(PackedWeights, PlanesFollowTheArithmeticOfTheEncodings) {
  // Two's complement 3-bit -3 = 101b: planes 0 and 2; odd-level 3-bit -3 = -1 + 2 - 4:
  // s = (-1, +1, -1) -> s' = (0, 1, 0). Checked on the dense layout: lane 0, window bit 0 of each plane.
  auto plane_bits = [](const PackedWeights& w) {
    std::vector<int> bits;
    for (int i = 0; i < w.spec().bits; ++i) bits.push_back(static_cast<int>(w.words()[static_cast<std::size_t>(i * 16)] & 1u));
    return bits;
  };
  const std::vector<int32_t> minus_three{-3};
  const PackedWeights twos = PackedWeights::pack(minus_three, {1, 1, 1, 1, 3, WeightEncoding::twos_complement, false});
  EXPECT_EQ(plane_bits(twos), (std::vector<int>{1, 0, 1}));
  const PackedWeights odd = PackedWeights::pack(minus_three, {1, 1, 1, 1, 3, WeightEncoding::odd_levels, false});
  EXPECT_EQ(plane_bits(odd), (std::vector<int>{0, 1, 0}));
}

TEST(PackedWeights, RejectsBadCodesSpecsAndWords) {
  const WeightSpec spec{2, 3, 1, 1, 2, WeightEncoding::twos_complement, false};
  EXPECT_THROW(PackedWeights::pack(std::vector<int32_t>{0, 1, -2, 1, 0, 2}, spec), ArgumentError);  // 2 > 1
  EXPECT_THROW(PackedWeights::pack(std::vector<int32_t>{0, 1}, spec), ShapeError);
  WeightSpec odd = spec;
  odd.encoding = WeightEncoding::odd_levels;
  EXPECT_THROW(PackedWeights::pack(std::vector<int32_t>{1, 3, -3, 0, 1, 1}, odd), ArgumentError);  // 0 is even
  WeightSpec bad = spec;
  bad.bits = 9;
  EXPECT_THROW(PackedWeights::word_count(bad), ArgumentError);
  bad = spec;
  bad.kernel_h = 0;
  EXPECT_THROW(PackedWeights::word_count(bad), ArgumentError);
  WeightSpec dw{5, 2, 3, 3, 2, WeightEncoding::twos_complement, true};
  EXPECT_THROW(PackedWeights::word_count(dw), ArgumentError);  // 5 not a multiple of 2

  const PackedWeights w = PackedWeights::pack(std::vector<int32_t>{0, 1, -2, 1, 0, -1}, spec);
  std::vector<uint32_t> words(w.words().begin(), w.words().end());
  EXPECT_THROW(PackedWeights(spec, std::span<const uint32_t>(words.data(), words.size() - 1)), FormatError);
  words[0] |= 1u << 20;  // channel 20 of a 3-channel layer: a padding bit
  EXPECT_THROW(PackedWeights(spec, words), FormatError);
  words = std::vector<uint32_t>(w.words().begin(), w.words().end());
  words[5] |= 1u;  // lane 5 of a 2-channel block: a padding lane
  EXPECT_THROW(PackedWeights(spec, words), FormatError);
}

}  // namespace
}  // namespace bitmix::kernels
