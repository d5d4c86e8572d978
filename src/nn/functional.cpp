// Elementwise ops, pooling, the fully connected layer and softmax cross-entropy. The forward
// operations the integer runtime also computes (addition, pooling) are core's float_ops, so the
// evaluation forward and the runtime round alike by construction; nn adds the shape checks.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "bitmix/core/error.hpp"
#include "bitmix/core/sgemm.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/nn/functional.hpp"
#include "core/float_ops.hpp"

namespace bitmix::nn {

namespace {
constexpr int64_t kElementGrain = 16384;

float_ops::PoolWindow window_of(const Pool2dOptions& o) {
  return {o.kernel_h, o.kernel_w, o.stride_h, o.stride_w, o.pad_h, o.pad_w};
}
}  // namespace

void relu_forward(const Tensor& input, Tensor& output) {
  ensure_shape(output, input.shape());
  const float* x = input.data();
  float* y = output.data();
  parallel_for(input.numel(), kElementGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] = std::max(x[i], 0.0f);
  });
}

void relu_backward(const Tensor& output, const Tensor& grad_output, Tensor& grad_input) {
  grad_output.expect_shape(output.shape(), "relu: output gradient");
  ensure_shape(grad_input, output.shape());
  const float* y = output.data();
  const float* g = grad_output.data();
  float* dx = grad_input.data();
  parallel_for(output.numel(), kElementGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) dx[i] = y[i] > 0.0f ? g[i] : 0.0f;
  });
}

void add_forward(const Tensor& a, const Tensor& b, Tensor& output, std::string_view layer) {
  b.expect_shape(a.shape(), fmt::format("{}: second operand (first is {})", layer, shape_to_string(a.shape())));
  ensure_shape(output, a.shape());
  float_ops::residual_add(a, b, float_ops::Shortcut{}, /*relu=*/false, output);
}

// ---------------------------------------------------------------------------------------------
Pool2dOptions Pool2dOptions::square(int64_t kernel, int64_t stride, int64_t padding) {
  Pool2dOptions o;
  o.kernel_h = o.kernel_w = kernel;
  o.stride_h = o.stride_w = stride;
  o.pad_h = o.pad_w = padding;
  return o;
}

Shape Pool2dOptions::output_shape(const Shape& input_shape, std::string_view layer) const {
  if (kernel_h <= 0 || kernel_w <= 0 || stride_h <= 0 || stride_w <= 0 || pad_h < 0 || pad_w < 0)
    throw ArgumentError(fmt::format("{}: kernel {}x{}, stride {}x{} must be positive and padding {}x{} >= 0", layer,
                                    kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w));
  if (2 * pad_h > kernel_h || 2 * pad_w > kernel_w)
    throw ArgumentError(fmt::format("{}: padding {}x{} must be at most half the {}x{} kernel", layer, pad_h, pad_w,
                                    kernel_h, kernel_w));
  if (input_shape.size() != 4)
    throw ShapeError(fmt::format("{}: expected an input [N, C, H, W], got {}", layer, shape_to_string(input_shape)));
  if (input_shape[2] + 2 * pad_h < kernel_h || input_shape[3] + 2 * pad_w < kernel_w)
    throw ShapeError(fmt::format("{}: input {} is smaller than the {}x{} window", layer, shape_to_string(input_shape),
                                 kernel_h, kernel_w));
  return {input_shape[0], input_shape[1], (input_shape[2] + 2 * pad_h - kernel_h) / stride_h + 1,
          (input_shape[3] + 2 * pad_w - kernel_w) / stride_w + 1};
}

void max_pool2d_forward(const Tensor& input, const Pool2dOptions& o, Tensor& output, std::string_view layer) {
  ensure_shape(output, o.output_shape(input.shape(), layer));
  float_ops::max_pool2d(input, window_of(o), output);
}

void max_pool2d_backward(const Tensor& input, const Tensor& output, const Tensor& grad_output, const Pool2dOptions& o,
                         Tensor& grad_input, std::string_view layer) {
  const Shape out_shape = o.output_shape(input.shape(), layer);
  output.expect_shape(out_shape, fmt::format("{}: forward output", layer));
  grad_output.expect_shape(out_shape, fmt::format("{}: output gradient", layer));
  ensure_shape(grad_input, input.shape());
  const int64_t h = input.dim(2), w = input.dim(3), oh = out_shape[2], ow = out_shape[3];
  parallel_for(out_shape[0] * out_shape[1], 4, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const float* x = input.data() + q * h * w;
      const float* y = output.data() + q * oh * ow;
      const float* g = grad_output.data() + q * oh * ow;
      float* dx = grad_input.data() + q * h * w;
      std::fill(dx, dx + h * w, 0.0f);
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          // The gradient goes to the first position holding the maximum (row-major order).
          const float best = y[oy * ow + ox];
          bool done = false;
          for (int64_t i = 0; i < o.kernel_h && !done; ++i) {
            const int64_t iy = oy * o.stride_h - o.pad_h + i;
            if (iy < 0 || iy >= h) continue;
            for (int64_t j = 0; j < o.kernel_w; ++j) {
              const int64_t ix = ox * o.stride_w - o.pad_w + j;
              if (ix >= 0 && ix < w && x[iy * w + ix] == best) {
                dx[iy * w + ix] += g[oy * ow + ox];
                done = true;
                break;
              }
            }
          }
        }
    }
  });
}

void avg_pool2d_forward(const Tensor& input, const Pool2dOptions& o, Tensor& output, std::string_view layer) {
  ensure_shape(output, o.output_shape(input.shape(), layer));
  float_ops::avg_pool2d(input, window_of(o), output);
}

void avg_pool2d_backward(const Shape& input_shape, const Tensor& grad_output, const Pool2dOptions& o,
                         Tensor& grad_input, std::string_view layer) {
  const Shape out_shape = o.output_shape(input_shape, layer);
  grad_output.expect_shape(out_shape, fmt::format("{}: output gradient", layer));
  ensure_shape(grad_input, input_shape);
  const int64_t h = input_shape[2], w = input_shape[3], oh = out_shape[2], ow = out_shape[3];
  const float inv = 1.0f / static_cast<float>(o.kernel_h * o.kernel_w);
  parallel_for(out_shape[0] * out_shape[1], 4, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const float* g = grad_output.data() + q * oh * ow;
      float* dx = grad_input.data() + q * h * w;
      std::fill(dx, dx + h * w, 0.0f);
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          const float v = g[oy * ow + ox] * inv;
          for (int64_t i = 0; i < o.kernel_h; ++i) {
            const int64_t iy = oy * o.stride_h - o.pad_h + i;
            if (iy < 0 || iy >= h) continue;
            for (int64_t j = 0; j < o.kernel_w; ++j) {
              const int64_t ix = ox * o.stride_w - o.pad_w + j;
              if (ix >= 0 && ix < w) dx[iy * w + ix] += v;
            }
          }
        }
    }
  });
}

void global_avg_pool_forward(const Tensor& input, Tensor& output, std::string_view layer) {
  if (input.rank() != 4)
    throw ShapeError(fmt::format("{}: expected an input [N, C, H, W], got {}", layer, shape_to_string(input.shape())));
  const int64_t n = input.dim(0), c = input.dim(1), plane = input.dim(2) * input.dim(3);
  if (plane == 0) throw ShapeError(fmt::format("{}: input {} has no pixels", layer, shape_to_string(input.shape())));
  ensure_shape(output, {n, c});
  float_ops::global_avg_pool(input, output);
}

void global_avg_pool_backward(const Shape& input_shape, const Tensor& grad_output, Tensor& grad_input,
                              std::string_view layer) {
  if (input_shape.size() != 4)
    throw ShapeError(fmt::format("{}: expected an input [N, C, H, W], got {}", layer, shape_to_string(input_shape)));
  const int64_t n = input_shape[0], c = input_shape[1], plane = input_shape[2] * input_shape[3];
  grad_output.expect_shape({n, c}, fmt::format("{}: output gradient", layer));
  ensure_shape(grad_input, input_shape);
  const float inv = 1.0f / static_cast<float>(plane);
  parallel_for(n * c, 64, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const float v = grad_output[q] * inv;
      std::fill(grad_input.data() + q * plane, grad_input.data() + (q + 1) * plane, v);
    }
  });
}

// ---------------------------------------------------------------------------------------------
namespace {
struct LinearDims {
  int64_t n, in, out;
};
LinearDims check_linear(const Tensor& input, const Tensor& weight, const Tensor* bias, std::string_view layer) {
  if (weight.rank() != 2)
    throw ShapeError(fmt::format("{}: weight must be [out, in], got {}", layer, shape_to_string(weight.shape())));
  if (input.rank() < 2)
    throw ShapeError(fmt::format("{}: expected an input [N, {}], got {}", layer, weight.dim(1),
                                 shape_to_string(input.shape())));
  const int64_t n = input.dim(0);
  const int64_t features = n == 0 ? 0 : input.numel() / n;
  if (n > 0 && features != weight.dim(1))
    throw ShapeError(fmt::format("{}: expected {} input features per sample, got input {} ({} features)", layer,
                                 weight.dim(1), shape_to_string(input.shape()), features));
  if (bias != nullptr) bias->expect_shape({weight.dim(0)}, fmt::format("{}: bias", layer));
  return {n, weight.dim(1), weight.dim(0)};
}
}  // namespace

void linear_forward(const Tensor& input, const Tensor& weight, const Tensor* bias, Tensor& output,
                    std::string_view layer) {
  const LinearDims d = check_linear(input, weight, bias, layer);
  ensure_shape(output, {d.n, d.out});
  if (d.n == 0) return;
  sgemm(Transpose::no, Transpose::yes, d.n, d.out, d.in, 1.0f, input.data(), d.in, weight.data(), d.in, 0.0f,
        output.data(), d.out);
  if (bias != nullptr)
    for (int64_t i = 0; i < d.n; ++i)
      for (int64_t o = 0; o < d.out; ++o) output[i * d.out + o] += (*bias)[o];
}

void linear_backward(const Tensor& input, const Tensor& weight, const Tensor& grad_output, Tensor* grad_input,
                     Tensor* grad_weight, Tensor* grad_bias, bool accumulate, std::string_view layer) {
  const LinearDims d = check_linear(input, weight, nullptr, layer);
  grad_output.expect_shape({d.n, d.out}, fmt::format("{}: output gradient", layer));
  if (grad_input != nullptr) {
    ensure_shape(*grad_input, input.shape());
    if (d.n > 0)
      sgemm(Transpose::no, Transpose::no, d.n, d.in, d.out, 1.0f, grad_output.data(), d.out, weight.data(), d.in, 0.0f,
            grad_input->data(), d.in);
  }
  if (grad_weight != nullptr) {
    if (accumulate) grad_weight->expect_shape(weight.shape(), fmt::format("{}: weight gradient", layer));
    else ensure_shape(*grad_weight, weight.shape());
    sgemm(Transpose::yes, Transpose::no, d.out, d.in, d.n, 1.0f, grad_output.data(), d.out, input.data(), d.in,
          accumulate ? 1.0f : 0.0f, grad_weight->data(), d.in);
  }
  if (grad_bias != nullptr) {
    if (accumulate) grad_bias->expect_shape({d.out}, fmt::format("{}: bias gradient", layer));
    else ensure_shape(*grad_bias, {d.out});
    for (int64_t o = 0; o < d.out; ++o) {
      double sum = 0;
      for (int64_t i = 0; i < d.n; ++i) sum += double{grad_output[i * d.out + o]};
      (*grad_bias)[o] = static_cast<float>((accumulate ? double{(*grad_bias)[o]} : 0.0) + sum);
    }
  }
}

// ---------------------------------------------------------------------------------------------
CrossEntropyResult softmax_cross_entropy(const Tensor& logits, std::span<const int> labels, float label_smoothing,
                                         Tensor* grad_logits) {
  if (logits.rank() != 2)
    throw ShapeError(fmt::format("cross-entropy: expected logits [N, classes], got {}", shape_to_string(logits.shape())));
  const int64_t n = logits.dim(0), k = logits.dim(1);
  if (static_cast<int64_t>(labels.size()) != n)
    throw ShapeError(fmt::format("cross-entropy: {} labels for {} rows of logits", labels.size(), n));
  if (k < 1) throw ShapeError("cross-entropy: logits have no classes");
  if (!(label_smoothing >= 0.0f && label_smoothing < 1.0f))
    throw ArgumentError(fmt::format("cross-entropy: label smoothing {} must be in [0, 1)", label_smoothing));
  for (int64_t i = 0; i < n; ++i)
    if (labels[static_cast<std::size_t>(i)] < 0 || labels[static_cast<std::size_t>(i)] >= k)
      throw ArgumentError(fmt::format("cross-entropy: label {} of sample {} is outside [0, {})",
                                      labels[static_cast<std::size_t>(i)], i, k));
  if (grad_logits != nullptr) ensure_shape(*grad_logits, logits.shape());
  CrossEntropyResult result;
  const double smooth = label_smoothing;
  const double off_target = smooth / static_cast<double>(k);
  const double on_target = 1.0 - smooth + off_target;
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* z = logits.data() + i * k;
    const int label = labels[static_cast<std::size_t>(i)];
    int64_t argmax = 0;
    for (int64_t j = 1; j < k; ++j)
      if (z[j] > z[argmax]) argmax = j;
    if (argmax == label) ++result.correct;
    const double zmax = z[argmax];
    double sum_exp = 0, sum_z = 0;
    for (int64_t j = 0; j < k; ++j) {
      sum_exp += std::exp(double{z[j]} - zmax);
      sum_z += double{z[j]};
    }
    const double log_sum = zmax + std::log(sum_exp);
    // loss = -sum_j t_j log p_j = log_sum - sum_j t_j z_j
    total += log_sum - (on_target - off_target) * double{z[label]} - off_target * sum_z;
    if (grad_logits != nullptr) {
      float* g = grad_logits->data() + i * k;
      for (int64_t j = 0; j < k; ++j) {
        const double p = std::exp(double{z[j]} - log_sum);
        const double t = j == label ? on_target : off_target;
        g[j] = static_cast<float>((p - t) / static_cast<double>(n));
      }
    }
  }
  result.loss = n > 0 ? total / static_cast<double>(n) : 0.0;
  return result;
}

}  // namespace bitmix::nn
