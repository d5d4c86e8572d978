#pragma once
// Internal interface between the sgemm driver (sgemm.cpp, baseline flags) and the per-ISA
// kernel translation units (sgemm_scalar.cpp, sgemm_avx2.cpp, sgemm_avx512.cpp).
//
// The ISA translation units hold nothing but plain loops and intrinsics inside an anonymous
// namespace, plus one exported table each: no std:: templates and no Eigen (the rule for ISA
// translation units and why: src/core/isa_dispatch.hpp; the isa_symbols test checks it). The
// blocking, threading and buffers live in sgemm.cpp, which chooses the table.

#include <cstdint>

namespace bitmix::detail {

class IsaDispatchBase;

// A run of consecutive columns of an indexed B inside one packed sliver: packed columns
// [dst, dst + length) come from base + row_offset + src + t * stride.
struct SgemmColumnRun {
  int32_t dst;
  int32_t length;
  int64_t src;
  int64_t stride;
};

struct SgemmKernels {
  int mr;  // rows of the C tile (panel height of packed A)
  int nr;  // columns of the C tile (sliver width of packed B)

  // C tile (m_valid x n_valid at c, row stride ldc) = alpha * A_panel * B_sliver + beta * C,
  // A_panel: kc x mr (mr floats per k step), B_sliver: kc x nr (nr floats per k step).
  // beta == 0: C is not read. m_valid <= mr, n_valid <= nr.
  void (*tile)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta,
               int m_valid, int n_valid);

  // Like tile, with B read in place instead of packed: row r of the sliver is the contiguous
  // floats at b_low + row_offsets[r] (columns [0, direct_half)) followed by those at
  // b_high + row_offsets[r] (columns [direct_half, n_valid)). Null when the ISA prefers packing.
  void (*tile_direct)(int64_t kc, const float* a, const float* b_low, const float* b_high, const int64_t* row_offsets,
                      float* c, int64_t ldc, float alpha, float beta, int m_valid, int n_valid);
  int direct_half;

  // Packs kc rows of a B sliver: out[r * nr + t] = base[row_offsets[r] + column t]; the runs
  // cover columns [0, n_valid) in order, columns [n_valid, nr) are zero.
  void (*pack_b)(int64_t kc, const float* base, const int64_t* row_offsets, const SgemmColumnRun* runs, int run_count,
                 int n_valid, float* out);

  // The whole sgemm_dot_rows product for columns [n_begin, n_end) of C (see sgemm.hpp), the
  // segments summed in blocks of `segment_block` (a vector accumulator per C entry within a
  // block, one horizontal sum per block).
  void (*dot_rows)(int64_t m, int64_t n, int64_t n_begin, int64_t n_end, int64_t length, int64_t segments,
                   int64_t segment_block, const float* const* a_rows, const float* const* b_rows, float alpha,
                   float beta, float* c, int64_t ldc);
  int dot_tile_rows;  // C tile of dot_rows
  int dot_tile_cols;
};

// Per-ISA tables (defined only when compiled in), one per translation unit.
extern const SgemmKernels kSgemmKernelsScalar;
#if defined(BITMIX_HAVE_AVX2)
extern const SgemmKernels kSgemmKernelsAvx2;
#endif
#if defined(BITMIX_HAVE_AVX512)
extern const SgemmKernels kSgemmKernelsAvx512;
#endif

// The table for the current cap (chosen once per cap, sgemm.cpp) and its dispatcher (which ISA
// it reports, how often it chose): for tests.
const SgemmKernels& sgemm_kernels();
const IsaDispatchBase& sgemm_dispatch();

}  // namespace bitmix::detail
