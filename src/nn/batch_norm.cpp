// Batch normalization, optionally fused with a residual addition and a ReLU (the tail of a
// residual block), so that the block's output is produced and differentiated in one pass each.
//
// Work is split by channel: every channel's statistics are reduced by one thread in a fixed
// order (float partial sums per image plane, combined in double), so the numbers do not depend
// on the thread count. Statistics are computed about a per-channel shift (the channel's first
// value) to keep E[x^2] - E[x]^2 accurate when the mean is large against the spread.
#include <fmt/format.h>

#include <cmath>

#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/nn/functional.hpp"

namespace bitmix::nn {
namespace {

struct Dims {
  int64_t n, c, plane;
};

Dims check_bn(const Tensor& input, const Tensor& gamma, const Tensor& beta, const Tensor* residual,
              std::string_view layer) {
  if (input.rank() != 4 && input.rank() != 2)
    throw ShapeError(fmt::format("{}: expected an input [N, C, H, W] or [N, C], got {}", layer,
                                 shape_to_string(input.shape())));
  Dims d{input.dim(0), input.dim(1), input.rank() == 4 ? input.dim(2) * input.dim(3) : 1};
  gamma.expect_shape({d.c}, fmt::format("{}: weight (gamma) for input {}", layer, shape_to_string(input.shape())));
  beta.expect_shape({d.c}, fmt::format("{}: bias (beta) for input {}", layer, shape_to_string(input.shape())));
  if (residual != nullptr) residual->expect_shape(input.shape(), fmt::format("{}: residual input", layer));
  return d;
}

// Eight float lanes as two 4-wide vectors (SSE2 / NEON at the baseline), written with vector
// extensions because the compiler may not reorder a float reduction by itself. The lane order
// is fixed, so the sums are the same on every run.
typedef float f32x4 __attribute__((vector_size(16)));

inline f32x4 load4(const float* p) {
  f32x4 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void store4(float* p, f32x4 v) { __builtin_memcpy(p, &v, sizeof(v)); }
inline float lanes_sum(f32x4 a, f32x4 b) {
  const f32x4 s = a + b;
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// Sum and sum of squares of (x - shift) over one plane.
inline void plane_moments(const float* x, int64_t count, float shift, double& sum, double& sum_sq) {
  const f32x4 sh = {shift, shift, shift, shift};
  f32x4 s0 = {}, s1 = {}, q0 = {}, q1 = {};
  int64_t p = 0;
  for (; p + 8 <= count; p += 8) {
    const f32x4 v0 = load4(x + p) - sh, v1 = load4(x + p + 4) - sh;
    s0 += v0;
    s1 += v1;
    q0 += v0 * v0;
    q1 += v1 * v1;
  }
  float ts = lanes_sum(s0, s1), tq = lanes_sum(q0, q1);
  for (; p < count; ++p) {
    const float v = x[p] - shift;
    ts += v;
    tq += v * v;
  }
  sum += double{ts};
  sum_sq += double{tq};
}

// Backward pass over one plane: g' = g masked by the ReLU (y > 0), written to `gp_out` (and
// `residual_out`) when given; returns sum g' and sum g' * (x - mean).
inline void backward_plane(const float* __restrict x, const float* __restrict y, const float* __restrict g,
                           float* __restrict gp_out, float* __restrict residual_out, int64_t count, float mean,
                           bool relu, double& sum_g, double& sum_gx) {
  const f32x4 m = {mean, mean, mean, mean};
  const f32x4 zero = {};
  f32x4 a0 = {}, a1 = {}, b0 = {}, b1 = {};
  int64_t p = 0;
  for (; p + 8 <= count; p += 8) {
    f32x4 g0 = load4(g + p), g1 = load4(g + p + 4);
    if (relu) {
      g0 = (load4(y + p) > zero) ? g0 : zero;
      g1 = (load4(y + p + 4) > zero) ? g1 : zero;
    }
    if (gp_out != nullptr) {
      store4(gp_out + p, g0);
      store4(gp_out + p + 4, g1);
    }
    if (residual_out != nullptr) {
      store4(residual_out + p, g0);
      store4(residual_out + p + 4, g1);
    }
    a0 += g0;
    a1 += g1;
    b0 += g0 * (load4(x + p) - m);
    b1 += g1 * (load4(x + p + 4) - m);
  }
  float tg = lanes_sum(a0, a1), tgx = lanes_sum(b0, b1);
  for (; p < count; ++p) {
    const float gv = (relu && !(y[p] > 0.0f)) ? 0.0f : g[p];
    if (gp_out != nullptr) gp_out[p] = gv;
    if (residual_out != nullptr) residual_out[p] = gv;
    tg += gv;
    tgx += gv * (x[p] - mean);
  }
  sum_g += double{tg};
  sum_gx += double{tgx};
}

// y = relu?(x * scale + shift + residual?) over one plane.
inline void affine_plane(const float* __restrict x, const float* __restrict residual, float* __restrict y,
                         int64_t count, float scale, float shift, bool relu) {
  if (residual != nullptr) {
    if (relu)
      for (int64_t p = 0; p < count; ++p) y[p] = std::max(x[p] * scale + shift + residual[p], 0.0f);
    else
      for (int64_t p = 0; p < count; ++p) y[p] = x[p] * scale + shift + residual[p];
  } else {
    if (relu)
      for (int64_t p = 0; p < count; ++p) y[p] = std::max(x[p] * scale + shift, 0.0f);
    else
      for (int64_t p = 0; p < count; ++p) y[p] = x[p] * scale + shift;
  }
}

void check_stats(const Tensor& t, int64_t channels, std::string_view layer, const char* what) {
  t.expect_shape({channels}, fmt::format("{}: {}", layer, what));
}

// Applies a per-channel affine map with optional residual and ReLU (eval forward).
void apply_affine(const Tensor& input, const Tensor* residual, const float* scale, const float* shift, bool relu,
                  const Dims& d, Tensor& output) {
  parallel_for(d.n * d.c, 16, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t c = q % d.c;
      affine_plane(input.data() + q * d.plane, residual != nullptr ? residual->data() + q * d.plane : nullptr,
                   output.data() + q * d.plane, d.plane, scale[c], shift[c], relu);
    }
  });
}

}  // namespace

void batch_norm_train_forward(const Tensor& input, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                              Tensor& running_var, const BatchNormOptions& options, const Tensor* residual, bool relu,
                              Tensor& output, BatchNormSaved& saved, std::string_view layer) {
  const Dims d = check_bn(input, gamma, beta, residual, layer);
  check_stats(running_mean, d.c, layer, "running_mean");
  check_stats(running_var, d.c, layer, "running_var");
  const int64_t count = d.n * d.plane;
  if (count < 2)
    throw ShapeError(fmt::format("{}: training-mode batch norm needs more than one value per channel, got input {}",
                                 layer, shape_to_string(input.shape())));
  ensure_shape(output, input.shape());
  ensure_shape(saved.mean, {d.c});
  ensure_shape(saved.inv_std, {d.c});
  const double momentum = options.momentum;
  parallel_for(d.c, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const float shift = input.data()[c * d.plane];
      double sum = 0, sum_sq = 0;
      for (int64_t img = 0; img < d.n; ++img)
        plane_moments(input.data() + (img * d.c + c) * d.plane, d.plane, shift, sum, sum_sq);
      const double mean_shifted = sum / static_cast<double>(count);
      const double var = std::max(0.0, sum_sq / static_cast<double>(count) - mean_shifted * mean_shifted);
      const double mean = double{shift} + mean_shifted;
      const double inv_std = 1.0 / std::sqrt(var + double{options.eps});
      saved.mean[c] = static_cast<float>(mean);
      saved.inv_std[c] = static_cast<float>(inv_std);
      running_mean[c] = static_cast<float>((1.0 - momentum) * double{running_mean[c]} + momentum * mean);
      const double unbiased = var * static_cast<double>(count) / static_cast<double>(count - 1);
      running_var[c] = static_cast<float>((1.0 - momentum) * double{running_var[c]} + momentum * unbiased);
      const float scale = gamma[c] * static_cast<float>(inv_std);
      const float bias = beta[c] - static_cast<float>(mean) * scale;
      for (int64_t img = 0; img < d.n; ++img) {
        const int64_t off = (img * d.c + c) * d.plane;
        affine_plane(input.data() + off, residual != nullptr ? residual->data() + off : nullptr, output.data() + off,
                     d.plane, scale, bias, relu);
      }
    }
  });
}

void batch_norm_eval_forward(const Tensor& input, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                             const Tensor& running_var, const BatchNormOptions& options, const Tensor* residual,
                             bool relu, Tensor& output, std::string_view layer) {
  const Dims d = check_bn(input, gamma, beta, residual, layer);
  check_stats(running_mean, d.c, layer, "running_mean");
  check_stats(running_var, d.c, layer, "running_var");
  ensure_shape(output, input.shape());
  std::vector<float> scale(static_cast<std::size_t>(d.c)), shift(static_cast<std::size_t>(d.c));
  for (int64_t c = 0; c < d.c; ++c) {
    const float s = gamma[c] / std::sqrt(running_var[c] + options.eps);
    scale[static_cast<std::size_t>(c)] = s;
    shift[static_cast<std::size_t>(c)] = beta[c] - running_mean[c] * s;
  }
  apply_affine(input, residual, scale.data(), shift.data(), relu, d, output);
}

namespace {

// Shared backward: per channel, inv_std and mean define x_hat = (x - mean) * inv_std, and
// `batch_stats` says whether mean/var depend on the input (training) or are constants (eval).
void bn_backward_impl(const Tensor& input, const Tensor& gamma, const float* mean, const float* inv_std,
                      bool batch_stats, const Tensor& output, const Tensor& grad_output, bool relu, Tensor* grad_input,
                      Tensor* grad_residual, Tensor* grad_gamma, Tensor* grad_beta, bool accumulate,
                      std::string_view layer) {
  const Dims d = check_bn(input, gamma, gamma, nullptr, layer);
  output.expect_shape(input.shape(), fmt::format("{}: forward output", layer));
  grad_output.expect_shape(input.shape(), fmt::format("{}: output gradient", layer));
  if (grad_input != nullptr) ensure_shape(*grad_input, input.shape());
  if (grad_residual != nullptr) ensure_shape(*grad_residual, input.shape());
  for (Tensor* t : {grad_gamma, grad_beta}) {
    if (t == nullptr) continue;
    if (accumulate) t->expect_shape({d.c}, fmt::format("{}: parameter gradient", layer));
    else ensure_shape(*t, {d.c});
  }
  const double count = static_cast<double>(d.n * d.plane);
  parallel_for(d.c, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const float m = mean[c], is = inv_std[c];
      double sum_g = 0, sum_gx = 0;
      // Pass 1: masked gradient (kept in grad_input as scratch) and the two channel sums.
      for (int64_t img = 0; img < d.n; ++img) {
        const int64_t off = (img * d.c + c) * d.plane;
        backward_plane(input.data() + off, output.data() + off, grad_output.data() + off,
                       grad_input != nullptr ? grad_input->data() + off : nullptr,
                       grad_residual != nullptr ? grad_residual->data() + off : nullptr, d.plane, m, relu, sum_g,
                       sum_gx);
      }
      const double is_d = is;
      if (grad_gamma != nullptr) {
        const float v = static_cast<float>(sum_gx * is_d);
        (*grad_gamma)[c] = accumulate ? (*grad_gamma)[c] + v : v;
      }
      if (grad_beta != nullptr) {
        const float v = static_cast<float>(sum_g);
        (*grad_beta)[c] = accumulate ? (*grad_beta)[c] + v : v;
      }
      if (grad_input == nullptr) continue;
      const float scale = gamma[c] * is;
      // dx = scale * (g' - mean(g') - x_hat * mean(g' * x_hat)) in training mode; scale * g' in eval.
      const float mean_g = batch_stats ? static_cast<float>(sum_g / count) : 0.0f;
      const float coef = batch_stats ? static_cast<float>(sum_gx * is_d * is_d / count) : 0.0f;
      // Pass 2: dx = scale * (g' - mean_g - (x - mean) * coef), g' read back from grad_input.
      for (int64_t img = 0; img < d.n; ++img) {
        const int64_t off = (img * d.c + c) * d.plane;
        const float* __restrict x = input.data() + off;
        float* __restrict dx = grad_input->data() + off;
        for (int64_t q = 0; q < d.plane; ++q) dx[q] = scale * (dx[q] - mean_g - (x[q] - m) * coef);
      }
    }
  });
}

}  // namespace

void batch_norm_backward(const Tensor& input, const Tensor& gamma, const BatchNormSaved& saved, const Tensor& output,
                         const Tensor& grad_output, bool relu, Tensor* grad_input, Tensor* grad_residual,
                         Tensor* grad_gamma, Tensor* grad_beta, bool accumulate, std::string_view layer) {
  check_stats(saved.mean, gamma.numel(), layer, "saved batch mean (was the training forward run?)");
  check_stats(saved.inv_std, gamma.numel(), layer, "saved batch inverse std (was the training forward run?)");
  bn_backward_impl(input, gamma, saved.mean.data(), saved.inv_std.data(), true, output, grad_output, relu, grad_input,
                   grad_residual, grad_gamma, grad_beta, accumulate, layer);
}

void batch_norm_eval_backward(const Tensor& input, const Tensor& gamma, const Tensor& running_mean,
                              const Tensor& running_var, const BatchNormOptions& options, const Tensor& output,
                              const Tensor& grad_output, bool relu, Tensor* grad_input, Tensor* grad_residual,
                              Tensor* grad_gamma, Tensor* grad_beta, bool accumulate, std::string_view layer) {
  const int64_t c = gamma.numel();
  check_stats(running_mean, c, layer, "running_mean");
  check_stats(running_var, c, layer, "running_var");
  std::vector<float> inv_std(static_cast<std::size_t>(c));
  for (int64_t i = 0; i < c; ++i) inv_std[static_cast<std::size_t>(i)] = 1.0f / std::sqrt(running_var[i] + options.eps);
  bn_backward_impl(input, gamma, running_mean.data(), inv_std.data(), false, output, grad_output, relu, grad_input,
                   grad_residual, grad_gamma, grad_beta, accumulate, layer);
}

}  // namespace bitmix::nn
