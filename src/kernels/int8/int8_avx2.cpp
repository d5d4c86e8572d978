// The int8 family on AVX2: VPMADDUBSW multiplies 32 activation bytes (one broadcast quad of
// codes) by 32 weight bytes (8 lanes x 4 channels) into 16 int16 pair sums, which are summed in
// int16 for as many quads as the code ranges allow without overflow (Int8Tile::int16_quads) and
// then widened by VPMADDWD with ones into the 8 int32 lanes. VPMADDUBSW saturates a pair sum at
// 32767: the driver splits 8-bit activation codes into two 4-bit halves whenever a pair of full
// codes could exceed that, and the high half is weighted by 16 when widening.
#include <immintrin.h>

#include <cstdint>

#include "int8/int8_scalar_tile.hpp"
#include "int8/int8_table.hpp"
#include "kernel_table.hpp"

namespace bitmix::kernels::detail {
namespace {

template <bool Split>
void tile_block(const Int8Tile& t, int q0, int32_t* out) {
  constexpr int NR = Split ? 3 : 6;
  // int16 partial sums: [q][half of the lanes]; with Split a second set for the high nibbles
  __m256i lo[NR][2], hi[NR][2];
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i sixteens = _mm256_set1_epi16(16);
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  bool first = true;
  auto clear = [&] {
#pragma GCC unroll 6
    for (int q = 0; q < NR; ++q)
      for (int h = 0; h < 2; ++h) lo[q][h] = hi[q][h] = _mm256_setzero_si256();
  };
  auto flush = [&] {
#pragma GCC unroll 6
    for (int q = 0; q < NR; ++q)
      for (int h = 0; h < 2; ++h) {
        __m256i v = _mm256_madd_epi16(lo[q][h], ones);
        if (Split) v = _mm256_add_epi32(v, _mm256_madd_epi16(hi[q][h], sixteens));
        auto* dst = reinterpret_cast<__m256i*>(out + (q0 + q) * kLanes + 8 * h);
        _mm256_store_si256(dst, first ? v : _mm256_add_epi32(_mm256_load_si256(dst), v));
      }
    first = false;
    clear();
  };
  clear();
  const int64_t* px = t.pixel_offsets + q0;
  const int8_t* w = t.weights;
  int pending = 0;
  for (int kh = 0; kh < t.kernel_h; ++kh)
    for (int kw = 0; kw < t.kernel_w; ++kw) {
      const uint8_t* tap = t.codes + kh * t.row_stride + kw * t.pixel_stride;
      for (int p = 0; p < t.quads; ++p, w += 4 * kLanes) {
        const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
        const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 32));
#pragma GCC unroll 6
        for (int q = 0; q < NR; ++q) {
          const __m256i b = _mm256_broadcastd_epi32(_mm_loadu_si32(tap + px[q] + 4 * p));
          if (Split) {
            const __m256i bl = _mm256_and_si256(b, nibble);
            const __m256i bh = _mm256_and_si256(_mm256_srli_epi16(b, 4), nibble);
            lo[q][0] = _mm256_add_epi16(lo[q][0], _mm256_maddubs_epi16(bl, w0));
            lo[q][1] = _mm256_add_epi16(lo[q][1], _mm256_maddubs_epi16(bl, w1));
            hi[q][0] = _mm256_add_epi16(hi[q][0], _mm256_maddubs_epi16(bh, w0));
            hi[q][1] = _mm256_add_epi16(hi[q][1], _mm256_maddubs_epi16(bh, w1));
          } else {
            lo[q][0] = _mm256_add_epi16(lo[q][0], _mm256_maddubs_epi16(b, w0));
            lo[q][1] = _mm256_add_epi16(lo[q][1], _mm256_maddubs_epi16(b, w1));
          }
        }
        if (++pending == t.int16_quads) {
          flush();
          pending = 0;
        }
      }
    }
  if (pending != 0 || first) flush();
  if (t.shift != 0) {
    for (int q = 0; q < NR; ++q)
      for (int h = 0; h < 2; ++h) {
        auto* dst = reinterpret_cast<__m256i*>(out + (q0 + q) * kLanes + 8 * h);
        _mm256_store_si256(dst, _mm256_slli_epi32(_mm256_load_si256(dst), 1));
      }
  }
}

void int8_tile(const Int8Tile& t, int32_t* out) {
  // The tile's output holds kTilePixels pixels, a multiple of both blocks (3 and 6): a block
  // past t.pixels reads repeated valid offsets and writes rows nobody reads.
  if (t.split_nibbles)
    for (int q0 = 0; q0 < t.pixels; q0 += 3) tile_block<true>(t, q0, out);
  else
    for (int q0 = 0; q0 < t.pixels; q0 += 6) tile_block<false>(t, q0, out);
}

// 32 bits of each plane at once: each of 4 bytes copied to 8 byte lanes (VPSHUFB), the lane's
// bit tested against 1, 2, 4, ... 128 (VPCMPEQB) and kept as 1 << j.
void expand_planes(const uint8_t* const* plane_rows, int planes, int64_t bytes, uint8_t* out) {
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3,
                                          3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
  int64_t b = 0;
  for (; b + 4 <= bytes; b += 4) {
    __m256i v = _mm256_setzero_si256();
    for (int j = 0; j < planes; ++j) {
      int32_t word;
      __builtin_memcpy(&word, plane_rows[j] + b, 4);
      // the 4 bytes in both 128-bit halves, so VPSHUFB (per half) can reach bytes 2 and 3 too
      const __m256i x = _mm256_shuffle_epi8(_mm256_set1_epi32(word), spread);
      const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(x, bit), bit);
      v = _mm256_or_si256(v, _mm256_and_si256(set, _mm256_set1_epi8(static_cast<char>(1 << j))));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8 * b), v);
  }
  if (b < bytes) {
    const uint8_t* rest[8];
    for (int j = 0; j < planes; ++j) rest[j] = plane_rows[j] + b;
    int8_scalar::expand_planes(rest, planes, bytes - b, out + 8 * b);
  }
}

}  // namespace

constinit const Int8Table kInt8Avx2Table = {
    int8_tile,
    expand_planes,
    5,   // broadcast + 2 x (VPMADDUBSW + VPADDW) ymm ops (KernelTable AVX2 units)
    11,  // broadcast, 3 ops for the nibbles, 4 x (VPMADDUBSW + VPADDW)
};

}  // namespace bitmix::kernels::detail
