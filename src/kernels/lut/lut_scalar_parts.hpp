#pragma once
// Pieces of the portable table-lookup kernels that the vector ones reuse (for row tails and
// shapes they do not vectorize). Internal linkage on purpose: each ISA translation unit gets its
// own copy compiled with its own flags (the rule in src/core/isa_dispatch.hpp).
#include <cstdint>

namespace bitmix::kernels::detail {
namespace {

// Index bytes of pixels [x_begin, x_end) of one stored row (lut_table.hpp, LutExpandRowFn).
inline void lut_expand_pixels_scalar(const uint8_t* const* planes, int bits, int64_t x_begin, int64_t x_end,
                                     int64_t pixel_bytes, int slots, uint8_t* out, int64_t quad_stride) {
  for (int k = 0; k < slots; ++k)
    for (int64_t b = 0; b < pixel_bytes; ++b) {
      uint8_t* low = out + 2 * b * quad_stride + k;
      uint8_t* high = low + quad_stride;
      for (int64_t x = x_begin; x < x_end; ++x) {
        const uint8_t v = k < bits ? planes[k][x * pixel_bytes + b] : uint8_t{0};
        low[x * slots] = static_cast<uint8_t>(v & 15);
        high[x * slots] = static_cast<uint8_t>(v >> 4);
      }
    }
}

}  // namespace
}  // namespace bitmix::kernels::detail
