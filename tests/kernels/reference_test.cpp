// The reference itself against an independent formulation: the input is materialized with its
// zero padding (code z) and correlated with the weights in int64, and the epilogue is checked
// against real-valued arithmetic.
#include <gtest/gtest.h>

#include <cmath>

#include "bitmix/core/error.hpp"
#include "kernel_test_util.hpp"

namespace bitmix::kernels {
namespace {

std::vector<int64_t> padded_correlation(const PackedActivations& x, const PackedWeights& w, int stride, int pad) {
  const WeightSpec& s = w.spec();
  const int64_t n_img = x.batch(), c = x.channels(), h = x.height(), wd = x.width();
  const int64_t ph = h + 2 * pad, pw = wd + 2 * pad;
  std::vector<int32_t> padded(static_cast<std::size_t>(n_img * c * ph * pw), x.quant().zero_point);
  const std::vector<uint8_t> codes = x.codes();
  for (int64_t i = 0; i < n_img * c; ++i)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t xx = 0; xx < wd; ++xx)
        padded[static_cast<std::size_t>((i * ph + y + pad) * pw + xx + pad)] = codes[static_cast<std::size_t>((i * h + y) * wd + xx)];
  const int64_t oh = (ph - s.kernel_h) / stride + 1, ow = (pw - s.kernel_w) / stride + 1;
  std::vector<int64_t> out;
  for (int64_t n = 0; n < n_img; ++n)
    for (int64_t oc = 0; oc < s.out_channels; ++oc)
      for (int64_t y = 0; y < oh; ++y)
        for (int64_t xx = 0; xx < ow; ++xx) {
          int64_t sum = 0;
          for (int64_t ic = 0; ic < c; ++ic) {
            if (s.depthwise && ic != oc / (s.out_channels / c)) continue;
            for (int64_t kh = 0; kh < s.kernel_h; ++kh)
              for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
                const int64_t v = padded[static_cast<std::size_t>(((n * c + ic) * ph + y * stride + kh) * pw + xx * stride + kw)];
                sum += w.code_at(oc, s.depthwise ? 0 : ic, kh, kw) * (v - x.quant().zero_point);
              }
          }
          out.push_back(sum);
        }
  return out;
}

TEST(Reference, AccumulatorsEqualAPaddedCorrelation) {
  Rng rng(8);
  for (int trial = 0; trial < 24; ++trial) {
    const bool depthwise = trial % 4 == 3;
    const int64_t c = 1 + static_cast<int64_t>(rng.below(20));
    const int kernel = trial % 3 == 0 ? 1 : 3, stride = 1 + trial % 2, pad = (trial / 2) % 2;
    const int m = 1 + static_cast<int>(rng.below(8)), k = 1 + static_cast<int>(rng.below(8));
    const auto enc = trial % 2 ? WeightEncoding::odd_levels : WeightEncoding::twos_complement;
    const PackedActivations x = testing::random_activations(rng, 2, c, 5 + trial % 2, 6, k, pad);
    const PackedWeights w =
        testing::random_weights(rng, {depthwise ? 2 * c : 7, c, kernel, kernel, m, enc, depthwise});
    const std::vector<int32_t> acc = reference::conv2d_accumulators(x, w, Conv2dParams{stride, stride, pad, pad});
    const std::vector<int64_t> expected = padded_correlation(x, w, stride, pad);
    ASSERT_EQ(acc.size(), expected.size());
    for (std::size_t i = 0; i < acc.size(); ++i) ASSERT_EQ(acc[i], expected[i]) << "trial " << trial << " index " << i;
  }
}

TEST(Reference, FloatOutputIsTheRealConvolutionOfDequantizedValues) {
  // The real-valued convolution of dequantized activations with integer weights, in double,
  // scaled: equals the float epilogue up to the two float roundings it defines.
  Rng rng(9);
  const PackedActivations x = testing::random_activations(rng, 1, 6, 5, 5, 4, 1);
  const PackedWeights w = testing::random_weights(rng, {4, 6, 3, 3, 3, WeightEncoding::odd_levels, false});
  const Tensor real = dequantize(x);
  const std::vector<float> scale{0.5f, -0.25f, 1.5f, 0.0f}, bias{0.1f, 0.2f, -0.3f, 0.7f};
  const Tensor y = [&] {
    Tensor out;
    reference::conv2d(x, w, Conv2dParams{1, 1, 1, 1}, Epilogue::float_output(scale, bias, false), out);
    return out;
  }();
  for (int64_t oc = 0; oc < 4; ++oc)
    for (int64_t oh = 0; oh < 5; ++oh)
      for (int64_t ow = 0; ow < 5; ++ow) {
        double sum = 0.0;
        for (int64_t ic = 0; ic < 6; ++ic)
          for (int64_t kh = 0; kh < 3; ++kh)
            for (int64_t kw = 0; kw < 3; ++kw) {
              const int64_t ih = oh + kh - 1, iw = ow + kw - 1;
              if (ih < 0 || ih >= 5 || iw < 0 || iw >= 5) continue;  // real zero padding
              sum += w.code_at(oc, ic, kh, kw) * static_cast<double>(real.at(0, ic, ih, iw));
            }
        const double expected = sum / static_cast<double>(x.quant().scale) * static_cast<double>(scale[static_cast<std::size_t>(oc)]) +
                                static_cast<double>(bias[static_cast<std::size_t>(oc)]);
        EXPECT_NEAR(static_cast<double>(y.at(0, oc, oh, ow)), expected, 1e-4 * (1.0 + std::fabs(expected)));
      }
}

TEST(Epilogue, ThresholdsReproduceTheDivisionExactly) {
  // The integer thresholds used for small output bitwidths must give the code of the float
  // definition for every accumulator, especially right at and next to each threshold.
  Rng rng(12);
  for (int trial = 0; trial < 60; ++trial) {
    const int bits = 1 + trial % Epilogue::kMaxThresholdBits;
    const int64_t channels = 20;
    auto [scale, bias] = testing::random_scale_bias(rng, channels, trial % 5 == 0 ? 1e-6f : 0.05f);
    if (trial % 7 == 0) scale[3] = 1e30f;  // saturating channel
    const ActivationQuant q{bits, rng.uniform(0.05f, 2.0f), static_cast<int32_t>(rng.below(uint64_t{1} << bits))};
    const Epilogue e = Epilogue::requantize(scale, bias, trial % 2 == 0, q, 0);
    ASSERT_TRUE(e.uses_thresholds());
    for (int64_t oc = 0; oc < channels; ++oc) {
      const int32_t* block = e.threshold_block(oc / 16);
      const int lane = static_cast<int>(oc % 16);
      auto by_threshold = [&](int32_t acc) {
        int code = 0;
        for (int k = 1; k <= e.threshold_count(); ++k) code += block[lane] * acc >= block[k * 16 + lane];
        return code;
      };
      std::vector<int32_t> probes{0, 1, -1, 1000, -1000, 1 << 30, -(1 << 30), 0x7ffffffe, -0x7ffffffe};
      for (int k = 1; k <= e.threshold_count(); ++k) {
        const int64_t t = block[k * 16 + lane];
        for (int64_t d = -2; d <= 2; ++d) {
          const int64_t a = block[lane] * (t + d);
          if (a >= -0x7ffffffe && a <= 0x7ffffffe) probes.push_back(static_cast<int32_t>(a));
        }
      }
      for (int r = 0; r < 50; ++r) probes.push_back(static_cast<int32_t>(rng.below(20001)) - 10000);
      for (int32_t acc : probes)
        ASSERT_EQ(by_threshold(acc), quantize_code(e.value(oc, acc), q))
            << "trial " << trial << " oc " << oc << " acc " << acc << " scale " << scale[static_cast<std::size_t>(oc)];
    }
  }
}

TEST(Epilogue, ValueIsTwoRoundedOperationsAndRelu) {
  const Epilogue e = Epilogue::float_output({0.1f, 3.0f}, {0.2f, -0.0f}, true);
  const float t = static_cast<float>(7) * 0.1f;
  EXPECT_EQ(e.value(0, 7), t + 0.2f);
  EXPECT_EQ(e.value(1, -5), 0.0f);
  EXPECT_FALSE(std::signbit(e.value(1, 0)));  // -0 clamps to +0
  const Epilogue plain = Epilogue::float_output({1.0f}, {-0.5f}, false);
  EXPECT_EQ(plain.value(0, -3), -3.5f);
}

TEST(Epilogue, RejectsBadArguments) {
  EXPECT_THROW(Epilogue::float_output({}, {}, false), ArgumentError);
  EXPECT_THROW(Epilogue::float_output({1.0f}, {1.0f, 2.0f}, false), ArgumentError);
  EXPECT_THROW(Epilogue::float_output({std::nanf("")}, {1.0f}, false), ArgumentError);
  EXPECT_THROW(Epilogue::float_output({1.0f}, {INFINITY}, false), ArgumentError);
  EXPECT_THROW(Epilogue::requantize({1.0f}, {0.0f}, false, ActivationQuant{0, 1.0f, 0}), ArgumentError);
  EXPECT_THROW(Epilogue::requantize({1.0f}, {0.0f}, false, ActivationQuant{2, 1.0f, 0}, -1), ArgumentError);
  EXPECT_THROW(Epilogue::identity(0), ArgumentError);
}

}  // namespace
}  // namespace bitmix::kernels
