#pragma once
// Bit-serial convolution and GEMM on packed operands, with the fused epilogue.
//
// The path (scalar, AVX2, AVX-512, NEON) is chosen from the CPU and the BITMIX_MAX_ISA cap
// (bitmix::active_isa(); once per cap, so a changed cap applies from the next call); all paths
// give identical results. Work is split over output pixel tiles on the bitmix thread pool.
//
// Checked entry points: bits, shapes, padding versus the input's stored border and the int32
// range of the accumulator are validated and raise bitmix::Error subclasses naming the
// argument; the kernels underneath are unchecked.

#include <cstdint>

#include "bitmix/core/tensor.hpp"
#include "bitmix/kernels/activations.hpp"
#include "bitmix/kernels/epilogue.hpp"
#include "bitmix/kernels/family.hpp"
#include "bitmix/kernels/weights.hpp"

namespace bitmix::kernels {

struct Conv2dParams {
  int stride_h = 1;
  int stride_w = 1;
  // Zero padding (real zeros: the zero-point code). Must not exceed the input's border.
  int pad_h = 0;
  int pad_w = 0;
  // The kernel family (bitmix/kernels/family.hpp); every family gives identical results.
  KernelFamily family = KernelFamily::automatic;
};

// floor((in + 2*pad - kernel) / stride) + 1; throws ShapeError if the window does not fit.
int64_t conv_output_size(int64_t in, int64_t kernel, int stride, int pad, const char* what = "conv2d");

// Float NCHW output [N, out_channels, OH, OW]; `out` is reshaped if needed. The epilogue must
// be a float one with weights.spec().out_channels channels.
void conv2d(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
            const Epilogue& epilogue, Tensor& out);
Tensor conv2d(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
              const Epilogue& epilogue);
// Requantized output straight into packed planes, with the epilogue's out_quant and out_border;
// `out` is re-created if its geometry differs (its storage is reused otherwise).
void conv2d(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
            const Epilogue& epilogue, PackedActivations& out);

// GEMM as a linear layer: out[n][m] = epilogue_m(sum_k W[m][k] * (x[n][k] - z)). `input` is
// [N, K, 1, 1] (each row of the left operand is one image of K channels), `weights` a dense
// 1x1 spec with in_channels = K. Float output [N, M]. `family` as Conv2dParams::family.
void gemm(const PackedActivations& input, const PackedWeights& weights, const Epilogue& epilogue, Tensor& out,
          KernelFamily family = KernelFamily::automatic);
// Requantized output [N, M, 1, 1].
void gemm(const PackedActivations& input, const PackedWeights& weights, const Epilogue& epilogue,
          PackedActivations& out, KernelFamily family = KernelFamily::automatic);

}  // namespace bitmix::kernels
