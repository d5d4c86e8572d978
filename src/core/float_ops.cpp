// The shared forward float operations (see float_ops.hpp for the arithmetic of each and the
// floating-point policy this file is compiled with).
#include "core/float_ops.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"

namespace bitmix::float_ops {
namespace {

constexpr int64_t kChunkElements = int64_t{1} << 15;

// Planes per parallel chunk: at least kChunkElements elements.
int64_t plane_grain(int64_t plane) { return std::max<int64_t>(1, kChunkElements / std::max<int64_t>(1, plane)); }

void expect_rank4(const Tensor& x, const char* what) {
  if (x.rank() != 4)
    throw ShapeError(fmt::format("float_ops::{}: expected an input [N, C, H, W], got {}", what,
                                 shape_to_string(x.shape())));
}

void expect_count(const Tensor& out, int64_t count, const char* what) {
  if (out.numel() != count)
    throw ShapeError(fmt::format("float_ops::{}: the output {} must hold {} elements", what,
                                 shape_to_string(out.shape()), count));
}

template <int kStride>
void subsampled_row(const float* __restrict in, const float* __restrict shortcut, float* out, int64_t width,
                    bool relu) {
  if (relu)
    for (int64_t x = 0; x < width; ++x) out[x] = std::max(in[x] + shortcut[x * kStride], 0.0f);
  else
    for (int64_t x = 0; x < width; ++x) out[x] = in[x] + shortcut[x * kStride];
}

}  // namespace

void prepare_row(const float* src, int64_t n, bool normalize, float mean, float stddev, bool clamp, float lo,
                 float hi, float* dst) {
  // Branch-free passes that vectorize.
  if (normalize)
    for (int64_t p = 0; p < n; ++p) dst[p] = (src[p] - mean) / stddev;
  else if (dst != src)
    std::copy(src, src + n, dst);
  if (clamp)
    for (int64_t p = 0; p < n; ++p) {
      const float v = dst[p] >= lo ? dst[p] : lo;
      dst[p] = v <= hi ? v : hi;
    }
}

void prepare_input(const Tensor& x, std::span<const float> mean, std::span<const float> stddev, bool clamp, float lo,
                   float hi, Tensor& out) {
  expect_rank4(out, "prepare_input");
  expect_count(out, x.numel(), "prepare_input");
  const Shape& s = out.shape();
  const int64_t channels = s[1], plane = s[2] * s[3], planes = s[0] * s[1];
  const bool normalize = !mean.empty();
  if (normalize && (static_cast<int64_t>(mean.size()) != channels || stddev.size() != mean.size()))
    throw ShapeError(fmt::format("float_ops::prepare_input: {} means and {} deviations for {} channels", mean.size(),
                                 stddev.size(), channels));
  const float* src = x.data();
  float* dst = out.data();
  parallel_for(planes, plane_grain(plane), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const auto c = static_cast<std::size_t>(q % channels);
      prepare_row(src + q * plane, plane, normalize, normalize ? mean[c] : 0.0f, normalize ? stddev[c] : 1.0f, clamp,
                  lo, hi, dst + q * plane);
    }
  });
}

void residual_add(const Tensor& branch, const Tensor& shortcut, const Shortcut& how, bool relu, Tensor& out) {
  expect_count(out, branch.numel(), "residual_add");
  const float* bd = branch.data();
  const float* sd = shortcut.data();
  float* od = out.data();
  if (!how.subsample_pad) {
    if (shortcut.numel() != branch.numel())
      throw ShapeError(fmt::format("float_ops::residual_add: shortcut {} for the branch {}",
                                   shape_to_string(shortcut.shape()), shape_to_string(branch.shape())));
    // (branch value) + residual, then max(v, 0): nn's order.
    parallel_for(branch.numel(), kChunkElements, [&](int64_t i0, int64_t i1) {
      if (relu)
        for (int64_t i = i0; i < i1; ++i) od[i] = std::max(bd[i] + sd[i], 0.0f);
      else
        for (int64_t i = i0; i < i1; ++i) od[i] = bd[i] + sd[i];
    });
    return;
  }
  expect_rank4(branch, "residual_add");
  expect_rank4(shortcut, "residual_add");
  const Shape& b = branch.shape();
  const Shape& s = shortcut.shape();
  const int64_t channels = b[1], height = b[2], width = b[3], plane = height * width;
  const int64_t src_channels = s[1], src_height = s[2], src_width = s[3];
  const int64_t stride = how.stride;
  if (s[0] != b[0] || stride < 1 || (height - 1) * stride >= src_height || (width - 1) * stride >= src_width)
    throw ShapeError(fmt::format("float_ops::residual_add: shortcut {} subsampled by {} does not cover the branch {}",
                                 shape_to_string(s), stride, shape_to_string(b)));
  parallel_for(b[0] * channels, plane_grain(plane), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t n = q / channels, c = q % channels;
      const float* in = bd + q * plane;
      float* o = od + q * plane;
      const int64_t sc = c - how.channel_offset;
      if (sc < 0 || sc >= src_channels) {  // a zero channel of the option-A shortcut: v + 0
        if (relu)
          for (int64_t p = 0; p < plane; ++p) o[p] = std::max(in[p] + 0.0f, 0.0f);
        else
          for (int64_t p = 0; p < plane; ++p) o[p] = in[p] + 0.0f;
        continue;
      }
      const float* r = sd + (n * src_channels + sc) * src_height * src_width;
      for (int64_t y = 0; y < height; ++y) {
        const float* rr = r + y * stride * src_width;
        const float* ii = in + y * width;
        float* oo = o + y * width;
        if (stride == 2)  // ResNets: a constant stride lets the compiler vectorize the even-lane loads
          subsampled_row<2>(ii, rr, oo, width, relu);
        else if (stride == 1)
          subsampled_row<1>(ii, rr, oo, width, relu);
        else
          for (int64_t xx = 0; xx < width; ++xx) {
            const float v = ii[xx] + rr[xx * stride];
            oo[xx] = relu ? std::max(v, 0.0f) : v;
          }
      }
    }
  });
}

void max_pool2d(const Tensor& x, const PoolWindow& window, Tensor& out) {
  expect_rank4(x, "max_pool2d");
  const Shape& s = x.shape();
  const int64_t height = s[2], width = s[3], oh = window.out_h(height), ow = window.out_w(width);
  expect_count(out, s[0] * s[1] * oh * ow, "max_pool2d");
  const PoolWindow& o = window;
  const float* src = x.data();
  float* dst = out.data();
  parallel_for(s[0] * s[1], plane_grain(height * width), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const float* p = src + q * height * width;
      float* y = dst + q * oh * ow;
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          float best = -std::numeric_limits<float>::infinity();
          for (int64_t i = 0; i < o.kernel_h; ++i) {
            const int64_t iy = oy * o.stride_h - o.pad_h + i;
            if (iy < 0 || iy >= height) continue;
            for (int64_t j = 0; j < o.kernel_w; ++j) {
              const int64_t ix = ox * o.stride_w - o.pad_w + j;
              if (ix >= 0 && ix < width) best = std::max(best, p[iy * width + ix]);
            }
          }
          y[oy * ow + ox] = best;
        }
    }
  });
}

void avg_pool2d(const Tensor& x, const PoolWindow& window, Tensor& out) {
  expect_rank4(x, "avg_pool2d");
  const Shape& s = x.shape();
  const int64_t height = s[2], width = s[3], oh = window.out_h(height), ow = window.out_w(width);
  expect_count(out, s[0] * s[1] * oh * ow, "avg_pool2d");
  const PoolWindow& o = window;
  const float inv = 1.0f / static_cast<float>(o.kernel_h * o.kernel_w);
  const float* src = x.data();
  float* dst = out.data();
  parallel_for(s[0] * s[1], plane_grain(height * width), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const float* p = src + q * height * width;
      float* y = dst + q * oh * ow;
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          float sum = 0.0f;
          for (int64_t i = 0; i < o.kernel_h; ++i) {
            const int64_t iy = oy * o.stride_h - o.pad_h + i;
            if (iy < 0 || iy >= height) continue;
            for (int64_t j = 0; j < o.kernel_w; ++j) {
              const int64_t ix = ox * o.stride_w - o.pad_w + j;
              if (ix >= 0 && ix < width) sum += p[iy * width + ix];
            }
          }
          y[oy * ow + ox] = sum * inv;
        }
    }
  });
}

void global_avg_pool(const Tensor& x, Tensor& out) {
  expect_rank4(x, "global_avg_pool");
  const Shape& s = x.shape();
  const int64_t planes = s[0] * s[1], plane = s[2] * s[3];
  expect_count(out, planes, "global_avg_pool");
  const float inv = 1.0f / static_cast<float>(plane);
  const float* src = x.data();
  float* dst = out.data();
  parallel_for(planes, plane_grain(plane), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const float* p = src + q * plane;
      float sum = 0.0f;
      for (int64_t i = 0; i < plane; ++i) sum += p[i];
      dst[q] = sum * inv;
    }
  });
}

}  // namespace bitmix::float_ops
