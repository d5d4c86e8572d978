// The checked driver of the convolution: validates arguments, picks the dense path (bit-serial,
// or unpacked integer for wide bitwidths), lays out the tile work (pixel offsets, zero-point and
// odd-level corrections) and runs the active ISA's unchecked kernels over output pixel tiles on
// the thread pool.
#include "bitmix/kernels/conv.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/kernels/lut.hpp"
#include "conv_internal.hpp"
#include "family_internal.hpp"
#include "kernel_table.hpp"
#include "layout.hpp"

namespace bitmix::kernels {

int64_t conv_output_size(int64_t in, int64_t kernel, int stride, int pad, const char* what) {
  if (stride < 1 || stride > 64) throw ArgumentError(fmt::format("{}: stride {} outside 1..64", what, stride));
  if (pad < 0) throw ArgumentError(fmt::format("{}: padding {} is negative", what, pad));
  const int64_t span = in + 2 * static_cast<int64_t>(pad) - kernel;
  if (span < 0)
    throw ShapeError(fmt::format("{}: kernel {} does not fit an input of {} with padding {}", what, kernel, in, pad));
  return span / stride + 1;
}

namespace detail {

ConvGeometry check_conv(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
                        const Epilogue& epilogue, bool packed_output, const char* what) {
  if (input.empty()) throw ArgumentError(fmt::format("{}: input activations are empty", what));
  if (weights.empty()) throw ArgumentError(fmt::format("{}: weights are empty", what));
  const WeightSpec& s = weights.spec();
  if (s.in_channels != input.channels())
    throw ShapeError(fmt::format("{}: weights expect {} input channels, input has {} (shape {})", what, s.in_channels,
                                 input.channels(), shape_to_string(input.shape())));
  if (epilogue.channels() != s.out_channels)
    throw ShapeError(fmt::format("{}: epilogue has {} channels, weights have {} output channels", what,
                                 epilogue.channels(), s.out_channels));
  if (packed_output && !epilogue.requantizes())
    throw ArgumentError(fmt::format("{}: packed output needs a requantizing epilogue (Epilogue::requantize)", what));
  if (!packed_output && epilogue.requantizes())
    throw ArgumentError(fmt::format("{}: float output needs a float epilogue (Epilogue::float_output)", what));
  if (params.pad_h > input.border() || params.pad_w > input.border())
    throw ArgumentError(fmt::format("{}: padding ({}, {}) exceeds the input's stored border {}; pack the input with "
                                    "border >= the padding",
                                    what, params.pad_h, params.pad_w, input.border()));
  ConvGeometry g;
  g.batch = input.batch();
  g.channels = input.channels();
  g.height = input.height();
  g.width = input.width();
  g.out_channels = s.out_channels;
  g.kernel_h = s.kernel_h;
  g.kernel_w = s.kernel_w;
  g.stride_h = params.stride_h;
  g.stride_w = params.stride_w;
  g.pad_h = params.pad_h;
  g.pad_w = params.pad_w;
  g.family = params.family;
  if (params.family != KernelFamily::automatic && kernel_family_name(params.family) == "unknown")
    throw ArgumentError(fmt::format("{}: unknown kernel family {}", what, static_cast<int>(params.family)));
  g.out_height = conv_output_size(g.height, g.kernel_h, params.stride_h, params.pad_h, what);
  g.out_width = conv_output_size(g.width, g.kernel_w, params.stride_w, params.pad_w, what);
  // Every partial sum of the bit-serial decomposition stays below reduction * 2^(M + K + 1);
  // keep that inside int32 (with one spare value for the epilogue's "never" threshold).
  const int64_t reduction = (s.depthwise ? 1 : g.channels) * g.kernel_h * g.kernel_w;
  const int shift = s.bits + input.bits() + 1;
  if (reduction > (int64_t{0x7ffffffe} >> shift))
    throw ArgumentError(fmt::format("{}: a reduction of {} terms at {}-bit weights and {}-bit activations may overflow "
                                    "the int32 accumulator (limit {} terms)",
                                    what, reduction, s.bits, input.bits(), int64_t{0x7ffffffe} >> shift));
  return g;
}

namespace {
std::atomic<int> g_dense_path{static_cast<int>(DensePath::automatic)};
}  // namespace

void set_dense_path(DensePath path) { g_dense_path.store(static_cast<int>(path), std::memory_order_relaxed); }
DensePath dense_path() { return static_cast<DensePath>(g_dense_path.load(std::memory_order_relaxed)); }

namespace {

// Per-call scratch, kept per calling thread: the large per-call arrays would otherwise be fresh
// pages (page faults and zeroing) on every call.
template <typename T>
T* scratch(std::vector<T>& buffer, int64_t size) {
  if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(static_cast<std::size_t>(size));
  return buffer.data();
}

// Per-pixel addresses of a tile, walked (n, oh, ow) incrementally: one division per tile and a
// few additions per pixel. Plain values (no references), so the compiler keeps them in registers.
struct PixelWalker {
  int64_t out_height = 0, out_width = 0, stride_h = 1, stride_w = 1, row0 = 0, col0 = 0, stored_height = 0;
  int64_t in_image = 0, in_row = 0, in_pixel = 0;
  int64_t out_image = 0, out_row = 0, out_pixel = 0, out_base = 0;
  const uint32_t* prefix = nullptr;
  int64_t prefix_image = 0, prefix_row = 0, window_h = 0, window_w = 0;
  uint32_t odd_factor = 0;
  // 1x1 windows: code sums counted from the input pixel itself (no integral image)
  const uint8_t* direct_input = nullptr;
  int64_t direct_plane_stride = 0;
  int direct_planes = 0;
  PixelCodeSumsFn pixel_code_sums = nullptr;

  void fill(int64_t p0, int pixels, int64_t* in_offsets, int64_t* out_offsets, int32_t* odd_offsets,
            int64_t* window_rows, int64_t* window_cols) const {
    // Work on a local copy: the int64 stores below could otherwise alias this object's fields.
    const PixelWalker local = *this;
    local.fill_impl(p0, pixels, in_offsets, out_offsets, odd_offsets, window_rows, window_cols);
  }

  void fill_impl(int64_t p0, int pixels, int64_t* in_offsets, int64_t* out_offsets, int32_t* odd_offsets,
                 int64_t* window_rows, int64_t* window_cols) const {
    const int64_t per_image = out_height * out_width;
    int64_t n = p0 / per_image, oh = p0 % per_image / out_width, ow = p0 % out_width;
    for (int q = 0; q < pixels;) {
      // one output row segment: consecutive pixels, constant steps
      const int64_t r = oh * stride_h + row0, c = ow * stride_w + col0;
      const int count = static_cast<int>(std::min<int64_t>(pixels - q, out_width - ow));
      const int64_t in0 = n * in_image + r * in_row + c * in_pixel, in_step = stride_w * in_pixel;
      const int64_t out0 = n * out_image + out_base + oh * out_row + ow * out_pixel;
      for (int i = 0; i < count; ++i) {
        in_offsets[q + i] = in0 + i * in_step;
        out_offsets[q + i] = out0 + i * out_pixel;
      }
      if (odd_offsets && direct_input) {
        std::fill(odd_offsets + q, odd_offsets + q + count, 0);
        for (int j = 0; j < direct_planes; ++j)
          pixel_code_sums(direct_input + in0 + j * direct_plane_stride, count, in_step, in_pixel, j, odd_offsets + q);
        for (int i = 0; i < count; ++i)
          odd_offsets[q + i] = static_cast<int32_t>(odd_factor * static_cast<uint32_t>(odd_offsets[q + i]));
      } else if (odd_offsets) {
        const uint32_t* corner = prefix + n * prefix_image + r * prefix_row + c;
        for (int i = 0; i < count; ++i, corner += stride_w) {
          const uint32_t sum = corner[window_h + window_w] - corner[window_h] - corner[window_w] + corner[0];
          odd_offsets[q + i] = static_cast<int32_t>(odd_factor * sum);
        }
      }
      if (window_rows) {
        for (int i = 0; i < count; ++i) {
          window_rows[q + i] = n * stored_height + r;
          window_cols[q + i] = c + i * stride_w;
        }
      }
      q += count;
      ow += count;
      if (ow == out_width) {
        ow = 0;
        if (++oh == out_height) {
          oh = 0;
          ++n;
        }
      }
    }
  }
};

struct OutputTarget {
  float* out_float = nullptr;
  PackedActivations* out_packed = nullptr;
};

void run_conv(const PackedActivations& input, const PackedWeights& weights, const Epilogue& epilogue,
              const ConvGeometry& g, const OutputTarget& target, const ExternalDense* external) {
  const KernelTable& table = kernel_table();
  const WeightSpec& spec = weights.spec();
  const int64_t out_pixels_per_image = g.out_height * g.out_width;
  const int64_t total_pixels = g.batch * out_pixels_per_image;
  const int64_t tiles = ceil_div(total_pixels, kTilePixels);
  const int64_t blocks = ceil_div(g.out_channels, kLanes);
  const int border = input.border();
  const int act_bits = input.bits();
  const int32_t z = input.quant().zero_point;
  // The family: int8 dot products of unpacked codes, or the popcount family, whose dense layers
  // take the bit-serial path or, for wide bitwidths where M * K plane products cost more than
  // multiplying the codes, the unpacked int16 path (all the same exact accumulators).
  // An external family (the table-lookup kernels) replaces the dense tiles altogether.
  const Int8Table& int8_kernels = int8_table();
  const bool int8 = external == nullptr && conv_family(g.family, spec, act_bits) == KernelFamily::int8;
  bool integer = false;
  const DenseCosts costs = spec.depthwise ? DenseCosts{} : dense_costs(spec, act_bits, table, int8_kernels);
  if (!spec.depthwise && !int8 && external == nullptr) {
    const DensePath path = dense_path();
    integer = path == DensePath::integer || (path == DensePath::automatic && costs.integer16 < costs.bit_serial);
  }
  // Window code sums S per output pixel: the bit-serial odd levels need -(2^M - 1) * S (their
  // planes count +-1 digits); the int8 family's halved 8-bit odd levels need +S
  // (w = 2 v + 1); the int16 path and an external family multiply the true weight values.
  const bool odd = spec.encoding == WeightEncoding::odd_levels && !spec.depthwise && external == nullptr &&
                   (int8 ? int8_halves_weights(spec) : !integer);

  // lane offsets: -z * sum(w) per output channel (padding reads z, so this is exact everywhere)
  std::vector<int32_t> lane_offsets(static_cast<std::size_t>(blocks * kLanes), 0);
  for (int64_t oc = 0; oc < g.out_channels; ++oc)
    lane_offsets[static_cast<std::size_t>(oc)] = static_cast<int32_t>(-z * weights.channel_sums()[static_cast<std::size_t>(oc)]);

  // Odd levels: -(2^M - 1) * (sum of the window's codes) per output pixel, from an integral
  // image (four reads per pixel); a 1x1 window is one pixel, whose codes are counted directly.
  const bool odd_direct = odd && g.kernel_h == 1 && g.kernel_w == 1;
  thread_local std::vector<uint32_t> prefix_buffer;
  const int64_t prefix_row = input.stored_width() + 1, prefix_image = (input.stored_height() + 1) * prefix_row;
  uint32_t* prefix = odd && !odd_direct ? scratch(prefix_buffer, g.batch * prefix_image) : nullptr;
  if (prefix) code_sum_prefix(input, table, prefix);
  const auto odd_factor = int8 ? 1u : static_cast<uint32_t>(-((1 << spec.bits) - 1));
  std::vector<uint8_t> codes;
  if (spec.depthwise) codes = unpack_codes(input);
  thread_local AlignedVector<uint16_t> codes16_buffer;
  const int64_t c2 = round_up(g.channels, 2);
  uint16_t* codes16 = nullptr;
  if (integer) {
    const int64_t size = g.batch * input.stored_height() * input.stored_width() * c2 + 8;
    if (static_cast<int64_t>(codes16_buffer.size()) < size) codes16_buffer.resize(static_cast<std::size_t>(size));
    codes16 = codes16_buffer.data();
    unpack_codes16(input, codes16);
  }
  thread_local AlignedVector<uint8_t> codes8_buffer;
  const int64_t c4 = round_up(g.channels, 4);
  uint8_t* codes8 = nullptr;
  Int8Tile int8_settings;
  if (int8) {
    const int64_t size = g.batch * input.stored_height() * input.stored_width() * c4 + 64;
    if (static_cast<int64_t>(codes8_buffer.size()) < size) codes8_buffer.resize(static_cast<std::size_t>(size));
    codes8 = codes8_buffer.data();
    unpack_codes8(input, int8_kernels, codes8);
    int8_settings = int8_tile_settings(spec, act_bits);
  }
  const int64_t window_h = g.kernel_h * prefix_row, window_w = g.kernel_w;

  const int64_t sh = input.stored_height(), sw = input.stored_width();
  const int64_t in_pixel_bytes = input.pixel_bits() / 8;
  const int64_t in_plane_stride = input.row_stride();
  const int64_t in_row_stride = input.row_stride() * act_bits;

  PackedActivations* packed = target.out_packed;
  const int64_t out_pixel_bytes = packed ? packed->pixel_bits() / 8 : 0;
  const int out_border = packed ? packed->border() : 0;

  PixelWalker walker;
  walker.out_height = g.out_height;
  walker.out_width = g.out_width;
  walker.stride_h = g.stride_h;
  walker.stride_w = g.stride_w;
  walker.row0 = border - g.pad_h;
  walker.col0 = border - g.pad_w;
  walker.stored_height = sh;
  walker.in_image = input.image_stride();
  walker.in_row = in_row_stride;
  walker.in_pixel = in_pixel_bytes;
  if (packed) {
    walker.out_image = packed->image_stride();
    walker.out_row = packed->row_stride() * packed->bits();
    walker.out_pixel = out_pixel_bytes;
    walker.out_base = out_border * walker.out_row + out_border * out_pixel_bytes;
  } else {
    walker.out_image = g.out_channels * out_pixels_per_image;
    walker.out_row = g.out_width;
    walker.out_pixel = 1;
  }
  walker.prefix = prefix;
  walker.prefix_image = prefix_image;
  walker.prefix_row = prefix_row;
  walker.window_h = window_h;
  walker.window_w = window_w;
  walker.odd_factor = odd_factor;
  if (odd_direct) {
    walker.direct_input = input.data();
    walker.direct_plane_stride = input.row_stride();
    walker.direct_planes = act_bits;
    walker.pixel_code_sums = table.pixel_code_sums;
  }

  // Threads only where each gets enough work to pay for the fork and join: a chunk of tiles
  // should cost at least kMinChunkCost units of the path's cost figures (about 8 us on AVX-512,
  // whose units run at about 5 per ns), so a small layer at batch 1 stays on one thread. (An
  // external family counts as bit-serial, an upper bound for the table-lookup kernels.)
  constexpr int64_t kMinChunkCost = 40000;
  const int64_t pixel_cost = spec.depthwise ? g.kernel_h * g.kernel_w * table.integer_pair_cost
                             : int8         ? costs.int8
                             : integer      ? costs.integer16
                                            : costs.bit_serial;
  const int64_t tile_cost = std::max<int64_t>(1, kTilePixels * blocks * pixel_cost);
  const int64_t grain = std::clamp<int64_t>(ceil_div(kMinChunkCost, tile_cost), 1, tiles);
  parallel_for(tiles, grain, [&](int64_t tile_begin, int64_t tile_end) {
    thread_local AlignedVector<uint8_t> external_scratch;
    if (external && static_cast<int64_t>(external_scratch.size()) < external->scratch_bytes)
      external_scratch.resize(static_cast<std::size_t>(external->scratch_bytes));
    uint8_t* family_scratch = external ? external_scratch.data() : nullptr;
    alignas(64) std::array<int64_t, kTilePixels> in_offsets{};
    alignas(64) std::array<int64_t, kTilePixels> out_offsets{};
    alignas(64) std::array<int32_t, kTilePixels> pixel_offsets{};
    // the int8 family fills up to kInt8MaxBlocks blocks' accumulators in one call
    alignas(64) std::array<int32_t, kTilePixels * kLanes * kInt8MaxBlocks> acc{};
    alignas(64) std::array<int64_t, kTilePixels> window_rows{};  // n * sh + first stored row
    alignas(64) std::array<int64_t, kTilePixels> window_cols{};  // first stored column
    for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
      const int64_t p0 = tile * kTilePixels;
      const int pixels = static_cast<int>(std::min<int64_t>(kTilePixels, total_pixels - p0));
      walker.fill(p0, pixels, in_offsets.data(), out_offsets.data(), odd ? pixel_offsets.data() : nullptr,
                  spec.depthwise || integer || int8 || external ? window_rows.data() : nullptr, window_cols.data());
      if (integer)
        for (int q = 0; q < pixels; ++q) in_offsets[q] = (window_rows[q] * sw + window_cols[q]) * c2;
      if (int8)
        for (int q = 0; q < pixels; ++q) in_offsets[q] = (window_rows[q] * sw + window_cols[q]) * c4;
      for (int q = pixels; q < kTilePixels; ++q) {  // the kernels may read a whole register block
        in_offsets[q] = in_offsets[pixels - 1];
        window_rows[q] = window_rows[pixels - 1];
        window_cols[q] = window_cols[pixels - 1];
      }
      if (external) external->begin_tile(external->context, window_rows.data(), window_cols.data(), pixels, family_scratch);
      for (int64_t block = 0; block < blocks; ++block) {
        if (spec.depthwise) {
          DepthwiseTile t;
          t.codes = codes.data();
          t.taps = weights.depthwise_taps().data();
          t.window_rows = window_rows.data();
          t.window_cols = window_cols.data();
          t.stored_width = sw;
          t.channels = g.channels;
          t.out_channels = g.out_channels;
          t.multiplier = g.out_channels / g.channels;
          t.kernel_h = g.kernel_h;
          t.kernel_w = g.kernel_w;
          t.oc0 = block * kLanes;
          t.pixels = pixels;
          t.lanes = static_cast<int>(std::min<int64_t>(kLanes, g.out_channels - t.oc0));
          table.depthwise_tile(t, acc.data());
        } else if (external) {
          external->block(external->context, family_scratch, block, acc.data());
        } else if (int8) {
          if (block % kInt8MaxBlocks == 0) {
            Int8Tile t = int8_settings;
            t.block_stride = g.kernel_h * g.kernel_w * weights.channel_quads() * kLanes * 4;
            t.blocks = static_cast<int>(std::min<int64_t>(kInt8MaxBlocks, blocks - block));
            t.weights = weights.int8_quads().data() + block * t.block_stride;
            t.codes = codes8;
            t.pixel_offsets = in_offsets.data();
            t.pixels = pixels;
            t.row_stride = sw * c4;
            t.pixel_stride = c4;
            t.kernel_h = static_cast<int>(g.kernel_h);
            t.kernel_w = static_cast<int>(g.kernel_w);
            t.quads = static_cast<int>(weights.channel_quads());
            int8_kernels.int8_tile(t, acc.data());
          }
        } else if (integer) {
          IntegerTile t;
          t.weights = weights.integer_pairs().data() + block * g.kernel_h * g.kernel_w * weights.channel_pairs() * kLanes * 2;
          t.codes = codes16;
          t.pixel_offsets = in_offsets.data();
          t.pixels = pixels;
          t.row_stride = sw * c2;
          t.pixel_stride = c2;
          t.kernel_h = static_cast<int>(g.kernel_h);
          t.kernel_w = static_cast<int>(g.kernel_w);
          t.pairs = static_cast<int>(weights.channel_pairs());
          table.integer_tile(t, acc.data());
        } else {
          DenseTile t;
          t.weights = weights.words().data() + block * weights.block_words();
          t.input = input.data();
          t.pixel_offsets = in_offsets.data();
          t.pixels = pixels;
          t.plane_stride = in_plane_stride;
          t.row_stride = in_row_stride;
          t.kernel_h = static_cast<int>(g.kernel_h);
          t.words_per_row = static_cast<int>(weights.words_per_row());
          t.weight_planes = spec.bits;
          t.act_planes = act_bits;
          t.odd_levels = spec.encoding == WeightEncoding::odd_levels;
          table.dense_tile(t, acc.data());
        }
        EpilogueTile e;
        e.acc = acc.data() + (int8 ? block % kInt8MaxBlocks * kTilePixels * kLanes : 0);
        e.pixels = pixels;
        e.lanes = static_cast<int>(std::min<int64_t>(kLanes, g.out_channels - block * kLanes));
        e.lane_offset = lane_offsets.data() + block * kLanes;
        e.pixel_offset = odd ? pixel_offsets.data() : nullptr;
        e.scale = epilogue.padded_scale() + block * kLanes;
        e.bias = epilogue.padded_bias() + block * kLanes;
        e.relu = epilogue.relu();
        e.out_offsets = out_offsets.data();
        if (packed) {
          e.out_packed = packed->data() + block * (kLanes / 8);
          e.plane_stride = packed->row_stride();
          e.out_quant = packed->quant();
          e.thresholds = epilogue.uses_thresholds() ? epilogue.threshold_block(block) : nullptr;
        } else {
          e.out_float = target.out_float + block * kLanes * out_pixels_per_image;
          e.lane_stride = out_pixels_per_image;
        }
        table.epilogue_tile(e);
      }
    }
  });
}

}  // namespace

}  // namespace detail

namespace detail {
namespace {

void conv2d_float(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
                  const Epilogue& epilogue, Tensor& out, const ExternalDense* family) {
  const ConvGeometry g = check_conv(input, weights, params, epilogue, false, "conv2d");
  const Shape shape{g.batch, g.out_channels, g.out_height, g.out_width};
  if (out.shape() != shape) out = Tensor(shape);
  OutputTarget target;
  target.out_float = out.data();
  run_conv(input, weights, epilogue, g, target, family);
}

void conv2d_packed(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
                   const Epilogue& epilogue, PackedActivations& out, const ExternalDense* family) {
  if (&out == &input) throw ArgumentError("conv2d: the packed output must not be the input");
  const ConvGeometry g = check_conv(input, weights, params, epilogue, true, "conv2d");
  const Shape shape{g.batch, g.out_channels, g.out_height, g.out_width};
  if (out.empty() || out.shape() != shape || !(out.quant() == epilogue.out_quant()) ||
      out.border() != epilogue.out_border())
    out = PackedActivations(g.batch, g.out_channels, g.out_height, g.out_width, epilogue.out_quant(),
                            epilogue.out_border());
  else
    out.fill_border();
  OutputTarget target;
  target.out_packed = &out;
  run_conv(input, weights, epilogue, g, target, family);
}

}  // namespace

void conv2d_external(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
                     const Epilogue& epilogue, Tensor& out, const ExternalDense& family) {
  conv2d_float(input, weights, params, epilogue, out, &family);
}
void conv2d_external(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
                     const Epilogue& epilogue, PackedActivations& out, const ExternalDense& family) {
  conv2d_packed(input, weights, params, epilogue, out, &family);
}

}  // namespace detail

// A layer resolved to the table-lookup family runs on tables built for this call (correct but
// slow; runtime::Session keeps LutWeights per layer instead).
void conv2d(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
            const Epilogue& epilogue, Tensor& out) {
  if (detail::runs_lut(input, weights, params)) return conv2d(input, LutWeights(weights), params, epilogue, out);
  detail::conv2d_float(input, weights, params, epilogue, out, nullptr);
}

Tensor conv2d(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
              const Epilogue& epilogue) {
  Tensor out;
  conv2d(input, weights, params, epilogue, out);
  return out;
}

void conv2d(const PackedActivations& input, const PackedWeights& weights, const Conv2dParams& params,
            const Epilogue& epilogue, PackedActivations& out) {
  if (detail::runs_lut(input, weights, params)) return conv2d(input, LutWeights(weights), params, epilogue, out);
  detail::conv2d_packed(input, weights, params, epilogue, out, nullptr);
}

}  // namespace bitmix::kernels
