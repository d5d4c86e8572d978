// The int8 family on AVX-512 VNNI: VPDPBUSD adds, in each of the 16 int32 lanes, the 4 products
// of a broadcast quad of unsigned activation codes with that lane's 4 signed weights. No
// intermediate saturates (4 * 255 * 128 fits int32), so there is nothing to split. 16 pixels per
// register block (16 accumulators, one weight register, one broadcast).
#include <immintrin.h>

#include <cstdint>

// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*() (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "int8/int8_scalar_tile.hpp"
#include "int8/int8_table.hpp"
#include "kernel_table.hpp"

namespace bitmix::kernels::detail {
namespace {

template <int NR>
void tile_block(const Int8Tile& t, int q0, int32_t* out) {
  __m512i acc[NR];
#pragma GCC unroll 16
  for (int q = 0; q < NR; ++q) acc[q] = _mm512_setzero_si512();
  const int64_t* px = t.pixel_offsets + q0;
  const int8_t* w = t.weights;
  for (int kh = 0; kh < t.kernel_h; ++kh)
    for (int kw = 0; kw < t.kernel_w; ++kw) {
      const uint8_t* tap = t.codes + kh * t.row_stride + kw * t.pixel_stride;
      for (int p = 0; p < t.quads; ++p, w += 4 * kLanes) {
        const __m512i wv = _mm512_load_si512(w);
#pragma GCC unroll 16
        for (int q = 0; q < NR; ++q) {
          int32_t quad;
          __builtin_memcpy(&quad, tap + px[q] + 4 * p, 4);
          acc[q] = _mm512_dpbusd_epi32(acc[q], _mm512_set1_epi32(quad), wv);
        }
      }
    }
  const __m128i shift = _mm_cvtsi32_si128(t.shift);
#pragma GCC unroll 16
  for (int q = 0; q < NR; ++q) _mm512_store_si512(out + (q0 + q) * kLanes, _mm512_sll_epi32(acc[q], shift));
}

void int8_tile(const Int8Tile& t, int32_t* out) {
  // kTilePixels (48) is a multiple of 16; a last partial block of 8 or fewer runs the half block.
  for (int q0 = 0; q0 < t.pixels; q0 += 16) {
    if (t.pixels - q0 <= 8)
      tile_block<8>(t, q0, out);
    else
      tile_block<16>(t, q0, out);
  }
}

// 64 bits of each plane at once: VPMOVM2B-style masked moves put 1 << j in the byte of every
// set bit (AVX-512 BW).
void expand_planes(const uint8_t* const* plane_rows, int planes, int64_t bytes, uint8_t* out) {
  int64_t b = 0;
  for (; b + 8 <= bytes; b += 8) {
    __m512i v = _mm512_setzero_si512();
    for (int j = 0; j < planes; ++j) {
      uint64_t bits;
      __builtin_memcpy(&bits, plane_rows[j] + b, 8);
      v = _mm512_or_si512(v, _mm512_maskz_mov_epi8(bits, _mm512_set1_epi8(static_cast<char>(1 << j))));
    }
    _mm512_storeu_si512(out + 8 * b, v);
  }
  if (b < bytes) {
    const uint8_t* rest[8];
    for (int j = 0; j < planes; ++j) rest[j] = plane_rows[j] + b;
    int8_scalar::expand_planes(rest, planes, bytes - b, out + 8 * b);
  }
}

}  // namespace

constinit const Int8Table kInt8Avx512VnniTable = {
    int8_tile,
    expand_planes,
    2,  // broadcast + VPDPBUSD zmm ops (KernelTable AVX-512 units: 3 per bit-plane pair word)
    2,
};

}  // namespace bitmix::kernels::detail
