// The int8 family on NEON (AArch64 baseline, no dot-product extension assumed): a quad of
// 16 lanes x 4 weights is de-interleaved by LD4 into one register per channel, widened to int16
// and multiplied lane by lane with the pixel's four codes (SMLAL by element) into four int32x4
// accumulators per pixel. 4 pixels per register block (16 accumulators + 8 widened weights).
#include <arm_neon.h>

#include <cstdint>

#include "int8/int8_scalar_tile.hpp"
#include "int8/int8_table.hpp"
#include "kernel_table.hpp"

namespace bitmix::kernels::detail {
namespace {

constexpr int kPixelBlock = 4;

void tile_block(const Int8Tile& t, int q0, int32_t* out) {
  int32x4_t acc[kPixelBlock][4];
  for (int q = 0; q < kPixelBlock; ++q)
    for (int h = 0; h < 4; ++h) acc[q][h] = vdupq_n_s32(0);
  const int64_t* px = t.pixel_offsets + q0;
  const int8_t* w = t.weights;
  for (int kh = 0; kh < t.kernel_h; ++kh)
    for (int kw = 0; kw < t.kernel_w; ++kw) {
      const uint8_t* tap = t.codes + kh * t.row_stride + kw * t.pixel_stride;
      for (int p = 0; p < t.quads; ++p, w += 4 * kLanes) {
        const int8x16x4_t wq = vld4q_s8(w);  // wq.val[c] = channel c's weight of lanes 0..15
        int16x8_t wl[4], wh[4];
        for (int c = 0; c < 4; ++c) {
          wl[c] = vmovl_s8(vget_low_s8(wq.val[c]));
          wh[c] = vmovl_high_s8(wq.val[c]);
        }
        for (int q = 0; q < kPixelBlock; ++q) {
          uint32_t quad;
          __builtin_memcpy(&quad, tap + px[q] + 4 * p, 4);
          const int16x4_t x = vget_low_s16(vreinterpretq_s16_u16(vmovl_u8(vcreate_u8(quad))));
          acc[q][0] = vmlal_lane_s16(acc[q][0], vget_low_s16(wl[0]), x, 0);
          acc[q][1] = vmlal_high_lane_s16(acc[q][1], wl[0], x, 0);
          acc[q][2] = vmlal_lane_s16(acc[q][2], vget_low_s16(wh[0]), x, 0);
          acc[q][3] = vmlal_high_lane_s16(acc[q][3], wh[0], x, 0);
          acc[q][0] = vmlal_lane_s16(acc[q][0], vget_low_s16(wl[1]), x, 1);
          acc[q][1] = vmlal_high_lane_s16(acc[q][1], wl[1], x, 1);
          acc[q][2] = vmlal_lane_s16(acc[q][2], vget_low_s16(wh[1]), x, 1);
          acc[q][3] = vmlal_high_lane_s16(acc[q][3], wh[1], x, 1);
          acc[q][0] = vmlal_lane_s16(acc[q][0], vget_low_s16(wl[2]), x, 2);
          acc[q][1] = vmlal_high_lane_s16(acc[q][1], wl[2], x, 2);
          acc[q][2] = vmlal_lane_s16(acc[q][2], vget_low_s16(wh[2]), x, 2);
          acc[q][3] = vmlal_high_lane_s16(acc[q][3], wh[2], x, 2);
          acc[q][0] = vmlal_lane_s16(acc[q][0], vget_low_s16(wl[3]), x, 3);
          acc[q][1] = vmlal_high_lane_s16(acc[q][1], wl[3], x, 3);
          acc[q][2] = vmlal_lane_s16(acc[q][2], vget_low_s16(wh[3]), x, 3);
          acc[q][3] = vmlal_high_lane_s16(acc[q][3], wh[3], x, 3);
        }
      }
    }
  const int32x4_t shift = vdupq_n_s32(t.shift);
  for (int q = 0; q < kPixelBlock; ++q)
    for (int h = 0; h < 4; ++h) vst1q_s32(out + (q0 + q) * kLanes + 4 * h, vshlq_s32(acc[q][h], shift));
}

void int8_tile(const Int8Tile& t, int32_t* out) {
  for (int q0 = 0; q0 < t.pixels; q0 += kPixelBlock) tile_block(t, q0, out);
}

}  // namespace

constinit const Int8Table kInt8NeonTable = {
    int8_tile,
    int8_scalar::expand_planes,
    24,  // 4 x (SMLAL x 4) per pixel plus the widening, in KernelTable NEON units
    24,
};

}  // namespace bitmix::kernels::detail
