// NEON table-lookup tile: TBL (vqtbl1q) with one 16-entry table per channel and group, 4
// channels x 2 index registers (16 bytes, one run each) per group step, signed byte sums
// widened every widen_steps groups by SMULL/SMULL2 with the plane weights and a pairwise add.
// Per group and 4 channels x 32 index bytes: 8 TBL + 8 ADD, 4 table loads + 2 index loads;
// per widening of a register: 2 multiplies, 1 pairwise add, 1 add. (Layout: lut_table.hpp.)
#include <arm_neon.h>

#include "lut/lut_scalar_parts.hpp"
#include "lut/lut_table.hpp"

namespace bitmix::kernels::detail {
namespace {

// Sums of one channel quad over runs [run0, run0 + Runs): sums[channel][pixel] (int32).
template <int Runs>
void quad_pass(const LutTile& t, int run0, const int8_t* tables, int32_t* sums /* [4][kLutTilePixels] */) {
  const int slots = t.slots;
  const int8x16_t plane_weights =
      slots == 2 ? vreinterpretq_s8_u16(vdupq_n_u16(0x0201)) : vreinterpretq_s8_u32(vdupq_n_u32(0x08040201));
  const uint8_t* run[Runs];
  for (int r = 0; r < Runs; ++r) run[r] = t.run[run0 + r];
  int16x8_t wide[4 * Runs];
  for (auto& w : wide) w = vdupq_n_s16(0);
  for (int64_t j0 = 0; j0 < t.groups; j0 += t.widen_steps) {
    const int64_t j1 = j0 + t.widen_steps < t.groups ? j0 + t.widen_steps : t.groups;
    int8x16_t acc[4 * Runs];
    for (auto& a : acc) a = vdupq_n_s8(0);
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t offset = t.group_offsets[j];
      uint8x16_t idx[Runs];
      for (int r = 0; r < Runs; ++r) idx[r] = vld1q_u8(run[r] + offset);
      const int8_t* tj = tables + j * 64;
      for (int m = 0; m < 4; ++m) {
        const int8x16_t table = vld1q_s8(tj + m * 16);
        for (int r = 0; r < Runs; ++r) acc[m * Runs + r] = vaddq_s8(acc[m * Runs + r], vqtbl1q_s8(table, idx[r]));
      }
    }
    for (int k = 0; k < 4 * Runs; ++k) {
      const int16x8_t lo = vmull_s8(vget_low_s8(acc[k]), vget_low_s8(plane_weights));
      const int16x8_t hi = vmull_high_s8(acc[k], plane_weights);
      wide[k] = vaddq_s16(wide[k], vpaddq_s16(lo, hi));
    }
  }
  const int run_pixels = 16 / slots;
  for (int m = 0; m < 4; ++m)
    for (int r = 0; r < Runs; ++r) {
      int32_t* dst = sums + m * kLutTilePixels + (run0 + r) * run_pixels;
      const int16x8_t w = wide[m * Runs + r];
      if (slots == 2) {  // one int16 per pixel, 8 pixels
        vst1q_s32(dst, vmovl_s16(vget_low_s16(w)));
        vst1q_s32(dst + 4, vmovl_high_s16(w));
      } else {  // two int16 halves per pixel, 4 pixels
        vst1q_s32(dst, vpaddlq_s16(w));
      }
    }
}

void lut_tile_neon(const LutTile& t, int32_t* out) {
  const int run_pixels = 16 / t.slots;
  const int all = 3 * t.slots, needed = (t.pixels + run_pixels - 1) / run_pixels;
  const int runs = needed < all ? needed : all;
  alignas(16) int32_t sums[4 * kLutTilePixels];
  for (int quad = 0; quad < 4; ++quad) {
    const int8_t* tables = t.tables + quad * t.groups * 64;
    int r = 0;
    for (; r + 2 <= runs; r += 2) quad_pass<2>(t, r, tables, sums);
    if (r < runs) quad_pass<1>(t, r, tables, sums);
    for (int q = 0; q < kLutTilePixels; ++q)
      for (int m = 0; m < 4; ++m) out[q * 16 + quad * 4 + m] = sums[m * kLutTilePixels + q];
  }
}

void lut_expand_row_neon(const uint8_t* const* planes, int bits, int64_t pixels, int64_t pixel_bytes, int slots,
                         uint8_t* out, int64_t quad_stride) {
  lut_expand_pixels_scalar(planes, bits, 0, pixels, pixel_bytes, slots, out, quad_stride);
}

}  // namespace

constinit const LutTable kLutNeonTable{lut_tile_neon, lut_expand_row_neon};

}  // namespace bitmix::kernels::detail
