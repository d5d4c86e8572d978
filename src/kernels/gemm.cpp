// GEMM as a linear layer: a 1x1 convolution of [N, K, 1, 1] inputs, on packed weights (any
// family) or on table-lookup weights. Only the checks and the [N, M] <-> [N, M, 1, 1] view of the
// float output live here; the work is conv2d's.
#include <fmt/format.h>

#include "bitmix/core/error.hpp"
#include "bitmix/kernels/conv.hpp"
#include "bitmix/kernels/lut.hpp"

namespace bitmix::kernels {
namespace {

void check_gemm(const PackedActivations& input, const PackedWeights& weights) {
  const WeightSpec& s = weights.spec();
  if (!weights.empty() && (s.depthwise || s.kernel_h != 1 || s.kernel_w != 1))
    throw ArgumentError(fmt::format("gemm: weights must be a dense 1x1 spec, got {}x{}{}", s.kernel_h, s.kernel_w,
                                    s.depthwise ? " depthwise" : ""));
  if (!input.empty() && (input.height() != 1 || input.width() != 1))
    throw ShapeError(fmt::format("gemm: input must be [N, K, 1, 1], got {}", shape_to_string(input.shape())));
}

// The float output is [N, M]; conv2d writes it as [N, M, 1, 1] in the same storage.
template <class Weights>
void gemm_float(const PackedActivations& input, const Weights& weights, const PackedWeights& packed,
                const Epilogue& epilogue, Tensor& out, KernelFamily family) {
  check_gemm(input, packed);
  const Shape shape{input.batch(), packed.spec().out_channels};
  if (out.shape() != shape) out = Tensor(shape);
  out.reshape({input.batch(), packed.spec().out_channels, 1, 1});
  try {
    conv2d(input, weights, Conv2dParams{1, 1, 0, 0, family}, epilogue, out);
  } catch (...) {
    out.reshape(shape);
    throw;
  }
  out.reshape(shape);
}

}  // namespace

void gemm(const PackedActivations& input, const PackedWeights& weights, const Epilogue& epilogue, Tensor& out,
          KernelFamily family) {
  gemm_float(input, weights, weights, epilogue, out, family);
}

void gemm(const PackedActivations& input, const PackedWeights& weights, const Epilogue& epilogue,
          PackedActivations& out, KernelFamily family) {
  check_gemm(input, weights);
  conv2d(input, weights, Conv2dParams{1, 1, 0, 0, family}, epilogue, out);
}

void gemm(const PackedActivations& input, const LutWeights& weights, const Epilogue& epilogue, Tensor& out) {
  gemm_float(input, weights, weights.weights(), epilogue, out, KernelFamily::lut);
}

void gemm(const PackedActivations& input, const LutWeights& weights, const Epilogue& epilogue,
          PackedActivations& out) {
  check_gemm(input, weights.weights());
  conv2d(input, weights, Conv2dParams{1, 1, 0, 0, KernelFamily::lut}, epilogue, out);
}

}  // namespace bitmix::kernels
