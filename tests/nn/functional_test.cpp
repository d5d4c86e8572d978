// Batch norm (training and eval, fused residual + ReLU), linear, pooling, ReLU and softmax
// cross-entropy: forward against direct formulas, backward against finite differences.
#include <gtest/gtest.h>

#include <cmath>

#include "bitmix/core/error.hpp"
#include "bitmix/nn/functional.hpp"
#include "nn/gradcheck.hpp"

namespace bitmix::nn {
namespace {

using testing::expect_gradient;
using testing::GradCheckOptions;
using testing::projected;
using testing::random_tensor;

TEST(BatchNorm, TrainForwardNormalizesWithBatchStatisticsAndUpdatesRunningStats) {
  Rng rng(1);
  const int64_t n = 3, c = 4, h = 5, w = 6;
  Tensor x = random_tensor({n, c, h, w}, rng, -2.0f, 5.0f);
  for (int64_t i = 0; i < x.numel(); ++i) x[i] += 100.0f;  // a large mean must not hurt the variance
  const Tensor gamma = random_tensor({c}, rng, 0.5f, 2.0f), beta = random_tensor({c}, rng);
  Tensor rm({c}, 0.5f), rv({c}, 2.0f), y;
  BatchNormSaved saved;
  BatchNormOptions opt;
  batch_norm_train_forward(x, gamma, beta, rm, rv, opt, nullptr, false, y, saved);
  for (int64_t ch = 0; ch < c; ++ch) {
    double sum = 0, sq = 0;
    const double count = static_cast<double>(n * h * w);
    for (int64_t img = 0; img < n; ++img)
      for (int64_t p = 0; p < h * w; ++p) sum += double{x[(img * c + ch) * h * w + p]};
    const double mean = sum / count;
    for (int64_t img = 0; img < n; ++img)
      for (int64_t p = 0; p < h * w; ++p) sq += std::pow(double{x[(img * c + ch) * h * w + p]} - mean, 2);
    const double var = sq / count;
    EXPECT_NEAR(saved.mean[ch], mean, 1e-4);
    EXPECT_NEAR(saved.inv_std[ch], 1.0 / std::sqrt(var + 1e-5), 1e-3);
    EXPECT_NEAR(rm[ch], 0.9 * 0.5 + 0.1 * mean, 1e-4);
    EXPECT_NEAR(rv[ch], 0.9 * 2.0 + 0.1 * var * count / (count - 1), 1e-4);
    for (int64_t img = 0; img < n; ++img)
      for (int64_t p = 0; p < h * w; ++p) {
        const int64_t i = (img * c + ch) * h * w + p;
        const double want = double{gamma[ch]} * (double{x[i]} - mean) / std::sqrt(var + 1e-5) + double{beta[ch]};
        ASSERT_NEAR(y[i], want, 2e-4);
      }
  }
}

// All four fused variants (plain, +ReLU, +residual, +residual+ReLU) in training and eval mode.
TEST(BatchNorm, BackwardMatchesFiniteDifferences) {
  for (bool training : {true, false})
    for (bool relu : {false, true})
      for (bool with_residual : {false, true}) {
        Rng rng(2);
        const int64_t n = 2, c = 3, h = 3, w = 4;
        Tensor x = random_tensor({n, c, h, w}, rng, -2.0f, 2.0f);
        Tensor gamma = random_tensor({c}, rng, 0.5f, 1.5f), beta = random_tensor({c}, rng);
        Tensor residual = random_tensor({n, c, h, w}, rng);
        const Tensor rm = random_tensor({c}, rng), rv = random_tensor({c}, rng, 0.5f, 2.0f);
        const BatchNormOptions opt;
        const Tensor* res = with_residual ? &residual : nullptr;
        auto run = [&](Tensor& y, BatchNormSaved& saved) {
          Tensor m = rm, v = rv;
          if (training) batch_norm_train_forward(x, gamma, beta, m, v, opt, res, relu, y, saved);
          else batch_norm_eval_forward(x, gamma, beta, rm, rv, opt, res, relu, y);
        };
        Tensor y;
        BatchNormSaved saved;
        run(y, saved);
        const Tensor r = random_tensor(y.shape(), rng);
        Tensor gx, gres, gg({c}), gb({c});
        if (training)
          batch_norm_backward(x, gamma, saved, y, r, relu, &gx, with_residual ? &gres : nullptr, &gg, &gb);
        else
          batch_norm_eval_backward(x, gamma, rm, rv, opt, y, r, relu, &gx, with_residual ? &gres : nullptr, &gg, &gb);
        auto loss = [&] {
          Tensor out;
          BatchNormSaved s;
          run(out, s);
          return projected(out, r);
        };
        const std::string tag = std::string(training ? "train" : "eval") + (relu ? " relu" : "") +
                                (with_residual ? " residual" : "");
        GradCheckOptions fd;
        fd.eps = 1e-3f;
        fd.rtol = 2e-2;
        fd.atol = 5e-3;
        fd.max_elements = 1000;
        expect_gradient(tag + " input", x, gx, loss, fd);
        expect_gradient(tag + " gamma", gamma, gg, loss, fd);
        expect_gradient(tag + " beta", beta, gb, loss, fd);
        if (with_residual) expect_gradient(tag + " residual", residual, gres, loss, fd);
      }
}

TEST(BatchNorm, RejectsBadShapesNamingTheLayer) {
  Tensor y, rm({4}), rv({4}, 1.0f);
  BatchNormSaved saved;
  try {
    batch_norm_train_forward(Tensor({2, 3, 4, 4}), Tensor({4}), Tensor({4}), rm, rv, {}, nullptr, false, y, saved,
                             "layer3.1.bn2");
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("layer3.1.bn2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(batch_norm_train_forward(Tensor({1, 4, 1, 1}), Tensor({4}), Tensor({4}), rm, rv, {}, nullptr, false, y,
                                        saved),
               ShapeError);
}

TEST(Linear, ForwardAndBackward) {
  Rng rng(3);
  Tensor x = random_tensor({5, 2, 3, 2}, rng);  // flattened to 12 features
  Tensor w = random_tensor({7, 12}, rng), b = random_tensor({7}, rng);
  Tensor y;
  linear_forward(x, w, &b, y);
  ASSERT_EQ(y.shape(), (Shape{5, 7}));
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t o = 0; o < 7; ++o) {
      double want = b[o];
      for (int64_t k = 0; k < 12; ++k) want += double{x[i * 12 + k]} * double{w[o * 12 + k]};
      ASSERT_NEAR(y[i * 7 + o], want, 1e-5);
    }
  const Tensor r = random_tensor(y.shape(), rng);
  Tensor gx, gw, gb;
  linear_backward(x, w, r, &gx, &gw, &gb, false);
  EXPECT_EQ(gx.shape(), x.shape());
  auto loss = [&] {
    Tensor out;
    linear_forward(x, w, &b, out);
    return projected(out, r);
  };
  expect_gradient("linear input", x, gx, loss);
  expect_gradient("linear weight", w, gw, loss);
  expect_gradient("linear bias", b, gb, loss);
  EXPECT_THROW(linear_forward(Tensor({5, 11}), w, &b, y), ShapeError);
}

TEST(Pooling, MaxPoolForwardAndBackward) {
  Rng rng(4);
  for (const Pool2dOptions& o : {Pool2dOptions::square(2, 2), Pool2dOptions::square(3, 2, 1), Pool2dOptions::square(3, 1, 1)}) {
    Tensor x = random_tensor({2, 3, 7, 8}, rng);
    Tensor y;
    max_pool2d_forward(x, o, y);
    const Shape s = o.output_shape(x.shape(), "pool");
    ASSERT_EQ(y.shape(), s);
    for (int64_t q = 0; q < 6; ++q)
      for (int64_t oy = 0; oy < s[2]; ++oy)
        for (int64_t ox = 0; ox < s[3]; ++ox) {
          float best = -1e30f;
          for (int64_t i = 0; i < o.kernel_h; ++i)
            for (int64_t j = 0; j < o.kernel_w; ++j) {
              const int64_t iy = oy * o.stride_h - o.pad_h + i, ix = ox * o.stride_w - o.pad_w + j;
              if (iy >= 0 && iy < 7 && ix >= 0 && ix < 8) best = std::max(best, x[q * 56 + iy * 8 + ix]);
            }
          ASSERT_EQ(y[(q * s[2] + oy) * s[3] + ox], best);
        }
    const Tensor r = random_tensor(y.shape(), rng);
    Tensor gx;
    max_pool2d_backward(x, y, r, o, gx);
    auto loss = [&] {
      Tensor out;
      max_pool2d_forward(x, o, out);
      return projected(out, r);
    };
    GradCheckOptions fd;
    fd.eps = 1e-4f;  // distinct random values: no tie flips at this step
    fd.max_elements = 400;
    expect_gradient("max pool input", x, gx, loss, fd);
  }
}

TEST(Pooling, AvgPoolAndGlobalAvgPool) {
  Rng rng(5);
  const Pool2dOptions o = Pool2dOptions::square(3, 2, 1);
  Tensor x = random_tensor({2, 3, 7, 6}, rng);
  Tensor y;
  avg_pool2d_forward(x, o, y);
  // Spot-check one window against the definition (count_include_pad: divide by 9).
  double want = 0;
  for (int64_t iy = 0; iy < 2; ++iy)
    for (int64_t ix = 0; ix < 2; ++ix) want += double{x[iy * 6 + ix]};
  EXPECT_NEAR(y[0], want / 9.0, 1e-6);
  const Tensor r = random_tensor(y.shape(), rng);
  Tensor gx;
  avg_pool2d_backward(x.shape(), r, o, gx);
  auto loss = [&] {
    Tensor out;
    avg_pool2d_forward(x, o, out);
    return projected(out, r);
  };
  expect_gradient("avg pool input", x, gx, loss);

  Tensor g;
  global_avg_pool_forward(x, g);
  ASSERT_EQ(g.shape(), (Shape{2, 3}));
  double mean = 0;
  for (int64_t p = 0; p < 42; ++p) mean += double{x[42 + p]};
  EXPECT_NEAR(g[1], mean / 42, 1e-6);
  const Tensor rg = random_tensor(g.shape(), rng);
  Tensor ggx;
  global_avg_pool_backward(x.shape(), rg, ggx);
  auto gloss = [&] {
    Tensor out;
    global_avg_pool_forward(x, out);
    return projected(out, rg);
  };
  expect_gradient("global avg pool input", x, ggx, gloss);
}

TEST(Elementwise, ReluAndAdd) {
  Rng rng(6);
  Tensor x = random_tensor({3, 50}, rng);
  Tensor y;
  relu_forward(x, y);
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(y[i], x[i] > 0 ? x[i] : 0.0f);
  const Tensor r = random_tensor(y.shape(), rng);
  Tensor gx;
  relu_backward(y, r, gx);
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(gx[i], x[i] > 0 ? r[i] : 0.0f);
  Tensor sum;
  add_forward(x, r, sum);
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(sum[i], x[i] + r[i]);
  EXPECT_THROW(add_forward(x, Tensor({3, 49}), sum), ShapeError);
}

TEST(CrossEntropy, LossAndGradientWithAndWithoutSmoothing) {
  Rng rng(7);
  for (float smoothing : {0.0f, 0.1f}) {
    Tensor logits = random_tensor({4, 5}, rng, -3.0f, 3.0f);
    const std::vector<int> labels = {0, 4, 2, 2};
    Tensor grad;
    const CrossEntropyResult res = softmax_cross_entropy(logits, labels, smoothing, &grad);
    double want = 0;
    int64_t correct = 0;
    for (int64_t i = 0; i < 4; ++i) {
      double denom = 0;
      int64_t best = 0;
      for (int64_t j = 0; j < 5; ++j) {
        denom += std::exp(double{logits[i * 5 + j]});
        if (logits[i * 5 + j] > logits[i * 5 + best]) best = j;
      }
      correct += best == labels[static_cast<std::size_t>(i)];
      for (int64_t j = 0; j < 5; ++j) {
        const double target = (j == labels[static_cast<std::size_t>(i)] ? 1.0 - double{smoothing} : 0.0) + double{smoothing} / 5.0;
        want -= target * std::log(std::exp(double{logits[i * 5 + j]}) / denom);
      }
    }
    EXPECT_NEAR(res.loss, want / 4.0, 1e-6);
    EXPECT_EQ(res.correct, correct);
    GradCheckOptions fd;
    fd.eps = 1e-3f;
    expect_gradient("cross-entropy logits", logits, grad,
                    [&] { return softmax_cross_entropy(logits, labels, smoothing, nullptr).loss; }, fd);
  }
  Tensor logits({2, 3});
  EXPECT_THROW(softmax_cross_entropy(logits, std::vector<int>{0, 3}, 0.0f, nullptr), ArgumentError);
  EXPECT_THROW(softmax_cross_entropy(logits, std::vector<int>{0}, 0.0f, nullptr), ShapeError);
  EXPECT_THROW(softmax_cross_entropy(logits, std::vector<int>{0, 1}, 1.0f, nullptr), ArgumentError);
}

}  // namespace
}  // namespace bitmix::nn
