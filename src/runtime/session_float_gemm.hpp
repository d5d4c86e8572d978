#pragma once
// Internal to the session: the state of a convolution that runs as a float GEMM
// (session_float_gemm.cpp plans and runs it; session.cpp owns it and plans buffers around it).
#include <cstdint>
#include <vector>

#include "bitmix/core/sgemm.hpp"
#include "bitmix/core/tensor.hpp"
#include "bitmix/runtime/session.hpp"

namespace bitmix::runtime {

// A convolution run as a float GEMM over integer-valued operands (FloatGemmPolicy): the input
// codes minus the zero point, as floats in a zero-padded image, times the weight codes. Every
// product and partial sum is an integer below 2^24, so the accumulator is exact whatever the
// summation order, and the epilogue then computes what the bit-serial kernels compute.
struct Session::DenseConv {
  std::size_t quantize_op = 0;
  int64_t channels = 0, height = 0, width = 0, padded_h = 0, padded_w = 0;
  int64_t out_channels = 0, out_h = 0, out_w = 0;
  std::vector<float> weights;  // [out_channels][channels * kh * kw], the codes
  SgemmPackedA packed;
  std::vector<int64_t> rows, cols;
  std::vector<std::vector<float>> padded;  // one image per worker
  Tensor epilogue_out;                     // requantizing layers: the floats before packing
};

}  // namespace bitmix::runtime
