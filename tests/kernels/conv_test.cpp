// Every compiled path equals the integer reference exactly.
//
// The grid: all 64 (M, K) pairs; channels {1, 3, 63, 64, 65, 130}; odd and even
// spatial sizes; stride 1 and 2; padding 0 and 1; kernel 1 and 3; batch 1 and 3; groups 1 and
// depthwise. The full cartesian product would not fit the CI budget (the NEON path runs under
// qemu), so it is covered in two ways:
//   * kCases is a covering set of 12 shapes in which every value of every shape factor occurs,
//     and every pair of the binary factors (stride, pad, kernel, batch, groups) occurs;
//   * every (M, K) pair runs on three of those shapes (rotating, so each shape meets several
//     pairs), alternating the weight encoding and with a rotating output kind (float, float +
//     ReLU, requantized to K' = 1..8 bits with border 0 or 1): once on the dense path the cost
//     model picks, once forced onto the bit-serial path, once onto the unpacked integer path
//     (both of the popcount family) and once onto the int8 family;
//   * every shape runs at the corner pairs (1,1), (8,8), (1,8), (8,1), (2,3), both encodings,
//     on all three dense paths;
//   * every (M, K) pair runs the int8 family with every code at the end of its range over more
//     channel quads than its int16 lanes may hold, so any saturation or missed widening shows.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <set>
#include <sstream>

#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "kernel_test_util.hpp"
#include "kernels/conv_internal.hpp"

namespace bitmix::kernels {
namespace {

struct ConvCase {
  int64_t batch, channels, height, width, out_channels;
  int kernel, stride, pad;
  bool depthwise;
};

std::ostream& operator<<(std::ostream& os, const ConvCase& c) {
  return os << "[N=" << c.batch << " C=" << c.channels << " " << c.height << "x" << c.width << " OC=" << c.out_channels
            << " k=" << c.kernel << " s=" << c.stride << " p=" << c.pad << (c.depthwise ? " depthwise" : "") << "]";
}

// N, C, H, W, OC, kernel, stride, pad, depthwise
const ConvCase kCases[] = {
    {1, 1, 5, 5, 16, 3, 1, 1, false},     {3, 3, 6, 6, 17, 3, 2, 1, false},    {1, 63, 7, 7, 5, 1, 1, 0, false},
    {1, 64, 4, 4, 33, 3, 2, 0, false},    {3, 65, 5, 4, 16, 3, 1, 1, false},   {1, 130, 3, 3, 9, 1, 2, 1, false},
    {3, 1, 6, 6, 1, 1, 2, 0, false},      {1, 3, 5, 5, 3, 3, 1, 1, true},      {3, 64, 6, 6, 64, 3, 2, 1, true},
    {1, 65, 7, 7, 130, 3, 1, 0, true},    {1, 130, 4, 4, 20, 3, 1, 1, false},  {3, 63, 6, 5, 31, 3, 2, 1, false},
    {1, 1, 4, 4, 2, 1, 1, 1, true},       {3, 130, 3, 4, 130, 1, 1, 0, true},
};
constexpr int kCaseCount = static_cast<int>(sizeof(kCases) / sizeof(kCases[0]));

enum class OutputKind { float_plain, float_relu, packed };

using detail::DensePath;

// Forces the bit-serial or the unpacked integer path of dense layers for the scope.
class ScopedDensePath {
 public:
  explicit ScopedDensePath(DensePath path) : previous_(detail::dense_path()) { detail::set_dense_path(path); }
  ~ScopedDensePath() { detail::set_dense_path(previous_); }
  ScopedDensePath(const ScopedDensePath&) = delete;
  ScopedDensePath& operator=(const ScopedDensePath&) = delete;

 private:
  DensePath previous_;
};

const char* path_label(DensePath p) {
  return p == DensePath::automatic ? "automatic" : p == DensePath::bit_serial ? "bit-serial" : "integer";
}

struct BitRun {
  int weight_bits, act_bits;
  WeightEncoding encoding;
  OutputKind output;
  int out_bits;
  int out_border;
  KernelFamily family = KernelFamily::automatic;
};

// Runs one case on the active path and on the reference; returns a failure describing the
// first difference.
::testing::AssertionResult check_case(const ConvCase& cc, const BitRun& run, uint64_t seed) {
  Rng rng(seed);
  const int border = cc.pad + static_cast<int>(seed % 2);  // sometimes more border than padding
  const PackedActivations input =
      testing::random_activations(rng, cc.batch, cc.channels, cc.height, cc.width, run.act_bits, border);
  WeightSpec spec{cc.out_channels, cc.channels, cc.kernel, cc.kernel, run.weight_bits, run.encoding, cc.depthwise};
  const PackedWeights weights = testing::random_weights(rng, spec);
  const Conv2dParams params{cc.stride, cc.stride, cc.pad, cc.pad, run.family};
  auto [scale, bias] = testing::random_scale_bias(rng, cc.out_channels, 4.0f / static_cast<float>(1 << (run.weight_bits + run.act_bits)));
  if (run.output == OutputKind::packed) {
    ActivationQuant out_q{run.out_bits, 0.7f, static_cast<int32_t>(rng.below(uint64_t{1} << run.out_bits)),
                          seed % 4 >= 2};
    const Epilogue e = Epilogue::requantize(scale, bias, seed % 3 == 0, out_q, run.out_border);
    PackedActivations fast, slow;
    conv2d(input, weights, params, e, fast);
    reference::conv2d(input, weights, params, e, slow);
    return testing::same_codes(fast, slow);
  }
  const Epilogue e = Epilogue::float_output(scale, bias, run.output == OutputKind::float_relu);
  Tensor fast, slow;
  conv2d(input, weights, params, e, fast);
  reference::conv2d(input, weights, params, e, slow);
  auto result = testing::same_bits(fast, slow);
  if (!result) return result;
  // and the raw accumulators through the identity epilogue
  conv2d(input, weights, params, Epilogue::identity(cc.out_channels), fast);
  reference::conv2d(input, weights, params, Epilogue::identity(cc.out_channels), slow);
  return testing::same_bits(fast, slow);
}

std::string describe(const ConvCase& cc, const BitRun& r) {
  std::ostringstream os;
  os << cc << " W" << r.weight_bits << "A" << r.act_bits << " " << encoding_name(r.encoding) << " output="
     << (r.output == OutputKind::packed ? "packed" : r.output == OutputKind::float_relu ? "float+relu" : "float")
     << " out_bits=" << r.out_bits << " out_border=" << r.out_border << " family=" << kernel_family_name(r.family);
  return os.str();
}

class ConvPaths : public ::testing::TestWithParam<Isa> {};

TEST_P(ConvPaths, EveryBitPairOnCoveringShapes) {
  BITMIX_REQUIRE_PATH(GetParam());
  for (int m = 1; m <= 8; ++m)
    for (int k = 1; k <= 8; ++k) {
      const int idx = (m - 1) * 8 + (k - 1);
      for (int variant = 0; variant < 4; ++variant) {
        // each pair runs once on the path the cost model picks and once forced onto each path
        // (variant 3: the int8 family)
        const auto dense = variant == 3 ? DensePath::automatic : static_cast<DensePath>(variant);
        ScopedDensePath forced(dense);
        const ConvCase& cc = kCases[(idx * 5 + variant * 7) % kCaseCount];
        BitRun run;
        run.weight_bits = m;
        run.act_bits = k;
        run.encoding = (idx + variant) % 2 == 0 ? WeightEncoding::twos_complement : WeightEncoding::odd_levels;
        run.output = static_cast<OutputKind>((idx + variant) % 3);
        run.out_bits = 1 + (idx + 3 * variant) % 8;
        run.out_border = (idx / 3 + variant) % 2;
        if (variant == 3) run.family = KernelFamily::int8;
        ASSERT_TRUE(check_case(cc, run, 1000 + static_cast<uint64_t>(idx * 2 + variant)))
            << describe(cc, run) << " dense path " << path_label(dense);
      }
    }
}

TEST(ConvGrid, CasesCoverEveryFactorValueAndEveryPairOfBinaryFactors) {
  // Keeps the covering claim at the top of this file true when kCases is edited.
  std::set<int64_t> channels;
  for (const ConvCase& c : kCases) channels.insert(c.channels);
  EXPECT_EQ(channels, (std::set<int64_t>{1, 3, 63, 64, 65, 130}));
  auto factors = [](const ConvCase& c) {
    return std::array<int, 6>{c.batch == 3, c.kernel == 3, c.stride == 2, c.pad == 1, c.depthwise,
                              static_cast<int>(c.height % 2)};
  };
  for (int a = 0; a < 6; ++a)
    for (int b = a + 1; b < 6; ++b)
      for (int va = 0; va < 2; ++va)
        for (int vb = 0; vb < 2; ++vb) {
          bool seen = false;
          for (const ConvCase& c : kCases) seen |= factors(c)[static_cast<std::size_t>(a)] == va && factors(c)[static_cast<std::size_t>(b)] == vb;
          EXPECT_TRUE(seen) << "factors " << a << "=" << va << " and " << b << "=" << vb << " never meet";
        }
}

TEST_P(ConvPaths, EveryShapeAtCornerBitPairs) {
  BITMIX_REQUIRE_PATH(GetParam());
  const std::pair<int, int> corners[] = {{1, 1}, {8, 8}, {1, 8}, {8, 1}, {2, 3}};
  int i = 0;
  for (int variant = 0; variant < 3; ++variant) {
    const DensePath dense = variant == 2 ? DensePath::automatic : variant == 0 ? DensePath::bit_serial : DensePath::integer;
    const KernelFamily family = variant == 2 ? KernelFamily::int8 : KernelFamily::automatic;
    ScopedDensePath forced(dense);
    for (const ConvCase& cc : kCases)
      for (auto [m, k] : corners)
        for (WeightEncoding enc : {WeightEncoding::twos_complement, WeightEncoding::odd_levels}) {
          BitRun run{m, k, enc, static_cast<OutputKind>(i % 3), 1 + i % 3, i % 2, family};
          ASSERT_TRUE(check_case(cc, run, 5000 + static_cast<uint64_t>(i)))
              << describe(cc, run) << " dense path " << path_label(dense);
          ++i;
        }
  }
}

TEST_P(ConvPaths, ResNetShapesManyTilesAndBlocks) {
  BITMIX_REQUIRE_PATH(GetParam());
  // Several tiles of 48 pixels, several 16-lane blocks, a stride-2 downsampling and a 1x1
  // shortcut reading an input stored with a larger border.
  const ConvCase cases[] = {{2, 16, 12, 12, 32, 3, 1, 1, false}, {2, 32, 12, 12, 64, 3, 2, 1, false},
                            {2, 32, 12, 12, 64, 1, 2, 0, false}};
  int i = 0;
  for (const ConvCase& cc : cases)
    for (auto [m, k] : {std::pair{1, 1}, std::pair{2, 2}, std::pair{4, 3}, std::pair{8, 8}})
      for (KernelFamily family : {KernelFamily::automatic, KernelFamily::popcount, KernelFamily::int8}) {
        BitRun run{m, k, i % 2 ? WeightEncoding::odd_levels : WeightEncoding::twos_complement,
                   static_cast<OutputKind>(i % 3), 1 + i % 4, 1, family};
        ASSERT_TRUE(check_case(cc, run, 9000 + static_cast<uint64_t>(i))) << describe(cc, run);
        ++i;
      }
}

TEST_P(ConvPaths, ExtremeCodesAtTheAccumulatorLimit) {
  // 8-bit x 8-bit with 1820 channels x 3x3 = 16380 terms, just under the 16383-term limit, and
  // every code at the end of its range: the partial sums of every path come close to 2^31.
  BITMIX_REQUIRE_PATH(GetParam());
  for (int variant = 0; variant < 3; ++variant)
  for (WeightEncoding enc : {WeightEncoding::twos_complement, WeightEncoding::odd_levels}) {
    ScopedDensePath forced(variant == 0 ? DensePath::bit_serial : variant == 1 ? DensePath::integer : DensePath::automatic);
    const KernelFamily family = variant == 2 ? KernelFamily::int8 : KernelFamily::automatic;
    const int64_t c = 1820;
    const int32_t extreme = enc == WeightEncoding::twos_complement ? -128 : -255;
    const std::vector<int32_t> codes(static_cast<std::size_t>(2 * c * 9), extreme);
    std::vector<int32_t> mixed = codes;
    for (std::size_t i = c * 9; i < mixed.size(); ++i) mixed[i] = enc == WeightEncoding::twos_complement ? 127 : 255;
    const PackedWeights w = PackedWeights::pack(mixed, {2, c, 3, 3, 8, enc, false});
    const PackedActivations x = PackedActivations::from_codes(std::vector<uint8_t>(static_cast<std::size_t>(c * 9), 255), 1,
                                                              c, 3, 3, ActivationQuant{8, 1.0f, 0}, 0);
    Tensor fast, slow;
    conv2d(x, w, Conv2dParams{1, 1, 0, 0, family}, Epilogue::identity(2), fast);
    reference::conv2d(x, w, Conv2dParams{}, Epilogue::identity(2), slow);
    EXPECT_TRUE(testing::same_bits(fast, slow));
    EXPECT_EQ(fast[0], static_cast<float>(int64_t{extreme} * 255 * c * 9));
  }
}

TEST_P(ConvPaths, Int8FamilyAtTheEndsOfEveryCodeRange) {
  // Every (M, K) pair, every weight at one end of its range and every activation code at its
  // maximum, over 300 channel quads: more than the AVX2 int16 lanes may sum for every pair
  // below 3 + 3 bits, so a missing flush, a saturated VPMADDUBSW pair or a wrong nibble split
  // changes the result. A zero point of 0 keeps the sums at their largest.
  BITMIX_REQUIRE_PATH(GetParam());
  const int64_t c = 1200;
  for (int m = 1; m <= 8; ++m)
    for (int k = 1; k <= 8; ++k)
      for (WeightEncoding enc : {WeightEncoding::twos_complement, WeightEncoding::odd_levels}) {
        const int32_t lo = enc == WeightEncoding::twos_complement ? -(1 << (m - 1)) : -((1 << m) - 1);
        const int32_t hi = enc == WeightEncoding::twos_complement ? (1 << (m - 1)) - 1 : (1 << m) - 1;
        // lanes 0..15: all lo, all hi, alternating; lanes past 16 (a second block): hi then lo
        std::vector<int32_t> codes(static_cast<std::size_t>(20 * c));
        for (int64_t oc = 0; oc < 20; ++oc)
          for (int64_t ic = 0; ic < c; ++ic)
            codes[static_cast<std::size_t>(oc * c + ic)] = oc % 3 == 0 ? lo : oc % 3 == 1 ? hi : (ic % 2 ? lo : hi);
        const PackedWeights w = PackedWeights::pack(codes, {20, c, 1, 1, m, enc, false});
        const uint8_t top = static_cast<uint8_t>((1 << k) - 1);
        const PackedActivations x = PackedActivations::from_codes(std::vector<uint8_t>(static_cast<std::size_t>(2 * c * 3), top),
                                                                  2, c, 1, 3, ActivationQuant{k, 1.0f, 0}, 0);
        Tensor fast, slow;
        conv2d(x, w, Conv2dParams{1, 1, 0, 0, KernelFamily::int8}, Epilogue::identity(20), fast);
        reference::conv2d(x, w, Conv2dParams{}, Epilogue::identity(20), slow);
        ASSERT_TRUE(testing::same_bits(fast, slow)) << "W" << m << "A" << k << " " << encoding_name(enc);
        ASSERT_EQ(fast[0], static_cast<float>(int64_t{lo} * top * c)) << "W" << m << "A" << k;
      }
}

TEST(KernelFamilies, NamesParseAndTheChooserNeverSaysAutomatic) {
  for (const KernelFamilyInfo& f : kKernelFamilies) {
    EXPECT_EQ(parse_kernel_family(f.name), f.family);
    EXPECT_EQ(kernel_family_name(f.family), f.name);
  }
  EXPECT_EQ(parse_kernel_family("auto"), KernelFamily::automatic);
  try {
    parse_kernel_family("lut4", "BITMIX_KERNEL_FAMILY");
    ADD_FAILURE() << "no error";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("BITMIX_KERNEL_FAMILY='lut4'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("popcount"), std::string::npos) << e.what();
  }
  for (int m = 1; m <= 8; ++m)
    for (int k = 1; k <= 8; ++k) {
      const KernelFamily dense = choose_kernel_family({16, 16, 3, 3, m, WeightEncoding::twos_complement, false}, k);
      EXPECT_NE(dense, KernelFamily::automatic);
      EXPECT_EQ(choose_kernel_family({16, 16, 3, 3, m, WeightEncoding::twos_complement, true}, k), KernelFamily::popcount);
    }
  EXPECT_THROW(choose_kernel_family({16, 16, 3, 3, 2, WeightEncoding::twos_complement, false}, 9), ArgumentError);
}

TEST_P(ConvPaths, ReusedPackedOutputGetsItsBorderBack) {
  BITMIX_REQUIRE_PATH(GetParam());
  Rng rng(41);
  const PackedActivations x = testing::random_activations(rng, 2, 8, 5, 5, 2, 1);
  const PackedWeights w = testing::random_weights(rng, {10, 8, 3, 3, 2, WeightEncoding::twos_complement, false});
  auto [scale, bias] = testing::random_scale_bias(rng, 10, 0.2f);
  const Epilogue e = Epilogue::requantize(scale, bias, true, ActivationQuant{3, 0.5f, 5}, 1);
  PackedActivations out, expected;
  conv2d(x, w, Conv2dParams{1, 1, 1, 1}, e, out);
  out.set_code(1, 9, -1, -1, 0);  // scribble on the border and the interior
  out.set_code(0, 3, 2, 2, 7);
  conv2d(x, w, Conv2dParams{1, 1, 1, 1}, e, out);
  reference::conv2d(x, w, Conv2dParams{1, 1, 1, 1}, e, expected);
  EXPECT_TRUE(testing::same_codes(out, expected));
}

TEST_P(ConvPaths, RequantizationHonoursTheReciprocalMode) {
  // y = (acc + 0.5) * s lands next to rounding ties of y / s, where x / s and x * (1 / s) differ
  // for s = 0.21: every path must follow the mode it is given, and the modes must really differ.
  BITMIX_REQUIRE_PATH(GetParam());
  std::vector<uint8_t> codes(256);
  for (int i = 0; i < 256; ++i) codes[static_cast<std::size_t>(i)] = static_cast<uint8_t>(i);
  const PackedActivations x = PackedActivations::from_codes(codes, 1, 1, 16, 16, ActivationQuant{8, 1.0f, 0}, 0);
  const PackedWeights w = PackedWeights::pack(std::vector<int32_t>{1}, {1, 1, 1, 1, 2, WeightEncoding::twos_complement, false});
  std::vector<uint8_t> by_mode[2];
  for (bool reciprocal : {false, true}) {
    const ActivationQuant out_q{8, 0.21f, 100, reciprocal};
    const Epilogue e = Epilogue::requantize({0.21f}, {0.105f}, false, out_q, 0);
    PackedActivations fast, slow;
    conv2d(x, w, Conv2dParams{}, e, fast);
    reference::conv2d(x, w, Conv2dParams{}, e, slow);
    ASSERT_TRUE(testing::same_codes(fast, slow)) << "reciprocal=" << reciprocal;
    by_mode[reciprocal] = fast.codes();
  }
  EXPECT_NE(by_mode[0], by_mode[1]);
}

TEST_P(ConvPaths, ResultsDoNotDependOnTheThreadCount) {
  BITMIX_REQUIRE_PATH(GetParam());
  Rng rng(77);
  const PackedActivations input = testing::random_activations(rng, 3, 16, 9, 9, 2, 1);
  const PackedWeights weights = testing::random_weights(rng, {24, 16, 3, 3, 2, WeightEncoding::odd_levels, false});
  auto [scale, bias] = testing::random_scale_bias(rng, 24, 0.05f);
  const Epilogue e = Epilogue::float_output(scale, bias, true);
  set_num_threads(1);
  const Tensor one = conv2d(input, weights, Conv2dParams{1, 1, 1, 1}, e);
  set_num_threads(2);
  const Tensor two = conv2d(input, weights, Conv2dParams{1, 1, 1, 1}, e);
  set_num_threads(0);
  EXPECT_TRUE(testing::same_bits(one, two));
}

TEST_P(ConvPaths, GemmEqualsTheReferenceAndANaiveProduct) {
  BITMIX_REQUIRE_PATH(GetParam());
  Rng rng(31);
  int i = 0;
  for (int64_t rows : {1, 16, 33})
    for (int64_t depth : {1, 31, 64, 65, 300})
      for (int64_t n : {1, 5, 50}) {
        const int m = 1 + i % 8, k = 1 + (i * 3) % 8;
        const auto enc = i % 2 ? WeightEncoding::odd_levels : WeightEncoding::twos_complement;
        ++i;
        const PackedActivations x = testing::random_activations(rng, n, depth, 1, 1, k, 0);
        const PackedWeights w = testing::random_weights(rng, {rows, depth, 1, 1, m, enc, false});
        Tensor out;
        gemm(x, w, Epilogue::identity(rows), out);
        ASSERT_EQ(out.shape(), (Shape{n, rows}));
        const std::vector<uint8_t> xc = x.codes();
        const std::vector<int32_t> wc = w.codes();
        for (int64_t r = 0; r < n; ++r)
          for (int64_t c = 0; c < rows; ++c) {
            int64_t sum = 0;
            for (int64_t d = 0; d < depth; ++d)
              sum += int64_t{wc[static_cast<std::size_t>(c * depth + d)]} *
                     (xc[static_cast<std::size_t>(r * depth + d)] - x.quant().zero_point);
            ASSERT_EQ(out.at(r, c), static_cast<float>(sum)) << "rows=" << rows << " depth=" << depth << " n=" << n;
          }
        auto [scale, bias] = testing::random_scale_bias(rng, rows, 0.1f);
        const Epilogue rq = Epilogue::requantize(scale, bias, true, ActivationQuant{k, 0.5f, 1 % (1 << k)}, 0);
        PackedActivations fast, slow;
        gemm(x, w, rq, fast);
        reference::conv2d(x, w, Conv2dParams{}, rq, slow);
        ASSERT_TRUE(testing::same_codes(fast, slow));
      }
}

INSTANTIATE_TEST_SUITE_P(Paths, ConvPaths, ::testing::ValuesIn(testing::all_paths()), testing::path_name);

}  // namespace
}  // namespace bitmix::kernels
