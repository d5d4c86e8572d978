// Convolution: forward against a naive double-precision reference, backward against finite
// differences, over kernels, strides, paddings and groups (depthwise included), on every
// compiled ISA path of the GEMM underneath.
#include <gtest/gtest.h>

#include <cmath>

#include "bitmix/core/cpu.hpp"
#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/nn/functional.hpp"
#include "nn/gradcheck.hpp"

namespace bitmix::nn {
namespace {

using testing::expect_gradient;
using testing::projected;
using testing::random_tensor;

// out[n][o][y][x] = b[o] + sum_{c in group, i, j} w[o][c][i][j] * in[n][c][y*s - p + i][x*s - p + j]
std::vector<double> naive_conv(const Tensor& x, const Tensor& w, const Tensor* b, const Conv2dOptions& o) {
  const int64_t n = x.dim(0), h = x.dim(2), wd = x.dim(3);
  const int64_t oh = (h + 2 * o.pad_h - o.kernel_h) / o.stride_h + 1, ow = (wd + 2 * o.pad_w - o.kernel_w) / o.stride_w + 1;
  const int64_t cin_g = o.in_channels / o.groups, cout_g = o.out_channels / o.groups;
  std::vector<double> out(static_cast<std::size_t>(n * o.out_channels * oh * ow));
  for (int64_t img = 0; img < n; ++img)
    for (int64_t oc = 0; oc < o.out_channels; ++oc) {
      const int64_t grp = oc / cout_g;
      for (int64_t y = 0; y < oh; ++y)
        for (int64_t xx = 0; xx < ow; ++xx) {
          double sum = b != nullptr ? double{(*b)[oc]} : 0.0;
          for (int64_t c = 0; c < cin_g; ++c)
            for (int64_t i = 0; i < o.kernel_h; ++i)
              for (int64_t j = 0; j < o.kernel_w; ++j) {
                const int64_t iy = y * o.stride_h - o.pad_h + i, ix = xx * o.stride_w - o.pad_w + j;
                if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                sum += double{w.at(oc, c, i, j)} * double{x.at(img, grp * cin_g + c, iy, ix)};
              }
          out[static_cast<std::size_t>(((img * o.out_channels + oc) * oh + y) * ow + xx)] = sum;
        }
    }
  return out;
}

struct ConvCase {
  int64_t n, cin, cout, h, w, kh, kw, sh, sw, ph, pw, groups;
  bool bias;
};

Conv2dOptions options_of(const ConvCase& c) {
  Conv2dOptions o;
  o.in_channels = c.cin;
  o.out_channels = c.cout;
  o.kernel_h = c.kh;
  o.kernel_w = c.kw;
  o.stride_h = c.sh;
  o.stride_w = c.sw;
  o.pad_h = c.ph;
  o.pad_w = c.pw;
  o.groups = c.groups;
  o.bias = c.bias;
  return o;
}

std::string describe(const ConvCase& c) {
  return "n" + std::to_string(c.n) + " c" + std::to_string(c.cin) + "->" + std::to_string(c.cout) + " " +
         std::to_string(c.h) + "x" + std::to_string(c.w) + " k" + std::to_string(c.kh) + "x" + std::to_string(c.kw) +
         " s" + std::to_string(c.sh) + "x" + std::to_string(c.sw) + " p" + std::to_string(c.ph) + "x" +
         std::to_string(c.pw) + " g" + std::to_string(c.groups) + (c.bias ? " bias" : "");
}

const std::vector<ConvCase>& forward_cases() {
  static const std::vector<ConvCase> cases = {
      {3, 3, 16, 32, 32, 3, 3, 1, 1, 1, 1, 1, false},   // ResNet stem
      {4, 16, 32, 16, 16, 3, 3, 2, 2, 1, 1, 1, false},  // ResNet downsampling conv
      {2, 64, 64, 8, 8, 3, 3, 1, 1, 1, 1, 1, true},
      {2, 8, 12, 7, 9, 1, 1, 1, 1, 0, 0, 1, true},      // 1x1
      {2, 8, 12, 9, 7, 1, 1, 2, 2, 0, 0, 1, false},     // 1x1 projection shortcut
      {1, 6, 6, 11, 10, 3, 3, 1, 1, 1, 1, 6, true},     // depthwise
      {2, 6, 9, 10, 11, 3, 3, 2, 1, 1, 0, 3, false},    // groups, mixed stride/padding
      {2, 4, 5, 9, 12, 5, 3, 1, 3, 2, 1, 1, true},      // rectangular kernel
      {1, 3, 4, 6, 6, 3, 3, 1, 1, 0, 0, 1, false},      // valid convolution
      {2, 3, 4, 8, 8, 2, 2, 1, 1, 0, 0, 1, false},      // even kernel
      {1, 2, 3, 5, 5, 3, 3, 1, 1, 3, 3, 1, false},      // padding larger than kernel - 1
      {2, 5, 7, 13, 13, 7, 7, 3, 3, 3, 3, 1, true},
  };
  return cases;
}

class ConvIsaTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_available(GetParam())) GTEST_SKIP() << "ISA " << isa_name(GetParam()) << " not available here";
  }
};

TEST_P(ConvIsaTest, ForwardMatchesNaiveReference) {
  ScopedIsaCap cap(GetParam());
  Rng rng(1);
  for (const ConvCase& c : forward_cases()) {
    const Conv2dOptions o = options_of(c);
    const Tensor x = random_tensor({c.n, c.cin, c.h, c.w}, rng);
    const Tensor w = random_tensor(o.weight_shape(), rng);
    const Tensor b = random_tensor({c.cout}, rng);
    Tensor y;
    conv2d_forward(x, w, c.bias ? &b : nullptr, o, y);
    const std::vector<double> want = naive_conv(x, w, c.bias ? &b : nullptr, o);
    ASSERT_EQ(static_cast<std::size_t>(y.numel()), want.size()) << describe(c);
    const double depth = static_cast<double>(c.cin / c.groups * c.kh * c.kw);
    for (int64_t i = 0; i < y.numel(); ++i)
      ASSERT_NEAR(y[i], want[static_cast<std::size_t>(i)], 1e-5 * depth + 1e-5) << describe(c) << " element " << i;
  }
}

TEST_P(ConvIsaTest, BackwardMatchesFiniteDifferences) {
  ScopedIsaCap cap(GetParam());
  Rng rng(2);
  for (const ConvCase& c : forward_cases()) {
    const Conv2dOptions o = options_of(c);
    Tensor x = random_tensor({c.n, c.cin, c.h, c.w}, rng);
    Tensor w = random_tensor(o.weight_shape(), rng);
    Tensor b = random_tensor({c.cout}, rng);
    Tensor y;
    conv2d_forward(x, w, c.bias ? &b : nullptr, o, y);
    const Tensor r = random_tensor(y.shape(), rng);
    Tensor gx, gw(o.weight_shape(), 0.5f), gb({c.cout}, -0.25f);
    conv2d_backward(x, w, r, o, &gx, &gw, c.bias ? &gb : nullptr, /*accumulate=*/true);
    // Accumulation: remove the initial values before comparing.
    for (float& v : gw.values()) v -= 0.5f;
    for (float& v : gb.values()) v += 0.25f;
    auto loss = [&] {
      Tensor out;
      conv2d_forward(x, w, c.bias ? &b : nullptr, o, out);
      return projected(out, r);
    };
    expect_gradient(describe(c) + " input", x, gx, loss);
    expect_gradient(describe(c) + " weight", w, gw, loss);
    if (c.bias) expect_gradient(describe(c) + " bias", b, gb, loss);
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, ConvIsaTest, ::testing::Values(Isa::scalar, Isa::avx2, Isa::avx512),
                         [](const ::testing::TestParamInfo<Isa>& param_info) {
                           return std::string(isa_name(param_info.param));
                         });

TEST(Conv2d, BackwardWithoutAccumulateOverwritesAndSkipsInputGradient) {
  Rng rng(3);
  const Conv2dOptions o = Conv2dOptions::square(4, 6, 3, 1, 1);
  const Tensor x = random_tensor({3, 4, 6, 6}, rng);
  const Tensor w = random_tensor(o.weight_shape(), rng);
  Tensor y;
  conv2d_forward(x, w, nullptr, o, y);
  const Tensor r = random_tensor(y.shape(), rng);
  Tensor gw_fresh, gw_garbage(o.weight_shape(), 1e30f);
  conv2d_backward(x, w, r, o, nullptr, &gw_fresh, nullptr, false);
  conv2d_backward(x, w, r, o, nullptr, &gw_garbage, nullptr, false);
  EXPECT_EQ(gw_fresh.shape(), o.weight_shape());
  for (int64_t i = 0; i < gw_fresh.numel(); ++i) EXPECT_EQ(gw_fresh[i], gw_garbage[i]);
}

// The batch is split across threads for the forward pass, but every image's GEMM is the same,
// so the output is identical for any thread count; the backward pass is identical run to run
// at a fixed thread count.
TEST(Conv2d, DeterministicAcrossRunsAndThreadCounts) {
  Rng rng(4);
  const Conv2dOptions o = Conv2dOptions::square(16, 16, 3, 1, 1);
  const Tensor x = random_tensor({6, 16, 12, 12}, rng);
  const Tensor w = random_tensor(o.weight_shape(), rng);
  const int saved = num_threads();
  std::vector<Tensor> outputs;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    Tensor y;
    conv2d_forward(x, w, nullptr, o, y);
    outputs.push_back(y);
  }
  set_num_threads(saved);
  for (std::size_t k = 1; k < outputs.size(); ++k)
    for (int64_t i = 0; i < outputs[0].numel(); ++i) ASSERT_EQ(outputs[0][i], outputs[k][i]);

  const Tensor r = random_tensor(outputs[0].shape(), rng);
  Tensor gx1, gw1, gx2, gw2;
  conv2d_backward(x, w, r, o, &gx1, &gw1, nullptr, false);
  conv2d_backward(x, w, r, o, &gx2, &gw2, nullptr, false);
  for (int64_t i = 0; i < gx1.numel(); ++i) ASSERT_EQ(gx1[i], gx2[i]);
  for (int64_t i = 0; i < gw1.numel(); ++i) ASSERT_EQ(gw1[i], gw2[i]);
}

TEST(Conv2d, ShapeErrorsNameTheLayer) {
  Rng rng(5);
  const Conv2dOptions o = Conv2dOptions::square(3, 8, 3, 1, 1);
  const Tensor w = random_tensor(o.weight_shape(), rng);
  Tensor y;
  try {
    conv2d_forward(Tensor({2, 4, 8, 8}), w, nullptr, o, y, "layer1.0.conv1");
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("layer1.0.conv1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("3 input channels"), std::string::npos) << e.what();
  }
  EXPECT_THROW(conv2d_forward(Tensor({2, 3, 8}), w, nullptr, o, y), ShapeError);
  EXPECT_THROW(conv2d_forward(Tensor({2, 3, 8, 8}), Tensor({8, 3, 5, 5}), nullptr, o, y), ShapeError);
  EXPECT_THROW(conv2d_forward(Tensor({2, 3, 1, 1}), w, nullptr, Conv2dOptions::square(3, 8, 3, 1, 0), y), ShapeError);
  EXPECT_THROW(Conv2dOptions::square(3, 8, 3, 1, 1, 2).validate("x"), ArgumentError);
  EXPECT_THROW(Conv2dOptions::square(4, 8, 3, 0, 1).validate("x"), ArgumentError);
}

}  // namespace
}  // namespace bitmix::nn
