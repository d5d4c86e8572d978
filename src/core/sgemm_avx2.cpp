// AVX2 + FMA sgemm kernels (compiled with the avx2 flags of cmake/BitmixIsa.cmake).
//
// tile: a 6 x 16 block of C in 12 ymm accumulators (the classic Haswell shape: two loads of
// the packed B sliver, six broadcasts and twelve FMAs per k step). Partial tiles go through a
// small buffer.
// dot_rows: a 4 x 2 block of C in 8 ymm accumulators along the reduction.
#include <immintrin.h>

#include "core/sgemm_kernels.hpp"

namespace {

constexpr int kMr = 6;
constexpr int kNr = 16;

#include "core/sgemm_generic.inc"

// Writes the 6 x 16 accumulator block into C (alpha, beta; through a buffer for a partial tile).
inline void store_tile(__m256 (&acc)[kMr][2], float* c, int64_t ldc, float alpha, float beta, int m_valid,
                       int n_valid) {
  if (m_valid == kMr && n_valid == kNr) {
    const __m256 va = _mm256_set1_ps(alpha);
    const __m256 vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
    for (int i = 0; i < kMr; ++i) {
      float* crow = c + i * ldc;
      if (beta == 0.0f) {
        _mm256_storeu_ps(crow, _mm256_mul_ps(va, acc[i][0]));
        _mm256_storeu_ps(crow + 8, _mm256_mul_ps(va, acc[i][1]));
      } else {
        _mm256_storeu_ps(crow, _mm256_fmadd_ps(va, acc[i][0], _mm256_mul_ps(vb, _mm256_loadu_ps(crow))));
        _mm256_storeu_ps(crow + 8, _mm256_fmadd_ps(va, acc[i][1], _mm256_mul_ps(vb, _mm256_loadu_ps(crow + 8))));
      }
    }
    return;
  }
  alignas(32) float buffer[kMr * kNr];
#pragma GCC unroll 6
  for (int i = 0; i < kMr; ++i) {
    _mm256_store_ps(buffer + i * kNr, acc[i][0]);
    _mm256_store_ps(buffer + i * kNr + 8, acc[i][1]);
  }
  store_tile_generic(buffer, c, ldc, alpha, beta, m_valid, n_valid);
}

void tile_avx2(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta, int m_valid,
               int n_valid) {
  __m256 acc[kMr][2];
#pragma GCC unroll 6
  for (int i = 0; i < kMr; ++i) {
    acc[i][0] = _mm256_setzero_ps();
    acc[i][1] = _mm256_setzero_ps();
  }
#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    const __m256 b0 = _mm256_load_ps(b);
    const __m256 b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (int i = 0; i < kMr; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
    a += kMr;
    b += kNr;
  }
  store_tile(acc, c, ldc, alpha, beta, m_valid, n_valid);
}

// B read in place: each row of the sliver is one contiguous run (b_high = b_low + 8) or two runs
// of 8 (an image 8 wide). Partial slivers use masked loads, which never touch masked-off floats.
void tile_direct_avx2(int64_t kc, const float* a, const float* b_low, const float* b_high, const int64_t* row_offsets,
                      float* c, int64_t ldc, float alpha, float beta, int m_valid, int n_valid) {
  __m256 acc[kMr][2];
#pragma GCC unroll 6
  for (int i = 0; i < kMr; ++i) {
    acc[i][0] = _mm256_setzero_ps();
    acc[i][1] = _mm256_setzero_ps();
  }
  alignas(32) int32_t bits[16];
  for (int t = 0; t < 16; ++t) bits[t] = t < n_valid ? -1 : 0;
  const __m256i mask0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bits));
  const __m256i mask1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bits + 8));
  const bool full = n_valid == kNr;
#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    const int64_t offset = row_offsets[p];
    __m256 b0, b1;
    if (full) {
      b0 = _mm256_loadu_ps(b_low + offset);
      b1 = _mm256_loadu_ps(b_high + offset);
    } else {
      b0 = _mm256_maskload_ps(b_low + offset, mask0);
      b1 = _mm256_maskload_ps(b_high + offset, mask1);
    }
#pragma GCC unroll 6
    for (int i = 0; i < kMr; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
    a += kMr;
  }
  store_tile(acc, c, ldc, alpha, beta, m_valid, n_valid);
}

void pack_b_avx2(int64_t kc, const float* base, const int64_t* row_offsets, const bitmix::detail::SgemmColumnRun* runs,
                 int run_count, int n_valid, float* out) {
  if (run_count == 1 && runs[0].stride == 1 && runs[0].length == kNr) {
    const int64_t src = runs[0].src;
    for (int64_t r = 0; r < kc; ++r) {
      const float* row = base + row_offsets[r] + src;
      _mm256_store_ps(out + r * kNr, _mm256_loadu_ps(row));
      _mm256_store_ps(out + r * kNr + 8, _mm256_loadu_ps(row + 8));
    }
    return;
  }
  pack_b_generic(kc, base, row_offsets, runs, run_count, n_valid, out);
}

constexpr int kDotRows = 4;
constexpr int kDotCols = 2;

inline float horizontal_sum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

void dot_rows_avx2(int64_t m, int64_t n, int64_t n_begin, int64_t n_end, int64_t length, int64_t segments,
                   int64_t segment_block, const float* const* a_rows, const float* const* b_rows, float alpha,
                   float beta, float* c, int64_t ldc) {
  const int64_t full = length & ~int64_t{7};
  const int tail = static_cast<int>(length - full);
  alignas(32) int32_t mask_bits[8];
  for (int t = 0; t < 8; ++t) mask_bits[t] = t < tail ? -1 : 0;
  const __m256i tail_mask = _mm256_load_si256(reinterpret_cast<const __m256i*>(mask_bits));
  for (int64_t s0 = 0; s0 < segments || s0 == 0; s0 += segment_block) {
    const int64_t s1 = s0 + segment_block < segments ? s0 + segment_block : segments;
    for (int64_t i0 = 0; i0 < m; i0 += kDotRows) {
      for (int64_t j0 = n_begin; j0 < n_end; j0 += kDotCols) {
        __m256 acc[kDotRows][kDotCols];
#pragma GCC unroll 4
        for (int i = 0; i < kDotRows; ++i) {
          acc[i][0] = _mm256_setzero_ps();
          acc[i][1] = _mm256_setzero_ps();
        }
        for (int64_t s = s0; s < s1; ++s) {
          const float* ar[kDotRows];
          const float* br[kDotCols];
#pragma GCC unroll 4
          for (int i = 0; i < kDotRows; ++i) ar[i] = a_rows[s * m + (i0 + i < m ? i0 + i : m - 1)];
#pragma GCC unroll 2
          for (int j = 0; j < kDotCols; ++j) br[j] = b_rows[s * n + (j0 + j < n ? j0 + j : n - 1)];
          for (int64_t l = 0; l < full; l += 8) {
            const __m256 b0 = _mm256_loadu_ps(br[0] + l);
            const __m256 b1 = _mm256_loadu_ps(br[1] + l);
#pragma GCC unroll 4
            for (int i = 0; i < kDotRows; ++i) {
              const __m256 ai = _mm256_loadu_ps(ar[i] + l);
              acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
              acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
            }
          }
          if (tail > 0) {
            const __m256 b0 = _mm256_maskload_ps(br[0] + full, tail_mask);
            const __m256 b1 = _mm256_maskload_ps(br[1] + full, tail_mask);
#pragma GCC unroll 4
            for (int i = 0; i < kDotRows; ++i) {
              const __m256 ai = _mm256_maskload_ps(ar[i] + full, tail_mask);
              acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
              acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
            }
          }
        }
        for (int i = 0; i < kDotRows && i0 + i < m; ++i) {
          float* crow = c + (i0 + i) * ldc;
          for (int j = 0; j < kDotCols && j0 + j < n_end; ++j) {
            const float add = alpha * horizontal_sum(acc[i][j]);
            float& out = crow[j0 + j];
            if (s0 > 0) out += add;
            else out = beta == 0.0f ? add : beta * out + add;
          }
        }
      }
    }
    if (segments == 0) break;
  }
}

}  // namespace

namespace bitmix::detail {
constinit const SgemmKernels kSgemmKernelsAvx2 = {kMr, kNr, tile_avx2, tile_direct_avx2, 8,
                                                   pack_b_avx2, dot_rows_avx2, kDotRows, kDotCols};
}  // namespace bitmix::detail
