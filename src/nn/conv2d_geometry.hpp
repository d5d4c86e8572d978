#pragma once
// Internal to the convolution sources (conv2d_geometry.cpp, conv2d_forward.cpp,
// conv2d_backward*.cpp): the shapes of one convolution call, the row copies the phase buffers are
// built with, and the per-thread scratch they share.
//
// Strided convolutions work on "phase planes" of the padded input: phase (ry, rx) holds the
// pixels at padded coordinates (a * sh + ry, b * sw + rx), so a stride-s convolution becomes a
// stride-1 one over the phases and every row the GEMM reads is contiguous. With stride 1 there is
// one phase: the padded input itself.
#include <cstdint>
#include <string_view>
#include <vector>

#include "bitmix/core/aligned.hpp"
#include "bitmix/core/sgemm.hpp"
#include "bitmix/core/tensor.hpp"
#include "bitmix/nn/functional.hpp"

namespace bitmix::nn::conv_detail {

// Shapes of one convolution call (see the top of this file for the phase planes).
struct Geometry {
  int64_t n, cin, h, w, cout, oh, ow, kh, kw, sh, sw, ph, pw, groups, cin_g, cout_g, depth;
  int64_t hp, wp;        // padded input
  int64_t qh, qw;        // phase plane (ceil(hp / sh) x ceil(wp / sw))
  int64_t qplane;        // qh * qw
  int64_t phase_stride;  // cin * qplane: one phase of every channel
  int64_t phases;        // sh * sw
  int64_t out_pixels;    // oh * ow
  bool unit_stride() const { return sh == 1 && sw == 1; }
  // Floats of a phase buffer: every phase of every channel, then zero slack that the GEMM's
  // reads of the last rows may run into.
  int64_t phase_buffer_size() const { return phases * phase_stride + qw + kw; }
  // Offset of the first element of kernel tap (c, i, j) in the phase buffer of one group.
  int64_t tap_offset(int64_t c, int64_t i, int64_t j) const {
    return ((i % sh) * sw + j % sw) * phase_stride + c * qplane + (i / sh) * qw + j / sw;
  }
};

Geometry make_geometry(const Shape& input, const Conv2dOptions& o);

// Validates the options and the input, weight and bias shapes (ArgumentError / ShapeError
// naming `layer`).
void check_conv_shapes(const Tensor& input, const Tensor& weight, const Tensor* bias, const Conv2dOptions& o,
                       std::string_view layer);

typedef float f32x4 __attribute__((vector_size(16)));
typedef int i32x4 __attribute__((vector_size(16)));
// Lanes (i, j, k, l) of the 8-lane concatenation of a and b, with constant indices: GCC and
// Clang spell the same shuffle differently.
#if defined(__clang__)
#define BITMIX_SHUFFLE4(a, b, i, j, k, l) __builtin_shufflevector(a, b, i, j, k, l)
#else
#define BITMIX_SHUFFLE4(a, b, i, j, k, l) __builtin_shuffle(a, b, i32x4{i, j, k, l})
#endif

// Copies n floats with 4-wide vector moves. Rows are 8 to 34 floats, so a memcpy/memset call
// per row would cost more than the copy: the attribute keeps GCC from turning these loops back
// into library calls.
#define BITMIX_NO_LIBCALL __attribute__((optimize("no-tree-loop-distribute-patterns")))
BITMIX_NO_LIBCALL inline void copy_row(float* __restrict dst, const float* __restrict src, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    f32x4 v;
    __builtin_memcpy(&v, src + i, sizeof(v));
    __builtin_memcpy(dst + i, &v, sizeof(v));
  }
  for (; i < n; ++i) dst[i] = src[i];
}

BITMIX_NO_LIBCALL inline void zero_row(float* dst, int64_t n) {
  const f32x4 z = {};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) __builtin_memcpy(dst + i, &z, sizeof(z));
  for (; i < n; ++i) dst[i] = 0.0f;
}

// dst[x] = src[x * stride] for x < n; stride 2 picks the even lanes of two 4-wide loads, and
// never reads past src[2 (n - 1)].
inline void gather_row(float* __restrict dst, const float* __restrict src, int64_t n, int64_t stride) {
  int64_t x = 0;
  if (stride == 2) {
    for (; x + 4 < n; x += 4) {
      f32x4 a, b;
      __builtin_memcpy(&a, src + 2 * x, sizeof(a));
      __builtin_memcpy(&b, src + 2 * x + 4, sizeof(b));
      const f32x4 even = BITMIX_SHUFFLE4(a, b, 0, 2, 4, 6);
      __builtin_memcpy(dst + x, &even, sizeof(even));
    }
  } else if (stride == 1) {
    copy_row(dst, src, n);
    return;
  }
  for (; x < n; ++x) dst[x] = src[x * stride];
}

// dst[x * stride] = src[x] for x < n; stride 2 merges with the odd lanes already in dst.
inline void scatter_row(float* __restrict dst, const float* __restrict src, int64_t n, int64_t stride) {
  int64_t x = 0;
  if (stride == 2) {
    for (; x + 4 < n; x += 4) {
      f32x4 c, p0, p1;
      __builtin_memcpy(&c, src + x, sizeof(c));
      __builtin_memcpy(&p0, dst + 2 * x, sizeof(p0));
      __builtin_memcpy(&p1, dst + 2 * x + 4, sizeof(p1));
      p0 = BITMIX_SHUFFLE4(c, p0, 0, 5, 1, 7);
      p1 = BITMIX_SHUFFLE4(c, p1, 2, 5, 3, 7);
      __builtin_memcpy(dst + 2 * x, &p0, sizeof(p0));
      __builtin_memcpy(dst + 2 * x + 4, &p1, sizeof(p1));
    }
  } else if (stride == 1) {
    copy_row(dst, src, n);
    return;
  }
  for (; x < n; ++x) dst[x * stride] = src[x];
}

// even[k] = src[2k], odd[k] = src[2k + 1] for the indices below n: splits a row into the two
// column phases of a stride-2 convolution.
inline void unzip_row(const float* __restrict src, int64_t n, float* __restrict even, float* __restrict odd) {
  int64_t k = 0;
  for (; 2 * k + 8 <= n; k += 4) {
    f32x4 a, b;
    __builtin_memcpy(&a, src + 2 * k, sizeof(a));
    __builtin_memcpy(&b, src + 2 * k + 4, sizeof(b));
    const f32x4 e = BITMIX_SHUFFLE4(a, b, 0, 2, 4, 6);
    const f32x4 o = BITMIX_SHUFFLE4(a, b, 1, 3, 5, 7);
    __builtin_memcpy(even + k, &e, sizeof(e));
    __builtin_memcpy(odd + k, &o, sizeof(o));
  }
  for (; 2 * k < n; ++k) {
    even[k] = src[2 * k];
    if (2 * k + 1 < n) odd[k] = src[2 * k + 1];
  }
}

// dst[2k] = even[k], dst[2k + 1] = odd[k] for the indices below n: the inverse of unzip_row.
inline void zip_row(float* __restrict dst, int64_t n, const float* __restrict even, const float* __restrict odd) {
  int64_t k = 0;
  for (; 2 * k + 8 <= n; k += 4) {
    f32x4 e, o;
    __builtin_memcpy(&e, even + k, sizeof(e));
    __builtin_memcpy(&o, odd + k, sizeof(o));
    const f32x4 lo = BITMIX_SHUFFLE4(e, o, 0, 4, 1, 5);
    const f32x4 hi = BITMIX_SHUFFLE4(e, o, 2, 6, 3, 7);
    __builtin_memcpy(dst + 2 * k, &lo, sizeof(lo));
    __builtin_memcpy(dst + 2 * k + 4, &hi, sizeof(hi));
  }
  for (; 2 * k < n; ++k) {
    dst[2 * k] = even[k];
    if (2 * k + 1 < n) dst[2 * k + 1] = odd[k];
  }
}

// Copies `channels` planes of h x w into zero-padded planes of hp x wp, followed by `slack`
// Copies `channels` planes of h x w into zero-padded planes of hp x wp, followed by `slack`
// zeros (reads of the flattened padded image may run past the last plane by a few floats).
void pad_planes(const float* __restrict src, int64_t channels, int64_t h, int64_t w, int64_t top, int64_t left,
                int64_t hp, int64_t wp, int64_t slack, float* __restrict dst);

// The phase buffer of one image (see Geometry): with stride 1 the zero-padded image.
void build_phases(const float* image, const Geometry& g, float* out);

// Offsets of the im2col matrix of one group over a phase buffer: rows (c, i, j), columns (y, x).
void input_offsets(const Geometry& g, std::vector<int64_t>& rows, std::vector<int64_t>& cols);

// Kernel taps of one phase of the input gradient: rows ry + sh * t (t < count).
inline int64_t phase_taps(int64_t r, int64_t stride, int64_t kernel) { return r < kernel ? (kernel - 1 - r) / stride + 1 : 0; }

// Buffers of the calling thread (one set per thread, shared by the forward and backward passes).
struct ThreadScratch {
  AlignedVector<float> a, b, c, d;
  std::vector<const float*> a_rows, b_rows;
};
ThreadScratch& scratch();

// Per-call state kept between calls by the calling thread, so that a training step allocates
// nothing once shapes are stable (packed weights, offset tables, per-thread partial sums).
struct CallWorkspace {
  std::vector<SgemmPackedA> packed;
  std::vector<std::vector<int64_t>> rows, cols;
  std::vector<float> rearranged;
  std::vector<AlignedVector<float>> partials;
};

inline float* sized(AlignedVector<float>& v, int64_t count) {
  if (static_cast<int64_t>(v.size()) < count) v.resize(static_cast<std::size_t>(count));
  return v.data();
}

}  // namespace bitmix::nn::conv_detail
