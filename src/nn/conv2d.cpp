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

struct Geometry {
  int64_t n, cin, h, w, cout, oh, ow, kh, kw, sh, sw, ph, pw, groups, cin_g, cout_g, depth;
  int64_t hp, wp;   // padded input
  int64_t in_plane;  // hp * wp
  int64_t out_pixels;  // oh * ow
  bool unit_stride() const { return sh == 1 && sw == 1; }
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
  g.in_plane = g.hp * g.wp;
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

// Copies `channels` planes of h x w into zero-padded planes of hp x wp, followed by `slack`
// zeros (reads of the flattened padded image may run past the last plane by a few floats).
// Copies n floats with 4-wide vector moves (rows are 8 to 34 floats: a library call per row
// would cost more than the copy).
inline void copy_row(float* __restrict dst, const float* __restrict src, int64_t n) {
  typedef float f32x4 __attribute__((vector_size(16)));
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    f32x4 v;
    __builtin_memcpy(&v, src + i, sizeof(v));
    __builtin_memcpy(dst + i, &v, sizeof(v));
  }
  for (; i < n; ++i) dst[i] = src[i];
}

inline void zero_row(float* dst, int64_t n) {
  typedef float f32x4 __attribute__((vector_size(16)));
  const f32x4 z = {};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) __builtin_memcpy(dst + i, &z, sizeof(z));
  for (; i < n; ++i) dst[i] = 0.0f;
}

// dst[x] = src[x * stride] for x < n (one output row of an im2col); stride 2 picks the even
// lanes of two 4-wide loads (reads src[2n - 1] at most one float past the last used, which
// every caller's buffer has).
inline void gather_row(float* __restrict dst, const float* __restrict src, int64_t n, int64_t stride) {
  typedef float f32x4 __attribute__((vector_size(16)));
  typedef int i32x4 __attribute__((vector_size(16)));
  int64_t x = 0;
  if (stride == 2) {
    for (; x + 4 <= n; x += 4) {
      f32x4 a, b;
      __builtin_memcpy(&a, src + 2 * x, sizeof(a));
      __builtin_memcpy(&b, src + 2 * x + 4, sizeof(b));
      const f32x4 even = __builtin_shuffle(a, b, i32x4{0, 2, 4, 6});
      __builtin_memcpy(dst + x, &even, sizeof(even));
    }
  }
  for (; x < n; ++x) dst[x] = src[x * stride];
}

// dst[x * stride] += src[x] for x < n (one row of a col2im); stride 2 interleaves with zeros and
// adds whole vectors (touches dst[2n - 1], one float past the last target, with + 0).
inline void scatter_add_row(float* __restrict dst, const float* __restrict src, int64_t n, int64_t stride) {
  typedef float f32x4 __attribute__((vector_size(16)));
  typedef int i32x4 __attribute__((vector_size(16)));
  int64_t x = 0;
  if (stride == 2) {
    const f32x4 zero = {};
    for (; x + 4 <= n; x += 4) {
      f32x4 c, p0, p1;
      __builtin_memcpy(&c, src + x, sizeof(c));
      __builtin_memcpy(&p0, dst + 2 * x, sizeof(p0));
      __builtin_memcpy(&p1, dst + 2 * x + 4, sizeof(p1));
      p0 += __builtin_shuffle(c, zero, i32x4{0, 4, 1, 4});
      p1 += __builtin_shuffle(c, zero, i32x4{2, 4, 3, 4});
      __builtin_memcpy(dst + 2 * x, &p0, sizeof(p0));
      __builtin_memcpy(dst + 2 * x + 4, &p1, sizeof(p1));
    }
  }
  for (; x < n; ++x) dst[x * stride] += src[x];
}

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

// Offsets of the im2col matrix of one group of a padded image: rows (c, i, j), columns (y, x).
void im2col_offsets(int64_t channels, int64_t kh, int64_t kw, int64_t plane, int64_t row_stride, int64_t oh,
                    int64_t ow, int64_t sh, int64_t sw, std::vector<int64_t>& rows, std::vector<int64_t>& cols) {
  rows.resize(static_cast<std::size_t>(channels * kh * kw));
  cols.resize(static_cast<std::size_t>(oh * ow));
  std::size_t r = 0;
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j) rows[r++] = c * plane + i * row_stride + j;
  std::size_t q = 0;
  for (int64_t y = 0; y < oh; ++y)
    for (int64_t x = 0; x < ow; ++x) cols[q++] = y * sh * row_stride + x * sw;
}

struct ThreadScratch {
  AlignedVector<float> a, b, c, d, e;
  std::vector<const float*> a_rows, b_rows;
};

// Per-call state kept between calls by the calling thread, so that a training step allocates
// nothing once shapes are stable (packed weights, offset tables, per-thread partial sums).
struct CallWorkspace {
  std::vector<SgemmPackedA> packed;
  std::vector<int64_t> rows, cols;
  std::vector<float> flipped;
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
ThreadScratch& scratch() {
  thread_local ThreadScratch s;
  return s;
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
  const bool needs_padding = g.ph > 0 || g.pw > 0;
  std::vector<int64_t>& rows = ws.rows;
  std::vector<int64_t>& cols = ws.cols;
  im2col_offsets(g.cin_g, g.kh, g.kw, g.in_plane, g.wp, g.oh, g.ow, g.sh, g.sw, rows, cols);
  const int64_t padded_count = g.cin * g.in_plane + g.wp + g.kw;

  auto run_image = [&](int64_t img) {
    const float* base = input.data() + img * g.cin * g.h * g.w;
    if (needs_padding) {
      float* padded = sized(scratch().a, padded_count);
      pad_planes(base, g.cin, g.h, g.w, g.ph, g.pw, g.hp, g.wp, g.wp + g.kw, padded);
      base = padded;
    }
    float* out = output.data() + img * g.cout * g.out_pixels;
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      sgemm(packed[static_cast<std::size_t>(grp)], SgemmIndexedB{base + grp * g.cin_g * g.in_plane, rows, cols}, 1.0f,
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

  const bool unit = g.unit_stride();
  // Input gradient as a convolution (stride 1): padding of the output gradient.
  const int64_t gph = g.kh - 1 - g.ph, gpw = g.kw - 1 - g.pw;
  const bool transposed_conv = unit && gph >= 0 && gpw >= 0;
  const int64_t ghp = g.oh + 2 * std::max<int64_t>(gph, 0), gwp = g.ow + 2 * std::max<int64_t>(gpw, 0);
  const int64_t g_plane = ghp * gwp;
  // "Same" convolutions (KH - 1 = 2 * pad, stride 1) can take the weight-gradient rows straight
  // from the padded output gradient: its rows already have the padded input's width.
  const bool share_padded_grad = transposed_conv && gph == g.ph && gpw == g.pw;

  CallWorkspace& ws = backward_workspace();
  std::vector<SgemmPackedA>& packed_dx = ws.packed;
  if (packed_dx.size() < static_cast<std::size_t>(g.groups)) packed_dx.resize(static_cast<std::size_t>(g.groups));
  std::vector<int64_t>& dx_rows = ws.rows;
  std::vector<int64_t>& dx_cols = ws.cols;
  if (grad_input != nullptr) {
    if (transposed_conv) {
      // W'[ci][co][i][j] = W[co][ci][KH-1-i][KW-1-j], one [Cin_g x Cout_g*KH*KW] matrix per group.
      std::vector<float>& flipped = ws.flipped;
      flipped.resize(static_cast<std::size_t>(g.cin_g * g.cout_g * g.kh * g.kw));
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        const float* wg = weight.data() + grp * g.cout_g * g.depth;
        for (int64_t ci = 0; ci < g.cin_g; ++ci)
          for (int64_t co = 0; co < g.cout_g; ++co)
            for (int64_t i = 0; i < g.kh; ++i)
              for (int64_t j = 0; j < g.kw; ++j)
                flipped[static_cast<std::size_t>(((ci * g.cout_g + co) * g.kh + i) * g.kw + j)] =
                    wg[((co * g.cin_g + ci) * g.kh + (g.kh - 1 - i)) * g.kw + (g.kw - 1 - j)];
        packed_dx[static_cast<std::size_t>(grp)].pack(Transpose::no, g.cin_g, g.cout_g * g.kh * g.kw, flipped.data(),
                                                      g.cout_g * g.kh * g.kw);
      }
      im2col_offsets(g.cout_g, g.kh, g.kw, g_plane, gwp, g.h, g.w, 1, 1, dx_rows, dx_cols);
    } else {
      // col = W_g^T * dY_g: A = W_g^T, [Cin_g*KH*KW x Cout_g].
      for (int64_t grp = 0; grp < g.groups; ++grp)
        packed_dx[static_cast<std::size_t>(grp)].pack(Transpose::yes, g.depth, g.cout_g,
                                                      weight.data() + grp * g.cout_g * g.depth, g.depth);
      dx_rows.resize(static_cast<std::size_t>(g.cout_g));
      dx_cols.resize(static_cast<std::size_t>(g.out_pixels));
      for (int64_t r = 0; r < g.cout_g; ++r) dx_rows[static_cast<std::size_t>(r)] = r * g.out_pixels;
      for (int64_t q = 0; q < g.out_pixels; ++q) dx_cols[static_cast<std::size_t>(q)] = q;
    }
  }

  // Weight-gradient reduction rows: stride 1 runs over the padded width (oh rows of wp, the
  // wrap-around columns zero in the gradient), other strides over an explicit im2col.
  const int64_t dw_length = unit ? g.oh * g.wp : g.out_pixels;
  const int64_t padded_count = g.cin * g.in_plane + g.wp + g.kw;
  const int64_t grad_count = g.cout * g_plane + gwp + g.kw;
  const int64_t ext_count = g.cout * g.oh * g.wp;
  const int64_t col_count = g.groups * g.depth * g.out_pixels;
  const int64_t chunk_max = std::clamp<int64_t>((4096 + dw_length - 1) / dw_length, 1, 64);

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
        // Per chunk: padded inputs (or im2col), padded output gradients (or their extension).
        const int64_t in_count = unit ? padded_count : col_count;
        float* in_buf = grad_weight != nullptr ? sized(s.a, chunk * in_count) : nullptr;
        float* grad_buf = nullptr;
        if (transposed_conv && grad_input != nullptr) grad_buf = sized(s.b, chunk * grad_count);
        float* ext_buf = (grad_weight != nullptr && unit && !(share_padded_grad && grad_input != nullptr))
                             ? sized(s.c, chunk * ext_count)
                             : nullptr;
        bool first_chunk = true;
        for (int64_t c0 = i_begin; c0 < i_end; c0 += chunk) {
          const int64_t c1 = std::min(i_end, c0 + chunk);
          for (int64_t img = c0; img < c1; ++img) {
            const int64_t slot = img - c0;
            const float* x = input.data() + img * g.cin * g.h * g.w;
            const float* dy = grad_output.data() + img * g.cout * g.out_pixels;
            float* padded_grad = grad_buf != nullptr ? grad_buf + slot * grad_count : nullptr;
            if (grad_input != nullptr) {
              float* dx = grad_input->data() + img * g.cin * g.h * g.w;
              if (transposed_conv) {
                pad_planes(dy, g.cout, g.oh, g.ow, gph, gpw, ghp, gwp, gwp + g.kw, padded_grad);
                for (int64_t grp = 0; grp < g.groups; ++grp)
                  sgemm(packed_dx[static_cast<std::size_t>(grp)],
                        SgemmIndexedB{padded_grad + grp * g.cout_g * g_plane, dx_rows, dx_cols}, 1.0f, 0.0f,
                        dx + grp * g.cin_g * g.h * g.w, g.h * g.w);
              } else {
                // col = W^T dY, then scatter-add into a padded input gradient and crop it.
                float* col = sized(s.d, g.depth * g.out_pixels + g.cin * g.in_plane + 8);
                float* acc = col + g.depth * g.out_pixels;
                std::fill(acc, acc + g.cin * g.in_plane + 8, 0.0f);
                for (int64_t grp = 0; grp < g.groups; ++grp) {
                  sgemm(packed_dx[static_cast<std::size_t>(grp)],
                        SgemmIndexedB{dy + grp * g.cout_g * g.out_pixels, dx_rows, dx_cols}, 1.0f, 0.0f, col,
                        g.out_pixels);
                  for (int64_t ci = 0; ci < g.cin_g; ++ci)
                    for (int64_t i = 0; i < g.kh; ++i)
                      for (int64_t j = 0; j < g.kw; ++j) {
                        const float* crow = col + ((ci * g.kh + i) * g.kw + j) * g.out_pixels;
                        float* plane = acc + (grp * g.cin_g + ci) * g.in_plane + i * g.wp + j;
                        for (int64_t y = 0; y < g.oh; ++y)
                          scatter_add_row(plane + y * g.sh * g.wp, crow + y * g.ow, g.ow, g.sw);
                      }
                }
                for (int64_t ci = 0; ci < g.cin; ++ci)
                  for (int64_t y = 0; y < g.h; ++y)
                    std::memcpy(dx + (ci * g.h + y) * g.w, acc + ci * g.in_plane + (y + g.ph) * g.wp + g.pw,
                                static_cast<std::size_t>(g.w) * sizeof(float));
              }
            }
            if (grad_weight != nullptr) {
              float* in_slot = in_buf + slot * in_count;
              if (unit) {
                pad_planes(x, g.cin, g.h, g.w, g.ph, g.pw, g.hp, g.wp, g.wp + g.kw, in_slot);
                if (ext_buf != nullptr) {
                  float* ext = ext_buf + slot * ext_count;
                  for (int64_t co = 0; co < g.cout; ++co)
                    for (int64_t y = 0; y < g.oh; ++y) {
                      float* row = ext + (co * g.oh + y) * g.wp;
                      copy_row(row, dy + (co * g.oh + y) * g.ow, g.ow);
                      zero_row(row + g.ow, g.wp - g.ow);
                    }
                }
              } else {
                // Explicit im2col of the padded image, [groups][depth][out_pixels].
                float* padded = sized(s.e, padded_count);
                pad_planes(x, g.cin, g.h, g.w, g.ph, g.pw, g.hp, g.wp, g.wp + g.kw, padded);
                for (int64_t ci = 0; ci < g.cin; ++ci)
                  for (int64_t i = 0; i < g.kh; ++i)
                    for (int64_t j = 0; j < g.kw; ++j) {
                      float* crow = in_slot + ((ci * g.kh + i) * g.kw + j) * g.out_pixels;
                      const float* src = padded + ci * g.in_plane + i * g.wp + j;
                      for (int64_t y = 0; y < g.oh; ++y) gather_row(crow + y * g.ow, src + y * g.sh * g.wp, g.ow, g.sw);
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
              const float* dy = grad_output.data() + (c0 + slot) * g.cout * g.out_pixels;
              for (int64_t co = 0; co < g.cout_g; ++co) {
                const int64_t channel = grp * g.cout_g + co;
                const float* row;
                if (!unit) row = dy + channel * g.out_pixels;
                else if (ext_buf != nullptr) row = ext_buf + slot * ext_count + channel * g.oh * g.wp;
                else row = grad_buf + slot * grad_count + channel * g_plane + gph * gwp + gpw;
                s.a_rows[static_cast<std::size_t>(slot * g.cout_g + co)] = row;
              }
              const float* in_slot = in_buf + slot * (unit ? padded_count : col_count);
              for (int64_t ci = 0; ci < g.cin_g; ++ci)
                for (int64_t i = 0; i < g.kh; ++i)
                  for (int64_t j = 0; j < g.kw; ++j) {
                    const int64_t r = (ci * g.kh + i) * g.kw + j;
                    const float* row = unit ? in_slot + (grp * g.cin_g + ci) * g.in_plane + i * g.wp + j
                                            : in_slot + (grp * g.depth + r) * g.out_pixels;
                    s.b_rows[static_cast<std::size_t>(slot * g.depth + r)] = row;
                  }
            }
            sgemm_dot_rows(g.cout_g, g.depth, dw_length, segments, s.a_rows, s.b_rows, 1.0f, first_chunk ? 0.0f : 1.0f,
                           partial + grp * g.cout_g * g.depth, g.depth);
          }
          first_chunk = false;
        }
      },
      threads);

  if (grad_weight != nullptr) {
    float* gw = grad_weight->data();
    const int used = static_cast<int>(std::min<int64_t>(threads, g.n));
    parallel_for(wsize, 4096, [&](int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) {
        float sum = accumulate ? gw[e] : 0.0f;
        for (int t = 0; t < used; ++t)
          if (used_partial[static_cast<std::size_t>(t)]) sum += partials[static_cast<std::size_t>(t)][static_cast<std::size_t>(e)];
        gw[e] = sum;
      }
    });
  }
}

}  // namespace bitmix::nn
