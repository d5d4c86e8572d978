#pragma once
// The int8 tile in portable C++: the scalar table's whole kernel and the SIMD paths' reference
// shape. Internal linkage (each ISA translation unit compiles its own copy with its flags).

#include <cstdint>
#include <cstring>

#include "int8/int8_table.hpp"
#include "kernel_table.hpp"

namespace bitmix::kernels::detail::int8_scalar {
namespace {

inline void int8_tile(const Int8Tile& t, int32_t* out) {
  for (int q = 0; q < t.pixels; ++q) {
    int32_t sums[kLanes] = {};
    const uint8_t* window = t.codes + t.pixel_offsets[q];
    const int8_t* w = t.weights;
    for (int kh = 0; kh < t.kernel_h; ++kh)
      for (int kw = 0; kw < t.kernel_w; ++kw) {
        const uint8_t* pixel = window + kh * t.row_stride + kw * t.pixel_stride;
        for (int p = 0; p < t.quads; ++p, w += 4 * kLanes) {
          const int32_t c0 = pixel[4 * p], c1 = pixel[4 * p + 1], c2 = pixel[4 * p + 2], c3 = pixel[4 * p + 3];
          for (int l = 0; l < kLanes; ++l)
            sums[l] += w[4 * l] * c0 + w[4 * l + 1] * c1 + w[4 * l + 2] * c2 + w[4 * l + 3] * c3;
        }
      }
    for (int l = 0; l < kLanes; ++l) sums[l] = static_cast<int32_t>(static_cast<uint32_t>(sums[l]) << t.shift);
    std::memcpy(out + q * kLanes, sums, sizeof sums);
  }
}

// spread[b] has bit t of byte b at bit 0 of byte t.
struct ByteSpread {
  uint64_t table[256];
  constexpr ByteSpread() : table() {
    for (int b = 0; b < 256; ++b)
      for (int t = 0; t < 8; ++t) table[b] |= static_cast<uint64_t>((b >> t) & 1) << (8 * t);
  }
};
constexpr ByteSpread kSpread;

inline void expand_planes(const uint8_t* const* plane_rows, int planes, int64_t bytes, uint8_t* out) {
  for (int64_t b = 0; b < bytes; ++b) {
    uint64_t v = 0;
    for (int j = 0; j < planes; ++j) v |= kSpread.table[plane_rows[j][b]] << j;
    std::memcpy(out + 8 * b, &v, 8);
  }
}

}  // namespace
}  // namespace bitmix::kernels::detail::int8_scalar
