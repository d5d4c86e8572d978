// The portable table-lookup kernels: the same table arithmetic as the vector kernels (one
// lookup per group, plane and pixel, scaled by 2^plane), summed straight into int32; and the
// index bytes of a row, one nibble at a time.
#include "lut/lut_scalar_parts.hpp"
#include "lut/lut_table.hpp"

namespace bitmix::kernels::detail {
namespace {

void lut_tile_scalar(const LutTile& t, int32_t* out) {
  const int run_pixels = 16 / t.slots;
  for (int lane = 0; lane < 16; ++lane) {
    const int8_t* table = t.tables + ((lane / 4) * t.groups * 4 + lane % 4) * 16;
    for (int q = 0; q < kLutTilePixels; ++q) {
      const uint8_t* run = t.run[q / run_pixels] + (q % run_pixels) * t.slots;
      int32_t sum = 0;
      for (int64_t j = 0; j < t.groups; ++j) {
        const uint8_t* idx = run + t.group_offsets[j];
        const int8_t* tj = table + j * 64;
        for (int k = 0; k < t.slots; ++k) sum += tj[idx[k]] * (1 << k);
      }
      out[q * 16 + lane] = sum;
    }
  }
}

void lut_expand_row_scalar(const uint8_t* const* planes, int bits, int64_t pixels, int64_t pixel_bytes, int slots,
                           uint8_t* out, int64_t quad_stride) {
  lut_expand_pixels_scalar(planes, bits, 0, pixels, pixel_bytes, slots, out, quad_stride);
}

}  // namespace

constinit const LutTable kLutScalarTable{lut_tile_scalar, lut_expand_row_scalar};

}  // namespace bitmix::kernels::detail
