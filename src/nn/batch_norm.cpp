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

// Sum and sum of squares of (x - shift) over one plane, in 8 float lanes.
inline void plane_moments(const float* x, int64_t count, float shift, double& sum, double& sum_sq) {
  float s[8] = {}, q[8] = {};
  int64_t p = 0;
  for (; p + 8 <= count; p += 8)
    for (int t = 0; t < 8; ++t) {
      const float v = x[p + t] - shift;
      s[t] += v;
      q[t] += v * v;
    }
  float ts = 0, tq = 0;
  for (; p < count; ++p) {
    const float v = x[p] - shift;
    ts += v;
    tq += v * v;
  }
  for (int t = 0; t < 8; ++t) {
    ts += s[t];
    tq += q[t];
  }
  sum += double{ts};
  sum_sq += double{tq};
}

// y = relu?(x * scale + shift + residual?) over one plane.
inline void affine_plane(const float* x, const float* residual, float* y, int64_t count, float scale, float shift,
                         bool relu) {
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
      for (int64_t img = 0; img < d.n; ++img) {
        const int64_t off = (img * d.c + c) * d.plane;
        const float* x = input.data() + off;
        const float* y = output.data() + off;
        const float* g = grad_output.data() + off;
        float* gr = grad_residual != nullptr ? grad_residual->data() + off : nullptr;
        float sg[8] = {}, sgx[8] = {};
        int64_t p = 0;
        for (; p + 8 <= d.plane; p += 8)
          for (int t = 0; t < 8; ++t) {
            const float gp = (relu && y[p + t] <= 0.0f) ? 0.0f : g[p + t];
            sg[t] += gp;
            sgx[t] += gp * (x[p + t] - m);
          }
        float tg = 0, tgx = 0;
        for (; p < d.plane; ++p) {
          const float gp = (relu && y[p] <= 0.0f) ? 0.0f : g[p];
          tg += gp;
          tgx += gp * (x[p] - m);
        }
        for (int t = 0; t < 8; ++t) {
          tg += sg[t];
          tgx += sgx[t];
        }
        sum_g += double{tg};
        sum_gx += double{tgx};
        if (gr != nullptr) {
          if (relu)
            for (int64_t q = 0; q < d.plane; ++q) gr[q] = y[q] <= 0.0f ? 0.0f : g[q];
          else
            for (int64_t q = 0; q < d.plane; ++q) gr[q] = g[q];
        }
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
      for (int64_t img = 0; img < d.n; ++img) {
        const int64_t off = (img * d.c + c) * d.plane;
        const float* x = input.data() + off;
        const float* y = output.data() + off;
        const float* g = grad_output.data() + off;
        float* dx = grad_input->data() + off;
        if (relu)
          for (int64_t q = 0; q < d.plane; ++q) {
            const float gp = y[q] <= 0.0f ? 0.0f : g[q];
            dx[q] = scale * (gp - mean_g - (x[q] - m) * coef);
          }
        else
          for (int64_t q = 0; q < d.plane; ++q) dx[q] = scale * (g[q] - mean_g - (x[q] - m) * coef);
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
