// AVX-512F sgemm kernels (compiled with the avx512 flags of cmake/BitmixIsa.cmake).
//
// tile: an 8 x 32 block of C in 16 zmm accumulators; per k step two aligned loads of the packed
// B sliver, eight broadcasts from the packed A panel and sixteen FMAs. Partial tiles use masked
// loads and stores, so edges cost no scalar code.
// dot_rows: a 4 x 4 block of C in 16 zmm accumulators (vectors along the reduction), reduced
// to the 16 sums at once with a transpose-and-add tree.
#include <immintrin.h>

#include "core/sgemm_kernels.hpp"

// GCC 12 reports the deliberately undefined source operand inside avx512fintrin.h's
// _mm512_shuffle_f32x4 (`__m512 __Y = __Y;`) as maybe-uninitialized when inlined here.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace {

constexpr int kMr = 8;
constexpr int kNr = 32;

#include "core/sgemm_generic.inc"

inline __mmask16 column_mask(int count) {
  if (count >= 16) return static_cast<__mmask16>(0xFFFF);
  if (count <= 0) return 0;
  return static_cast<__mmask16>((1u << count) - 1u);
}

// Writes the 8 x 32 accumulator block into C (alpha, beta; masked for a partial tile).
inline void store_tile(__m512 (&acc)[kMr][2], float* c, int64_t ldc, float alpha, float beta, int m_valid,
                       int n_valid) {
  const __m512 va = _mm512_set1_ps(alpha);
  const __m512 vb = _mm512_set1_ps(beta);
  if (m_valid == kMr && n_valid == kNr) {
#pragma GCC unroll 8
    for (int i = 0; i < kMr; ++i) {
      float* crow = c + i * ldc;
      if (beta == 0.0f) {
        _mm512_storeu_ps(crow, _mm512_mul_ps(va, acc[i][0]));
        _mm512_storeu_ps(crow + 16, _mm512_mul_ps(va, acc[i][1]));
      } else {
        _mm512_storeu_ps(crow, _mm512_fmadd_ps(va, acc[i][0], _mm512_mul_ps(vb, _mm512_loadu_ps(crow))));
        _mm512_storeu_ps(crow + 16, _mm512_fmadd_ps(va, acc[i][1], _mm512_mul_ps(vb, _mm512_loadu_ps(crow + 16))));
      }
    }
    return;
  }
  const __mmask16 mask0 = column_mask(n_valid);
  const __mmask16 mask1 = column_mask(n_valid - 16);
#pragma GCC unroll 8
  for (int i = 0; i < kMr; ++i) {
    if (i >= m_valid) break;
    float* crow = c + i * ldc;
    if (beta == 0.0f) {
      _mm512_mask_storeu_ps(crow, mask0, _mm512_mul_ps(va, acc[i][0]));
      _mm512_mask_storeu_ps(crow + 16, mask1, _mm512_mul_ps(va, acc[i][1]));
    } else {
      const __m512 c0 = _mm512_maskz_loadu_ps(mask0, crow);
      const __m512 c1 = _mm512_maskz_loadu_ps(mask1, crow + 16);
      _mm512_mask_storeu_ps(crow, mask0, _mm512_fmadd_ps(va, acc[i][0], _mm512_mul_ps(vb, c0)));
      _mm512_mask_storeu_ps(crow + 16, mask1, _mm512_fmadd_ps(va, acc[i][1], _mm512_mul_ps(vb, c1)));
    }
  }
}

void tile_avx512(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta,
                 int m_valid, int n_valid) {
  __m512 acc[kMr][2];
#pragma GCC unroll 8
  for (int i = 0; i < kMr; ++i) {
    acc[i][0] = _mm512_setzero_ps();
    acc[i][1] = _mm512_setzero_ps();
  }
#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    const __m512 b0 = _mm512_load_ps(b);
    const __m512 b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 8
    for (int i = 0; i < kMr; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
    a += kMr;
    b += kNr;
  }
  store_tile(acc, c, ldc, alpha, beta, m_valid, n_valid);
}

// B read in place from kc rows (no packing): for a convolution over a wide image each row of
// the sliver is one contiguous run of the padded input (b_high = b_low + 16), or two runs of 16
// (an image 16 wide: two output rows per sliver).
void tile_direct_avx512(int64_t kc, const float* a, const float* b_low, const float* b_high,
                        const int64_t* row_offsets, float* c, int64_t ldc, float alpha, float beta, int m_valid,
                        int n_valid) {
  __m512 acc[kMr][2];
#pragma GCC unroll 8
  for (int i = 0; i < kMr; ++i) {
    acc[i][0] = _mm512_setzero_ps();
    acc[i][1] = _mm512_setzero_ps();
  }
  const __mmask16 mask0 = column_mask(n_valid);
  const __mmask16 mask1 = column_mask(n_valid - 16);
  const bool full = n_valid == kNr;
#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    const int64_t offset = row_offsets[p];
    __m512 b0, b1;
    if (full) {
      b0 = _mm512_loadu_ps(b_low + offset);
      b1 = _mm512_loadu_ps(b_high + offset);
    } else {
      b0 = _mm512_maskz_loadu_ps(mask0, b_low + offset);
      b1 = _mm512_maskz_loadu_ps(mask1, b_high + offset);
    }
#pragma GCC unroll 8
    for (int i = 0; i < kMr; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
    a += kMr;
  }
  store_tile(acc, c, ldc, alpha, beta, m_valid, n_valid);
}

void pack_b_avx512(int64_t kc, const float* base, const int64_t* row_offsets, const bitmix::detail::SgemmColumnRun* runs,
                   int run_count, int n_valid, float* out) {
  // The common case of a convolution over a wide image: one contiguous run fills the sliver.
  if (run_count == 1 && runs[0].stride == 1 && runs[0].length == kNr) {
    const int64_t src = runs[0].src;
    for (int64_t r = 0; r < kc; ++r) {
      const float* row = base + row_offsets[r] + src;
      _mm512_store_ps(out + r * kNr, _mm512_loadu_ps(row));
      _mm512_store_ps(out + r * kNr + 16, _mm512_loadu_ps(row + 16));
    }
    return;
  }
  // Several runs: images narrower than the sliver (stride 1) and stride-2 convolutions, whose
  // even columns are picked out of two loads with one permute. Masked loads never read past the
  // last column a run uses.
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  for (int64_t r = 0; r < kc; ++r) {
    float* dst = out + r * kNr;
    if (n_valid < kNr) {
      _mm512_store_ps(dst, _mm512_setzero_ps());
      _mm512_store_ps(dst + 16, _mm512_setzero_ps());
    }
    const float* row = base + row_offsets[r];
    for (int i = 0; i < run_count; ++i) {
      const bitmix::detail::SgemmColumnRun& run = runs[i];
      const float* src = row + run.src;
      float* d = dst + run.dst;
      int left = run.length;
      if (run.stride == 1) {
        if (left == 8) {  // an image 8 wide: four output rows per sliver
          _mm256_storeu_ps(d, _mm256_loadu_ps(src));
          continue;
        }
        for (; left > 0; left -= 16, src += 16, d += 16) {
          const __mmask16 mask = column_mask(left);
          _mm512_mask_storeu_ps(d, mask, _mm512_maskz_loadu_ps(mask, src));
        }
      } else if (run.stride == 2) {
        for (; left > 0; left -= 16, src += 32, d += 16) {
          const int span = 2 * (left < 16 ? left : 16) - 1;
          const __m512 lo = _mm512_maskz_loadu_ps(column_mask(span), src);
          const __m512 hi = _mm512_maskz_loadu_ps(column_mask(span - 16), src + 16);
          _mm512_mask_storeu_ps(d, column_mask(left), _mm512_permutex2var_ps(lo, even, hi));
        }
      } else {
        for (int t = 0; t < left; ++t) d[t] = src[t * run.stride];
      }
    }
  }
}

constexpr int kDotRows = 4;
constexpr int kDotCols = 4;

// Reduces 16 vectors to one whose lane i * 4 + j holds the sum of acc[i][j].
inline __m512 reduce_16(const __m512 (&v)[16]) {
  __m512 u[8];
#pragma GCC unroll 8
  for (int p = 0; p < 8; ++p)
    u[p] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * p], v[2 * p + 1]), _mm512_unpackhi_ps(v[2 * p], v[2 * p + 1]));
  __m512 w[4];
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q)
    w[q] = _mm512_add_ps(_mm512_shuffle_ps(u[2 * q], u[2 * q + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(u[2 * q], u[2 * q + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 x0 = _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 x1 = _mm512_add_ps(_mm512_shuffle_f32x4(w[2], w[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(w[2], w[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(x0, x1, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(x0, x1, _MM_SHUFFLE(3, 1, 3, 1)));
}

void dot_rows_avx512(int64_t m, int64_t n, int64_t n_begin, int64_t n_end, int64_t length, int64_t segments,
                     int64_t segment_block, const float* const* a_rows, const float* const* b_rows, float alpha,
                     float beta, float* c, int64_t ldc) {
  const int64_t full = length & ~int64_t{15};
  const __mmask16 tail_mask = column_mask(static_cast<int>(length - full));
  const __m512 va = _mm512_set1_ps(alpha);
  for (int64_t s0 = 0; s0 < segments || s0 == 0; s0 += segment_block) {
    const int64_t s1 = s0 + segment_block < segments ? s0 + segment_block : segments;
    for (int64_t i0 = 0; i0 < m; i0 += kDotRows) {
      for (int64_t j0 = n_begin; j0 < n_end; j0 += kDotCols) {
        __m512 acc[16];
#pragma GCC unroll 16
        for (int t = 0; t < 16; ++t) acc[t] = _mm512_setzero_ps();
        for (int64_t s = s0; s < s1; ++s) {
          const float* ar[kDotRows];
          const float* br[kDotCols];
#pragma GCC unroll 4
          for (int i = 0; i < kDotRows; ++i) ar[i] = a_rows[s * m + (i0 + i < m ? i0 + i : m - 1)];
#pragma GCC unroll 4
          for (int j = 0; j < kDotCols; ++j) br[j] = b_rows[s * n + (j0 + j < n ? j0 + j : n - 1)];
          for (int64_t l = 0; l < full; l += 16) {
            const __m512 a0 = _mm512_loadu_ps(ar[0] + l);
            const __m512 a1 = _mm512_loadu_ps(ar[1] + l);
            const __m512 a2 = _mm512_loadu_ps(ar[2] + l);
            const __m512 a3 = _mm512_loadu_ps(ar[3] + l);
#pragma GCC unroll 4
            for (int j = 0; j < kDotCols; ++j) {
              const __m512 bj = _mm512_loadu_ps(br[j] + l);
              acc[0 * 4 + j] = _mm512_fmadd_ps(a0, bj, acc[0 * 4 + j]);
              acc[1 * 4 + j] = _mm512_fmadd_ps(a1, bj, acc[1 * 4 + j]);
              acc[2 * 4 + j] = _mm512_fmadd_ps(a2, bj, acc[2 * 4 + j]);
              acc[3 * 4 + j] = _mm512_fmadd_ps(a3, bj, acc[3 * 4 + j]);
            }
          }
          if (full < length) {
            __m512 at[kDotRows];
#pragma GCC unroll 4
            for (int i = 0; i < kDotRows; ++i) at[i] = _mm512_maskz_loadu_ps(tail_mask, ar[i] + full);
#pragma GCC unroll 4
            for (int j = 0; j < kDotCols; ++j) {
              const __m512 bj = _mm512_maskz_loadu_ps(tail_mask, br[j] + full);
#pragma GCC unroll 4
              for (int i = 0; i < kDotRows; ++i) acc[i * 4 + j] = _mm512_fmadd_ps(at[i], bj, acc[i * 4 + j]);
            }
          }
        }
        const __m512 sums = _mm512_mul_ps(va, reduce_16(acc));
        alignas(64) float lane[16];
        _mm512_store_ps(lane, sums);
        for (int i = 0; i < kDotRows && i0 + i < m; ++i) {
          float* crow = c + (i0 + i) * ldc;
          for (int j = 0; j < kDotCols && j0 + j < n_end; ++j) {
            const float add = lane[i * 4 + j];
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
constinit const SgemmKernels kSgemmKernelsAvx512 = {kMr, kNr, tile_avx512, tile_direct_avx512, 16,
                                                     pack_b_avx512, dot_rows_avx512, kDotRows, kDotCols};
}  // namespace bitmix::detail
