// Convolution options, shapes and the phase buffers (conv2d_geometry.hpp) shared by the forward
// and backward passes.
#include "nn/conv2d_geometry.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "bitmix/core/error.hpp"

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

namespace conv_detail {

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

ThreadScratch& scratch() {
  thread_local ThreadScratch s;
  return s;
}

}  // namespace conv_detail
}  // namespace bitmix::nn
