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

// NB blocks x NR pixels of accumulators: each broadcast quad of codes feeds NB VPDPBUSD.
template <int NB, int NR>
void tile_block(const Int8Tile& t, int q0, int32_t* out) {
  __m512i acc[NB][NR];
#pragma GCC unroll 4
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 16
    for (int q = 0; q < NR; ++q) acc[b][q] = _mm512_setzero_si512();
  const int64_t* px = t.pixel_offsets + q0;
  const int8_t* w = t.weights;
  for (int kh = 0; kh < t.kernel_h; ++kh)
    for (int kw = 0; kw < t.kernel_w; ++kw) {
      const uint8_t* tap = t.codes + kh * t.row_stride + kw * t.pixel_stride;
      for (int p = 0; p < t.quads; ++p, w += 4 * kLanes) {
        __m512i wv[NB];
#pragma GCC unroll 4
        for (int b = 0; b < NB; ++b) wv[b] = _mm512_load_si512(w + b * t.block_stride);
#pragma GCC unroll 16
        for (int q = 0; q < NR; ++q) {
          int32_t quad;
          __builtin_memcpy(&quad, tap + px[q] + 4 * p, 4);
          const __m512i x = _mm512_set1_epi32(quad);
#pragma GCC unroll 4
          for (int b = 0; b < NB; ++b) acc[b][q] = _mm512_dpbusd_epi32(acc[b][q], x, wv[b]);
        }
      }
    }
  const __m128i shift = _mm_cvtsi32_si128(t.shift);
#pragma GCC unroll 4
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 16
    for (int q = 0; q < NR; ++q)
      _mm512_store_si512(out + b * kTilePixels * kLanes + (q0 + q) * kLanes, _mm512_sll_epi32(acc[b][q], shift));
}

// Register blocks of NR pixels x NB weight blocks (NR divides kTilePixels); a last partial
// block of at most half the pixels runs the half-size variant.
template <int NB, int NR>
void run_blocks(const Int8Tile& t, int32_t* out) {
  for (int q0 = 0; q0 < t.pixels; q0 += NR) {
    if (t.pixels - q0 <= NR / 2)
      tile_block<NB, NR / 2>(t, q0, out);
    else
      tile_block<NB, NR>(t, q0, out);
  }
}

// Blocks one after the other: register blocks that share a broadcast among 2 or 4 weight
// blocks (12 x 2, 6 x 4 accumulators) measured slower with GCC 12 (accumulators spilled).
void int8_tile(const Int8Tile& t, int32_t* out) {
  Int8Tile one = t;
  for (int b = 0; b < t.blocks; ++b) {
    one.weights = t.weights + b * t.block_stride;
    run_blocks<1, 16>(one, out + b * kTilePixels * kLanes);
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
