// 2-D convolution forward and backward on the core sgemm.
//
// Forward: per image, the input is copied once into a zero-padded buffer and the convolution
// is one GEMM per group, weights [Cout_g x Cin_g*KH*KW] (packed once per call) times the im2col
// matrix of the padded image, which sgemm reads through offset tables (SgemmIndexedB): the
// im2col matrix is only ever materialized sliver by sliver inside the GEMM's packing, in cache.
//
// Backward, stride 1: the input gradient is itself a convolution, of the output gradient
// padded by KH-1-pad with the weights flipped and transposed, so it goes through the same
// indexed GEMM. The weight gradient is a sum of row dot products (sgemm_dot_rows): row co of the
// output gradient (laid out on the padded width, zero in the columns that wrap around) against
// the padded input shifted by each kernel offset, summed over the images of a thread.
// Backward, other strides: W^T * dY then col2im for the input gradient, an explicit im2col
// for the weight gradient.
//
// Threads split the batch; each thread accumulates a partial weight gradient over its images
// and the partials are summed in thread order (deterministic for a given thread count).
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/core/sgemm.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/nn/functional.hpp"

namespace bitmix::nn {

void ensure_shape(Tensor& t, const Shape& shape) {
  if (t.shape() == shape) return;
  if (t.numel() == shape_numel(shape) && !t.empty()) {
    t.reshape(shape);
    return;
  }
  t = Tensor(shape);
}

Conv2dOptions Conv2dOptions::square(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride,
                                    int64_t padding, int64_t groups, bool bias) {
  Conv2dOptions o;
  o.in_channels = in_channels;
  o.out_channels = out_channels;
  o.kernel_h = o.kernel_w = kernel;
  o.stride_h = o.stride_w = stride;
  o.pad_h = o.pad_w = padding;
  o.groups = groups;
  o.bias = bias;
  return o;
}

void Conv2dOptions::validate(std::string_view layer) const {
  auto fail = [&](const std::string& what) { throw ArgumentError(fmt::format("{}: {}", layer, what)); };
  if (in_channels <= 0 || out_channels <= 0)
    fail(fmt::format("channels must be positive (in {}, out {})", in_channels, out_channels));
  if (groups <= 0 || in_channels % groups != 0 || out_channels % groups != 0)
    fail(fmt::format("groups = {} must divide in_channels = {} and out_channels = {}", groups, in_channels,
                     out_channels));
  if (kernel_h <= 0 || kernel_w <= 0) fail(fmt::format("kernel {}x{} must be positive", kernel_h, kernel_w));
  if (stride_h <= 0 || stride_w <= 0) fail(fmt::format("stride {}x{} must be positive", stride_h, stride_w));
  if (pad_h < 0 || pad_w < 0) fail(fmt::format("padding {}x{} must be >= 0", pad_h, pad_w));
}

Shape Conv2dOptions::output_shape(const Shape& input_shape, std::string_view layer) const {
  if (input_shape.size() != 4)
    throw ShapeError(fmt::format("{}: expected an input [N, {}, H, W], got {}", layer, in_channels,
                                 shape_to_string(input_shape)));
  if (input_shape[1] != in_channels)
    throw ShapeError(fmt::format("{}: expected {} input channels, got input {}", layer, in_channels,
                                 shape_to_string(input_shape)));
  const int64_t oh = (input_shape[2] + 2 * pad_h - kernel_h) / stride_h + 1;
  const int64_t ow = (input_shape[3] + 2 * pad_w - kernel_w) / stride_w + 1;
  if (input_shape[2] + 2 * pad_h < kernel_h || input_shape[3] + 2 * pad_w < kernel_w || oh <= 0 || ow <= 0)
    throw ShapeError(fmt::format("{}: input {} is smaller than the {}x{} kernel (padding {}x{})", layer,
                                 shape_to_string(input_shape), kernel_h, kernel_w, pad_h, pad_w));
  return {input_shape[0], out_channels, oh, ow};
}

int64_t Conv2dOptions::macs_per_image(int64_t height, int64_t width) const {
  const int64_t oh = (height + 2 * pad_h - kernel_h) / stride_h + 1;
  const int64_t ow = (width + 2 * pad_w - kernel_w) / stride_w + 1;
  return oh * ow * out_channels * (in_channels / groups) * kernel_h * kernel_w;
}

namespace {

// Shapes of one convolution call. Strided convolutions work on "phase planes" of the padded
// input: phase (ry, rx) holds the pixels at padded coordinates (a * sh + ry, b * sw + rx), so a
// stride-s convolution becomes a stride-1 one over the phases and every row the GEMM reads is
// contiguous. With stride 1 there is one phase: the padded input itself.
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

Geometry make_geometry(const Shape& input, const Conv2dOptions& o) {
  Geometry g{};
  g.n = input[0];
  g.cin = input[1];
  g.h = input[2];
  g.w = input[3];
  g.cout = o.out_channels;
  g.kh = o.kernel_h;
  g.kw = o.kernel_w;
  g.sh = o.stride_h;
  g.sw = o.stride_w;
  g.ph = o.pad_h;
  g.pw = o.pad_w;
  g.oh = (g.h + 2 * g.ph - g.kh) / g.sh + 1;
  g.ow = (g.w + 2 * g.pw - g.kw) / g.sw + 1;
  g.groups = o.groups;
  g.cin_g = g.cin / g.groups;
  g.cout_g = g.cout / g.groups;
  g.depth = g.cin_g * g.kh * g.kw;
  g.hp = g.h + 2 * g.ph;
  g.wp = g.w + 2 * g.pw;
  g.qh = (g.hp + g.sh - 1) / g.sh;
  g.qw = (g.wp + g.sw - 1) / g.sw;
  g.qplane = g.qh * g.qw;
  g.phase_stride = g.cin * g.qplane;
  g.phases = g.sh * g.sw;
  g.out_pixels = g.oh * g.ow;
  return g;
}

void check_conv_shapes(const Tensor& input, const Tensor& weight, const Tensor* bias, const Conv2dOptions& o,
                       std::string_view layer) {
  o.validate(layer);
  o.output_shape(input.shape(), layer);
  weight.expect_shape(o.weight_shape(), fmt::format("{}: weight", layer));
  if (bias != nullptr) bias->expect_shape({o.out_channels}, fmt::format("{}: bias", layer));
}

typedef float f32x4 __attribute__((vector_size(16)));
typedef int i32x4 __attribute__((vector_size(16)));

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
      const f32x4 even = __builtin_shuffle(a, b, i32x4{0, 2, 4, 6});
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
      p0 = __builtin_shuffle(c, p0, i32x4{0, 5, 1, 7});
      p1 = __builtin_shuffle(c, p1, i32x4{2, 5, 3, 7});
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
    const f32x4 e = __builtin_shuffle(a, b, i32x4{0, 2, 4, 6});
    const f32x4 o = __builtin_shuffle(a, b, i32x4{1, 3, 5, 7});
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
    const f32x4 lo = __builtin_shuffle(e, o, i32x4{0, 4, 1, 5});
    const f32x4 hi = __builtin_shuffle(e, o, i32x4{2, 6, 3, 7});
    __builtin_memcpy(dst + 2 * k, &lo, sizeof(lo));
    __builtin_memcpy(dst + 2 * k + 4, &hi, sizeof(hi));
  }
  for (; 2 * k < n; ++k) {
    dst[2 * k] = even[k];
    if (2 * k + 1 < n) dst[2 * k + 1] = odd[k];
  }
}

// Copies `channels` planes of h x w into zero-padded planes of hp x wp, followed by `slack`
// zeros (reads of the flattened padded image may run past the last plane by a few floats).
void pad_planes(const float* __restrict src, int64_t channels, int64_t h, int64_t w, int64_t top, int64_t left,
                int64_t hp, int64_t wp, int64_t slack, float* __restrict dst) {
  for (int64_t c = 0; c < channels; ++c) {
    float* plane = dst + c * hp * wp;
    zero_row(plane, top * wp + left);
    for (int64_t y = 0; y < h; ++y) {
      float* row = plane + (top + y) * wp + left;
      copy_row(row, src + (c * h + y) * w, w);
      // The right border of this row and the left border of the next are adjacent.
      const int64_t gap = y + 1 < h ? wp - w : wp - left - w;
      zero_row(row + w, gap);
    }
    zero_row(plane + (top + h) * wp, (hp - top - h) * wp);
  }
  zero_row(dst + channels * hp * wp, slack);
}

// The phase buffer of one image (see Geometry): with stride 1 the zero-padded image.
void build_phases(const float* image, const Geometry& g, float* out) {
  if (g.unit_stride()) {
    pad_planes(image, g.cin, g.h, g.w, g.ph, g.pw, g.hp, g.wp, g.qw + g.kw, out);
    return;
  }
  if (g.sw <= 2) {
    // One pass over the input: every row goes to the phase rows of its padded row's residue,
    // split into its even and odd padded columns (copied whole when sw = 1); borders stay zero.
    std::fill(out, out + g.phase_buffer_size(), 0.0f);
    for (int64_t c = 0; c < g.cin; ++c)
      for (int64_t y = 0; y < g.h; ++y) {
        const int64_t yp = y + g.ph, ry = yp % g.sh, a = yp / g.sh;
        const float* src = image + (c * g.h + y) * g.w;
        float* first = out + (ry * g.sw + g.pw % g.sw) * g.phase_stride + c * g.qplane + a * g.qw + g.pw / g.sw;
        if (g.sw == 1) {
          copy_row(first, src, g.w);
          continue;
        }
        float* second =
            out + (ry * 2 + (g.pw + 1) % 2) * g.phase_stride + c * g.qplane + a * g.qw + (g.pw + 1) / 2;
        unzip_row(src, g.w, first, second);
      }
    return;
  }
  for (int64_t ry = 0; ry < g.sh; ++ry)
    for (int64_t rx = 0; rx < g.sw; ++rx) {
      // Columns b with input column b * sw + rx - pw inside [0, w).
      const int64_t b_lo = std::max<int64_t>(0, (g.pw - rx + g.sw - 1) / g.sw);
      const int64_t b_hi = std::min<int64_t>(g.qw, (g.w - 1 + g.pw - rx) / g.sw + 1);
      for (int64_t c = 0; c < g.cin; ++c) {
        float* plane = out + (ry * g.sw + rx) * g.phase_stride + c * g.qplane;
        for (int64_t a = 0; a < g.qh; ++a) {
          float* row = plane + a * g.qw;
          const int64_t y = a * g.sh + ry - g.ph;
          if (y < 0 || y >= g.h || b_hi <= b_lo) {
            zero_row(row, g.qw);
            continue;
          }
          zero_row(row, b_lo);
          gather_row(row + b_lo, image + (c * g.h + y) * g.w + b_lo * g.sw + rx - g.pw, b_hi - b_lo, g.sw);
          zero_row(row + b_hi, g.qw - b_hi);
        }
      }
    }
  zero_row(out + g.phases * g.phase_stride, g.qw + g.kw);
}

// Offsets of the im2col matrix of one group over a phase buffer: rows (c, i, j), columns (y, x).
void input_offsets(const Geometry& g, std::vector<int64_t>& rows, std::vector<int64_t>& cols) {
  rows.resize(static_cast<std::size_t>(g.depth));
  cols.resize(static_cast<std::size_t>(g.out_pixels));
  std::size_t r = 0;
  for (int64_t c = 0; c < g.cin_g; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) rows[r++] = g.tap_offset(c, i, j);
  std::size_t q = 0;
  for (int64_t y = 0; y < g.oh; ++y)
    for (int64_t x = 0; x < g.ow; ++x) cols[q++] = y * g.qw + x;
}

// Kernel taps of one phase of the input gradient: rows ry + sh * t (t < count).
int64_t phase_taps(int64_t r, int64_t stride, int64_t kernel) { return r < kernel ? (kernel - 1 - r) / stride + 1 : 0; }

struct ThreadScratch {
  AlignedVector<float> a, b, c, d;
  std::vector<const float*> a_rows, b_rows;
};
ThreadScratch& scratch() {
  thread_local ThreadScratch s;
  return s;
}

// Per-call state kept between calls by the calling thread, so that a training step allocates
// nothing once shapes are stable (packed weights, offset tables, per-thread partial sums).
struct CallWorkspace {
  std::vector<SgemmPackedA> packed;
  std::vector<std::vector<int64_t>> rows, cols;
  std::vector<float> rearranged;
  std::vector<AlignedVector<float>> partials;
};
CallWorkspace& forward_workspace() {
  thread_local CallWorkspace w;
  return w;
}
CallWorkspace& backward_workspace() {
  thread_local CallWorkspace w;
  return w;
}

float* sized(AlignedVector<float>& v, int64_t count) {
  if (static_cast<int64_t>(v.size()) < count) v.resize(static_cast<std::size_t>(count));
  return v.data();
}

void add_bias(float* out, const float* bias, int64_t channels, int64_t pixels) {
  for (int64_t c = 0; c < channels; ++c) {
    const float b = bias[c];
    float* row = out + c * pixels;
    for (int64_t p = 0; p < pixels; ++p) row[p] += b;
  }
}

}  // namespace

void conv2d_forward(const Tensor& input, const Tensor& weight, const Tensor* bias, const Conv2dOptions& options,
                    Tensor& output, std::string_view layer) {
  check_conv_shapes(input, weight, bias, options, layer);
  const Geometry g = make_geometry(input.shape(), options);
  ensure_shape(output, {g.n, g.cout, g.oh, g.ow});
  if (g.n == 0) return;

  CallWorkspace& ws = forward_workspace();
  std::vector<SgemmPackedA>& packed = ws.packed;
  if (packed.size() < static_cast<std::size_t>(g.groups)) packed.resize(static_cast<std::size_t>(g.groups));
  for (int64_t grp = 0; grp < g.groups; ++grp)
    packed[static_cast<std::size_t>(grp)].pack(Transpose::no, g.cout_g, g.depth, weight.data() + grp * g.cout_g * g.depth,
                                               g.depth);
  ws.rows.resize(1);
  ws.cols.resize(1);
  std::vector<int64_t>& rows = ws.rows[0];
  std::vector<int64_t>& cols = ws.cols[0];
  input_offsets(g, rows, cols);
  // Stride 1 without padding reads the input in place.
  const bool in_place = g.unit_stride() && g.ph == 0 && g.pw == 0;

  auto run_image = [&](int64_t img) {
    const float* base = input.data() + img * g.cin * g.h * g.w;
    if (!in_place) {
      float* phases = sized(scratch().a, g.phase_buffer_size());
      build_phases(base, g, phases);
      base = phases;
    }
    float* out = output.data() + img * g.cout * g.out_pixels;
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      sgemm(packed[static_cast<std::size_t>(grp)], SgemmIndexedB{base + grp * g.cin_g * g.qplane, rows, cols}, 1.0f,
            0.0f, out + grp * g.cout_g * g.out_pixels, g.out_pixels);
    }
    if (bias != nullptr) add_bias(out, bias->data(), g.cout, g.out_pixels);
  };
  if (g.n >= num_threads()) {
    parallel_for(g.n, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) run_image(i);
    });
  } else {
    for (int64_t i = 0; i < g.n; ++i) run_image(i);  // the GEMMs split the image's columns
  }
}

void conv2d_backward(const Tensor& input, const Tensor& weight, const Tensor& grad_output, const Conv2dOptions& options,
                     Tensor* grad_input, Tensor* grad_weight, Tensor* grad_bias, bool accumulate,
                     std::string_view layer) {
  check_conv_shapes(input, weight, nullptr, options, layer);
  const Geometry g = make_geometry(input.shape(), options);
  grad_output.expect_shape({g.n, g.cout, g.oh, g.ow}, fmt::format("{}: output gradient", layer));
  if (grad_input != nullptr) ensure_shape(*grad_input, input.shape());
  if (grad_weight != nullptr) {
    if (accumulate) grad_weight->expect_shape(options.weight_shape(), fmt::format("{}: weight gradient", layer));
    else ensure_shape(*grad_weight, options.weight_shape());
  }
  if (grad_bias != nullptr) {
    if (accumulate) grad_bias->expect_shape({g.cout}, fmt::format("{}: bias gradient", layer));
    else ensure_shape(*grad_bias, {g.cout});
  }

  // Bias: a per-channel sum, parallel over channels (independent of the thread count).
  if (grad_bias != nullptr) {
    float* gb = grad_bias->data();
    parallel_for(g.cout, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double sum = 0;
        for (int64_t img = 0; img < g.n; ++img) {
          const float* row = grad_output.data() + (img * g.cout + c) * g.out_pixels;
          float partial = 0;
          for (int64_t p = 0; p < g.out_pixels; ++p) partial += row[p];
          sum += double{partial};
        }
        gb[c] = (accumulate ? gb[c] : 0.0f) + static_cast<float>(sum);
      }
    });
  }
  if (grad_input == nullptr && grad_weight == nullptr) return;
  if (g.n == 0) {
    if (grad_weight != nullptr && !accumulate) grad_weight->zero();
    return;
  }

  // ---- Input gradient as a stride-1 transposed convolution per phase of the padded input:
  // phase (ry, rx) of the padded input gradient is
  //   dxp[c][a * sh + ry][b * sw + rx] = sum_{o, t, u} W[o][c][ry + sh t][rx + sw u] * dY[o][a - t][b - u],
  // a GEMM of the rearranged weights [Cin_g x Cout_g * Ty * Tx] with the output gradient,
  // zero-padded and read through offsets, over the (a, b) that fall inside the unpadded image.
  // With stride 1 there is one phase and the GEMM writes the input gradient directly; otherwise
  // the phases are interleaved into it afterwards.
  struct Phase {
    int64_t ty = 0, tx = 0;      // kernel taps
    int64_t a_lo = 0, na = 0;    // padded rows a_lo .. a_lo + na - 1 (unpadded y = a * sh + ry - ph)
    int64_t b_lo = 0, nb = 0;
  };
  const bool unit = g.unit_stride();
  const std::size_t phase_count = static_cast<std::size_t>(g.phases);
  std::vector<Phase> phase(phase_count);
  int64_t gtop = 0, gleft = 0, a_end = g.oh, b_end = g.ow;
  auto first_at_least = [](int64_t lo, int64_t r, int64_t s) {  // smallest a >= 0 with a * s + r >= lo
    return lo <= r ? int64_t{0} : (lo - r + s - 1) / s;
  };
  for (int64_t ry = 0; ry < g.sh; ++ry)
    for (int64_t rx = 0; rx < g.sw; ++rx) {
      Phase& ph = phase[static_cast<std::size_t>(ry * g.sw + rx)];
      ph.ty = phase_taps(ry, g.sh, g.kh);
      ph.tx = phase_taps(rx, g.sw, g.kw);
      ph.a_lo = first_at_least(g.ph, ry, g.sh);
      ph.na = std::max<int64_t>(0, first_at_least(g.ph + g.h, ry, g.sh) - ph.a_lo);
      ph.b_lo = first_at_least(g.pw, rx, g.sw);
      ph.nb = std::max<int64_t>(0, first_at_least(g.pw + g.w, rx, g.sw) - ph.b_lo);
      if (ph.ty == 0 || ph.tx == 0 || ph.na == 0 || ph.nb == 0) continue;
      gtop = std::max(gtop, ph.ty - 1 - ph.a_lo);
      gleft = std::max(gleft, ph.tx - 1 - ph.b_lo);
      a_end = std::max(a_end, ph.a_lo + ph.na);
      b_end = std::max(b_end, ph.b_lo + ph.nb);
    }
  // dY[a - t] is at row a - t + gtop of its padded buffer (gtop zero rows above it).
  const int64_t gh = a_end + gtop, gw = b_end + gleft;
  const int64_t g_plane = gh * gw;
  const int64_t grad_count = g.cout * g_plane + gw + g.kw;
  CallWorkspace& ws = backward_workspace();
  const std::size_t packed_count = phase_count * static_cast<std::size_t>(g.groups);
  if (ws.packed.size() < packed_count) ws.packed.resize(packed_count);
  ws.rows.resize(phase_count + 1);
  ws.cols.resize(phase_count + 1);
  int64_t phase_out_count = 0, phase_out_total = 0;
  std::vector<int64_t> phase_offset(phase_count, 0);  // each phase's block in the per-image scratch
  // Zeros standing in for a phase that no kernel tap reaches (a kernel smaller than the stride).
  const std::vector<float> zeros_storage(static_cast<std::size_t>(g.w + 8), 0.0f);
  const float* zeros = zeros_storage.data();
  if (grad_input != nullptr) {
    for (int64_t ry = 0; ry < g.sh; ++ry)
      for (int64_t rx = 0; rx < g.sw; ++rx) {
        const std::size_t p = static_cast<std::size_t>(ry * g.sw + rx);
        const Phase& ph = phase[p];
        if (ph.ty == 0 || ph.tx == 0 || ph.na == 0 || ph.nb == 0) continue;
        phase_out_count = std::max(phase_out_count, g.cin * ph.na * ph.nb);
        phase_offset[p] = phase_out_total;
        phase_out_total += g.cin * ph.na * ph.nb;
        const int64_t depth = g.cout_g * ph.ty * ph.tx;
        ws.rearranged.resize(static_cast<std::size_t>(g.cin_g * depth));
        for (int64_t grp = 0; grp < g.groups; ++grp) {
          const float* wg = weight.data() + grp * g.cout_g * g.depth;
          for (int64_t ci = 0; ci < g.cin_g; ++ci)
            for (int64_t co = 0; co < g.cout_g; ++co)
              for (int64_t t = 0; t < ph.ty; ++t)
                for (int64_t u = 0; u < ph.tx; ++u)
                  ws.rearranged[static_cast<std::size_t>(ci * depth + (co * ph.ty + t) * ph.tx + u)] =
                      wg[((co * g.cin_g + ci) * g.kh + ry + g.sh * t) * g.kw + rx + g.sw * u];
          ws.packed[p * static_cast<std::size_t>(g.groups) + static_cast<std::size_t>(grp)].pack(
              Transpose::no, g.cin_g, depth, ws.rearranged.data(), depth);
        }
        std::vector<int64_t>& rows = ws.rows[p];
        std::vector<int64_t>& cols = ws.cols[p];
        rows.clear();
        for (int64_t co = 0; co < g.cout_g; ++co)
          for (int64_t t = 0; t < ph.ty; ++t)
            for (int64_t u = 0; u < ph.tx; ++u) rows.push_back(co * g_plane + (gtop - t) * gw + (gleft - u));
        cols.clear();
        for (int64_t a = ph.a_lo; a < ph.a_lo + ph.na; ++a)
          for (int64_t b = ph.b_lo; b < ph.b_lo + ph.nb; ++b) cols.push_back(a * gw + b);
      }
  }
  // A stride-1 "same" convolution (KH - 1 = 2 * pad) can take the weight-gradient rows straight
  // from the padded output gradient: its rows already have the padded input's width.
  const bool share_padded_grad = grad_input != nullptr && unit && gw == g.wp;
  // The weight gradient runs over the output gradient laid out on the phase width (qw), zero
  // in the columns past ow, against rows of the phase buffer: contiguous dot products.
  const int64_t dw_length = g.oh * g.qw;
  const int64_t phase_count_floats = g.phase_buffer_size();
  const int64_t ext_count = g.cout * g.oh * g.qw;
  const int64_t chunk_max = std::clamp<int64_t>((4096 + dw_length - 1) / dw_length, 1, 64);
  std::vector<int64_t>& in_rows = ws.rows[phase_count];
  if (grad_weight != nullptr) {
    in_rows.resize(static_cast<std::size_t>(g.depth));
    std::size_t r = 0;
    for (int64_t c = 0; c < g.cin_g; ++c)
      for (int64_t i = 0; i < g.kh; ++i)
        for (int64_t j = 0; j < g.kw; ++j) in_rows[r++] = g.tap_offset(c, i, j);
  }

  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), g.n));
  const int64_t wsize = g.cout * g.depth;
  std::vector<AlignedVector<float>>& partials = ws.partials;
  if (partials.size() < static_cast<std::size_t>(threads)) partials.resize(static_cast<std::size_t>(threads));
  std::vector<char> used_partial(static_cast<std::size_t>(threads), 0);

  parallel_run(
      [&](int t, int thread_count) {
        const int64_t i_begin = g.n * t / thread_count, i_end = g.n * (t + 1) / thread_count;
        if (i_begin >= i_end) return;
        ThreadScratch& s = scratch();
        float* partial = nullptr;
        if (grad_weight != nullptr) {
          partials[static_cast<std::size_t>(t)].resize(static_cast<std::size_t>(wsize));
          partial = partials[static_cast<std::size_t>(t)].data();
          used_partial[static_cast<std::size_t>(t)] = 1;
        }
        const int64_t chunk = std::min(chunk_max, i_end - i_begin);
        float* in_buf = grad_weight != nullptr ? sized(s.a, chunk * phase_count_floats) : nullptr;
        float* grad_buf = grad_input != nullptr ? sized(s.b, chunk * grad_count) : nullptr;
        float* ext_buf = (grad_weight != nullptr && !share_padded_grad) ? sized(s.c, chunk * ext_count) : nullptr;
        float* phase_out = (grad_input != nullptr && !unit) ? sized(s.d, phase_out_total) : nullptr;
        bool first_chunk = true;
        for (int64_t c0 = i_begin; c0 < i_end; c0 += chunk) {
          const int64_t c1 = std::min(i_end, c0 + chunk);
          for (int64_t img = c0; img < c1; ++img) {
            const int64_t slot = img - c0;
            const float* x = input.data() + img * g.cin * g.h * g.w;
            const float* dy = grad_output.data() + img * g.cout * g.out_pixels;
            if (grad_input != nullptr) {
              float* padded_grad = grad_buf + slot * grad_count;
              float* dx = grad_input->data() + img * g.cin * g.h * g.w;
              pad_planes(dy, g.cout, g.oh, g.ow, gtop, gleft, gh, gw, gw + g.kw, padded_grad);
              if (unit) {
                for (int64_t grp = 0; grp < g.groups; ++grp)
                  sgemm(ws.packed[static_cast<std::size_t>(grp)],
                        SgemmIndexedB{padded_grad + grp * g.cout_g * g_plane, ws.rows[0], ws.cols[0]}, 1.0f, 0.0f,
                        dx + grp * g.cin_g * g.h * g.w, g.h * g.w);
              } else {
                for (int64_t ry = 0; ry < g.sh; ++ry)
                  for (int64_t rx = 0; rx < g.sw; ++rx) {
                    const std::size_t p = static_cast<std::size_t>(ry * g.sw + rx);
                    const Phase& ph = phase[p];
                    if (ph.na == 0 || ph.nb == 0) continue;
                    const int64_t y0 = ph.a_lo * g.sh + ry - g.ph, x0 = ph.b_lo * g.sw + rx - g.pw;
                    const int64_t pixels = ph.na * ph.nb;
                    if (ph.ty == 0 || ph.tx == 0) {  // no kernel tap lands on these pixels
                      if (g.sw == 2) continue;
                      for (int64_t c = 0; c < g.cin; ++c)
                        for (int64_t i = 0; i < ph.na; ++i)
                          for (int64_t j = 0; j < ph.nb; ++j) dx[(c * g.h + y0 + i * g.sh) * g.w + x0 + j * g.sw] = 0.0f;
                      continue;
                    }
                    for (int64_t grp = 0; grp < g.groups; ++grp)
                      sgemm(ws.packed[p * static_cast<std::size_t>(g.groups) + static_cast<std::size_t>(grp)],
                            SgemmIndexedB{padded_grad + grp * g.cout_g * g_plane, ws.rows[p], ws.cols[p]}, 1.0f, 0.0f,
                            phase_out + phase_offset[p] + grp * g.cin_g * pixels, pixels);
                    if (g.sw == 2) continue;  // zipped below, two column phases at once
                    // Interleave: phase pixel (i, j) is input pixel (y0 + i sh, x0 + j sw).
                    for (int64_t c = 0; c < g.cin; ++c)
                      for (int64_t i = 0; i < ph.na; ++i)
                        scatter_row(dx + (c * g.h + y0 + i * g.sh) * g.w + x0,
                                    phase_out + phase_offset[p] + (c * ph.na + i) * ph.nb, ph.nb, g.sw);
                  }
                if (g.sw == 2) {
                  // Each input row takes its even and odd columns from the two column phases of
                  // its row phase; a phase without taps contributes zeros.
                  for (int64_t c = 0; c < g.cin; ++c)
                    for (int64_t y = 0; y < g.h; ++y) {
                      const int64_t yp = y + g.ph, ry = yp % g.sh;
                      const float* src[2];
                      for (int64_t rx = 0; rx < 2; ++rx) {
                        const std::size_t p = static_cast<std::size_t>(ry * 2 + rx);
                        const Phase& ph = phase[p];
                        const int64_t x0 = ph.b_lo * 2 + rx - g.pw;  // 0 or 1
                        const int64_t i = yp / g.sh - ph.a_lo;
                        src[x0] = (ph.ty == 0 || ph.tx == 0)
                                      ? zeros
                                      : phase_out + phase_offset[p] + (c * ph.na + i) * ph.nb;
                      }
                      zip_row(dx + (c * g.h + y) * g.w, g.w, src[0], src[1]);
                    }
                }
              }
            }
            if (grad_weight != nullptr) {
              build_phases(x, g, in_buf + slot * phase_count_floats);
              if (ext_buf != nullptr) {
                float* ext = ext_buf + slot * ext_count;
                for (int64_t co = 0; co < g.cout; ++co)
                  for (int64_t y = 0; y < g.oh; ++y) {
                    float* row = ext + (co * g.oh + y) * g.qw;
                    copy_row(row, dy + (co * g.oh + y) * g.ow, g.ow);
                    zero_row(row + g.ow, g.qw - g.ow);
                  }
              }
            }
          }
          if (grad_weight == nullptr) continue;
          const int64_t segments = c1 - c0;
          for (int64_t grp = 0; grp < g.groups; ++grp) {
            s.a_rows.resize(static_cast<std::size_t>(segments * g.cout_g));
            s.b_rows.resize(static_cast<std::size_t>(segments * g.depth));
            for (int64_t slot = 0; slot < segments; ++slot) {
              for (int64_t co = 0; co < g.cout_g; ++co) {
                const int64_t channel = grp * g.cout_g + co;
                const float* row = ext_buf != nullptr
                                       ? ext_buf + slot * ext_count + channel * g.oh * g.qw
                                       : grad_buf + slot * grad_count + channel * g_plane + gtop * gw + gleft;
                s.a_rows[static_cast<std::size_t>(slot * g.cout_g + co)] = row;
              }
              const float* in_slot = in_buf + slot * phase_count_floats + grp * g.cin_g * g.qplane;
              for (int64_t r = 0; r < g.depth; ++r)
                s.b_rows[static_cast<std::size_t>(slot * g.depth + r)] = in_slot + in_rows[static_cast<std::size_t>(r)];
            }
            sgemm_dot_rows(g.cout_g, g.depth, dw_length, segments, s.a_rows, s.b_rows, 1.0f, first_chunk ? 0.0f : 1.0f,
                           partial + grp * g.cout_g * g.depth, g.depth);
          }
          first_chunk = false;
        }
      },
      threads);

  if (grad_weight != nullptr) {
    float* gw_out = grad_weight->data();
    parallel_for(wsize, 4096, [&](int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) {
        float sum = accumulate ? gw_out[e] : 0.0f;
        for (int t = 0; t < threads; ++t)
          if (used_partial[static_cast<std::size_t>(t)]) sum += partials[static_cast<std::size_t>(t)][static_cast<std::size_t>(e)];
        gw_out[e] = sum;
      }
    });
  }
}

}  // namespace bitmix::nn
