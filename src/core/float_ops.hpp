#pragma once
// The forward float operations that bitmix::nn's evaluation forward and the integer runtime
// both compute: residual additions, pooling and input normalization. They exist once, here, so
// that the fake-quant model and the integer model produce the same floats from the same inputs
// by construction rather than by two copies kept in step.
//
// Floating-point policy: this code (float_ops.cpp) is compiled with -ffp-contract=off (no
// multiply and add fused into an fma, whatever ISA flags the build uses) and -fno-trapping-math
// (float selects may become vector blends; no result changes). Each function below states its
// arithmetic order; the result is the same for every thread count and ISA, and equal to the
// straightforward scalar loop written in that order.
//
// Threading: every tensor function is parallel over the core thread pool in chunks of at least
// 32K elements (whole planes where it works per plane), so that the small tensors of a batch-1
// run stay on one thread (a fork-join costs more than adding 16K floats). Output elements are
// independent, so the split changes no result.
//
// Callers check and shape: the functions read the NCHW sizes of their input, write into an
// output the caller has already given its shape (element count checked) and throw ShapeError
// only on a mismatch of the sizes they rely on.

#include <cstdint>
#include <span>

#include "bitmix/core/tensor.hpp"

namespace bitmix::float_ops {

// ---------------------------------------------------------------------------------------------
// Input preparation.

// dst[i] = (src[i] - mean) / stddev when `normalize` (a subtraction, then a division: the data
// loader's formula, so pixels p / 255 give the very floats a model was evaluated on), else
// src[i]; then, when `clamp`, v = (v >= lo ? v : lo), v = (v <= hi ? v : hi) (NaN -> lo, as
// bitmix::quant's clamp). `dst` may be `src`.
void prepare_row(const float* src, int64_t n, bool normalize, float mean, float stddev, bool clamp, float lo,
                 float hi, float* dst);

// prepare_row over every plane of `out` (NCHW shape; x holds the same number of elements in
// the same order), with mean[c] / stddev[c] of the plane's channel c when `mean` is not empty
// (then both have one entry per channel), no normalization when it is empty.
void prepare_input(const Tensor& x, std::span<const float> mean, std::span<const float> stddev, bool clamp, float lo,
                   float hi, Tensor& out);

// ---------------------------------------------------------------------------------------------
// Residual addition.

// How the shortcut operand of a residual addition is read.
struct Shortcut {
  // false: the shortcut has the branch's shape and is read as is. true (ResNet option A):
  // shortcut(c, y, x) = src[c - channel_offset][y * stride][x * stride] for the channels inside
  // the source, 0.0f for the others.
  bool subsample_pad = false;
  int64_t stride = 1;
  int64_t channel_offset = 0;
};

// out = relu ? max(branch + s, 0.0f) : branch + s per element, s the shortcut value of
// `shortcut` (a zero channel adds +0.0f: -0 + 0 = +0, as in nn). std::max(v, 0.0f) keeps v
// when v is NaN. Every tensor is NCHW; out has the branch's shape and may be `branch` itself.
void residual_add(const Tensor& branch, const Tensor& shortcut, const Shortcut& how, bool relu, Tensor& out);

// ---------------------------------------------------------------------------------------------
// Pooling, per plane of an NCHW input.

struct PoolWindow {
  int64_t kernel_h = 2, kernel_w = 2;
  int64_t stride_h = 2, stride_w = 2;
  int64_t pad_h = 0, pad_w = 0;
  int64_t out_h(int64_t height) const { return (height + 2 * pad_h - kernel_h) / stride_h + 1; }
  int64_t out_w(int64_t width) const { return (width + 2 * pad_w - kernel_w) / stride_w + 1; }
};

// best = -infinity, then best = std::max(best, x) over the window in row-major order, padding
// skipped (it counts as -infinity). out: [N, C, out_h, out_w] (element count checked).
void max_pool2d(const Tensor& x, const PoolWindow& window, Tensor& out);

// sum = 0, sum += x over the window in row-major order, padding skipped but counted in the
// divisor (PyTorch's count_include_pad), then sum * (1.0f / (kernel_h * kernel_w)).
void avg_pool2d(const Tensor& x, const PoolWindow& window, Tensor& out);

// [N, C, H, W] -> N * C values (out: [N, C] or [N, C, 1, 1]): a sequential float sum of each
// plane in memory order, times 1.0f / (H * W).
void global_avg_pool(const Tensor& x, Tensor& out);

}  // namespace bitmix::float_ops
