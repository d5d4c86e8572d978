// The sgemm driver: argument checks, the choice of the ISA's kernels (src/core/isa_dispatch.hpp),
// cache blocking, packing buffers and the split over the thread pool. The arithmetic lives in the
// per-ISA kernels (sgemm_kernels.hpp).
//
// Blocking follows BLIS: the depth is cut into blocks of at most kMaxKc (split evenly, so a
// depth of 144 or 288 is not cut into a full block and a sliver), B is packed per block of
// columns into nr-wide slivers that stay in L1 while the A panels of an mc-row block stream
// from L2. Threads split the columns (or, for tall products, the rows) in whole tiles; the depth
// is never split, so the result does not depend on the thread count.
#include "bitmix/core/sgemm.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "core/isa_dispatch.hpp"
#include "core/sgemm_kernels.hpp"

namespace bitmix {
namespace {

constexpr int64_t kMaxKc = 256;   // depth block: a 32-wide sliver is 32 KiB at most
constexpr int64_t kMc = 96;       // rows per A block (a multiple of every mr)
constexpr int64_t kNc = 1024;     // columns per packed B block (a multiple of every nr)
constexpr int64_t kMinParallelFlops = int64_t{1} << 19;

constinit detail::IsaDispatch<detail::SgemmKernels> g_kernels{"sgemm", {
#if defined(BITMIX_HAVE_AVX512)
    {Isa::avx512, &detail::kSgemmKernelsAvx512},
#endif
#if defined(BITMIX_HAVE_AVX2)
    {Isa::avx2, &detail::kSgemmKernelsAvx2},
#endif
    {Isa::scalar, &detail::kSgemmKernelsScalar},
}};
[[maybe_unused]] const bool g_kernels_listed = g_kernels.list();

void check_size(int64_t value, const char* what) {
  if (value < 0) throw ArgumentError(fmt::format("sgemm: {} = {}, expected >= 0", what, value));
}

void check_leading(int64_t ld, int64_t minimum, const char* what) {
  if (ld < std::max<int64_t>(minimum, 1))
    throw ArgumentError(fmt::format("sgemm: {} = {}, expected >= {}", what, ld, std::max<int64_t>(minimum, 1)));
}

// C = beta * C for a product with an empty depth.
void scale_c(int64_t m, int64_t n, float beta, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    if (beta == 0.0f) std::fill(row, row + n, 0.0f);
    else
      for (int64_t j = 0; j < n; ++j) row[j] *= beta;
  }
}

struct DepthBlocks {
  int64_t count;
  int64_t size;  // all blocks but the last have this depth
};
DepthBlocks depth_blocks(int64_t k) {
  const int64_t count = std::max<int64_t>(1, (k + kMaxKc - 1) / kMaxKc);
  return {count, (k + count - 1) / count};
}

// Splits the columns of one sliver into runs of equal offset steps.
void column_runs(std::span<const int64_t> col_offsets, int64_t j0, int n_valid,
                 std::vector<detail::SgemmColumnRun>& runs) {
  runs.clear();
  int t = 0;
  while (t < n_valid) {
    detail::SgemmColumnRun run{t, 1, col_offsets[static_cast<std::size_t>(j0 + t)], 1};
    if (t + 1 < n_valid) {
      const int64_t step = col_offsets[static_cast<std::size_t>(j0 + t + 1)] - run.src;
      run.stride = step;
      int length = 2;
      while (t + length < n_valid &&
             col_offsets[static_cast<std::size_t>(j0 + t + length)] - col_offsets[static_cast<std::size_t>(j0 + t + length - 1)] == step)
        ++length;
      run.length = length;
    }
    runs.push_back(run);
    t += run.length;
  }
}

struct PackBuffers {
  AlignedVector<float> b;
  std::vector<detail::SgemmColumnRun> runs;
  std::vector<detail::SgemmColumnRun> sliver_runs;
  std::vector<int> run_begin;  // per sliver of a block: first run index (and one past the end)
};
PackBuffers& thread_buffers() {
  thread_local PackBuffers buffers;
  return buffers;
}

// C rows [panel_begin * mr, panel_end * mr) x columns of slivers [sliver_begin, sliver_end).
void gemm_block(const detail::SgemmKernels& kern, const SgemmPackedA& a, const SgemmIndexedB& b, int64_t n,
                int64_t panel_begin, int64_t panel_end, int64_t sliver_begin, int64_t sliver_end, float alpha,
                float beta, float* c, int64_t ldc) {
  const int64_t mr = kern.mr, nr = kern.nr, m = a.rows(), k = a.depth();
  const DepthBlocks blocks = depth_blocks(k);
  PackBuffers& buf = thread_buffers();
  const int64_t slivers_per_block = kNc / nr;
  const int64_t panels_per_block = kMc / mr;
  buf.b.resize(static_cast<std::size_t>(blocks.size * kNc));
  for (int64_t s0 = sliver_begin; s0 < sliver_end; s0 += slivers_per_block) {
    const int64_t s1 = std::min(sliver_end, s0 + slivers_per_block);
    buf.runs.clear();
    buf.run_begin.clear();
    for (int64_t s = s0; s < s1; ++s) {
      const int n_valid = static_cast<int>(std::min(nr, n - s * nr));
      column_runs(b.col_offsets, s * nr, n_valid, buf.sliver_runs);
      buf.run_begin.push_back(static_cast<int>(buf.runs.size()));
      buf.runs.insert(buf.runs.end(), buf.sliver_runs.begin(), buf.sliver_runs.end());
    }
    buf.run_begin.push_back(static_cast<int>(buf.runs.size()));
    // A sliver whose B rows are one contiguous run, or one run per half (split at
    // kern.direct_half), needs no packing when the ISA has a kernel that reads B in place.
    auto direct = [&](std::size_t local) {
      if (kern.tile_direct == nullptr) return false;
      const int first = buf.run_begin[local], count = buf.run_begin[local + 1] - first;
      const detail::SgemmColumnRun* r = buf.runs.data() + first;
      if (count == 1) return r[0].stride == 1;
      return count == 2 && r[0].stride == 1 && r[1].stride == 1 && r[0].length == kern.direct_half;
    };
    for (int64_t block = 0; block < blocks.count; ++block) {
      const int64_t p0 = block * blocks.size;
      const int64_t kc = std::min(blocks.size, k - p0);
      for (int64_t s = s0; s < s1; ++s) {
        const std::size_t local = static_cast<std::size_t>(s - s0);
        const int n_valid = static_cast<int>(std::min(nr, n - s * nr));
        if (direct(local)) continue;
        kern.pack_b(kc, b.base, b.row_offsets.data() + p0, buf.runs.data() + buf.run_begin[local],
                    buf.run_begin[local + 1] - buf.run_begin[local], n_valid,
                    buf.b.data() + static_cast<int64_t>(local) * kc * nr);
      }
      const float block_beta = block == 0 ? beta : 1.0f;
      for (int64_t q0 = panel_begin; q0 < panel_end; q0 += panels_per_block) {
        const int64_t q1 = std::min(panel_end, q0 + panels_per_block);
        for (int64_t s = s0; s < s1; ++s) {
          const int n_valid = static_cast<int>(std::min(nr, n - s * nr));
          const std::size_t local = static_cast<std::size_t>(s - s0);
          if (direct(local)) {
            const int first = buf.run_begin[local];
            const detail::SgemmColumnRun* r = buf.runs.data() + first;
            const float* b_low = b.base + r[0].src;
            const float* b_high = buf.run_begin[local + 1] - first == 2 ? b.base + r[1].src : b_low + kern.direct_half;
            for (int64_t q = q0; q < q1; ++q) {
              const int m_valid = static_cast<int>(std::min(mr, m - q * mr));
              kern.tile_direct(kc, a.panels() + q * mr * k + p0 * mr, b_low, b_high, b.row_offsets.data() + p0,
                               c + q * mr * ldc + s * nr, ldc, alpha, block_beta, m_valid, n_valid);
            }
            continue;
          }
          const float* b_sliver = buf.b.data() + static_cast<int64_t>(local) * kc * nr;
          for (int64_t q = q0; q < q1; ++q) {
            const int m_valid = static_cast<int>(std::min(mr, m - q * mr));
            kern.tile(kc, a.panels() + q * mr * k + p0 * mr, b_sliver, c + q * mr * ldc + s * nr, ldc, alpha,
                      block_beta, m_valid, n_valid);
          }
        }
      }
    }
  }
}

void gemm_packed(const SgemmPackedA& a, const SgemmIndexedB& b, float alpha, float beta, float* c, int64_t ldc) {
  const detail::SgemmKernels& kern = g_kernels.for_isa(a.isa());  // the layout A was packed in
  const int64_t m = a.rows(), k = a.depth();
  const int64_t n = static_cast<int64_t>(b.col_offsets.size());
  if (m == 0 || n == 0) return;
  if (k == 0) {
    scale_c(m, n, beta, c, ldc);
    return;
  }
  const int64_t panels = (m + kern.mr - 1) / kern.mr;
  const int64_t slivers = (n + kern.nr - 1) / kern.nr;
  const int64_t flops = 2 * m * n * k;
  if (in_parallel_region() || num_threads() == 1 || flops < kMinParallelFlops) {
    gemm_block(kern, a, b, n, 0, panels, 0, slivers, alpha, beta, c, ldc);
    return;
  }
  // Split the dimension with more tiles; each thread owns whole tiles of C.
  if (slivers >= panels) {
    parallel_for(slivers, [&](int64_t s0, int64_t s1) { gemm_block(kern, a, b, n, 0, panels, s0, s1, alpha, beta, c, ldc); });
  } else {
    parallel_for(panels, [&](int64_t q0, int64_t q1) { gemm_block(kern, a, b, n, q0, q1, 0, slivers, alpha, beta, c, ldc); });
  }
}

}  // namespace

void SgemmPackedA::pack(Transpose trans_a, int64_t m, int64_t k, const float* a, int64_t lda) {
  check_size(m, "m");
  check_size(k, "k");
  if (m > 0 && k > 0) check_leading(lda, trans_a == Transpose::yes ? m : k, "lda");
  isa_ = active_isa();
  const detail::SgemmKernels& kern = g_kernels.for_isa(isa_);
  mr_ = kern.mr;
  m_ = m;
  k_ = k;
  const int64_t panels = (m + mr_ - 1) / mr_;
  data_.resize(static_cast<std::size_t>(panels * mr_ * k));
  auto pack_panel = [&](int64_t q) {
    float* out = data_.data() + q * mr_ * k;
    const int64_t rows = std::min<int64_t>(mr_, m - q * mr_);
    if (trans_a == Transpose::yes) {
      // op(A)(i, p) = a[p * lda + i]: each depth step is a contiguous run of the panel's rows.
      for (int64_t p = 0; p < k; ++p) {
        const float* src = a + p * lda + q * mr_;
        float* dst = out + p * mr_;
        for (int64_t t = 0; t < rows; ++t) dst[t] = src[t];
        for (int64_t t = rows; t < mr_; ++t) dst[t] = 0.0f;
      }
    } else {
      for (int64_t t = 0; t < mr_; ++t) {
        if (t < rows) {
          const float* src = a + (q * mr_ + t) * lda;
          for (int64_t p = 0; p < k; ++p) out[p * mr_ + t] = src[p];
        } else {
          for (int64_t p = 0; p < k; ++p) out[p * mr_ + t] = 0.0f;
        }
      }
    }
  };
  if (in_parallel_region() || panels * mr_ * k < (int64_t{1} << 16)) {
    for (int64_t q = 0; q < panels; ++q) pack_panel(q);
  } else {
    parallel_for(panels, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) pack_panel(q);
    });
  }
}

void sgemm(const SgemmPackedA& a, const SgemmIndexedB& b, float alpha, float beta, float* c, int64_t ldc) {
  if (static_cast<int64_t>(b.row_offsets.size()) != a.depth())
    throw ArgumentError(fmt::format("sgemm: indexed B has {} row offsets, expected the depth of A ({})",
                                    b.row_offsets.size(), a.depth()));
  const int64_t n = static_cast<int64_t>(b.col_offsets.size());
  if (a.rows() > 0 && n > 0) check_leading(ldc, n, "ldc");
  if (a.rows() > 0 && n > 0 && a.depth() > 0 && b.base == nullptr)
    throw ArgumentError("sgemm: indexed B has a null base pointer");
  gemm_packed(a, b, alpha, beta, c, ldc);
}

void sgemm(Transpose trans_a, Transpose trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  check_size(m, "m");
  check_size(n, "n");
  check_size(k, "k");
  if (m == 0 || n == 0) return;
  check_leading(ldc, n, "ldc");
  if (k == 0) {
    scale_c(m, n, beta, c, ldc);
    return;
  }
  check_leading(ldb, trans_b == Transpose::yes ? k : n, "ldb");
  thread_local SgemmPackedA packed;
  thread_local std::vector<int64_t> row_offsets, col_offsets;
  packed.pack(trans_a, m, k, a, lda);
  row_offsets.resize(static_cast<std::size_t>(k));
  col_offsets.resize(static_cast<std::size_t>(n));
  const bool tb = trans_b == Transpose::yes;
  for (int64_t r = 0; r < k; ++r) row_offsets[static_cast<std::size_t>(r)] = tb ? r : r * ldb;
  for (int64_t j = 0; j < n; ++j) col_offsets[static_cast<std::size_t>(j)] = tb ? j * ldb : j;
  gemm_packed(packed, SgemmIndexedB{b, row_offsets, col_offsets}, alpha, beta, c, ldc);
}

void sgemm_dot_rows(int64_t m, int64_t n, int64_t length, int64_t segments, std::span<const float* const> a_rows,
                    std::span<const float* const> b_rows, float alpha, float beta, float* c, int64_t ldc) {
  check_size(m, "m");
  check_size(n, "n");
  check_size(length, "length");
  check_size(segments, "segments");
  if (m == 0 || n == 0) return;
  check_leading(ldc, n, "ldc");
  if (static_cast<int64_t>(a_rows.size()) < segments * m || static_cast<int64_t>(b_rows.size()) < segments * n)
    throw ArgumentError(fmt::format("sgemm_dot_rows: {} A rows and {} B rows given, expected {} and {}",
                                    a_rows.size(), b_rows.size(), segments * m, segments * n));
  if (segments == 0 || length == 0) {
    scale_c(m, n, beta, c, ldc);
    return;
  }
  const detail::SgemmKernels& kern = g_kernels.active();
  const int64_t block = std::max<int64_t>(1, (2048 + length - 1) / length);
  const int64_t col_tiles = (n + kern.dot_tile_cols - 1) / kern.dot_tile_cols;
  auto run = [&](int64_t t0, int64_t t1) {
    kern.dot_rows(m, n, t0 * kern.dot_tile_cols, std::min(n, t1 * kern.dot_tile_cols), length, segments, block,
                  a_rows.data(), b_rows.data(), alpha, beta, c, ldc);
  };
  const int64_t flops = 2 * m * n * length * segments;
  if (in_parallel_region() || num_threads() == 1 || flops < kMinParallelFlops) {
    run(0, col_tiles);
  } else {
    parallel_for(col_tiles, run);
  }
}

SgemmTile sgemm_tile(Isa isa) {
  const detail::SgemmKernels& kern = g_kernels.for_isa(isa);
  return {kern.mr, kern.nr};
}

namespace detail {
const SgemmKernels& sgemm_kernels() { return g_kernels.active(); }
const IsaDispatchBase& sgemm_dispatch() { return g_kernels; }
}  // namespace detail

}  // namespace bitmix
