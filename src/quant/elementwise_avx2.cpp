// The elementwise quantizer kernels for the avx2 flags of cmake/BitmixIsa.cmake: 8-float vectors.
// The code is elementwise_kernels.inc; src/quant/CMakeLists.txt sets the flags (and
// -ffp-contract=off, so no multiply-add is fused and every ISA rounds the same way).
#include <cmath>
#include <cstdint>

#include "quant/elementwise.hpp"

namespace bitmix::quant::detail {
namespace {

constexpr int kWidth = 8;

#include "quant/elementwise_kernels.inc"

}  // namespace

constinit const ElementKernels kElementKernelsAvx2 = kKernels;

}  // namespace bitmix::quant::detail
