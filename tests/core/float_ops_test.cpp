// The shared forward float operations (src/core/float_ops.hpp) against straightforward scalar
// loops in the arithmetic order the header states, bit for bit, at several thread counts and on
// tensors large enough to be split into several chunks; special values (NaN, infinities, -0)
// included, since the runtime and nn must agree on them too.
#include "core/float_ops.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/core/rng.hpp"
#include "bitmix/core/thread_pool.hpp"

namespace bitmix {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Uniform values with a sprinkling of NaN, +-inf, +-0.
Tensor random_tensor(Rng& rng, const Shape& shape, float lo = -2.0f, float hi = 2.0f) {
  Tensor t(shape);
  const float specials[] = {kNaN, kInf, -kInf, 0.0f, -0.0f};
  for (float& v : t.values()) v = rng.bernoulli(0.01f) ? specials[rng.below(5)] : rng.uniform(lo, hi);
  return t;
}

// Bitwise equality (NaN payloads and the sign of zero included).
void expect_same_bits(const Tensor& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size())) << what;
  for (std::size_t i = 0; i < want.size(); ++i)
    ASSERT_EQ(std::memcmp(got.data() + i, want.data() + i, sizeof(float)), 0)
        << what << ": element " << i << " is " << got.data()[i] << ", expected " << want[i];
}

// Runs `body` once per thread count, restoring the pool size afterwards.
template <typename Fn>
void for_thread_counts(Fn&& body) {
  const int saved = num_threads();
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    SCOPED_TRACE(::testing::Message() << threads << " threads");
    body();
  }
  set_num_threads(saved);
}

TEST(FloatOps, PrepareInputNormalizesThenClampsLikeTheScalarLoop) {
  Rng rng(1);
  const Shape shape{4, 3, 64, 64};  // 49152 elements: two chunks of whole planes
  const Tensor x = random_tensor(rng, shape, -0.2f, 1.2f);
  const std::vector<float> mean{0.49f, 0.48f, 0.45f}, stddev{0.25f, 0.24f, 0.26f};
  const int64_t plane = shape[2] * shape[3];
  for (bool normalize : {false, true})
    for (bool clamp : {false, true}) {
      const float lo = -1.5f, hi = 1.75f;
      std::vector<float> want(static_cast<std::size_t>(x.numel()));
      for (int64_t i = 0; i < x.numel(); ++i) {
        const auto c = static_cast<std::size_t>((i / plane) % shape[1]);
        float v = normalize ? (x[i] - mean[c]) / stddev[c] : x[i];
        if (clamp) {
          if (!(v >= lo)) v = lo;  // NaN -> lo
          if (!(v <= hi)) v = hi;
        }
        want[static_cast<std::size_t>(i)] = v;
      }
      for_thread_counts([&] {
        Tensor out(shape);
        float_ops::prepare_input(x, normalize ? std::span<const float>(mean) : std::span<const float>(),
                                 normalize ? std::span<const float>(stddev) : std::span<const float>(), clamp, lo, hi,
                                 out);
        expect_same_bits(out, want, std::string(normalize ? "normalize" : "copy") + (clamp ? " + clamp" : ""));
      });
    }
}

TEST(FloatOps, PrepareRowMayWorkInPlace) {
  Rng rng(2);
  Tensor x = random_tensor(rng, {1, 1, 1, 37});
  std::vector<float> want(37);
  for (int64_t i = 0; i < 37; ++i) want[static_cast<std::size_t>(i)] = std::min(std::max((x[i] - 0.5f) / 0.25f, -1.0f), 1.0f);
  for (int64_t i = 0; i < 37; ++i)
    if (x[i] != x[i]) want[static_cast<std::size_t>(i)] = -1.0f;  // NaN -> lo
  float_ops::prepare_row(x.data(), 37, true, 0.5f, 0.25f, true, -1.0f, 1.0f, x.data());
  expect_same_bits(x, want, "in place");
}

TEST(FloatOps, PrepareInputRejectsMismatchedSizes) {
  const Tensor x({1, 3, 2, 2});
  Tensor out({1, 3, 2, 2}), small({1, 3, 2, 1});
  const std::vector<float> two{0.0f, 0.0f}, three{1.0f, 1.0f, 1.0f};
  EXPECT_THROW(float_ops::prepare_input(x, two, two, false, 0, 0, out), ShapeError);
  EXPECT_THROW(float_ops::prepare_input(x, three, two, false, 0, 0, out), ShapeError);
  EXPECT_THROW(float_ops::prepare_input(x, {}, {}, false, 0, 0, small), ShapeError);
}

// The residual addition by its definition: out = relu?(branch + shortcut(c, y, x)).
std::vector<float> reference_add(const Tensor& branch, const Tensor& src, const float_ops::Shortcut& how, bool relu) {
  const Shape& b = branch.shape();
  const Shape& s = src.shape();
  std::vector<float> out(static_cast<std::size_t>(branch.numel()));
  for (int64_t n = 0; n < b[0]; ++n)
    for (int64_t c = 0; c < b[1]; ++c)
      for (int64_t y = 0; y < b[2]; ++y)
        for (int64_t x = 0; x < b[3]; ++x) {
          const int64_t i = ((n * b[1] + c) * b[2] + y) * b[3] + x;
          float r = 0.0f;
          if (!how.subsample_pad) {
            r = src[i];
          } else {
            const int64_t sc = c - how.channel_offset;
            if (sc >= 0 && sc < s[1]) r = src[((n * s[1] + sc) * s[2] + y * how.stride) * s[3] + x * how.stride];
          }
          const float v = branch[i] + r;
          out[static_cast<std::size_t>(i)] = relu ? (v < 0.0f ? 0.0f : v) : v;  // std::max(v, 0): NaN stays
        }
  return out;
}

TEST(FloatOps, ResidualAddIdentityMatchesTheScalarLoop) {
  Rng rng(3);
  const Shape shape{3, 16, 32, 30};  // 46080 elements
  const Tensor branch = random_tensor(rng, shape), shortcut = random_tensor(rng, shape);
  for (bool relu : {false, true}) {
    const std::vector<float> want = reference_add(branch, shortcut, {}, relu);
    for_thread_counts([&] {
      Tensor out(shape);
      float_ops::residual_add(branch, shortcut, {}, relu, out);
      expect_same_bits(out, want, relu ? "identity + relu" : "identity");
      Tensor in_place = branch;
      float_ops::residual_add(in_place, shortcut, {}, relu, in_place);
      expect_same_bits(in_place, want, "identity in place");
    });
  }
}

TEST(FloatOps, ResidualAddOptionAMatchesTheScalarLoop) {
  Rng rng(4);
  struct Case {
    int64_t stride, src_channels, channels, offset, src_h, src_w;
  };
  // ResNet's stride 2 with offset (C_out - C_in) / 2, odd extents, stride 1 and 3, no offset.
  for (const Case& k : {Case{2, 16, 32, 8, 64, 64}, Case{2, 8, 16, 4, 9, 11}, Case{1, 4, 4, 0, 7, 6},
                        Case{3, 5, 9, 1, 10, 8}, Case{2, 6, 8, 2, 64, 63}}) {
    const int64_t h = (k.src_h + k.stride - 1) / k.stride, w = (k.src_w + k.stride - 1) / k.stride;
    const Tensor src = random_tensor(rng, {2, k.src_channels, k.src_h, k.src_w});
    const Tensor branch = random_tensor(rng, {2, k.channels, h, w});
    float_ops::Shortcut how;
    how.subsample_pad = true;
    how.stride = k.stride;
    how.channel_offset = k.offset;
    for (bool relu : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "stride " << k.stride << " channels " << k.src_channels << " -> "
                                        << k.channels << " relu " << relu);
      const std::vector<float> want = reference_add(branch, src, how, relu);
      for_thread_counts([&] {
        Tensor out(branch.shape());
        float_ops::residual_add(branch, src, how, relu, out);
        expect_same_bits(out, want, "option A");
        Tensor in_place = branch;
        float_ops::residual_add(in_place, src, how, relu, in_place);
        expect_same_bits(in_place, want, "option A in place");
      });
    }
  }
}

TEST(FloatOps, ResidualAddRejectsShortcutsThatDoNotFit) {
  const Tensor branch({1, 4, 4, 4}), small({1, 4, 4, 3}), src({1, 2, 7, 8});
  Tensor out({1, 4, 4, 4});
  EXPECT_THROW(float_ops::residual_add(branch, small, {}, true, out), ShapeError);
  float_ops::Shortcut how;
  how.subsample_pad = true;
  how.stride = 2;  // reads rows and columns 0, 2, 4, 6 of 7 x 8: fits
  EXPECT_NO_THROW(float_ops::residual_add(branch, src, how, true, out));
  how.stride = 3;  // row 9 of 7
  EXPECT_THROW(float_ops::residual_add(branch, src, how, true, out), ShapeError);
  Tensor wrong({1, 4, 4, 3});
  EXPECT_THROW(float_ops::residual_add(branch, branch, {}, true, wrong), ShapeError);
}

// Pooling by its definition, window in row-major order.
std::vector<float> reference_pool(const Tensor& x, const float_ops::PoolWindow& o, bool max) {
  const Shape& s = x.shape();
  const int64_t oh = (s[2] + 2 * o.pad_h - o.kernel_h) / o.stride_h + 1;
  const int64_t ow = (s[3] + 2 * o.pad_w - o.kernel_w) / o.stride_w + 1;
  std::vector<float> out;
  for (int64_t q = 0; q < s[0] * s[1]; ++q)
    for (int64_t y = 0; y < oh; ++y)
      for (int64_t xx = 0; xx < ow; ++xx) {
        float acc = max ? -kInf : 0.0f;
        for (int64_t i = 0; i < o.kernel_h; ++i)
          for (int64_t j = 0; j < o.kernel_w; ++j) {
            const int64_t iy = y * o.stride_h - o.pad_h + i, ix = xx * o.stride_w - o.pad_w + j;
            if (iy < 0 || iy >= s[2] || ix < 0 || ix >= s[3]) continue;
            const float v = x[(q * s[2] + iy) * s[3] + ix];
            acc = max ? (acc < v ? v : acc) : acc + v;
          }
        out.push_back(max ? acc : acc * (1.0f / static_cast<float>(o.kernel_h * o.kernel_w)));
      }
  return out;
}

TEST(FloatOps, PoolingMatchesTheScalarLoop) {
  Rng rng(5);
  const float_ops::PoolWindow windows[] = {
      {2, 2, 2, 2, 0, 0}, {3, 3, 2, 2, 1, 1}, {3, 2, 1, 2, 1, 0}, {5, 4, 3, 2, 2, 1}, {1, 1, 1, 1, 0, 0}};
  for (const Shape& shape : {Shape{2, 3, 7, 9}, Shape{3, 12, 33, 34}})
    for (const float_ops::PoolWindow& w : windows) {
      const Tensor x = random_tensor(rng, shape);
      const Shape out_shape{shape[0], shape[1], w.out_h(shape[2]), w.out_w(shape[3])};
      const std::vector<float> want_max = reference_pool(x, w, true), want_avg = reference_pool(x, w, false);
      SCOPED_TRACE(::testing::Message() << shape_to_string(shape) << " window " << w.kernel_h << "x" << w.kernel_w
                                        << " stride " << w.stride_h << "x" << w.stride_w << " pad " << w.pad_h << "x"
                                        << w.pad_w);
      for_thread_counts([&] {
        Tensor out(out_shape);
        float_ops::max_pool2d(x, w, out);
        expect_same_bits(out, want_max, "max pool");
        float_ops::avg_pool2d(x, w, out);
        expect_same_bits(out, want_avg, "avg pool");
      });
    }
  Tensor wrong({2, 3, 3, 3});
  EXPECT_THROW(float_ops::max_pool2d(Tensor({2, 3, 7, 9}), windows[0], wrong), ShapeError);
  EXPECT_THROW(float_ops::avg_pool2d(Tensor({2, 3, 7}), windows[0], wrong), ShapeError);
}

TEST(FloatOps, GlobalAveragePoolIsASequentialSumTimesTheReciprocal) {
  Rng rng(6);
  for (const Shape& shape : {Shape{1, 64, 8, 8}, Shape{5, 37, 31, 29}, Shape{2, 3, 1, 1}}) {
    const Tensor x = random_tensor(rng, shape);
    const int64_t plane = shape[2] * shape[3];
    std::vector<float> want;
    for (int64_t q = 0; q < shape[0] * shape[1]; ++q) {
      float sum = 0.0f;
      for (int64_t p = 0; p < plane; ++p) sum += x[q * plane + p];
      want.push_back(sum * (1.0f / static_cast<float>(plane)));
    }
    for_thread_counts([&] {
      Tensor flat({shape[0], shape[1]}), kept({shape[0], shape[1], 1, 1});
      float_ops::global_avg_pool(x, flat);
      expect_same_bits(flat, want, "[N, C]");
      float_ops::global_avg_pool(x, kept);
      expect_same_bits(kept, want, "[N, C, 1, 1]");
    });
  }
  Tensor wrong({2, 4});
  EXPECT_THROW(float_ops::global_avg_pool(Tensor({2, 3, 4, 4}), wrong), ShapeError);
}

}  // namespace
}  // namespace bitmix
