// Portable sgemm kernels, compiled with the target's baseline flags (SSE2 on x86-64, NEON on
// AArch64): plain loops over small fixed-size arrays that the compiler vectorizes. They are the
// reference path every ISA-specific kernel is tested against, and the fallback on any CPU.
#include "core/sgemm_kernels.hpp"

namespace {

constexpr int kMr = 4;
constexpr int kNr = 8;

#include "core/sgemm_generic.inc"

void tile_scalar(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta,
                 int m_valid, int n_valid) {
  float acc[kMr * kNr] = {};
  for (int64_t p = 0; p < kc; ++p) {
    const float* bp = b + p * kNr;
    const float* ap = a + p * kMr;
    for (int i = 0; i < kMr; ++i) {
      const float ai = ap[i];
      for (int j = 0; j < kNr; ++j) acc[i * kNr + j] += ai * bp[j];
    }
  }
  store_tile_generic(acc, c, ldc, alpha, beta, m_valid, n_valid);
}

constexpr int kDotRows = 2;
constexpr int kDotCols = 2;
constexpr int kLanes = 8;

// One C tile of dot_rows over segments [s_begin, s_end): returns per-entry sums in `sums`.
void dot_tile(int64_t m, int64_t n, int64_t i0, int64_t j0, int64_t length, int64_t s_begin, int64_t s_end,
              const float* const* a_rows, const float* const* b_rows, float* sums) {
  float acc[kDotRows][kDotCols][kLanes] = {};
  for (int64_t s = s_begin; s < s_end; ++s) {
    const float* ar[kDotRows];
    const float* br[kDotCols];
    for (int i = 0; i < kDotRows; ++i) {
      const int64_t row = i0 + i < m ? i0 + i : m - 1;  // edge tiles repeat the last row, result unused
      ar[i] = a_rows[s * m + row];
    }
    for (int j = 0; j < kDotCols; ++j) {
      const int64_t col = j0 + j < n ? j0 + j : n - 1;
      br[j] = b_rows[s * n + col];
    }
    int64_t l = 0;
    for (; l + kLanes <= length; l += kLanes)
      for (int i = 0; i < kDotRows; ++i)
        for (int j = 0; j < kDotCols; ++j)
          for (int t = 0; t < kLanes; ++t) acc[i][j][t] += ar[i][l + t] * br[j][l + t];
    for (int t = 0; l + t < length; ++t)
      for (int i = 0; i < kDotRows; ++i)
        for (int j = 0; j < kDotCols; ++j) acc[i][j][t] += ar[i][l + t] * br[j][l + t];
  }
  for (int i = 0; i < kDotRows; ++i)
    for (int j = 0; j < kDotCols; ++j) {
      float total = 0.0f;
      for (int t = 0; t < kLanes; ++t) total += acc[i][j][t];
      sums[i * kDotCols + j] = total;
    }
}

void dot_rows_scalar(int64_t m, int64_t n, int64_t n_begin, int64_t n_end, int64_t length, int64_t segments,
                     int64_t segment_block, const float* const* a_rows, const float* const* b_rows, float alpha,
                     float beta, float* c, int64_t ldc) {
  for (int64_t s0 = 0; s0 < segments || s0 == 0; s0 += segment_block) {
    const int64_t s1 = s0 + segment_block < segments ? s0 + segment_block : segments;
    for (int64_t i0 = 0; i0 < m; i0 += kDotRows)
      for (int64_t j0 = n_begin; j0 < n_end; j0 += kDotCols) {
        float sums[kDotRows * kDotCols];
        dot_tile(m, n, i0, j0, length, s0, s1, a_rows, b_rows, sums);
        for (int i = 0; i < kDotRows && i0 + i < m; ++i)
          for (int j = 0; j < kDotCols && j0 + j < n_end; ++j) {
            float& out = c[(i0 + i) * ldc + j0 + j];
            const float add = alpha * sums[i * kDotCols + j];
            if (s0 > 0) out += add;
            else out = beta == 0.0f ? add : beta * out + add;
          }
      }
    if (segments == 0) break;
  }
}

}  // namespace

namespace bitmix::detail {
constinit const SgemmKernels kSgemmKernelsScalar = {kMr, kNr, tile_scalar, nullptr, 0, pack_b_generic, dot_rows_scalar, kDotRows, kDotCols};
}  // namespace bitmix::detail
