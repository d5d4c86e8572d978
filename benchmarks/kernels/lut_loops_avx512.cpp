// AVX-512 inner loops of lut_loops.hpp (compiled with AVX-512 BW/VNNI/VPOPCNTDQ/VBMI flags; each
// is called only when the CPU has what it uses).
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which -Wmaybe-uninitialized
// reports inside inlined code (a known false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "lut_loops.hpp"

namespace bitmix::bench {
namespace {

uint64_t hsum_epi32(__m512i v) {
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, v);
  uint64_t s = 0;
  for (int i = 0; i < 16; ++i) s += static_cast<uint32_t>(lanes[i]);
  return s;
}

// The shared shape of the two table loops: 4 channels x 2 index registers per step, u8 sums
// widened with VPMADDUBSW [1, 2] every `widen` steps. Lookup(table pointer, index) gives the
// 64 looked-up bytes.
template <int TableBytes, int Widen, class Lookup>
uint64_t table_loop(const uint8_t* table, const uint8_t* index, int groups, int channels, int blocks, Lookup lookup) {
  const __m512i plane_weights = _mm512_set1_epi16(0x0201);
  const __m512i ones16 = _mm512_set1_epi16(1);
  __m512i total = _mm512_setzero_si512();
  const int64_t table_channel = int64_t{groups} * TableBytes;
  for (int b = 0; b < blocks; ++b) {
    for (int m0 = 0; m0 < channels; m0 += 4) {
      const uint8_t* t = table + m0 * table_channel;
      __m512i wide[8];
      for (auto& w : wide) w = _mm512_setzero_si512();
      for (int j0 = 0; j0 < groups; j0 += Widen) {
        const int j1 = j0 + Widen < groups ? j0 + Widen : groups;
        __m512i acc[8];
        for (auto& a : acc) a = _mm512_setzero_si512();
        for (int j = j0; j < j1; ++j) {
          const __m512i i0 = _mm512_loadu_si512(index + j * 128);
          const __m512i i1 = _mm512_loadu_si512(index + j * 128 + 64);
#pragma GCC unroll 4
          for (int m = 0; m < 4; ++m) {
            const uint8_t* tm = t + m * table_channel + j * TableBytes;
            acc[2 * m] = _mm512_add_epi8(lookup(tm, i0), acc[2 * m]);
            acc[2 * m + 1] = _mm512_add_epi8(lookup(tm, i1), acc[2 * m + 1]);
          }
          // Pins the accumulators (GCC 12 otherwise renames them every step, see the AVX2 file).
#pragma GCC unroll 8
          for (int k = 0; k < 8; ++k) __asm__("" : "+v"(acc[k]));
        }
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) wide[k] = _mm512_add_epi16(wide[k], _mm512_maddubs_epi16(acc[k], plane_weights));
      }
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) total = _mm512_add_epi32(total, _mm512_madd_epi16(wide[k], ones16));
    }
  }
  return hsum_epi32(total);
}

}  // namespace

uint64_t loop_vpshufb_zmm(const uint8_t* table, const uint8_t* index, int groups, int channels, int blocks) {
  return table_loop<16, 21>(table, index, groups, channels, blocks, [](const uint8_t* t, __m512i idx) {
    return _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t))), idx);
  });
}

uint64_t loop_vpermb_zmm(const uint8_t* table, const uint8_t* index, int groups, int channels, int blocks) {
  // g = 6, weights offset to [0, 3]: a byte gains at most 18 per step, 14 * 18 = 252.
  return table_loop<64, 14>(table, index, groups, channels, blocks, [](const uint8_t* t, __m512i idx) {
    return _mm512_permutexvar_epi8(idx, _mm512_loadu_si512(t));
  });
}

uint64_t loop_vpdpbusd_zmm(const uint8_t* weights, const uint8_t* act, int groups, int channels, int blocks) {
  __m512i total = _mm512_setzero_si512();
  const int step = channels % 32 == 0 ? 32 : 16;
  for (int b = 0; b < blocks; ++b) {
    for (int m0 = 0; m0 < channels; m0 += step) {
      __m512i acc[2][kPixelsVpdpbusd];
      for (auto& row : acc)
        for (auto& a : row) a = _mm512_setzero_si512();
      if (step == 32) {
        for (int j = 0; j < groups; ++j) {
          const uint8_t* w = weights + (int64_t{j} * channels + m0) * 4;
          const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64);
#pragma GCC unroll 8
          for (int p = 0; p < kPixelsVpdpbusd; ++p) {
            int32_t word;
            __builtin_memcpy(&word, act + (int64_t{p} * groups + j) * 4, 4);
            const __m512i a = _mm512_set1_epi32(word);
            acc[0][p] = _mm512_dpbusd_epi32(acc[0][p], a, w0);
            acc[1][p] = _mm512_dpbusd_epi32(acc[1][p], a, w1);
          }
        }
      } else {
        for (int j = 0; j < groups; ++j) {
          const __m512i w0 = _mm512_loadu_si512(weights + (int64_t{j} * channels + m0) * 4);
#pragma GCC unroll 8
          for (int p = 0; p < kPixelsVpdpbusd; ++p) {
            int32_t word;
            __builtin_memcpy(&word, act + (int64_t{p} * groups + j) * 4, 4);
            acc[0][p] = _mm512_dpbusd_epi32(acc[0][p], _mm512_set1_epi32(word), w0);
          }
        }
      }
      for (auto& row : acc)
        for (auto& a : row) total = _mm512_add_epi32(total, a);
    }
  }
  return hsum_epi32(total);
}

uint64_t loop_popcnt_zmm(const uint32_t* weights, const uint32_t* act, int groups, int channels, int blocks) {
  __m512i total = _mm512_setzero_si512();
  for (int b = 0; b < blocks; ++b) {
    for (int m0 = 0; m0 < channels; m0 += 16) {
      __m512i acc[kPixelsPopcntZmm][3];
      for (auto& row : acc)
        for (auto& a : row) a = _mm512_setzero_si512();
      for (int j = 0; j < groups; ++j) {
        const uint32_t* w = weights + (int64_t{j} * 2) * channels + m0;
        const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + channels);
#pragma GCC unroll 8
        for (int p = 0; p < kPixelsPopcntZmm; ++p) {
          const __m512i a0 = _mm512_set1_epi32(static_cast<int>(act[(int64_t{p} * groups + j) * 2]));
          const __m512i a1 = _mm512_set1_epi32(static_cast<int>(act[(int64_t{p} * groups + j) * 2 + 1]));
          acc[p][0] = _mm512_add_epi32(acc[p][0], _mm512_popcnt_epi32(_mm512_and_si512(w0, a0)));
          acc[p][1] = _mm512_add_epi32(acc[p][1], _mm512_popcnt_epi32(_mm512_and_si512(w0, a1)));
          acc[p][1] = _mm512_add_epi32(acc[p][1], _mm512_popcnt_epi32(_mm512_and_si512(w1, a0)));
          acc[p][2] = _mm512_add_epi32(acc[p][2], _mm512_popcnt_epi32(_mm512_and_si512(w1, a1)));
        }
      }
      for (auto& row : acc) {  // diagonal d weighs 2^d
        const __m512i d2 = _mm512_add_epi32(row[2], row[2]);
        const __m512i d12 = _mm512_add_epi32(row[1], d2);
        total = _mm512_add_epi32(total, _mm512_add_epi32(row[0], _mm512_add_epi32(d12, d12)));
      }
    }
  }
  return hsum_epi32(total);
}

}  // namespace bitmix::bench
