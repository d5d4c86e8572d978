// AVX2 inner loops of lut_loops.hpp (compiled with the AVX2 flags; called only on AVX2 CPUs).
#include <immintrin.h>

#include "lut_loops.hpp"

namespace bitmix::bench {
namespace {

uint64_t hsum_epi32(__m256i v) {
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), v);
  uint64_t s = 0;
  for (int i = 0; i < 8; ++i) s += static_cast<uint32_t>(lanes[i]);
  return s;
}

}  // namespace

uint64_t loop_vpshufb_ymm(const uint8_t* table, const uint8_t* index, int groups, int channels, int blocks) {
  const __m256i plane_weights = _mm256_set1_epi16(0x0201);  // bytes [1, 2]: plane 0, plane 1
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256i total = _mm256_setzero_si256();
  const int64_t table_channel = int64_t{groups} * 16;
  for (int b = 0; b < blocks; ++b) {
    for (int m0 = 0; m0 < channels; m0 += 4) {
      const uint8_t* t = table + m0 * table_channel;
      __m256i wide[8];
      for (auto& w : wide) w = _mm256_setzero_si256();
      for (int j0 = 0; j0 < groups; j0 += 21) {
        const int j1 = j0 + 21 < groups ? j0 + 21 : groups;
        __m256i acc[8];
        for (auto& a : acc) a = _mm256_setzero_si256();
        for (int j = j0; j < j1; ++j) {
          const __m256i i0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(index + j * 64));
          const __m256i i1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(index + j * 64 + 32));
#pragma GCC unroll 4
          for (int m = 0; m < 4; ++m) {
            const __m256i tb = _mm256_broadcastsi128_si256(
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(t + m * table_channel + j * 16)));
            acc[2 * m] = _mm256_add_epi8(_mm256_shuffle_epi8(tb, i0), acc[2 * m]);
            acc[2 * m + 1] = _mm256_add_epi8(_mm256_shuffle_epi8(tb, i1), acc[2 * m + 1]);
          }
          // Pins the accumulators to their registers: without it GCC 12 renames them every
          // step and adds eight register moves per eight lookups (a third more operations).
#pragma GCC unroll 8
          for (int k = 0; k < 8; ++k) __asm__("" : "+x"(acc[k]));
        }
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) wide[k] = _mm256_add_epi16(wide[k], _mm256_maddubs_epi16(acc[k], plane_weights));
      }
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) total = _mm256_add_epi32(total, _mm256_madd_epi16(wide[k], ones16));
    }
  }
  return hsum_epi32(total);
}

uint64_t loop_vpmaddubsw_ymm(const uint8_t* weights, const uint8_t* act, int groups, int channels, int blocks) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256i total = _mm256_setzero_si256();
  for (int b = 0; b < blocks; ++b) {
    for (int m0 = 0; m0 < channels; m0 += 16) {
      __m256i acc[2][kPixelsVpmaddubsw];
      for (auto& row : acc)
        for (auto& a : row) a = _mm256_setzero_si256();
      for (int j = 0; j < groups; ++j) {
        const uint8_t* w = weights + (int64_t{j} * channels + m0) * 4;
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
        const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32));
#pragma GCC unroll 8
        for (int p = 0; p < kPixelsVpmaddubsw; ++p) {
          int32_t word;
          __builtin_memcpy(&word, act + (int64_t{p} * groups + j) * 4, 4);
          const __m256i a = _mm256_set1_epi32(word);
          acc[0][p] = _mm256_add_epi32(acc[0][p], _mm256_madd_epi16(_mm256_maddubs_epi16(a, w0), ones16));
          acc[1][p] = _mm256_add_epi32(acc[1][p], _mm256_madd_epi16(_mm256_maddubs_epi16(a, w1), ones16));
        }
      }
      for (auto& row : acc)
        for (auto& a : row) total = _mm256_add_epi32(total, a);
    }
  }
  return hsum_epi32(total);
}

uint64_t loop_popcnt_ymm(const uint32_t* weights, const uint32_t* act, int groups, int channels, int blocks) {
  const __m256i nibble_mask = _mm256_set1_epi8(0x0f);
  const __m256i nibble_count = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2,
                                                3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  __m256i total = _mm256_setzero_si256();
  auto count = [&](__m256i w, __m256i a) {
    const __m256i x = _mm256_and_si256(w, a);
    const __m256i lo = _mm256_and_si256(x, nibble_mask);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), nibble_mask);
    return _mm256_add_epi8(_mm256_shuffle_epi8(nibble_count, lo), _mm256_shuffle_epi8(nibble_count, hi));
  };
  for (int b = 0; b < blocks; ++b) {
    for (int p = 0; p < kPixelsPopcntYmm; ++p) {
      for (int m0 = 0; m0 < channels; m0 += 16) {
        __m256i wide[6];
        for (auto& w : wide) w = _mm256_setzero_si256();
        for (int j0 = 0; j0 < groups; j0 += 15) {  // diagonal 1 adds <= 16 per byte and word
          const int j1 = j0 + 15 < groups ? j0 + 15 : groups;
          __m256i acc[6];  // [half][diagonal]
          for (auto& a : acc) a = _mm256_setzero_si256();
          for (int j = j0; j < j1; ++j) {
            const uint32_t* w = weights + (int64_t{j} * 2) * channels + m0;
            const __m256i a0 = _mm256_set1_epi32(static_cast<int>(act[(int64_t{p} * groups + j) * 2]));
            const __m256i a1 = _mm256_set1_epi32(static_cast<int>(act[(int64_t{p} * groups + j) * 2 + 1]));
#pragma GCC unroll 2
            for (int h = 0; h < 2; ++h) {
              const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 8 * h));
              const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + channels + 8 * h));
              acc[3 * h] = _mm256_add_epi8(acc[3 * h], count(w0, a0));
              acc[3 * h + 1] = _mm256_add_epi8(acc[3 * h + 1], _mm256_add_epi8(count(w0, a1), count(w1, a0)));
              acc[3 * h + 2] = _mm256_add_epi8(acc[3 * h + 2], count(w1, a1));
            }
          }
#pragma GCC unroll 6
          for (int k = 0; k < 6; ++k)
            wide[k] = _mm256_add_epi32(wide[k], _mm256_madd_epi16(_mm256_maddubs_epi16(acc[k], ones8), ones16));
        }
        for (int k = 0; k < 6; ++k) total = _mm256_add_epi32(total, _mm256_slli_epi32(wide[k], k % 3));
      }
    }
  }
  return hsum_epi32(total);
}

}  // namespace bitmix::bench
