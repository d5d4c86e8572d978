// The table-lookup kernels equal the integer reference exactly, on every path, for every
// (W, A) they accept (W1-4 x A1-4, both weight encodings), on a covering set of shapes; and
// they refuse what they do not accept.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/kernels/lut.hpp"
#include "kernel_test_util.hpp"

namespace bitmix::kernels {
namespace {

struct LutCase {
  int64_t batch, channels, height, width, out_channels;
  int kernel, stride, pad;
};

std::ostream& operator<<(std::ostream& os, const LutCase& c) {
  return os << "[N=" << c.batch << " C=" << c.channels << " " << c.height << "x" << c.width << " OC=" << c.out_channels
            << " k=" << c.kernel << " s=" << c.stride << " p=" << c.pad << "]";
}

// Every value of every factor occurs (channels not a multiple of 4 or 8, more than one 16-lane
// block, a last partial tile, runs of a tile crossing rows, stride 2, no padding), the ResNet-20
// 3x3 layers, and rows of 16 pixels or more at 1, 2, 4, 8 and 5 bytes per pixel (the vector
// conversion to index bytes and its scalar tail).
const LutCase kCases[] = {
    {1, 1, 5, 5, 16, 3, 1, 1},   {3, 3, 6, 6, 17, 3, 2, 1},  {1, 63, 7, 7, 5, 1, 1, 0},   {1, 64, 4, 4, 33, 3, 2, 0},
    {3, 65, 5, 4, 16, 3, 1, 1},  {2, 16, 9, 9, 1, 3, 1, 1},  {1, 12, 6, 10, 20, 3, 2, 1}, {2, 32, 8, 8, 32, 3, 1, 0},
    {1, 16, 32, 32, 16, 3, 1, 1}, {2, 32, 16, 16, 32, 3, 1, 1}, {3, 64, 8, 8, 64, 3, 1, 1}, {2, 16, 32, 32, 32, 3, 2, 1},
    {1, 64, 5, 20, 16, 3, 1, 1},  {1, 8, 3, 17, 16, 3, 1, 1},   {2, 40, 4, 18, 8, 3, 1, 1},
};
constexpr int kCaseCount = static_cast<int>(sizeof(kCases) / sizeof(kCases[0]));

// Runs one case on the active path's table-lookup kernels and on the reference.
::testing::AssertionResult check_case(const LutCase& cc, int wbits, int abits, WeightEncoding enc, int output,
                                      uint64_t seed) {
  Rng rng(seed);
  const int border = cc.pad + static_cast<int>(seed % 2);
  const PackedActivations input =
      testing::random_activations(rng, cc.batch, cc.channels, cc.height, cc.width, abits, border);
  const WeightSpec spec{cc.out_channels, cc.channels, cc.kernel, cc.kernel, wbits, enc, false};
  if (!lut_supported(spec, abits)) return ::testing::AssertionSuccess() << "not supported";
  const PackedWeights weights = testing::random_weights(rng, spec);
  const LutWeights tables(weights);
  const Conv2dParams params{cc.stride, cc.stride, cc.pad, cc.pad};
  auto [scale, bias] = testing::random_scale_bias(rng, cc.out_channels, 4.0f / static_cast<float>(1 << (wbits + abits)));
  if (output == 2) {
    const int out_bits = 1 + static_cast<int>(seed % 4);
    ActivationQuant out_q{out_bits, 0.7f, static_cast<int32_t>(rng.below(uint64_t{1} << out_bits)), seed % 4 >= 2};
    const Epilogue e = Epilogue::requantize(scale, bias, seed % 3 == 0, out_q, static_cast<int>(seed % 2));
    PackedActivations fast, slow;
    conv2d(input, tables, params, e, fast);
    reference::conv2d(input, weights, params, e, slow);
    return testing::same_codes(fast, slow);
  }
  const Epilogue e = Epilogue::float_output(scale, bias, output == 1);
  Tensor fast, slow;
  conv2d(input, tables, params, e, fast);
  reference::conv2d(input, weights, params, e, slow);
  auto result = testing::same_bits(fast, slow);
  if (!result) return result;
  conv2d(input, tables, params, Epilogue::identity(cc.out_channels), fast);
  reference::conv2d(input, weights, params, Epilogue::identity(cc.out_channels), slow);
  return testing::same_bits(fast, slow);
}

class LutPaths : public ::testing::TestWithParam<Isa> {};

TEST_P(LutPaths, EveryAcceptedBitPairOnCoveringShapes) {
  BITMIX_REQUIRE_PATH(GetParam());
  int checked = 0;
  for (int m = 1; m <= 4; ++m)
    for (int k = 1; k <= 4; ++k)
      for (int variant = 0; variant < 4; ++variant) {
        const int idx = ((m - 1) * 4 + (k - 1)) * 4 + variant;
        const LutCase& cc = kCases[(idx * 5) % kCaseCount];
        const auto enc = variant % 2 == 0 ? WeightEncoding::twos_complement : WeightEncoding::odd_levels;
        const WeightSpec spec{cc.out_channels, cc.channels, cc.kernel, cc.kernel, m, enc, false};
        checked += lut_supported(spec, k) ? 1 : 0;
        EXPECT_TRUE(check_case(cc, m, k, enc, idx % 3, 100 + static_cast<uint64_t>(idx)))
            << cc << " W" << m << "A" << k << " " << encoding_name(enc) << " output " << idx % 3;
      }
  EXPECT_GT(checked, 56);  // the reduction bound excludes only wide pairs on the largest shapes
}

TEST_P(LutPaths, EveryShapeAtW1W2W3TimesA1A2BothEncodings) {
  BITMIX_REQUIRE_PATH(GetParam());
  for (int i = 0; i < kCaseCount; ++i)
    for (int m = 1; m <= 3; ++m)
      for (int k = 1; k <= 2; ++k)
        for (auto enc : {WeightEncoding::twos_complement, WeightEncoding::odd_levels}) {
          const uint64_t seed = 1000 + static_cast<uint64_t>(i * 16 + m * 4 + k * 2 + (enc == WeightEncoding::odd_levels));
          EXPECT_TRUE(check_case(kCases[i], m, k, enc, static_cast<int>(seed % 3), seed))
              << kCases[i] << " W" << m << "A" << k << " " << encoding_name(enc);
        }
}

TEST_P(LutPaths, ExtremeCodesAtTheInt16Bound) {
  // Every weight at its most negative (or largest) value and every code at its maximum: the byte
  // sums reach their widening bound and the int16 lanes the reduction bound.
  BITMIX_REQUIRE_PATH(GetParam());
  for (auto enc : {WeightEncoding::twos_complement, WeightEncoding::odd_levels})
    for (int m : {1, 2, 4})
      for (int k : {1, 2, 3}) {
        const int max_abs = enc == WeightEncoding::odd_levels ? (1 << m) - 1 : 1 << (m - 1);
        int64_t channels = 32767 / (9 * max_abs * ((1 << k) - 1));
        if (channels > 64) channels = 64;
        const WeightSpec spec{17, channels, 3, 3, m, enc, false};
        ASSERT_TRUE(lut_supported(spec, k));
        for (int sign : {-1, 1}) {
          const int32_t w = enc == WeightEncoding::odd_levels ? sign * max_abs : (sign < 0 ? -max_abs : max_abs - 1);
          if (w == 0) continue;
          const PackedWeights weights =
              PackedWeights::pack(std::vector<int32_t>(static_cast<std::size_t>(spec.code_count()), w), spec);
          std::vector<uint8_t> codes(static_cast<std::size_t>(2 * channels * 6 * 5), static_cast<uint8_t>((1 << k) - 1));
          const PackedActivations input =
              PackedActivations::from_codes(codes, 2, channels, 6, 5, ActivationQuant{k, 0.5f, 0}, 1);
          Tensor fast, slow;
          conv2d(input, LutWeights(weights), Conv2dParams{1, 1, 1, 1}, Epilogue::identity(17), fast);
          reference::conv2d(input, weights, Conv2dParams{1, 1, 1, 1}, Epilogue::identity(17), slow);
          EXPECT_TRUE(testing::same_bits(fast, slow)) << "W" << m << "A" << k << " " << encoding_name(enc) << " w=" << w;
        }
      }
}

TEST_P(LutPaths, ResultsDoNotDependOnTheThreadCount) {
  BITMIX_REQUIRE_PATH(GetParam());
  Rng rng(7);
  const PackedActivations input = testing::random_activations(rng, 3, 32, 16, 16, 2, 1);
  const PackedWeights weights = testing::random_weights(rng, {32, 32, 3, 3, 2, WeightEncoding::twos_complement, false});
  const LutWeights tables(weights);
  Tensor one, two;
  set_num_threads(1);
  conv2d(input, tables, Conv2dParams{1, 1, 1, 1}, Epilogue::identity(32), one);
  set_num_threads(2);
  conv2d(input, tables, Conv2dParams{1, 1, 1, 1}, Epilogue::identity(32), two);
  set_num_threads(0);
  EXPECT_TRUE(testing::same_bits(one, two));
}

INSTANTIATE_TEST_SUITE_P(Paths, LutPaths, ::testing::ValuesIn(testing::all_paths()), testing::path_name);

TEST(Lut, RefusesWhatItDoesNotTake) {
  Rng rng(3);
  const PackedWeights depthwise = testing::random_weights(rng, {8, 8, 3, 3, 2, WeightEncoding::twos_complement, true});
  EXPECT_THROW(LutWeights{depthwise}, ArgumentError);
  const PackedWeights wide = testing::random_weights(rng, {8, 8, 3, 3, 5, WeightEncoding::twos_complement, false});
  EXPECT_THROW(LutWeights{wide}, ArgumentError);
  EXPECT_THROW(LutWeights{PackedWeights{}}, ArgumentError);
  const PackedWeights w2 = testing::random_weights(rng, {8, 8, 3, 3, 2, WeightEncoding::twos_complement, false});
  const LutWeights tables(w2);
  Tensor out;
  // 5-bit activations: refused, naming the pair
  const PackedActivations a5 = testing::random_activations(rng, 1, 8, 4, 4, 5, 1);
  try {
    conv2d(a5, tables, Conv2dParams{1, 1, 1, 1}, Epilogue::identity(8), out);
    ADD_FAILURE() << "5-bit activations accepted";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("W2A5"), std::string::npos) << e.what();
  }
  // the usual checks apply: wrong channel count
  const PackedActivations c9 = testing::random_activations(rng, 1, 9, 4, 4, 2, 1);
  EXPECT_THROW(conv2d(c9, tables, Conv2dParams{1, 1, 1, 1}, Epilogue::identity(8), out), ShapeError);
  // a reduction past the int16 bound
  EXPECT_FALSE(lut_supported({8, 4096, 3, 3, 2, WeightEncoding::twos_complement, false}, 2));
  EXPECT_TRUE(lut_supported({8, 64, 3, 3, 2, WeightEncoding::twos_complement, false}, 2));
  EXPECT_EQ(lut_ops_per_pixel({8, 4096, 3, 3, 2, WeightEncoding::twos_complement, false}, 2), 0.0);
  EXPECT_GT(lut_ops_per_pixel({64, 64, 3, 3, 2, WeightEncoding::twos_complement, false}, 2),
            lut_ops_per_pixel({16, 16, 3, 3, 2, WeightEncoding::twos_complement, false}, 2));
}

}  // namespace
}  // namespace bitmix::kernels
