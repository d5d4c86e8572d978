// The table-lookup convolution driver: converts the packed input once per call into 4-bit
// index bytes laid out so that a run of pixels' indices for one table group is contiguous,
// copies each tile's indices into one buffer (shared by all its output channels), and runs the
// active ISA's tile kernel per 16-lane block on conv.cpp's tiles, epilogue and threads.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "bitmix/core/error.hpp"
#include "bitmix/core/thread_pool.hpp"
#include "bitmix/kernels/lut.hpp"
#include "conv_internal.hpp"
#include "core/isa_dispatch.hpp"
#include "kernel_table.hpp"
#include "layout.hpp"
#include "lut/lut_table.hpp"

namespace bitmix::kernels {
namespace detail {
namespace {

static_assert(kLutTilePixels == kTilePixels, "the table-lookup tiles are the driver's tiles");

constinit bitmix::detail::IsaDispatch<LutTable> g_lut_tables{"kernels.lut", {
#if defined(BITMIX_HAVE_AVX2)
    {Isa::avx2, &kLutAvx2Table},
#endif
#if defined(BITMIX_HAVE_NEON)
    {Isa::neon, &kLutNeonTable},
#endif
    {Isa::scalar, &kLutScalarTable},
}};
[[maybe_unused]] const bool g_lut_tables_listed = g_lut_tables.list();

// The index image of one input: for each image, stored row and group of 4 channels (quad), the
// stored row's pixels with `slots` bytes each, byte k = the quad's 4 bits of plane k (0 for
// k >= bits). So the indices of consecutive pixels for one group are consecutive bytes, and a
// run of 16 / slots pixels of a tile is one 16-byte copy.
struct IndexImage {
  const uint8_t* data = nullptr;
  int64_t row_stride = 0;   // one stored row: quads * stored_width * slots
  int64_t quad_stride = 0;  // stored_width * slots
  int slots = 2;
};

void build_index_image(const PackedActivations& input, int slots, const LutTable& table,
                       AlignedVector<uint8_t>& buffer, IndexImage& image) {
  const int64_t sh = input.stored_height(), sw = input.stored_width();
  const int64_t pixel_bytes = input.pixel_bits() / 8, quads = 2 * pixel_bytes;
  image.slots = slots;
  image.quad_stride = sw * slots;
  image.row_stride = quads * image.quad_stride;
  const int64_t size = input.batch() * sh * image.row_stride + kInputSlackBytes;
  if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(static_cast<std::size_t>(size));
  uint8_t* out = buffer.data();
  const int bits = input.bits();
  parallel_for(input.batch() * sh, 8, [&](int64_t begin, int64_t end) {
    for (int64_t nr = begin; nr < end; ++nr) {
      const uint8_t* planes[4] = {};
      for (int k = 0; k < bits; ++k) planes[k] = input.data() + input.row_offset(nr / sh, nr % sh, k);
      table.expand_row(planes, bits, sw, pixel_bytes, slots, out + nr * image.row_stride, image.quad_stride);
    }
  });
  image.data = out;
}

struct LutContext {
  IndexImage image;
  const LutWeights* weights = nullptr;
  const LutTable* table = nullptr;
  const int64_t* image_offsets = nullptr;    // per group: kh * row_stride + quad * quad_stride + kw * slots
  const int64_t* gathered_offsets = nullptr; // per group: j * runs * 16
  int64_t groups = 0;
  int widen_steps = 1;
};

// What begin_tile leaves at the start of the scratch for the tile's blocks; gathered indices
// follow it.
struct TileRuns {
  const uint8_t* run[12];
  const int64_t* offsets;
  int pixels;
};
constexpr int64_t kRunsBytes = (sizeof(TileRuns) + 63) / 64 * 64;

// Points the tile's runs into the index image when each run's valid pixels are consecutive in
// one stored row (stride 1, runs not crossing rows: no copy at all; what a run reads past its
// valid pixels is other index bytes or the image's slack, and lands in ignored outputs);
// otherwise copies every run's indices into the scratch as [group][run][16 bytes], pixel by pixel.
void begin_tile(const void* context, const int64_t* window_rows, const int64_t* window_cols, int pixels,
                uint8_t* scratch) {
  const auto& c = *static_cast<const LutContext*>(context);
  const int slots = c.image.slots, runs = 3 * slots, run_pixels = 16 / slots;
  TileRuns tile{};  // copied to the scratch's start (the blocks copy it back out)
  tile.pixels = pixels;
  bool direct = true;
  for (int q0 = 0; q0 < pixels; q0 += run_pixels)
    for (int q = q0 + 1; q < q0 + run_pixels && q < pixels; ++q)
      direct = direct && window_rows[q] == window_rows[q - 1] && window_cols[q] == window_cols[q - 1] + 1;
  if (direct) {
    for (int h = 0; h < runs; ++h) {
      const int q = h * run_pixels < pixels ? h * run_pixels : 0;  // a run of padding pixels reads run 0's
      tile.run[h] = c.image.data + window_rows[q] * c.image.row_stride + window_cols[q] * slots;
    }
    tile.offsets = c.image_offsets;
    std::memcpy(scratch, &tile, sizeof tile);
    return;
  }
  uint8_t* gathered = scratch + kRunsBytes;
  for (int h = 0; h < runs; ++h) {
    tile.run[h] = gathered + h * 16;
    for (int i = 0; i < run_pixels; ++i) {
      const int q = h * run_pixels + i;
      const uint8_t* src = c.image.data + window_rows[q] * c.image.row_stride + window_cols[q] * slots;
      uint8_t* dst = gathered + h * 16 + i * slots;
      if (slots == 2)
        for (int64_t j = 0; j < c.groups; ++j) std::memcpy(dst + j * runs * 16, src + c.image_offsets[j], 2);
      else
        for (int64_t j = 0; j < c.groups; ++j) std::memcpy(dst + j * runs * 16, src + c.image_offsets[j], 4);
    }
  }
  tile.offsets = c.gathered_offsets;
  std::memcpy(scratch, &tile, sizeof tile);
}

void run_block(const void* context, const uint8_t* scratch, int64_t block, int32_t* acc) {
  const auto& c = *static_cast<const LutContext*>(context);
  TileRuns runs;
  std::memcpy(&runs, scratch, sizeof runs);
  LutTile t;
  for (int h = 0; h < 12; ++h) t.run[h] = runs.run[h];
  t.group_offsets = runs.offsets;
  t.tables = c.weights->tables().data() + block * 4 * c.groups * 64;
  t.groups = c.groups;
  t.slots = c.image.slots;
  t.widen_steps = c.widen_steps;
  t.pixels = runs.pixels;
  c.table->tile(t, acc);
}

template <class Out>
void run_lut(const PackedActivations& input, const LutWeights& weights, const Conv2dParams& params,
             const Epilogue& epilogue, Out& out) {
  if (weights.empty()) throw ArgumentError("conv2d: the table-lookup weights are empty");
  const WeightSpec& s = weights.weights().spec();
  if (!input.empty() && !lut_supported(s, input.bits()))
    throw ArgumentError(fmt::format("conv2d: the table-lookup kernels do not take W{}A{} with a reduction of {} terms "
                                    "(activations of 1 to 4 bits, reduction * max|w| * (2^A - 1) <= 32767)",
                                    s.bits, input.bits(), s.in_channels * s.kernel_h * s.kernel_w));
  // Validate before the conversion reads the input (conv2d_external validates again, cheaply).
  check_conv(input, weights.weights(), params, epilogue, std::is_same_v<Out, PackedActivations>, "conv2d");
  const int slots = input.bits() <= 2 ? 2 : 4;
  thread_local AlignedVector<uint8_t> image_buffer;
  LutContext c;
  c.table = &g_lut_tables.active();
  build_index_image(input, slots, *c.table, image_buffer, c.image);
  const int64_t quads = ceil_div(s.in_channels, 4);  // the groups of LutWeights
  std::vector<int64_t> offsets, gathered;
  for (int64_t kh = 0; kh < s.kernel_h; ++kh)
    for (int64_t kw = 0; kw < s.kernel_w; ++kw)
      for (int64_t quad = 0; quad < quads; ++quad) {
        gathered.push_back(static_cast<int64_t>(offsets.size()) * 3 * slots * 16);
        offsets.push_back(kh * c.image.row_stride + quad * c.image.quad_stride + kw * slots);
      }
  c.weights = &weights;
  c.image_offsets = offsets.data();
  c.gathered_offsets = gathered.data();
  c.groups = weights.groups();
  c.widen_steps = 127 / (4 * std::max(1, weights.max_abs_weight()));
  ExternalDense family;
  family.context = &c;
  family.scratch_bytes = kRunsBytes + c.groups * 3 * slots * 16;
  family.begin_tile = begin_tile;
  family.block = run_block;
  conv2d_external(input, weights.weights(), params, epilogue, out, family);
}

}  // namespace

const LutTable& lut_table() { return g_lut_tables.active(); }
const bitmix::detail::IsaDispatchBase& lut_dispatch() { return g_lut_tables; }

}  // namespace detail

void conv2d(const PackedActivations& input, const LutWeights& weights, const Conv2dParams& params,
            const Epilogue& epilogue, Tensor& out) {
  detail::run_lut(input, weights, params, epilogue, out);
}

void conv2d(const PackedActivations& input, const LutWeights& weights, const Conv2dParams& params,
            const Epilogue& epilogue, PackedActivations& out) {
  if (&out == &input) throw ArgumentError("conv2d: the packed output must not be the input");
  detail::run_lut(input, weights, params, epilogue, out);
}

}  // namespace bitmix::kernels
