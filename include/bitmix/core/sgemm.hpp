#pragma once
// Single-precision matrix multiplication (row-major), the float workhorse of bitmix: training
// (nn) and the float layers of the runtime both call it.
//
// Three entry points share one set of per-ISA micro-kernels (scalar, AVX2+FMA, AVX-512),
// chosen at run time through active_isa():
//   * sgemm(): the BLAS-like C = alpha * op(A) * op(B) + beta * C.
//   * sgemm() with an SgemmPackedA and an SgemmIndexedB: A packed once and reused for many
//     products, B described by offset tables, so a convolution can multiply straight out of
//     a padded image (an im2col that is never written out in full).
//   * sgemm_dot_rows(): sums of row dot products over many segments, the shape of a
//     convolution's weight gradient (a reduction over every output pixel of every image).
//
// Determinism: no entry point splits the K (reduction) dimension across threads, so for a
// given ISA every result is the same whatever the thread count. Work is parallel over the
// core thread pool; called from inside a parallel region, it runs on the calling thread.
//
// The pointer entry points check sizes and strides (ArgumentError) but not that the memory
// behind the pointers is large enough: that is the caller's contract.

#include <cstdint>
#include <span>
#include <vector>

#include "bitmix/core/aligned.hpp"
#include "bitmix/core/cpu.hpp"

namespace bitmix {

enum class Transpose : bool { no = false, yes = true };

// C[m x n] = alpha * op(A) * op(B) + beta * C, all row-major. op(A) is m x k: A is m x k
// (lda >= k) or, transposed, k x m (lda >= m); op(B) is k x n likewise. When beta == 0, C is
// written without being read (it may hold garbage or NaN).
void sgemm(Transpose trans_a, Transpose trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// op(A) rearranged into the micro-kernel's panel layout for the ISA active when it was packed.
// Pack a weight matrix once per forward pass and multiply it by every image of the batch.
class SgemmPackedA {
 public:
  SgemmPackedA() = default;
  SgemmPackedA(Transpose trans_a, int64_t m, int64_t k, const float* a, int64_t lda) { pack(trans_a, m, k, a, lda); }
  // Re-packs, reusing the storage.
  void pack(Transpose trans_a, int64_t m, int64_t k, const float* a, int64_t lda);

  int64_t rows() const noexcept { return m_; }
  int64_t depth() const noexcept { return k_; }
  Isa isa() const noexcept { return isa_; }
  const float* panels() const noexcept { return data_.data(); }
  int panel_rows() const noexcept { return mr_; }

 private:
  int64_t m_ = 0, k_ = 0;
  int mr_ = 1;
  Isa isa_ = Isa::scalar;
  AlignedVector<float> data_;
};

// A k x n matrix B described by offsets: B(r, j) = base[row_offsets[r] + col_offsets[j]].
//   dense row-major B:   row_offsets[r] = r * ldb,  col_offsets[j] = j
//   im2col of a padded image (channel planes of ph x pw floats, kernel kh x kw, stride s):
//     row r = (c, i, j'): row_offsets[r] = c * ph * pw + i * pw + j'
//     column (oy, ox):    col_offsets    = oy * s * pw + ox * s
// Runs of consecutive column offsets (stride 1 or 2) are copied with vector loads.
struct SgemmIndexedB {
  const float* base = nullptr;
  std::span<const int64_t> row_offsets;  // k entries
  std::span<const int64_t> col_offsets;  // n entries
};

// C[m x n] = alpha * A * B + beta * C with A packed (m x k) and B indexed (k x n).
void sgemm(const SgemmPackedA& a, const SgemmIndexedB& b, float alpha, float beta, float* c, int64_t ldc);

// C[m x n] = beta * C + alpha * sum_s sum_l a_rows[s * m + i][l] * b_rows[s * n + j][l], for
// l < length, s < segments. Every row is `length` contiguous floats. The sum over l and s runs
// in a fixed order. With beta == 0, C is not read.
void sgemm_dot_rows(int64_t m, int64_t n, int64_t length, int64_t segments, std::span<const float* const> a_rows,
                    std::span<const float* const> b_rows, float alpha, float beta, float* c, int64_t ldc);

// The micro-kernel tile (rows x columns of C per call) sgemm uses while `isa` is the active ISA
// on this CPU (the best kernels it has not above `isa`), for tests and benchmarks.
struct SgemmTile {
  int rows;
  int cols;
};
SgemmTile sgemm_tile(Isa isa);

}  // namespace bitmix
