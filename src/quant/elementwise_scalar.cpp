// The elementwise quantizer kernels for the baseline of the target (SSE2 on x86-64): 4-float vectors.
// The code is elementwise_kernels.inc; src/quant/CMakeLists.txt sets the flags (and
// -ffp-contract=off, so no multiply-add is fused and every ISA rounds the same way).
#include <cmath>
#include <cstdint>

#include "quant/elementwise.hpp"

namespace bitmix::quant::detail {
namespace {

constexpr int kWidth = 4;

#include "quant/elementwise_kernels.inc"

}  // namespace

constinit const ElementKernels kElementKernelsScalar = kKernels;

}  // namespace bitmix::quant::detail
