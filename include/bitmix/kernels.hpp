#pragma once
// bitmix::kernels: bit-plane packing, bit-serial convolution and GEMM for weight and activation
// bitwidths 1..8, with a fused requantizing epilogue (docs/kernels.md).
#include "bitmix/kernels/activations.hpp"
#include "bitmix/kernels/conv.hpp"
#include "bitmix/kernels/epilogue.hpp"
#include "bitmix/kernels/family.hpp"
#include "bitmix/kernels/reference.hpp"
#include "bitmix/kernels/weights.hpp"
