#pragma once
// The internal interface of the int8 kernel family: the driver (conv.cpp, int8_driver.cpp) and
// its per-ISA tiles (int8_{scalar,avx2,avx512vnni,neon}.cpp). Plain structs, function pointer
// types and the extern tables only (the rule for ISA translation units: src/core/isa_dispatch.hpp).
//
// The family multiplies the same integer codes the bit-serial family takes, unpacked to bytes:
// activation codes as uint8 [stored pixel][round_up(C, 4)] (channels past C are zero), weights as
// int8 quads [block][kh][kw][channel quad][16 lanes][4] (PackedWeights::int8_quads()). Each
// 32-bit lane of a 16-lane block sums 4 products u8 x s8 per step: VPDPBUSD on AVX-512 VNNI,
// VPMADDUBSW + VPMADDWD on AVX2, widening SMLAL on NEON.

#include <cstdint>

namespace bitmix::detail {
class IsaDispatchBase;
}

namespace bitmix::kernels::detail {

// One tile of a dense layer for one 16-lane weight block:
//   out[q * 16 + l] = (sum over (kh, kw, c) of w * code) << shift
// Pixel q's window starts at codes + pixel_offsets[q]; tap (kh, kw) adds
// kh * row_stride + kw * pixel_stride. Exact: |w * code| <= 128 * 255 and the driver keeps the
// whole reduction inside int32 (conv2d's range check).
struct Int8Tile {
  const int8_t* weights = nullptr;         // this block's quads: [kh][kw][quad][16][4]
  const uint8_t* codes = nullptr;
  const int64_t* pixel_offsets = nullptr;  // kTilePixels entries; unused ones repeat a valid one
  int pixels = 0;                          // valid pixels, 1..kTilePixels
  int64_t row_stride = 0, pixel_stride = 0;
  int kernel_h = 0, kernel_w = 0, quads = 0;
  // For VPMADDUBSW, whose u8 x s8 pair sums saturate at int16: quads that may be summed in int16
  // lanes before widening (>= 1, from the code ranges), and whether the activation codes are
  // split into two 4-bit halves because a pair sum of full codes could exceed 32767 (8-bit
  // activations with weights beyond +-64). Paths without saturation ignore both.
  int int16_quads = 1;
  bool split_nibbles = false;
  int shift = 0;  // 1 for 8-bit odd levels, stored as (w - 1) / 2 (see int8_weight_value)
};

// Expands `bytes` bytes of `planes` plane rows into one byte per bit:
//   out[8 b + t] = sum over j < planes of ((plane_rows[j][b] >> t) & 1) << j
// (a row stream whose pixels are a multiple of 4 channels becomes the [pixel][C4] codes).
using ExpandPlanesFn = void (*)(const uint8_t* const* plane_rows, int planes, int64_t bytes, uint8_t* out);

struct Int8Table {
  void (*int8_tile)(const Int8Tile& tile, int32_t* out);
  ExpandPlanesFn expand_planes;
  // Relative cost of one channel quad for 16 output channels, in the units of KernelTable's
  // bit_pair_word_cost of the same ISA (the family chooser compares them); with split nibbles.
  int quad_cost;
  int split_quad_cost;
};

// The table for the current cap (int8_dispatch.cpp).
const Int8Table& int8_table();
const bitmix::detail::IsaDispatchBase& int8_dispatch();

extern const Int8Table kInt8ScalarTable;
#if defined(BITMIX_HAVE_AVX2)
extern const Int8Table kInt8Avx2Table;
#endif
#if defined(BITMIX_HAVE_AVX512VNNI)
extern const Int8Table kInt8Avx512VnniTable;
#endif
#if defined(BITMIX_HAVE_NEON)
extern const Int8Table kInt8NeonTable;
#endif

}  // namespace bitmix::kernels::detail
